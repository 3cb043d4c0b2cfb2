-- The halo envelope (Halo's own webhook shape), event messages, changes
-- tagged with webhook.origin passed over by the profiles that ignore that
-- origin, and light logs; every new parameter's bad values.
\set SHOW_CONTEXT never
\set VERBOSITY default

-- what varies from run to run (ids, times) is shown by its shape
CREATE FUNCTION pg_temp.halo(profile text, event text, row_pk text) RETURNS jsonb LANGUAGE sql AS $$
    SELECT (r -> 'body') - 'id' - 'webhook_id' - 'notification_id' - 'escmsg_id' - 'timestamp'
           || jsonb_build_object(
                'notification_id=binding', (r #>> '{body,notification_id}')::bigint =
                    (SELECT min(b.binding_id) FROM webhook.binding b JOIN webhook.profile p USING (profile_id)
                       JOIN webhook.event e USING (event_id) WHERE p.name = halo.profile AND e.name = halo.event),
                'id=webhook-id', r #>> '{body,id}' = r #>> '{headers,webhook-id}',
                'webhook_id=guid', r #>> '{body,webhook_id}' = (SELECT guid::text FROM webhook.profiles p
                                                                 WHERE p.name = halo.profile),
                'escmsg_id_is_another', r #>> '{body,escmsg_id}' ~ '^[0-9a-f-]{36}$'
                                        AND r #>> '{body,escmsg_id}' <> r #>> '{body,id}',
                'timestamp_7_digits_Z', r #>> '{body,timestamp}' ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$')
      FROM webhook.preview(profile, event, row_pk) AS r
$$;

-- a desk whose key column is not called id, with a note table under it
CREATE TABLE desk_case (case_ref int PRIMARY KEY, subject text NOT NULL, owner_id int, state text);
CREATE TABLE desk_note (note_no int PRIMARY KEY, case_ref int REFERENCES desk_case, body text);
INSERT INTO desk_case VALUES (42, 'Printer on fire', 3, 'open'), (-7, 'Negative', NULL, NULL);
INSERT INTO desk_note VALUES (1, 42, 'Called');
SELECT webhook.define_event('case.opened', 'desk_case', 'insert', title => 'New Case Logged',
                            message => 'Case {object_id:07} ({subject}) opened, {{state}}: {state}.') > 0 AS defined;
SELECT webhook.define_event('case.noted', 'desk_note', 'insert', title => 'Case Noted', object => 'note',
                            parent => '{"object": "case", "table": "desk_case", "column": "case_ref"}',
                            message => 'Note {note_no:03} on case {object_id:05}') > 0 AS defined;
SELECT webhook.define_event('case.plain', 'desk_case', 'update') > 0 AS defined;
SELECT event, message, agent_column FROM webhook.events WHERE event LIKE 'case.%' ORDER BY 1;

SELECT webhook.create_profile('desk-halo', 'http://127.0.0.1:9/halo', ARRAY['case.opened', 'case.noted', 'case.plain'],
                              envelope => 'halo', enabled => false) > 0 AS created;
SELECT webhook.create_profile('desk-halo-custom', 'http://127.0.0.1:9/halo', ARRAY['case.opened'],
                              envelope => 'HALO', payload => 'custom', enabled => false) > 0 AS created;
SELECT webhook.set_payload_fields('desk-halo-custom', '[{"name": "title", "column": "subject"}]');
SELECT webhook.create_profile('desk-halo-batch', 'http://127.0.0.1:9/halo', ARRAY['case.opened'],
                              envelope => 'halo', payload => 'event_only', batching => 'any_event',
                              enabled => false) > 0 AS created;
SELECT name, envelope, guid IS NOT NULL AS has_guid, ignore_origins FROM webhook.profiles
 WHERE name LIKE 'desk-%' ORDER BY 1;

-- Halo's keys: the message filled in, object_id the key, the row with an
-- id first; no profile, binding_id, title or changes
SELECT jsonb_pretty(pg_temp.halo('desk-halo', 'case.opened', '42'));
SELECT regexp_replace(webhook.preview('desk-halo', 'case.opened', '42') ->> 'body_text',
                      '"(id|webhook_id|escmsg_id|timestamp)" : "[^"]*"|"(notification_id)" : \d+', '"\1\2" : "..."', 'g') AS body_text;
-- zero padding keeps a minus sign first; a NULL column is nothing
SELECT webhook.preview('desk-halo', 'case.opened', '-7') #>> '{body,message}' AS message;
-- an event with a parent: the parent's key is object_id, the parent first
SELECT jsonb_pretty(pg_temp.halo('desk-halo', 'case.noted', '1'));
-- no message: null; the update event's object_id all the same
SELECT webhook.preview('desk-halo', 'case.plain', '42') -> 'body' -> 'message' AS message,
       webhook.preview('desk-halo', 'case.plain', '42') -> 'body' -> 'object_id' AS object_id;
-- custom: the chosen fields, with the id; event_only: no object
SELECT webhook.preview('desk-halo-custom', 'case.opened', '42') #> '{body,case}' AS custom_object;
SELECT jsonb_typeof(webhook.preview('desk-halo-batch', 'case.opened', '42') -> 'body') AS batch,
       (webhook.preview('desk-halo-batch', 'case.opened', '42') -> 'body' -> 0) ?| '{case,profile,changes}' AS has_object;
-- the profile's guid stays with a rename, and is not set by hand
SELECT guid AS guid_before FROM webhook.profiles WHERE name = 'desk-halo' \gset
SELECT webhook.alter_profile('desk-halo', new_name => 'desk-halo-renamed');
SELECT guid = :'guid_before' AS same_guid FROM webhook.profiles WHERE name = 'desk-halo-renamed';
SELECT webhook.preview('desk-halo-renamed', 'case.opened', '42') #>> '{body,webhook_id}' = :'guid_before' AS webhook_id_is_guid;
UPDATE webhook.profile SET guid = gen_random_uuid() WHERE name = 'desk-halo-renamed';
UPDATE webhook.profile SET guid = NULL WHERE name = 'desk-halo-renamed';
-- back to standard, and the standard envelope is as it was
SELECT webhook.alter_profile('desk-halo-renamed', envelope => 'standard');
SELECT (webhook.preview('desk-halo-renamed', 'case.opened', '42') -> 'body') ?& '{profile,binding_id,event,title}' AS standard,
       (webhook.preview('desk-halo-renamed', 'case.opened', '42') -> 'body') ?| '{message,webhook_id,escmsg_id}' AS halo_keys;

-- bad envelopes
SELECT webhook.create_profile('bad', 'http://127.0.0.1:9/', ARRAY['case.opened'], envelope => NULL);
SELECT webhook.create_profile('bad', 'http://127.0.0.1:9/', ARRAY['case.opened'], envelope => '');
SELECT webhook.create_profile('bad', 'http://127.0.0.1:9/', ARRAY['case.opened'], envelope => 'xml');
SELECT webhook.create_profile('bad', 'http://127.0.0.1:9/', ARRAY['case.opened'], envelope => 'halo''; DROP TABLE desk_case; --');
SELECT webhook.create_profile('bad', 'http://127.0.0.1:9/', ARRAY['case.opened'], envelope => repeat('h', 1000000));
SELECT webhook.create_profile('bad', 'http://127.0.0.1:9/', ARRAY['case.opened'], envelope => 42);
SELECT webhook.alter_profile('desk-halo-renamed', envelope => 'json');
SELECT webhook.alter_profile('desk-halo-renamed', envelope => '');

-- bad messages
SELECT webhook.define_event('case.bad', 'desk_case', 'insert', message => 'Case {object_id');
SELECT webhook.define_event('case.bad', 'desk_case', 'insert', message => 'Case object_id}');
SELECT webhook.define_event('case.bad', 'desk_case', 'insert', message => 'Case {}');
SELECT webhook.define_event('case.bad', 'desk_case', 'insert', message => 'Case {object_id:7}');
SELECT webhook.define_event('case.bad', 'desk_case', 'insert', message => 'Case {object_id:00}');
SELECT webhook.define_event('case.bad', 'desk_case', 'insert', message => 'Case {object_id:0100}');
SELECT webhook.define_event('case.bad', 'desk_case', 'insert', message => 'Case {object_id:x}');
SELECT webhook.define_event('case.bad', 'desk_case', 'insert', message => 'Case {no_such_column}');
SELECT webhook.define_event('case.bad', 'desk_case', 'insert', message => 'Case {subject"); DROP TABLE desk_case; --}');
SELECT webhook.define_event('case.bad', 'desk_case', 'insert', message => E'Case\n{object_id}');
SELECT webhook.define_event('case.bad', 'desk_case', 'insert', message => repeat('m', 1001));
SELECT webhook.define_event('case.bad', 'desk_case', 'insert', message => repeat('{', 1000000));
SELECT webhook.define_event('case.bad', 'desk_case', 'insert', message => 42);
-- a message's columns are of the event's table (the parent's are not)
SELECT webhook.define_event('case.bad', 'desk_note', 'insert', message => '{subject}', object => 'note',
                            parent => '{"object": "case", "table": "desk_case", "column": "case_ref"}');
-- an empty message, {{ and }} as braces, placeholders next to each other
SELECT webhook.define_event('case.braces', 'desk_case', 'insert',
                            message => '{{{object_id}}}{subject}{state:010}') > 0 AS defined;
SELECT webhook.create_profile('desk-braces', 'http://127.0.0.1:9/halo', ARRAY['case.braces'],
                              envelope => 'halo', enabled => false) > 0 AS created;
SELECT webhook.preview('desk-braces', 'case.braces', '42') #>> '{body,message}' AS message;
SELECT webhook.define_event('case.empty', 'desk_case', 'insert', message => '') > 0 AS defined;
-- a parent key that would shadow a key of the halo envelope
SELECT webhook.define_event('case.bad', 'desk_note', 'insert',
                            parent => '{"object": "escmsg_id", "table": "desk_case", "column": "case_ref"}');
SELECT webhook.define_event('case.bad', 'desk_note', 'insert',
                            parent => '{"object": "agent_id", "table": "desk_case", "column": "case_ref"}');
-- the catalogue checks a message written there directly too
UPDATE webhook.event SET message = '{nope}' WHERE name = 'case.opened';
UPDATE webhook.event SET agent_column = 'nope' WHERE name = 'case.opened';

-- bad ignore_origins
SELECT webhook.create_profile('bad', 'http://127.0.0.1:9/', ARRAY['case.opened'], ignore_origins => NULL);
SELECT webhook.create_profile('bad', 'http://127.0.0.1:9/', ARRAY['case.opened'], ignore_origins => '{""}');
SELECT webhook.create_profile('bad', 'http://127.0.0.1:9/', ARRAY['case.opened'], ignore_origins => '{NULL}');
SELECT webhook.create_profile('bad', 'http://127.0.0.1:9/', ARRAY['case.opened'], ignore_origins => ARRAY[repeat('o', 65)]);
SELECT webhook.create_profile('bad', 'http://127.0.0.1:9/', ARRAY['case.opened'], ignore_origins => ARRAY[E'crm\tsync']);
SELECT webhook.create_profile('bad', 'http://127.0.0.1:9/', ARRAY['case.opened'],
                              ignore_origins => (SELECT array_agg('o' || i) FROM generate_series(1, 101) AS i));
SELECT webhook.create_profile('bad', 'http://127.0.0.1:9/', ARRAY['case.opened'], ignore_origins => 'crm-sync');
SELECT webhook.alter_profile('desk-halo-renamed', ignore_origins => '{NULL}');
SELECT count(*) AS bad_profiles FROM webhook.profiles WHERE name = 'bad';

-- bad origins
SET webhook.origin = 'a-name-that-goes-on-and-on-for-more-than-sixty-four-characters-long';
SET webhook.origin = E'crm\nsync';
DO $$
BEGIN
    PERFORM set_config('webhook.origin', repeat('o', 1000000), false);
EXCEPTION WHEN invalid_parameter_value THEN
    RAISE NOTICE 'refused: %', left(SQLERRM, 50);
END $$;
SHOW webhook.origin;

-- the loop guard: a profile that ignores crm-sync gets only the other
-- changes; every other profile gets them all (disabled profiles hold them)
SELECT webhook.create_profile('desk-guarded', 'http://127.0.0.1:9/guarded', ARRAY['case.plain'],
                              ignore_origins => '{crm-sync, billing}', enabled => false) > 0 AS created;
SELECT webhook.create_profile('desk-unguarded', 'http://127.0.0.1:9/unguarded', ARRAY['case.plain'],
                              enabled => false) > 0 AS created;
-- one of its bindings goes through the capture query (a condition of SQL)
SELECT webhook.add_event('desk-guarded', 'case.plain', condition_sql => 'new.subject <> ''''') > 0 AS bound;
UPDATE desk_case SET state = 'untagged' WHERE case_ref = 42;
SET webhook.origin = 'crm-sync';
UPDATE desk_case SET state = 'by crm' WHERE case_ref = 42;
BEGIN;
SET LOCAL webhook.origin = 'billing';
UPDATE desk_case SET state = 'by billing' WHERE case_ref = 42;
COMMIT;
SHOW webhook.origin;
SET webhook.origin = 'other';
UPDATE desk_case SET state = 'by other' WHERE case_ref = 42;
RESET webhook.origin;
UPDATE desk_case SET state = 'untagged again' WHERE case_ref = 42;
-- (the worker expands them into held deliveries)
DO $$
BEGIN
    FOR i IN 1..600 LOOP
        EXIT WHEN NOT EXISTS (SELECT 1 FROM webhook.occurrence);
        PERFORM pg_sleep(0.05);
    END LOOP;
END $$;
SELECT profile, array_agg(request_body #>> '{case,state}' ORDER BY delivery_id) AS states
  FROM webhook.deliveries WHERE profile IN ('desk-guarded', 'desk-unguarded') GROUP BY 1 ORDER BY 1;
-- origins are the writer's: no privilege is needed to set one
CREATE ROLE halo_writer;
GRANT SELECT, UPDATE ON desk_case TO halo_writer;
SET ROLE halo_writer;
SET webhook.origin = 'crm-sync';
SHOW webhook.origin;
RESET webhook.origin;
RESET ROLE;
REVOKE ALL ON desk_case FROM halo_writer;
DROP ROLE halo_writer;

-- a row with an "id" column of its own that is not its key keeps it, and
-- gets no second one (a writer's json that cannot be text, \u0000, in a
-- message: TAP 022_halo)
CREATE TABLE desk_raw (ref int PRIMARY KEY, id text, doc json);
INSERT INTO desk_raw VALUES (1, 'EXT-9', '"a \"quoted\" doc"');
SELECT webhook.define_event('raw.created', 'desk_raw', 'insert', message => 'Doc {doc}, ext {id}') > 0 AS defined;
SELECT webhook.create_profile('desk-raw', 'http://127.0.0.1:9/raw', ARRAY['raw.created'], envelope => 'halo',
                              enabled => false) > 0 AS created;
SELECT webhook.preview('desk-raw', 'raw.created', '1') #>> '{body,message}' AS message,
       webhook.preview('desk-raw', 'raw.created', '1') #> '{body,raw}' AS raw,
       webhook.preview('desk-raw', 'raw.created', '1') ->> 'body_text' ~ '"id" :.*"id" :.*"id"' AS three_ids;
-- a custom object without the row's own id column gets the key as its id
SELECT webhook.create_profile('desk-raw-custom', 'http://127.0.0.1:9/raw', ARRAY['raw.created'], envelope => 'halo',
                              payload => 'custom', enabled => false) > 0 AS created;
SELECT webhook.set_payload_fields('desk-raw-custom', '[{"name": "doc", "column": "doc"}]');
SELECT webhook.preview('desk-raw-custom', 'raw.created', '1') #> '{body,raw}' AS custom_raw;
-- and one of a table keyed on id gets it too
CREATE TABLE desk_idkey (id int PRIMARY KEY, note text);
INSERT INTO desk_idkey VALUES (7, 'keyed on id');
SELECT webhook.define_event('idkey.created', 'desk_idkey', 'insert') > 0 AS defined;
SELECT webhook.create_profile('desk-idkey', 'http://127.0.0.1:9/idkey', ARRAY['idkey.created'], envelope => 'halo',
                              payload => 'custom', enabled => false) > 0 AS created;
SELECT webhook.set_payload_fields('desk-idkey', '[{"name": "note", "column": "note"}]');
SELECT webhook.preview('desk-idkey', 'idkey.created', '7') #> '{body,idkey}' AS custom_idkey;
SELECT webhook.drop_profile('desk-idkey');
SELECT webhook.drop_event('idkey.created');
DROP TABLE desk_idkey;
SELECT webhook.drop_profile('desk-raw');
SELECT webhook.drop_event('raw.created');
DROP TABLE desk_raw;
-- origins are printable ASCII
SET webhook.origin = 'crm-sÿnc';
SELECT webhook.create_profile('bad', 'http://127.0.0.1:9/', ARRAY['case.opened'], ignore_origins => '{crm-sÿnc}');

-- light logs (what they keep: TAP 023_light_logs)
SELECT webhook.alter_profile('desk-halo-renamed', log => 'Light');
SELECT log FROM webhook.profiles WHERE name = 'desk-halo-renamed';
SELECT webhook.create_profile('bad', 'http://127.0.0.1:9/', ARRAY['case.opened'], log => NULL);
SELECT webhook.create_profile('bad', 'http://127.0.0.1:9/', ARRAY['case.opened'], log => '');
SELECT webhook.create_profile('bad', 'http://127.0.0.1:9/', ARRAY['case.opened'], log => 'none');
SELECT webhook.create_profile('bad', 'http://127.0.0.1:9/', ARRAY['case.opened'], log => 'light''; DROP TABLE desk_case; --');
SELECT webhook.create_profile('bad', 'http://127.0.0.1:9/', ARRAY['case.opened'], log => repeat('l', 1000000));
SELECT webhook.create_profile('bad', 'http://127.0.0.1:9/', ARRAY['case.opened'], log => true);
SELECT webhook.alter_profile('desk-halo-renamed', log => 'verbose');
SELECT webhook.alter_profile('desk-halo-renamed', log => '');
SELECT count(*) AS bad_profiles, (SELECT log FROM webhook.profiles WHERE name = 'desk-halo-renamed') AS still
  FROM webhook.profiles WHERE name = 'bad';

SELECT webhook.drop_profile(name) FROM webhook.profiles WHERE name LIKE 'desk-%' ORDER BY name;
SELECT webhook.drop_event(event) FROM webhook.events WHERE event LIKE 'case.%' ORDER BY event;
DROP TABLE desk_note, desk_case;
