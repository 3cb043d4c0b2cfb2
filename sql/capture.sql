-- Capture: what the triggers queue, seen inside the writing transaction
-- (the worker only ever sees committed rows).
\set SHOW_CONTEXT never

BEGIN;
INSERT INTO tickets (ticket_id, summary, status_id, agent_id, priority_id)
VALUES (100, 'Printer on fire', 1, 1, 2), (101, 'VPN down', 1, 2, 1);
SELECT operation, bindings, new_row->>'summary' AS summary, old_row IS NULL AS no_old
  FROM webhook._occurrence_rows ORDER BY occurrence_id, row_number;
UPDATE tickets SET agent_id = 2 WHERE ticket_id = 100;
SELECT operation, new_row->>'agent_id' AS new_agent, old_row->>'agent_id' AS old_agent
  FROM webhook._occurrence_rows WHERE operation = 'update';
-- a statement that changes no row queues nothing
UPDATE tickets SET agent_id = 1 WHERE ticket_id = -1;
SELECT count(*) AS occurrences FROM webhook._occurrence_rows;
-- an update of several rows pairs each old row with its new row
UPDATE tickets SET priority_id = priority_id + 1 WHERE ticket_id IN (100, 101);
SELECT (new_row->>'ticket_id') = (old_row->>'ticket_id') AS paired,
       (new_row->>'priority_id')::int - (old_row->>'priority_id')::int AS step
  FROM webhook._occurrence_rows WHERE operation = 'update' ORDER BY occurrence_id, row_number;
-- delete and the action event of the second profile
INSERT INTO actions (ticket_id, agent_id, note) VALUES (101, 2, 'Rebooted the router');
DELETE FROM tickets WHERE ticket_id = 100;
SELECT operation, bindings, coalesce(new_row, old_row)->>'summary' AS summary,
       new_row->>'note' AS note
  FROM webhook._occurrence_rows WHERE operation IN ('insert', 'delete') ORDER BY occurrence_id, row_number;
ROLLBACK;

-- a rolled-back change leaves nothing in the queue
SELECT count(*) AS occurrences FROM webhook._occurrence_rows;

-- a ticket writer with no privilege on the webhook schema still queues
CREATE ROLE ticket_writer;
GRANT SELECT, INSERT, UPDATE, DELETE ON tickets, actions TO ticket_writer;
BEGIN;
SET LOCAL ROLE ticket_writer;
INSERT INTO tickets (ticket_id, summary, status_id) VALUES (200, 'Written by a plain role', 1);
RESET ROLE;
SELECT count(*) AS occurrences FROM webhook._occurrence_rows WHERE new_row->>'ticket_id' = '200';
ROLLBACK;

-- the trigger function cannot be called directly
SELECT webhook._capture();

-- the envelope of an update, as the worker builds it, keys in order (no
-- table: the snapshot is copied as it is)
SELECT webhook._render('00000000-0000-0000-0000-000000000001', 'ops', 'small', '[]', 7,
                       'ticket.updated', 'Ticket Updated', 'ticket', 0, ARRAY['ticket_id'],
                       '2026-11-28 18:06:39.123456+00', 'update',
                       '{"ticket_id": 4242, "agent_id": 5, "summary": "x"}',
                       '{"ticket_id": 4242, "agent_id": 2, "summary": "x"}',
                       '{"ticket_id": 4242, "agent_id": 5, "summary": "x"}',
                       NULL, NULL, NULL, NULL, NULL)::text;
-- composite keys give an object, no key gives null; nested values,
-- escapes and a missing key pass through as written
SELECT webhook._render(NULL, NULL, 'small', NULL, NULL, NULL, NULL, 'o', 0, ARRAY['a', 'b'], NULL, 'insert',
                       '{"a": 1, "b": "x"}', NULL, NULL, NULL, NULL, NULL, NULL, NULL)::jsonb -> 'object_id' AS composite,
       webhook._render(NULL, NULL, 'small', NULL, NULL, NULL, NULL, 'o', 0, '{}', NULL, 'insert',
                       '{"a": 1}', NULL, NULL, NULL, NULL, NULL, NULL, NULL)::jsonb -> 'object_id' AS no_key;
SELECT webhook._render(NULL, NULL, 'small', NULL, NULL, NULL, NULL, 'o', 0, ARRAY['a', 'b', 'c'], NULL, 'insert',
                       '{"a": {"x": [1, {"y": "}"}]}, "b": "q\"uote"}', NULL, NULL,
                       NULL, NULL, NULL, NULL, NULL)::jsonb -> 'object_id' AS nested;
-- changes: only what differs, nested values compared as a whole; nothing gives {}
SELECT webhook._render(NULL, NULL, 'small', NULL, NULL, NULL, NULL, 'o', 0, '{}', NULL, 'update',
                       '{"a": 1, "b": [1, 3], "c": {"d": "x"}, "e": "now", "f": 7}',
                       '{"a": 1, "b": [1, 2], "c": {"d": "x"}, "e": null}',
                       '{"a": 1, "b": [1, 3], "c": {"d": "x"}, "e": "now", "f": 7}',
                       NULL, NULL, NULL, NULL, NULL)::jsonb -> 'changes' AS changed,
       webhook._render(NULL, NULL, 'small', NULL, NULL, NULL, NULL, 'o', 0, '{}', NULL, 'update',
                       '{"a": 1}', '{"a": 1}', '{"a": 1}', NULL, NULL, NULL, NULL, NULL)::jsonb -> 'changes' AS unchanged;
-- an envelope is valid JSON whatever the snapshot holds, NULLs included
SELECT webhook._render(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)::jsonb AS all_null;
SELECT webhook._render(NULL, NULL, 'small', NULL, NULL, NULL, NULL, 'o', 0, ARRAY['a'], NULL, 'insert',
                       'not json', NULL, NULL, NULL, NULL, NULL, NULL, NULL);
-- the retry schedule: defaults, a profile's own, the last step repeating
SELECT webhook._retry_delay(NULL, 1) BETWEEN '4 seconds' AND '6 seconds' AS second_attempt,
       webhook._retry_delay(NULL, 2) BETWEEN '4 minutes' AND '6 minutes' AS third_attempt,
       webhook._retry_delay(NULL, 20) BETWEEN '8 hours' AND '12 hours' AS last_step,
       webhook._retry_delay('{1 second}', 5) BETWEEN '0.8 seconds' AND '1.2 seconds' AS own;
