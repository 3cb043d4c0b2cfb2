# The built-in events webhook.delivery_failed and webhook.profile_disabled,
# bound to an alert profile: each failure reaches its receiver, signed,
# retried when the receiver fails, once, with an object that says which
# profile, delivery, events, status and error, and no secret; an alert's
# own failure raises none.  And webhook.stats: last success, last error,
# oldest pending change, and first-response times that leave out batch
# waits and retries.
use strict;
use warnings;

use IPC::Run;
use JSON::PP;
use MIME::Base64 qw(encode_base64);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WebhookTest;

my $node = new_webhook_node('failure_events');
$node->append_conf('postgresql.conf', "webhook.disable_after_failures = 3\n");
$node->reload;
my $receiver = WebhookTest::Receiver->start;
my $secret = 'whsec_' . encode_base64('alerts are signed as any delivery', '');
my %url = (
	ok => $receiver->url('/ok'),
	failing => $receiver->url('/status/500'),
	gone => $receiver->url('/status/410'),
	alerts => $receiver->url('/fault/alerts'),
	broken_alerts => $receiver->url('/status/503'),
	batched => $receiver->url('/batched'));
$receiver->set_mode('status 500');    # the alert receiver fails at first

$node->safe_psql('postgres', sample_schema());
$node->safe_psql('postgres', qq{
	CREATE EXTENSION webhook;
	SELECT webhook.define_ticket_events('tickets', 'actions');
	SELECT webhook.create_profile('alerts', '$url{alerts}',
	                              ARRAY['webhook.delivery_failed', 'webhook.profile_disabled'],
	                              secret => '$secret', retry_schedule => '{0s,1s,1s}');
	-- an alert profile whose own deliveries fail for good at once
	SELECT webhook.create_profile('broken_alerts', '$url{broken_alerts}', ARRAY['webhook.delivery_failed'],
	                              max_attempts => 1);
	SELECT webhook.create_profile('failing', '$url{failing}', ARRAY['ticket.created'], max_attempts => 2,
	                              retry_schedule => '{0s}', headers => '{"X-Api-Key": "top-secret-token"}');
});

# the alerts the alert receiver took (answered 200) of an event, about a profile
sub alerts
{
	my ($count, $event, $profile) = @_;
	return $receiver->wait_for($count,
		sub {
			$_[0]{path} eq '/fault/alerts' && $_[0]{answer} eq '200'
			  && ($_[0]{json}{event} // '') eq $event
			  && ($_[0]{json}{failure}{profile} // '') eq $profile;
		});
}

# a delivery whose attempts are exhausted
$node->safe_psql('postgres', q{INSERT INTO tickets (summary, status_id) VALUES ('one', 1)});
ok($receiver->wait_for(1, sub { $_[0]{path} eq '/fault/alerts' }), 'the alert receiver is called');
$receiver->set_mode('ok');
my $got = alerts(1, 'webhook.delivery_failed', 'failing');
my $failed_id = $node->safe_psql('postgres', q{SELECT delivery_id FROM webhook.deliveries WHERE profile = 'failing'});
my $alert = $got->[0]{json};
is($alert->{failure}{delivery_id}, $failed_id, 'delivery_failed names the delivery');
is($alert->{failure}{profile}, 'failing', 'its profile');
is_deeply($alert->{failure}{events}, ['ticket.created'], 'its events');
is($alert->{failure}{response_status}, 500, 'its last status');
is($alert->{failure}{attempts}, 2, 'and its attempts');
is($alert->{failure}{webhook_id}, $node->safe_psql('postgres', qq{
	SELECT webhook_id FROM webhook.deliveries WHERE delivery_id = $failed_id}), 'and its webhook-id');
is($alert->{title}, 'Delivery Failed', 'titled');
is($alert->{object_id}, $failed_id, 'its object is the delivery');
unlike($got->[0]{body}, qr/top-secret|status\/500/, 'nothing of the failing profile\'s settings');
my $alert_attempts = $node->safe_psql('postgres', q{
	SELECT attempts FROM webhook.deliveries WHERE profile = 'alerts' AND events = '{webhook.delivery_failed}'});
cmp_ok($alert_attempts, '>=', 2, 'the alert was retried after its receiver failed');

# signed as every delivery is: the official library verifies it
my $signed = PostgreSQL::Test::Utils::tempdir() . '/alert.jsonl';
open my $fh, '>', $signed or die;
print $fh encode_json({ body => $got->[0]{body}, headers => $got->[0]{headers} }) . "\n";
close $fh;
my ($out, $err);
IPC::Run::run([ 'node', "$WebhookTest::test_dir/verify_signature.mjs", $secret, $signed ], '>', \$out, '2>', \$err);
like($out, qr/\Aok \S+\n\z/, 'standardwebhooks verifies the alert') or diag($out, $err);

# broken_alerts failed to deliver its alert: that raises no other
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 1 FROM webhook.deliveries WHERE profile = 'broken_alerts' AND status = 'failed'}),
	'the broken alert profile\'s delivery failed');
# (the worker records it, then, had it raised one, would have queued it in the same step)
ok($node->poll_query_until('postgres', q{SELECT count(*) = 0 FROM webhook.occurrence}), 'the queue is empty');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM webhook.deliveries WHERE events = '{webhook.delivery_failed}'}), '2',
	'one alert for each alert profile, none about the failed alert');

# three in a row disable the profile: one alert, with why and the last error
$node->safe_psql('postgres', q{INSERT INTO tickets (summary, status_id) VALUES ('two', 1), ('three', 1)});
$got = alerts(1, 'webhook.profile_disabled', 'failing');
$alert = $got->[0]{json}{failure};
is($alert->{profile}, 'failing', 'profile_disabled names the profile');
is($alert->{reason}, '3 deliveries in a row failed', 'and why');
is($alert->{consecutive_failures}, 3, 'with the run');
is($alert->{last_error}, 'HTTP 500', 'and the last error');
ok(alerts(3, 'webhook.delivery_failed', 'failing'), 'each failed delivery was said too');

# by a 410, and by hand; a profile disabled already is not said again
$node->safe_psql('postgres', qq{
	SELECT webhook.create_profile('gone', '$url{gone}', ARRAY['ticket.updated']);
	UPDATE tickets SET details = 'x' WHERE summary = 'one';
});
$got = alerts(1, 'webhook.profile_disabled', 'gone');
is($got->[0]{json}{failure}{reason}, 'the receiver answered 410 Gone', 'a 410 disables, and says so');
$node->safe_psql('postgres', q{
	SELECT webhook.disable_profile('gone', 'again');
	SELECT webhook.create_profile('quiet', 'http://127.0.0.1:9/', ARRAY['ticket.deleted']);
	SELECT webhook.disable_profile('quiet', 'maintenance');
});
$got = alerts(1, 'webhook.profile_disabled', 'quiet');
is($got->[0]{json}{failure}{reason}, 'maintenance', 'by hand, with the reason given');
is(scalar @{ alerts(1, 'webhook.profile_disabled', 'gone') }, 1, 'disabled once, said once');

# a restored database has the bindings, not the trigger: the first failure makes it again
$node->safe_psql('postgres', q{
	DROP TRIGGER webhook_capture_insert ON webhook.failed_delivery;
	SELECT webhook.enable_profile('failing');
	INSERT INTO tickets (summary, status_id) VALUES ('after restore', 1);
});
$got = alerts(4, 'webhook.delivery_failed', 'failing');
is($got->[3]{json}{failure}{delivery_id}, $node->safe_psql('postgres', q{
	SELECT max(delivery_id) FROM webhook.deliveries WHERE profile = 'failing'}),
	'a missing capture trigger is made again by the first failure');

# webhook.stats: how each profile is doing
ok($node->poll_query_until('postgres', q{
	SELECT string_agg(concat_ws('|', profile, last_success_at IS NOT NULL, last_error, oldest_pending_at IS NULL),
	                  ',' ORDER BY profile)
	  FROM webhook.stats WHERE profile IN ('alerts', 'failing')}, 'alerts|t|HTTP 500|t,failing|f|HTTP 500|t'),
	'stats: last success, last error (the alert receiver failed before it answered), nothing pending');

# first response: the batch wait left out (a batch of one waits it whole)
$node->safe_psql('postgres', qq{
	SELECT webhook.create_profile('batched', '$url{batched}', ARRAY['action.added'],
	                              batching => 'any_event', batch_wait => '2 seconds');
	INSERT INTO actions (ticket_id, note) SELECT min(ticket_id), 'a note' FROM tickets;
});
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 1 FROM webhook.deliveries WHERE profile = 'batched' AND status = 'delivered'}),
	'the batch was delivered');
is($node->safe_psql('postgres', q{
	SELECT abs(d.first_response_ms
	           - (date_part('epoch', d.delivered_at - d.captured_at) * 1000 - 2000)) < 1
	  FROM webhook.delivery d JOIN webhook.profile p USING (profile_id) WHERE p.name = 'batched'}), 't',
	'a batch\'s first response is counted from its close, its wait left out');

# a retry left out: the first attempt's response counts
$receiver->set_mode('status 500');
$node->safe_psql('postgres', q{
	SELECT webhook.alter_profile('alerts', retry_schedule => '{3s}');
	SELECT webhook.disable_profile('batched', 'to see a retry');
});
ok($receiver->wait_for(1, sub { $_[0]{path} eq '/fault/alerts' && $_[0]{json}{failure}{profile} eq 'batched' }),
	'the alert about batched was tried');
$receiver->set_mode('ok');
ok($node->poll_query_until('postgres', q{
	SELECT status = 'delivered' AND attempts >= 2 FROM webhook.deliveries
	 WHERE profile = 'alerts' AND request_body -> 'failure' ->> 'profile' = 'batched'}), 'and delivered on its retry');
is($node->safe_psql('postgres', q{
	SELECT abs(d.first_response_ms
	           - (date_part('epoch', a.started_at - d.captured_at) * 1000 + a.duration_ms)) < 1
	  FROM webhook.delivery d JOIN webhook.attempt a ON a.delivery_id = d.delivery_id AND a.attempt = 1
	 WHERE d.body -> 'failure' ->> 'profile' = 'batched'}), 't',
	'its first response is its first attempt\'s, the retry left out');

# a redelivery counts from when it was asked for
my $again = $node->safe_psql('postgres', q{
	SELECT webhook.redeliver(min(delivery_id)) FROM webhook.deliveries WHERE profile = 'alerts'});
ok($node->poll_query_until('postgres', qq{
	SELECT attempts = 1 AND response_status IS NOT NULL FROM webhook.delivery WHERE delivery_id = $again}),
	'a redelivery was tried');
is($node->safe_psql('postgres', qq{
	SELECT abs(d.first_response_ms
	           - (date_part('epoch', a.started_at - d.ready_at) * 1000 + a.duration_ms)) < 1
	       AND d.ready_at > d.captured_at
	  FROM webhook.delivery d JOIN webhook.attempt a ON a.delivery_id = d.delivery_id AND a.attempt = 1
	 WHERE d.delivery_id = $again}), 't', 'a redelivery\'s first response is counted from the redeliver call');
is($node->safe_psql('postgres', q{
	SELECT p50_ms IS NOT NULL AND p95_ms >= p50_ms FROM webhook.stats WHERE profile = 'alerts'}), 't',
	'p50 and p95 of the first responses');

# an error while an operator's transaction holds the profile's row: the
# worker does not wait for it to note the last error, and goes on
$receiver->set_mode('status 500');
my $operator = $node->background_psql('postgres');
$operator->query_safe('BEGIN');
$operator->query_safe(q{SELECT 1 FROM webhook.profile WHERE name = 'alerts' FOR UPDATE});
$node->safe_psql('postgres', qq{
	SELECT webhook.create_profile('fine', '$url{ok}', ARRAY['ticket.created']);
	SELECT webhook.create_profile('held_row', 'http://127.0.0.1:9/', ARRAY['ticket.deleted']);
	SELECT webhook.disable_profile('held_row', 'while the alerts row is held');
});
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 1 FROM webhook.deliveries
	 WHERE profile = 'alerts' AND status = 'retrying' AND request_body -> 'failure' ->> 'profile' = 'held_row'}),
	'the alert\'s failed attempt is recorded while its profile\'s row is held');
$node->safe_psql('postgres', q{INSERT INTO tickets (summary, status_id) VALUES ('while held', 1)});
ok($receiver->wait_for(1, sub { $_[0]{path} eq '/ok' && $_[0]{body} =~ /while held/ }),
	'and other deliveries go on');
$operator->query_safe('COMMIT');
$operator->quit;
$receiver->set_mode('ok');

$receiver->stop;
$node->stop;
done_testing();
