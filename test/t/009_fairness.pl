# A profile whose receiver hangs, with a backlog of thousands, holds its
# own share of the worker (webhook.max_per_profile on the wire) and no
# more: another profile's new delivery goes out at once.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WebhookTest;

my $node = new_webhook_node('fairness');
my $receiver = WebhookTest::Receiver->start;
my ($hang, $fresh) = map { $receiver->url($_) } ('/hang', '/fresh');

$node->safe_psql('postgres', sample_schema());
$node->safe_psql('postgres', qq{
	CREATE EXTENSION webhook;
	SELECT webhook.define_ticket_events('tickets', 'actions');
	SELECT webhook.create_profile('stuck', '$hang', ARRAY['ticket.created'], timeout => '20 seconds');
	SELECT webhook.create_profile('fresh', '$fresh', ARRAY['action.added']);
	INSERT INTO tickets (summary, status_id) SELECT 'stuck ' || g, 1 FROM generate_series(1, 3000) g;
});
ok(wait_until(sub { (grep { $_->{path} eq '/hang' } @{ $receiver->requests }) >= 32 }),
	'the stuck profile has its share of requests hanging');
my $hanging = $node->safe_psql('postgres', q{
	SELECT count(*) FROM webhook.deliveries WHERE profile = 'stuck' AND status = 'pending'});
ok($hanging > 2000, "$hanging of its deliveries wait behind them");

$node->safe_psql('postgres', q{
	INSERT INTO actions (ticket_id, note) SELECT min(ticket_id), 'not stuck' FROM tickets;
});
my $got = $receiver->wait_for(1, sub { $_[0]{path} eq '/fresh' });
is(scalar @$got, 1, 'another profile\'s delivery arrives');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM webhook.attempts a JOIN webhook.deliveries d USING (delivery_id)
	 WHERE d.profile = 'stuck'}), '0', 'before any of the stuck requests has even timed out');
is(scalar(grep { $_->{path} eq '/hang' } @{ $receiver->requests }), 32,
	'and the stuck profile still has webhook.max_per_profile requests out, no more');

$receiver->stop;
$node->stop('immediate');

# A claim passes over a delivery that another transaction has locked, and
# the profile's next claims start after what it took (src/claims.c): the
# locked one is still sent once the lock is gone.  A profile's allowance
# is 8 x webhook.max_per_profile (256), so the claims of the backlog fill it.
my $marks = new_webhook_node('marks');
my $backlog_receiver = WebhookTest::Receiver->start;
my $ok_url = $backlog_receiver->url('/ok');
$marks->safe_psql('postgres', sample_schema());
$marks->safe_psql('postgres', qq{
	CREATE EXTENSION webhook;
	SELECT webhook.define_ticket_events('tickets', 'actions');
	SELECT webhook.create_profile('backlog', '$ok_url', ARRAY['ticket.created']);
	SELECT webhook.disable_profile('backlog');
	INSERT INTO tickets (summary, status_id) SELECT 'backlog ' || g, 1 FROM generate_series(1, 4000) g;
});
ok(wait_until(sub { $marks->safe_psql('postgres',
	"SELECT count(*) FROM webhook.deliveries WHERE status = 'held'") eq '4000' }),
	'a backlog of 4000 is held');
# a key share lock lets enable_profile by, and keeps the claims off
my $locker = $marks->background_psql('postgres');
my $locked = $locker->query_safe(q{
	BEGIN;
	SELECT delivery_id FROM webhook.delivery ORDER BY delivery_id OFFSET 1 LIMIT 1 FOR KEY SHARE});
chomp $locked;
$marks->safe_psql('postgres', "SELECT webhook.enable_profile('backlog')");
ok(wait_until(sub { $backlog_receiver->count >= 1000 }), 'the backlog goes out around the locked delivery');
is($marks->safe_psql('postgres', "SELECT status FROM webhook.delivery WHERE delivery_id = $locked"),
	'pending', 'which waits, unclaimed');
$locker->query_safe('COMMIT');
ok(wait_until(sub { $marks->safe_psql('postgres',
	"SELECT status FROM webhook.delivery WHERE delivery_id = $locked") eq 'delivered' }),
	'the lock gone, it is sent');
ok(wait_until(sub { $marks->safe_psql('postgres',
	"SELECT count(*) FROM webhook.delivery WHERE status = 'delivered'") eq '4000' }),
	'and every delivery of the backlog is delivered');
# the locked one went out while the backlog lasted, not when it ran out:
# every claim's mark is dropped each second
cmp_ok($marks->safe_psql('postgres', qq{
	SELECT count(*) FROM webhook.delivery
	 WHERE delivered_at > (SELECT delivered_at FROM webhook.delivery WHERE delivery_id = $locked)}),
	'>', 1000, 'it went out while the backlog lasted');
$locker->quit;
$backlog_receiver->stop;
$marks->stop('immediate');
done_testing();
