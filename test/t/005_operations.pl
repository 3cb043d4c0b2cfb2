# Operating a profile end to end: a disabled profile holds its changes and
# sends them when enabled; a test send, a redelivery and a replay reach the
# receiver, the last two under the original webhook-id.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WebhookTest;

my $node = new_webhook_node('operations');
my $receiver = WebhookTest::Receiver->start;
my $url = $receiver->url('/ops');

$node->safe_psql('postgres', sample_schema());
$node->safe_psql('postgres', qq{
	CREATE EXTENSION webhook;
	SELECT webhook.define_ticket_events('tickets');
	SELECT webhook.create_profile('ops', '$url', ARRAY['ticket.created']);
	SELECT webhook.disable_profile('ops', 'receiver upgrade');
	INSERT INTO tickets (summary, status_id) SELECT 'held ' || g, 1 FROM generate_series(1, 5) g;
});
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 5 FROM webhook.deliveries WHERE profile = 'ops' AND status = 'held'}),
	'changes made while the profile is disabled are held');
sleep 1;
is(scalar @{ $receiver->requests }, 0, 'and nothing is sent');

$node->safe_psql('postgres', q{SELECT webhook.enable_profile('ops')});
my $got = $receiver->wait_for(5);
is(scalar @$got, 5, 'enabling the profile sends what was held');
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 5 FROM webhook.deliveries WHERE profile = 'ops' AND status = 'delivered'}),
	'all delivered');

$node->safe_psql('postgres', q{SELECT webhook.send_test('ops')});
$got = $receiver->wait_for(1, sub { $_[0]{json} && $_[0]{json}{event} eq 'ping' });
is(scalar @$got, 1, 'a test send arrives as a ping');
like($got->[0]{headers}{'webhook-signature'}, qr/^v1,/, 'signed like any delivery');

my ($first, $first_id) = split /\|/, $node->safe_psql('postgres', q{
	SELECT delivery_id || '|' || webhook_id FROM webhook.deliveries
	 WHERE profile = 'ops' AND events = '{ticket.created}' ORDER BY delivery_id LIMIT 1});
$node->safe_psql('postgres', "SELECT webhook.redeliver($first)");
$got = $receiver->wait_for(2, sub { $_[0]{headers}{'webhook-id'} eq $first_id });
is(scalar @$got, 2, 'a redelivery arrives under the original webhook-id');
is($got->[1]{body}, $got->[0]{body}, 'with the same body');

my $replayed = $node->safe_psql('postgres', q{
	SELECT webhook.replay('ops', now() - interval '1 hour', 'delivered')});
ok($replayed >= 6, "a replay of the delivered ones queued $replayed");
$got = $receiver->wait_for(7 + $replayed);
ok(scalar @$got >= 7 + $replayed, 'and they arrive');

$receiver->stop;
$node->stop;
done_testing();
