# Capture under real use: a change of bindings reaches a session that is
# already writing, concurrent writers lose nothing and send nothing they
# rolled back, and a failing condition is recorded, never sent.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WebhookTest;

my $node = new_webhook_node('capture');
my $receiver = WebhookTest::Receiver->start;
my $url = $receiver->url('/hooks');

$node->safe_psql('postgres', sample_schema());
$node->safe_psql('postgres', qq{
	CREATE EXTENSION webhook;
	SELECT webhook.define_ticket_events('tickets', 'actions', closed_statuses => '{9}');
	SELECT webhook.create_profile('ops', '$url', ARRAY['ticket.created']);
	SELECT webhook.create_profile('ops2', '$url', ARRAY['ticket.deleted']);
});
# (bindings are added to a profile of their own: two of one event in one
# profile make one delivery)

# bindings of one summary's deliveries, once they are all recorded
sub bindings_of
{
	my ($summary, $expected) = @_;
	my $query = qq{
		SELECT coalesce(string_agg(d.request_body->>'binding_id', ',' ORDER BY (d.request_body->>'binding_id')::int), '')
		  FROM webhook.deliveries d WHERE d.request_body->'ticket'->>'summary' = '$summary'};
	$node->poll_query_until('postgres', $query, $expected);
	return $node->safe_psql('postgres', $query);
}

# a writer session that stays connected, with its plans cached
my $writer = $node->background_psql('postgres');
$writer->query_safe(q{INSERT INTO tickets (summary, status_id, priority_id) VALUES ('first', 1, 1)});
my $all = $node->safe_psql('postgres', q{SELECT binding_id FROM webhook.bindings WHERE profile = 'ops'});
is(bindings_of('first', $all), $all, 'the writer queues for the one binding');

my $p1 = $node->safe_psql('postgres', q{
	SELECT webhook.add_event('ops2', 'ticket.created', '[{"field": "priority_id", "op": "eq", "value": 1}]')});
$writer->query_safe(q{INSERT INTO tickets (summary, status_id, priority_id) VALUES ('second', 1, 1)});
is(bindings_of('second', "$all,$p1"), "$all,$p1",
	'a binding added in another session applies to the next statement of the writer');

$node->safe_psql('postgres', "SELECT webhook.remove_event($p1)");
$writer->query_safe(q{INSERT INTO tickets (summary, status_id, priority_id) VALUES ('third', 1, 1)});
is(bindings_of('third', $all), $all, 'so does a binding removed');

my $sql = $node->safe_psql('postgres', q{
	SELECT webhook.add_event('ops2', 'ticket.created', condition_sql => 'new.summary LIKE ''%urgent%''')});
$writer->query_safe(q{INSERT INTO tickets (summary, status_id) VALUES ('urgent fourth', 1), ('calm fifth', 1)});
is(bindings_of('urgent fourth', "$all,$sql"), "$all,$sql", 'and a condition_sql binding');
is(bindings_of('calm fifth', $all), $all, 'which only matches its rows');
$node->safe_psql('postgres', "SELECT webhook.remove_event($sql)");

# a condition that fails at run time: the ticket is kept, the delivery is
# recorded as failed with the error, and nothing is sent
my $bad = $node->safe_psql('postgres', q{
	SELECT webhook.add_event('ops2', 'ticket.created', condition_sql => '1 / (new.priority_id - 3) = 0')});
my ($ret, $out, $err) = $node->psql('postgres',
	q{INSERT INTO tickets (summary, status_id, priority_id) VALUES ('divides by zero', 1, 3)});
is($ret, 0, 'the ticket write succeeds although a condition fails');
like($err, qr/WARNING:  a webhook condition on table "tickets" failed: division by zero/,
	'with a warning that names the error');
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 2 FROM webhook.deliveries
	 WHERE request_body->'ticket'->>'summary' = 'divides by zero' AND status = 'failed'
	   AND error LIKE '%division by zero%' AND attempts = 0}),
	'its deliveries are recorded as failed, with the error, never attempted');
$node->safe_psql('postgres', "SELECT webhook.remove_event($bad)");
$writer->quit;

# concurrent writers: every committed change is queued once per binding,
# nothing that was rolled back
$node->safe_psql('postgres', q{
	SELECT webhook.add_event('ops', 'ticket.reassigned');
	TRUNCATE webhook.delivery, webhook.attempt;
});
my $before = scalar @{ $receiver->requests };
$node->pgbench(
	'--no-vacuum --client=4 --jobs=4 --transactions=100',
	0, [qr{processed: 400/400}], [qr{^$}],
	'four concurrent writers',
	{
		'003_writers' => q{
\set rollback random(1, 5)
BEGIN;
INSERT INTO tickets (summary, status_id, agent_id) VALUES ('concurrent ' || :client_id || '-' || :rollback, 1, 1) RETURNING ticket_id \gset
UPDATE tickets SET agent_id = 2 WHERE ticket_id = :ticket_id;
\if :rollback = 1
ROLLBACK;
\else
COMMIT;
\endif
}
	});
my $committed = $node->safe_psql('postgres', q{SELECT count(*) FROM tickets WHERE summary LIKE 'concurrent %'});
ok($committed > 0 && $committed < 400, "$committed of 400 transactions committed");
ok($node->poll_query_until('postgres', qq{
	SELECT count(*) = 2 * $committed FROM webhook.deliveries WHERE status = 'delivered'}),
	'every committed change was delivered, once per event');
my @got = grep { ($_->{json}{ticket}{summary} // '') =~ /^concurrent / }
  @{ $receiver->requests }[ $before .. $#{ $receiver->requests } ];
is(scalar @got, 2 * $committed, 'the receiver got exactly those');
is(scalar(grep { $_->{json}{ticket}{summary} =~ /-1$/ } @got), 0, 'nothing that was rolled back');
my %per_ticket;
$per_ticket{ $_->{json}{object_id} }{ $_->{json}{event} }++ for @got;
is(scalar(grep { scalar(keys %$_) != 2 || grep({ $_ != 1 } values %$_) } values %per_ticket), 0,
	'each ticket: one ticket.created and one ticket.reassigned');

$receiver->stop;
$node->stop;
done_testing();
