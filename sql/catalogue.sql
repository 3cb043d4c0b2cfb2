-- The event catalogue beyond inserts: columns, conditions, parents, the
-- standard service-desk catalogue, dropping events, adding and removing
-- bindings, condition_sql and its privileges, and what a failing
-- condition does.
\set SHOW_CONTEXT never

-- a database of its own: the standard event names are free there
CREATE DATABASE webhook_catalogue;
\c webhook_catalogue
\set SHOW_CONTEXT never
CREATE EXTENSION webhook;

-- the standard catalogue with the default column names; without closed
-- statuses there is no ticket.closed, and a notice says so
CREATE TABLE other_case (id int PRIMARY KEY, agent_id int, team_id int, status_id int, priority_id int);
BEGIN;
SELECT * FROM webhook.define_ticket_events('other_case');
ROLLBACK;

-- the standard catalogue on tables and columns with other names
CREATE TABLE helpdesk_case (case_no int PRIMARY KEY, owner int, grp int, state text, urgency int, title text);
CREATE TABLE case_note (note_no int PRIMARY KEY, case_ref int REFERENCES helpdesk_case, body text);
SELECT * FROM webhook.define_ticket_events('helpdesk_case', 'case_note', agent => 'owner', team => 'grp',
                                           status => 'state', priority => 'urgency',
                                           closed_statuses => '{closed,cancelled}', action_ticket => 'case_ref');
SELECT event, operation, columns, condition, title, object, parent, key_columns
  FROM webhook.events WHERE on_table = 'helpdesk_case'::regclass OR on_table = 'case_note'::regclass
 ORDER BY event;
-- a wrong column name is named
SELECT webhook.define_ticket_events('helpdesk_case', agent => 'agent_id');
SELECT webhook.define_ticket_events('helpdesk_case', 'case_note', agent => 'owner', team => 'grp',
                                    status => 'state', priority => 'urgency', action_ticket => 'ticket_id');
SELECT webhook.define_ticket_events('helpdesk_case', agent => 'owner', team => 'grp', status => 'urgency',
                                    priority => NULL, closed_statuses => '{closed}');

-- the catalogue at work on one statement
SELECT webhook.create_profile('desk', 'http://127.0.0.1:9/',
                              ARRAY['ticket.created', 'ticket.reassigned', 'ticket.team_changed',
                                    'ticket.status_changed', 'ticket.priority_changed', 'ticket.closed',
                                    'ticket.reopened', 'ticket.deleted', 'action.added']) > 0 AS created;
BEGIN;
INSERT INTO helpdesk_case VALUES (1, 10, 1, 'open', 3, 'Printer'), (2, 10, 1, 'closed', 3, 'VPN');
UPDATE helpdesk_case SET owner = 11 WHERE case_no = 1;
UPDATE helpdesk_case SET grp = 2, urgency = 1 WHERE case_no = 1;
UPDATE helpdesk_case SET state = 'closed' WHERE case_no = 1;
UPDATE helpdesk_case SET state = 'open' WHERE case_no = 2;
UPDATE helpdesk_case SET state = 'cancelled' WHERE case_no = 2;
UPDATE helpdesk_case SET title = 'VPN down' WHERE case_no = 2;
INSERT INTO case_note VALUES (1, 1, 'Looked at it');
SELECT o.operation, coalesce(o.new_row, o.old_row)->>'case_no' AS case_no, o.new_row->>'note_no' AS note,
       (SELECT string_agg(b.event, ' ' ORDER BY b.event) FROM unnest(o.bindings) AS m(id)
          JOIN webhook.bindings b ON b.binding_id = m.id) AS events
  FROM webhook._occurrence_rows o ORDER BY o.occurrence_id, o.row_number;
ROLLBACK;

-- define_event: columns, condition and parent, and their errors
SELECT webhook.define_event('case.retitled', 'helpdesk_case', 'update', columns => '{title}') > 0 AS ok;
SELECT webhook.define_event('case.urgent', 'helpdesk_case', 'insert', condition => 'new.urgency = 1') > 0 AS ok;
SELECT webhook.define_event('case.bad1', 'helpdesk_case', 'insert', columns => '{title}');
SELECT webhook.define_event('case.bad2', 'helpdesk_case', 'update', columns => '{}');
SELECT webhook.define_event('case.bad3', 'helpdesk_case', 'update', columns => '{titel}');
SELECT webhook.define_event('case.bad4', 'helpdesk_case', 'update', columns => '{title,title}');
SELECT webhook.define_event('case.bad5', 'helpdesk_case', 'insert', condition => 'new.urgency');
SELECT webhook.define_event('case.bad6', 'helpdesk_case', 'insert', condition => 'new.nope = 1');
SELECT webhook.define_event('case.bad7', 'helpdesk_case', 'insert', condition => 'true; DROP TABLE helpdesk_case');
SELECT webhook.define_event('case.bad8', 'helpdesk_case', 'insert', condition => 'true) OR (true');
SELECT webhook.define_event('case.bad9', 'helpdesk_case', 'insert', condition => 'true FROM pg_class');
SELECT webhook.define_event('case.bad10', 'helpdesk_case', 'insert', condition => '');
SELECT webhook.define_event('note.bad1', 'case_note', 'insert', parent => '{"object": "case", "table": "helpdesk_case"}');
SELECT webhook.define_event('note.bad2', 'case_note', 'insert', parent => '{"object": "case", "table": "nope", "column": "case_ref"}');
SELECT webhook.define_event('note.bad3', 'case_note', 'insert', parent => '{"object": "case", "table": "helpdesk_case", "column": "nope"}');
SELECT webhook.define_event('note.bad4', 'case_note', 'insert', parent => '{"object": "event", "table": "helpdesk_case", "column": "case_ref"}');
SELECT webhook.define_event('note.bad5', 'case_note', 'insert', parent => '"helpdesk_case"');
SELECT event FROM webhook.events WHERE event LIKE '%.bad%';

-- add_event and remove_event
SELECT webhook.add_event('desk', 'case.retitled') > 0 AS added;
SELECT webhook.add_event('nope', 'case.retitled');
SELECT webhook.add_event('desk', 'nope');
SELECT webhook.add_event(NULL, 'case.retitled');
SELECT webhook.remove_event(-1);
SELECT webhook.remove_event(NULL);
SELECT webhook.create_profile('solo', 'http://127.0.0.1:9/', ARRAY['case.retitled']) > 0 AS created;
SELECT webhook.remove_event(binding_id) FROM webhook.bindings WHERE profile = 'solo';
SELECT webhook.remove_event(binding_id) FROM webhook.bindings WHERE profile = 'desk' AND event = 'case.retitled';
SELECT profile, event FROM webhook.bindings WHERE event = 'case.retitled' ORDER BY profile;

-- drop_event: refused while bound, or when a profile would be left empty
SELECT webhook.drop_event('case.retitled');
SELECT webhook.drop_event('case.retitled', cascade => true);
SELECT webhook.drop_event('nope');
SELECT webhook.drop_event('case.urgent');
SELECT webhook.add_event('solo', 'ticket.deleted') > 0 AS added;
SELECT webhook.drop_event('case.retitled', cascade => true);
SELECT event FROM webhook.events WHERE event IN ('case.retitled', 'case.urgent');
SELECT profile, event FROM webhook.bindings WHERE profile = 'solo';

-- changing a binding changes the trigger at once
SELECT count(*) AS update_triggers FROM pg_trigger
 WHERE tgrelid = 'helpdesk_case'::regclass AND tgname = 'webhook_capture_update';
SELECT webhook.remove_event(binding_id) FROM webhook.bindings
 WHERE profile = 'desk' AND event IN ('ticket.reassigned', 'ticket.team_changed', 'ticket.status_changed',
                                      'ticket.priority_changed', 'ticket.closed', 'ticket.reopened');
SELECT count(*) AS update_triggers FROM pg_trigger
 WHERE tgrelid = 'helpdesk_case'::regclass AND tgname = 'webhook_capture_update';

-- condition_sql: one boolean expression, run with its author's rights
CREATE ROLE case_admin;
GRANT USAGE ON SCHEMA webhook TO case_admin;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA webhook TO case_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA webhook TO case_admin;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA webhook TO case_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON helpdesk_case, case_note TO case_admin;
SET ROLE case_admin;
SELECT webhook.add_event('desk', 'ticket.created', condition_sql => 'new.urgency = 1');
SELECT webhook.add_event('desk', 'ticket.created', '[{"field": "urgency", "op": "eq", "value": 1}]') > 0 AS plain_conditions_need_no_trigger_privilege;
RESET ROLE;
GRANT TRIGGER ON helpdesk_case TO case_admin;
CREATE TABLE secrets (s text);
INSERT INTO secrets VALUES ('hunter2');
SET ROLE case_admin;
SELECT webhook.add_event('desk', 'ticket.created', condition_sql => 'new.title LIKE ''%urgent%''') > 0 AS added;
SELECT webhook.add_event('desk', 'ticket.created', condition_sql => 'new.urgency + 1');
SELECT webhook.add_event('desk', 'ticket.created', condition_sql => 'true; DROP TABLE secrets');
SELECT webhook.add_event('desk', 'ticket.created', condition_sql => 'new.urgency = 1) OR (true');
SELECT webhook.add_event('desk', 'ticket.created', condition_sql => 'new.nope = 1');
SELECT webhook.add_event('desk', 'ticket.created', condition_sql => '100 / (new.urgency - 2) > 0') > 0 AS added;
RESET ROLE;
-- the functions answer nothing outside a capture
SELECT webhook._capturing() AS capturing;

-- a condition that fails at run time (here, a division by zero) does not
-- fail the change: the change is kept and queued with the error, for every
-- binding of the statement, to be recorded as failed deliveries
BEGIN;
INSERT INTO helpdesk_case VALUES (5, 10, 1, 'open', 2, 'an urgent one');
SELECT count(*) AS case_rows FROM helpdesk_case;
SELECT o.operation, o.new_row->>'case_no' AS case_no, cardinality(o.bindings) AS bindings,
       o.capture_error
  FROM webhook._occurrence_rows o ORDER BY o.occurrence_id, o.row_number;
ROLLBACK;
-- without the error, each binding decides for itself
CREATE VIEW matched AS
SELECT o.new_row->>'case_no' AS case_no, o.capture_error,
       (SELECT string_agg(coalesce(b.condition_sql, b.conditions::text), ' | ' ORDER BY b.binding_id)
          FROM unnest(o.bindings) AS m(id) JOIN webhook.bindings b ON b.binding_id = m.id) AS matched
  FROM webhook._occurrence_rows o ORDER BY 1;
BEGIN;
INSERT INTO helpdesk_case VALUES (6, 10, 1, 'open', 3, 'an urgent one'), (7, 10, 1, 'open', 1, 'calm');
SELECT * FROM matched;
ROLLBACK;

-- condition_sql runs with its author's rights, not the writer's
SET ROLE case_admin;
-- (tables and types outside pg_catalog are named with their schema: a name
-- alone could find the writer's temporary table)
SELECT webhook.add_event('desk', 'ticket.created', condition_sql => 'EXISTS (SELECT 1 FROM secrets)');
SELECT webhook.add_event('desk', 'ticket.created', condition_sql => 'new.title::helpdesk_title IS NULL');
SELECT webhook.add_event('desk', 'ticket.created', condition_sql => 'EXISTS (SELECT 1 FROM public.secrets)') > 0 AS added;
RESET ROLE;
SELECT b.condition_sql, b.created_by, p.proowner::regrole AS runs_as, p.prosecdef AS security_definer
  FROM webhook.bindings b
  JOIN pg_proc p ON p.proname = '_condition_b' || b.binding_id AND p.pronamespace = 'webhook'::regnamespace
 WHERE b.condition_sql IS NOT NULL ORDER BY b.binding_id;
BEGIN;
INSERT INTO helpdesk_case VALUES (8, 10, 1, 'open', 3, 'written by a superuser');
SELECT case_no, capture_error FROM matched;
ROLLBACK;
GRANT SELECT ON secrets TO case_admin;
BEGIN;
INSERT INTO helpdesk_case VALUES (8, 10, 1, 'open', 3, 'written by a superuser');
SELECT * FROM matched;
ROLLBACK;

-- a change by someone else makes them the author (checked as a new definition)
UPDATE webhook.binding SET conditions = '[]' WHERE condition_sql IS NOT NULL;
SELECT DISTINCT created_by FROM webhook.bindings WHERE condition_sql IS NOT NULL;

-- a dropped table takes its events and their bindings with it; a dropped
-- parent table leaves its events without a parent
CREATE TABLE gone (id int PRIMARY KEY, case_ref int);
SELECT webhook.define_event('gone.created', 'gone', 'insert',
                            parent => '{"object": "ticket", "table": "helpdesk_case", "column": "case_ref"}') > 0 AS ok;
SELECT webhook.add_event('desk', 'gone.created') > 0 AS added;
SELECT webhook.create_profile('only_gone', 'http://127.0.0.1:9/', ARRAY['gone.created']) > 0 AS created;
DROP TABLE gone;
SELECT count(*) AS gone_events FROM webhook.events WHERE event = 'gone.created';
SELECT count(*) AS gone_bindings FROM webhook.bindings WHERE event = 'gone.created';
CREATE TABLE kid_parent (id int PRIMARY KEY);
CREATE TABLE kid (id int PRIMARY KEY, parent_id int);
SELECT webhook.define_event('kid.created', 'kid', 'insert',
                            parent => '{"object": "mother", "table": "kid_parent", "column": "parent_id"}') > 0 AS ok;
SELECT webhook.add_event('desk', 'kid.created') > 0 AS added;
DROP TABLE kid_parent;
SELECT event, parent, bindings FROM webhook.events WHERE event = 'kid.created';

-- DROP EXTENSION takes the capture triggers and condition functions with it
DROP VIEW matched;
SELECT count(*) AS capture_triggers FROM pg_trigger WHERE tgname LIKE 'webhook_capture_%';
SELECT count(*) AS condition_functions FROM pg_proc WHERE proname LIKE '\_condition\_%';
DROP EXTENSION webhook;
SELECT count(*) AS capture_triggers FROM pg_trigger WHERE tgname LIKE 'webhook_capture_%';
SELECT count(*) AS condition_functions FROM pg_proc WHERE proname LIKE '\_condition\_%';
-- a session that captured before captures into the queue of the extension made again
CREATE EXTENSION webhook;
CREATE TABLE made_again (id int PRIMARY KEY);
SELECT webhook.define_event('again.created', 'made_again', 'insert') > 0 AS defined;
SELECT webhook.create_profile('again', 'http://127.0.0.1:9/', ARRAY['again.created']) > 0 AS created;
BEGIN;
INSERT INTO made_again VALUES (1), (2);
SELECT row_count FROM webhook.occurrence WHERE table_oid = 'made_again'::regclass;
ROLLBACK;
DROP EXTENSION webhook;
\c contrib_regression
DROP DATABASE webhook_catalogue;
DROP ROLE case_admin;
