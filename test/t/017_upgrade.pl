# The upgrade path: the first release (0.1) installed and in use, with
# profiles, bindings with conditions, a batch that waits and held
# deliveries, then ALTER EXTENSION webhook UPDATE.  The catalogue is then
# that of a fresh install, nothing queued is lost, and delivery goes on.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WebhookTest;

my $node = new_webhook_node('upgrade');
my $receiver = WebhookTest::Receiver->start;
my %url = map { $_ => $receiver->url("/$_") } qw(plain batched held);

$node->safe_psql('postgres', sample_schema());
$node->safe_psql('postgres', qq{
	CREATE EXTENSION webhook VERSION '0.1';
	SELECT webhook.define_ticket_events('tickets', 'actions', closed_statuses => '{9}');
	SELECT webhook.create_profile('plain', '$url{plain}', ARRAY['ticket.created', 'action.added']);
	SELECT webhook.add_event('plain', 'ticket.updated', '[{"field": "priority_id", "op": "eq", "value": 1}]');
	SELECT webhook.add_event('plain', 'ticket.updated', condition_sql => 'new.summary LIKE ''%urgent%''');
	SELECT webhook.create_profile('batched', '$url{batched}', ARRAY['ticket.created', 'ticket.updated'],
	                              batching => 'any_event', batch_wait => '1 hour');
	SELECT webhook.create_profile('held', '$url{held}', ARRAY['ticket.created'], enabled => false);
	CREATE ROLE upgrade_admin;
	GRANT USAGE ON SCHEMA webhook TO upgrade_admin;
	GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA webhook TO upgrade_admin;
	GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA webhook TO upgrade_admin;
	GRANT USAGE ON ALL SEQUENCES IN SCHEMA webhook TO upgrade_admin;
	GRANT TRIGGER ON tickets TO upgrade_admin;
	GRANT TRIGGER ON actions TO upgrade_admin;
	GRANT SELECT ON tickets TO upgrade_admin;
});
is($node->safe_psql('postgres', q{SELECT extversion FROM pg_extension WHERE extname = 'webhook'}), '0.1',
	'the first release is installed');

# in use: changes delivered, a batch waiting, deliveries held (the two
# urgent updates match both bindings of ticket.updated: one delivery each)
$node->safe_psql('postgres', q{
	INSERT INTO tickets (summary, status_id, priority_id) SELECT 'before ' || i, 1, 1 FROM generate_series(1, 20) AS i;
	UPDATE tickets SET summary = summary || ' urgent' WHERE summary IN ('before 1', 'before 2');
	INSERT INTO actions (ticket_id, note) SELECT min(ticket_id), 'a note' FROM tickets;
});
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 0 FROM webhook.occurrence}), 'the changes were expanded');
# (held: waiting for a disabled profile, whichever status 0.1 gave them)
my $held_sql = q{
	SELECT count(*) FROM webhook.delivery d JOIN webhook.profile p USING (profile_id)
	 WHERE NOT p.enabled AND d.status IN ('held', 'pending', 'retrying')};
ok($node->poll_query_until('postgres', qq{
	SELECT ($held_sql) = 20
	   AND count(*) FILTER (WHERE status = 'pending' AND body IS NULL) = 1
	   AND count(*) FILTER (WHERE status = 'delivered') = 23
	  FROM webhook.delivery}), '20 held, one batch waiting, 23 delivered')
  or diag($node->safe_psql('postgres', q{SELECT status, count(*) FROM webhook.delivery GROUP BY 1}));
# and changes still in the queue when the update comes
$node->safe_psql('postgres', q{
	SELECT webhook.disable_profile('plain');
	INSERT INTO tickets (summary, status_id) VALUES ('queued across the update', 1);
});
ok($node->poll_query_until('postgres', q{SELECT count(*) = 0 FROM webhook.occurrence}), 'and expanded');
my $waiting = $node->safe_psql('postgres', qq{
	SELECT (SELECT count(*) FROM webhook.batch_item) || '/' || ($held_sql)});

# the update, with the worker running
$node->safe_psql('postgres', 'ALTER EXTENSION webhook UPDATE');
my $current = $node->safe_psql('postgres', q{SELECT default_version FROM pg_available_extensions WHERE name = 'webhook'});
is($node->safe_psql('postgres', q{SELECT extversion FROM pg_extension WHERE extname = 'webhook'}), $current,
	"ALTER EXTENSION webhook UPDATE moves to $current");

# create_profile and alter_profile have a new option: who could call them still can
is($node->safe_psql('postgres', q{
	SELECT string_agg(p.proname || ':' || has_function_privilege('upgrade_admin', p.oid, 'EXECUTE'), ',' ORDER BY 1)
	  FROM pg_proc p WHERE p.pronamespace = 'webhook'::regnamespace AND p.proname IN ('create_profile', 'alter_profile')}),
	'alter_profile:true,create_profile:true', 'the administration role can still create and alter profiles');
# and does, through every trigger the updates added (their WHEN clauses too)
is($node->safe_psql('postgres', q{
	SET ROLE upgrade_admin;
	DO $$
	BEGIN
	    PERFORM webhook.create_profile('by_admin', 'http://127.0.0.1:9/', ARRAY['ticket.created'],
	                                   enabled => false, batching => 'any_event', batch_max_items => 10);
	    PERFORM webhook.add_event('by_admin', 'ticket.updated');
	    PERFORM webhook.alter_profile('by_admin', batch_max_items => 5, url => 'http://127.0.0.1:9/x');
	    -- rotates its secret (0.12), twice, which retires one
	    PERFORM webhook.rotate_secret('by_admin', '1 hour');
	    PERFORM webhook.rotate_secret('by_admin', '0');
	    PERFORM webhook.drop_profile('by_admin');
	    -- the guards' helpers added since 0.1 are the administration role's too
	    PERFORM webhook.define_event('action.noted', 'actions', 'insert', message => 'Note on {object_id:05}',
	                                 parent => '{"object": "ticket", "table": "tickets", "column": "ticket_id"}');
	    PERFORM webhook.drop_event('action.noted');
	    -- and so are deadline events, with the helpers of 0.10
	    PERFORM webhook.define_deadline_event('ticket.due_soon', 'tickets', 'new.created_at + interval ''1 day''',
	                                          before => '1 hour');
	    PERFORM webhook.drop_event('ticket.due_soon');
	END $$;
	RESET ROLE;
	SELECT 'done';
}), 'done', 'the administration role granted under 0.1 creates, binds, alters, rotates the secret of and drops a profile, and defines an event');
$node->safe_psql('postgres', q{
	REVOKE ALL ON ALL FUNCTIONS IN SCHEMA webhook FROM upgrade_admin;
	REVOKE ALL ON ALL TABLES IN SCHEMA webhook FROM upgrade_admin;
	REVOKE ALL ON ALL SEQUENCES IN SCHEMA webhook FROM upgrade_admin;
	REVOKE ALL ON tickets FROM upgrade_admin;
	REVOKE ALL ON actions FROM upgrade_admin;
	REVOKE ALL ON SCHEMA webhook FROM upgrade_admin;
	DROP ROLE upgrade_admin;
});

# the same catalogue as a fresh install
my $catalogue = q{
	SELECT string_agg(x, E'\n' ORDER BY x) FROM (
	  SELECT 'function ' || p.oid::regprocedure || ' ' || pg_get_function_result(p.oid) || ' '
	         || md5(p.prosrc) || ' ' || coalesce(array_to_string(p.proconfig, ','), '') || ' '
	         || p.prosecdef || p.provolatile::text || p.proisstrict || ' ' || coalesce(p.proacl::text, '') AS x
	    FROM pg_proc p WHERE p.pronamespace = 'webhook'::regnamespace AND p.proname !~ '^_condition_[eb][0-9]+$'
	  UNION ALL
	  SELECT 'column ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' '
	         || a.attnotnull || ' ' || coalesce(pg_get_expr(d.adbin, d.adrelid), '') || ' ' || a.attcompression::text
	    FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
	    LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
	   WHERE c.relnamespace = 'webhook'::regnamespace
	  UNION ALL
	  SELECT 'relation ' || c.relname || ' ' || c.relkind::text || ' ' || coalesce(c.relacl::text, '') || ' '
	         || coalesce(array_to_string(c.reloptions, ','), '') || ' '
	         || CASE WHEN c.relkind = 'v' THEN md5(pg_get_viewdef(c.oid)) ELSE '' END
	    FROM pg_class c WHERE c.relnamespace = 'webhook'::regnamespace
	  UNION ALL
	  SELECT 'index ' || pg_get_indexdef(i.indexrelid)
	    FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid WHERE c.relnamespace = 'webhook'::regnamespace
	  UNION ALL
	  SELECT 'trigger ' || pg_get_triggerdef(t.oid) || ' ' || t.tgenabled::text
	    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
	   WHERE c.relnamespace = 'webhook'::regnamespace AND NOT t.tgisinternal
	  UNION ALL
	  SELECT 'constraint ' || conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
	    FROM pg_constraint WHERE connamespace = 'webhook'::regnamespace
	  UNION ALL
	  SELECT 'dumped ' || extconfig::regclass[]::text FROM pg_extension WHERE extname = 'webhook'
	  UNION ALL
	  SELECT 'event trigger ' || evtname || ' ' || evtevent || ' ' || evtfoid::regproc FROM pg_event_trigger
	  UNION ALL
	  SELECT 'schema ' || coalesce(nspacl::text, '') FROM pg_namespace WHERE nspname = 'webhook'
	) AS s};
$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('fresh', 'CREATE EXTENSION webhook');
my $upgraded = $node->safe_psql('postgres', $catalogue);
my $fresh = $node->safe_psql('fresh', $catalogue);
ok(length($fresh) > 10000, 'the catalogue is read');
is($upgraded, $fresh, "the upgraded catalogue equals a fresh install of $current");
$node->safe_psql('postgres', 'DROP DATABASE fresh');

# the capture triggers were made anew, and take nothing from arguments
is($node->safe_psql('postgres', q{
	SELECT string_agg(tgname || ':' || (encode(tgargs, 'escape') ~ '^[0-9a-f]{32}\\\\000$'), ','
	                  ORDER BY tgrelid::regclass::text, tgname)
	  FROM pg_trigger WHERE tgname LIKE 'webhook_capture_%'}),
	'webhook_capture_insert:true,webhook_capture_insert:true,webhook_capture_update:true',
	'capture triggers whose one argument is the version of their plan, not a query');

# nothing queued was lost
is($node->safe_psql('postgres', q{
	SELECT (SELECT count(*) FROM webhook.batch_item) || '/' ||
	       (SELECT count(*) FROM webhook.deliveries WHERE status = 'held')}),
	$waiting, 'the waiting batch and the held deliveries are all there, shown held');
$node->safe_psql('postgres', q{
	SELECT webhook.enable_profile('plain');
	SELECT webhook.enable_profile('held');
	SELECT webhook.alter_profile('batched', batch_wait => '0 seconds');
	INSERT INTO tickets (summary, status_id, priority_id) VALUES ('after the update', 1, 1);
	UPDATE tickets SET summary = 'after the update, urgent' WHERE summary = 'after the update';
});
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 0 FROM webhook.delivery WHERE status <> 'delivered'}), 'everything is delivered')
  or diag($node->safe_psql('postgres', q{SELECT status, count(*) FROM webhook.delivery GROUP BY 1}));

my @got = @{ $receiver->requests };
my %bodies = map { my $p = $_; $p => join("\n", map { $_->{body} } grep { $_->{path} eq "/$p" } @got) } keys %url;
is(scalar(() = $bodies{held} =~ /"event" : "ticket\.created"/g), 22,
	'the 21 changes held across the update went out, and the one after it');
is(scalar(() = $bodies{batched} =~ /"profile" : "batched"/g), 20 + 2 + 1 + 2,
	'the batch took the changes from before the update, from across it, and after it');
like($bodies{plain}, qr/queued across the update/, 'the change queued across the update went out');
my ($urgent) = grep { $_->{path} eq '/plain' && $_->{body} =~ /after the update, urgent/ } @got;
is(scalar(grep { $_->{path} eq '/plain' && $_->{body} =~ /after the update, urgent/ } @got), 1,
	'after the update, the conditions of 0.1 bindings still decide: the change matches both, one request');
is($urgent->{json}{binding_id}, $node->safe_psql('postgres', q{
	SELECT min(binding_id) FROM webhook.bindings WHERE profile = 'plain' AND event = 'ticket.updated'}),
	'of the lowest binding');
my %ids;
$ids{ $_->{headers}{'webhook-id'} }++ for @got;
is(scalar(grep { $_ > 1 } values %ids), 0, 'no request was sent twice');

$node->stop;
done_testing();
