/* webhook--0.1.sql: outgoing webhooks for ticket changes */

\echo Use "CREATE EXTENSION webhook" to load this file. \quit

/*
 * Loading the library comes first: outside shared_preload_libraries it
 * refuses to load, and CREATE EXTENSION stops here with that message.
 */
CREATE FUNCTION webhook._start_worker() RETURNS void
    LANGUAGE c VOLATILE STRICT AS 'MODULE_PATHNAME', 'webhook_start_worker';
COMMENT ON FUNCTION webhook._start_worker() IS
    'Starts this database''s webhook worker when the transaction commits (internal).';

CREATE FUNCTION webhook._wake() RETURNS void
    LANGUAGE c VOLATILE STRICT AS 'MODULE_PATHNAME', 'webhook_wake';
COMMENT ON FUNCTION webhook._wake() IS
    'Wakes this database''s webhook worker when the transaction commits (internal).';

CREATE FUNCTION webhook._capture() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'webhook_capture';
COMMENT ON FUNCTION webhook._capture() IS
    'Capture trigger: queues an occurrence for each changed row that matches a binding (internal).';

------------------------------------------------------------------------------
-- Catalog
------------------------------------------------------------------------------

-- The event catalogue: a named kind of change to one table.
CREATE TABLE webhook.event (
    event_id     bigserial PRIMARY KEY,
    name         text NOT NULL UNIQUE,
    table_oid    regclass NOT NULL,
    operation    text NOT NULL CHECK (operation IN ('insert', 'update', 'delete')),
    title        text NOT NULL,
    object       text NOT NULL,
    key_columns  text[] NOT NULL,       -- the table's primary key, for object_id
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE webhook.event IS 'The event catalogue: one named kind of change to one table.';

/*
 * Whoever adds or changes an event, through define_event or by writing the
 * table, needs the TRIGGER privilege on its table, as CREATE TRIGGER does:
 * the capture triggers are created for them with the extension's rights.
 */
CREATE FUNCTION webhook._event_guard() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT has_table_privilege(NEW.table_oid, 'TRIGGER') THEN
        RAISE EXCEPTION 'permission denied for table %', NEW.table_oid
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Defining an event needs the TRIGGER privilege on the table, as CREATE TRIGGER does.';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER event_guard BEFORE INSERT OR UPDATE ON webhook.event
    FOR EACH ROW EXECUTE FUNCTION webhook._event_guard();

-- A webhook: where and how to send.
CREATE TABLE webhook.profile (
    profile_id      bigserial PRIMARY KEY,
    name            text NOT NULL UNIQUE,
    url             text NOT NULL,
    method          text NOT NULL DEFAULT 'POST',
    payload         text NOT NULL DEFAULT 'small',
    enabled         boolean NOT NULL DEFAULT true,
    max_attempts    int NOT NULL DEFAULT 8,
    retry_schedule  interval[],
    disabled_reason text,
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE webhook.profile IS 'Webhook profiles: URL, method, payload kind, retry policy.';

-- One event added to one profile.
CREATE TABLE webhook.binding (
    binding_id  bigserial PRIMARY KEY,
    profile_id  bigint NOT NULL REFERENCES webhook.profile ON DELETE CASCADE,
    event_id    bigint NOT NULL REFERENCES webhook.event,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX ON webhook.binding (event_id);
CREATE INDEX ON webhook.binding (profile_id);
COMMENT ON TABLE webhook.binding IS 'Bindings: one event added to one profile.';

/*
 * The capture queue: one row per changed row that matched at least one
 * binding, written in the transaction of the change.  The worker turns each
 * into one delivery per binding and deletes it.
 */
CREATE TABLE webhook.occurrence (
    occurrence_id bigserial PRIMARY KEY,
    captured_at   timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    table_oid     oid NOT NULL,
    operation     text NOT NULL,
    bindings      bigint[] NOT NULL,
    new_row       json,
    old_row       json
);
COMMENT ON TABLE webhook.occurrence IS 'Captured row changes not yet turned into deliveries.';

-- One HTTP request body to send, and where it stands.
CREATE TABLE webhook.delivery (
    delivery_id     bigserial PRIMARY KEY,
    profile_id      bigint NOT NULL,
    webhook_id      text NOT NULL,
    events          text[] NOT NULL,
    items           int NOT NULL,
    body            json NOT NULL,
    status          text NOT NULL
        CHECK (status IN ('pending', 'sending', 'delivered', 'retrying', 'failed', 'held')),
    attempts        int NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    captured_at     timestamptz,
    next_attempt_at timestamptz,
    last_attempt_at timestamptz,
    delivered_at    timestamptz,
    lease_until     timestamptz,
    response_status int,
    duration_ms     float8,
    error           text,
    response_body   text
);
CREATE INDEX delivery_due_idx ON webhook.delivery (next_attempt_at)
    WHERE status IN ('pending', 'retrying');
CREATE INDEX delivery_sending_idx ON webhook.delivery (delivery_id) WHERE status = 'sending';
CREATE INDEX ON webhook.delivery (profile_id);
COMMENT ON TABLE webhook.delivery IS 'Deliveries: one request body each, with its latest outcome.';

-- One HTTP request of a delivery.
CREATE TABLE webhook.attempt (
    delivery_id      bigint NOT NULL,
    attempt          int NOT NULL,
    started_at       timestamptz NOT NULL,
    duration_ms      float8,
    outcome          text NOT NULL
        CHECK (outcome IN ('response', 'timeout', 'connect_error', 'tls_error', 'error')),
    response_status  int,
    response_headers jsonb,
    response_body    text,
    error            text,
    request_headers  jsonb,
    PRIMARY KEY (delivery_id, attempt)
);
COMMENT ON TABLE webhook.attempt IS 'Attempts: every HTTP request, with its response or error.';

-- pg_dump keeps the catalogue, the queue and the history.
SELECT pg_catalog.pg_extension_config_dump('webhook.event', '');
SELECT pg_catalog.pg_extension_config_dump('webhook.event_event_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('webhook.profile', '');
SELECT pg_catalog.pg_extension_config_dump('webhook.profile_profile_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('webhook.binding', '');
SELECT pg_catalog.pg_extension_config_dump('webhook.binding_binding_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('webhook.occurrence', '');
SELECT pg_catalog.pg_extension_config_dump('webhook.occurrence_occurrence_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('webhook.delivery', '');
SELECT pg_catalog.pg_extension_config_dump('webhook.delivery_delivery_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('webhook.attempt', '');

------------------------------------------------------------------------------
-- Internal helpers
------------------------------------------------------------------------------

-- The object_id of a row: its primary key value, or an object for a composite key.
CREATE FUNCTION webhook._object_id(row_data json, key_columns text[]) RETURNS json
    LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE pg_catalog.cardinality(key_columns)
             WHEN 0 THEN NULL
             WHEN 1 THEN row_data -> key_columns[1]
             ELSE (SELECT pg_catalog.json_object_agg(k, row_data -> k)
                     FROM pg_catalog.unnest(key_columns) AS k)
           END
$$;

-- The columns that an update changed: {"col": {"old": ..., "new": ...}}.
CREATE FUNCTION webhook._changes(old_row json, new_row json) RETURNS json
    LANGUAGE sql IMMUTABLE AS $$
    SELECT COALESCE(pg_catalog.json_object_agg(n.key,
                        pg_catalog.json_build_object('old', o.value, 'new', n.value)),
                    '{}'::json)
      FROM pg_catalog.json_each(new_row) AS n
      JOIN pg_catalog.json_each(old_row) AS o ON o.key = n.key
     WHERE n.value::text IS DISTINCT FROM o.value::text
$$;

-- The envelope of one occurrence (DESIGN: "What is sent").
CREATE FUNCTION webhook._envelope(id text, profile text, binding_id bigint, event text,
                                  title text, object text, key_columns text[],
                                  captured_at timestamptz, operation text,
                                  row_data json, old_row json, new_row json)
    RETURNS json LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN operation = 'update' THEN
        pg_catalog.json_build_object(
            'id', id, 'profile', profile, 'binding_id', binding_id, 'event', event,
            'title', title, 'object_id', webhook._object_id(row_data, key_columns),
            'timestamp', pg_catalog.to_char(captured_at AT TIME ZONE 'UTC',
                                            'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
            object, row_data, 'changes', webhook._changes(old_row, new_row))
    ELSE
        pg_catalog.json_build_object(
            'id', id, 'profile', profile, 'binding_id', binding_id, 'event', event,
            'title', title, 'object_id', webhook._object_id(row_data, key_columns),
            'timestamp', pg_catalog.to_char(captured_at AT TIME ZONE 'UTC',
                                            'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
            object, row_data)
    END
$$;

/*
 * How long to wait before the next attempt, after `attempts` attempts:
 * the profile's schedule or the default one (5 s, 5 min, 30 min, 2 h, 5 h,
 * 10 h, 10 h), the last step repeating, with +-20% jitter.
 */
CREATE FUNCTION webhook._retry_delay(schedule interval[], attempts int) RETURNS interval
    LANGUAGE sql VOLATILE AS $$
    SELECT s[LEAST(GREATEST(attempts, 1), pg_catalog.cardinality(s))]
           * (0.8 + 0.4 * pg_catalog.random())
      FROM (SELECT COALESCE(schedule,
                   '{5 seconds, 5 minutes, 30 minutes, 2 hours, 5 hours, 10 hours, 10 hours}'::interval[])
            ) AS t(s)
$$;

/*
 * Attach, replace or remove the capture triggers of one table so that they
 * match its bindings: one AFTER ... FOR EACH STATEMENT trigger per
 * operation that has at least one binding, none otherwise.  The trigger's
 * query returns, for each changed row, the bindings it matches.
 */
CREATE FUNCTION webhook._sync_triggers(tbl regclass) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    op text;
    ids bigint[];
    query text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_class WHERE oid = tbl) THEN
        RETURN;
    END IF;
    FOREACH op IN ARRAY ARRAY['insert', 'update', 'delete'] LOOP
        SELECT array_agg(b.binding_id ORDER BY b.binding_id) INTO ids
          FROM webhook.binding b JOIN webhook.event e ON e.event_id = b.event_id
         WHERE e.table_oid = tbl AND e.operation = op;

        IF EXISTS (SELECT 1 FROM pg_trigger
                    WHERE tgrelid = tbl AND tgname = 'webhook_capture_' || op) THEN
            EXECUTE format('DROP TRIGGER %I ON %s', 'webhook_capture_' || op, tbl);
        END IF;
        CONTINUE WHEN ids IS NULL;

        query := CASE op
            WHEN 'insert' THEN format(
                'SELECT %L::int8[] AS bindings, pg_catalog.to_json(n) AS new_row, NULL::json AS old_row'
                ' FROM webhook_new AS n', ids)
            WHEN 'delete' THEN format(
                'SELECT %L::int8[] AS bindings, NULL::json AS new_row, pg_catalog.to_json(o) AS old_row'
                ' FROM webhook_old AS o', ids)
            ELSE format(
                -- the old and new transition tables hold the rows in the same order
                'SELECT %L::int8[] AS bindings, pg_catalog.to_json(n.r) AS new_row, pg_catalog.to_json(o.r) AS old_row'
                ' FROM (SELECT pg_catalog.row_number() OVER () AS i, n AS r FROM webhook_new AS n) AS n'
                ' JOIN (SELECT pg_catalog.row_number() OVER () AS i, o AS r FROM webhook_old AS o) AS o'
                ' ON o.i = n.i', ids)
        END;

        EXECUTE format(
            'CREATE TRIGGER %I AFTER %s ON %s REFERENCING %s FOR EACH STATEMENT'
            ' EXECUTE FUNCTION webhook._capture(%L, %L)',
            'webhook_capture_' || op, upper(op), tbl,
            CASE op WHEN 'insert' THEN 'NEW TABLE AS webhook_new'
                    WHEN 'delete' THEN 'OLD TABLE AS webhook_old'
                    ELSE 'OLD TABLE AS webhook_old NEW TABLE AS webhook_new' END,
            op, query);
    END LOOP;
END
$$;
COMMENT ON FUNCTION webhook._sync_triggers(regclass) IS
    'Makes the capture triggers of a table match its bindings (internal).';

------------------------------------------------------------------------------
-- Event catalogue
------------------------------------------------------------------------------

CREATE FUNCTION webhook.define_event(event text, on_table regclass, operation text,
                                     title text DEFAULT NULL, object text DEFAULT NULL)
    RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    op text := lower(btrim(operation));
    rel pg_class;
    keys text[];
    new_id bigint;
BEGIN
    IF event IS NULL OR event !~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$' OR length(event) > 100 THEN
        RAISE EXCEPTION 'invalid event name %', coalesce(quote_literal(event), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'An event name is lower-case words of letters, digits and "_", joined by dots, e.g. ticket.created.';
    END IF;
    IF on_table IS NULL THEN
        RAISE EXCEPTION 'on_table must not be NULL'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Name the table whose changes the event is about.';
    END IF;
    SELECT * INTO rel FROM pg_class WHERE oid = on_table;
    IF rel.relkind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '% is not a table', on_table
            USING ERRCODE = 'wrong_object_type', HINT = 'Events can be defined on ordinary and partitioned tables.';
    END IF;
    IF rel.relnamespace = 'webhook'::regnamespace THEN
        RAISE EXCEPTION 'events cannot be defined on the tables of the webhook extension'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Define events on your own tables.';
    END IF;
    IF rel.relnamespace IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
       OR rel.relnamespace::regnamespace::text LIKE 'pg\_toast%' THEN
        RAISE EXCEPTION 'events cannot be defined on system catalogs'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Define events on your own tables.';
    END IF;
    IF op IS NULL OR op NOT IN ('insert', 'update', 'delete') THEN
        RAISE EXCEPTION 'invalid operation %', coalesce(quote_literal(operation), 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'The operation is insert, update or delete.';
    END IF;
    IF object IS NOT NULL AND object !~ '^[A-Za-z_][A-Za-z0-9_]*$' THEN
        RAISE EXCEPTION 'invalid object key %', quote_literal(object)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The object key is the payload key of the row, e.g. ticket: letters, digits and "_".';
    END IF;
    IF EXISTS (SELECT 1 FROM webhook.event e WHERE e.name = define_event.event) THEN
        RAISE EXCEPTION 'event % already exists', quote_literal(event)
            USING ERRCODE = 'duplicate_object', HINT = 'Choose another name.';
    END IF;

    SELECT coalesce(array_agg(a.attname::text ORDER BY k.ord), '{}') INTO keys
      FROM pg_index i
      CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
      JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
     WHERE i.indrelid = on_table AND i.indisprimary;

    INSERT INTO webhook.event (name, table_oid, operation, title, object, key_columns)
    VALUES (event, on_table, op,
            coalesce(title, initcap(translate(event, '._', '  '))),
            coalesce(object, split_part(event, '.', 1)),
            keys)
    RETURNING event_id INTO new_id;
    RETURN new_id;
END
$$;
COMMENT ON FUNCTION webhook.define_event(text, regclass, text, text, text) IS
    'Adds an event to the catalogue: a named insert, update or delete on a table.';

CREATE VIEW webhook.events AS
SELECT e.name AS event, e.table_oid AS on_table, e.operation, e.title, e.object,
       e.key_columns,
       (SELECT count(*) FROM webhook.binding b WHERE b.event_id = e.event_id)::int AS bindings,
       e.created_at
  FROM webhook.event e;
COMMENT ON VIEW webhook.events IS 'The event catalogue.';

------------------------------------------------------------------------------
-- Profiles
------------------------------------------------------------------------------

CREATE FUNCTION webhook.create_profile(name text, url text, events text[])
    RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_id bigint;
    ev text;
    tbl regclass;
BEGIN
    IF name IS NULL OR btrim(name) = '' OR length(name) > 200 THEN
        RAISE EXCEPTION 'invalid profile name %', coalesce(quote_literal(name), 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'A profile name is 1 to 200 characters.';
    END IF;
    IF url IS NULL OR url !~* '^https?://[^/?#[:space:]@]+([/?#][^[:space:]]*)?$' OR length(url) > 2048 THEN
        RAISE EXCEPTION 'invalid URL %',
            coalesce(quote_literal(regexp_replace(left(url, 200), '[[:cntrl:]]', '?', 'g')), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The URL must be http:// or https:// with a host, without spaces or credentials, at most 2048 characters.';
    END IF;
    IF events IS NULL OR cardinality(events) = 0 THEN
        RAISE EXCEPTION 'a profile needs at least one event'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'List events of webhook.events, e.g. ARRAY[''ticket.created''].';
    END IF;
    FOREACH ev IN ARRAY events LOOP
        IF ev IS NULL OR NOT EXISTS (SELECT 1 FROM webhook.event e WHERE e.name = ev) THEN
            RAISE EXCEPTION 'event % does not exist', coalesce(quote_literal(ev), 'NULL')
                USING ERRCODE = 'undefined_object',
                      HINT = 'Define it with webhook.define_event, or pick one of webhook.events.';
        END IF;
    END LOOP;
    IF (SELECT count(DISTINCT e) FROM unnest(events) AS e) <> cardinality(events) THEN
        RAISE EXCEPTION 'an event is listed more than once'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'List each event once; bind it again with webhook.add_event for other conditions.';
    END IF;
    IF EXISTS (SELECT 1 FROM webhook.profile p WHERE p.name = create_profile.name) THEN
        RAISE EXCEPTION 'profile % already exists', quote_literal(name)
            USING ERRCODE = 'duplicate_object', HINT = 'Choose another name.';
    END IF;

    INSERT INTO webhook.profile (name, url) VALUES (name, url) RETURNING profile_id INTO new_id;
    INSERT INTO webhook.binding (profile_id, event_id)
    SELECT new_id, e.event_id
      FROM unnest(events) WITH ORDINALITY AS l(name, ord)
      JOIN webhook.event e ON e.name = l.name
     ORDER BY l.ord;

    FOR tbl IN SELECT DISTINCT e.table_oid FROM webhook.event e WHERE e.name = ANY (events) LOOP
        PERFORM webhook._sync_triggers(tbl);
    END LOOP;
    RETURN new_id;
END
$$;
COMMENT ON FUNCTION webhook.create_profile(text, text, text[]) IS
    'Creates a webhook profile that sends the listed events to the URL.';

CREATE VIEW webhook.profiles AS
SELECT p.name, p.url, p.method, p.payload, p.enabled, p.disabled_reason, p.max_attempts,
       p.retry_schedule,
       ARRAY(SELECT e.name FROM webhook.binding b JOIN webhook.event e ON e.event_id = b.event_id
              WHERE b.profile_id = p.profile_id ORDER BY b.binding_id) AS events,
       p.created_at
  FROM webhook.profile p;
COMMENT ON VIEW webhook.profiles IS 'Webhook profiles and their events.';

------------------------------------------------------------------------------
-- Deliveries
------------------------------------------------------------------------------

CREATE VIEW webhook.deliveries AS
SELECT d.delivery_id, p.name AS profile, d.events, d.items, d.status, d.attempts,
       d.created_at, d.last_attempt_at, d.next_attempt_at, d.response_status,
       d.duration_ms, d.error, d.body::jsonb AS request_body, d.response_body,
       d.webhook_id, d.captured_at, d.delivered_at
  FROM webhook.delivery d
  LEFT JOIN webhook.profile p ON p.profile_id = d.profile_id;
COMMENT ON VIEW webhook.deliveries IS 'One row per delivery, with its latest outcome.';

CREATE VIEW webhook.attempts AS
SELECT a.delivery_id, a.attempt, a.started_at, a.duration_ms, a.outcome, a.response_status,
       a.response_headers, a.response_body, a.error, a.request_headers
  FROM webhook.attempt a;
COMMENT ON VIEW webhook.attempts IS 'One row per HTTP request, with its response or error.';

------------------------------------------------------------------------------
-- Privileges: nothing for PUBLIC.  See README, "Privileges".
------------------------------------------------------------------------------

REVOKE ALL ON ALL TABLES IN SCHEMA webhook FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA webhook FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA webhook FROM PUBLIC;

SELECT webhook._start_worker();
