-- The built-in failure events: their catalogue, their bindings, every way
-- of changing them that is refused, and who may raise them (delivery,
-- loops and NOTIFY: TAP 026_failure_events).
\set SHOW_CONTEXT never
\set VERBOSITY default

SELECT event_id, name, table_oid, operation, title, object, key_columns, message
  FROM webhook.event WHERE event_id < 0 ORDER BY event_id;
SELECT event, on_table, bindings FROM webhook.events WHERE event LIKE 'webhook.%' ORDER BY event;

-- the rows they carry
SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
 WHERE attrelid = 'webhook.failed_delivery'::regclass AND attnum > 0 ORDER BY attnum;
SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
 WHERE attrelid = 'webhook.disabled_profile'::regclass AND attnum > 0 ORDER BY attnum;

SELECT webhook.define_event('fail.created', 'tickets', 'insert', object => 'ticket') > 0 AS defined;

-- bound like any event, with conditions on their columns; the capture
-- trigger follows the bindings
SELECT webhook.create_profile('alerts', 'http://127.0.0.1:9/alerts',
                              ARRAY['webhook.delivery_failed', 'webhook.profile_disabled'], enabled => false) > 0 AS created;
SELECT webhook.add_event('alerts', 'webhook.delivery_failed',
                         '[{"field": "profile", "op": "eq", "value": "crm"}]') > 0 AS bound;
SELECT tgrelid::regclass, tgname FROM pg_trigger
 WHERE tgrelid IN ('webhook.failed_delivery'::regclass, 'webhook.disabled_profile'::regclass) ORDER BY 1, 2;
SELECT webhook.add_event('alerts', 'webhook.delivery_failed', '[{"field": "nope", "op": "eq", "value": 1}]');
SELECT webhook.add_event('alerts', 'webhook.profile_disabled', '[{"field": "consecutive_failures", "op": "gt", "value": "many"}]');
SELECT event, bindings FROM webhook.events WHERE event LIKE 'webhook.%' ORDER BY event;

-- built in: never redefined, renamed, changed or dropped, by anyone
SELECT webhook.define_event('webhook.delivery_failed', 'tickets', 'insert');
SELECT webhook.define_event('webhook.my_event', 'tickets', 'insert');
SELECT webhook.define_deadline_event('webhook.due', 'tickets', 'created_at');
UPDATE webhook.event SET title = 'Renamed' WHERE event_id = -1;
UPDATE webhook.event SET name = 'ticket.failed' WHERE event_id = -2;
UPDATE webhook.event SET name = 'webhook.ticket' WHERE name = 'fail.created';
INSERT INTO webhook.event (event_id, name, table_oid, operation, title, object, key_columns, created_by, search_path)
VALUES (-3, 'x.y', 'tickets', 'insert', 'X', 'ticket', '{ticket_id}', current_user::regrole, '');
SELECT webhook.drop_event('webhook.profile_disabled', cascade => true);
DELETE FROM webhook.event WHERE event_id = -1;
SELECT webhook.define_event('alert.copy', 'webhook.failed_delivery', 'insert');
SELECT count(*) AS builtin, count(*) FILTER (WHERE title IN ('Delivery Failed', 'Profile Disabled')) AS unchanged
  FROM webhook.event WHERE event_id < 0;
SELECT event, bindings FROM webhook.events WHERE event LIKE 'webhook.%' ORDER BY event;

-- raised by the extension only: a role granted the documented administration
-- rights cannot write condition_sql on them, nor run SQL as their author
CREATE ROLE fail_admin;
GRANT USAGE ON SCHEMA webhook TO fail_admin;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA webhook TO fail_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA webhook TO fail_admin;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA webhook TO fail_admin;
CREATE ROLE fail_nobody;
SET ROLE fail_admin;
SELECT webhook.add_event('alerts', 'webhook.delivery_failed', condition_sql => 'pg_catalog.pg_sleep(0) IS NULL');
-- _builtin_capture only ever makes the built-in events' own triggers
SELECT webhook._builtin_capture(1) AS user_event, webhook._builtin_capture(-1) AS bound,
       webhook._builtin_capture(-2) AS also_bound;
RESET ROLE;
SET ROLE fail_nobody;
SELECT webhook._delivery_failed(ARRAY[1]::int8[]);
INSERT INTO webhook.failed_delivery (delivery_id, profile, webhook_id, events, attempts) VALUES (1, 'x', 'x', '{}', 1);
SELECT webhook._builtin_capture(-1);
SELECT webhook._note_outcomes('{1}', '{failed}', '{500}', '{x}', 1);
RESET ROLE;
REVOKE ALL ON ALL TABLES IN SCHEMA webhook FROM fail_admin;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA webhook FROM fail_admin;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA webhook FROM fail_admin;
REVOKE ALL ON SCHEMA webhook FROM fail_admin;
DROP ROLE fail_admin, fail_nobody;

-- a delivery of failure events alone raises none (seen inside the
-- transaction: the worker only ever sees committed rows)
BEGIN;
INSERT INTO webhook.delivery (profile_id, webhook_id, events, items, body, status, attempts)
SELECT profile_id, 'loop', '{webhook.delivery_failed}', 1, '{}', 'failed', 8 FROM webhook.profile WHERE name = 'alerts';
SELECT count(*) AS before FROM webhook.occurrence \gset
SELECT webhook._delivery_failed(ARRAY(SELECT delivery_id FROM webhook.delivery WHERE webhook_id = 'loop'));
SELECT count(*) - :before AS raised FROM webhook.occurrence;
-- one of other events does
UPDATE webhook.delivery SET events = '{ticket.created,webhook.delivery_failed}' WHERE webhook_id = 'loop';
SELECT webhook._delivery_failed(ARRAY(SELECT delivery_id FROM webhook.delivery WHERE webhook_id = 'loop'));
SELECT count(*) - :before AS raised, count(*) FILTER (WHERE table_oid = 'webhook.failed_delivery'::regclass
                                                       AND new_rows -> 0 ->> 'webhook_id' = 'loop') AS this_one
  FROM webhook.occurrence;
SELECT count(*) AS rows_left FROM webhook.failed_delivery;
ROLLBACK;

-- disabling a profile raises webhook.profile_disabled, and only that
-- moment: disabling one already disabled, or enabling, raises nothing
SELECT webhook.create_profile('crm', 'http://127.0.0.1:9/crm', ARRAY['fail.created'], enabled => false) > 0 AS created;
SELECT webhook.enable_profile('crm');
BEGIN;
SELECT count(*) AS before FROM webhook.occurrence \gset
SELECT webhook.disable_profile('crm', 'maintenance');
SELECT webhook.disable_profile('crm', 'again');
SELECT webhook.enable_profile('crm');
SELECT count(*) - :before AS raised FROM webhook.occurrence;
SELECT o.table_oid, o.operation, o.row_count,
       o.new_rows -> 0 ->> 'profile' AS profile, o.new_rows -> 0 ->> 'reason' AS reason
  FROM webhook.occurrence o ORDER BY o.occurrence_id DESC LIMIT 1;
SELECT count(*) AS rows_left FROM webhook.disabled_profile;
ROLLBACK;

-- webhook.stats says how a profile is doing
SELECT attname FROM pg_attribute WHERE attrelid = 'webhook.stats'::regclass AND attnum > 12 ORDER BY attnum;
SELECT profile, last_success_at, last_error, oldest_pending_at IS NOT NULL AS pending
  FROM webhook.stats WHERE profile = 'crm';
-- a change held for a disabled profile is pending, queued or expanded
SELECT webhook.disable_profile('crm');
INSERT INTO tickets (summary, status_id, agent_id, priority_id) VALUES ('held for crm', 1, 1, 1);
SELECT profile, held + queued > 0 AS holds, oldest_pending_at <= now() AS pending
  FROM webhook.stats WHERE profile = 'crm';

-- unbound, their tables lose their capture triggers
SELECT webhook.drop_profile('alerts');
SELECT tgrelid::regclass, tgname FROM pg_trigger
 WHERE tgrelid IN ('webhook.failed_delivery'::regclass, 'webhook.disabled_profile'::regclass);
SELECT webhook.drop_profile('crm');
SELECT webhook.drop_event('fail.created');
