# Attacks on the worker, each made by the attacking role against a real
# receiver: a writer's poison rows, a role that pauses the worker with
# statements that cannot run, a role whose code would run while rows are
# read as someone else (or as the worker), session defaults that would stop
# the worker, and requests steered past webhook.blocked_networks.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WebhookTest;

my $proxy = WebhookTest::Receiver->start;
# a proxy in the server's environment must not be used (blocked_networks
# would see only the proxy's address)
local $ENV{http_proxy} = $proxy->url('/');
local $ENV{HTTP_PROXY} = $proxy->url('/');
local $ENV{https_proxy} = $proxy->url('/');
local $ENV{ALL_PROXY} = $proxy->url('/');
my $node = new_webhook_node('attacks_worker');
my $receiver = WebhookTest::Receiver->start;
my %url = map { $_ => $receiver->url("/$_") } qw(plain batched full);

$node->safe_psql('postgres', sample_schema());
$node->safe_psql('postgres', qq{
	CREATE EXTENSION webhook;
	SELECT webhook.define_ticket_events('tickets', 'actions');
	CREATE ROLE mallory LOGIN;
	CREATE ROLE writer LOGIN;
	GRANT INSERT, SELECT, UPDATE ON tickets, actions TO writer;
	GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO writer;
	CREATE TABLE notes (note_id serial PRIMARY KEY, doc json, body text);
	GRANT INSERT ON notes TO writer;
	GRANT USAGE ON SEQUENCE notes_note_id_seq TO writer;
	SELECT webhook.define_event('note.created', 'notes', 'insert');
	SELECT webhook.create_profile('plain', '$url{plain}', ARRAY['ticket.created', 'note.created']);
	SELECT webhook.create_profile('batched', '$url{batched}', ARRAY['ticket.created', 'note.created'],
	                              batching => 'any_event', batch_wait => '0.2 seconds');
	SELECT webhook.create_profile('full', '$url{full}', ARRAY['note.created'], payload => 'full');
});
sub as_role
{
	my ($role, $sql) = @_;
	my ($ret, $out, $err) = $node->psql('postgres', $sql, extra_params => [ '-U', $role ]);
	return ($ret, $out, $err);
}
sub is_superuser
{
	return $node->safe_psql('postgres', "SELECT rolsuper FROM pg_roles WHERE rolname = '$_[0]'");
}

# 1. poison rows: json values the worker's JSON parser cannot turn into
# text, written by a plain writer, are sent as written; the tickets behind
# them flow
my ($ret, $out, $err) = as_role('writer', q{
	INSERT INTO notes (doc) VALUES ('{"a": "\u0000"}'), ('{"a": "\ud800"}'),
	                               ('{"\u0000key": "\udfff \ud83d\ude00"}');
	INSERT INTO tickets (summary, status_id) VALUES ('after the poison', 1);
});
is($ret, 0, 'the writer wrote its rows') or diag($err);
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 8 AND bool_and(status = 'delivered') FROM webhook.delivery}),
	'every delivery delivered: 4 plain, 3 full, one batch') or diag($node->safe_psql('postgres',
	q{SELECT string_agg(status || ' ' || coalesce(error, ''), E'\n') FROM webhook.delivery}));
my %sent = map { my $p = $_; $p => [ grep { $_->{path} eq "/$p" } @{ $receiver->requests } ] } qw(plain batched full);
is(scalar(@{ $sent{plain} }) . '/' . scalar(@{ $sent{full} }) . '/' . scalar(@{ $sent{batched} }), '4/3/1',
	'the poison rows and the ticket after them reached the receiver');
is(scalar(() = $sent{batched}[0]{body} =~ /"profile" : "batched"/g), 4, 'the batch holds all four');
is(scalar(grep { $_->{body} =~ /"doc":\{"a": "\\u0000"\}/ } @{ $sent{plain} }, @{ $sent{full} }), 2,
	'a \u0000 goes out as written');
is($node->safe_psql('postgres', q{SELECT count(*) FROM webhook.deliveries WHERE request_body IS NOT NULL}),
	'8', 'webhook.deliveries shows them (the escapes jsonb cannot hold replaced)');

# a queue row no parser can read (only the queue owner could write one):
# failed deliveries with the error, and everything behind it flows
my $pid = worker_pid($node, 'postgres');
# a queue row of plain's with these rows, then a ticket
sub queue_broken_row
{
	my ($rows, $summary) = @_;
	$node->safe_psql('postgres', qq{
		INSERT INTO webhook.occurrence (table_oid, operation, bindings, new_rows, row_count)
		SELECT 'tickets'::regclass, 'insert', ARRAY[min(binding_id)], '$rows', 1
		  FROM webhook.binding WHERE profile_id = (SELECT profile_id FROM webhook.profile WHERE name = 'plain');
		INSERT INTO tickets (summary, status_id) VALUES ('$summary', 1);
	});
}
queue_broken_row('{"not": "an array"}', 'behind the broken row');
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 1 FROM webhook.delivery
	 WHERE status = 'failed' AND error LIKE 'the worker could not make a payload of this change: %'}),
	'the unreadable queue row is one failed delivery, with the error');
my $got = $receiver->wait_for(2, sub { ($_[0]{body} // '') =~ /behind the broken row/ });
is(scalar(@$got), 2, 'the ticket behind it was delivered');
is(worker_pid($node, 'postgres'), $pid, 'the worker never stopped');

# the same when no profile batches
$node->safe_psql('postgres', q{SELECT webhook.alter_profile('batched', batching => 'none')});
my $before = $node->safe_psql('postgres', 'SELECT max(delivery_id) FROM webhook.delivery');
($ret, $out, $err) = as_role('writer', q{
	INSERT INTO notes (doc) VALUES ('{"a": "\u0000"}'), ('{"a": "\ud800"}'),
	                               ('{"\u0000key": "\udfff \ud83d\ude00"}');
});
is($ret, 0, 'the writer wrote the poison rows again') or diag($err);
ok($node->poll_query_until('postgres', qq{
	SELECT count(*) = 9 AND bool_and(status = 'delivered') FROM webhook.delivery
	 WHERE delivery_id > $before}),
	'without batching too, each is delivered to each profile');
queue_broken_row('"a scalar"', 'behind the second broken row');
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 1 FROM webhook.delivery
	 WHERE status = 'failed'
	   AND error = 'the worker could not make a payload of this change: cannot call json_array_elements on a scalar'}),
	'and an unreadable queue row is one failed delivery, with the error');
$got = $receiver->wait_for(2, sub { ($_[0]{body} // '') =~ /behind the second broken row/ });
is(scalar(@$got), 2, 'the ticket behind it was delivered');
is(worker_pid($node, 'postgres'), $pid, 'the worker never stopped');
$node->safe_psql('postgres',
	q{SELECT webhook.alter_profile('batched', batching => 'any_event', batch_wait => '0.2 seconds')});

# 2. statements that cannot run do not pause the worker: DROP DATABASE of a
# database one does not own, in a transaction block, ALTER DATABASE, a
# copy without CREATEDB
$node->safe_psql('postgres', 'CREATE DATABASE victim');
my $requests = $receiver->count;
for (1 .. 20)
{
	as_role('mallory', 'DROP DATABASE postgres');
	as_role('mallory', 'ALTER DATABASE postgres RENAME TO elsewhere');
	as_role('mallory', 'ALTER DATABASE postgres SET TABLESPACE pg_default');
	as_role('mallory', 'CREATE DATABASE copy TEMPLATE postgres');
	$node->psql('victim', 'BEGIN; DROP DATABASE postgres');
}
is(worker_pid($node, 'postgres'), $pid, 'a hundred statements that fail their checks never stopped the worker');
$node->safe_psql('postgres', q{INSERT INTO tickets (summary, status_id) VALUES ('after the drops', 1)});
$got = $receiver->wait_for(2, sub { ($_[0]{body} // '') =~ /after the drops/ });
is(scalar(@$got), 2, 'and deliveries flow');
is($receiver->count, $requests + 2, 'nothing was sent twice');

# 3. code of a role's own (a domain check, a cast to json) never runs while
# the worker reads rows as the event's author, or as itself
$node->safe_psql('postgres', q{
	CREATE SCHEMA mallory AUTHORIZATION mallory;
	CREATE TABLE public.spied (who text, at timestamptz DEFAULT now());
	GRANT INSERT ON public.spied TO PUBLIC;
});
($ret, $out, $err) = as_role('mallory', q{
	SET search_path = mallory;
	CREATE FUNCTION spy(value int) RETURNS boolean LANGUAGE plpgsql AS $$
	BEGIN
	    INSERT INTO public.spied (who) VALUES (current_user);
	    BEGIN
	        EXECUTE 'ALTER ROLE mallory SUPERUSER';
	    EXCEPTION WHEN OTHERS THEN NULL;
	    END;
	    RETURN true;
	END $$;
	CREATE DOMAIN spying_key AS int CHECK (mallory.spy(VALUE));
	CREATE TABLE sites (site_id int PRIMARY KEY, name text);
	INSERT INTO sites VALUES (1, 'London');
	CREATE TYPE mood AS ENUM ('calm', 'angry');
	CREATE FUNCTION mood_json(m mood) RETURNS json LANGUAGE plpgsql AS $$
	BEGIN
	    PERFORM mallory.spy(1);
	    RETURN to_json(m::text);
	END $$;
	CREATE CAST (mood AS json) WITH FUNCTION mood_json(mood);
	CREATE TABLE moods (mood_id int PRIMARY KEY, mood mood);
	INSERT INTO moods VALUES (1, 'angry');
	GRANT SELECT ON sites, moods TO PUBLIC;
	GRANT USAGE ON SCHEMA mallory TO PUBLIC;
	GRANT USAGE ON TYPE spying_key, mood TO PUBLIC;
});
is($ret, 0, 'mallory made the traps') or diag($err);
$node->safe_psql('postgres', q{TRUNCATE public.spied});
$node->safe_psql('postgres', q{
	ALTER TABLE notes ADD COLUMN site_id int, ADD COLUMN mood_id int REFERENCES mallory.moods;
	SELECT webhook.define_event('note.at_site', 'notes', 'insert',
	                            parent => '{"object": "site", "table": "mallory.sites", "column": "site_id"}');
	SELECT webhook.add_event('full', 'note.at_site');
});
# once the event is defined (define_event refuses such a parent), the key
# becomes a domain whose check is mallory's
($ret, $out, $err) = as_role('mallory', q{ALTER TABLE mallory.sites ALTER site_id TYPE mallory.spying_key});
is($ret, 0, 'mallory changed the key\'s type') or diag($err);
$node->safe_psql('postgres', q{TRUNCATE public.spied});
$node->safe_psql('postgres', q{INSERT INTO notes (body, site_id, mood_id) VALUES ('at a trap', 1, 1)});
$got = $receiver->wait_for(4, sub { ($_[0]{body} // '') =~ /at a trap/ });
is(scalar(@$got), 4, 'the note was delivered: plain, batched, and full for both events');
my @single = grep { ref $_->{json} eq 'HASH' } @$got;
is(scalar(grep { exists $_->{json}{site} && !defined $_->{json}{site} } @single), 1,
	'the parent behind a domain with a check of mallory\'s is sent as null');
is(scalar(grep { exists $_->{json}{note}{mood} && !defined $_->{json}{note}{mood} } @single), 2,
	'a linked row with a cast of mallory\'s is sent as null');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.spied'), '0', 'mallory\'s code never ran');
is(is_superuser('mallory'), 'f', 'mallory is not a superuser');
ok($node->log_contains('webhook does not read table "sites" for payloads: column "site_id": its type is a domain with a check, owned by a role that is not a superuser'),
	'the log says why');

# the render function reads as its caller, whatever reader it is given
$node->safe_psql('postgres', q{GRANT USAGE ON SCHEMA webhook TO mallory;
	GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA webhook TO mallory});
($ret, $out, $err) = as_role('mallory', q{
	SELECT webhook._render('x', 'p', 'small', NULL, 1, 'e', 't', 'role', 'pg_authid'::regclass, '{oid}',
	                       now(), 'insert', '{"oid": 10}', NULL, NULL, 'secret', 'pg_authid'::regclass,
	                       'oid', 'oid', 10)::text});
unlike($out, qr/rolpassword|"rolname"/, 'webhook._render does not read pg_authid as the superuser for mallory');
like($out, qr/"secret" : null/, 'the row mallory cannot read is null') or diag($out, $err);

# 4. session defaults of the database or the cluster do not stop the worker,
# and a writer's IntervalStyle does not change the payload
$node->safe_psql('postgres', q{
	ALTER DATABASE postgres SET default_transaction_read_only = on;
	ALTER DATABASE postgres SET lock_timeout = '1ms';
	ALTER DATABASE postgres SET statement_timeout = '1ms';
	ALTER DATABASE postgres SET IntervalStyle = 'sql_standard';
	ALTER TABLE notes ADD COLUMN wait interval;
});
# (the test's own sessions set their own)
my $own = 'SET default_transaction_read_only = off; SET statement_timeout = 0; SET lock_timeout = 0;';
$node->safe_psql('postgres', qq{$own SELECT pg_terminate_backend(pid) FROM pg_stat_activity
	WHERE backend_type = 'webhook worker'});
ok(wait_until(sub { $node->safe_psql('postgres', qq{$own SELECT count(*) FROM pg_stat_activity
	WHERE backend_type = 'webhook worker' AND pid <> $pid}) eq '1' }, 30), 'the worker came back');
$node->safe_psql('postgres', qq{$own
	BEGIN;
	SET LOCAL IntervalStyle = 'iso_8601';
	INSERT INTO notes (body, wait) VALUES ('under hostile defaults', '1 day 02:03:04');
	COMMIT;
});
$got = $receiver->wait_for(4, sub { ($_[0]{body} // '') =~ /under hostile defaults/ }, 40);
is(scalar(@$got), 4,
	'deliveries flow under read-only, 1 ms lock and statement timeouts: plain, batched, full for both events')
  or diag(join(', ', map { "$_->{path} $_->{headers}{'webhook-id'}" } @$got));
my @notes = map { ref($_->{json}) eq 'ARRAY' ? map { $_->{note} } @{ $_->{json} } : $_->{json}{note} } @$got;
is(scalar(grep { ($_->{wait} // '') eq '1 day 02:03:04' } @notes), 4, 'the interval in one style, in each')
  or diag(explain(\@notes));
$node->safe_psql('postgres', qq{$own ALTER DATABASE postgres RESET ALL});

# 5. webhook.blocked_networks: no proxy from the environment, 0.0.0.0 blocked
# by default, and a connection kept alive is not reused once its address is
# blocked
is(scalar(@{ $proxy->requests }), 0, 'the proxy in the environment was never used');
my $port = $receiver->{port};
$node->safe_psql('postgres', qq{
	SELECT webhook.create_profile('unspecified', 'http://0.0.0.0:$port/zero', ARRAY['ticket.created'],
	                              max_attempts => 1);
	INSERT INTO tickets (summary, status_id) VALUES ('to 0.0.0.0', 1);
});
ok($node->poll_query_until('postgres', q{
	SELECT status = 'failed' FROM webhook.deliveries WHERE profile = 'unspecified'}), 'the delivery to 0.0.0.0 failed');
like($node->safe_psql('postgres', q{
	SELECT error FROM webhook.deliveries WHERE profile = 'unspecified'}),
	qr/refused by webhook\.blocked_networks/, 'blocked by the default list');
is(scalar(grep { $_->{path} eq '/zero' } @{ $receiver->requests }), 0, 'nothing reached the receiver');

$node->safe_psql('postgres', q{SELECT webhook.drop_profile(name) FROM webhook.profile WHERE name <> 'plain'});
$node->safe_psql('postgres', q{INSERT INTO tickets (summary, status_id) VALUES ('keep alive', 1)});
$receiver->wait_for(1, sub { ($_[0]{body} // '') =~ /keep alive/ });
$node->safe_psql('postgres', q{
	ALTER SYSTEM SET webhook.blocked_networks = '127.0.0.0/8, ::1/128';
	SELECT pg_reload_conf();
});
sleep 1;
$node->safe_psql('postgres', q{
	SELECT webhook.alter_profile('plain', max_attempts => 1);
	INSERT INTO tickets (summary, status_id) VALUES ('after the reload', 1);
});
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 1 FROM webhook.deliveries d JOIN webhook.attempts a USING (delivery_id)
	 WHERE d.request_body->'ticket'->>'summary' = 'after the reload' AND a.error LIKE '%refused by webhook.blocked_networks'}),
	'a connection opened before the reload is not reused for an address now blocked');
is(scalar(grep { ($_->{body} // '') =~ /after the reload/ } @{ $receiver->requests }), 0,
	'nothing reached the receiver');

$node->stop;
done_testing();
