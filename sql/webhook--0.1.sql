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

-- A value quoted for an error message: NULL, or at most 100 characters of it.
CREATE FUNCTION webhook._quoted(value text) RETURNS text
    LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN value IS NULL THEN 'NULL'
                WHEN length(value) > 100 THEN quote_literal(left(value, 100)) || '...'
                ELSE quote_literal(value) END
$$;

-- The event catalogue: a named kind of change to one table.
CREATE TABLE webhook.event (
    event_id      bigserial PRIMARY KEY,
    name          text NOT NULL UNIQUE,
    table_oid     regclass NOT NULL,
    operation     text NOT NULL CHECK (operation IN ('insert', 'update', 'delete')),
    columns       text[],               -- update: fires only when one of them changed
    condition     text,                 -- SQL over new and old, run with created_by's rights
    title         text NOT NULL,
    object        text NOT NULL,
    parent_object text,                 -- the payload key of the parent row (ticket)
    parent_table  regclass,
    parent_column text,                 -- the column of this table that holds the parent's key
    parent_key    text,                 -- the parent table's key column
    key_columns   text[] NOT NULL,      -- the table's primary key, for object_id
    created_by    regrole NOT NULL,
    search_path   text NOT NULL,        -- the search_path the condition was written for
    created_at    timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE webhook.event IS 'The event catalogue: one named kind of change to one table.';

-- A webhook: where and how to send.
CREATE TABLE webhook.profile (
    profile_id      bigserial PRIMARY KEY,
    name            text NOT NULL UNIQUE,
    url             text NOT NULL,
    method          text NOT NULL DEFAULT 'POST',
    auth            text NOT NULL DEFAULT 'none',
    username        text,
    password        text,                   -- basic: the password; bearer: the token
    headers         jsonb NOT NULL DEFAULT '{}',
    payload         text NOT NULL DEFAULT 'small',
    payload_fields  jsonb NOT NULL DEFAULT '[]',  -- custom: set by set_payload_fields
    batching        text NOT NULL DEFAULT 'none',
    batch_wait      interval NOT NULL DEFAULT '10 seconds',
    batch_max_items int NOT NULL DEFAULT 100,
    secret          text NOT NULL,          -- Standard Webhooks signing secret, whsec_...
    enabled         boolean NOT NULL DEFAULT true,
    max_attempts    int NOT NULL DEFAULT 8,
    retry_schedule  interval[],
    timeout         interval,
    disabled_reason text,
    consecutive_failures int NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE webhook.profile IS 'Webhook profiles: URL, method, authentication, headers, payload, batching, secret, retry policy.';

CREATE FUNCTION webhook._new_secret() RETURNS text
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'webhook_new_secret';
COMMENT ON FUNCTION webhook._new_secret() IS 'A new whsec_ signing secret of 32 random bytes (internal).';

/*
 * Every profile, however written, is checked here: a direct write to the
 * table is held to the same rules as create_profile.
 */
CREATE FUNCTION webhook._profile_guard() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    h record;
    key_bytes int;
BEGIN
    IF NEW.name IS NULL OR btrim(NEW.name) = '' OR length(NEW.name) > 200 THEN
        RAISE EXCEPTION 'invalid profile name %', webhook._quoted(NEW.name)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'A profile name is 1 to 200 characters.';
    END IF;
    IF NEW.url IS NULL OR NEW.url !~* '^https?://[^/?#[:space:]@]+([/?#][^[:space:]]*)?$' OR length(NEW.url) > 2048 THEN
        RAISE EXCEPTION 'invalid URL %',
            coalesce(quote_literal(regexp_replace(left(NEW.url, 200), '[[:cntrl:]]', '?', 'g')), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The URL must be http:// or https:// with a host, without spaces or credentials, at most 2048 characters.';
    END IF;
    IF EXISTS (SELECT 1 FROM webhook.profile p
                WHERE p.name = NEW.name AND p.profile_id <> NEW.profile_id) THEN
        RAISE EXCEPTION 'profile % already exists', quote_literal(NEW.name)
            USING ERRCODE = 'duplicate_object', HINT = 'Choose another name.';
    END IF;
    NEW.method := upper(NEW.method);
    IF NEW.method IS NULL OR NEW.method NOT IN ('POST', 'PUT', 'PATCH') THEN
        RAISE EXCEPTION 'invalid method %', webhook._quoted(NEW.method)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'The method is POST, PUT or PATCH.';
    END IF;
    NEW.auth := lower(NEW.auth);
    IF NEW.auth IS NULL OR NEW.auth NOT IN ('none', 'basic', 'bearer') THEN
        RAISE EXCEPTION 'invalid auth %', webhook._quoted(NEW.auth)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'auth is none, basic (username and password) or bearer (password is the token).';
    END IF;
    IF NEW.auth = 'basic' AND (NEW.username IS NULL OR NEW.password IS NULL OR NEW.username LIKE '%:%') THEN
        RAISE EXCEPTION 'basic authentication needs a username (without ":") and a password'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass username => ... and password => ....';
    END IF;
    IF NEW.auth = 'bearer' AND (NEW.password IS NULL OR NEW.password = '' OR NEW.username IS NOT NULL) THEN
        RAISE EXCEPTION 'bearer authentication needs the token as password, and no username'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass password => ''<token>''.';
    END IF;
    IF NEW.auth = 'none' AND (NEW.username IS NOT NULL OR NEW.password IS NOT NULL) THEN
        RAISE EXCEPTION 'a username or password needs auth basic or bearer'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass auth => ''basic'' or auth => ''bearer''.';
    END IF;
    IF NEW.username ~ '[[:cntrl:]]' OR NEW.password ~ '[[:cntrl:]]' THEN
        RAISE EXCEPTION 'the username and password must not contain control characters'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Remove line breaks and other control characters.';
    END IF;
    IF NEW.headers IS NULL OR jsonb_typeof(NEW.headers) <> 'object' THEN
        RAISE EXCEPTION 'headers must be a JSON object of names and values'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'For example: {"X-Team": "service-desk"}.';
    END IF;
    FOR h IN SELECT key, value FROM jsonb_each(NEW.headers) LOOP
        IF h.key !~ '^[!#$%&''*+.^_`|~0-9A-Za-z-]{1,100}$' THEN
            RAISE EXCEPTION 'invalid header name %',
                quote_literal(regexp_replace(left(h.key, 100), '[[:cntrl:]]', '?', 'g'))
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'A header name is 1 to 100 letters, digits and !#$%&''*+.^_`|~-.';
        END IF;
        IF lower(h.key) IN ('content-type', 'content-length', 'host', 'user-agent', 'authorization',
                            'webhook-id', 'webhook-timestamp', 'webhook-signature', 'transfer-encoding',
                            'connection', 'expect', 'te', 'trailer', 'upgrade', 'keep-alive') THEN
            RAISE EXCEPTION 'header % is set by webhook itself', quote_literal(h.key)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Use auth for Authorization and webhook.user_agent for User-Agent; the others cannot be set.';
        END IF;
        IF jsonb_typeof(h.value) <> 'string' OR h.value #>> '{}' ~ '[[:cntrl:]]'
           OR length(h.value #>> '{}') > 4096 THEN
            RAISE EXCEPTION 'invalid value for header %', quote_literal(h.key)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'A header value is a JSON string of at most 4096 characters, without line breaks or other control characters.';
        END IF;
    END LOOP;
    IF (SELECT count(DISTINCT lower(k)) FROM jsonb_object_keys(NEW.headers) AS k)
       <> (SELECT count(*) FROM jsonb_object_keys(NEW.headers)) THEN
        RAISE EXCEPTION 'a header is given twice'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Header names are case-insensitive: give each once.';
    END IF;
    NEW.batching := lower(NEW.batching);
    NEW.payload := lower(NEW.payload);
    IF NEW.batching IS NULL OR NEW.batching NOT IN ('none', 'same_event', 'same_event_type', 'any_event') THEN
        RAISE EXCEPTION 'invalid batching %', webhook._quoted(NEW.batching)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'batching is none, same_event (per binding), same_event_type (per event) or any_event.';
    END IF;
    IF NEW.batch_wait IS NULL OR NEW.batch_wait < '0' OR NEW.batch_wait > '24 hours' THEN
        RAISE EXCEPTION 'batch_wait must be between 0 and 24 hours'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'The default is 10 seconds.';
    END IF;
    IF NEW.batch_max_items IS NULL OR NEW.batch_max_items NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'batch_max_items must be between 1 and 10000'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'The default is 100.';
    END IF;
    IF NEW.batching <> 'none' AND NEW.method <> 'POST' THEN
        RAISE EXCEPTION 'batching needs the POST method, not %', NEW.method
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A batch is a new list of changes: it is posted, not put or patched.',
                  HINT = 'Use method => ''POST'', or batching => ''none''.';
    END IF;
    IF NEW.batching <> 'none' AND NEW.payload = 'full' THEN
        RAISE EXCEPTION 'batching is not available with the full payload'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A full payload holds a change with its linked rows, read when it is sent: it goes out one change at a time.',
                  HINT = 'Use payload small, event_only or custom, or batching => ''none''.';
    END IF;
    IF NEW.payload IS NULL OR NEW.payload NOT IN ('small', 'full', 'event_only', 'custom') THEN
        RAISE EXCEPTION 'invalid payload %', webhook._quoted(NEW.payload)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'payload is small (the row), full (the row and its linked rows), event_only or custom (see webhook.set_payload_fields).';
    END IF;
    IF NEW.payload = 'custom' AND (TG_OP = 'INSERT' OR NEW.payload IS DISTINCT FROM OLD.payload
                                   OR NEW.payload_fields IS DISTINCT FROM OLD.payload_fields) THEN
        NEW.payload_fields := webhook._check_payload_fields(NEW.profile_id, NEW.payload_fields);
    END IF;
    IF NEW.secret IS NULL THEN
        NEW.secret := webhook._new_secret();
    END IF;
    BEGIN
        key_bytes := length(decode(substr(NEW.secret, 7), 'base64'));
    EXCEPTION WHEN OTHERS THEN
        key_bytes := 0;
    END;
    IF NEW.secret !~ '^whsec_[A-Za-z0-9+/]+={0,2}$' OR key_bytes NOT BETWEEN 24 AND 64 THEN
        RAISE EXCEPTION 'invalid secret'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A secret is whsec_ followed by the base64 of 24 to 64 random bytes; leave it NULL to have one made.';
    END IF;
    IF NEW.max_attempts IS NULL OR NEW.max_attempts NOT BETWEEN 1 AND 100 THEN
        RAISE EXCEPTION 'max_attempts must be between 1 and 100'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'The default is 8.';
    END IF;
    IF NEW.retry_schedule IS NOT NULL AND (
           cardinality(NEW.retry_schedule) NOT BETWEEN 1 AND 100
           OR EXISTS (SELECT 1 FROM unnest(NEW.retry_schedule) AS w
                       WHERE w IS NULL OR w < '0' OR w > '7 days')) THEN
        RAISE EXCEPTION 'retry_schedule must list 1 to 100 waits of 0 to 7 days'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'For example: ''{10 seconds, 1 minute, 10 minutes}''; the last wait repeats.';
    END IF;
    IF NEW.timeout IS NOT NULL AND (NEW.timeout < '100 milliseconds' OR NEW.timeout > '1 hour') THEN
        RAISE EXCEPTION 'timeout must be between 100 milliseconds and 1 hour'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'NULL uses webhook.request_timeout.';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER profile_guard BEFORE INSERT OR UPDATE ON webhook.profile
    FOR EACH ROW EXECUTE FUNCTION webhook._profile_guard();

/*
 * New batching settings apply to the batches that wait, too.  A new mode
 * sends the open batches at once, as they are (they were grouped by the
 * old one); a new wait moves their due time (first item + wait); a lower
 * batch_max_items cuts batches not yet sent into batches of that size, in
 * order, sent at once.
 */
CREATE FUNCTION webhook._batching_changed() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m int := NEW.batch_max_items;
    g record;
    piece bigint;
BEGIN
    IF NEW.batching <> OLD.batching THEN
        UPDATE webhook.delivery d
           SET batch_key = NULL, next_attempt_at = CASE WHEN d.status = 'pending' THEN now() END
         WHERE d.profile_id = NEW.profile_id AND d.batch_key IS NOT NULL;
    ELSIF NEW.batch_wait <> OLD.batch_wait THEN
        UPDATE webhook.delivery d SET next_attempt_at = d.captured_at + NEW.batch_wait
         WHERE d.profile_id = NEW.profile_id AND d.batch_key IS NOT NULL AND d.status = 'pending';
    END IF;
    IF m < OLD.batch_max_items THEN
        FOR g IN SELECT d.delivery_id, d.webhook_id, d.items, d.status, d.captured_at
                   FROM webhook.delivery d
                  WHERE d.profile_id = NEW.profile_id AND d.body IS NULL AND d.items > m
                  ORDER BY d.delivery_id FOR UPDATE LOOP
            FOR k IN 1 .. (g.items - 1) / m LOOP
                INSERT INTO webhook.delivery (profile_id, webhook_id, events, items, status,
                                              next_attempt_at, captured_at)
                VALUES (NEW.profile_id, md5(g.webhook_id || '/' || k)::uuid::text, '{}',
                        least(m, g.items - k * m), g.status,
                        CASE WHEN g.status = 'pending' THEN now() END, g.captured_at)
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
           SET items = least(d.items, m), batch_key = NULL,
               next_attempt_at = CASE WHEN d.status = 'pending' THEN now() END
         WHERE d.profile_id = NEW.profile_id AND d.body IS NULL AND d.items >= m;
    END IF;
    PERFORM webhook._wake();
    RETURN NULL;
END
$$;
CREATE TRIGGER batching_changed AFTER UPDATE OF batching, batch_wait, batch_max_items ON webhook.profile
    FOR EACH ROW WHEN (NEW.batching IS DISTINCT FROM OLD.batching
                       OR NEW.batch_wait IS DISTINCT FROM OLD.batch_wait
                       OR NEW.batch_max_items IS DISTINCT FROM OLD.batch_max_items)
    EXECUTE FUNCTION webhook._batching_changed();

-- One event added to one profile, with its own conditions.
CREATE TABLE webhook.binding (
    binding_id    bigserial PRIMARY KEY,
    profile_id    bigint NOT NULL REFERENCES webhook.profile ON DELETE CASCADE,
    event_id      bigint NOT NULL REFERENCES webhook.event,
    conditions    jsonb NOT NULL DEFAULT '[]',
    condition_sql text,
    compiled      text,                 -- conditions as SQL, set by the guard trigger
    created_by    regrole NOT NULL,
    search_path   text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX ON webhook.binding (event_id);
CREATE INDEX ON webhook.binding (profile_id);
COMMENT ON TABLE webhook.binding IS 'Bindings: one event added to one profile, with its conditions.';

/*
 * The capture queue, written in the transaction of the change.  One row
 * holds the changed rows of one statement that matched the same bindings
 * (up to 1000 of them, as JSON arrays, compressed when large); the worker
 * turns each changed row into one delivery per binding and deletes it.
 */
CREATE TABLE webhook.occurrence (
    occurrence_id bigserial PRIMARY KEY,
    captured_at   timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    table_oid     oid NOT NULL,
    operation     text NOT NULL,
    bindings      bigint[] NOT NULL,
    new_rows      json,                 -- array of the rows after the change (insert, update)
    old_rows      json,                 -- array of the rows before it (update, delete), same order
    row_count     int NOT NULL,
    capture_error text,                 -- a condition failed: recorded as failed deliveries
    -- the webhook-ids of its deliveries derive from it, so that expanding
    -- it again (after a crash lost an expansion) gives the same ids
    id_seed       uuid NOT NULL DEFAULT pg_catalog.gen_random_uuid()
)
-- a queue: rows live for milliseconds; vacuum it by the thousand dead rows,
-- not by a fraction of its (tiny) size
WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);
DO $$
BEGIN
    ALTER TABLE webhook.occurrence ALTER new_rows SET COMPRESSION lz4, ALTER old_rows SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    NULL;   -- a server built without lz4 compresses with pglz
END $$;

-- The queue, one row per changed row (for inspection and tests).
CREATE VIEW webhook._occurrence_rows AS
SELECT o.occurrence_id, r.ord AS row_number, o.captured_at, o.table_oid, o.operation, o.bindings,
       r.new_row, r.old_row, o.capture_error
  FROM webhook.occurrence o
 CROSS JOIN LATERAL ROWS FROM (pg_catalog.json_array_elements(o.new_rows),
                               pg_catalog.json_array_elements(o.old_rows))
       WITH ORDINALITY AS r(new_row, old_row, ord);
COMMENT ON TABLE webhook.occurrence IS 'Captured row changes not yet turned into deliveries.';

-- One HTTP request body to send, and where it stands.
CREATE TABLE webhook.delivery (
    delivery_id     bigserial PRIMARY KEY,
    profile_id      bigint NOT NULL,
    webhook_id      text NOT NULL,
    events          text[] NOT NULL,
    items           int NOT NULL,
    body            json,                   -- NULL: a batch whose items are in batch_item
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
    response_body   text,
    batch_key       text                    -- a batch that still takes items: what they share
)
-- a delivery is updated twice (claimed, recorded): room on its page keeps
-- the new versions there, instead of extending the table for each; and
-- vacuum comes often enough to give that room back
WITH (fillfactor = 50, autovacuum_vacuum_scale_factor = 0.02);
-- what is due, profile by profile, in the claim's order: taking the next
-- few of a profile is an index range, not a sort
CREATE INDEX delivery_due_idx ON webhook.delivery (profile_id, next_attempt_at, delivery_id)
    WHERE status IN ('pending', 'retrying');
-- batches that still take items, found by what their items share
CREATE INDEX delivery_open_batch_idx ON webhook.delivery (profile_id, batch_key)
    WHERE batch_key IS NOT NULL;
-- batches whose body is still in pieces, by when they are to be put together and sent
CREATE INDEX delivery_unassembled_idx ON webhook.delivery (next_attempt_at)
    WHERE body IS NULL;
COMMENT ON TABLE webhook.delivery IS 'Deliveries: one request body each, with its latest outcome.';
DO $$
BEGIN
    -- a batch's body is large: lz4 compresses it several times faster than pglz
    ALTER TABLE webhook.delivery ALTER body SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    NULL;
END $$;

/*
 * The envelopes of a batch not yet sent, in commit order.  When the batch
 * is due, the worker puts them together into its body (a JSON array) and
 * deletes them.
 */
CREATE TABLE webhook.batch_item (
    delivery_id bigint NOT NULL,
    item_no     int NOT NULL,
    envelope    json NOT NULL,
    PRIMARY KEY (delivery_id, item_no)
)
WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);
COMMENT ON TABLE webhook.batch_item IS 'The envelopes of batches that wait for more.';

-- One HTTP request of a delivery.
CREATE TABLE webhook.attempt (
    delivery_id      bigint NOT NULL,
    attempt          int NOT NULL,
    started_at       timestamptz NOT NULL,
    duration_ms      float8,
    outcome          text NOT NULL
        CHECK (outcome IN ('response', 'body_too_large', 'timeout', 'connect_error', 'tls_error',
                           'blocked', 'error')),
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
SELECT pg_catalog.pg_extension_config_dump('webhook.batch_item', '');

------------------------------------------------------------------------------
-- Internal helpers
------------------------------------------------------------------------------

/*
 * The envelope of one occurrence for the profile's payload kind (see
 * README, "What is sent"), keys in a readable order.  Linked rows and the
 * parent are read now, as reader (the event's author).
 */
CREATE FUNCTION webhook._render(id text, profile text, payload text, fields jsonb,
                                binding_id bigint, event text, title text, object text,
                                table_oid oid, key_columns text[], captured_at timestamptz,
                                operation text, row_data json, old_row json, new_row json,
                                parent_object text, parent_table oid, parent_column text,
                                parent_key text, reader oid)
    RETURNS json LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'webhook_render';

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

------------------------------------------------------------------------------
-- Conditions
------------------------------------------------------------------------------

CREATE FUNCTION webhook._check_condition(expr text, tbl regclass) RETURNS void
    LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'webhook_check_condition';
COMMENT ON FUNCTION webhook._check_condition(text, regclass) IS
    'Refuses anything but one boolean SQL expression over new and old rows of the table (internal).';

CREATE FUNCTION webhook._capturing() RETURNS boolean
    LANGUAGE c STABLE AS 'MODULE_PATHNAME', 'webhook_capturing';
COMMENT ON FUNCTION webhook._capturing() IS
    'True while a capture trigger evaluates conditions in this session (internal).';

-- The columns of a table, for error hints.
CREATE FUNCTION webhook._column_list(tbl regclass) RETURNS text
    LANGUAGE sql STABLE AS $$
    SELECT pg_catalog.string_agg(pg_catalog.quote_ident(attname), ', ' ORDER BY attnum)
      FROM pg_catalog.pg_attribute
     WHERE attrelid = tbl AND attnum > 0 AND NOT attisdropped
$$;

-- Raise an error unless the table has the column.
CREATE FUNCTION webhook._require_column(tbl regclass, col text, what text) RETURNS void
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF col IS NULL OR NOT EXISTS (SELECT 1 FROM pg_attribute
                                   WHERE attrelid = tbl AND attname = col
                                     AND attnum > 0 AND NOT attisdropped) THEN
        RAISE EXCEPTION '% %: table % has no column %', what, webhook._quoted(col),
                        tbl, coalesce(quote_ident(left(col, 100)), 'NULL')
            USING ERRCODE = 'undefined_column',
                  HINT = format('The columns of %s are: %s.', tbl, webhook._column_list(tbl));
    END IF;
END
$$;

/*
 * Check a custom payload's fields against the events of the profile (or
 * one event about to be bound to it), and return them in their stored
 * form: [{"name", "column", "send_id"[, "display"]}].  "column" is a column
 * of the event's row, or "<object>.<column>" of the row or of its parent
 * by their payload keys (ticket.status_id for an action event).
 */
CREATE FUNCTION webhook._check_payload_fields(profile_id bigint, fields jsonb,
                                              only_event bigint DEFAULT NULL)
    RETURNS jsonb LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    f jsonb;
    result jsonb := '[]';
    names text[] := '{}';
    fname text;
    col text;
    qualifier text;
    colname text;
    send_id boolean;
    display text;
    ev webhook.event;
    tbl regclass;
    attnum int2;
    fk record;
    key text;
BEGIN
    IF fields IS NULL OR jsonb_typeof(fields) <> 'array' THEN
        RAISE EXCEPTION 'payload fields must be a JSON array'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'For example: [{"name": "status", "column": "status_id"}].';
    END IF;
    IF jsonb_array_length(fields) > 200 THEN
        RAISE EXCEPTION 'a profile has at most 200 payload fields'
            USING ERRCODE = 'program_limit_exceeded', HINT = 'Use payload => ''full'' to send every column.';
    END IF;
    FOR f IN SELECT x FROM jsonb_array_elements(fields) AS x LOOP
        IF jsonb_typeof(f) <> 'object' THEN
            RAISE EXCEPTION 'a payload field must be a JSON object, not %', left(f::text, 100)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'For example: {"name": "status", "column": "status_id", "send_id": false}.';
        END IF;
        FOR key IN SELECT k FROM jsonb_object_keys(f) AS k LOOP
            IF key NOT IN ('name', 'column', 'send_id', 'display') THEN
                RAISE EXCEPTION 'unknown key % in payload field %', quote_literal(left(key, 100)), left(f::text, 100)
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'A field has name, column, and optionally send_id (boolean) and display (a column of the lookup table).';
            END IF;
        END LOOP;
        IF jsonb_typeof(f -> 'name') IS DISTINCT FROM 'string' OR length(f ->> 'name') NOT BETWEEN 1 AND 200 THEN
            RAISE EXCEPTION 'payload field % needs a name', left(f::text, 100)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'name is the key the value is sent under: a string of 1 to 200 characters.';
        END IF;
        fname := f ->> 'name';
        IF fname = ANY (names) THEN
            RAISE EXCEPTION 'payload field name % is used twice', quote_literal(fname)
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Each field needs a name of its own.';
        END IF;
        names := names || fname;
        IF jsonb_typeof(f -> 'column') IS DISTINCT FROM 'string' OR f ->> 'column' = '' THEN
            RAISE EXCEPTION 'payload field % needs a column', quote_literal(fname)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'column is a column of the event''s row, e.g. "status_id", or of its parent, e.g. "ticket.status_id".';
        END IF;
        IF f ? 'send_id' AND jsonb_typeof(f -> 'send_id') <> 'boolean' THEN
            RAISE EXCEPTION 'send_id of payload field % must be true or false', quote_literal(fname)
                USING ERRCODE = 'invalid_parameter_value', HINT = 'send_id: true sends the ID instead of the display value.';
        END IF;
        IF f ? 'display' AND (jsonb_typeof(f -> 'display') <> 'string' OR f ->> 'display' = '') THEN
            RAISE EXCEPTION 'display of payload field % must name a column', quote_literal(fname)
                USING ERRCODE = 'invalid_parameter_value', HINT = 'display is a column of the lookup table, e.g. "title".';
        END IF;
        col := f ->> 'column';
        send_id := coalesce((f ->> 'send_id')::boolean, false);
        display := f ->> 'display';
        IF send_id AND display IS NOT NULL THEN
            RAISE EXCEPTION 'payload field % has both send_id and display', quote_literal(fname)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'send_id sends the ID; display names the lookup column to send instead of it. Keep one.';
        END IF;
        qualifier := CASE WHEN strpos(col, '.') > 0 THEN split_part(col, '.', 1) END;
        colname := CASE WHEN qualifier IS NULL THEN col ELSE substr(col, length(qualifier) + 2) END;

        FOR ev IN SELECT e.* FROM webhook.event e
                   WHERE CASE WHEN only_event IS NULL
                              THEN e.event_id IN (SELECT b.event_id FROM webhook.binding b
                                                   WHERE b.profile_id = _check_payload_fields.profile_id)
                              ELSE e.event_id = only_event END
                   ORDER BY e.event_id LOOP
            tbl := CASE WHEN qualifier IS NULL OR qualifier = ev.object THEN ev.table_oid
                        WHEN qualifier = ev.parent_object THEN ev.parent_table END;
            IF tbl IS NULL THEN
                RAISE EXCEPTION 'payload field %: event % carries no object %', quote_literal(fname),
                                quote_literal(ev.name), webhook._quoted(qualifier)
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = format('Event %s carries %s. Use "column" for a column of the row, "<object>.column" for one of the objects it carries.',
                                        ev.name, concat_ws(' and ', ev.object, ev.parent_object));
            END IF;
            SELECT a.attnum INTO attnum FROM pg_attribute a
             WHERE a.attrelid = tbl AND a.attname = colname AND a.attnum > 0 AND NOT a.attisdropped;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'payload field %: table % has no column %', quote_literal(fname), tbl,
                                quote_ident(left(colname, 100))
                    USING ERRCODE = 'undefined_column',
                          HINT = format('Event %s: the columns of %s are: %s.', ev.name, tbl, webhook._column_list(tbl));
            END IF;
            -- a single-select field: the column alone points to a lookup table
            SELECT c.confrelid::regclass AS lookup FROM pg_constraint c
             WHERE c.conrelid = tbl AND c.contype = 'f' AND c.conkey = ARRAY[attnum]
             ORDER BY c.oid LIMIT 1 INTO fk;
            IF fk.lookup IS NULL AND (send_id OR display IS NOT NULL) THEN
                RAISE EXCEPTION 'payload field %: column % of % is not a single-select field', quote_literal(fname),
                                quote_ident(colname), tbl
                    USING ERRCODE = 'invalid_parameter_value',
                          DETAIL = 'send_id and display are for columns with a foreign key to a lookup table: they choose between the ID and the looked-up value.',
                          HINT = 'Remove send_id and display: the column''s own value is sent.';
            END IF;
            IF fk.lookup IS NOT NULL AND NOT send_id
               AND NOT EXISTS (SELECT 1 FROM pg_attribute a
                                WHERE a.attrelid = fk.lookup AND a.attname = coalesce(display, 'name')
                                  AND a.attnum > 0 AND NOT a.attisdropped) THEN
                RAISE EXCEPTION 'payload field %: lookup table % has no column %', quote_literal(fname), fk.lookup,
                                quote_ident(coalesce(display, 'name'))
                    USING ERRCODE = 'undefined_column',
                          HINT = format('Name the column to send with "display" (the columns of %s are: %s), or send the ID with "send_id": true.',
                                        fk.lookup, webhook._column_list(fk.lookup));
            END IF;
        END LOOP;
        result := result || jsonb_build_array(jsonb_strip_nulls(jsonb_build_object(
                      'name', fname, 'column', col, 'send_id', send_id, 'display', display)));
    END LOOP;
    RETURN result;
END
$$;

/*
 * Compile a binding's conditions (Halo's operators, AND-ed) into one SQL
 * boolean expression over (n.r), the new row, and (o.r), the old row.
 * Field names become quoted identifiers and values typed literals, checked
 * against the column's type now.  Returns NULL for no conditions.
 */
CREATE FUNCTION webhook._compile_conditions(tbl regclass, operation text, conditions jsonb)
    RETURNS text LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ops constant text[] := ARRAY['eq', 'ne', 'gt', 'gte', 'lt', 'lte', 'contains', 'not_contains',
                                 'in', 'not_in', 'has_value', 'no_value', 'changed',
                                 'changed_from', 'changed_to'];
    c jsonb;
    n int := 0;
    field text;
    op text;
    val jsonb;
    typ text;
    category "char";
    subject text;
    newcol text;
    oldcol text;
    lits text[];
    v jsonb;
    lit text;
    parts text[] := '{}';
    label text;
BEGIN
    IF conditions IS NULL OR conditions = '[]'::jsonb THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(conditions) <> 'array' THEN
        RAISE EXCEPTION 'conditions must be a JSON array'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'For example: [{"field": "priority_id", "op": "eq", "value": 1}].';
    END IF;
    FOR c IN SELECT e FROM jsonb_array_elements(conditions) AS e LOOP
        n := n + 1;
        label := format('condition %s', n);
        IF jsonb_typeof(c) <> 'object' THEN
            RAISE EXCEPTION '%: must be a JSON object', label
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'For example: {"field": "priority_id", "op": "eq", "value": 1}.';
        END IF;
        SELECT k INTO field FROM jsonb_object_keys(c) AS k
         WHERE k NOT IN ('field', 'op', 'value') LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION '%: unknown key %', label, quote_literal(field)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'A condition has the keys field, op and value.';
        END IF;
        IF jsonb_typeof(c -> 'field') IS DISTINCT FROM 'string' THEN
            RAISE EXCEPTION '%: "field" must be a column name', label
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('The columns of %s are: %s.', tbl, webhook._column_list(tbl));
        END IF;
        field := c ->> 'field';
        SELECT format_type(a.atttypid, a.atttypmod), t.typcategory INTO typ, category
          FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
         WHERE a.attrelid = tbl AND a.attname = field AND a.attnum > 0 AND NOT a.attisdropped;
        IF NOT FOUND THEN
            RAISE EXCEPTION '%: table % has no column %', label, tbl, quote_ident(field)
                USING ERRCODE = 'undefined_column',
                      HINT = format('The columns of %s are: %s.', tbl, webhook._column_list(tbl));
        END IF;
        op := c ->> 'op';
        IF jsonb_typeof(c -> 'op') IS DISTINCT FROM 'string' OR NOT op = ANY (ops) THEN
            RAISE EXCEPTION '%: unknown operator %', label, webhook._quoted(c ->> 'op')
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'The operators are: ' || array_to_string(ops, ', ') || '.';
        END IF;
        IF op IN ('changed', 'changed_from', 'changed_to') AND operation <> 'update' THEN
            RAISE EXCEPTION '%: operator % needs an update event', label, op
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('This is %s %s event: use eq, ne, gt, gte, lt, lte, contains, not_contains, in, not_in, has_value or no_value.',
                                    CASE operation WHEN 'insert' THEN 'an' ELSE 'a' END, operation);
        END IF;
        IF op IN ('has_value', 'no_value', 'changed') THEN
            IF c ? 'value' THEN
                RAISE EXCEPTION '%: operator % takes no value', label, op
                    USING ERRCODE = 'invalid_parameter_value', HINT = 'Remove "value".';
            END IF;
        ELSIF NOT c ? 'value' OR jsonb_typeof(c -> 'value') = 'null' THEN
            RAISE EXCEPTION '%: operator % needs a value', label, op
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'To test for an empty field use has_value or no_value.';
        END IF;
        IF op IN ('contains', 'not_contains') AND category <> 'S' THEN
            RAISE EXCEPTION '%: operator % needs a text column, and % is %', label, op,
                            quote_ident(field), typ
                USING ERRCODE = 'datatype_mismatch', HINT = 'Use eq, ne, in or not_in.';
        END IF;
        IF op IN ('gt', 'gte', 'lt', 'lte') AND category NOT IN ('N', 'D', 'T', 'S', 'E') THEN
            RAISE EXCEPTION '%: operator % needs an ordered column, and % is %', label, op,
                            quote_ident(field), typ
                USING ERRCODE = 'datatype_mismatch', HINT = 'Use eq, ne, in or not_in.';
        END IF;

        -- the values, as literals of the column's type
        val := c -> 'value';
        lits := '{}';
        IF op IN ('in', 'not_in') THEN
            IF jsonb_typeof(val) <> 'array' OR jsonb_array_length(val) = 0 THEN
                RAISE EXCEPTION '%: operator % needs a non-empty JSON array of values', label, op
                    USING ERRCODE = 'invalid_parameter_value', HINT = 'For example: "value": [1, 2].';
            END IF;
        ELSIF val IS NOT NULL AND jsonb_typeof(val) IN ('array', 'object') THEN
            RAISE EXCEPTION '%: operator % needs a single value', label, op
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Use in or not_in for a list.';
        END IF;
        FOR v IN SELECT CASE jsonb_typeof(val) WHEN 'array' THEN e ELSE val END
                   FROM jsonb_array_elements(CASE jsonb_typeof(val) WHEN 'array' THEN val
                                                  ELSE '[0]' END) AS e
                  WHERE val IS NOT NULL LOOP
            IF jsonb_typeof(v) IN ('array', 'object', 'null') THEN
                RAISE EXCEPTION '%: % is not a value for column %', label, v::text, quote_ident(field)
                    USING ERRCODE = 'invalid_parameter_value', HINT = format('Give a value of type %s.', typ);
            END IF;
            BEGIN
                EXECUTE format('SELECT CAST(%L AS %s)', v #>> '{}', typ);
            EXCEPTION WHEN OTHERS THEN
                RAISE EXCEPTION '%: % is not a valid % for column %', label, v::text, typ,
                                quote_ident(field)
                    USING ERRCODE = 'invalid_parameter_value', HINT = format('Give a value of type %s.', typ);
            END;
            lits := lits || format('CAST(%L AS %s)', v #>> '{}', typ);
        END LOOP;
        lit := lits[1];

        newcol := format('(n.r).%I', field);
        oldcol := format('(o.r).%I', field);
        subject := CASE operation WHEN 'delete' THEN oldcol ELSE newcol END;
        parts := parts || CASE op
            WHEN 'eq' THEN format('%s = %s', subject, lit)
            WHEN 'ne' THEN format('%s IS DISTINCT FROM %s', subject, lit)
            WHEN 'gt' THEN format('%s > %s', subject, lit)
            WHEN 'gte' THEN format('%s >= %s', subject, lit)
            WHEN 'lt' THEN format('%s < %s', subject, lit)
            WHEN 'lte' THEN format('%s <= %s', subject, lit)
            WHEN 'contains' THEN
                format('pg_catalog.strpos(pg_catalog.lower(%s::text), pg_catalog.lower(%s::text)) > 0', subject, lit)
            WHEN 'not_contains' THEN
                format('(%1$s IS NULL OR pg_catalog.strpos(pg_catalog.lower(%1$s::text), pg_catalog.lower(%2$s::text)) = 0)', subject, lit)
            WHEN 'in' THEN format('%s = ANY (ARRAY[%s])', subject, array_to_string(lits, ', '))
            WHEN 'not_in' THEN format('(%1$s IS NULL OR %1$s <> ALL (ARRAY[%2$s]))', subject, array_to_string(lits, ', '))
            WHEN 'has_value' THEN CASE WHEN category = 'S'
                THEN format('(%1$s IS NOT NULL AND %1$s::text <> %2$L)', subject, '')
                ELSE format('%s IS NOT NULL', subject) END
            WHEN 'no_value' THEN CASE WHEN category = 'S'
                THEN format('(%1$s IS NULL OR %1$s::text = %2$L)', subject, '')
                ELSE format('%s IS NULL', subject) END
            WHEN 'changed' THEN format('%s IS DISTINCT FROM %s', newcol, oldcol)
            WHEN 'changed_from' THEN format('(%s = %s AND %s IS DISTINCT FROM %s)', oldcol, lit, newcol, oldcol)
            WHEN 'changed_to' THEN format('(%s = %s AND %s IS DISTINCT FROM %s)', newcol, lit, newcol, oldcol)
        END;
    END LOOP;
    RETURN array_to_string(parts, ' AND ');
END
$$;
COMMENT ON FUNCTION webhook._compile_conditions(regclass, text, jsonb) IS
    'Compiles and checks the conditions of a binding into SQL (internal).';

-- The search_path of the caller, as a list of quoted schema names.
CREATE FUNCTION webhook._current_path() RETURNS text
    LANGUAGE sql STABLE AS $$
    SELECT COALESCE(pg_catalog.string_agg(pg_catalog.quote_ident(s), ', '), 'pg_catalog')
      FROM pg_catalog.unnest(pg_catalog.current_schemas(false)) AS s
$$;

/*
 * Whoever adds or changes an event, through define_event or by writing the
 * table, needs the TRIGGER privilege on its table (as CREATE TRIGGER does)
 * and SELECT on its parent table; everything is checked here, so that a
 * direct write is held to the same rules as the functions.
 */
CREATE FUNCTION webhook._event_guard() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    rel pg_class;
    col text;
BEGIN
    IF NEW.name IS NULL OR NEW.name !~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$' OR length(NEW.name) > 100 THEN
        RAISE EXCEPTION 'invalid event name %', webhook._quoted(NEW.name)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'An event name is lower-case words of letters, digits and "_", joined by dots, e.g. ticket.created.';
    END IF;
    IF TG_OP = 'UPDATE' AND (NEW.table_oid <> OLD.table_oid OR NEW.operation <> OLD.operation) THEN
        RAISE EXCEPTION 'the table and operation of event % cannot change', quote_literal(OLD.name)
            USING ERRCODE = 'feature_not_supported', HINT = 'Define a new event instead.';
    END IF;
    SELECT * INTO rel FROM pg_class WHERE oid = NEW.table_oid;
    IF NOT FOUND OR rel.relkind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '% is not a table', NEW.table_oid
            USING ERRCODE = 'wrong_object_type', HINT = 'Events can be defined on ordinary and partitioned tables.';
    END IF;
    IF rel.relnamespace IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
       OR rel.relnamespace::regnamespace::text LIKE 'pg\_toast%' THEN
        RAISE EXCEPTION 'events cannot be defined on system catalogs'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Define events on your own tables.';
    END IF;
    IF rel.relnamespace = 'webhook'::regnamespace THEN
        RAISE EXCEPTION 'events cannot be defined on the tables of the webhook extension'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Define events on your own tables.';
    END IF;
    IF NOT has_table_privilege(NEW.table_oid, 'TRIGGER') THEN
        RAISE EXCEPTION 'permission denied for table %', NEW.table_oid
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Defining an event needs the TRIGGER privilege on the table, as CREATE TRIGGER does.';
    END IF;
    IF NEW.operation IS NULL OR NEW.operation NOT IN ('insert', 'update', 'delete') THEN
        RAISE EXCEPTION 'invalid operation %', webhook._quoted(NEW.operation)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'The operation is insert, update or delete.';
    END IF;
    IF NEW.columns IS NOT NULL THEN
        IF NEW.operation <> 'update' THEN
            RAISE EXCEPTION 'columns are only for update events'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'An update event with columns fires when one of them changes.';
        END IF;
        IF cardinality(NEW.columns) = 0 THEN
            RAISE EXCEPTION 'columns must name at least one column'
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Use NULL for any change.';
        END IF;
        FOREACH col IN ARRAY NEW.columns LOOP
            PERFORM webhook._require_column(NEW.table_oid, col, 'column');
        END LOOP;
        IF (SELECT count(DISTINCT c) FROM unnest(NEW.columns) AS c) <> cardinality(NEW.columns) THEN
            RAISE EXCEPTION 'columns lists a column more than once'
                USING ERRCODE = 'invalid_parameter_value', HINT = 'List each column once.';
        END IF;
    END IF;
    IF NEW.object IS NULL OR NEW.object !~ '^[A-Za-z_][A-Za-z0-9_]*$' THEN
        RAISE EXCEPTION 'invalid object key %', webhook._quoted(NEW.object)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The object key is the payload key of the row, e.g. ticket: letters, digits and "_".';
    END IF;
    IF NEW.condition IS NOT NULL THEN
        PERFORM webhook._check_condition(NEW.condition, NEW.table_oid);
    END IF;
    IF NEW.parent_table IS NOT NULL OR NEW.parent_object IS NOT NULL
       OR NEW.parent_column IS NOT NULL OR NEW.parent_key IS NOT NULL THEN
        IF NEW.parent_object IS NULL OR NEW.parent_object !~ '^[A-Za-z_][A-Za-z0-9_]*$'
           OR NEW.parent_object IN (NEW.object, 'id', 'profile', 'binding_id', 'event', 'title',
                                    'object_id', 'timestamp', 'changes') THEN
            RAISE EXCEPTION 'invalid parent object key %', webhook._quoted(NEW.parent_object)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'The parent''s payload key, e.g. ticket: letters, digits and "_", not a key of the envelope.';
        END IF;
        IF NEW.parent_table IS NULL OR NOT EXISTS (SELECT 1 FROM pg_class WHERE oid = NEW.parent_table
                                                    AND relkind IN ('r', 'p')) THEN
            RAISE EXCEPTION 'the parent table must be a table'
                USING ERRCODE = 'wrong_object_type', HINT = 'For example: {"object": "ticket", "table": "tickets", "column": "ticket_id"}.';
        END IF;
        IF NOT has_table_privilege(NEW.parent_table, 'SELECT') THEN
            RAISE EXCEPTION 'permission denied for table %', NEW.parent_table
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'The payload carries the parent row: you need SELECT on the parent table.';
        END IF;
        PERFORM webhook._require_column(NEW.table_oid, NEW.parent_column, 'parent column');
        PERFORM webhook._require_column(NEW.parent_table, NEW.parent_key, 'parent key');
    END IF;
    -- the condition runs with its author's rights: whoever writes it
    IF TG_OP = 'INSERT' OR NEW.condition IS DISTINCT FROM OLD.condition THEN
        NEW.created_by := current_user::regrole;
        NEW.search_path := webhook._current_path();
    ELSE
        NEW.created_by := OLD.created_by;
        NEW.search_path := OLD.search_path;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER event_guard BEFORE INSERT OR UPDATE ON webhook.event
    FOR EACH ROW EXECUTE FUNCTION webhook._event_guard();

/*
 * The same for bindings: conditions are compiled and checked here, and
 * condition_sql needs the TRIGGER privilege on the event's table.
 */
CREATE FUNCTION webhook._binding_guard() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    ev webhook.event;
BEGIN
    SELECT * INTO ev FROM webhook.event WHERE event_id = NEW.event_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'event % does not exist', NEW.event_id
            USING ERRCODE = 'undefined_object', HINT = 'See webhook.events.';
    END IF;
    NEW.compiled := webhook._compile_conditions(ev.table_oid, ev.operation, NEW.conditions);
    -- a custom payload's fields must make sense for every event of the profile
    PERFORM webhook._check_payload_fields(p.profile_id, p.payload_fields, ev.event_id)
       FROM webhook.profile p
      WHERE p.profile_id = NEW.profile_id AND p.payload = 'custom'
        AND (TG_OP = 'INSERT' OR NEW.event_id <> OLD.event_id);
    IF NEW.condition_sql IS NOT NULL THEN
        IF NOT has_table_privilege(ev.table_oid, 'TRIGGER') THEN
            RAISE EXCEPTION 'permission denied for table %', ev.table_oid
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'condition_sql needs the TRIGGER privilege on the table; conditions do not.';
        END IF;
        PERFORM webhook._check_condition(NEW.condition_sql, ev.table_oid);
    END IF;
    -- condition_sql runs with its author's rights: whoever writes it
    IF TG_OP = 'INSERT' OR NEW.condition_sql IS DISTINCT FROM OLD.condition_sql THEN
        NEW.created_by := current_user::regrole;
        NEW.search_path := webhook._current_path();
    ELSE
        NEW.created_by := OLD.created_by;
        NEW.search_path := OLD.search_path;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER binding_guard BEFORE INSERT OR UPDATE ON webhook.binding
    FOR EACH ROW EXECUTE FUNCTION webhook._binding_guard();

------------------------------------------------------------------------------
-- Capture triggers
------------------------------------------------------------------------------

/*
 * Attach, replace or remove the capture triggers of one table so that they
 * match its bindings: one AFTER ... FOR EACH STATEMENT trigger per
 * operation that has at least one binding, none otherwise.
 *
 * The trigger's query returns, for each changed row, the ids of the
 * bindings it matches.  Compiled conditions are inlined; SQL written by
 * users (an event's condition, a binding's condition_sql) runs inside a
 * function owned by its author, so it runs with the author's rights.  The
 * fallback query (every binding, no condition) is used when the query
 * fails: the change is then queued with the error.  A trigger whose
 * arguments are already right is left alone.
 */
CREATE FUNCTION webhook._sync_triggers(tbl regclass) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    op text;
    b record;
    typ text;
    conds text[];
    parts text[];
    ids bigint[];
    conditional boolean;
    user_sql boolean;
    -- the matching rows of a statement, grouped by bindings, 1000 to a queue row
    enqueue constant text :=
        'INSERT INTO webhook.occurrence (table_oid, operation, bindings, new_rows, old_rows, row_count, capture_error)'
        ' SELECT %s, %L, g.bindings,'
        ' CASE WHEN %2$L <> ''delete'' THEN pg_catalog.json_agg(g.new_row ORDER BY g.i) END,'
        ' CASE WHEN %2$L <> ''insert'' THEN pg_catalog.json_agg(g.old_row ORDER BY g.i) END,'
        ' pg_catalog.count(*), %s'
        ' FROM (SELECT pg_catalog.row_number() OVER () AS i, s.* FROM (%s) AS s) AS g'
        ' GROUP BY g.bindings, (g.i - 1) / 1000';
    any_unconditional boolean;
    filters text[];
    direct text;
    source text;
    new_expr text;
    old_expr text;
    query text;
    fallback text;
    args text;
    trigger_name text;
    fn text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_class WHERE oid = tbl) THEN
        RETURN;
    END IF;
    typ := tbl::text;

    -- functions that run users' SQL with their author's rights
    FOR b IN SELECT 'e' || e.event_id AS id, e.condition AS expr, e.created_by, e.search_path
               FROM webhook.event e
              WHERE e.table_oid = tbl AND e.condition IS NOT NULL
                AND EXISTS (SELECT 1 FROM webhook.binding x WHERE x.event_id = e.event_id)
             UNION ALL
             SELECT 'b' || x.binding_id, x.condition_sql, x.created_by, x.search_path
               FROM webhook.binding x JOIN webhook.event e ON e.event_id = x.event_id
              WHERE e.table_oid = tbl AND x.condition_sql IS NOT NULL LOOP
        fn := format('webhook.%I', '_condition_' || b.id);
        EXECUTE format('CREATE OR REPLACE FUNCTION %s(new %s, old %s) RETURNS boolean'
                       ' LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path TO %L'
                       ' AS %L', fn, typ, typ, b.search_path,
                       format('SELECT CASE WHEN webhook._capturing() THEN (%s) END', b.expr));
        EXECUTE format('ALTER FUNCTION %s(%s, %s) OWNER TO %I', fn, typ, typ,
                       (SELECT rolname FROM pg_roles WHERE oid = b.created_by));
        EXECUTE format('REVOKE ALL ON FUNCTION %s(%s, %s) FROM PUBLIC', fn, typ, typ);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s(%s, %s) TO PUBLIC', fn, typ, typ);
    END LOOP;

    FOREACH op IN ARRAY ARRAY['insert', 'update', 'delete'] LOOP
        trigger_name := 'webhook_capture_' || op;
        parts := '{}';
        ids := '{}';
        filters := '{}';
        conditional := false;
        any_unconditional := false;
        user_sql := false;
        FOR b IN SELECT x.binding_id, x.compiled, x.condition_sql, e.event_id, e.columns, e.condition
                   FROM webhook.binding x JOIN webhook.event e ON e.event_id = x.event_id
                  WHERE e.table_oid = tbl AND e.operation = op
                  ORDER BY x.binding_id LOOP
            conds := '{}';
            IF b.columns IS NOT NULL THEN
                conds := conds || ('(' || (SELECT string_agg(format('(n.r).%1$I IS DISTINCT FROM (o.r).%1$I', c), ' OR ')
                                             FROM unnest(b.columns) AS c) || ')');
            END IF;
            IF b.condition IS NOT NULL THEN
                conds := conds || format('webhook.%I(n.r, o.r)', '_condition_e' || b.event_id);
                user_sql := true;
            END IF;
            IF b.compiled IS NOT NULL THEN
                conds := conds || ('(' || b.compiled || ')');
            END IF;
            IF b.condition_sql IS NOT NULL THEN
                conds := conds || format('webhook.%I(n.r, o.r)', '_condition_b' || b.binding_id);
                user_sql := true;
            END IF;
            ids := ids || b.binding_id;
            IF cardinality(conds) = 0 THEN
                parts := parts || format('%s::int8', b.binding_id);
                any_unconditional := true;
            ELSE
                conditional := true;
                parts := parts || format('CASE WHEN COALESCE(%s, false) THEN %s::int8 END',
                                         array_to_string(conds, ' AND '), b.binding_id);
                filters := filters || format('COALESCE(%s, false)', array_to_string(conds, ' AND '));
            END IF;
        END LOOP;

        IF cardinality(ids) = 0 THEN
            IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = tbl AND tgname = trigger_name) THEN
                EXECUTE format('DROP TRIGGER %I ON %s', trigger_name, tbl);
            END IF;
            CONTINUE;
        END IF;

        source := CASE op
            WHEN 'insert' THEN format('(SELECT (t.*)::%1$s AS r FROM webhook_new AS t) AS n'
                                      ' CROSS JOIN (SELECT NULL::%1$s AS r) AS o', typ)
            WHEN 'delete' THEN format('(SELECT NULL::%1$s AS r) AS n'
                                      ' CROSS JOIN (SELECT (t.*)::%1$s AS r FROM webhook_old AS t) AS o', typ)
            -- the old and new transition tables hold the rows in the same order
            ELSE format('(SELECT pg_catalog.row_number() OVER () AS i, (t.*)::%1$s AS r FROM webhook_new AS t) AS n'
                        ' JOIN (SELECT pg_catalog.row_number() OVER () AS i, (t.*)::%1$s AS r FROM webhook_old AS t) AS o'
                        ' ON o.i = n.i', typ)
        END;
        new_expr := CASE op WHEN 'delete' THEN 'NULL::json' ELSE 'pg_catalog.to_json(n.r)' END;
        old_expr := CASE op WHEN 'insert' THEN 'NULL::json' ELSE 'pg_catalog.to_json(o.r)' END;
        fallback := format('SELECT %L::int8[] AS bindings, %s AS new_row, %s AS old_row FROM %s',
                           ids, new_expr, old_expr, source);
        IF conditional AND NOT user_sql AND NOT any_unconditional THEN
            -- rows that match no binding are passed over before any array is built
            query := format('SELECT pg_catalog.array_remove(ARRAY[%s], NULL) AS bindings,'
                            ' %s AS new_row, %s AS old_row FROM %s WHERE %s',
                            array_to_string(parts, ', '), new_expr, old_expr, source,
                            array_to_string(filters, ' OR '));
        ELSIF conditional THEN
            query := format('SELECT m.ids AS bindings, %s AS new_row, %s AS old_row FROM %s'
                            ' CROSS JOIN LATERAL (SELECT pg_catalog.array_remove(ARRAY[%s], NULL) AS ids) AS m'
                            ' WHERE pg_catalog.cardinality(m.ids) > 0',
                            new_expr, old_expr, source, array_to_string(parts, ', '));
        ELSE
            query := fallback;
        END IF;

        /*
         * Without SQL written by users, and with columns only of built-in
         * types (whose operators, casts and output functions are the
         * system's own), the query needs no one's rights but the queue
         * owner's: it is run as one INSERT, by the owner of the queue.
         * Otherwise it runs as the writer and its rows are queued after.
         */
        IF NOT user_sql AND NOT EXISTS (
               SELECT 1 FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
                WHERE a.attrelid = tbl AND a.attnum > 0 AND NOT a.attisdropped
                  AND t.typnamespace <> 'pg_catalog'::regnamespace) THEN
            query := format(enqueue, tbl::oid, op, 'NULL', query);
            fallback := format(enqueue, tbl::oid, op, '$1', fallback);
        END IF;
        -- only a query that may fail needs a fallback
        IF NOT conditional THEN
            fallback := '';
        END IF;

        -- every binding matches every row: the trigger needs no query
        direct := CASE WHEN conditional THEN NULL ELSE ids::text END;

        -- pg_trigger.tgargs holds the arguments, each ended by a NUL byte
        args := format('%s\000%s\000%s\000', op, replace(query, '\', '\\'), replace(fallback, '\', '\\'))
                || CASE WHEN direct IS NULL THEN '' ELSE direct || '\000' END;
        CONTINUE WHEN EXISTS (SELECT 1 FROM pg_trigger
                               WHERE tgrelid = tbl AND tgname = trigger_name
                                 AND encode(tgargs, 'escape') = args);
        IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = tbl AND tgname = trigger_name) THEN
            EXECUTE format('DROP TRIGGER %I ON %s', trigger_name, tbl);
        END IF;
        EXECUTE format(
            'CREATE TRIGGER %I AFTER %s ON %s REFERENCING %s FOR EACH STATEMENT'
            ' EXECUTE FUNCTION webhook._capture(%L, %L, %L%s)',
            trigger_name, upper(op), tbl,
            CASE op WHEN 'insert' THEN 'NEW TABLE AS webhook_new'
                    WHEN 'delete' THEN 'OLD TABLE AS webhook_old'
                    ELSE 'OLD TABLE AS webhook_old NEW TABLE AS webhook_new' END,
            op, query, fallback, CASE WHEN direct IS NULL THEN '' ELSE format(', %L', direct) END);
    END LOOP;

    -- functions of conditions that are gone
    FOR fn IN SELECT p.oid::regprocedure::text FROM pg_proc p
               WHERE p.pronamespace = 'webhook'::regnamespace
                 AND p.proname ~ '^_condition_[eb][0-9]+$'
                 AND NOT EXISTS (SELECT 1 FROM webhook.event e
                                  WHERE p.proname = '_condition_e' || e.event_id
                                    AND e.condition IS NOT NULL
                                    AND EXISTS (SELECT 1 FROM webhook.binding x WHERE x.event_id = e.event_id))
                 AND NOT EXISTS (SELECT 1 FROM webhook.binding x
                                  WHERE p.proname = '_condition_b' || x.binding_id
                                    AND x.condition_sql IS NOT NULL) LOOP
        EXECUTE 'DROP FUNCTION ' || fn;
    END LOOP;
END
$$;
COMMENT ON FUNCTION webhook._sync_triggers(regclass) IS
    'Makes the capture triggers of a table match its bindings (internal).';

-- Bindings and events change: the triggers of their tables follow.
CREATE FUNCTION webhook._catalog_changed() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    tbl regclass;
BEGIN
    FOR tbl IN SELECT DISTINCT e.table_oid FROM webhook.event e
                WHERE e.event_id IN (NEW.event_id, OLD.event_id) LOOP
        PERFORM webhook._sync_triggers(tbl);
    END LOOP;
    RETURN NULL;
END
$$;
CREATE TRIGGER binding_changed AFTER INSERT OR UPDATE OR DELETE ON webhook.binding
    FOR EACH ROW EXECUTE FUNCTION webhook._catalog_changed();
CREATE TRIGGER event_changed AFTER UPDATE ON webhook.event
    FOR EACH ROW EXECUTE FUNCTION webhook._catalog_changed();

/*
 * A table that is dropped takes its events, and their bindings, with it.
 * A profile left without events stays (and sends nothing); a warning names
 * it.  Events whose parent table is dropped lose their parent.
 */
CREATE FUNCTION webhook._on_drop() RETURNS event_trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    dropped oid[];
    p text;
BEGIN
    SELECT array_agg(objid) INTO dropped FROM pg_event_trigger_dropped_objects()
     WHERE classid = 'pg_class'::regclass AND objsubid = 0 AND object_type = 'table';
    IF dropped IS NULL OR to_regclass('webhook.event') IS NULL THEN
        RETURN;
    END IF;
    UPDATE webhook.event SET parent_object = NULL, parent_table = NULL,
                             parent_column = NULL, parent_key = NULL
     WHERE parent_table = ANY (dropped);
    DELETE FROM webhook.binding
     WHERE event_id IN (SELECT event_id FROM webhook.event WHERE table_oid = ANY (dropped));
    DELETE FROM webhook.event WHERE table_oid = ANY (dropped);
    FOR p IN SELECT name FROM webhook.profile pr
              WHERE NOT EXISTS (SELECT 1 FROM webhook.binding b WHERE b.profile_id = pr.profile_id) LOOP
        RAISE WARNING 'webhook profile % has no events left', quote_literal(p)
            USING HINT = 'Add events with webhook.add_event, or drop the profile.';
    END LOOP;
END
$$;
CREATE EVENT TRIGGER webhook_on_drop ON sql_drop EXECUTE FUNCTION webhook._on_drop();

CREATE FUNCTION webhook.sync_triggers() RETURNS int
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    tbl regclass;
    n int := 0;
BEGIN
    FOR tbl IN SELECT DISTINCT table_oid FROM webhook.event LOOP
        PERFORM webhook._sync_triggers(tbl);
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION webhook.sync_triggers() IS
    'Rebuilds the capture triggers of every table that has events; returns how many tables.';

------------------------------------------------------------------------------
-- Event catalogue
------------------------------------------------------------------------------

CREATE FUNCTION webhook.define_event(event text, on_table regclass, operation text,
                                     columns text[] DEFAULT NULL, condition text DEFAULT NULL,
                                     title text DEFAULT NULL, object text DEFAULT NULL,
                                     parent jsonb DEFAULT NULL)
    RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    op text := lower(btrim(operation));
    keys text[];
    p_table regclass;
    p_key text;
    new_id bigint;
BEGIN
    IF on_table IS NULL THEN
        RAISE EXCEPTION 'on_table must not be NULL'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Name the table whose changes the event is about.';
    END IF;
    IF EXISTS (SELECT 1 FROM webhook.event e WHERE e.name = define_event.event) THEN
        RAISE EXCEPTION 'event % already exists', quote_literal(event)
            USING ERRCODE = 'duplicate_object', HINT = 'Choose another name, or drop it with webhook.drop_event.';
    END IF;

    IF parent IS NOT NULL THEN
        IF jsonb_typeof(parent) <> 'object'
           OR jsonb_typeof(parent -> 'object') IS DISTINCT FROM 'string'
           OR jsonb_typeof(parent -> 'table') IS DISTINCT FROM 'string'
           OR jsonb_typeof(parent -> 'column') IS DISTINCT FROM 'string'
           OR EXISTS (SELECT 1 FROM jsonb_object_keys(parent) AS k WHERE k NOT IN ('object', 'table', 'column')) THEN
            RAISE EXCEPTION 'parent must be {"object": ..., "table": ..., "column": ...}'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'For example: {"object": "ticket", "table": "tickets", "column": "ticket_id"}.';
        END IF;
        p_table := pg_catalog.to_regclass(parent ->> 'table');
        IF p_table IS NULL THEN
            RAISE EXCEPTION 'parent table % does not exist', quote_literal(parent ->> 'table')
                USING ERRCODE = 'undefined_table', HINT = 'Name the table that the parent column points to.';
        END IF;
        SELECT a.attname INTO p_key
          FROM pg_catalog.pg_index i
          JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
         WHERE i.indrelid = p_table AND i.indisprimary AND i.indnatts = 1;
        IF p_key IS NULL THEN
            RAISE EXCEPTION 'parent table % has no single-column primary key', p_table
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'The parent row is found by its primary key.';
        END IF;
    END IF;

    SELECT coalesce(array_agg(a.attname::text ORDER BY k.ord), '{}') INTO keys
      FROM pg_catalog.pg_index i
      CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
      JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
     WHERE i.indrelid = on_table AND i.indisprimary;

    -- the guard trigger checks the rest, privileges included
    INSERT INTO webhook.event (name, table_oid, operation, columns, condition, title, object,
                               parent_object, parent_table, parent_column, parent_key,
                               key_columns, created_by, search_path)
    VALUES (event, on_table, op, columns, condition,
            coalesce(title, initcap(translate(event, '._', '  '))),
            coalesce(object, split_part(event, '.', 1)),
            parent ->> 'object', p_table, parent ->> 'column', p_key,
            keys, current_user::regrole, '')
    RETURNING event_id INTO new_id;
    RETURN new_id;
END
$$;
COMMENT ON FUNCTION webhook.define_event(text, regclass, text, text[], text, text, text, jsonb) IS
    'Adds an event to the catalogue: a named insert, update or delete on a table, with optional columns, condition and parent.';

CREATE FUNCTION webhook.drop_event(event text, "cascade" boolean DEFAULT false)
    RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    ev webhook.event;
    used text;
    orphan text;
BEGIN
    SELECT * INTO ev FROM webhook.event e WHERE e.name = drop_event.event;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'event % does not exist', webhook._quoted(event)
            USING ERRCODE = 'undefined_object', HINT = 'See webhook.events.';
    END IF;
    SELECT string_agg(DISTINCT quote_literal(p.name), ', ') INTO used
      FROM webhook.binding b JOIN webhook.profile p ON p.profile_id = b.profile_id
     WHERE b.event_id = ev.event_id;
    IF used IS NOT NULL AND NOT coalesce("cascade", false) THEN
        RAISE EXCEPTION 'event % is used by profile %', quote_literal(event), used
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = 'Remove it from the profiles with webhook.remove_event, or use cascade => true.';
    END IF;
    SELECT string_agg(quote_literal(p.name), ', ') INTO orphan
      FROM webhook.profile p
     WHERE EXISTS (SELECT 1 FROM webhook.binding b WHERE b.profile_id = p.profile_id)
       AND NOT EXISTS (SELECT 1 FROM webhook.binding b
                        WHERE b.profile_id = p.profile_id AND b.event_id <> ev.event_id);
    IF orphan IS NOT NULL THEN
        RAISE EXCEPTION 'dropping event % would leave profile % without events', quote_literal(event), orphan
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = 'Add another event to the profile first, or drop the profile.';
    END IF;
    DELETE FROM webhook.binding b WHERE b.event_id = ev.event_id;
    DELETE FROM webhook.event e WHERE e.event_id = ev.event_id;
END
$$;
COMMENT ON FUNCTION webhook.drop_event(text, boolean) IS
    'Removes an event from the catalogue; with cascade => true, also its bindings.';

/*
 * The standard service-desk catalogue on the user's own tables.  Every
 * column parameter may be NULL to leave its event out.
 */
CREATE FUNCTION webhook.define_ticket_events(tickets regclass, actions regclass DEFAULT NULL,
                                             agent text DEFAULT 'agent_id',
                                             team text DEFAULT 'team_id',
                                             status text DEFAULT 'status_id',
                                             priority text DEFAULT 'priority_id',
                                             closed_statuses text[] DEFAULT NULL,
                                             action_ticket text DEFAULT 'ticket_id')
    RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    status_type text;
    closed text;
    v text;
BEGIN
    IF tickets IS NULL THEN
        RAISE EXCEPTION 'tickets must not be NULL'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Name your tickets table.';
    END IF;
    IF agent IS NOT NULL THEN PERFORM webhook._require_column(tickets, agent, 'agent'); END IF;
    IF team IS NOT NULL THEN PERFORM webhook._require_column(tickets, team, 'team'); END IF;
    IF status IS NOT NULL THEN PERFORM webhook._require_column(tickets, status, 'status'); END IF;
    IF priority IS NOT NULL THEN PERFORM webhook._require_column(tickets, priority, 'priority'); END IF;
    IF actions IS NOT NULL THEN
        PERFORM webhook._require_column(actions, action_ticket, 'action_ticket');
    END IF;
    IF closed_statuses IS NOT NULL THEN
        IF status IS NULL OR cardinality(closed_statuses) = 0 THEN
            RAISE EXCEPTION 'closed_statuses needs a status column and at least one value'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'For example: status => ''status_id'', closed_statuses => ''{9}''.';
        END IF;
        SELECT format_type(a.atttypid, a.atttypmod) INTO status_type
          FROM pg_catalog.pg_attribute a WHERE a.attrelid = tickets AND a.attname = status;
        FOREACH v IN ARRAY closed_statuses LOOP
            BEGIN
                EXECUTE format('SELECT CAST(%L AS %s)', v, status_type);
            EXCEPTION WHEN OTHERS THEN
                RAISE EXCEPTION 'closed status % is not a valid % for column %', webhook._quoted(v),
                                status_type, quote_ident(status)
                    USING ERRCODE = 'invalid_parameter_value', HINT = 'Give values of the status column.';
            END;
        END LOOP;
        SELECT string_agg(format('CAST(%L AS %s)', c, status_type), ', ') INTO closed
          FROM unnest(closed_statuses) AS c;
    END IF;

    PERFORM webhook.define_event('ticket.created', tickets, 'insert', title => 'New Ticket Logged', object => 'ticket');
    RETURN NEXT 'ticket.created';
    PERFORM webhook.define_event('ticket.updated', tickets, 'update', title => 'Ticket Updated', object => 'ticket');
    RETURN NEXT 'ticket.updated';
    IF agent IS NOT NULL THEN
        PERFORM webhook.define_event('ticket.reassigned', tickets, 'update', columns => ARRAY[agent],
                                     title => 'Ticket Reassigned', object => 'ticket');
        RETURN NEXT 'ticket.reassigned';
    END IF;
    IF team IS NOT NULL THEN
        PERFORM webhook.define_event('ticket.team_changed', tickets, 'update', columns => ARRAY[team],
                                     title => 'Ticket Team Changed', object => 'ticket');
        RETURN NEXT 'ticket.team_changed';
    END IF;
    IF status IS NOT NULL THEN
        PERFORM webhook.define_event('ticket.status_changed', tickets, 'update', columns => ARRAY[status],
                                     title => 'Ticket Status Changed', object => 'ticket');
        RETURN NEXT 'ticket.status_changed';
    END IF;
    IF priority IS NOT NULL THEN
        PERFORM webhook.define_event('ticket.priority_changed', tickets, 'update', columns => ARRAY[priority],
                                     title => 'Ticket Priority Changed', object => 'ticket');
        RETURN NEXT 'ticket.priority_changed';
    END IF;
    IF closed IS NOT NULL THEN
        PERFORM webhook.define_event('ticket.closed', tickets, 'update', columns => ARRAY[status],
            condition => format('new.%1$I IN (%2$s) AND (old.%1$I IS NULL OR old.%1$I NOT IN (%2$s))', status, closed),
            title => 'Ticket Closed', object => 'ticket');
        RETURN NEXT 'ticket.closed';
        PERFORM webhook.define_event('ticket.reopened', tickets, 'update', columns => ARRAY[status],
            condition => format('old.%1$I IN (%2$s) AND (new.%1$I IS NULL OR new.%1$I NOT IN (%2$s))', status, closed),
            title => 'Ticket Reopened', object => 'ticket');
        RETURN NEXT 'ticket.reopened';
    ELSE
        RAISE NOTICE 'ticket.closed and ticket.reopened are not defined: closed_statuses is NULL'
            USING HINT = 'Pass closed_statuses => ''{...}'' (status values) to define them.';
    END IF;
    PERFORM webhook.define_event('ticket.deleted', tickets, 'delete', title => 'Ticket Deleted', object => 'ticket');
    RETURN NEXT 'ticket.deleted';
    IF actions IS NOT NULL THEN
        PERFORM webhook.define_event('action.added', actions, 'insert', title => 'Action Added', object => 'action',
            parent => jsonb_build_object('object', 'ticket', 'table', tickets::text, 'column', action_ticket));
        RETURN NEXT 'action.added';
    END IF;
END
$$;
COMMENT ON FUNCTION webhook.define_ticket_events(regclass, regclass, text, text, text, text, text[], text) IS
    'Defines the standard service-desk events on your tickets and actions tables.';

CREATE VIEW webhook.events AS
SELECT e.name AS event, e.table_oid AS on_table, e.operation, e.columns, e.condition,
       e.title, e.object,
       CASE WHEN e.parent_table IS NOT NULL THEN
           pg_catalog.jsonb_build_object('object', e.parent_object, 'table', e.parent_table::text,
                                         'column', e.parent_column)
       END AS parent,
       e.key_columns,
       (SELECT count(*) FROM webhook.binding b WHERE b.event_id = e.event_id)::int AS bindings,
       e.created_by, e.created_at
  FROM webhook.event e;
COMMENT ON VIEW webhook.events IS 'The event catalogue.';

------------------------------------------------------------------------------
-- Profiles and bindings
------------------------------------------------------------------------------

CREATE FUNCTION webhook.create_profile(name text, url text, events text[],
                                       method text DEFAULT 'POST', auth text DEFAULT 'none',
                                       username text DEFAULT NULL, password text DEFAULT NULL,
                                       headers jsonb DEFAULT '{}', payload text DEFAULT 'small',
                                       batching text DEFAULT 'none',
                                       batch_wait interval DEFAULT '10 seconds',
                                       batch_max_items int DEFAULT 100,
                                       secret text DEFAULT NULL, enabled boolean DEFAULT true,
                                       max_attempts int DEFAULT 8,
                                       retry_schedule interval[] DEFAULT NULL,
                                       timeout interval DEFAULT NULL)
    RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    new_id bigint;
    ev text;
BEGIN
    IF events IS NULL OR cardinality(events) = 0 THEN
        RAISE EXCEPTION 'a profile needs at least one event'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'List events of webhook.events, e.g. ARRAY[''ticket.created''].';
    END IF;
    FOREACH ev IN ARRAY events LOOP
        IF ev IS NULL OR NOT EXISTS (SELECT 1 FROM webhook.event e WHERE e.name = ev) THEN
            RAISE EXCEPTION 'event % does not exist', webhook._quoted(ev)
                USING ERRCODE = 'undefined_object',
                      HINT = 'Define it with webhook.define_event, or pick one of webhook.events.';
        END IF;
    END LOOP;
    IF (SELECT count(DISTINCT e) FROM unnest(events) AS e) <> cardinality(events) THEN
        RAISE EXCEPTION 'an event is listed more than once'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'List each event once; bind it again with webhook.add_event for other conditions.';
    END IF;
    IF enabled IS NULL THEN
        RAISE EXCEPTION 'enabled must not be NULL'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass true or false.';
    END IF;
    -- the guard trigger checks the rest, the name's uniqueness included
    INSERT INTO webhook.profile (name, url, method, auth, username, password, headers, payload,
                                 batching, batch_wait, batch_max_items, secret, enabled,
                                 disabled_reason, max_attempts, retry_schedule, timeout)
    VALUES (name, url, method, auth, username, password, headers, payload,
            batching, batch_wait, batch_max_items, secret, enabled,
            CASE WHEN NOT enabled THEN 'created disabled' END, max_attempts, retry_schedule, timeout)
    RETURNING profile_id INTO new_id;
    INSERT INTO webhook.binding (profile_id, event_id, created_by, search_path)
    SELECT new_id, e.event_id, current_user::regrole, ''
      FROM unnest(events) WITH ORDINALITY AS l(name, ord)
      JOIN webhook.event e ON e.name = l.name
     ORDER BY l.ord;
    RETURN new_id;
END
$$;
COMMENT ON FUNCTION webhook.create_profile(text, text, text[], text, text, text, text, jsonb, text, text, interval, int, text, boolean, int, interval[], interval) IS
    'Creates a webhook profile that sends the listed events to the URL.';

CREATE FUNCTION webhook.add_event(profile text, event text, conditions jsonb DEFAULT '[]',
                                  condition_sql text DEFAULT NULL)
    RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    p_id bigint;
    e_id bigint;
    new_id bigint;
BEGIN
    SELECT p.profile_id INTO p_id FROM webhook.profile p WHERE p.name = add_event.profile;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'profile % does not exist', webhook._quoted(profile)
            USING ERRCODE = 'undefined_object', HINT = 'See webhook.profiles.';
    END IF;
    SELECT e.event_id INTO e_id FROM webhook.event e WHERE e.name = add_event.event;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'event % does not exist', webhook._quoted(event)
            USING ERRCODE = 'undefined_object',
                  HINT = 'Define it with webhook.define_event, or pick one of webhook.events.';
    END IF;
    INSERT INTO webhook.binding (profile_id, event_id, conditions, condition_sql, created_by, search_path)
    VALUES (p_id, e_id, coalesce(conditions, '[]'), condition_sql, current_user::regrole, '')
    RETURNING binding_id INTO new_id;
    RETURN new_id;
END
$$;
COMMENT ON FUNCTION webhook.add_event(text, text, jsonb, text) IS
    'Adds an event to a profile, with conditions (AND-ed); returns the binding id.';

CREATE FUNCTION webhook.remove_event(binding bigint) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    b webhook.binding;
    p_name text;
BEGIN
    SELECT * INTO b FROM webhook.binding x WHERE x.binding_id = remove_event.binding;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'binding % does not exist', coalesce(binding::text, 'NULL')
            USING ERRCODE = 'undefined_object', HINT = 'See webhook.bindings.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM webhook.binding x
                    WHERE x.profile_id = b.profile_id AND x.binding_id <> b.binding_id) THEN
        SELECT name INTO p_name FROM webhook.profile WHERE profile_id = b.profile_id;
        RAISE EXCEPTION 'binding % is the last event of profile %', binding, quote_literal(p_name)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A profile needs at least one event: add another first, or drop the profile.';
    END IF;
    DELETE FROM webhook.binding x WHERE x.binding_id = b.binding_id;
END
$$;
COMMENT ON FUNCTION webhook.remove_event(bigint) IS
    'Removes a binding (an event of a profile); a profile keeps at least one.';

CREATE VIEW webhook.bindings AS
SELECT b.binding_id, p.name AS profile, e.name AS event, b.conditions, b.condition_sql,
       b.created_by, b.created_at
  FROM webhook.binding b
  JOIN webhook.profile p ON p.profile_id = b.profile_id
  JOIN webhook.event e ON e.event_id = b.event_id;
COMMENT ON VIEW webhook.bindings IS 'The events of each profile, with their conditions.';

CREATE VIEW webhook.profiles AS
SELECT p.name, p.url, p.method, p.auth, p.username,
       CASE WHEN p.password IS NOT NULL THEN '[redacted]' END AS password,
       (SELECT COALESCE(pg_catalog.jsonb_object_agg(h.key,
                            CASE WHEN h.key ~* '(auth|token|key|secret|cookie|password|session)'
                                 THEN '"[redacted]"'::jsonb ELSE h.value END), '{}')
          FROM pg_catalog.jsonb_each(p.headers) AS h) AS headers,
       p.payload, p.payload_fields, p.batching, p.batch_wait, p.batch_max_items,
       '[redacted]'::text AS secret, p.enabled, p.disabled_reason, p.max_attempts,
       p.retry_schedule, p.timeout, p.consecutive_failures,
       ARRAY(SELECT e.name FROM webhook.binding b JOIN webhook.event e ON e.event_id = b.event_id
              WHERE b.profile_id = p.profile_id ORDER BY b.binding_id) AS events,
       p.created_at
  FROM webhook.profile p;
COMMENT ON VIEW webhook.profiles IS 'Webhook profiles and their events, passwords, tokens, secrets and secret-looking headers redacted.';

------------------------------------------------------------------------------
-- Operating profiles
------------------------------------------------------------------------------

-- Stop a profile: what waits for it is held, never dropped.
CREATE FUNCTION webhook._disable(id bigint, reason text) RETURNS void
    LANGUAGE sql AS $$
    UPDATE webhook.profile SET enabled = false, disabled_reason = reason WHERE profile_id = id;
    UPDATE webhook.delivery SET status = 'held', next_attempt_at = NULL
     WHERE profile_id = id AND status IN ('pending', 'retrying');
$$;

/*
 * What the recorded attempts mean for their profiles: a delivered delivery
 * ends a run of failures, a failed one (attempts exhausted) lengthens it; a
 * run of disable_after (when > 0), or a 410 Gone, disables the profile.
 */
CREATE FUNCTION webhook._note_outcomes(profile_ids bigint[], statuses text[],
                                       response_statuses int[], disable_after int)
    RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
    run int;
BEGIN
    FOR r IN SELECT u.profile_id, bool_or(u.status = 'delivered') AS ok,
                    count(*) FILTER (WHERE u.status = 'failed') AS failed,
                    bool_or(u.response_status = 410) AS gone
               FROM unnest(profile_ids, statuses, response_statuses) AS u(profile_id, status, response_status)
              GROUP BY u.profile_id LOOP
        -- a success on a profile without a run of failures changes nothing
        UPDATE webhook.profile p
           SET consecutive_failures = CASE WHEN r.ok THEN 0 ELSE p.consecutive_failures END + r.failed
         WHERE p.profile_id = r.profile_id AND p.enabled
           AND (r.failed > 0 OR r.gone OR p.consecutive_failures > 0)
        RETURNING p.consecutive_failures INTO run;
        CONTINUE WHEN NOT FOUND;
        IF r.gone THEN
            PERFORM webhook._disable(r.profile_id, 'the receiver answered 410 Gone');
        ELSIF disable_after > 0 AND run >= disable_after THEN
            PERFORM webhook._disable(r.profile_id, format('%s deliveries in a row failed', run));
        END IF;
    END LOOP;
END
$$;

-- The wait a response asks for with Retry-After (seconds or an HTTP date), 1 s to 1 day.
CREATE FUNCTION webhook._retry_after(headers jsonb) RETURNS interval
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v text;
    wait interval;
BEGIN
    SELECT btrim(h.value #>> '{}') INTO v FROM jsonb_each(headers) AS h
     WHERE lower(h.key) = 'retry-after' LIMIT 1;
    IF v IS NULL THEN
        RETURN NULL;
    ELSIF v ~ '^[0-9]{1,9}$' THEN
        wait := make_interval(secs => v::int);
    ELSE
        BEGIN
            wait := v::timestamptz - now();
        EXCEPTION WHEN OTHERS THEN
            RETURN NULL;
        END;
    END IF;
    RETURN LEAST(GREATEST(wait, interval '1 second'), interval '1 day');
END
$$;


-- The id of a profile, or an error that says there is none.
CREATE FUNCTION webhook._profile_id(profile text) RETURNS bigint
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    id bigint;
BEGIN
    SELECT p.profile_id INTO id FROM webhook.profile p WHERE p.name = profile;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'profile % does not exist', webhook._quoted(profile)
            USING ERRCODE = 'undefined_object', HINT = 'See webhook.profiles.';
    END IF;
    RETURN id;
END
$$;

CREATE FUNCTION webhook.alter_profile(name text, url text DEFAULT NULL, method text DEFAULT NULL,
                                      auth text DEFAULT NULL, username text DEFAULT NULL,
                                      password text DEFAULT NULL, headers jsonb DEFAULT NULL,
                                      payload text DEFAULT NULL, batching text DEFAULT NULL,
                                      batch_wait interval DEFAULT NULL,
                                      batch_max_items int DEFAULT NULL,
                                      secret text DEFAULT NULL, enabled boolean DEFAULT NULL,
                                      max_attempts int DEFAULT NULL,
                                      retry_schedule interval[] DEFAULT NULL,
                                      timeout interval DEFAULT NULL, new_name text DEFAULT NULL)
    RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    id bigint := webhook._profile_id(name);
BEGIN
    -- the guard trigger checks the result as a whole, the new name's uniqueness included
    UPDATE webhook.profile p SET
        name = coalesce(new_name, p.name),
        url = coalesce(alter_profile.url, p.url),
        method = coalesce(alter_profile.method, p.method),
        auth = coalesce(alter_profile.auth, p.auth),
        -- changing auth replaces the credentials
        username = CASE WHEN alter_profile.auth IS NOT NULL THEN alter_profile.username
                        ELSE coalesce(alter_profile.username, p.username) END,
        password = CASE WHEN alter_profile.auth IS NOT NULL THEN alter_profile.password
                        ELSE coalesce(alter_profile.password, p.password) END,
        headers = coalesce(alter_profile.headers, p.headers),
        payload = coalesce(alter_profile.payload, p.payload),
        batching = coalesce(alter_profile.batching, p.batching),
        batch_wait = coalesce(alter_profile.batch_wait, p.batch_wait),
        batch_max_items = coalesce(alter_profile.batch_max_items, p.batch_max_items),
        secret = coalesce(alter_profile.secret, p.secret),
        max_attempts = coalesce(alter_profile.max_attempts, p.max_attempts),
        -- '{}' and '0' go back to the defaults
        retry_schedule = CASE WHEN alter_profile.retry_schedule = '{}' THEN NULL
                              ELSE coalesce(alter_profile.retry_schedule, p.retry_schedule) END,
        timeout = CASE WHEN alter_profile.timeout = '0' THEN NULL
                       ELSE coalesce(alter_profile.timeout, p.timeout) END
     WHERE p.profile_id = id;
    IF enabled THEN
        PERFORM webhook.enable_profile(coalesce(new_name, name));
    ELSIF NOT enabled THEN
        PERFORM webhook.disable_profile(coalesce(new_name, name));
    END IF;
END
$$;
COMMENT ON FUNCTION webhook.alter_profile(text, text, text, text, text, text, jsonb, text, text, interval, int, text, boolean, int, interval[], interval, text) IS
    'Changes a profile; NULL leaves an option as it is. Deliveries not yet sent go out with the new settings.';

CREATE FUNCTION webhook.set_payload_fields(profile text, fields jsonb) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    p webhook.profile;
BEGIN
    SELECT * INTO p FROM webhook.profile x WHERE x.profile_id = webhook._profile_id(profile) FOR UPDATE;
    IF p.payload <> 'custom' THEN
        RAISE EXCEPTION 'profile % does not send a custom payload', quote_literal(p.name)
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('Its payload is %s.', p.payload),
                  HINT = format('First: SELECT webhook.alter_profile(%L, payload => ''custom'');', p.name);
    END IF;
    IF fields IS NULL THEN
        RAISE EXCEPTION 'fields must not be NULL'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass ''[]'' for an empty object.';
    END IF;
    -- the guard checks the fields against the profile's events
    UPDATE webhook.profile x SET payload_fields = fields WHERE x.profile_id = p.profile_id;
END
$$;
COMMENT ON FUNCTION webhook.set_payload_fields(text, jsonb) IS
    'Chooses the fields of a custom payload: [{"name": ..., "column": ..., "send_id": bool, "display": ...}].';

CREATE FUNCTION webhook.disable_profile(name text, reason text DEFAULT NULL) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    id bigint := webhook._profile_id(name);
BEGIN
    PERFORM webhook._disable(id, coalesce(reason, 'disabled by ' || current_user));
    PERFORM webhook._wake();   -- the worker gives back what it holds unsent
END
$$;
COMMENT ON FUNCTION webhook.disable_profile(text, text) IS
    'Stops sending for a profile: its changes are still captured, and held until it is enabled.';

CREATE FUNCTION webhook.enable_profile(name text) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    id bigint := webhook._profile_id(name);
BEGIN
    UPDATE webhook.profile p SET enabled = true, disabled_reason = NULL, consecutive_failures = 0
     WHERE p.profile_id = id;
    UPDATE webhook.delivery d SET status = 'pending', next_attempt_at = pg_catalog.now()
     WHERE d.profile_id = id AND d.status = 'held';
    PERFORM webhook._wake();
END
$$;
COMMENT ON FUNCTION webhook.enable_profile(text) IS
    'Sends for a profile again, starting with what was held while it was disabled.';

CREATE FUNCTION webhook.drop_profile(name text) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    id bigint := webhook._profile_id(name);
BEGIN
    DELETE FROM webhook.attempt a
     WHERE a.delivery_id IN (SELECT d.delivery_id FROM webhook.delivery d WHERE d.profile_id = id);
    DELETE FROM webhook.batch_item i
     WHERE i.delivery_id IN (SELECT d.delivery_id FROM webhook.delivery d
                              WHERE d.profile_id = id AND d.body IS NULL);
    DELETE FROM webhook.delivery d WHERE d.profile_id = id;
    DELETE FROM webhook.profile p WHERE p.profile_id = id;   -- its bindings go with it
END
$$;
COMMENT ON FUNCTION webhook.drop_profile(text) IS
    'Removes a profile, its bindings, and its deliveries and attempts, sent or not.';

-- A new delivery of a body, sent again under the same webhook-id.
CREATE FUNCTION webhook._resend(source webhook.delivery) RETURNS bigint
    LANGUAGE sql AS $$
    INSERT INTO webhook.delivery (profile_id, webhook_id, events, items, body, status,
                                  next_attempt_at, captured_at)
    SELECT source.profile_id, source.webhook_id, source.events, source.items, source.body,
           CASE WHEN p.enabled THEN 'pending' ELSE 'held' END,
           CASE WHEN p.enabled THEN pg_catalog.now() END, source.captured_at
      FROM webhook.profile p WHERE p.profile_id = source.profile_id
    RETURNING delivery_id
$$;

CREATE FUNCTION webhook.redeliver(delivery bigint) RETURNS bigint
    LANGUAGE plpgsql AS $$
DECLARE
    source webhook.delivery;
    new_id bigint;
BEGIN
    SELECT * INTO source FROM webhook.delivery d WHERE d.delivery_id = redeliver.delivery;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'delivery % does not exist', coalesce(delivery::text, 'NULL')
            USING ERRCODE = 'undefined_object', HINT = 'See webhook.deliveries.';
    END IF;
    IF source.body IS NULL THEN
        RAISE EXCEPTION 'delivery % is a batch that has not been sent yet', delivery
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'It goes out when its batch is due; redeliver it after that.';
    END IF;
    new_id := webhook._resend(source);
    PERFORM webhook._wake();
    RETURN new_id;
END
$$;
COMMENT ON FUNCTION webhook.redeliver(bigint) IS
    'Sends a delivery again, same body and webhook-id, as a new delivery; returns its id.';

CREATE FUNCTION webhook.replay(profile text, since timestamptz, status text DEFAULT 'failed')
    RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    id bigint := webhook._profile_id(profile);
    n int;
BEGIN
    IF since IS NULL THEN
        RAISE EXCEPTION 'since must not be NULL'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'For example: now() - interval ''1 day''.';
    END IF;
    IF status IS NULL OR status NOT IN ('failed', 'delivered', 'retrying') THEN
        RAISE EXCEPTION 'invalid status %', webhook._quoted(status)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Replay failed, delivered or retrying deliveries.';
    END IF;
    SELECT count(webhook._resend(d)) INTO n
      FROM webhook.delivery d
     WHERE d.profile_id = id AND d.status = replay.status AND d.created_at >= since;
    IF n > 0 THEN
        PERFORM webhook._wake();
    END IF;
    RETURN n;
END
$$;
COMMENT ON FUNCTION webhook.replay(text, timestamptz, text) IS
    'Sends again every delivery of a profile with the status, created since then; returns how many.';

CREATE FUNCTION webhook.send_test(profile text) RETURNS bigint
    LANGUAGE plpgsql AS $$
DECLARE
    p webhook.profile;
    id text := pg_catalog.gen_random_uuid()::text;
    new_id bigint;
BEGIN
    SELECT * INTO p FROM webhook.profile x WHERE x.profile_id = webhook._profile_id(profile);
    IF NOT p.enabled THEN
        RAISE EXCEPTION 'profile % is disabled', quote_literal(p.name)
            USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'Enable it with webhook.enable_profile.';
    END IF;
    INSERT INTO webhook.delivery (profile_id, webhook_id, events, items, body, status,
                                  next_attempt_at, captured_at)
    SELECT p.profile_id, id, ARRAY['ping'], 1,
           -- a batching profile's receiver gets an array, whatever is sent
           CASE WHEN p.batching = 'none' THEN ping ELSE pg_catalog.json_build_array(ping) END,
           'pending', pg_catalog.now(), pg_catalog.now()
      FROM pg_catalog.json_build_object('id', id, 'profile', p.name, 'event', 'ping', 'title', 'Ping',
                                        'timestamp', pg_catalog.to_char(pg_catalog.now() AT TIME ZONE 'UTC',
                                                                        'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')) AS ping
    RETURNING delivery_id INTO new_id;
    PERFORM webhook._wake();
    RETURN new_id;
END
$$;
COMMENT ON FUNCTION webhook.send_test(text) IS
    'Sends a ping to the profile''s URL now, through the normal path; returns the delivery id.';

/*
 * The request an occurrence of this row would make now: the row is read
 * by its primary key as the caller, then rendered, signed and redacted by
 * the worker's own code.  Nothing is queued or sent; the binding's
 * conditions are not evaluated.
 */
CREATE FUNCTION webhook.preview(profile text, event text, row_pk text) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SET TimeZone = 'UTC' SET bytea_output = 'hex' AS $$
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
        webhook_id := pg_catalog.md5('batch/' || id)::uuid::text;
    END IF;
    RETURN webhook._request(p.profile_id, webhook_id, body)::jsonb
           || pg_catalog.jsonb_build_object('body', body::jsonb, 'body_text', body);
END
$$;
COMMENT ON FUNCTION webhook.preview(text, text, text) IS
    'The request (method, url, headers with signature, body) an occurrence of this row would make now; sends nothing.';

CREATE FUNCTION webhook._request(profile_id bigint, webhook_id text, body text) RETURNS json
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'webhook_request_preview';

------------------------------------------------------------------------------
-- Deliveries
------------------------------------------------------------------------------

CREATE VIEW webhook.deliveries AS
SELECT d.delivery_id, p.name AS profile, d.events, d.items, d.status, d.attempts,
       d.created_at, d.last_attempt_at, d.next_attempt_at, d.response_status,
       d.duration_ms, d.error,
       -- a batch that waits shows the items it has so far
       COALESCE(d.body, (SELECT pg_catalog.json_agg(i.envelope ORDER BY i.item_no)
                           FROM webhook.batch_item i WHERE i.delivery_id = d.delivery_id))::jsonb
         AS request_body, d.response_body,
       d.webhook_id, d.captured_at, d.delivered_at
  FROM webhook.delivery d
  LEFT JOIN webhook.profile p ON p.profile_id = d.profile_id;
COMMENT ON VIEW webhook.deliveries IS 'One row per delivery, with its latest outcome.';

CREATE VIEW webhook.stats AS
SELECT p.name AS profile, p.enabled,
       (COALESCE(sum(d.items) FILTER (WHERE d.status IN ('pending', 'held', 'retrying')), 0)
        + (SELECT COALESCE(sum(o.row_count * pg_catalog.cardinality(o.bindings)), 0)
             FROM webhook.occurrence o
            WHERE o.bindings && ARRAY(SELECT b.binding_id FROM webhook.binding b
                                       WHERE b.profile_id = p.profile_id)))::bigint AS queued,
       count(*) FILTER (WHERE d.status = 'held')::bigint AS held,
       count(*) FILTER (WHERE d.status = 'sending')::bigint AS in_flight,
       count(*) FILTER (WHERE d.status = 'delivered')::bigint AS delivered,
       count(*) FILTER (WHERE d.status = 'retrying')::bigint AS retrying,
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
COMMENT ON VIEW webhook.stats IS
    'One row per profile: what waits, what is in flight, what was delivered or failed, and how fast (change to response, last hour).';

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

/*
 * Ticket writers run the capture query, which calls the functions that
 * hold users' condition SQL: they may look names up in the schema and call
 * webhook._capturing(), nothing else.
 */
GRANT USAGE ON SCHEMA webhook TO PUBLIC;
GRANT EXECUTE ON FUNCTION webhook._capturing() TO PUBLIC;

SELECT webhook._start_worker();
