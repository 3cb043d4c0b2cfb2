/* webhook--0.1--0.2.sql: no role gains a privilege it was not given */

\echo Use "ALTER EXTENSION webhook UPDATE TO '0.2'" to load this file. \quit

/*
 * Version 0.2 closes the ways a role could act with rights it was not
 * given (README, "Privileges"):
 * - the capture trigger takes what it runs from the extension's catalogue
 *   (_capture_plan), never from its arguments, and runs only SELECTs as
 *   the writer; nothing runs as the queue's owner but the extension's own
 *   statements;
 * - whoever writes an event or binding row becomes its author, checked as
 *   for a new definition; conditions written from now on resolve names in
 *   pg_catalog only (other names are qualified), not in the search_path the
 *   author happened to have (those written before keep theirs);
 * - a parent table whose rows would run code of a role's own when read as
 *   the author is refused;
 * - every SQL function pins its search_path;
 * - a role that may not read webhook.profile sees URL query values, header
 *   values and the profile's secrets echoed by receivers redacted;
 * - limits: 1000 conditions a binding, 10000 values an in list; URLs with
 *   control characters are refused and refused URLs are not quoted back.
 * The capture triggers are made anew at the end.
 */

-- Why reading a table's rows as another role could run a role's own code.
CREATE FUNCTION webhook._untrusted_reason(tbl regclass) RETURNS text
    LANGUAGE c STABLE STRICT AS 'MODULE_PATHNAME', 'webhook_untrusted_reason';
COMMENT ON FUNCTION webhook._untrusted_reason(regclass) IS
    'Why reading the table as another role could run code of a role that is not a superuser, or NULL (internal).';

-- True while a capture trigger of the table evaluates its conditions, given the capture key.
CREATE FUNCTION webhook._capturing(tbl regclass, key int8) RETURNS boolean
    LANGUAGE c STABLE STRICT AS 'MODULE_PATHNAME', 'webhook_capturing_table';
COMMENT ON FUNCTION webhook._capturing(regclass, int8) IS
    'True while a capture trigger of the table evaluates conditions in this session, with its key (internal).';

-- Only the capture trigger writes the queue (see capture.c).
CREATE FUNCTION webhook._occurrence_guard() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'webhook_occurrence_guard';
COMMENT ON FUNCTION webhook._occurrence_guard() IS
    'Refuses writes to the capture queue but the capture trigger''s, the worker''s and a superuser''s (internal).';
CREATE TRIGGER occurrence_guard BEFORE INSERT OR UPDATE ON webhook.occurrence
    FOR EACH ROW EXECUTE FUNCTION webhook._occurrence_guard();

-- The search_path a condition was written with is no longer taken: see below.
DROP FUNCTION webhook._current_path();


CREATE OR REPLACE FUNCTION webhook._event_guard() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rel pg_class;
    col text;
    untrusted text;
    keeps_author boolean;
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
    /*
     * Only taking the parent away (as a dropped parent table does) keeps
     * the author: it lends no one anything, and the condition stays as it
     * was written, with the search_path it was written with.
     */
    keeps_author := TG_OP = 'UPDATE' AND OLD.parent_table IS NOT NULL AND NEW.parent_table IS NULL
       AND (NEW.name, NEW.columns, NEW.condition, NEW.title, NEW.object, NEW.key_columns)
           IS NOT DISTINCT FROM (OLD.name, OLD.columns, OLD.condition, OLD.title, OLD.object, OLD.key_columns);
    IF NEW.condition IS NOT NULL AND NOT keeps_author THEN
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
        -- the worker reads the parent as the author: no one else's code may run then
        untrusted := webhook._untrusted_reason(NEW.parent_table);
        IF untrusted IS NOT NULL THEN
            RAISE EXCEPTION 'the rows of parent table % cannot be read for payloads', NEW.parent_table
                USING ERRCODE = 'insufficient_privilege', DETAIL = pg_catalog.initcap(left(untrusted, 1)) || substr(untrusted, 2) || '.',
                      HINT = 'Rows read as another role may use only types, casts, checks and policies of the system or of superusers.';
        END IF;
    END IF;
    -- the condition runs, and the parent is read, with the author's rights:
    -- whoever writes the row is its author, checked above as for a new definition
    IF keeps_author THEN
        NEW.created_by := OLD.created_by;
        NEW.search_path := OLD.search_path;
    ELSE
        NEW.created_by := current_user::regrole;
        NEW.search_path := 'pg_catalog, pg_temp';
    END IF;
    RETURN NEW;
END
$$;


CREATE OR REPLACE FUNCTION webhook._binding_guard() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ev webhook.event;
BEGIN
    SELECT * INTO ev FROM webhook.event WHERE event_id = NEW.event_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'event % does not exist', NEW.event_id
            USING ERRCODE = 'undefined_object', HINT = 'See webhook.events.';
    END IF;
    -- every writer's first statement compiles them: keep them within bounds
    IF jsonb_typeof(NEW.conditions) = 'array' AND jsonb_array_length(NEW.conditions) > 1000 THEN
        RAISE EXCEPTION 'a binding has at most 1000 conditions, not %', jsonb_array_length(NEW.conditions)
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'Use in with a list of values, or condition_sql.';
    END IF;
    IF jsonb_typeof(NEW.conditions) = 'array' AND EXISTS (
           SELECT 1 FROM jsonb_array_elements(NEW.conditions) AS c
            WHERE CASE WHEN jsonb_typeof(c->'value') = 'array'
                       THEN jsonb_array_length(c->'value') > 10000 ELSE false END) THEN
        RAISE EXCEPTION 'an in or not_in list has at most 10000 values'
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'Put the values in a table and use condition_sql.';
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
    -- condition_sql runs with its author's rights: whoever writes the row
    NEW.created_by := current_user::regrole;
    NEW.search_path := 'pg_catalog, pg_temp';
    RETURN NEW;
END
$$;


CREATE OR REPLACE FUNCTION webhook._profile_guard() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    h record;
    key_bytes int;
    unknown text;
BEGIN
    IF NEW.name IS NULL OR btrim(NEW.name) = '' OR length(NEW.name) > 200 THEN
        RAISE EXCEPTION 'invalid profile name %', webhook._quoted(NEW.name)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'A profile name is 1 to 200 characters.';
    END IF;
    -- not quoted back: a URL that is refused may hold credentials
    IF NEW.url IS NULL OR NEW.url !~* '^https?://[^/?#[:space:][:cntrl:]@]+([/?#][^[:space:][:cntrl:]]*)?$'
       OR length(NEW.url) > 2048 THEN
        RAISE EXCEPTION 'invalid URL'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = CASE WHEN NEW.url IS NULL THEN 'The URL is NULL.'
                                WHEN NEW.url ~ '^[^/]*//[^/?#]*@' THEN 'It holds credentials before the host.'
                                WHEN NEW.url ~ '[[:cntrl:]]' THEN 'It holds control characters.'
                                WHEN length(NEW.url) > 2048 THEN 'It is longer than 2048 characters.'
                                ELSE 'It is not an http:// or https:// URL with a host, without spaces.' END,
                  HINT = 'The URL must be http:// or https:// with a host, without spaces or credentials, at most 2048 characters; pass credentials with auth.';
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
    IF NEW.public_headers IS NULL THEN
        RAISE EXCEPTION 'public_headers must not be NULL'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass ''{}'' for none.';
    END IF;
    -- headers taken away take their mark with them
    IF TG_OP = 'UPDATE' AND NEW.public_headers = OLD.public_headers THEN
        NEW.public_headers := ARRAY(SELECT ph.name FROM unnest(NEW.public_headers) AS ph(name)
                                     WHERE EXISTS (SELECT 1 FROM jsonb_object_keys(NEW.headers) AS k
                                                    WHERE lower(k) = lower(ph.name)));
    END IF;
    SELECT ph.name INTO unknown FROM unnest(NEW.public_headers) AS ph(name)
     WHERE ph.name IS NULL
        OR NOT EXISTS (SELECT 1 FROM jsonb_object_keys(NEW.headers) AS k WHERE lower(k) = lower(ph.name))
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'public header % is not a header of the profile', webhook._quoted(unknown)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'public_headers names headers of the profile whose values are no secret.';
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



/*
 * define_event as before, its search_path pinned: a parent table named
 * without a schema is looked for in the schema of on_table.
 */
CREATE OR REPLACE FUNCTION webhook.define_event(event text, on_table regclass, operation text,
                                     columns text[] DEFAULT NULL, condition text DEFAULT NULL,
                                     title text DEFAULT NULL, object text DEFAULT NULL,
                                     parent jsonb DEFAULT NULL)
    RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
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
        -- a name without a schema is in the schema of on_table
        p_table := CASE WHEN strpos(parent ->> 'table', '.') > 0 THEN to_regclass(parent ->> 'table')
                        ELSE to_regclass(format('%I.%s', (SELECT n.nspname FROM pg_namespace n
                                                           JOIN pg_class c ON c.relnamespace = n.oid
                                                          WHERE c.oid = on_table),
                                                parent ->> 'table')) END;
        IF p_table IS NULL THEN
            RAISE EXCEPTION 'parent table % does not exist', quote_literal(parent ->> 'table')
                USING ERRCODE = 'undefined_table',
                      HINT = 'Name the table that the parent column points to; without a schema, it is looked for in the schema of on_table.';
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

/*
 * What the capture trigger of one table and operation captures (see
 * capture.c): the bindings that every changed row matches, when none has a
 * condition (the direct path, no query); otherwise a query over the
 * statement's transition tables that returns, for each changed row that
 * matches a binding, the ids of the bindings it matches and the row as
 * JSON, and the fallback query (every binding, no condition) run with the
 * error when the query fails.  No row when the table and operation have no
 * binding.
 *
 * Both queries run as the writer, and only SELECT: the trigger queues their
 * rows itself, as the queue's owner, with a statement of its own.  The
 * trigger reads this, as the queue's owner, from the extension's own
 * catalogue: nothing it runs comes from the trigger's definition.
 * Compiled conditions are inlined; SQL written by users (an event's
 * condition, a binding's condition_sql) runs inside a function owned by its
 * author (see _sync_triggers), so it runs with the author's rights.
 */
CREATE FUNCTION webhook._capture_plan(tbl regclass, op text,
                                      OUT query text, OUT fallback text, OUT bindings bigint[])
    RETURNS record LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b record;
    typ text := tbl::text;
    conds text[];
    parts text[] := '{}';
    ids bigint[] := '{}';
    filters text[] := '{}';
    conditional boolean := false;
    any_unconditional boolean := false;
    user_sql boolean := false;
    source text;
    new_expr text;
    old_expr text;
BEGIN
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
            conds := conds || format('webhook.%I(n.r, o.r, $1)', '_condition_e' || b.event_id);
            user_sql := true;
        END IF;
        IF b.compiled IS NOT NULL THEN
            conds := conds || ('(' || b.compiled || ')');
        END IF;
        IF b.condition_sql IS NOT NULL THEN
            conds := conds || format('webhook.%I(n.r, o.r, $1)', '_condition_b' || b.binding_id);
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
        RETURN;
    END IF;
    IF NOT conditional THEN
        -- every binding matches every row: no query
        bindings := ids;
        RETURN;
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
    IF NOT user_sql AND NOT any_unconditional THEN
        -- rows that match no binding are passed over before any array is built
        query := format('SELECT pg_catalog.array_remove(ARRAY[%s], NULL) AS bindings,'
                        ' %s AS new_row, %s AS old_row FROM %s WHERE %s',
                        array_to_string(parts, ', '), new_expr, old_expr, source,
                        array_to_string(filters, ' OR '));
    ELSE
        query := format('SELECT m.ids AS bindings, %s AS new_row, %s AS old_row FROM %s'
                        ' CROSS JOIN LATERAL (SELECT pg_catalog.array_remove(ARRAY[%s], NULL) AS ids) AS m'
                        ' WHERE pg_catalog.cardinality(m.ids) > 0',
                        new_expr, old_expr, source, array_to_string(parts, ', '));
    END IF;
END
$$;
COMMENT ON FUNCTION webhook._capture_plan(regclass, text) IS
    'What the capture trigger of a table and operation captures: its queries, or the bindings every row matches (internal).';

/*
 * Attach, replace or remove the capture triggers of one table so that they
 * match its bindings: one AFTER ... FOR EACH STATEMENT trigger per
 * operation that has at least one binding, none otherwise.  What they
 * capture is _capture_plan's; their one argument only names its version.
 * A trigger is made anew when its plan changed, so that every session reads
 * the new plan (its cache is by trigger).  The functions that hold users'
 * condition SQL are made here too, owned by their authors.
 */
CREATE OR REPLACE FUNCTION webhook._sync_triggers(tbl regclass) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    op text;
    b record;
    plan record;
    version text;
    typ text;
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
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE oid = b.created_by) THEN
            -- its capture then fails, and its changes are failed deliveries that say why
            RAISE WARNING 'the author of a webhook condition on table % no longer exists', tbl
                USING HINT = 'Write the condition again as its new author.';
            CONTINUE;
        END IF;
        -- the path is a list: set, then taken FROM CURRENT (a quoted string would be one name)
        PERFORM set_config('search_path', b.search_path, true);
        -- the key comes last, by a name no condition can use (the check refuses
        -- parameters, and a column of that name would be ambiguous there)
        EXECUTE format('CREATE OR REPLACE FUNCTION %s(new %s, old %s, _webhook_capture_key int8) RETURNS boolean'
                       ' LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT'
                       ' AS %L', fn, typ, typ,
                       format('SELECT CASE WHEN webhook._capturing(%L::pg_catalog.regclass, _webhook_capture_key)'
                              ' THEN (%s) END', typ, b.expr));
        PERFORM set_config('search_path', 'pg_catalog, pg_temp', true);
        EXECUTE format('ALTER FUNCTION %s(%s, %s, int8) OWNER TO %I', fn, typ, typ,
                       (SELECT rolname FROM pg_roles WHERE oid = b.created_by));
        EXECUTE format('REVOKE ALL ON FUNCTION %s(%s, %s, int8) FROM PUBLIC', fn, typ, typ);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s(%s, %s, int8) TO PUBLIC', fn, typ, typ);
    END LOOP;

    FOREACH op IN ARRAY ARRAY['insert', 'update', 'delete'] LOOP
        trigger_name := 'webhook_capture_' || op;
        SELECT * INTO plan FROM webhook._capture_plan(tbl, op);
        IF plan.query IS NULL AND plan.bindings IS NULL THEN
            IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = tbl AND tgname = trigger_name) THEN
                EXECUTE format('DROP TRIGGER %I ON %s', trigger_name, tbl);
            END IF;
            CONTINUE;
        END IF;
        -- the trigger's one argument names the plan's version: an unchanged
        -- plan leaves the trigger, and its table's lock, alone
        version := md5(concat_ws('/', plan.query, plan.fallback, plan.bindings::text));
        CONTINUE WHEN EXISTS (SELECT 1 FROM pg_trigger
                               WHERE tgrelid = tbl AND tgname = trigger_name AND tgnargs = 1
                                 AND encode(tgargs, 'escape') = version || '\000');
        IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = tbl AND tgname = trigger_name) THEN
            EXECUTE format('DROP TRIGGER %I ON %s', trigger_name, tbl);
        END IF;
        EXECUTE format(
            'CREATE TRIGGER %I AFTER %s ON %s REFERENCING %s FOR EACH STATEMENT'
            ' EXECUTE FUNCTION webhook._capture(%L)',
            trigger_name, upper(op), tbl,
            CASE op WHEN 'insert' THEN 'NEW TABLE AS webhook_new'
                    WHEN 'delete' THEN 'OLD TABLE AS webhook_old'
                    ELSE 'OLD TABLE AS webhook_old NEW TABLE AS webhook_new' END,
            version);
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

------------------------------------------------------------------------------
-- Headers a reader may see: public_headers
------------------------------------------------------------------------------

/*
 * A profile names the custom headers whose values are no secret
 * (public_headers): a role that cannot read webhook.profile sees those
 * values, and every other one redacted.  create_profile and alter_profile
 * take the new option last; whoever could call them before still can.
 */
ALTER TABLE webhook.profile ADD COLUMN public_headers text[] NOT NULL DEFAULT '{}';

CREATE TEMPORARY TABLE profile_function_grants AS
SELECT p.proname::text AS function, a.grantee
  FROM pg_catalog.pg_proc p CROSS JOIN LATERAL pg_catalog.aclexplode(p.proacl) AS a
 WHERE p.oid IN ('webhook.create_profile(text, text, text[], text, text, text, text, jsonb, text, text, interval, int, text, boolean, int, interval[], interval)'::regprocedure,
                 'webhook.alter_profile(text, text, text, text, text, text, jsonb, text, text, interval, int, text, boolean, int, interval[], interval, text)'::regprocedure)
   AND a.privilege_type = 'EXECUTE';
DROP FUNCTION webhook.create_profile(text, text, text[], text, text, text, text, jsonb, text, text, interval, int, text, boolean, int, interval[], interval);
DROP FUNCTION webhook.alter_profile(text, text, text, text, text, text, jsonb, text, text, interval, int, text, boolean, int, interval[], interval, text);

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
                                       timeout interval DEFAULT NULL,
                                       public_headers text[] DEFAULT '{}')
    RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
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
                                 disabled_reason, max_attempts, retry_schedule, timeout, public_headers)
    VALUES (name, url, method, auth, username, password, headers, payload,
            batching, batch_wait, batch_max_items, secret, enabled,
            CASE WHEN NOT enabled THEN 'created disabled' END, max_attempts, retry_schedule, timeout,
            public_headers)
    RETURNING profile_id INTO new_id;
    INSERT INTO webhook.binding (profile_id, event_id, created_by, search_path)
    SELECT new_id, e.event_id, current_user::regrole, ''
      FROM unnest(events) WITH ORDINALITY AS l(name, ord)
      JOIN webhook.event e ON e.name = l.name
     ORDER BY l.ord;
    RETURN new_id;
END
$$;

COMMENT ON FUNCTION webhook.create_profile(text, text, text[], text, text, text, text, jsonb, text, text, interval, int, text, boolean, int, interval[], interval, text[]) IS
    'Creates a webhook profile that sends the listed events to the URL.';

CREATE FUNCTION webhook.alter_profile(name text, url text DEFAULT NULL, method text DEFAULT NULL,
                                      auth text DEFAULT NULL, username text DEFAULT NULL,
                                      password text DEFAULT NULL, headers jsonb DEFAULT NULL,
                                      payload text DEFAULT NULL, batching text DEFAULT NULL,
                                      batch_wait interval DEFAULT NULL,
                                      batch_max_items int DEFAULT NULL,
                                      secret text DEFAULT NULL, enabled boolean DEFAULT NULL,
                                      max_attempts int DEFAULT NULL,
                                      retry_schedule interval[] DEFAULT NULL,
                                      timeout interval DEFAULT NULL, new_name text DEFAULT NULL,
                                      public_headers text[] DEFAULT NULL)
    RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
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
                       ELSE coalesce(alter_profile.timeout, p.timeout) END,
        public_headers = coalesce(alter_profile.public_headers, p.public_headers)
     WHERE p.profile_id = id;
    IF enabled THEN
        PERFORM webhook.enable_profile(coalesce(new_name, name));
    ELSIF NOT enabled THEN
        PERFORM webhook.disable_profile(coalesce(new_name, name));
    END IF;
END
$$;

COMMENT ON FUNCTION webhook.alter_profile(text, text, text, text, text, text, jsonb, text, text, interval, int, text, boolean, int, interval[], interval, text, text[]) IS
    'Changes a profile; NULL leaves an option as it is. Deliveries not yet sent go out with the new settings.';

REVOKE ALL ON FUNCTION webhook.create_profile(text, text, text[], text, text, text, text, jsonb, text, text, interval, int, text, boolean, int, interval[], interval, text[]),
                       webhook.alter_profile(text, text, text, text, text, text, jsonb, text, text, interval, int, text, boolean, int, interval[], interval, text, text[])
    FROM PUBLIC;
DO $$
DECLARE
    g record;
BEGIN
    FOR g IN SELECT * FROM profile_function_grants LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION webhook.%I TO %s', g.function,
                                  CASE WHEN g.grantee = 0 THEN 'PUBLIC'
                                       ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(g.grantee)) END);
    END LOOP;
END $$;
DROP TABLE profile_function_grants;

------------------------------------------------------------------------------
-- What a reader sees: no credential
------------------------------------------------------------------------------

-- JSON as jsonb for the views, \u0000 and lone surrogates shown as U+FFFD.
CREATE FUNCTION webhook._display_jsonb(value json) RETURNS jsonb
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'webhook_display_jsonb';
COMMENT ON FUNCTION webhook._display_jsonb(json) IS
    'The JSON as jsonb, escapes that jsonb cannot hold shown as U+FFFD (internal).';

-- A URL with the values of its query replaced by [redacted].
CREATE FUNCTION webhook._redact_url(url text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.regexp_replace(url, '([?&][^=&#]*=)[^&#]*', '\1[redacted]', 'g')
$$;
COMMENT ON FUNCTION webhook._redact_url(text) IS 'The URL with its query values redacted (internal).';

-- The text with each of the secrets (4 characters or more) replaced by [redacted].
CREATE FUNCTION webhook._scrub(value text, secrets text[]) RETURNS text
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s text;
BEGIN
    IF value IS NULL OR secrets IS NULL THEN
        RETURN value;
    END IF;
    FOREACH s IN ARRAY secrets LOOP
        CONTINUE WHEN s IS NULL OR length(s) < 4;
        value := replace(value, s, '[redacted]');
        -- as JSON writes it when it escapes slashes
        value := replace(value, replace(s, '/', '\/'), '[redacted]');
    END LOOP;
    RETURN value;
END
$$;
COMMENT ON FUNCTION webhook._scrub(text, text[]) IS 'The text with the given secrets redacted (internal).';

/*
 * The secret values of a profile, as a receiver could echo them: the
 * password or token, the Basic credentials, the signing secret, header
 * values, the URL's query values.  A view's expression, not a function:
 * a function that returned them could be called by anyone granted it.
 */

CREATE OR REPLACE VIEW webhook.profiles AS
SELECT p.name,
       CASE WHEN pg_catalog.has_table_privilege('webhook.profile', 'SELECT') THEN p.url
            ELSE webhook._redact_url(p.url) END AS url,
       p.method, p.auth, p.username,
       CASE WHEN p.password IS NOT NULL THEN '[redacted]' END AS password,
       (SELECT COALESCE(pg_catalog.jsonb_object_agg(h.key,
                            CASE WHEN h.key ~* '(auth|token|key|secret|cookie|password|session)'
                                      OR (NOT pg_catalog.has_table_privilege('webhook.profile', 'SELECT')
                                          AND NOT pg_catalog.lower(h.key) = ANY (pg_catalog.lower(p.public_headers::text)::text[]))
                                 THEN '"[redacted]"'::jsonb ELSE h.value END), '{}')
          FROM pg_catalog.jsonb_each(p.headers) AS h) AS headers,
       p.payload, p.payload_fields, p.batching, p.batch_wait, p.batch_max_items,
       '[redacted]'::text AS secret, p.enabled, p.disabled_reason, p.max_attempts,
       p.retry_schedule, p.timeout, p.consecutive_failures,
       ARRAY(SELECT e.name FROM webhook.binding b JOIN webhook.event e ON e.event_id = b.event_id
              WHERE b.profile_id = p.profile_id ORDER BY b.binding_id) AS events,
       p.created_at, p.public_headers
  FROM webhook.profile p;
COMMENT ON VIEW webhook.profiles IS
    'Webhook profiles and their events, passwords, tokens, secrets and secret-looking headers redacted; '
    'URL query values and every header value not in public_headers too for a role that cannot read webhook.profile.';

CREATE OR REPLACE VIEW webhook.deliveries AS
SELECT d.delivery_id, p.name AS profile, d.events, d.items, d.status, d.attempts,
       d.created_at, d.last_attempt_at, d.next_attempt_at, d.response_status,
       d.duration_ms, d.error,
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
COMMENT ON VIEW webhook.deliveries IS
    'One row per delivery, with its latest outcome; the profile''s secrets redacted from responses for a role that cannot read webhook.profile.';

CREATE OR REPLACE VIEW webhook.attempts AS
SELECT a.delivery_id, a.attempt, a.started_at, a.duration_ms, a.outcome, a.response_status,
       CASE WHEN s.secrets IS NULL THEN a.response_headers
            ELSE (SELECT pg_catalog.jsonb_object_agg(h.key, pg_catalog.to_jsonb(webhook._scrub(h.value, s.secrets)))
                    FROM pg_catalog.jsonb_each_text(a.response_headers) AS h) END AS response_headers,
       CASE WHEN s.secrets IS NULL THEN a.response_body
            ELSE webhook._scrub(a.response_body, s.secrets) END AS response_body,
       a.error,
       CASE WHEN s.secrets IS NULL THEN a.request_headers
            ELSE (SELECT pg_catalog.jsonb_object_agg(h.key,
                             CASE WHEN h.key = ANY (s.header_names) THEN '"[redacted]"'::jsonb ELSE h.value END)
                    FROM pg_catalog.jsonb_each(a.request_headers) AS h) END AS request_headers
  FROM webhook.attempt a
  LEFT JOIN LATERAL (
       SELECT ARRAY[p.password, p.secret, pg_catalog.substr(p.secret, 7),
                    pg_catalog.translate(pg_catalog.encode(pg_catalog.convert_to(
                        COALESCE(p.username, '') || ':' || p.password, 'UTF8'), 'base64'), E'\n', '')]
              || ARRAY(SELECT h.value #>> '{}' FROM pg_catalog.jsonb_each(p.headers) AS h
                        WHERE NOT pg_catalog.lower(h.key) = ANY (pg_catalog.lower(p.public_headers::text)::text[]))
              || ARRAY(SELECT m[1] FROM pg_catalog.regexp_matches(p.url, '[?&][^=&#]*=([^&#]*)', 'g') AS m)
                AS secrets,
              ARRAY(SELECT k FROM pg_catalog.jsonb_object_keys(p.headers) AS k
                     WHERE NOT pg_catalog.lower(k) = ANY (pg_catalog.lower(p.public_headers::text)::text[]))
                AS header_names
         FROM webhook.delivery d JOIN webhook.profile p ON p.profile_id = d.profile_id
        WHERE d.delivery_id = a.delivery_id
          AND NOT pg_catalog.has_table_privilege('webhook.profile', 'SELECT')
       ) AS s ON true;
COMMENT ON VIEW webhook.attempts IS
    'One row per HTTP request, with its response or error; credentials redacted from the request headers, and for a '
    'role that cannot read webhook.profile every custom header value and the profile''s secrets in responses too.';

------------------------------------------------------------------------------
-- Every SQL function pins its search_path.  The C functions resolve no
-- name through it (those that run SQL set their own); the capture trigger,
-- webhook._capturing() and webhook._render() run for every changed row or
-- delivery, where a SET clause would cost each call.
------------------------------------------------------------------------------

DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
               JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid
                                          AND d.deptype = 'e'
              WHERE d.refobjid = (SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'webhook')
                AND p.proname NOT IN ('_capture', '_capturing', '_render')
                AND NOT EXISTS (SELECT 1 FROM pg_catalog.unnest(p.proconfig) AS c WHERE c LIKE 'search_path=%') LOOP
        EXECUTE pg_catalog.format('ALTER FUNCTION %s SET search_path = pg_catalog, pg_temp', f);
    END LOOP;
END $$;

-- New functions, like every function, are not for PUBLIC; the views'
-- helpers hold nothing and are called as the reader.
REVOKE ALL ON FUNCTION webhook._occurrence_guard() FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook._untrusted_reason(regclass),
                       webhook._capture_plan(regclass, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook._display_jsonb(json), webhook._redact_url(text),
                       webhook._scrub(text, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION webhook._display_jsonb(json), webhook._redact_url(text),
                          webhook._scrub(text, text[]) TO PUBLIC;
-- the functions of SQL conditions call it, as their authors
REVOKE ALL ON FUNCTION webhook._capturing(regclass, int8) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION webhook._capturing(regclass, int8) TO PUBLIC;

/*
 * The capture triggers, made anew without arguments, and the functions of
 * SQL conditions, made anew to answer only in a capture of their own
 * table.  Those are not members of the extension (DROP EXTENSION drops
 * them by name); made in this script they would be, so they are made from
 * nothing and let go of after.
 */
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = 'webhook'::regnamespace AND p.proname ~ '^_condition_[eb][0-9]+$' LOOP
        EXECUTE pg_catalog.format('DROP FUNCTION %s', f);
    END LOOP;
    -- a 0.1 condition whose column has been dropped since fails when it runs, not here
    PERFORM pg_catalog.set_config('check_function_bodies', 'off', true);
    PERFORM webhook.sync_triggers();
    FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = 'webhook'::regnamespace AND p.proname ~ '^_condition_[eb][0-9]+$' LOOP
        EXECUTE pg_catalog.format('ALTER EXTENSION webhook DROP FUNCTION %s', f);
    END LOOP;
END $$;
