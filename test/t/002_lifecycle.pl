# The worker's life: one per database that has the extension, started
# without a restart, out of the way of DROP DATABASE and DROP EXTENSION,
# back after a crash, never on a standby, refused without preloading.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WebhookTest;

# without shared_preload_libraries, CREATE EXTENSION says what to do
my $plain = PostgreSQL::Test::Cluster->new('plain');
$plain->init;
$plain->start;
my ($ret, $stdout, $stderr) = $plain->psql('postgres', 'CREATE EXTENSION webhook');
isnt($ret, 0, 'CREATE EXTENSION fails when the library is not preloaded');
like($stderr, qr/webhook must be loaded via shared_preload_libraries/, 'and says why');
like($stderr, qr/HINT:.*shared_preload_libraries/, 'and how to fix it');
$plain->stop;

my $node = new_webhook_node('life', allows_streaming => 1);
my $receiver = WebhookTest::Receiver->start;

ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'webhook launcher'}),
	'the launcher runs');

# every database that has the extension gets its own worker, no restart needed
for my $db (qw(db1 db2))
{
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, sample_schema());
	my $url = $receiver->url("/$db");
	$node->safe_psql($db, qq{
		CREATE EXTENSION webhook;
		SELECT webhook.define_event('ticket.created', 'tickets', 'insert');
		SELECT webhook.create_profile('ops', '$url', ARRAY['ticket.created']);
	});
	ok(wait_until(sub { worker_pid($node, $db) ne '' }), "$db has a worker");
}
is(worker_pid($node, 'postgres'), '', 'a database without the extension has none');

for my $db (qw(db1 db2))
{
	$node->safe_psql($db, "INSERT INTO tickets (summary, status_id) VALUES ('from $db', 1)");
}
my $got = $receiver->wait_for(2);
is_deeply([ sort map { $_->{path} } @$got ], [ '/db1', '/db2' ],
	'each database delivers through its own worker');

# DROP DATABASE is not blocked by the worker
my $db2_worker = worker_pid($node, 'db2');
($ret, $stdout, $stderr) = $node->psql('postgres', 'DROP DATABASE db2');
is($ret, 0, 'DROP DATABASE succeeds while its worker runs');
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_database WHERE datname = 'db2'"),
	'0', 'the database is gone');
ok(wait_until(sub { worker_pid($node, 'db2') eq '' }), 'its worker is gone');

# a failed DROP DATABASE gives the worker back
$node->safe_psql('postgres', 'CREATE DATABASE db3');
$node->safe_psql('db3', 'CREATE EXTENSION webhook');
ok(wait_until(sub { worker_pid($node, 'db3') ne '' }), 'db3 has a worker');
my $session = $node->background_psql('db3');
($ret, $stdout, $stderr) = $node->psql('postgres', 'DROP DATABASE db3');
isnt($ret, 0, 'DROP DATABASE of a database in use still fails');
like($stderr, qr/being accessed by other users/, 'because of the other session, as always');
ok(wait_until(sub { worker_pid($node, 'db3') ne '' }), 'the worker of db3 is back');
$session->quit;

# ALTER DATABASE ... RENAME and CREATE DATABASE ... TEMPLATE need the
# database to themselves: the worker steps aside and comes back
($ret, $stdout, $stderr) = $node->psql('postgres', 'ALTER DATABASE db3 RENAME TO db4');
is($ret, 0, 'ALTER DATABASE RENAME succeeds while the worker runs') or diag($stderr);
ok(wait_until(sub { worker_pid($node, 'db4') ne '' }), 'the renamed database has its worker back');
($ret, $stdout, $stderr) = $node->psql('postgres', 'CREATE DATABASE db5 TEMPLATE db4');
is($ret, 0, 'a database with the extension can be used as a template') or diag($stderr);
ok(wait_until(sub { worker_pid($node, 'db5') ne '' }), 'the copy gets a worker of its own');
ok(wait_until(sub { worker_pid($node, 'db4') ne '' }), 'the template has its worker back');
$node->safe_psql('postgres', 'DROP DATABASE db4');
$node->safe_psql('postgres', 'DROP DATABASE db5');

# the worker of db1 still delivers
$node->safe_psql('db1', "INSERT INTO tickets (summary, status_id) VALUES ('db1 after drop', 1)");
$got = $receiver->wait_for(1, sub { $_[0]{body} =~ /db1 after drop/ });
is(scalar @$got, 1, 'db1 delivers after db2 was dropped');

# DROP EXTENSION is not blocked, and the worker leaves
($ret, $stdout, $stderr) = $node->psql('db1', 'DROP EXTENSION webhook');
is($ret, 0, 'DROP EXTENSION succeeds while the worker runs') or diag($stderr);
is($node->safe_psql('db1', q{
	SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'webhook_capture_%'}),
	'0', 'the capture triggers went with it');
ok(wait_until(sub { worker_pid($node, 'db1') eq '' }), 'the worker left');
$node->safe_psql('db1', "INSERT INTO tickets (summary, status_id) VALUES ('no extension', 1)");

# CREATE EXTENSION again brings it back
my $url = $receiver->url('/db1');
$node->safe_psql('db1', qq{
	CREATE EXTENSION webhook;
	SELECT webhook.define_event('ticket.created', 'tickets', 'insert');
	SELECT webhook.create_profile('ops', '$url', ARRAY['ticket.created']);
});
ok(wait_until(sub { worker_pid($node, 'db1') ne '' }), 'CREATE EXTENSION starts a worker again');

# a worker that ends with an error (here: terminated) is restarted by the launcher
my $terminated = worker_pid($node, 'db1');
$node->safe_psql('postgres', "SELECT pg_terminate_backend($terminated)");
ok(wait_until(sub { my $p = worker_pid($node, 'db1'); $p ne '' && $p ne $terminated }, 30),
	'a terminated worker is started again by the launcher');

# kill -9 while requests are in flight: the cluster restarts, the worker
# comes back and sends again what was not recorded, with the same ids
my $slow = $receiver->url('/slow/3000');
$node->safe_psql('db1', qq{
	SELECT webhook.define_event('ticket.updated', 'tickets', 'update');
	SELECT webhook.create_profile('slow', '$slow', ARRAY['ticket.updated']);
	UPDATE tickets SET details = 'touched' WHERE summary IN ('from db1', 'db1 after drop');
});
my $in_flight = $receiver->wait_for(2, sub { $_[0]{path} eq '/slow/3000' });
is(scalar @$in_flight, 2, 'two slow requests are in flight');
my $old_pid = worker_pid($node, 'db1');
kill 'KILL', $old_pid;
ok(wait_until(sub { my $p = eval { worker_pid($node, 'db1') } // ''; $p ne '' && $p ne $old_pid }, 60),
	'the worker is back after kill -9');
ok($node->poll_query_until('db1', q{
	SELECT count(*) = 2 FROM webhook.deliveries WHERE profile = 'slow' AND status = 'delivered'}),
	'the interrupted deliveries are delivered after the restart');
my $slow_requests = $receiver->wait_for(4, sub { $_[0]{path} eq '/slow/3000' });
my %per_id;
$per_id{ $_->{headers}{'webhook-id'} }++ for @$slow_requests;
is(scalar keys %per_id, 2, 're-sent requests carry the same webhook-id');
ok(!grep({ $_ < 2 } values %per_id), 'each interrupted delivery was sent again');
is(scalar(grep { $_->{json} && $_->{json}{event} eq 'ticket.created'
			&& $_->{json}{ticket}{summary} eq 'no extension' } @{ $receiver->requests }), 0,
	'a ticket written without the extension was not sent');

# no worker on a standby
$node->backup('backup');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($node, 'backup', has_streaming => 1);
$standby->start;
$node->wait_for_catchup($standby);
sleep 2;
is($standby->safe_psql('postgres', q{
	SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'webhook%'}),
	'0', 'neither launcher nor worker runs on a standby');
$standby->stop;

$receiver->stop;
$node->stop;
done_testing();
