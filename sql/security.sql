-- Attacks on the SQL surface, each made as the attacking role: a role with
-- the documented administration grants (EXECUTE on every function, every
-- table privilege) and the owner of a ticket table with no webhook grants at
-- all try to become superuser, to run SQL as the queue's owner, to pass the
-- guards with functions of their own, to take over another role's event; a
-- read-only role looks for credentials.  Each ends with the attacker still
-- not a superuser.
\set SHOW_CONTEXT never

CREATE ROLE sec_admin;
GRANT USAGE ON SCHEMA webhook TO sec_admin;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA webhook TO sec_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA webhook TO sec_admin;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA webhook TO sec_admin;
GRANT CREATE ON SCHEMA public TO sec_admin;
DO $$ BEGIN EXECUTE format('GRANT CREATE ON DATABASE %I TO sec_admin', current_database()); END $$;
CREATE ROLE sec_reader;
GRANT USAGE ON SCHEMA webhook TO sec_reader;
GRANT SELECT ON webhook.deliveries, webhook.attempts, webhook.events, webhook.profiles TO sec_reader;
CREATE ROLE sec_owner;
GRANT CREATE ON SCHEMA public TO sec_owner;
CREATE ROLE sec_writer;
CREATE TABLE sec_vault (id int PRIMARY KEY, code text);
INSERT INTO sec_vault VALUES (1, 'hidden');
CREATE TABLE sec_spied (who text);
GRANT INSERT ON sec_spied TO PUBLIC;

-- 1. the capture trigger takes nothing from its arguments: a trigger of
-- one's own whose "query" would make one superuser does nothing
SET ROLE sec_admin;
CREATE TABLE sec_own (id int);
CREATE TRIGGER webhook_capture_insert AFTER INSERT ON sec_own REFERENCING NEW TABLE AS webhook_new
    FOR EACH STATEMENT EXECUTE FUNCTION webhook._capture('insert',
        'WITH x AS (UPDATE pg_catalog.pg_authid SET rolsuper = true WHERE rolname = ''sec_admin'' RETURNING 1) '
        'INSERT INTO webhook.occurrence (table_oid, operation, bindings, row_count) SELECT 0, ''insert'', ''{}'', count(*) FROM x',
        '');
INSERT INTO sec_own VALUES (1);
CREATE TRIGGER direct AFTER INSERT ON sec_own REFERENCING NEW TABLE AS webhook_new
    FOR EACH STATEMENT EXECUTE FUNCTION webhook._capture('insert', '', '', '{1,2,3}');
INSERT INTO sec_own VALUES (2);
RESET ROLE;
SELECT rolsuper AS admin_is_superuser FROM pg_roles WHERE rolname = 'sec_admin';
SELECT count(*) AS forged_occurrences FROM webhook.occurrence WHERE table_oid = 'sec_own'::regclass OR table_oid = 0;
DROP TABLE sec_own;

-- 2. a table's owner with no webhook grants adds a column whose cast to
-- json is its own: the capture runs it as the writer, never as the queue's
-- owner
SET ROLE sec_owner;
CREATE TABLE sec_cases (id int PRIMARY KEY, urgency int);
CREATE TYPE sec_mood AS ENUM ('calm', 'angry');
CREATE FUNCTION sec_mood_json(m sec_mood) RETURNS json LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.sec_spied VALUES (current_user);
    BEGIN
        EXECUTE 'ALTER ROLE sec_owner SUPERUSER';
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
    RETURN to_json(m::text);
END $$;
CREATE CAST (sec_mood AS json) WITH FUNCTION sec_mood_json(sec_mood);
GRANT INSERT ON sec_cases TO sec_writer;
RESET ROLE;
SELECT webhook.define_event('sec_case.created', 'sec_cases', 'insert') > 0 AS defined;
SELECT webhook.create_profile('sec_cases', 'http://127.0.0.1:9/', ARRAY['sec_case.created'], enabled => false) > 0 AS created;
SELECT webhook.add_event('sec_cases', 'sec_case.created', '[{"field": "urgency", "op": "eq", "value": 1}]') > 0 AS bound;
SET ROLE sec_owner;
ALTER TABLE sec_cases ADD COLUMN mood sec_mood;
RESET ROLE;
SET ROLE sec_writer;
INSERT INTO sec_cases VALUES (1, 1, 'angry');
RESET ROLE;
SELECT who FROM sec_spied;
SELECT rolsuper AS owner_is_superuser FROM pg_roles WHERE rolname = 'sec_owner';
-- the change was captured all the same (queued, or already a held delivery)
SELECT EXISTS (SELECT FROM webhook._occurrence_rows WHERE table_oid = 'sec_cases'::regclass)
    OR EXISTS (SELECT FROM webhook.delivery d JOIN webhook.profile p USING (profile_id)
                WHERE p.name = 'sec_cases') AS captured;
TRUNCATE sec_spied;

-- 3. the guards resolve no name through the caller's search_path: a
-- has_table_privilege of one's own, first on the path, does not let one
-- define an event on a table one may not trigger
SET ROLE sec_admin;
CREATE SCHEMA sec_evil;
CREATE FUNCTION sec_evil.has_table_privilege(oid, text) RETURNS boolean LANGUAGE sql AS 'SELECT true';
CREATE FUNCTION sec_evil.has_table_privilege(regclass, text) RETURNS boolean LANGUAGE sql AS 'SELECT true';
SET search_path = sec_evil, pg_catalog, public;
SELECT webhook.define_event('sec_vault.changed', 'sec_vault', 'update');
INSERT INTO webhook.event (name, table_oid, operation, title, object, key_columns, created_by, search_path)
VALUES ('sec_vault.changed', 'sec_vault', 'update', 'x', 'vault', '{id}', 'sec_admin', '');
RESET search_path;
RESET ROLE;

-- 4. editing another role's event makes the editor its author, checked as
-- a new definition: the parent cannot become a table the editor may not read
CREATE TABLE sec_people (id int PRIMARY KEY);
SELECT webhook.define_event('sec_case.noted', 'sec_cases', 'update',
                            parent => '{"object": "person", "table": "sec_people", "column": "urgency"}') > 0 AS defined;
GRANT TRIGGER ON sec_cases TO sec_admin;
SET ROLE sec_admin;
UPDATE webhook.event SET parent_table = 'sec_vault', parent_key = 'id' WHERE name = 'sec_case.noted';
UPDATE webhook.event SET title = 'Taken over' WHERE name = 'sec_case.noted';
RESET ROLE;
SELECT created_by, parent_table FROM webhook.event WHERE name = 'sec_case.noted';
-- with the privileges of a new definition, the edit goes through, and its author is the editor
GRANT SELECT ON sec_people TO sec_admin;
SET ROLE sec_admin;
UPDATE webhook.event SET title = 'Taken over' WHERE name = 'sec_case.noted';
RESET ROLE;
SELECT created_by, title FROM webhook.event WHERE name = 'sec_case.noted';

-- a parent whose rows would run a role's own code when read is refused
SET ROLE sec_owner;
CREATE FUNCTION sec_check(v int) RETURNS boolean LANGUAGE sql AS 'SELECT true';
CREATE DOMAIN sec_key AS int CHECK (sec_check(VALUE));
CREATE TABLE sec_sites (site_id sec_key PRIMARY KEY, name text);
GRANT SELECT ON sec_sites TO PUBLIC;
RESET ROLE;
SELECT webhook.define_event('sec_case.at_site', 'sec_cases', 'insert',
                            parent => '{"object": "site", "table": "sec_sites", "column": "urgency"}');

-- 5. the read-only role sees no credential: URL query values, every
-- custom header value, and the profile's secrets echoed by a receiver
SELECT webhook.create_profile('sec_echo', 'https://hooks.example.com/in?token=q-secret-123&team=desk',
                              ARRAY['sec_case.created'], auth => 'basic', username => 'desk',
                              password => 'pw-secret-456',
                              headers => '{"X-Credential": "h-secret-789", "X-Team": "service-desk"}',
                              public_headers => '{x-team}', enabled => false) > 0 AS created;
INSERT INTO webhook.delivery (profile_id, webhook_id, events, items, body, status, response_body)
SELECT profile_id, 'sec-1', '{sec_case.created}', 1, '{}', 'delivered',
       'echo: Basic ' || encode(convert_to('desk:pw-secret-456', 'UTF8'), 'base64')
       || ' h-secret-789 q-secret-123 pw-secret-456 ' || secret
  FROM webhook.profile WHERE name = 'sec_echo';
INSERT INTO webhook.attempt (delivery_id, attempt, started_at, outcome, response_status, response_headers,
                             response_body, request_headers)
SELECT delivery_id, 1, now(), 'response', 200, '{"X-Echo": "h-secret-789"}', response_body,
       '{"X-Credential": "h-secret-789", "X-Team": "service-desk", "Authorization": "[redacted]", "Content-Type": "application/json"}'
  FROM webhook.delivery WHERE webhook_id = 'sec-1';
SET ROLE sec_reader;
SELECT url, headers, password, secret FROM webhook.profiles WHERE name = 'sec_echo';
SELECT response_body FROM webhook.deliveries WHERE webhook_id = 'sec-1';
SELECT a.response_headers, a.response_body, a.request_headers FROM webhook.attempts a
  JOIN webhook.deliveries d USING (delivery_id) WHERE d.webhook_id = 'sec-1';
RESET ROLE;
-- the administration role still sees everything
SET ROLE sec_admin;
SELECT url, headers FROM webhook.profiles WHERE name = 'sec_echo';
SELECT response_body LIKE '%pw-secret-456%' AS admin_sees_the_echo FROM webhook.deliveries WHERE webhook_id = 'sec-1';
RESET ROLE;

-- a function that holds a SQL condition answers only inside a capture of
-- its own table, given the session's capture key: called with rows of
-- one's own making, it says nothing, nor from a condition of one's own on
-- the same table, which cannot name the key
SELECT webhook.add_event('sec_cases', 'sec_case.created',
                         condition_sql => 'EXISTS (SELECT 1 FROM public.sec_vault WHERE code = new.mood::text)') > 0 AS bound;
SET ROLE sec_admin;
DO $$
DECLARE
    fn text := (SELECT 'webhook._condition_b' || max(binding_id) FROM webhook.binding WHERE condition_sql IS NOT NULL);
    answer boolean;
BEGIN
    EXECUTE format('SELECT %s(ROW(1, 1, %L)::public.sec_cases, NULL, 42)', fn, 'calm') INTO answer;
    RAISE NOTICE 'the condition function answers %', coalesce(answer::text, 'NULL');
END $$;
RESET ROLE;
GRANT TRIGGER ON sec_cases TO sec_admin;
SET ROLE sec_admin;
SELECT webhook.add_event('sec_cases', 'sec_case.created', condition_sql => 'new.urgency = $1');
SELECT webhook.add_event('sec_cases', 'sec_case.created', condition_sql => '_webhook_capture_key IS NOT NULL');
RESET ROLE;

-- public_headers names headers of the profile; one taken away loses its mark
SELECT webhook.alter_profile('sec_echo', public_headers => '{X-Nope}');
SELECT webhook.alter_profile('sec_echo', public_headers => ARRAY[NULL]);
SELECT webhook.alter_profile('sec_echo', headers => '{"X-Credential": "h-secret-789"}');
SELECT public_headers FROM webhook.profiles WHERE name = 'sec_echo';

-- the capture queue is written by the capture triggers only: a queued
-- change of one's own making would be read with its event author's rights
SET ROLE sec_admin;
INSERT INTO webhook.occurrence (table_oid, operation, bindings, new_rows, row_count)
SELECT 'sec_cases'::regclass, 'insert', ARRAY[min(binding_id)], '[{"id": 1}]', 1 FROM webhook.binding;
RESET ROLE;

-- a body jsonb cannot hold (a number past numeric's range) is shown as text
INSERT INTO webhook.delivery (profile_id, webhook_id, events, items, body, status)
SELECT profile_id, 'sec-2', '{sec_case.created}', 1, '{"n": 1e1000000}', 'failed'
  FROM webhook.profile WHERE name = 'sec_echo';
SELECT jsonb_typeof(request_body) AS shown_as FROM webhook.deliveries WHERE webhook_id = 'sec-2';
DELETE FROM webhook.delivery WHERE webhook_id = 'sec-2';

-- 6. limits: conditions, in lists, URLs
SELECT webhook.add_event('sec_cases', 'sec_case.created',
    (SELECT jsonb_agg(jsonb_build_object('field', 'urgency', 'op', 'ne', 'value', i)) FROM generate_series(1, 1001) AS i));
SELECT webhook.add_event('sec_cases', 'sec_case.created',
    jsonb_build_array(jsonb_build_object('field', 'urgency', 'op', 'in',
                                         'value', (SELECT jsonb_agg(i) FROM generate_series(1, 10001) AS i))));
SELECT webhook.add_event('sec_cases', 'sec_case.created',
    jsonb_build_array(jsonb_build_object('field', 'urgency', 'op', 'in',
                                         'value', (SELECT jsonb_agg(i) FROM generate_series(1, 10000) AS i)))) > 0 AS ten_thousand_values;
SELECT webhook.alter_profile('sec_echo', url => E'https://hooks.example.com/\x01in');
SELECT webhook.alter_profile('sec_echo', url => 'https://desk:pw-secret-456@hooks.example.com/in');

-- the extension's trigger functions that run as its owner serve its own
-- tables only: attached by the administration role to a table of its own,
-- whose column's cast to json is another role's, each refuses before it
-- reads a value of the row
SET ROLE sec_admin;
CREATE TABLE sec_trap (id bigint, profile_id bigint, event_id bigint, table_oid regclass, name sec_mood,
                       enabled boolean, disabled_reason text, consecutive_failures int,
                       last_error text, last_error_at timestamptz);
INSERT INTO sec_trap VALUES (1, 1, 1, NULL, 'angry', true);
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = 'webhook'::regnamespace AND p.prosecdef
                AND p.prorettype = 'trigger'::regtype ORDER BY p.proname LOOP
        EXECUTE format('CREATE TRIGGER sec_trap AFTER INSERT OR UPDATE OR DELETE ON sec_trap'
                       ' FOR EACH ROW EXECUTE FUNCTION %s(''id'')', f::oid::regproc);
        BEGIN
            UPDATE sec_trap SET enabled = false, name = 'calm';
            RAISE NOTICE '%: fired', f;
        EXCEPTION WHEN OTHERS THEN
            RAISE NOTICE '%: %', f, SQLERRM;
        END;
        DROP TRIGGER sec_trap ON sec_trap;
    END LOOP;
END
$$;
DROP TABLE sec_trap;
-- nor can it write the built-in events' rows: an alert of its own would be signed as the others
INSERT INTO webhook.failed_delivery (delivery_id, profile, webhook_id, events, attempts) VALUES (1, 'x', 'x', '{}', 1);
INSERT INTO webhook.disabled_profile (profile_id, profile, consecutive_failures) VALUES (1, 'x', 0);
RESET ROLE;
SELECT who FROM sec_spied;
SELECT rolsuper AS owner_is_superuser FROM pg_roles WHERE rolname = 'sec_owner';

-- every SQL function of the extension pins its search_path
SELECT p.oid::regprocedure AS unpinned
  FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass AND d.deptype = 'e'
 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'webhook')
   AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) AS c WHERE c = 'search_path=pg_catalog, pg_temp')
 ORDER BY 1;

SELECT rolname, rolsuper FROM pg_roles WHERE rolname LIKE 'sec\_%' ORDER BY 1;

-- what a binding points at stays what it pointed at
SET ROLE sec_admin;
UPDATE webhook.event SET event_id = event_id + 1000 WHERE name = 'sec_case.created';
UPDATE webhook.profile SET profile_id = profile_id + 1000 WHERE name = 'sec_cases';
RESET ROLE;
-- a binding left naming a profile that is gone (as a restore may load it)
COPY webhook.binding (binding_id, profile_id, event_id, created_by, search_path) FROM stdin;
900001	900001	1	sec_admin	pg_catalog, pg_temp
\.
SET ROLE sec_admin;
INSERT INTO webhook.profile (profile_id, name, url, secret)
VALUES (900001, 'sec_taker', 'http://127.0.0.1:9/', webhook._new_secret());
RESET ROLE;
DELETE FROM webhook.binding WHERE binding_id = 900001;

-- clean up
SELECT webhook.drop_profile(name) FROM webhook.profile WHERE name LIKE 'sec\_%';
DELETE FROM webhook.delivery WHERE webhook_id = 'sec-1';
SELECT webhook.drop_event(name, "cascade" => true) FROM webhook.event WHERE name LIKE 'sec\_%';
DROP TABLE sec_cases, sec_sites, sec_vault, sec_spied, sec_people;
DROP SCHEMA sec_evil CASCADE;
DROP DOMAIN sec_key;
DROP CAST (sec_mood AS json);
DROP FUNCTION sec_mood_json(sec_mood), sec_check(int);
DROP TYPE sec_mood;
REVOKE ALL ON SCHEMA public FROM sec_admin, sec_owner;
DO $$ BEGIN EXECUTE format('REVOKE CREATE ON DATABASE %I FROM sec_admin', current_database()); END $$;
REVOKE ALL ON ALL TABLES IN SCHEMA webhook FROM sec_admin, sec_reader;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA webhook FROM sec_admin;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA webhook FROM sec_admin;
REVOKE ALL ON SCHEMA webhook FROM sec_admin, sec_reader;
DROP ROLE sec_admin, sec_reader, sec_owner, sec_writer;

