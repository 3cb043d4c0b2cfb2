# Server faults while deliveries flow: kill -9 of the worker, kill -9 of a
# backend (the whole cluster restarts), pg_ctl stop -m immediate then
# start, pg_ctl restart -m fast.  Each case commits 2,000 tickets, strikes
# once 200 requests of them have arrived, then commits 1,000 more; see
# FaultCase for what is checked.  After the fast restart, nothing answered
# may arrive twice.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WebhookTest;
use FaultCase;

my ($node, $receiver) = fault_setup('server_faults', max_concurrency => 8);
# answers of 10 ms through 8 slots: the drain takes a few seconds
$receiver->set_mode('slow 10');

sub server_back
{
	my ($old_worker) = @_;
	ok($node->poll_query_until('postgres', 'SELECT true'), 'the server accepts connections again');
	ok(wait_until(sub { my $p = eval { worker_pid($node, 'postgres') }; $p && $p ne $old_worker }, 60),
		'a new worker runs');
}

sub run_case
{
	my ($label, $fault, $strike, %opts) = @_;
	note("$label: $fault");
	my $before = $receiver->count;
	commit_tickets($node, $label, 1, 2000);
	ok(wait_until(sub { $receiver->count >= $before + 200 }, 60), "$label: deliveries flow");
	my $waiting = $node->safe_psql('postgres', q{
		SELECT (SELECT count(*) FROM webhook.delivery WHERE status IN ('pending', 'sending', 'retrying'))
		     + (SELECT coalesce(sum(row_count), 0) FROM webhook.occurrence)});
	my $worker = worker_pid($node, 'postgres');
	$strike->();
	server_back($worker);
	commit_tickets($node, $label, 2001, 3000);
	check_case($node, $receiver, $label, %opts);
	diag("fault | $label | $fault | $waiting changes or deliveries waiting or on the wire when it struck");
}

run_case('worker_killed', 'kill -9 of the worker', sub {
	kill 'KILL', worker_pid($node, 'postgres');
});

run_case('backend_killed', 'kill -9 of a backend: the cluster restarts', sub {
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[ 'psql', '-X', '-d', $node->connstr('postgres'), '-c', 'SELECT pg_sleep(60) AS victim' ],
		'>', \$out, '2>', \$err);
	ok(wait_until(sub {
		$node->safe_psql('postgres', q{
			SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(60) AS victim%'
			   AND pid <> pg_backend_pid()}) eq '1' }, 30), 'backend_killed: the victim runs');
	my $victim = $node->safe_psql('postgres', q{
		SELECT pid FROM pg_stat_activity WHERE query LIKE '%pg_sleep(60) AS victim%' AND pid <> pg_backend_pid()});
	kill 'KILL', $victim;
	$h->finish;
});

run_case('stop_immediate', 'pg_ctl stop -m immediate, then start', sub {
	$node->stop('immediate');
	$node->start;
});

# a fast shutdown lets the requests on the wire finish, and records them
run_case('restart_fast', 'pg_ctl restart -m fast', sub {
	$node->restart;
}, no_duplicates => 1);

$receiver->stop;
$node->stop;
done_testing();
