# TRUNCATE and LOCK TABLE of the queue's tables, in either order, while
# tickets are written and deliveries flow: each waits for the worker's step
# at most, never deadlocks with it, and the worker goes on delivering.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WebhookTest;

my $node = new_webhook_node('truncate');
my $receiver = WebhookTest::Receiver->start;
my $url = $receiver->url('/hooks');

$node->safe_psql('postgres', sample_schema());
$node->safe_psql('postgres', qq{
	CREATE EXTENSION webhook;
	SELECT webhook.define_ticket_events('tickets', 'actions');
	SELECT webhook.create_profile('desk', '$url', ARRAY['ticket.created', 'ticket.updated']);
	SELECT webhook.create_profile('batched', '$url', ARRAY['ticket.created'],
	                              batching => 'any_event', batch_wait => '200 ms');
});

# writers in the background, and one session truncating and locking the
# queue in both orders
my $dir = PostgreSQL::Test::Utils::tempdir();
open my $fh, '>', "$dir/write.sql" or die;
print $fh q{
INSERT INTO tickets (summary, status_id) VALUES ('truncated or not', 1);
UPDATE tickets SET details = 'seen' WHERE ticket_id = (SELECT max(ticket_id) FROM tickets);
};
close $fh;
my ($writers_out, $writers_err) = ('', '');
my $writers = IPC::Run::start(
	[ 'pgbench', '--no-vacuum', '--client=3', '--jobs=3', '--time=8', '-f', "$dir/write.sql",
	  '-h', $node->host, '-p', $node->port, 'postgres' ],
	'>', \$writers_out, '2>', \$writers_err);
$node->pgbench(
	'--no-vacuum --client=1 --time=8',
	0, [qr{processed: [1-9]}], [qr{^$}],
	'the queue truncated and locked in both orders: no transaction fails',
	{
		'027_truncate' => q{
TRUNCATE webhook.attempt, webhook.delivery, webhook.batch_item;
TRUNCATE webhook.batch_item, webhook.delivery, webhook.attempt;
BEGIN;
LOCK TABLE webhook.attempt, webhook.delivery IN ACCESS EXCLUSIVE MODE;
COMMIT;
BEGIN;
LOCK TABLE webhook.delivery, webhook.attempt IN SHARE ROW EXCLUSIVE MODE;
COMMIT;
},
	});
ok($writers->finish, 'the writers ran without an error') or diag($writers_err);
like($writers_out, qr/processed: [1-9]/, 'and wrote tickets');
ok(!$node->log_contains('deadlock detected'), 'no deadlock under load');

# the worker holds the queue and waits for the attempts that a session
# locked; that session then truncates the queue: it must not wait for the
# worker while the worker waits for it (the worker, which waited first,
# found no circle when it looked; the session would close it, and fail)
my $slow = $receiver->url('/slow/1500');
$node->safe_psql('postgres', qq{
	SELECT webhook.create_profile('slow', '$slow', ARRAY['ticket.deleted']);
	DELETE FROM tickets WHERE ticket_id = (SELECT min(ticket_id) FROM tickets);
});
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 1 FROM webhook.deliveries WHERE profile = 'slow' AND status = 'sending'}),
	'a request to the slow receiver is on the wire');
my $session = $node->background_psql('postgres');
$session->query_safe('BEGIN');
$session->query_safe('LOCK TABLE webhook.attempt IN SHARE MODE');
my $worker = WebhookTest::worker_pid($node, 'postgres');
ok($node->poll_query_until('postgres', qq{
	SELECT count(*) > 0 FROM pg_locks WHERE pid = $worker AND NOT granted}),
	'its answer came, and the worker waits to record it');
my ($out, $ok) = ('', 1);
eval { $out = $session->query_safe('TRUNCATE webhook.delivery, webhook.attempt, webhook.batch_item'); };
ok(!$@, 'the session truncates the queue') or diag($@);
$session->query_safe('COMMIT');
$session->quit;
ok(!$node->log_contains('deadlock detected'), 'no deadlock with the waiting worker');

# the worker is still the same and still delivers
my $marker = 'after the truncations';
$node->safe_psql('postgres', "INSERT INTO tickets (summary, status_id) VALUES ('$marker', 1)");
my $got = $receiver->wait_for(1, sub { $_[0]{body} =~ /\Q$marker\E/ && ref $_[0]{json} eq 'HASH' });
is(scalar @$got, 1, 'a change after them is delivered');
ok(!$node->log_contains('webhook worker.*(terminated|exited with exit code)'), 'the worker never died');

$receiver->stop;
$node->stop;
done_testing();
