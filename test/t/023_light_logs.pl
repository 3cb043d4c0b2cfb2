# Light logs: a profile with log => 'light' keeps each delivery's status,
# attempts, response code, timing and error, but no request or response
# body and no response headers; its finished deliveries cannot be sent
# again, and say why.  A profile that logs in full keeps everything.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WebhookTest;

my $node = new_webhook_node('light');
my $receiver = WebhookTest::Receiver->start;
my $ok_url = $receiver->url('/ok');
my $failing_url = $receiver->url('/status/500');
my $batch_url = $receiver->url('/batch');

$node->safe_psql('postgres', sample_schema());
$node->safe_psql('postgres', qq{
	CREATE EXTENSION webhook;
	SELECT webhook.define_ticket_events('tickets', 'actions', closed_statuses => '{9}');
	SELECT webhook.create_profile('light', '$ok_url', ARRAY['ticket.created'], log => 'light');
	SELECT webhook.create_profile('full', '$ok_url', ARRAY['ticket.created']);
	SELECT webhook.create_profile('light_failing', '$failing_url', ARRAY['ticket.created'], log => 'LIGHT',
	                              max_attempts => 2, retry_schedule => '{1 second}');
	SELECT webhook.create_profile('light_batch', '$batch_url', ARRAY['ticket.created'], log => 'light',
	                              batching => 'any_event', batch_wait => '0');
});
is($node->safe_psql('postgres', q{SELECT string_agg(name || ':' || log, ',' ORDER BY name) FROM webhook.profiles}),
	'full:full,light:light,light_batch:light,light_failing:light', 'the profiles and their logs');

$node->safe_psql('postgres', q{INSERT INTO tickets (summary, status_id) VALUES ('Printer on fire', 1)});
ok($node->poll_query_until('postgres', q{
	SELECT count(*) FILTER (WHERE status = 'delivered') = 3 AND count(*) FILTER (WHERE status = 'failed') = 1
	  FROM webhook.deliveries}), 'delivered to three, failed at the failing one')
  or diag($node->safe_psql('postgres', q{SELECT profile, status, attempts FROM webhook.deliveries}));
my @at_ok = grep { $_->{path} eq '/ok' } @{ $receiver->requests };
is(scalar @at_ok, 2, 'the receiver got both bodies');
ok(!grep({ ($_->{json}{ticket}{summary} // '') ne 'Printer on fire' } @at_ok), 'light sends the whole body');

my %row = map { my ($p, @v) = split /\|/; ($p => join('|', @v)) } split /\n/, $node->safe_psql('postgres', q{
	SELECT d.profile || '|' || d.status || '|' || d.attempts || '|' || coalesce(d.response_status::text, '-')
	       || '|' || (d.duration_ms IS NOT NULL) || '|' || coalesce(d.request_body::text, 'NULL')
	       || '|' || coalesce(d.response_body, 'NULL') || '|' || coalesce(d.error, '-')
	  FROM webhook.deliveries d});
is($row{light}, 'delivered|1|200|true|null|NULL|-', 'light: status, attempts, code and timing; no bodies');
like($row{full}, qr/^delivered\|1\|200\|true\|\{.*"Printer on fire".*\}\|\{"ok": true\}\|-$/, 'full: the bodies');
like($row{light_failing}, qr/^failed\|2\|500\|true\|null\|NULL\|.+$/, 'light and failed: the error stays, no bodies');
like($row{light_batch}, qr/^delivered\|1\|200\|true\|null\|NULL\|-$/, 'a light batch: no bodies');

is($node->safe_psql('postgres', q{
	SELECT string_agg(d.profile || ':' || a.attempt || ':' || a.response_status || ':'
	                  || (a.response_headers IS NULL) || ':' || (a.response_body IS NULL) || ':'
	                  || (a.request_headers ? 'webhook-id') || ':' || (a.duration_ms IS NOT NULL),
	                  ',' ORDER BY d.profile, a.attempt)
	  FROM webhook.attempts a JOIN webhook.deliveries d USING (delivery_id)}),
	'full:1:200:false:false:true:true,light:1:200:true:true:true:true,'
	  . 'light_batch:1:200:true:true:true:true,'
	  . 'light_failing:1:500:true:true:true:true,light_failing:2:500:true:true:true:true',
	'attempts: light keeps no response headers or body, the request headers and timing stay');

# a retry needs the body: a light delivery keeps it until it is finished
$node->safe_psql('postgres', q{SELECT webhook.alter_profile('light_failing', max_attempts => 100,
                                                             retry_schedule => '{1 hour}')});
$node->safe_psql('postgres', q{INSERT INTO tickets (summary, status_id) VALUES ('Second', 1)});
ok($node->poll_query_until('postgres', q{
	SELECT status = 'retrying' AND request_body ->> 'event' = 'ticket.created'
	  FROM webhook.deliveries WHERE profile = 'light_failing' ORDER BY delivery_id DESC LIMIT 1}),
	'a light delivery that will be retried keeps its body');

# what cannot be sent again says why
my $light_id = $node->safe_psql('postgres', q{
	SELECT min(delivery_id) FROM webhook.deliveries WHERE profile = 'light' AND status = 'delivered'});
my $deliveries = $node->safe_psql('postgres', q{SELECT count(*) FROM webhook.delivery});
my ($rc, $out, $err) = $node->psql('postgres', "SELECT webhook.redeliver($light_id)");
like($err, qr/delivery $light_id cannot be sent again: its body was not kept.*DETAIL:.*logs light/s,
	'redeliver of a light delivery says why');
($rc, $out, $err) = $node->psql('postgres', q{SELECT webhook.replay('light_failing', now() - interval '1 hour')});
like($err, qr/1 of these deliveries cannot be sent again: their bodies were not kept/,
	'replay of light deliveries says why');
is($node->safe_psql('postgres', q{SELECT count(*) FROM webhook.delivery}), $deliveries, 'and makes nothing');
# the retrying one still can
is($node->safe_psql('postgres', q{SELECT webhook.replay('light_failing', now() - interval '1 hour', 'retrying')}),
	'1', 'a light delivery not yet finished can be replayed');
my $full_id = $node->safe_psql('postgres', q{
	SELECT min(delivery_id) FROM webhook.deliveries WHERE profile = 'full'});
ok($node->safe_psql('postgres', "SELECT webhook.redeliver($full_id)") > $full_id, 'a full one can be redelivered');
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 3 FROM webhook.deliveries WHERE profile = 'full' AND status = 'delivered'}),
	'and is delivered again');

# back to full: what comes next keeps its bodies
$node->safe_psql('postgres', q{SELECT webhook.alter_profile('light', log => 'full')});
$node->safe_psql('postgres', q{INSERT INTO tickets (summary, status_id) VALUES ('Third', 1)});
ok($node->poll_query_until('postgres', q{
	SELECT request_body #>> '{ticket,summary}' = 'Third' AND response_body IS NOT NULL
	  FROM webhook.deliveries WHERE profile = 'light' AND status = 'delivered'
	 ORDER BY delivery_id DESC LIMIT 1}), 'a profile back to full keeps the bodies of what follows');

$receiver->stop;
$node->stop;
done_testing();
