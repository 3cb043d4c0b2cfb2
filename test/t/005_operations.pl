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

# Deliveries the worker holds but has not sent when their profile is
# disabled go back to held, unsent; enabling sends each of them once.
$node->safe_psql('postgres', q{
	ALTER SYSTEM SET webhook.max_per_profile = 1;
	SELECT pg_reload_conf();
});
my $slow = $receiver->url('/slow/500');
$node->safe_psql('postgres', qq{
	SELECT webhook.create_profile('slowpoke', '$slow', ARRAY['ticket.created']);
	INSERT INTO tickets (summary, status_id) SELECT 'slow ' || g, 1 FROM generate_series(1, 10) g;
});
my $slow_ones = sub { [ grep { $_->{path} eq '/slow/500' } @{ $receiver->requests } ] };
ok(wait_until(sub { @{ $slow_ones->() } >= 1 }), 'one at a time goes to a slow receiver');
$node->safe_psql('postgres', q{SELECT webhook.disable_profile('slowpoke')});
ok($node->poll_query_until('postgres', q{
	SELECT count(*) FILTER (WHERE status = 'held') >= 8 AND count(*) FILTER (WHERE status = 'sending') = 0
	  FROM webhook.deliveries WHERE profile = 'slowpoke'}),
	'disabling the profile gives back what the worker held unsent');
sleep 1;
my $sent_before = scalar @{ $slow_ones->() };
ok($sent_before <= 2, "only what was on the wire went out ($sent_before)");
$node->safe_psql('postgres', q{SELECT webhook.enable_profile('slowpoke')});
ok(wait_until(sub { @{ $slow_ones->() } >= 10 }, 60), 'enabling sends the rest');
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 10 FROM webhook.deliveries WHERE profile = 'slowpoke' AND status = 'delivered'}),
	'all ten delivered');
my %seen;
$seen{ $_->{json}{ticket}{summary} }++ for @{ $slow_ones->() };
is(scalar(keys %seen), 10, 'each ticket arrived');
is(scalar(grep { $_ > 1 } values %seen), 0, 'and none twice');

# a profile's new settings go with its next delivery (the worker keeps a
# profile's settings between deliveries, by the version of its row)
my ($before, $after) = map { $receiver->url($_) } ('/before', '/after');
$node->safe_psql('postgres', qq{
	SELECT webhook.create_profile('changing', '$before', ARRAY['ticket.created'],
	                              auth => 'bearer', password => 'token-1', headers => '{"X-Version": "1"}');
	INSERT INTO tickets (summary, status_id) VALUES ('before the change', 1);
});
my $at = sub { my ($path) = @_; [ grep { $_->{path} eq $path } @{ $receiver->requests } ] };
ok(wait_until(sub { @{ $at->('/before') } == 1 }), 'a delivery with the first settings');
$node->safe_psql('postgres', qq{
	SELECT webhook.alter_profile('changing', url => '$after', password => 'token-2',
	                             headers => '{"X-Version": "2"}');
	INSERT INTO tickets (summary, status_id) VALUES ('after the change', 1);
});
ok(wait_until(sub { @{ $at->('/after') } == 1 }), 'the next goes to the new URL');
my ($first, $second) = ($at->('/before')->[0], $at->('/after')->[0]);
is_deeply([ map { [ $_->{json}{ticket}{summary}, $_->{headers}{'x-version'}, $_->{headers}{authorization} ] }
		($first, $second) ],
	[ [ 'before the change', '1', 'Bearer token-1' ], [ 'after the change', '2', 'Bearer token-2' ] ],
	'with the new headers and credentials');
is(scalar @{ $at->('/before') }, 1, 'and nothing more to the old URL');

$receiver->stop;
$node->stop;
done_testing();
