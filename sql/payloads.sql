-- Payload kinds (small, full, event_only, custom), how column types are
-- written, custom fields and their errors, and webhook.preview.
\set SHOW_CONTEXT never

-- what varies from run to run (ids, times, signatures) is left out
CREATE FUNCTION pg_temp.body(request jsonb) RETURNS jsonb LANGUAGE sql AS $$
    SELECT (request -> 'body') - 'id' - 'timestamp'
$$;
CREATE FUNCTION pg_temp.ticket(object jsonb) RETURNS jsonb LANGUAGE sql AS $$
    SELECT object - 'created_at' - 'updated_at'
$$;

-- a row of every column type, and one of NULLs
CREATE TABLE site (site_code text PRIMARY KEY, label text NOT NULL);
INSERT INTO site VALUES ('LON', 'London');
CREATE TABLE typed (
    id         int PRIMARY KEY,
    stamp      timestamptz,
    local_time timestamp,
    day        date,
    amount     numeric(12, 2),
    ratio      float8,
    flag       boolean,
    counts     int[],
    tags       text[],
    doc        jsonb,
    raw        bytea,
    stamps     timestamptz[],
    site_code  text REFERENCES site,
    note       text
);
INSERT INTO typed VALUES
    (1, '2026-11-28 19:06:39.123456+01', '2026-11-28 18:06:39', '2026-11-28', 1234.50, 0.25, true,
     '{1,2,3}', '{"a","b c"}', '{"k": [1, {"n": null}]}', '\x00ff10', '{"2026-01-01 00:00:00+00","2026-06-01 12:30:00+02"}',
     'LON', 'quote " and \ backslash'),
    (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
SELECT webhook.define_event('typed.created', 'typed', 'insert', object => 'typed', title => 'Typed Row');

SELECT webhook.create_profile('types', 'http://127.0.0.1:9/types', ARRAY['typed.created'],
                              enabled => false) > 0 AS created;
-- timestamps in UTC ending in Z (timestamp without time zone as written),
-- numbers, booleans, arrays, jsonb embedded, bytea as base64, NULL as null
SELECT jsonb_pretty(pg_temp.body(webhook.preview('types', 'typed.created', '1')));
SELECT jsonb_pretty(pg_temp.body(webhook.preview('types', 'typed.created', '2')));
-- whatever the caller's settings
SET TimeZone = 'America/New_York';
SET bytea_output = 'escape';
SELECT webhook.preview('types', 'typed.created', '1') #> '{body,typed}' -> 'stamp' AS stamp,
       webhook.preview('types', 'typed.created', '1') #> '{body,typed}' -> 'raw' AS raw;
RESET TimeZone;
RESET bytea_output;
-- the body that is signed is the text of body_text, keys in envelope order
SELECT regexp_replace(webhook.preview('types', 'typed.created', '2') ->> 'body_text',
                      '"(id|timestamp)" : "[^"]*"', '"\1" : "..."', 'g') AS body_text;

-- the sample schema: a ticket with every link, one with none, an action
INSERT INTO tickets (ticket_id, summary, status_id, agent_id, team_id, priority_id, client_id)
VALUES (501, 'Printer on fire', 2, 1, 2, 1, 2), (502, 'No links', 1, NULL, NULL, NULL, NULL);
INSERT INTO actions (action_id, ticket_id, agent_id, note) VALUES (601, 501, 2, 'Called the customer');
SELECT webhook.define_event('action.noted', 'actions', 'insert', object => 'action', title => 'Action Noted',
                            parent => '{"object": "ticket", "table": "tickets", "column": "ticket_id"}') > 0 AS defined;
-- and one whose client row is missing (written past the foreign key)
SET session_replication_role = replica;
INSERT INTO tickets (ticket_id, summary, status_id, client_id) VALUES (503, 'Lost client', 1, 77);
RESET session_replication_role;
-- what is queued from here on (the worker expands what came before, meanwhile)
SELECT last_value AS occurrences_before FROM webhook.occurrence_occurrence_id_seq \gset

SELECT webhook.create_profile('small', 'http://127.0.0.1:9/small', ARRAY['ticket.created', 'action.noted'],
                              enabled => false) > 0 AS created;
SELECT webhook.create_profile('full', 'http://127.0.0.1:9/full', ARRAY['ticket.created', 'action.noted'],
                              payload => 'FULL', enabled => false) > 0 AS created;
SELECT webhook.create_profile('bare', 'http://127.0.0.1:9/bare', ARRAY['ticket.created', 'action.noted'],
                              payload => 'event_only', enabled => false) > 0 AS created;
SELECT name, payload, payload_fields FROM webhook.profiles WHERE name IN ('small', 'full', 'bare') ORDER BY name;

-- small: the row; an action carries its ticket
SELECT pg_temp.ticket(pg_temp.body(webhook.preview('small', 'ticket.created', '501')) -> 'ticket') AS ticket;
SELECT pg_temp.body(webhook.preview('small', 'action.noted', '601')) - 'ticket' - 'action' AS envelope,
       pg_temp.ticket(pg_temp.body(webhook.preview('small', 'action.noted', '601')) -> 'ticket') AS ticket;
-- full: each linked row after its column, under the column's name without _id
SELECT jsonb_pretty(pg_temp.ticket(pg_temp.body(webhook.preview('full', 'ticket.created', '501')) -> 'ticket'));
SELECT regexp_replace(webhook.preview('full', 'ticket.created', '501') #>> '{body_text}',
                      '^.*"ticket" : ', '') ~ '^\{"ticket_id":501,"summary":"Printer on fire","details":null,"status_id":2,"status":\{"status_id":2,' AS in_column_order;
-- no link is null, a missing linked row is null
SELECT pg_temp.ticket(pg_temp.body(webhook.preview('full', 'ticket.created', '502')) -> 'ticket') AS no_links;
SELECT pg_temp.body(webhook.preview('full', 'ticket.created', '503')) #> '{ticket,client}' AS missing_client,
       pg_temp.body(webhook.preview('full', 'ticket.created', '503')) #> '{ticket,status,name}' AS status;
-- full action: the action's links, and its ticket with the ticket's
SELECT pg_temp.body(webhook.preview('full', 'action.noted', '601')) #> '{action,agent}' AS action_agent,
       pg_temp.body(webhook.preview('full', 'action.noted', '601')) #> '{ticket,client}' AS ticket_client,
       pg_temp.body(webhook.preview('full', 'action.noted', '601')) #> '{ticket,priority,name}' AS ticket_priority;
-- event_only: the envelope and the object id
SELECT pg_temp.body(webhook.preview('bare', 'ticket.created', '501')) AS ticket,
       pg_temp.body(webhook.preview('bare', 'action.noted', '601')) AS action;

-- custom: the fields chosen, single-select fields by display value or ID
SELECT webhook.create_profile('chosen', 'http://127.0.0.1:9/chosen', ARRAY['ticket.created', 'ticket.updated'],
                              payload => 'custom', enabled => false) > 0 AS created;
-- no fields yet: an empty object
SELECT pg_temp.body(webhook.preview('chosen', 'ticket.created', '501')) -> 'ticket' AS no_fields;
SELECT webhook.set_payload_fields('chosen', '[
    {"name": "Status", "column": "status_id"},
    {"name": "status_id", "column": "status_id", "send_id": true},
    {"name": "Agent", "column": "agent_id", "display": "email"},
    {"name": "Client", "column": "ticket.client_id"},
    {"name": "Summary", "column": "summary", "send_id": false},
    {"name": "Opened", "column": "created_at"}]');
SELECT payload_fields FROM webhook.profiles WHERE name = 'chosen';
SELECT (pg_temp.body(webhook.preview('chosen', 'ticket.created', '501')) -> 'ticket') - 'Opened' AS ticket,
       pg_temp.body(webhook.preview('chosen', 'ticket.created', '501')) #>> '{ticket,Opened}' ~ '^\d{4}-\d\d-\d\dT[0-9:.]+Z$' AS opened_utc;
SELECT (pg_temp.body(webhook.preview('chosen', 'ticket.created', '502')) -> 'ticket') - 'Opened' AS nulls,
       (pg_temp.body(webhook.preview('chosen', 'ticket.created', '503')) -> 'ticket') - 'Opened' AS missing_client;
-- the order of the fields is the order given
SELECT regexp_replace(regexp_replace(webhook.preview('chosen', 'ticket.created', '501') ->> 'body_text',
                                     '^.*"ticket" : ', ''), '"Opened":"[^"]*"', '"Opened":"..."') AS fields_in_order;
-- an update: changes of the chosen fields only, under their names, as sent
SELECT webhook._render('00000000-0000-0000-0000-000000000009', 'chosen', p.payload, p.payload_fields, b.binding_id,
                       'ticket.updated', 'Ticket Updated', 'ticket', 'tickets'::regclass, ARRAY['ticket_id'],
                       '2026-11-28 18:06:39+00', 'update',
                       '{"ticket_id": 501, "summary": "Printer on fire", "status_id": 9, "agent_id": 2, "details": "x"}',
                       '{"ticket_id": 501, "summary": "Printer on fire", "status_id": 2, "agent_id": 1, "details": "y"}',
                       '{"ticket_id": 501, "summary": "Printer on fire", "status_id": 9, "agent_id": 2, "details": "x"}',
                       NULL, NULL, NULL, NULL, current_user::regrole)::jsonb -> 'changes' AS custom_changes
  FROM webhook.profile p JOIN webhook.binding b USING (profile_id)
  JOIN webhook.event e ON e.event_id = b.event_id
 WHERE p.name = 'chosen' AND e.name = 'ticket.updated';
-- an action event: its own columns, or its ticket's by the ticket's key
SELECT webhook.create_profile('notes', 'http://127.0.0.1:9/notes', ARRAY['action.noted'],
                              payload => 'custom', enabled => false) > 0 AS created;
SELECT webhook.set_payload_fields('notes', '[{"name": "note", "column": "note"},
                                             {"name": "by", "column": "agent_id"},
                                             {"name": "ticket_status", "column": "ticket.status_id"},
                                             {"name": "ticket_summary", "column": "ticket.summary"}]');
SELECT pg_temp.body(webhook.preview('notes', 'action.noted', '601')) AS action;

-- a batching profile previews an array of one, under a batch's webhook-id
SELECT webhook.create_profile('batched', 'http://127.0.0.1:9/batched', ARRAY['ticket.created'],
                              payload => 'event_only', batching => 'any_event', enabled => false) > 0 AS created;
SELECT jsonb_typeof(p -> 'body') AS body, jsonb_array_length(p -> 'body') AS items,
       ((p -> 'body') -> 0) - 'id' - 'timestamp' AS item,
       p #>> '{headers,webhook-id}' <> p #>> '{body,0,id}' AS own_webhook_id,
       left(p ->> 'body_text', 1) AS starts
  FROM webhook.preview('batched', 'ticket.created', '501') AS p;

-- the request: method, url, headers as sent (credentials redacted), signed
SELECT webhook.create_profile('headers', 'https://hooks.example.com/in?x=1', ARRAY['ticket.created'],
                              method => 'PUT', auth => 'basic', username => 'ops', password => 'pw',
                              headers => '{"X-Team": "desk", "X-Api-Key": "k"}', enabled => false) > 0 AS created;
SELECT p ->> 'method' AS method, p ->> 'url' AS url,
       (p -> 'headers') - 'webhook-id' - 'webhook-timestamp' - 'webhook-signature' AS headers,
       p #>> '{headers,webhook-id}' = p #>> '{body,id}' AS id_is_webhook_id,
       p #>> '{headers,webhook-signature}' ~ '^v1,[A-Za-z0-9+/]{43}=$' AS signed,
       abs(extract(epoch FROM now()) - (p #>> '{headers,webhook-timestamp}')::bigint) < 300 AS timestamp_now
  FROM webhook.preview('headers', 'ticket.created', '501') AS p;
-- preview sends nothing and queues nothing (the rows were there before the profiles)
SELECT count(*) AS deliveries FROM webhook.delivery d JOIN webhook.profile p USING (profile_id)
 WHERE p.name IN ('types', 'small', 'full', 'bare', 'chosen', 'notes', 'batched', 'headers');
SELECT last_value = :occurrences_before AS queued_nothing FROM webhook.occurrence_occurrence_id_seq;

-- a composite primary key: row_pk is a JSON object of its columns
CREATE TABLE pair (a int, b text, v text, PRIMARY KEY (a, b));
INSERT INTO pair VALUES (1, 'x', 'one');
SELECT webhook.define_event('pair.created', 'pair', 'insert', object => 'pair');
SELECT webhook.create_profile('pairs', 'http://127.0.0.1:9/pairs', ARRAY['pair.created'], enabled => false) > 0 AS created;
SELECT pg_temp.body(webhook.preview('pairs', 'pair.created', '{"a": 1, "b": "x"}')) AS composite;

-- errors: preview
SELECT webhook.preview('nope', 'ticket.created', '501');
SELECT webhook.preview(NULL, 'ticket.created', '501');
SELECT webhook.preview('small', 'ticket.nope', '501');
SELECT webhook.preview('small', repeat('x', 1000000), '501');
SELECT webhook.preview('small', 'ticket.created', repeat('9', 1000000));
SELECT webhook.preview('small', 'ticket.deleted', '501');
SELECT webhook.preview('small', 'ticket.created', NULL);
SELECT webhook.preview('small', 'ticket.created', 'abc');
SELECT webhook.preview('small', 'ticket.created', '99999999999999999999');
SELECT webhook.preview('small', 'ticket.created', '424242');
SELECT webhook.preview('small', 'ticket.created', '1; DROP TABLE tickets');
SELECT webhook.preview('pairs', 'pair.created', '1');
SELECT webhook.preview('pairs', 'pair.created', '{"a": 1}');
SELECT webhook.preview('pairs', 'pair.created', '{"a": 1, "b": "x"');
SELECT webhook.preview('pairs', 'pair.created', '{"a": "one", "b": "x"}');
SELECT webhook.preview('pairs', 'pair.created', '{"a": 2, "b": "x"}');
CREATE TABLE keyless (v text);
SELECT webhook.define_event('keyless.created', 'keyless', 'insert', object => 'keyless');
SELECT webhook.create_profile('keyless', 'http://127.0.0.1:9/', ARRAY['keyless.created'], enabled => false) > 0 AS created;
SELECT webhook.preview('keyless', 'keyless.created', '1');

-- errors: payload kinds
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], payload => 'everything');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], payload => NULL);
SELECT webhook.alter_profile('small', payload => 'medium');
SELECT payload FROM webhook.profiles WHERE name = 'small';

-- errors: custom fields; each leaves the fields as they were
SELECT payload_fields AS before FROM webhook.profile WHERE name = 'chosen' \gset
SELECT webhook.set_payload_fields('small', '[]');
SELECT webhook.set_payload_fields('nope', '[]');
SELECT webhook.set_payload_fields('chosen', NULL);
SELECT webhook.set_payload_fields('chosen', '{"name": "x", "column": "summary"}');
SELECT webhook.set_payload_fields('chosen', '["summary"]');
SELECT webhook.set_payload_fields('chosen', '[{"name": "x", "column": "summary", "colour": "red"}]');
SELECT webhook.set_payload_fields('chosen', '[{"column": "summary"}]');
SELECT webhook.set_payload_fields('chosen', '[{"name": "", "column": "summary"}]');
SELECT webhook.set_payload_fields('chosen', '[{"name": 7, "column": "summary"}]');
SELECT webhook.set_payload_fields('chosen', '[{"name": "x", "column": "summary"}, {"name": "x", "column": "details"}]');
SELECT webhook.set_payload_fields('chosen', '[{"name": "x"}]');
SELECT webhook.set_payload_fields('chosen', '[{"name": "x", "column": "no_such_column"}]');
SELECT webhook.set_payload_fields('chosen', jsonb_build_array(jsonb_build_object('name', 'x', 'column', repeat('c', 1000000))));
SELECT webhook.set_payload_fields('chosen', jsonb_build_array(jsonb_build_object('name', repeat('n', 1000000), 'column', 'summary')));
SELECT webhook.set_payload_fields('chosen', '[{"name": "x", "column": "summary; DROP TABLE tickets"}]');
SELECT webhook.set_payload_fields('chosen', '[{"name": "x", "column": "client.name"}]');
SELECT webhook.set_payload_fields('chosen', '[{"name": "x", "column": "summary", "send_id": true}]');
SELECT webhook.set_payload_fields('chosen', '[{"name": "x", "column": "summary", "display": "name"}]');
SELECT webhook.set_payload_fields('chosen', '[{"name": "x", "column": "status_id", "send_id": "yes"}]');
SELECT webhook.set_payload_fields('chosen', '[{"name": "x", "column": "status_id", "display": "colour"}]');
SELECT webhook.set_payload_fields('chosen', '[{"name": "x", "column": "status_id", "display": ""}]');
SELECT webhook.set_payload_fields('chosen', '[{"name": "x", "column": "status_id", "send_id": true, "display": "name"}]');
SELECT webhook.set_payload_fields('chosen', (SELECT jsonb_agg(jsonb_build_object('name', 'f' || g, 'column', 'summary'))
                                               FROM generate_series(1, 201) g));
SELECT payload_fields = :'before' AS unchanged FROM webhook.profile WHERE name = 'chosen';
-- a lookup table without a name column needs display
SELECT webhook.create_profile('sites', 'http://127.0.0.1:9/', ARRAY['typed.created'],
                              payload => 'custom', enabled => false) > 0 AS created;
SELECT webhook.set_payload_fields('sites', '[{"name": "site", "column": "site_code"}]');
SELECT webhook.set_payload_fields('sites', '[{"name": "site", "column": "site_code", "display": "label"},
                                             {"name": "code", "column": "site_code", "send_id": true},
                                             {"name": "raw", "column": "raw"}]');
SELECT pg_temp.body(webhook.preview('sites', 'typed.created', '1')) -> 'typed' AS typed;
-- an event whose row lacks a field's column cannot join a custom profile
SELECT webhook.add_event('chosen', 'action.noted');
-- (its ticket's columns would do: ticket.status_id)
SELECT events FROM webhook.profiles WHERE name = 'chosen';
-- nor can a profile switch to custom with fields that do not fit its events
SELECT webhook.alter_profile('notes', payload => 'small');
SELECT webhook.add_event('notes', 'ticket.created') > 0 AS bound;
SELECT webhook.alter_profile('notes', payload => 'custom');
SELECT payload FROM webhook.profiles WHERE name = 'notes';
-- custom profiles batch; full ones cannot
SELECT webhook.alter_profile('chosen', batching => 'same_event');
SELECT webhook.alter_profile('full', batching => 'same_event');

SELECT webhook.drop_profile(name) FROM webhook.profile
 WHERE name IN ('types', 'small', 'full', 'bare', 'chosen', 'notes', 'batched', 'headers', 'pairs', 'keyless', 'sites');
SELECT webhook.drop_event(e) FROM unnest(ARRAY['action.noted', 'typed.created', 'pair.created', 'keyless.created']) AS e;
DELETE FROM actions WHERE action_id = 601;
DELETE FROM tickets WHERE ticket_id IN (501, 502, 503);
DROP TABLE typed, site, pair, keyless;
