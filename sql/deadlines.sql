-- Deadline events: their definition, every bad input, and the schedule the
-- capture triggers keep (firing, timing and restarts: TAP 024_deadlines).
\set SHOW_CONTEXT never
\set VERBOSITY default

-- due times far off, so that nothing fires while this runs
CREATE TABLE sla_ticket (ticket_id int PRIMARY KEY, status text NOT NULL DEFAULT 'open',
                         due_at timestamptz, opened_at timestamptz NOT NULL, due_on date, subject text);
INSERT INTO sla_ticket VALUES
    (1, 'open', '2100-01-01 09:00+00', '2099-12-31 09:00+00', NULL, 'future'),
    (2, 'open', '2000-01-01 09:00+00', '2099-12-31 10:00+00', NULL, 'past when defined'),
    (3, 'open', NULL, '2099-12-31 11:00+00', NULL, 'no due time');

-- the rows already there whose due time is to come are scheduled; the one
-- whose due time has passed is not (it was due before anyone listened)
SELECT webhook.define_deadline_event('sla.due', 'sla_ticket', 'due_at', before => '1 hour',
                                     condition => $$new.status = 'open'$$,
                                     message => 'Ticket {object_id:07} is due.') > 0 AS defined;
SELECT event, operation, due, before, condition, title, object, message FROM webhook.events WHERE event = 'sla.due';
SELECT event, on_table, row_key, due, fire_at FROM webhook.deadlines ORDER BY fire_at;

-- writes append the due times they set: an insert with one, a due time
-- moved or set, a row re-keyed; a change of another column, a due time
-- cleared and a delete write nothing (an entry that is no longer its row's
-- is dropped when it comes due: TAP 024_deadlines)
INSERT INTO sla_ticket VALUES (4, 'open', '2100-02-01 00:00+00', '2099-12-31 12:00+00', NULL, 'new'),
                              (5, 'open', NULL, '2099-12-31 12:00+00', NULL, 'new, none');
SELECT row_key, due, fire_at FROM webhook.deadlines ORDER BY fire_at;
SELECT count(*) AS entries FROM webhook.deadline \gset
UPDATE sla_ticket SET subject = 'still future' WHERE ticket_id = 1;
SELECT count(*) = :entries AS nothing_written FROM webhook.deadline;
UPDATE sla_ticket SET due_at = '2100-01-01 08:00+00' WHERE ticket_id = 1;    -- earlier
UPDATE sla_ticket SET due_at = '2100-03-01 00:00+00' WHERE ticket_id = 3;    -- set
UPDATE sla_ticket SET due_at = NULL WHERE ticket_id = 4;                     -- cleared
SELECT row_key, due, fire_at FROM webhook.deadlines ORDER BY fire_at;
UPDATE sla_ticket SET ticket_id = 30 WHERE ticket_id = 3;                    -- re-keyed
DELETE FROM sla_ticket WHERE ticket_id = 1;
SELECT row_key, due, fire_at FROM webhook.deadlines ORDER BY fire_at;
-- two rows swapping keys in one statement: an entry for each new key
INSERT INTO sla_ticket VALUES (6, 'open', '2100-06-06 00:00+00', '2099-12-31 12:00+00', NULL, 'six');
UPDATE sla_ticket SET ticket_id = CASE ticket_id WHEN 6 THEN -30 ELSE -6 END WHERE ticket_id IN (6, 30);
UPDATE sla_ticket SET ticket_id = -ticket_id WHERE ticket_id < 0;
SELECT row_key, due FROM webhook.deadlines ORDER BY row_key;
SELECT ticket_id, due_at FROM sla_ticket WHERE ticket_id IN (6, 30) ORDER BY 1;

-- a due time written as an expression over new runs as its author, and its
-- function answers nothing when called from outside a capture
SELECT webhook.define_deadline_event('sla.first_response', 'sla_ticket',
                                     $$new.opened_at + interval '4 hours'$$) > 0 AS defined;
SELECT row_key, due, fire_at FROM webhook.deadlines WHERE event = 'sla.first_response' ORDER BY row_key;
SELECT pg_get_userbyid(p.proowner) AS owner, p.prosecdef, p.proconfig
  FROM pg_proc p WHERE p.proname LIKE '\_due\_e%' ORDER BY 1;
SELECT format('webhook.%I', '_due_e' || event_id) AS due_fn FROM webhook.event WHERE name = 'sla.first_response' \gset
SELECT :due_fn(t, 0) AS outside FROM sla_ticket t WHERE ticket_id = 2;
UPDATE sla_ticket SET opened_at = opened_at + interval '1 day' WHERE ticket_id = 2;
SELECT row_key, due FROM webhook.deadlines WHERE event = 'sla.first_response' ORDER BY row_key;

-- the preview of a deadline event: the row as it is, no changes
SELECT webhook.create_profile('sla-desk', 'http://127.0.0.1:9/sla', ARRAY['sla.due', 'sla.first_response'],
                              enabled => false) > 0 AS created;
SELECT (webhook.preview('sla-desk', 'sla.due', '2') -> 'body') - 'id' - 'timestamp' - 'binding_id' AS body;
SELECT webhook.create_profile('sla-halo', 'http://127.0.0.1:9/sla', ARRAY['sla.due'], envelope => 'halo',
                              enabled => false) > 0 AS created;
SELECT webhook.preview('sla-halo', 'sla.due', '2') #>> '{body,event}' AS event,
       webhook.preview('sla-halo', 'sla.due', '2') #>> '{body,message}' AS message;

-- define_ticket_events checks the deadline column it is given (it defines
-- ticket.deadline on it: TAP 024_deadlines)
CREATE TABLE sla_desk (id int PRIMARY KEY, agent_id int, team_id int, status_id int, priority_id int,
                       deadline timestamptz);
SELECT webhook.define_ticket_events('sla_desk', deadline => 'nope');

-- bad inputs: each refused with what to do, and nothing left behind
SELECT webhook.define_deadline_event('x.y', NULL, 'due_at');
SELECT webhook.define_deadline_event('x.y', 'sla_ticket', NULL);
SELECT webhook.define_deadline_event('x.y', 'sla_ticket', 'due_at', before => NULL);
SELECT webhook.define_deadline_event('x.y', 'sla_ticket', '');
SELECT webhook.define_deadline_event('x.y', 'sla_ticket', 'nope');
SELECT webhook.define_deadline_event('x.y', 'sla_ticket', 'due_on');
SELECT webhook.define_deadline_event('x.y', 'sla_ticket', 'subject');
SELECT webhook.define_deadline_event('x.y', 'sla_ticket', $$new.due_on::timestamptz$$) > 0 AS date_converted;
SELECT webhook.drop_event('x.y');
SELECT webhook.define_deadline_event('x.y', 'sla_ticket', 'old.due_at');
SELECT webhook.define_deadline_event('x.y', 'sla_ticket', 'new.due_at; DROP TABLE sla_ticket');
SELECT webhook.define_deadline_event('x.y', 'sla_ticket', 'new.due_at) FROM sla_ticket --');
SELECT webhook.define_deadline_event('x.y', 'sla_ticket', '(SELECT max(due_at) FROM sla_ticket)');
SELECT webhook.define_deadline_event('x.y', 'sla_ticket', 'new.due_at', before => '-1 minute');
SELECT webhook.define_deadline_event('x.y', 'sla_ticket', 'new.due_at', before => '200 years');
SELECT webhook.define_deadline_event('x.y', 'sla_ticket', 'new.due_at', before => 'soon');
SELECT webhook.define_deadline_event('x.y', 'sla_ticket', 'due_at', condition => 'new.nope = 1');
SELECT webhook.define_deadline_event('x.y', 'sla_ticket', 'due_at', object => 'bad key');
SELECT webhook.define_deadline_event('x.y', 'sla_ticket', 'due_at', message => '{nope}');
SELECT webhook.define_deadline_event('x.y', 'sla_ticket', 'due_at', parent => '{"object": "t"}');
SELECT webhook.define_deadline_event('X Y', 'sla_ticket', 'due_at');
SELECT webhook.define_deadline_event('sla.due', 'sla_ticket', 'due_at');
CREATE TABLE sla_nokey (due_at timestamptz);
SELECT webhook.define_deadline_event('x.y', 'sla_nokey', 'due_at');
CREATE VIEW sla_view AS SELECT * FROM sla_ticket;
SELECT webhook.define_deadline_event('x.y', 'sla_view', 'due_at');
SELECT webhook.define_deadline_event('x.y', 'webhook.delivery', 'next_attempt_at');
SELECT webhook.define_event('x.y', 'sla_ticket', 'deadline');
SELECT webhook.define_event('x.y', 'sla_ticket', 'insert', columns => NULL) > 0 AS defined;
UPDATE webhook.event SET due = 'due_at' WHERE name = 'x.y';
SELECT webhook.drop_event('x.y');
UPDATE webhook.event SET due = 'opened_at' WHERE name = 'sla.due';
UPDATE webhook.event SET due_before = '2 hours' WHERE name = 'sla.due';
INSERT INTO webhook.event (name, table_oid, operation, title, object, key_columns, created_by, search_path)
VALUES ('x.y', 'sla_ticket', 'deadline', 'X', 'x', '{ticket_id}', current_user::regrole, '');
UPDATE webhook.event SET key_columns = '{ctid}' WHERE name = 'sla.due';
INSERT INTO webhook.event (name, table_oid, operation, title, object, key_columns, created_by, search_path, due, due_before)
VALUES ('x.y', 'sla_ticket', 'deadline', 'X', 'x', '{status}', current_user::regrole, '', 'due_at', '0');
-- keys are read back from their text as the author: built-in types only
CREATE TYPE sla_kind AS ENUM ('a', 'b');
CREATE TABLE sla_enum_key (k sla_kind PRIMARY KEY, due_at timestamptz);
SELECT webhook.define_deadline_event('x.y', 'sla_enum_key', 'due_at');
CREATE TABLE sla_inet_key (k inet PRIMARY KEY, due_at timestamptz);
SELECT webhook.define_deadline_event('x.y', 'sla_inet_key', 'due_at');
-- a due expression cannot name the capture key its function is given
CREATE TABLE sla_keyed (id int PRIMARY KEY, _webhook_capture_key int8, due_at timestamptz);
SELECT webhook.define_deadline_event('x.y', 'sla_keyed', 'new.due_at + _webhook_capture_key * interval ''1 second''');
SELECT webhook.define_deadline_event('x.y', 'sla_keyed', 'new.due_at + (SELECT _webhook_capture_key) * interval ''1 second''');
SELECT webhook.define_deadline_event('x.y', 'sla_keyed', 'new.due_at + new._webhook_capture_key * interval ''1 second''') > 0
    AS the_column_is_new_dot;
SELECT webhook.drop_event('x.y');
-- the trigger that schedules a new event's rows is webhook.event's only
CREATE TABLE sla_forged (event_id bigint, table_oid oid);
CREATE TRIGGER forged AFTER INSERT ON sla_forged FOR EACH ROW EXECUTE FUNCTION webhook._deadline_defined();
INSERT INTO sla_forged SELECT event_id, table_oid FROM webhook.event WHERE name = 'sla.due';
DROP TABLE sla_forged, sla_enum_key, sla_inet_key, sla_keyed;
DROP TYPE sla_kind;
SELECT count(*) AS left_behind FROM webhook.events WHERE event = 'x.y';

-- a due time that fails for a row does not fail the change: the row is
-- queued for the event's bindings as a failed delivery that says why
SELECT webhook.define_deadline_event('sla.fragile', 'sla_ticket',
                                     $$new.opened_at + (1 / (new.ticket_id - 99)) * interval '1 day'$$) > 0 AS defined;
SELECT webhook.add_event('sla-desk', 'sla.fragile') > 0 AS added;
INSERT INTO sla_ticket VALUES (99, 'open', NULL, '2099-12-31 12:00+00', NULL, 'fragile');
SELECT ticket_id FROM sla_ticket WHERE ticket_id = 99;
DO $$
BEGIN
    FOR i IN 1..600 LOOP
        EXIT WHEN EXISTS (SELECT 1 FROM webhook.deliveries WHERE profile = 'sla-desk');
        PERFORM pg_sleep(0.05);
    END LOOP;
END $$;
SELECT status, events, error FROM webhook.deliveries WHERE profile = 'sla-desk';

-- a writer needs nothing, and cannot write the schedule itself
CREATE ROLE sla_writer;
GRANT SELECT, INSERT, UPDATE, DELETE ON sla_ticket TO sla_writer;
SET ROLE sla_writer;
INSERT INTO sla_ticket VALUES (7, 'open', '2100-07-07 00:00+00', '2099-12-31 12:00+00', NULL, 'by writer');
UPDATE sla_ticket SET due_at = '2100-07-08 00:00+00' WHERE ticket_id = 7;
SELECT * FROM webhook.deadline;
INSERT INTO webhook.deadline VALUES (1, '["1"]', now(), now());
RESET ROLE;
GRANT ALL ON webhook.deadline TO sla_writer;
SET ROLE sla_writer;
INSERT INTO webhook.deadline VALUES (1, '["1"]', now(), now());
UPDATE webhook.deadline SET fire_at = now();
RESET ROLE;
REVOKE ALL ON webhook.deadline FROM sla_writer;
SELECT row_key, due FROM webhook.deadlines WHERE event = 'sla.due' AND row_key = '{"ticket_id": "7"}';
-- another role's author function, called with a row of one's own making, tells nothing
SET ROLE sla_writer;
SELECT :due_fn(ROW(1, 'open', NULL, '2000-01-01', NULL, 'forged')::sla_ticket, 0) AS forged;
RESET ROLE;
REVOKE ALL ON sla_ticket FROM sla_writer;
DROP ROLE sla_writer;

-- a table's deadline events go with it, and an event's schedule with it
SELECT webhook.drop_profile(name) FROM webhook.profiles WHERE name LIKE 'sla-%' ORDER BY name;
SELECT webhook.drop_event('sla.first_response');
SELECT event, count(*) FROM webhook.deadlines GROUP BY 1 ORDER BY 1;
SELECT count(*) AS due_functions FROM pg_proc WHERE proname LIKE '\_due\_e%';
DROP VIEW sla_view;
-- (a due time's function depends on the table's row type, as a bound
-- condition's does: CASCADE drops it)
SET client_min_messages = warning;
DROP TABLE sla_ticket, sla_nokey CASCADE;
RESET client_min_messages;
DROP TABLE sla_desk;
SELECT count(*) AS scheduled, (SELECT count(*) FROM webhook.events WHERE event LIKE 'sla.%') AS events
  FROM webhook.deadline;
