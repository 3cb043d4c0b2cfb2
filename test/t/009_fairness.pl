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
done_testing();
