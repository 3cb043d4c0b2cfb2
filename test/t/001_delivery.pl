# A new ticket reaches a real receiver as JSON; the delivery and its
# attempt are recorded; failures are recorded as distinct outcomes.
use strict;
use warnings;

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use WebhookTest;

my $node = new_webhook_node('delivery');
my $receiver = WebhookTest::Receiver->start;

$node->safe_psql('postgres', sample_schema());
$node->safe_psql('postgres', 'CREATE EXTENSION webhook');
ok( $node->poll_query_until('postgres', q{
	SELECT count(*) = 1 FROM pg_stat_activity
	 WHERE backend_type = 'webhook worker' AND datname = 'postgres'
	   AND application_name = 'webhook worker'}),
	'pg_stat_activity shows the worker as "webhook worker"');

my $url = $receiver->url('/hooks');
$node->safe_psql('postgres', qq{
	SELECT webhook.define_event('ticket.created', 'tickets', 'insert', title => 'New Ticket Logged');
	SELECT webhook.define_event('ticket.updated', 'tickets', 'update');
	SELECT webhook.create_profile('ops', '$url', ARRAY['ticket.created', 'ticket.updated']);
});

# a rolled-back ticket first, then a committed one
$node->safe_psql('postgres', q{
	BEGIN;
	INSERT INTO tickets (summary, status_id) VALUES ('rolled back ticket', 1);
	ROLLBACK;
});
my $committed_at = time;
my $ticket_id = $node->safe_psql('postgres', q{
	INSERT INTO tickets (summary, status_id, agent_id, priority_id)
	VALUES ('Printer on fire', 1, 1, 2) RETURNING ticket_id});

my $got = $receiver->wait_for(1);
is(scalar @$got, 1, 'the new ticket arrived');
my $req = $got->[0];
note(sprintf('commit to receipt: %.1f ms', 1000 * ($req->{received_at} - $committed_at)));

is($req->{method}, 'POST', 'method is POST');
is($req->{path}, '/hooks', 'sent to the profile URL');
is($req->{headers}{'content-type'}, 'application/json', 'content type is JSON');
like($req->{headers}{'user-agent'}, qr{^webhook/\d}, 'user agent names webhook');
like($req->{headers}{'webhook-id'}, qr/^[0-9a-f-]{36}$/, 'webhook-id header');
like($req->{headers}{'webhook-timestamp'}, qr/^\d+$/, 'webhook-timestamp is unix seconds');
ok(abs($req->{headers}{'webhook-timestamp'} - time) < 300, 'webhook-timestamp is now');

my $body = $req->{json};
ok($body, 'the body is JSON');
is($body->{id}, $req->{headers}{'webhook-id'}, 'the body id is the webhook-id');
is($body->{event}, 'ticket.created', 'event name');
is($body->{title}, 'New Ticket Logged', 'event title');
is($body->{profile}, 'ops', 'profile name');
like($body->{binding_id}, qr/^\d+$/, 'binding id');
is($body->{object_id}, $ticket_id, 'object_id is the ticket key');
like($body->{timestamp}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/, 'timestamp is ISO 8601 UTC');
is($body->{ticket}{summary}, 'Printer on fire', 'the ticket row is in the body');
is($body->{ticket}{priority_id}, 2, 'numbers stay numbers');
ok(!exists $body->{changes}, 'an insert has no changes');

ok( $node->poll_query_until('postgres', q{
	SELECT status = 'delivered' FROM webhook.deliveries ORDER BY delivery_id LIMIT 1}),
	'the delivery is marked delivered');
is( $node->safe_psql('postgres', q{
	SELECT concat_ws('|', profile, events::text, items, attempts, response_status,
	                 webhook_id = request_body->>'id', response_body, error IS NULL,
	                 duration_ms > 0, delivered_at IS NOT NULL)
	  FROM webhook.deliveries}),
	'ops|{ticket.created}|1|1|200|t|{"ok": true}|t|t|t',
	'the delivery row records the response');
is( $node->safe_psql('postgres', q{
	SELECT concat_ws('|', attempt, outcome, response_status,
	                 response_headers->>'X-Receiver', response_body,
	                 request_headers->>'Content-Type',
	                 request_headers->>'webhook-id' = (SELECT webhook_id FROM webhook.deliveries))
	  FROM webhook.attempts}),
	'1|response|200|webhook-test|{"ok": true}|application/json|t',
	'the attempt records response headers, body and request headers');

# an update carries the changed columns
$node->safe_psql('postgres', "UPDATE tickets SET agent_id = 2 WHERE ticket_id = $ticket_id");
$got = $receiver->wait_for(1, sub { $_[0]{json} && $_[0]{json}{event} eq 'ticket.updated' });
is_deeply($got->[0]{json}{changes}, { agent_id => { old => 1, new => 2 } },
	'an update carries old and new values of what changed');
is($got->[0]{json}{title}, 'Ticket Updated', 'default title from the event name');

# one statement of many rows: one delivery each, each its own id
$node->safe_psql('postgres', q{
	INSERT INTO tickets (summary, status_id) SELECT 'bulk ' || g, 1 FROM generate_series(1, 50) g});
$got = $receiver->wait_for(50, sub { $_[0]{json} && ($_[0]{json}{ticket}{summary} // '') =~ /^bulk / });
is(scalar @$got, 50, 'every row of a multi-row insert arrived');
my %ids = map { $_->{headers}{'webhook-id'} => 1 } @$got;
is(scalar keys %ids, 50, 'each has its own webhook-id');

my @rolled_back = grep { ($_->{body} // '') =~ /rolled back ticket/ } @{ $receiver->requests };
is(scalar @rolled_back, 0, 'the rolled-back ticket was never sent');

# failures are recorded, distinctly, and retried later
my $closed_port = do {
	require IO::Socket::INET;
	my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 1);
	my $p = $s->sockport;
	close $s;
	$p;
};
my $failing = $receiver->url('/status/500');
my $hanging = $receiver->url('/hang');
$node->safe_psql('postgres', qq{
	SELECT webhook.define_event('action.added', 'actions', 'insert');
	SELECT webhook.create_profile('failing', '$failing', ARRAY['action.added']);
	SELECT webhook.create_profile('down', 'http://127.0.0.1:$closed_port/', ARRAY['action.added']);
	SELECT webhook.create_profile('hanging', '$hanging', ARRAY['action.added']);
	ALTER SYSTEM SET webhook.request_timeout = '1s';
	SELECT pg_reload_conf();
});
$node->safe_psql('postgres', "INSERT INTO actions (ticket_id, note) VALUES ($ticket_id, 'Looked at it')");
ok( $node->poll_query_until('postgres', q{
	SELECT count(*) = 3 FROM webhook.deliveries
	 WHERE profile IN ('failing', 'down', 'hanging') AND attempts >= 1 AND status <> 'pending'
	   AND status <> 'sending' AND status <> 'delivered'}),
	'failed deliveries wait for a retry');
is( $node->safe_psql('postgres', q{
	SELECT string_agg(concat_ws('|', d.profile, a.outcome, coalesce(a.response_status, 0),
	                            a.error IS NOT NULL, d.next_attempt_at > a.started_at),
	                  ',' ORDER BY d.profile)
	  FROM webhook.deliveries d JOIN webhook.attempts a USING (delivery_id)
	 WHERE d.profile IN ('failing', 'down', 'hanging') AND a.attempt = 1}),
	'down|connect_error|0|t|t,failing|response|500|f|t,hanging|timeout|0|t|t',
	'a 500, a refused connection and a timeout are recorded as such');

# A webhook-id is the name-based UUID of its queue row's seed, the changed
# row's place in it and the binding, whichever way the worker expands the
# change: on its own (no profile batches) or with the batches (one does).
my $ids_match = sub {
	my ($summary) = @_;
	my $seed = $node->safe_psql('postgres', qq{
		BEGIN;
		INSERT INTO tickets (summary, status_id) VALUES ('$summary 1', 1), ('$summary 2', 1);
		SELECT id_seed FROM webhook.occurrence ORDER BY occurrence_id DESC LIMIT 1;
		COMMIT;});
	$node->poll_query_until('postgres', qq{
		SELECT count(*) = 2 FROM webhook.deliveries
		 WHERE profile = 'ops' AND request_body->'ticket'->>'summary' LIKE '$summary %'})
	  or die "the tickets were not expanded";
	return $node->safe_psql('postgres', qq{
		SELECT bool_and(d.webhook_id = webhook._name_uuid('$seed/' || r.ord || '/' || b.binding_id)::text
		                AND d.request_body->>'id' = d.webhook_id)
		  FROM webhook.bindings b
		 CROSS JOIN generate_series(1, 2) AS r(ord)
		  JOIN webhook.deliveries d ON d.profile = 'ops'
		                           AND d.request_body->'ticket'->>'summary' = '$summary ' || r.ord
		 WHERE b.profile = 'ops' AND b.event = 'ticket.created'});
};
is($ids_match->('ids alone'), 't', 'webhook-ids derive from the queue row, expanded on its own');
$node->safe_psql('postgres', q{
	SELECT webhook.create_profile('grouping', 'http://127.0.0.1:9/', ARRAY['ticket.created'],
	                              batching => 'any_event', enabled => false)});
is($ids_match->('ids with batches'), 't', 'and the same when a profile batches');
$node->safe_psql('postgres', q{SELECT webhook.drop_profile('grouping')});

$receiver->stop;
$node->stop;
done_testing();
