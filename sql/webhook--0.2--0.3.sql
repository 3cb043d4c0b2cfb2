/* webhook--0.2--0.3.sql: nothing can strand a delivery */

\echo Use "ALTER EXTENSION webhook UPDATE TO '0.3'" to load this file. \quit

/*
 * Version 0.3 gives a delivery's life one owner, the worker's queue
 * (src/queue.c, whose header has the state diagram):
 * - "held" is no longer written into deliveries: a delivery waits as
 *   pending or retrying, and is held while its profile is disabled, which
 *   the claim reads when it runs.  Disabling and enabling a profile change
 *   the profile row only, so no delivery made meanwhile can miss the
 *   change, and neither call waits for the worker's rows;
 * - a change that matches several bindings of one event in one profile is
 *   one delivery (the lowest binding's);
 * - webhook-ids are name-based UUIDs (RFC 9562, version 8);
 * - the purge of old history reads only what it deletes.
 */

-- The name-based UUID of a name: webhook-ids (the worker spells it out: NAME_UUID in queue.c).
CREATE FUNCTION webhook._name_uuid(name text) RETURNS uuid
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.encode(pg_catalog.set_byte(pg_catalog.set_byte(
               pg_catalog.substr(h, 1, 16), 6, (pg_catalog.get_byte(h, 6) & 15) | 128),
               8, (pg_catalog.get_byte(h, 8) & 63) | 128), 'hex')::uuid
      FROM pg_catalog.sha256(pg_catalog.convert_to(name, 'UTF8')) AS h
$$;
COMMENT ON FUNCTION webhook._name_uuid(text) IS
    'The name-based UUID (RFC 9562, version 8, SHA-256) of a name: webhook-ids (internal).';
-- a pure function, called by the batching settings' trigger and preview as their callers
REVOKE ALL ON FUNCTION webhook._name_uuid(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION webhook._name_uuid(text) TO PUBLIC;

------------------------------------------------------------------------------
-- Deliveries: held is read from the profile, never copied into rows
------------------------------------------------------------------------------

-- what was held waits again, due at once: it goes out when its profile is enabled
UPDATE webhook.delivery SET status = 'pending', next_attempt_at = COALESCE(next_attempt_at, pg_catalog.now())
 WHERE status = 'held';
ALTER TABLE webhook.delivery DROP CONSTRAINT delivery_status_check;
ALTER TABLE webhook.delivery ADD CONSTRAINT delivery_status_check
    CHECK (status IN ('pending', 'sending', 'delivered', 'retrying', 'failed'));
-- a claim is given back by the worker that made it, or by its successor at start
ALTER TABLE webhook.delivery DROP COLUMN lease_until;

-- finished deliveries by age: the purge reads only those it deletes
CREATE INDEX delivery_finished_idx ON webhook.delivery (created_at)
    WHERE status IN ('delivered', 'failed');

-- Stop a profile: what waits for it is held, never dropped.
CREATE OR REPLACE FUNCTION webhook._disable(id bigint, reason text) RETURNS void
    LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    UPDATE webhook.profile SET enabled = false, disabled_reason = reason WHERE profile_id = id;
$$;

CREATE OR REPLACE FUNCTION webhook.enable_profile(name text) RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    id bigint := webhook._profile_id(name);
BEGIN
    UPDATE webhook.profile p SET enabled = true, disabled_reason = NULL, consecutive_failures = 0
     WHERE p.profile_id = id;
    PERFORM webhook._wake();   -- what was held is due
END
$$;

-- A new delivery of a body, sent again under the same webhook-id.
CREATE OR REPLACE FUNCTION webhook._resend(source webhook.delivery) RETURNS bigint
    LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO webhook.delivery (profile_id, webhook_id, events, items, body, status,
                                  next_attempt_at, captured_at)
    VALUES (source.profile_id, source.webhook_id, source.events, source.items, source.body,
            'pending', pg_catalog.now(), source.captured_at)
    RETURNING delivery_id
$$;

/*
 * New batching settings apply to the batches that wait, too.  A new mode
 * sends the open batches at once, as they are (they were grouped by the
 * old one); a new wait moves their due time (first item + wait); a lower
 * batch_max_items cuts batches not yet sent into batches of that size, in
 * order, sent at once.
 */
CREATE OR REPLACE FUNCTION webhook._batching_changed() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m int := NEW.batch_max_items;
    g record;
    piece bigint;
BEGIN
    IF NEW.batching <> OLD.batching THEN
        UPDATE webhook.delivery d SET batch_key = NULL, next_attempt_at = now()
         WHERE d.profile_id = NEW.profile_id AND d.batch_key IS NOT NULL;
    ELSIF NEW.batch_wait <> OLD.batch_wait THEN
        UPDATE webhook.delivery d SET next_attempt_at = d.captured_at + NEW.batch_wait
         WHERE d.profile_id = NEW.profile_id AND d.batch_key IS NOT NULL;
    END IF;
    IF m < OLD.batch_max_items THEN
        FOR g IN SELECT d.delivery_id, d.webhook_id, d.items, d.captured_at
                   FROM webhook.delivery d
                  WHERE d.profile_id = NEW.profile_id AND d.body IS NULL AND d.items > m
                  ORDER BY d.delivery_id FOR UPDATE LOOP
            FOR k IN 1 .. (g.items - 1) / m LOOP
                INSERT INTO webhook.delivery (profile_id, webhook_id, events, items, status,
                                              next_attempt_at, captured_at)
                VALUES (NEW.profile_id, webhook._name_uuid(g.webhook_id || '/' || k)::text, '{}',
                        least(m, g.items - k * m), 'pending', now(), g.captured_at)
                RETURNING delivery_id INTO piece;
                UPDATE webhook.batch_item i SET delivery_id = piece, item_no = i.item_no - k * m
                 WHERE i.delivery_id = g.delivery_id AND i.item_no > k * m AND i.item_no <= (k + 1) * m;
                UPDATE webhook.delivery d
                   SET events = ARRAY(SELECT DISTINCT i.envelope ->> 'event' FROM webhook.batch_item i
                                       WHERE i.delivery_id = piece ORDER BY 1)
                 WHERE d.delivery_id = piece;
            END LOOP;
            UPDATE webhook.delivery d
               SET events = ARRAY(SELECT DISTINCT i.envelope ->> 'event' FROM webhook.batch_item i
                                   WHERE i.delivery_id = g.delivery_id ORDER BY 1)
             WHERE d.delivery_id = g.delivery_id;
        END LOOP;
        -- full now: no more items, and due
        UPDATE webhook.delivery d
           SET items = least(d.items, m), batch_key = NULL, next_attempt_at = now()
         WHERE d.profile_id = NEW.profile_id AND d.body IS NULL AND d.items >= m;
    END IF;
    PERFORM webhook._wake();
    RETURN NULL;
END
$$;

/*
 * A delivery waiting for a disabled profile is shown held, with no next
 * attempt: it goes out when the profile is enabled.
 */
CREATE OR REPLACE VIEW webhook.deliveries AS
SELECT d.delivery_id, p.name AS profile, d.events, d.items,
       CASE WHEN d.status IN ('pending', 'retrying') AND NOT p.enabled THEN 'held' ELSE d.status END
         AS status,
       d.attempts, d.created_at, d.last_attempt_at,
       CASE WHEN p.enabled THEN d.next_attempt_at END AS next_attempt_at,
       d.response_status, d.duration_ms, d.error,
       -- a batch that waits shows the items it has so far
       webhook._display_jsonb(COALESCE(d.body, (SELECT pg_catalog.json_agg(i.envelope ORDER BY i.item_no)
                                                  FROM webhook.batch_item i WHERE i.delivery_id = d.delivery_id)))
         AS request_body,
       CASE WHEN pg_catalog.has_table_privilege('webhook.profile', 'SELECT') THEN d.response_body
            ELSE webhook._scrub(d.response_body, s.secrets) END AS response_body,
       d.webhook_id, d.captured_at, d.delivered_at
  FROM webhook.delivery d
  LEFT JOIN webhook.profile p ON p.profile_id = d.profile_id
  LEFT JOIN LATERAL (
       SELECT ARRAY[p.password, p.secret, pg_catalog.substr(p.secret, 7),
                    pg_catalog.translate(pg_catalog.encode(pg_catalog.convert_to(
                        COALESCE(p.username, '') || ':' || p.password, 'UTF8'), 'base64'), E'\n', '')]
              || ARRAY(SELECT h.value #>> '{}' FROM pg_catalog.jsonb_each(p.headers) AS h
                        WHERE NOT pg_catalog.lower(h.key) = ANY (pg_catalog.lower(p.public_headers::text)::text[]))
              || ARRAY(SELECT m[1] FROM pg_catalog.regexp_matches(p.url, '[?&][^=&#]*=([^&#]*)', 'g') AS m)
                AS secrets
        WHERE d.response_body IS NOT NULL AND NOT pg_catalog.has_table_privilege('webhook.profile', 'SELECT')
       ) AS s ON true;

CREATE OR REPLACE VIEW webhook.stats AS
SELECT p.name AS profile, p.enabled,
       (COALESCE(sum(d.items) FILTER (WHERE d.status IN ('pending', 'retrying')), 0)
        + (SELECT COALESCE(sum(o.row_count * pg_catalog.cardinality(o.bindings)), 0)
             FROM webhook.occurrence o
            WHERE o.bindings && ARRAY(SELECT b.binding_id FROM webhook.binding b
                                       WHERE b.profile_id = p.profile_id)))::bigint AS queued,
       count(*) FILTER (WHERE d.status IN ('pending', 'retrying') AND NOT p.enabled)::bigint AS held,
       count(*) FILTER (WHERE d.status = 'sending')::bigint AS in_flight,
       count(*) FILTER (WHERE d.status = 'delivered')::bigint AS delivered,
       count(*) FILTER (WHERE d.status = 'retrying' AND p.enabled)::bigint AS retrying,
       count(*) FILTER (WHERE d.status = 'failed')::bigint AS failed,
       round((pg_catalog.percentile_cont(0.5) WITHIN GROUP (
                 ORDER BY pg_catalog.date_part('epoch', d.delivered_at - d.captured_at) * 1000)
              FILTER (WHERE d.status = 'delivered' AND d.delivered_at > pg_catalog.now() - interval '1 hour')
             )::numeric, 1) AS p50_ms,
       round((pg_catalog.percentile_cont(0.95) WITHIN GROUP (
                 ORDER BY pg_catalog.date_part('epoch', d.delivered_at - d.captured_at) * 1000)
              FILTER (WHERE d.status = 'delivered' AND d.delivered_at > pg_catalog.now() - interval '1 hour')
             )::numeric, 1) AS p95_ms,
       p.consecutive_failures, p.disabled_reason
  FROM webhook.profile p
  LEFT JOIN webhook.delivery d ON d.profile_id = p.profile_id
 GROUP BY p.profile_id;

-- A batching profile's preview has the webhook-id its batch of one would have.
CREATE OR REPLACE FUNCTION webhook.preview(profile text, event text, row_pk text) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SET TimeZone = 'UTC' SET bytea_output = 'hex'
    SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p webhook.profile;
    ev webhook.event;
    binding bigint;
    key_sql text;
    pk_object jsonb;
    row_data json;
    id text := pg_catalog.gen_random_uuid()::text;
    envelope json;
    body text;
    webhook_id text;
BEGIN
    SELECT * INTO p FROM webhook.profile x WHERE x.profile_id = webhook._profile_id(profile);
    SELECT * INTO ev FROM webhook.event e WHERE e.name = preview.event;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'event % does not exist', webhook._quoted(event)
            USING ERRCODE = 'undefined_object', HINT = 'Pick one of webhook.events.';
    END IF;
    SELECT pg_catalog.min(b.binding_id) INTO binding FROM webhook.binding b
     WHERE b.profile_id = p.profile_id AND b.event_id = ev.event_id;
    IF binding IS NULL THEN
        RAISE EXCEPTION 'profile % does not send event %', quote_literal(p.name), quote_literal(ev.name)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Its events are in webhook.bindings; add this one with webhook.add_event(%L, %L).',
                                p.name, ev.name);
    END IF;
    IF row_pk IS NULL THEN
        RAISE EXCEPTION 'row_pk must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = format('Pass the primary key of a row of %s as text, e.g. ''42''.', ev.table_oid);
    END IF;
    IF pg_catalog.cardinality(ev.key_columns) = 0 THEN
        RAISE EXCEPTION 'table % has no primary key', ev.table_oid
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'preview finds the row by its primary key: add one to the table.';
    END IF;
    -- one key column: row_pk is its value; several: a JSON object of them
    IF pg_catalog.cardinality(ev.key_columns) > 1 THEN
        BEGIN
            pk_object := row_pk::jsonb;
        EXCEPTION WHEN invalid_text_representation THEN
            pk_object := NULL;
        END;
        IF pk_object IS NULL OR pg_catalog.jsonb_typeof(pk_object) <> 'object'
           OR NOT pk_object ?& ev.key_columns THEN
            RAISE EXCEPTION 'row_pk of table % must be a JSON object of its key columns', ev.table_oid
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = pg_catalog.format('Give each of %s, e.g. %s.',
                                               pg_catalog.array_to_string(ev.key_columns, ', '),
                                               (SELECT pg_catalog.jsonb_object_agg(k, '...')
                                                  FROM pg_catalog.unnest(ev.key_columns) AS k));
        END IF;
    END IF;
    SELECT pg_catalog.string_agg(pg_catalog.format('t.%I = CAST(%s AS %s)', a.attname,
                                     CASE WHEN pg_catalog.cardinality(ev.key_columns) = 1 THEN '$1'
                                          ELSE pg_catalog.format('($1::jsonb ->> %L)', a.attname) END,
                                     pg_catalog.format_type(a.atttypid, a.atttypmod)), ' AND ')
      INTO key_sql
      FROM pg_catalog.unnest(ev.key_columns) AS k(name)
      JOIN pg_catalog.pg_attribute a ON a.attrelid = ev.table_oid AND a.attname = k.name;
    BEGIN
        EXECUTE pg_catalog.format('SELECT pg_catalog.to_json(t) FROM %s AS t WHERE %s', ev.table_oid, key_sql)
           INTO row_data USING row_pk;
    EXCEPTION WHEN data_exception THEN
        RAISE EXCEPTION 'row_pk % is not a key of table %', webhook._quoted(row_pk),
                        ev.table_oid
            USING ERRCODE = 'invalid_parameter_value', DETAIL = pg_catalog.left(SQLERRM, 300),
                  HINT = CASE WHEN pg_catalog.cardinality(ev.key_columns) = 1
                              THEN pg_catalog.format('Pass the value of %s.%I as text.', ev.table_oid, ev.key_columns[1])
                              ELSE pg_catalog.format('The key has several columns: pass a JSON object of %s.',
                                                     pg_catalog.array_to_string(ev.key_columns, ', ')) END;
    END;
    IF row_data IS NULL THEN
        RAISE EXCEPTION 'table % has no row with key %', ev.table_oid, webhook._quoted(row_pk)
            USING ERRCODE = 'no_data_found', HINT = 'Pass the primary key of an existing row.';
    END IF;
    envelope := webhook._render(id, p.name, p.payload, p.payload_fields, binding, ev.name, ev.title,
                                ev.object, ev.table_oid, ev.key_columns, pg_catalog.clock_timestamp(),
                                ev.operation, row_data,
                                CASE WHEN ev.operation = 'update' THEN row_data END,
                                CASE WHEN ev.operation = 'update' THEN row_data END,
                                ev.parent_object, ev.parent_table, ev.parent_column, ev.parent_key,
                                ev.created_by);
    IF p.batching = 'none' THEN
        body := envelope::text;
        webhook_id := id;
    ELSE
        -- an array of one, put together as the worker puts a batch together
        SELECT pg_catalog.json_agg(v.e)::text INTO body FROM (VALUES (envelope)) AS v(e);
        webhook_id := webhook._name_uuid('batch/' || id)::text;
    END IF;
    RETURN webhook._request(p.profile_id, webhook_id, body)::jsonb
           || pg_catalog.jsonb_build_object('body', body::jsonb, 'body_text', body);
END
$$;
COMMENT ON FUNCTION webhook.preview(text, text, text) IS
    'The request (method, url, headers with signature, body) an occurrence of this row would make now; sends nothing.';

------------------------------------------------------------------------------
-- Dump and restore: the catalogue comes back as it was dumped
------------------------------------------------------------------------------

/*
 * Whether the row being written comes from a COPY into the extension's
 * tables by a superuser's session, as a superuser: pg_restore, or psql
 * running a plain dump (both write the rows of these tables with COPY).  Such rows are taken as they
 * are: checked when they were first written, their authors kept, and the
 * capture triggers and condition functions they imply restored from the
 * same dump.  Checking them again here would read tables whose foreign
 * keys are not restored yet, make the restoring role their author, and
 * make triggers that the dump then makes again.
 */
CREATE FUNCTION webhook._restoring() RETURNS boolean
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT COALESCE(pg_catalog.current_query() ~* '^\s*COPY\s+webhook\.'
                    AND (SELECT pg_catalog.bool_and(r.rolsuper) FROM pg_catalog.pg_roles r
                          WHERE r.rolname IN (CURRENT_USER, SESSION_USER)), false)
$$;
COMMENT ON FUNCTION webhook._restoring() IS
    'Whether the current statement is a superuser''s COPY into the extension''s tables, as a restore does (internal).';
-- every writer of the catalogue calls it, in the WHEN of the guards
REVOKE ALL ON FUNCTION webhook._restoring() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION webhook._restoring() TO PUBLIC;

DROP TRIGGER event_guard ON webhook.event;
CREATE TRIGGER event_guard BEFORE INSERT OR UPDATE ON webhook.event
    FOR EACH ROW WHEN (NOT webhook._restoring()) EXECUTE FUNCTION webhook._event_guard();
DROP TRIGGER event_changed ON webhook.event;
CREATE TRIGGER event_changed AFTER UPDATE ON webhook.event
    FOR EACH ROW WHEN (NOT webhook._restoring()) EXECUTE FUNCTION webhook._catalog_changed();
DROP TRIGGER binding_guard ON webhook.binding;
CREATE TRIGGER binding_guard BEFORE INSERT OR UPDATE ON webhook.binding
    FOR EACH ROW WHEN (NOT webhook._restoring()) EXECUTE FUNCTION webhook._binding_guard();
DROP TRIGGER binding_changed ON webhook.binding;
CREATE TRIGGER binding_changed AFTER INSERT OR UPDATE OR DELETE ON webhook.binding
    FOR EACH ROW WHEN (NOT webhook._restoring()) EXECUTE FUNCTION webhook._catalog_changed();
DROP TRIGGER profile_guard ON webhook.profile;
CREATE TRIGGER profile_guard BEFORE INSERT OR UPDATE ON webhook.profile
    FOR EACH ROW WHEN (NOT webhook._restoring()) EXECUTE FUNCTION webhook._profile_guard();

/*
 * A delivery restored while it was on the wire when the dump was taken is
 * no request of this server's worker: it waits again.
 */
CREATE FUNCTION webhook._restored_in_flight() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    NEW.status := 'pending';
    NEW.next_attempt_at := pg_catalog.now();
    NEW.attempts := GREATEST(NEW.attempts - 1, 0);
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION webhook._restored_in_flight() FROM PUBLIC;
CREATE TRIGGER restored_in_flight BEFORE INSERT ON webhook.delivery
    FOR EACH ROW WHEN (NEW.status = 'sending') EXECUTE FUNCTION webhook._restored_in_flight();

-- the queue names its table, so that a restore (into other oids) keeps it
DROP VIEW webhook._occurrence_rows;
ALTER TABLE webhook.occurrence ALTER COLUMN table_oid TYPE regclass;
CREATE VIEW webhook._occurrence_rows AS
SELECT o.occurrence_id, r.ord AS row_number, o.captured_at, o.table_oid, o.operation, o.bindings,
       r.new_row, r.old_row, o.capture_error
  FROM webhook.occurrence o
 CROSS JOIN LATERAL ROWS FROM (pg_catalog.json_array_elements(o.new_rows),
                               pg_catalog.json_array_elements(o.old_rows))
       WITH ORDINALITY AS r(new_row, old_row, ord);
REVOKE ALL ON webhook._occurrence_rows FROM PUBLIC;

/*
 * A binding's profile and event, held by triggers rather than foreign
 * keys: pg_restore -j loads the extension's tables side by side, bindings
 * before the profiles they name.  A binding written names a profile and an
 * event that exist (locked, as a foreign key would lock them, until it
 * commits); a profile deleted takes its bindings with it; an event with
 * bindings cannot be deleted.  Like a foreign key's checks, they run as
 * the tables' owner: they read and lock by id, and run nothing else.
 */
ALTER TABLE webhook.binding DROP CONSTRAINT binding_profile_id_fkey,
                            DROP CONSTRAINT binding_event_id_fkey;

CREATE FUNCTION webhook._binding_refs() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM FROM webhook.profile p WHERE p.profile_id = NEW.profile_id FOR KEY SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'profile % does not exist', NEW.profile_id
            USING ERRCODE = 'foreign_key_violation', HINT = 'See webhook.profiles.';
    END IF;
    PERFORM FROM webhook.event e WHERE e.event_id = NEW.event_id FOR KEY SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'event % does not exist', NEW.event_id
            USING ERRCODE = 'foreign_key_violation', HINT = 'See webhook.events.';
    END IF;
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION webhook._binding_refs() FROM PUBLIC;
CREATE TRIGGER binding_refs BEFORE INSERT OR UPDATE OF profile_id, event_id ON webhook.binding
    FOR EACH ROW WHEN (NOT webhook._restoring()) EXECUTE FUNCTION webhook._binding_refs();

CREATE FUNCTION webhook._profile_deleted() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM webhook.binding b WHERE b.profile_id = OLD.profile_id;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION webhook._profile_deleted() FROM PUBLIC;
CREATE TRIGGER profile_deleted AFTER DELETE ON webhook.profile
    FOR EACH ROW EXECUTE FUNCTION webhook._profile_deleted();

CREATE FUNCTION webhook._event_deleted() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT FROM webhook.binding b WHERE b.event_id = OLD.event_id) THEN
        RAISE EXCEPTION 'event % is still bound to a profile', quote_literal(OLD.name)
            USING ERRCODE = 'foreign_key_violation',
                  HINT = 'Remove it from its profiles first, or use webhook.drop_event(..., cascade => true).';
    END IF;
    RETURN OLD;
END
$$;
REVOKE ALL ON FUNCTION webhook._event_deleted() FROM PUBLIC;
CREATE TRIGGER event_deleted BEFORE DELETE ON webhook.event
    FOR EACH ROW EXECUTE FUNCTION webhook._event_deleted();

/*
 * What a binding points at stays what it pointed at: an event's or a
 * profile's id never changes, and a new one never takes the id of one
 * that bindings still name (left by a delete that a transaction of an
 * older snapshot made).  Otherwise a role could move another role's
 * binding, and its condition, onto a table or a receiver of its own.
 */
CREATE FUNCTION webhook._keep_ids() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    id bigint := (pg_catalog.to_jsonb(NEW) ->> TG_ARGV[0])::bigint;   -- the table's id column
BEGIN
    IF TG_OP = 'UPDATE' AND id IS DISTINCT FROM (pg_catalog.to_jsonb(OLD) ->> TG_ARGV[0])::bigint THEN
        RAISE EXCEPTION 'the id of a webhook % cannot change', TG_TABLE_NAME
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Make a new one, and move the bindings with webhook.add_event and webhook.remove_event.';
    END IF;
    IF TG_OP = 'INSERT' AND EXISTS (
           SELECT FROM webhook.binding b
            WHERE CASE TG_ARGV[0] WHEN 'event_id' THEN b.event_id ELSE b.profile_id END = id) THEN
        RAISE EXCEPTION 'bindings still name webhook % %', TG_TABLE_NAME, id
            USING ERRCODE = 'unique_violation', HINT = 'Let the id be given by its sequence.';
    END IF;
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION webhook._keep_ids() FROM PUBLIC;
CREATE TRIGGER keep_ids BEFORE INSERT OR UPDATE OF event_id ON webhook.event
    FOR EACH ROW WHEN (NOT webhook._restoring()) EXECUTE FUNCTION webhook._keep_ids('event_id');
CREATE TRIGGER keep_ids BEFORE INSERT OR UPDATE OF profile_id ON webhook.profile
    FOR EACH ROW WHEN (NOT webhook._restoring()) EXECUTE FUNCTION webhook._keep_ids('profile_id');
