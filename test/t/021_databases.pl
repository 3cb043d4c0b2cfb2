# Many databases on one server: one sender serves them all; workers run
# while their database has work, at most webhook.max_workers at once, and
# leave when idle.  All of it fits in max_worker_processes = 8.  Changes
# committed in every database are delivered; an idle database has no worker
# after the idle timeout, and its next change is delivered; a database whose
# receiver hangs does not hold up the others.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use WebhookTest;

my $databases = 30;
my $max_workers = 4;

my $node = PostgreSQL::Test::Cluster->new('databases');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'webhook'
max_worker_processes = 8
webhook.max_workers = $max_workers
webhook.worker_idle_timeout = 2s
webhook.request_timeout = 300s
log_min_messages = info
});
$node->start;
my $receiver = WebhookTest::Receiver->start;

for my $i (1 .. $databases)
{
	$node->safe_psql('postgres', "CREATE DATABASE db$i");
	$node->safe_psql("db$i", sample_schema());
	my $url = $receiver->url("/hooks/db$i");
	$node->safe_psql("db$i", qq{
		CREATE EXTENSION webhook;
		SELECT webhook.define_event('ticket.created', 'tickets', 'insert');
		SELECT webhook.create_profile('ops', '$url', ARRAY['ticket.created']);
	});
}

# the most webhook workers seen running at once, sampled while $check waits
my $most_workers = 0;
sub workers_running
{
	my $n = $node->safe_psql('postgres', q{
		SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'webhook worker'});
	$most_workers = $n if $n > $most_workers;
	return $n;
}

sub received_from
{
	my ($db) = @_;
	return scalar grep { $_->{path} =~ m{^/(hooks|fault)/$db$} } @{ $receiver->requests };
}

sub commit_ticket
{
	my ($db, $summary) = @_;
	$node->safe_psql($db, "INSERT INTO tickets (summary, status_id) VALUES ('$summary', 1)");
}

# 1. a change in every database, all delivered
commit_ticket("db$_", "first in db$_") for 1 .. $databases;
ok( wait_until(
		sub { workers_running(); scalar(grep { received_from("db$_") >= 1 } 1 .. $databases) == $databases },
		120),
	"a change committed in each of $databases databases is delivered");
cmp_ok($most_workers, '<=', $max_workers, "at most webhook.max_workers ($max_workers) workers ran at once");
is($node->safe_psql('postgres', q{
	SELECT count(*) || ' ' || coalesce(max(datname), 'no database') || ' ' || max(application_name)
	  FROM pg_stat_activity WHERE backend_type = 'webhook sender'}),
	'1 no database webhook sender', 'one sender serves every database, in pg_stat_activity');
for my $i (1 .. $databases)
{
	ok($node->poll_query_until("db$i", q{SELECT string_agg(status, ',') = 'delivered' FROM webhook.deliveries}),
		"db$i: its delivery is recorded as delivered");
}

# 2. idle databases' workers leave; the next change starts one again
ok(wait_until(sub { workers_running() == 0 }, 60), 'with no work, every worker leaves after the idle timeout');
my $committed_at = time;
commit_ticket('db5', 'second in db5');
ok(wait_until(sub { received_from('db5') >= 2 }, 30), "an idle database's next change is delivered");
note(sprintf('idle database, commit to receipt: %.0f ms', 1000 * (time - $committed_at)));
ok($node->poll_query_until('db5', q{SELECT count(*) = 2 FROM webhook.deliveries WHERE status = 'delivered'}),
	'db5: both deliveries recorded');

# a retry comes due in a database without a worker: one starts for it
$node->safe_psql('db6', qq{
	SELECT webhook.alter_profile('ops', url => '@{[ $receiver->url('/fault/db6') ]}');
	SELECT webhook.alter_profile('ops', max_attempts => 3, retry_schedule => '{5 seconds}');
});
$receiver->set_mode('status 503');
commit_ticket('db6', 'retried in db6');
ok( $node->poll_query_until('db6', q{
	SELECT count(*) = 1 FROM webhook.deliveries WHERE status = 'retrying' AND attempts = 1}),
	'db6: the first attempt failed and waits to be retried');
ok(wait_until(sub { worker_pid($node, 'db6') eq '' }, 30), 'db6: its worker leaves while the retry waits');
$receiver->set_mode('ok');
ok( $node->poll_query_until('db6', q{
	SELECT count(*) = 1 FROM webhook.deliveries WHERE status = 'delivered' AND attempts = 2}),
	'db6: the retry came due and was delivered');

# 3. a receiver that hangs holds up only its own database
$node->safe_psql('db1', qq{SELECT webhook.alter_profile('ops', url => '@{[ $receiver->url('/hang') ]}')});
commit_ticket('db1', 'hangs in db1');
ok( $node->poll_query_until('db1', q{SELECT count(*) = 1 FROM webhook.deliveries WHERE status = 'sending'}),
	'db1: its delivery is on the wire to a receiver that does not answer');
my %before = map { ("db$_" => received_from("db$_")) } 2 .. $databases;
commit_ticket("db$_", "third in db$_") for 2 .. $databases;
ok( wait_until(
		sub {
			workers_running();
			scalar(grep { received_from("db$_") > $before{"db$_"} } 2 .. $databases) == $databases - 1;
		},
		120),
	'every other database is delivered while db1 waits for its receiver');
is($node->safe_psql('db1', q{SELECT status FROM webhook.deliveries WHERE status <> 'delivered'}),
	'sending', 'db1: still waiting for its receiver');
cmp_ok($most_workers, '<=', $max_workers, 'still at most webhook.max_workers at once');

my $log = slurp_file($node->logfile);
ok($log !~ /no background worker slot is free/, 'no database waited for a background worker slot');
ok($log !~ /could not start a webhook worker/, 'no worker failed to start');

$receiver->stop;
$node->stop('fast');
done_testing();
