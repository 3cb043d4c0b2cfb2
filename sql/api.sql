-- The SQL surface of the event catalogue and profiles: results and errors.
\set SHOW_CONTEXT never

-- define_event: one event per operation, defaults for title and object
SELECT webhook.define_event('ticket.created', 'tickets', 'insert', title => 'New Ticket Logged') > 0 AS defined;
SELECT webhook.define_event('ticket.updated', 'tickets', 'UPDATE') > 0 AS defined;
SELECT webhook.define_event('ticket.deleted', 'public.tickets', 'delete') > 0 AS defined;
SELECT webhook.define_event('action.added', 'actions', 'insert', object => 'action') > 0 AS defined;
SELECT event, on_table, operation, title, object, key_columns, bindings
  FROM webhook.events ORDER BY event;

-- define_event: every bad input is refused, and nothing is left behind
SELECT webhook.define_event('ticket.created', 'tickets', 'insert');
SELECT webhook.define_event('Ticket Created', 'tickets', 'insert');
SELECT webhook.define_event('ticket..created', 'tickets', 'insert');
SELECT webhook.define_event('ticket.created''; DROP TABLE tickets; --', 'tickets', 'insert');
SELECT webhook.define_event(NULL, 'tickets', 'insert');
SELECT webhook.define_event(repeat('a', 101), 'tickets', 'insert');
SELECT webhook.define_event('ticket.other', 'tickets', 'upsert');
SELECT webhook.define_event('ticket.other', 'tickets', NULL);
SELECT webhook.define_event('ticket.other', NULL, 'insert');
SELECT webhook.define_event('ticket.other', 'no_such_table', 'insert');
CREATE VIEW open_tickets AS SELECT * FROM tickets;
SELECT webhook.define_event('ticket.other', 'open_tickets', 'insert');
SELECT webhook.define_event('ticket.other', 'pg_class', 'insert');
SELECT webhook.define_event('ticket.other', 'webhook.profile', 'insert');
SELECT webhook.define_event('ticket.other', 'tickets', 'insert', object => 'ticket"; x');
SELECT count(*) AS events FROM webhook.events;

-- create_profile: bindings and capture triggers follow
SELECT webhook.create_profile('ops', 'http://127.0.0.1:9/hooks',
                              ARRAY['ticket.created', 'ticket.updated']) > 0 AS created;
SELECT name, url, method, payload, enabled, max_attempts, events FROM webhook.profiles;
SELECT tgname FROM pg_trigger WHERE tgrelid = 'tickets'::regclass AND tgname LIKE 'webhook%' ORDER BY 1;
SELECT webhook.create_profile('audit', 'https://hooks.example.com:8443/in?x=1',
                              ARRAY['ticket.deleted', 'action.added']) > 0 AS created;
SELECT tgname FROM pg_trigger WHERE tgrelid = 'tickets'::regclass AND tgname LIKE 'webhook%' ORDER BY 1;
SELECT tgname FROM pg_trigger WHERE tgrelid = 'actions'::regclass AND tgname LIKE 'webhook%' ORDER BY 1;
SELECT event, bindings FROM webhook.events ORDER BY event;

-- create_profile: every bad input is refused, and nothing is left behind
SELECT webhook.create_profile('ops', 'http://127.0.0.1:9/', ARRAY['ticket.created']);
SELECT webhook.create_profile(NULL, 'http://127.0.0.1:9/', ARRAY['ticket.created']);
SELECT webhook.create_profile('  ', 'http://127.0.0.1:9/', ARRAY['ticket.created']);
SELECT webhook.create_profile(repeat('p', 201), 'http://127.0.0.1:9/', ARRAY['ticket.created']);
SELECT webhook.create_profile('p2', NULL, ARRAY['ticket.created']);
SELECT webhook.create_profile('p2', 'ftp://127.0.0.1/', ARRAY['ticket.created']);
SELECT webhook.create_profile('p2', 'file:///etc/passwd', ARRAY['ticket.created']);
SELECT webhook.create_profile('p2', 'http://', ARRAY['ticket.created']);
SELECT webhook.create_profile('p2', '127.0.0.1:9/hooks', ARRAY['ticket.created']);
SELECT webhook.create_profile('p2', 'http://127.0.0.1:9/a b', ARRAY['ticket.created']);
SELECT webhook.create_profile('p2', E'http://127.0.0.1:9/\r\nX-Evil: 1', ARRAY['ticket.created']);
SELECT webhook.create_profile('p2', 'http://user:secret@127.0.0.1:9/', ARRAY['ticket.created']);
SELECT webhook.create_profile('p2', 'http://127.0.0.1:9/' || repeat('x', 2048), ARRAY['ticket.created']);
SELECT webhook.create_profile('p2', 'http://127.0.0.1:9/', NULL);
SELECT webhook.create_profile('p2', 'http://127.0.0.1:9/', '{}');
SELECT webhook.create_profile('p2', 'http://127.0.0.1:9/', ARRAY['ticket.nope']);
SELECT webhook.create_profile('p2', 'http://127.0.0.1:9/', ARRAY['ticket.created', NULL]);
SELECT webhook.create_profile('p2', 'http://127.0.0.1:9/', ARRAY['ticket.created', 'ticket.created']);
SELECT webhook.create_profile('p2''); DROP TABLE tickets; --', 'http://127.0.0.1:9/', ARRAY['ticket.created']) > 0 AS created;
SELECT name FROM webhook.profiles ORDER BY name;
SELECT count(*) AS bindings FROM webhook.binding;
SELECT count(*) AS tickets_table_still_there FROM tickets;

-- privileges: nothing is granted to PUBLIC
CREATE ROLE webhook_nobody;
SET ROLE webhook_nobody;
SELECT webhook.create_profile('p3', 'http://127.0.0.1:9/', ARRAY['ticket.created']);
SELECT * FROM webhook.deliveries;
SELECT * FROM webhook.profile;
SELECT * FROM webhook.attempts;
SELECT * FROM webhook.stats;
SELECT webhook.disable_profile('p2''); DROP TABLE tickets; --');
SELECT webhook.redeliver(1);
SELECT webhook.replay('p2''); DROP TABLE tickets; --', now() - interval '1 day');
SELECT webhook.send_test('p2''); DROP TABLE tickets; --');
SELECT webhook.drop_profile('p2''); DROP TABLE tickets; --');
RESET ROLE;
SELECT has_function_privilege('webhook_nobody', 'webhook.define_event(text, regclass, text, text[], text, text, text, jsonb, text)', 'EXECUTE') AS nobody_can_define,
       has_table_privilege('webhook_nobody', 'webhook.delivery', 'SELECT') AS nobody_can_read;

-- an admin role as documented still needs TRIGGER on the table to define an event
CREATE ROLE webhook_admin;
GRANT USAGE ON SCHEMA webhook TO webhook_admin;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA webhook TO webhook_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA webhook TO webhook_admin;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA webhook TO webhook_admin;
SET ROLE webhook_admin;
SELECT webhook.define_event('ticket.by_admin', 'tickets', 'insert');
INSERT INTO webhook.event (name, table_oid, operation, title, object, key_columns)
VALUES ('ticket.sneaky', 'tickets', 'insert', 'x', 'ticket', '{}');
RESET ROLE;
GRANT TRIGGER ON tickets TO webhook_admin;
SET ROLE webhook_admin;
SELECT webhook.define_event('ticket.by_admin', 'tickets', 'insert') > 0 AS defined;
SELECT webhook.create_profile('by_admin', 'http://127.0.0.1:9/', ARRAY['ticket.by_admin']) > 0 AS created;
RESET ROLE;
SELECT event, bindings FROM webhook.events WHERE event = 'ticket.by_admin';
