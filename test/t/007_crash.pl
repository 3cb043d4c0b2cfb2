# The worker killed with SIGKILL while thousands of deliveries are on their
# way: the server restarts, and every committed change is delivered; what
# went out twice (sent, then its record lost) carries the same webhook-id.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WebhookTest;

my $total = 10_000;
my $node = new_webhook_node('crash');
my $receiver = WebhookTest::Receiver->start;
my $url = $receiver->url('/crash');

$node->safe_psql('postgres', sample_schema());
$node->safe_psql('postgres', qq{
	CREATE EXTENSION webhook;
	SELECT webhook.define_ticket_events('tickets');
	SELECT webhook.create_profile('crash', '$url', ARRAY['ticket.created']);
	INSERT INTO tickets (summary, status_id) SELECT 'crash ' || g, 1 FROM generate_series(1, $total) g;
});

ok(wait_until(sub { $receiver->count >= 1000 }, 120), 'deliveries are flowing');
my $pid = worker_pid($node, 'postgres');
my $in_flight = $node->safe_psql('postgres', q{
	SELECT count(*) FROM webhook.delivery WHERE status IN ('pending', 'sending')});
ok($in_flight > 0, "$in_flight deliveries queued or on the wire when the worker is killed");
kill 'KILL', $pid;
ok(wait_until(sub { my $p = eval { worker_pid($node, 'postgres') }; $p && $p ne $pid }, 60),
	'a new worker runs after the crash restart');

ok($node->poll_query_until('postgres', qq{
	SELECT count(*) = $total FROM webhook.delivery WHERE status = 'delivered'}),
	'every committed change is delivered in the end');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM webhook.delivery WHERE status <> 'delivered'}), '0', 'nothing stuck');

my (%ids_of, $requests);
for my $r (@{ $receiver->requests })
{
	next unless $r->{path} eq '/crash';
	$requests++;
	$ids_of{ $r->{json}{object_id} }{ $r->{headers}{'webhook-id'} } = 1;
}
is(scalar(keys %ids_of), $total, "the receiver got all $total tickets ($requests requests)");
is(scalar(grep { keys %{ $ids_of{$_} } > 1 } keys %ids_of), 0,
	'a ticket sent more than once came under one webhook-id');
note(sprintf '%d requests were duplicates', $requests - $total);

# The sender stopped (SIGTERM) while deliveries flow: the worker stops
# too, the launcher starts both again, and what the sender held is sent.
my $more = 3000;
my $before = $receiver->count;
$node->safe_psql('postgres', qq{
	INSERT INTO tickets (summary, status_id) SELECT 'sender ' || g, 1 FROM generate_series(1, $more) g;
});
ok(wait_until(sub { $receiver->count >= $before + 300 }, 60), 'the next deliveries are flowing');
# this node's own sender: a child of its postmaster (other servers may run)
my $postmaster = PostgreSQL::Test::Utils::slurp_file($node->data_dir . '/postmaster.pid') =~ s/\n.*//sr;
my $sender = `pgrep -P $postmaster -f 'webhook sender *\$'`;
chomp $sender;
ok($sender =~ /^\d+$/, "the sender runs ($sender)");
kill 'TERM', $sender;
ok($node->poll_query_until('postgres', qq{
	SELECT count(*) = $total + $more FROM webhook.delivery WHERE status = 'delivered'}),
	'after the sender stopped, every change is delivered in the end');
%ids_of = ();
for my $r (@{ $receiver->requests })
{
	next unless $r->{path} eq '/crash' && $r->{json}{ticket}{summary} =~ /^sender /;
	$ids_of{ $r->{json}{object_id} }{ $r->{headers}{'webhook-id'} } = 1;
}
is(scalar(keys %ids_of), $more, "the receiver got all $more of them");
is(scalar(grep { keys %{ $ids_of{$_} } > 1 } keys %ids_of), 0, 'each under one webhook-id');
ok($node->log_contains(qr/the webhook sender stopped while serving database "postgres"/),
	'the worker said why it stopped');

$receiver->stop;
$node->stop;
done_testing();
