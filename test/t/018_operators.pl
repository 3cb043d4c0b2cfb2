# Operators at work while tickets are written: a profile enabled while the
# worker cannot read a table its payload needs, a locked table that holds
# up only the changes that need it, one request per change and event, valid
# webhook-ids, webhook.sending, and DROP EXTENSION under load, twenty times.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::BackgroundPsql;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WebhookTest;

my $node = new_webhook_node('operators');
my $receiver = WebhookTest::Receiver->start;
my %url = map { $_ => $receiver->url("/$_") } qw(noted others twice batched plain);
$node->safe_psql('postgres', sample_schema());
$node->safe_psql('postgres', qq{
	CREATE TABLE cases (case_id int PRIMARY KEY, title text);
	CREATE TABLE notes (note_id int PRIMARY KEY, case_id int, body text);
	CREATE TABLE others (id int PRIMARY KEY);
	INSERT INTO cases VALUES (1, 'the printer');
	CREATE EXTENSION webhook;
	SELECT webhook.define_event('case.noted', 'notes', 'insert', object => 'note',
	                            parent => '{"object": "case", "table": "cases", "column": "case_id"}');
	SELECT webhook.define_event('other.created', 'others', 'insert');
	SELECT webhook.create_profile('noted', '$url{noted}', ARRAY['case.noted'], enabled => false);
	SELECT webhook.create_profile('others', '$url{others}', ARRAY['other.created']);
});

# a session that holds a table locked until told to let go
sub lock_table
{
	my ($table) = @_;
	my $session = $node->background_psql('postgres');
	$session->query_safe("BEGIN; LOCK TABLE $table IN ACCESS EXCLUSIVE MODE");
	return $session;
}

sub still_locked
{
	my ($table) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT count(*) FROM pg_locks WHERE relation = '$table'::regclass
		   AND mode = 'AccessExclusiveLock' AND granted});
}

sub unlock
{
	my ($session) = @_;
	$session->query_safe('COMMIT');
	$session->quit;
}

# 1. enabled while the worker cannot make the payload: nothing is stranded
my $lock = lock_table('cases');
$node->safe_psql('postgres', q{
	INSERT INTO notes VALUES (1, 1, 'it jams');
	INSERT INTO others VALUES (1);
});
$node->safe_psql('postgres', q{SELECT webhook.enable_profile('noted')});
is(still_locked('cases'), '1', 'enable_profile returns while the parent table is locked');
ok(@{ $receiver->wait_for(1, sub { $_[0]{path} eq '/others' }) } == 1,
	'a change of another table goes out meanwhile');
is(still_locked('cases'), '1', 'while the parent table is still locked');
is($node->safe_psql('postgres', q{SELECT count(*) FROM webhook.occurrence WHERE table_oid = 'notes'::regclass}),
	'1', 'the change that needs the locked table waits in the queue');
unlock($lock);
my $noted = $receiver->wait_for(1, sub { $_[0]{path} eq '/noted' });
is(scalar @$noted, 1, 'once the lock is gone, the change goes out to the profile enabled meanwhile');
is($noted->[0]{json}{case}{title} // '', 'the printer', 'with its parent row');
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 0 FROM webhook.deliveries WHERE status <> 'delivered'}), 'nothing is left held');

# 2. one request per change, profile and event; webhook-ids are RFC 9562 UUIDs
$node->safe_psql('postgres', qq{
	SELECT webhook.define_ticket_events('tickets');
	SELECT webhook.create_profile('twice', '$url{twice}', ARRAY['ticket.deleted']);
	SELECT webhook.add_event('twice', 'ticket.created', '[{"field": "priority_id", "op": "eq", "value": 1}]');
	SELECT webhook.add_event('twice', 'ticket.created', condition_sql => 'new.summary LIKE ''%printer%''');
	SELECT webhook.create_profile('batched', '$url{batched}', ARRAY['ticket.created'],
	                              batching => 'any_event', batch_wait => '0 seconds');
	INSERT INTO tickets (summary, status_id, priority_id) VALUES ('printer on fire', 1, 1);
	INSERT INTO tickets (summary, status_id, priority_id) VALUES ('printer jammed', 1, 3);
});
$receiver->wait_for(2, sub { $_[0]{path} eq '/batched' });
my $twice = $receiver->wait_for(2, sub { $_[0]{path} eq '/twice' });
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 0 FROM webhook.delivery WHERE status <> 'delivered'}), 'delivered');
$twice = [ grep { $_->{path} eq '/twice' } @{ $receiver->requests } ];
is(scalar @$twice, 2, 'a change that matches both bindings of one event is one request');
my $lowest = $node->safe_psql('postgres', q{SELECT min(binding_id) FROM webhook.bindings WHERE profile = 'twice' AND event = 'ticket.created'});
my ($both) = grep { $_->{json}{ticket}{priority_id} == 1 } @$twice;
is($both->{json}{binding_id}, $lowest, 'of the lowest binding');
my @ids = map { $_->{headers}{'webhook-id'} } @{ $receiver->requests };
my @bad = grep { !/^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/ } @ids;
is(scalar @bad, 0, 'every webhook-id sent is a version 8 UUID (' . scalar(@ids) . ' requests)')
  or diag("@bad");

# 3. webhook.sending = off: captured and queued, nothing sent; on again: sent
sub sent_to { my ($path) = @_; scalar grep { $_->{path} eq $path } @{ $receiver->requests } }
for my $how ('database', 'system')
{
	my $set = $how eq 'database'
	  ? 'ALTER DATABASE postgres SET webhook.sending = off' : 'ALTER SYSTEM SET webhook.sending = off';
	my $reset = $how eq 'database'
	  ? 'ALTER DATABASE postgres RESET webhook.sending' : 'ALTER SYSTEM RESET webhook.sending';
	my $before = sent_to('/others');
	my $offset = -s $node->logfile;
	$node->safe_psql('postgres', "$set; SELECT pg_reload_conf();");
	$node->wait_for_log(qr/stops sending: webhook.sending is off/, $offset);
	my $n = $node->safe_psql('postgres', q{SELECT count(*) FROM others});
	$node->safe_psql('postgres', qq{INSERT INTO others SELECT $n + g FROM generate_series(1, 5) AS g});
	ok($node->poll_query_until('postgres', q{
		SELECT count(*) = 5 FROM webhook.deliveries WHERE profile = 'others' AND status = 'pending'}),
		"off ($how): the changes are captured and wait as deliveries");
	$node->safe_psql('postgres', q{SELECT pg_sleep(1)});
	is(sent_to('/others'), $before, "off ($how): nothing is sent");
	$offset = -s $node->logfile;
	$node->safe_psql('postgres', "$reset; SELECT pg_reload_conf();");
	$node->wait_for_log(qr/sends again/, $offset);
	ok(@{ $receiver->wait_for($before + 5, sub { $_[0]{path} eq '/others' }) } == $before + 5,
		"on again ($how): they are sent");
}

# 4. DROP TABLE of a captured table, then DROP EXTENSION twenty times, while
# tickets are written
my $script = PostgreSQL::Test::Utils::tempdir() . '/writers.sql';
open my $fh, '>', $script or die;
print $fh q{BEGIN;
INSERT INTO tickets (summary, status_id, priority_id) VALUES ('writer', 1, 1) RETURNING ticket_id \gset
INSERT INTO actions (ticket_id, note) VALUES (:ticket_id, 'a note');
UPDATE tickets SET status_id = 2 WHERE ticket_id = :ticket_id;
END;
};
close $fh;
sub writers
{
	my ($out, $err) = @_;
	return IPC::Run::start(
		[ 'pgbench', '-n', '-c', '4', '-j', '2', '-T', '1', '-f', $script, $node->connstr('postgres') ],
		'>', $out, '2>', $err);
}

$node->safe_psql('postgres', q{
	CREATE TABLE scratch (id int PRIMARY KEY);
	SELECT webhook.define_event('scratch.created', 'scratch', 'insert');
	SELECT webhook.add_event('others', 'scratch.created');
	INSERT INTO scratch SELECT generate_series(1, 100);
});
{
	my ($out, $err) = ('', '');
	my $h = writers(\$out, \$err);
	select(undef, undef, undef, 0.5);
	my ($rc, $stdout, $stderr) = $node->psql('postgres', 'DROP TABLE scratch');
	is($rc, 0, 'DROP TABLE of a captured table succeeds while tickets are written') or diag($stderr);
	$h->finish;
	like($out, qr/number of failed transactions: 0 /, 'and no writer saw an error') or diag($err);
}

my ($dropped, $writer_errors) = (0, 0);
my @errors;
$node->safe_psql('postgres', 'DROP EXTENSION webhook');
for my $round (1 .. 20)
{
	$node->safe_psql('postgres', qq{
		CREATE EXTENSION webhook;
		SELECT webhook.define_ticket_events('tickets', 'actions');
		SELECT webhook.create_profile('plain', '$url{plain}', ARRAY['ticket.created', 'action.added']);
	});
	my ($out, $err) = ('', '');
	my $writers = writers(\$out, \$err);
	select(undef, undef, undef, 0.3 + rand(0.5));
	my ($rc, $stdout, $stderr) = $node->psql('postgres', 'DROP EXTENSION webhook');
	if ($rc == 0) { $dropped++ } else { push @errors, $stderr }
	$writers->finish;
	$writer_errors++ unless $out =~ /number of failed transactions: 0 /;
	push @errors, $err if $out !~ /number of failed transactions: 0 /;
}
is($dropped, 20, 'DROP EXTENSION succeeded under load twenty times out of twenty') or diag(join "\n", @errors);
is($writer_errors, 0, 'and no writer saw an error');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'webhook_capture_%'}), '0', 'no capture trigger is left');
my $log = slurp_file($node->logfile);
my @deadlocks = $log =~ /(ERROR:\s+deadlock detected)/g;
is(scalar @deadlocks, 0, 'no statement failed with a deadlock');

$receiver->stop;
$node->stop;
done_testing();
