# Outcomes that change what happens next: a redirect is a failure and is
# not followed, Retry-After sets the next attempt, 410 Gone disables the
# profile, a run of failed deliveries disables it too; webhook.stats counts.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WebhookTest;

my $node = new_webhook_node('outcomes');
$node->append_conf('postgresql.conf', 'webhook.disable_after_failures = 2');
$node->reload;
my $receiver = WebhookTest::Receiver->start;
my ($moved, $later, $gone, $broken) =
  map { $receiver->url($_) } ('/status/302', '/retry-after/3', '/status/410', '/status/500');

$node->safe_psql('postgres', sample_schema());
$node->safe_psql('postgres', qq{
	CREATE EXTENSION webhook;
	SELECT webhook.define_ticket_events('tickets');
	SELECT webhook.create_profile('moved', '$moved', ARRAY['ticket.created']);
	SELECT webhook.create_profile('later', '$later', ARRAY['ticket.created']);
	SELECT webhook.create_profile('gone', '$gone', ARRAY['ticket.created']);
	SELECT webhook.create_profile('broken', '$broken', ARRAY['ticket.created'], max_attempts => 1);
	INSERT INTO tickets (summary, status_id) VALUES ('first', 1);
});

ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 4 FROM webhook.deliveries WHERE attempts >= 1 AND status NOT IN ('pending', 'sending')}),
	'every profile made its first attempt');
is($node->safe_psql('postgres', q{
	SELECT concat_ws('|', status, response_status) FROM webhook.deliveries WHERE profile = 'moved'}),
	'retrying|302', 'a 302 is a failure to retry');
is(scalar(grep { $_->{path} eq '/redirected' } @{ $receiver->requests }), 0, 'and is not followed');
is($node->safe_psql('postgres', q{
	SELECT next_attempt_at - last_attempt_at BETWEEN interval '2.5 seconds' AND interval '4 seconds'
	  FROM webhook.deliveries WHERE profile = 'later'}),
	't', 'Retry-After: 3 sets the next attempt 3 seconds on, not the schedule\'s 5');
ok($node->poll_query_until('postgres', q{
	SELECT attempts >= 2 FROM webhook.deliveries WHERE profile = 'later'}),
	'and the worker comes back for it');
is($node->safe_psql('postgres', q{
	SELECT concat_ws('|', d.status, p.enabled, p.disabled_reason)
	  FROM webhook.deliveries d JOIN webhook.profiles p ON p.name = d.profile WHERE d.profile = 'gone'}),
	'failed|f|the receiver answered 410 Gone', '410 Gone fails the delivery and disables the profile');

# a second failed delivery in a row disables 'broken' (webhook.disable_after_failures = 2)
is($node->safe_psql('postgres', q{SELECT enabled FROM webhook.profiles WHERE name = 'broken'}),
	't', 'one failed delivery does not disable');
$node->safe_psql('postgres', q{INSERT INTO tickets (summary, status_id) VALUES ('second', 1)});
ok($node->poll_query_until('postgres', q{
	SELECT NOT enabled AND disabled_reason = '2 deliveries in a row failed'
	  FROM webhook.profiles WHERE name = 'broken'}),
	'two in a row disable the profile, with the reason');
$node->safe_psql('postgres', q{INSERT INTO tickets (summary, status_id) VALUES ('third', 1)});
ok($node->poll_query_until('postgres', q{
	SELECT held = 1 FROM webhook.stats WHERE profile = 'broken'}),
	'its next change is held, and webhook.stats counts it');
is($node->safe_psql('postgres', q{
	SELECT concat_ws('|', enabled, failed, held, consecutive_failures, disabled_reason)
	  FROM webhook.stats WHERE profile = 'broken'}),
	'f|2|1|2|2 deliveries in a row failed', 'webhook.stats shows the profile as it is');

# webhook.max_per_profile: one slow receiver gets two requests at a time,
# and does not hold up another profile
$node->safe_psql('postgres', q{ALTER SYSTEM SET webhook.max_per_profile = 2; SELECT pg_reload_conf();});
my ($slow, $fast) = map { $receiver->url($_) } ('/slow/1000', '/fast');
$node->safe_psql('postgres', qq{
	SELECT webhook.define_event('action.added', 'actions', 'insert');
	SELECT webhook.create_profile('slow', '$slow', ARRAY['action.added']);
	SELECT webhook.create_profile('fast', '$fast', ARRAY['action.added']);
	INSERT INTO actions (ticket_id, note) SELECT min(ticket_id), 'note ' || g FROM tickets, generate_series(1, 6) g GROUP BY g;
});
my $slow_got = $receiver->wait_for(6, sub { $_[0]{path} eq '/slow/1000' });
my $fast_got = $receiver->wait_for(6, sub { $_[0]{path} eq '/fast' });
is(scalar @$slow_got, 6, 'the slow profile got all six');
my @at = sort { $a <=> $b } map { $_->{received_at} } @$slow_got;
ok($at[2] - $at[0] >= 0.8 && $at[4] - $at[2] >= 0.8,
	'two at a time: each pair waited for the one before')
  or diag(join(', ', map { sprintf('%.2f', $_ - $at[0]) } @at));
my @fast_at = sort { $a <=> $b } map { $_->{received_at} } @$fast_got;
ok($fast_at[-1] - $at[0] < 1.5, 'the fast profile was not held up by the slow one')
  or diag(sprintf('%.2f', $fast_at[-1] - $at[0]));

# a connection reset and a 50 MB answer
my ($reset, $huge) = map { $receiver->url($_) } ('/reset', '/huge/50');
$node->safe_psql('postgres', qq{
	SELECT webhook.create_profile('reset', '$reset', ARRAY['action.added'], max_attempts => 1);
	SELECT webhook.create_profile('huge', '$huge', ARRAY['action.added']);
	INSERT INTO actions (ticket_id, note) SELECT min(ticket_id), 'odd receivers' FROM tickets;
});
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 2 FROM webhook.deliveries
	 WHERE profile IN ('reset', 'huge') AND status IN ('failed', 'delivered')}),
	'a reset and a huge answer are both dealt with');
like($node->safe_psql('postgres', q{
	SELECT concat_ws('|', d.status, a.outcome, a.response_status IS NULL, a.error)
	  FROM webhook.deliveries d JOIN webhook.attempts a USING (delivery_id) WHERE d.profile = 'reset'}),
	qr/^failed\|error\|t\|.*(reset|Recv failure|Empty reply)/i, 'a reset is an error, not a response');
is($node->safe_psql('postgres', q{
	SELECT concat_ws('|', d.status, a.outcome, a.response_status, length(a.response_body))
	  FROM webhook.deliveries d JOIN webhook.attempts a USING (delivery_id) WHERE d.profile = 'huge'}),
	'delivered|body_too_large|200|65536', 'a 50 MB answer is an outcome of its own, read up to webhook.max_response_size and kept that far');

# webhook.blocked_networks is checked on the address a name resolves to
my $port = $receiver->{port};
$node->safe_psql('postgres', qq{
	ALTER SYSTEM SET webhook.blocked_networks = '127.0.0.0/8, ::1/128';
	SELECT pg_reload_conf();
	SELECT webhook.create_profile('by_name', 'http://localhost:$port/blocked', ARRAY['action.added'],
	                              max_attempts => 1);
	INSERT INTO actions (ticket_id, note) SELECT min(ticket_id), 'blocked' FROM tickets;
});
ok($node->poll_query_until('postgres', q{
	SELECT status = 'failed' FROM webhook.deliveries WHERE profile = 'by_name'}),
	'a host name that resolves into a blocked range fails');
like($node->safe_psql('postgres', q{
	SELECT concat_ws('|', a.outcome, a.error)
	  FROM webhook.attempts a JOIN webhook.deliveries d USING (delivery_id) WHERE d.profile = 'by_name'}),
	qr/^blocked\|connecting to (127\.0\.0\.1|::1) is refused by webhook.blocked_networks$/,
	'recorded as blocked, with the address');
is(scalar(grep { $_->{path} eq '/blocked' } @{ $receiver->requests }), 0, 'nothing reached the receiver');
my ($ret, $out, $err) = $node->psql('postgres', q{ALTER SYSTEM SET webhook.blocked_networks = '10.0.0.0/33'});
isnt($ret, 0, 'a malformed range is refused');
like($err, qr/is not an address range/, 'with a message that says so');
($ret, $out, $err) = $node->psql('postgres', q{
	CREATE ROLE nobody_special; SET ROLE nobody_special; SET webhook.blocked_networks = ''});
like($err, qr/cannot be changed now|permission denied/, 'no session can lift it for itself');

# A profile disabled while its request is on the wire: the failure is
# held, not scheduled for a retry, and other profiles' retries stay on time.
$node->safe_psql('postgres', q{
	ALTER SYSTEM RESET webhook.blocked_networks;
	SELECT pg_reload_conf();
});
my ($hang, $failing) = map { $receiver->url($_) } ('/hang', '/status/503');
$node->safe_psql('postgres', qq{
	SELECT webhook.create_profile('hanging', '$hang', ARRAY['action.added'], timeout => '2 seconds',
	                              retry_schedule => '{1 second}');
	SELECT webhook.create_profile('steady', '$failing', ARRAY['action.added'], max_attempts => 3,
	                              retry_schedule => '{3 seconds}');
	INSERT INTO actions (ticket_id, note) SELECT min(ticket_id), 'disabled on the wire' FROM tickets;
});
ok(wait_until(sub { grep { $_->{path} eq '/hang' } @{ $receiver->requests } }), 'a request hangs');
$node->safe_psql('postgres', q{SELECT webhook.disable_profile('hanging')});
ok($node->poll_query_until('postgres', q{
	SELECT status = 'held' AND attempts = 1 FROM webhook.deliveries WHERE profile = 'hanging'}),
	'its timeout is recorded, and the delivery is held, not retrying');
ok($node->poll_query_until('postgres', q{
	SELECT status = 'failed' AND attempts = 3 FROM webhook.deliveries WHERE profile = 'steady'}),
	'another profile is retried on schedule meanwhile');

$receiver->stop;
$node->stop;
done_testing();
