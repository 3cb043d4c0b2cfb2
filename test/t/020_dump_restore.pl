# pg_dump of a database in use, restored the ways DBAs restore: pg_restore
# (plain, --single-transaction --exit-on-error, -j 2) and psql -v
# ON_ERROR_STOP=1 -f of a plain dump.  Each ends without an error, with
# every foreign key, capture trigger, condition function, event, binding,
# profile and delivery back, and a new change in the restored database is
# captured and delivered.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WebhookTest;

my $node = PostgreSQL::Test::Cluster->new('restore');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'webhook'
max_worker_processes = 16
});
$node->start;
my $receiver = WebhookTest::Receiver->start;
my %url = map { $_ => $receiver->url("/$_") } qw(plain batched held alerts);
$url{failing} = $receiver->url('/status/500');

$node->safe_psql('postgres', sample_schema());
$node->safe_psql('postgres', qq{
	CREATE ROLE desk_admin;
	GRANT SELECT, TRIGGER ON tickets, actions TO desk_admin;
	CREATE EXTENSION webhook;
	GRANT USAGE ON SCHEMA webhook TO desk_admin;
	GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA webhook TO desk_admin;
	GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA webhook TO desk_admin;
	GRANT USAGE ON ALL SEQUENCES IN SCHEMA webhook TO desk_admin;
	SELECT webhook.define_ticket_events('tickets', 'actions', closed_statuses => '{9}');
	SET ROLE desk_admin;
	SELECT webhook.create_profile('plain', '$url{plain}', ARRAY['ticket.created', 'action.added']);
	SELECT webhook.add_event('plain', 'ticket.updated', '[{"field": "priority_id", "op": "eq", "value": 1}]');
	SELECT webhook.add_event('plain', 'ticket.updated', condition_sql => 'new.summary LIKE ''%urgent%''');
	SELECT webhook.create_profile('batched', '$url{batched}', ARRAY['ticket.created'],
	                              batching => 'any_event', batch_wait => '1 hour');
	SELECT webhook.create_profile('held', '$url{held}', ARRAY['ticket.created'], enabled => false);
	SELECT webhook.create_profile('alerts', '$url{alerts}', ARRAY['webhook.delivery_failed']);
	RESET ROLE;
	INSERT INTO tickets (summary, status_id, priority_id) SELECT 'before ' || i, 1, 1 FROM generate_series(1, 10) AS i;
	UPDATE tickets SET summary = summary || ' urgent' WHERE summary = 'before 1';
	INSERT INTO actions (ticket_id, note) SELECT min(ticket_id), 'a note' FROM tickets;
});
ok($node->poll_query_until('postgres', q{
	SELECT (SELECT count(*) FROM webhook.occurrence) = 0
	   AND (SELECT count(*) FROM webhook.deliveries WHERE status = 'delivered') = 12
	   AND (SELECT count(*) FROM webhook.deliveries WHERE status = 'held') = 10
	   AND (SELECT count(*) FROM webhook.batch_item) = 10}),
	'in use: 12 delivered, 10 held, a batch of 10 waiting');

# what must come back, as text
my %catalogue = (
	'foreign keys' => q{SELECT string_agg(conrelid::regclass || ' ' || conname, ', ' ORDER BY conrelid::regclass::text, conname)
	                      FROM pg_constraint WHERE contype = 'f'},
	'capture triggers' => q{SELECT string_agg(tgrelid::regclass || ' ' || tgname || ' ' || encode(tgargs, 'escape'), ', '
	                                            ORDER BY tgrelid::regclass::text, tgname)
	                          FROM pg_trigger WHERE tgname LIKE 'webhook_capture_%'
	                           AND tgrelid::regclass::text NOT LIKE 'webhook.%'},
	'condition functions' => q{SELECT string_agg(p.oid::regprocedure || ' ' || r.rolname, ', ' ORDER BY p.oid::regprocedure::text)
	                             FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner
	                            WHERE p.pronamespace = 'webhook'::regnamespace AND p.proname ~ '^_condition_'},
	'events' => q{SELECT string_agg(e::text, E'\n' ORDER BY event_id) FROM webhook.event e WHERE event_id > 0},
	'built-in events' => q{SELECT string_agg(concat_ws(' ', event_id, name, table_oid), ', ' ORDER BY event_id)
	                         FROM webhook.event WHERE event_id < 0},
	'bindings' => q{SELECT string_agg(b::text, E'\n' ORDER BY binding_id) FROM webhook.binding b},
	'profiles' => q{SELECT string_agg(p::text, E'\n' ORDER BY profile_id) FROM webhook.profile p},
	'deliveries' => q{SELECT string_agg(concat_ws(' ', delivery_id, profile, status, items, webhook_id), E'\n' ORDER BY delivery_id)
	                    FROM webhook.deliveries},
	'batch items' => q{SELECT string_agg(concat_ws(' ', delivery_id, item_no, md5(envelope::text)), E'\n' ORDER BY delivery_id, item_no)
	                     FROM webhook.batch_item},
);
my %want = map { $_ => $node->safe_psql('postgres', $catalogue{$_}) } keys %catalogue;

my $dir = PostgreSQL::Test::Utils::tempdir();
my @connect = ('-h', $node->host, '-p', $node->port);
command_ok([ 'pg_dump', @connect, '-Fc', '-f', "$dir/dump.custom", 'postgres' ], 'pg_dump -Fc');
command_ok([ 'pg_dump', @connect, '-Fp', '-f', "$dir/dump.sql", 'postgres' ], 'pg_dump -Fp');

my %ways = (
	'pg_restore' => [ 'pg_restore', @connect, '-d', 'DB', "$dir/dump.custom" ],
	'pg_restore --single-transaction --exit-on-error' =>
	  [ 'pg_restore', @connect, '--single-transaction', '--exit-on-error', '-d', 'DB', "$dir/dump.custom" ],
	'pg_restore -j 2' => [ 'pg_restore', @connect, '-j', '2', '-d', 'DB', "$dir/dump.custom" ],
	'psql -v ON_ERROR_STOP=1 -f' => [ 'psql', @connect, '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-f', "$dir/dump.sql", '-d', 'DB' ],
);
my $n = 0;
for my $way (sort keys %ways)
{
	my $db = 'restored' . ++$n;
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	my @command = map { $_ eq 'DB' ? $db : $_ } @{ $ways{$way} };
	my ($stdout, $stderr) = ('', '');
	my $ok = IPC::Run::run(\@command, '>', \$stdout, '2>', \$stderr);
	ok($ok, "$way: exits 0") or diag($stderr);
	unlike($stderr, qr/error/i, "$way: reports no error") or diag($stderr);
	for my $what (sort keys %catalogue)
	{
		is($node->safe_psql($db, $catalogue{$what}), $want{$what}, "$way: the $what are back");
	}
	# the restored database captures and delivers
	my $marker = "after $way";
	$node->safe_psql($db, qq{
		INSERT INTO tickets (summary, status_id, priority_id) VALUES ('$marker', 1, 1);
		INSERT INTO actions (ticket_id, note) SELECT max(ticket_id), 'noted' FROM tickets;
	});
	my $got = $receiver->wait_for(2, sub { $_[0]{path} eq '/plain' && $_[0]{body} =~ /\Q$marker\E/ });
	is(scalar @$got, 2, "$way: a new ticket and its action are captured and delivered");
	# the binding to a built-in event works there: a failure is said
	$node->safe_psql($db, qq{
		SELECT webhook.create_profile('failing$n', '$url{failing}', ARRAY['ticket.created'], max_attempts => 1);
		INSERT INTO tickets (summary, status_id, priority_id) VALUES ('to fail', 1, 1);
	});
	$got = $receiver->wait_for(1, sub { $_[0]{path} eq '/alerts' && $_[0]{body} =~ /"profile":"failing$n"/ });
	is(scalar @$got, 1, "$way: the restored binding of webhook.delivery_failed says a failure");
	$node->safe_psql('postgres', "DROP DATABASE $db");
}

$receiver->stop;
$node->stop;
done_testing();
