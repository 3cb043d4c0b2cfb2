/* webhook--0.8--0.9.sql: Halo-shaped payloads, event messages, changes tagged with their origin, light logs */

\echo Use "ALTER EXTENSION webhook UPDATE TO '0.9'" to load this file. \quit

/*
 * A profile's envelope (standard, or halo: the shape of Halo's own
 * webhooks), its own GUID (the halo envelope's webhook_id, made with it and
 * never changed), the origins whose changes it does not send, and its log
 * (full, or light: no bodies and no response headers kept).  An
 * event's message (a template, see webhook._check_message) and the column
 * of its ticket's agent (the halo envelope's agent_id).  A queued change's
 * origin: the writer's webhook.origin.
 */
ALTER TABLE webhook.profile
    ADD COLUMN envelope text NOT NULL DEFAULT 'standard',
    ADD COLUMN guid uuid NOT NULL DEFAULT pg_catalog.gen_random_uuid(),
    ADD COLUMN ignore_origins text[] NOT NULL DEFAULT '{}',
    ADD COLUMN log text NOT NULL DEFAULT 'full',
    ADD CONSTRAINT profile_guid_key UNIQUE (guid);
ALTER TABLE webhook.event ADD COLUMN message text, ADD COLUMN agent_column text;
ALTER TABLE webhook.occurrence ADD COLUMN origin text;

/*
 * A message template: {column} of the event's table or {object_id}, each
 * with :0N to pad with zeros to N characters; {{ and }} are braces.
 */
CREATE FUNCTION webhook._check_message(message text, tbl regclass) RETURNS void
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    unpaired text := replace(replace(message, '{{', ''), '}}', '');
    placeholder text;
    col text;
BEGIN
    IF length(message) > 1000 OR message ~ '[[:cntrl:]]' THEN
        RAISE EXCEPTION 'a message is at most 1000 characters, without control characters'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'For example: ''The status has been changed for Ticket ID: {object_id:07}.''.';
    END IF;
    IF regexp_replace(unpaired, '\{[^{}]*\}', '', 'g') ~ '[{}]' THEN
        RAISE EXCEPTION 'message % has a brace without its pair', webhook._quoted(left(message, 200))
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Placeholders are {column} and {object_id}, e.g. {object_id:07}; write {{ and }} for braces.';
    END IF;
    FOR placeholder IN SELECT m[1] FROM regexp_matches(unpaired, '\{([^{}]*)\}', 'g') AS m LOOP
        IF placeholder !~ '^[^:]+(:0[1-9][0-9]?)?$' THEN
            RAISE EXCEPTION 'invalid placeholder % in message', quote_literal('{' || left(placeholder, 100) || '}')
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'A placeholder is {column} or {object_id}, with :0N to pad with zeros to N (1 to 99) characters, e.g. {object_id:07}.';
        END IF;
        col := regexp_replace(placeholder, ':0[1-9][0-9]?$', '');
        IF col <> 'object_id' THEN
            PERFORM webhook._require_column(tbl, col, 'message placeholder');
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION webhook._check_message(text, regclass) IS
    'Checks an event''s message template against its table (internal).';
REVOKE ALL ON FUNCTION webhook._check_message(text, regclass) FROM PUBLIC;

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
                                    'object_id', 'timestamp', 'changes', 'webhook_id',
                                    'notification_id', 'escmsg_id', 'message', 'agent_id') THEN
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
    IF NEW.message IS NOT NULL THEN
        PERFORM webhook._check_message(NEW.message, NEW.table_oid);
    END IF;
    -- the ticket's agent: the parent's column when there is a parent
    IF keeps_author AND NEW.parent_table IS NULL THEN
        NEW.agent_column := NULL;
    ELSIF NEW.agent_column IS NOT NULL THEN
        PERFORM webhook._require_column(COALESCE(NEW.parent_table, NEW.table_oid), NEW.agent_column,
                                        'agent column');
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
    NEW.envelope := lower(NEW.envelope);
    IF NEW.envelope IS NULL OR NEW.envelope NOT IN ('standard', 'halo') THEN
        RAISE EXCEPTION 'invalid envelope %', webhook._quoted(NEW.envelope)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'envelope is standard, or halo for receivers written for Halo''s own webhooks.';
    END IF;
    IF NEW.guid IS NULL OR (TG_OP = 'UPDATE' AND NEW.guid <> OLD.guid) THEN
        RAISE EXCEPTION 'a profile''s guid is made with it and does not change'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Receivers know a profile by it (webhook_id in the halo envelope); leave it out.';
    END IF;
    IF NEW.ignore_origins IS NULL OR cardinality(NEW.ignore_origins) > 100
       OR EXISTS (SELECT 1 FROM unnest(NEW.ignore_origins) AS o
                   WHERE o IS NULL OR o = '' OR length(o) > 64 OR o ~ '[^ -~]') THEN
        RAISE EXCEPTION 'ignore_origins must list at most 100 origins of 1 to 64 printable ASCII characters'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'List the webhook.origin values whose changes this profile does not send, e.g. ''{crm-sync}''; ''{}'' sends every change.';
    END IF;
    NEW.log := lower(NEW.log);
    IF NEW.log IS NULL OR NEW.log NOT IN ('full', 'light') THEN
        RAISE EXCEPTION 'invalid log %', webhook._quoted(NEW.log)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'log is full (bodies and response headers kept) or light (status, attempts, response code, timing and error only).';
    END IF;
    RETURN NEW;
END
$$;

/*
 * Functions whose arguments change are made anew: whoever could call them
 * before still can.
 */
CREATE TEMPORARY TABLE changed_function_grants AS
SELECT p.proname::text AS function, a.grantee, a.is_grantable
  FROM pg_catalog.pg_proc p CROSS JOIN LATERAL pg_catalog.aclexplode(p.proacl) AS a
 WHERE p.oid IN ('webhook.create_profile(text, text, text[], text, text, text, text, jsonb, text, text, interval, int, text, boolean, int, interval[], interval, text[])'::regprocedure,
                 'webhook.alter_profile(text, text, text, text, text, text, jsonb, text, text, interval, int, text, boolean, int, interval[], interval, text, text[])'::regprocedure,
                 'webhook.define_event(text, regclass, text, text[], text, text, text, jsonb)'::regprocedure,
                 'webhook._render(text, text, text, jsonb, bigint, text, text, text, oid, text[], timestamptz, text, json, json, json, text, oid, text, text, oid)'::regprocedure)
   AND a.privilege_type = 'EXECUTE';
DROP FUNCTION webhook.create_profile(text, text, text[], text, text, text, text, jsonb, text, text, interval, int, text, boolean, int, interval[], interval, text[]);
DROP FUNCTION webhook.alter_profile(text, text, text, text, text, text, jsonb, text, text, interval, int, text, boolean, int, interval[], interval, text, text[]);
DROP FUNCTION webhook.define_event(text, regclass, text, text[], text, text, text, jsonb);
DROP FUNCTION webhook._render(text, text, text, jsonb, bigint, text, text, text, oid, text[], timestamptz, text, json, json, json, text, oid, text, text, oid);

/*
 * The envelope of one change for the profile's payload kind and envelope
 * (see README, "What is sent").  Linked rows and the parent are read now,
 * as reader (the event's author).
 */
CREATE FUNCTION webhook._render(id text, profile text, payload text, fields jsonb,
                                binding_id bigint, event text, title text, object text,
                                table_oid oid, key_columns text[], captured_at timestamptz,
                                operation text, row_data json, old_row json, new_row json,
                                parent_object text, parent_table oid, parent_column text,
                                parent_key text, reader oid, envelope text DEFAULT 'standard',
                                profile_guid text DEFAULT NULL, change_id text DEFAULT NULL,
                                message text DEFAULT NULL, agent_column text DEFAULT NULL)
    RETURNS json LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'webhook_render';

CREATE FUNCTION webhook.define_event(event text, on_table regclass, operation text,
                                     columns text[] DEFAULT NULL, condition text DEFAULT NULL,
                                     title text DEFAULT NULL, object text DEFAULT NULL,
                                     parent jsonb DEFAULT NULL, message text DEFAULT NULL)
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
                               key_columns, created_by, search_path, message)
    VALUES (event, on_table, op, columns, condition,
            coalesce(title, initcap(translate(event, '._', '  '))),
            coalesce(object, split_part(event, '.', 1)),
            parent ->> 'object', p_table, parent ->> 'column', p_key,
            keys, current_user::regrole, '', message)
    RETURNING event_id INTO new_id;
    RETURN new_id;
END
$$;
COMMENT ON FUNCTION webhook.define_event(text, regclass, text, text[], text, text, text, jsonb, text) IS
    'Adds an event to the catalogue: a named insert, update or delete on a table, with optional columns, condition, parent and message.';

CREATE OR REPLACE FUNCTION webhook.define_ticket_events(tickets regclass, actions regclass DEFAULT NULL,
                                             agent text DEFAULT 'agent_id',
                                             team text DEFAULT 'team_id',
                                             status text DEFAULT 'status_id',
                                             priority text DEFAULT 'priority_id',
                                             closed_statuses text[] DEFAULT NULL,
                                             action_ticket text DEFAULT 'ticket_id')
    RETURNS SETOF text LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    status_type text;
    closed text;
    v text;
    defined text[] := '{}';
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

    PERFORM webhook.define_event('ticket.created', tickets, 'insert', title => 'New Ticket Logged',
                                     message => 'A new ticket has been logged with Ticket ID: {object_id:07}.', object => 'ticket');
    defined := defined || 'ticket.created'::text;
    RETURN NEXT 'ticket.created';
    PERFORM webhook.define_event('ticket.updated', tickets, 'update', title => 'Ticket Updated',
                                     message => 'Ticket ID: {object_id:07} has been updated.', object => 'ticket');
    defined := defined || 'ticket.updated'::text;
    RETURN NEXT 'ticket.updated';
    IF agent IS NOT NULL THEN
        PERFORM webhook.define_event('ticket.reassigned', tickets, 'update', columns => ARRAY[agent],
                                     title => 'Ticket Reassigned',
                                     message => 'The agent has been changed for Ticket ID: {object_id:07}.', object => 'ticket');
        defined := defined || 'ticket.reassigned'::text;
        RETURN NEXT 'ticket.reassigned';
    END IF;
    IF team IS NOT NULL THEN
        PERFORM webhook.define_event('ticket.team_changed', tickets, 'update', columns => ARRAY[team],
                                     title => 'Ticket Team Changed',
                                     message => 'The team has been changed for Ticket ID: {object_id:07}.', object => 'ticket');
        defined := defined || 'ticket.team_changed'::text;
        RETURN NEXT 'ticket.team_changed';
    END IF;
    IF status IS NOT NULL THEN
        PERFORM webhook.define_event('ticket.status_changed', tickets, 'update', columns => ARRAY[status],
                                     title => 'Ticket Status Changed',
                                     message => 'The status has been changed for Ticket ID: {object_id:07}.', object => 'ticket');
        defined := defined || 'ticket.status_changed'::text;
        RETURN NEXT 'ticket.status_changed';
    END IF;
    IF priority IS NOT NULL THEN
        PERFORM webhook.define_event('ticket.priority_changed', tickets, 'update', columns => ARRAY[priority],
                                     title => 'Ticket Priority Changed',
                                     message => 'The priority has been changed for Ticket ID: {object_id:07}.', object => 'ticket');
        defined := defined || 'ticket.priority_changed'::text;
        RETURN NEXT 'ticket.priority_changed';
    END IF;
    IF closed IS NOT NULL THEN
        PERFORM webhook.define_event('ticket.closed', tickets, 'update', columns => ARRAY[status],
            condition => format('new.%1$I IN (%2$s) AND (old.%1$I IS NULL OR old.%1$I NOT IN (%2$s))', status, closed),
            title => 'Ticket Closed',
                                     message => 'Ticket ID: {object_id:07} has been closed.', object => 'ticket');
        defined := defined || 'ticket.closed'::text;
        RETURN NEXT 'ticket.closed';
        PERFORM webhook.define_event('ticket.reopened', tickets, 'update', columns => ARRAY[status],
            condition => format('old.%1$I IN (%2$s) AND (new.%1$I IS NULL OR new.%1$I NOT IN (%2$s))', status, closed),
            title => 'Ticket Reopened',
                                     message => 'Ticket ID: {object_id:07} has been reopened.', object => 'ticket');
        defined := defined || 'ticket.reopened'::text;
        RETURN NEXT 'ticket.reopened';
    ELSE
        RAISE NOTICE 'ticket.closed and ticket.reopened are not defined: closed_statuses is NULL'
            USING HINT = 'Pass closed_statuses => ''{...}'' (status values) to define them.';
    END IF;
    PERFORM webhook.define_event('ticket.deleted', tickets, 'delete', title => 'Ticket Deleted',
                                     message => 'Ticket ID: {object_id:07} has been deleted.', object => 'ticket');
    defined := defined || 'ticket.deleted'::text;
    RETURN NEXT 'ticket.deleted';
    IF actions IS NOT NULL THEN
        PERFORM webhook.define_event('action.added', actions, 'insert', title => 'Action Added',
                                     message => 'An action has been added to Ticket ID: {object_id:07}.', object => 'action',
            parent => jsonb_build_object('object', 'ticket', 'table', tickets::text, 'column', action_ticket));
        defined := defined || 'action.added'::text;
        RETURN NEXT 'action.added';
    END IF;
    -- the halo envelope's agent_id: the ticket's agent, for its actions too
    -- (of the events defined here only)
    IF agent IS NOT NULL THEN
        UPDATE webhook.event e SET agent_column = agent WHERE e.name = ANY (defined);
    END IF;
END
$$;

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
                                       public_headers text[] DEFAULT '{}',
                                       envelope text DEFAULT 'standard',
                                       ignore_origins text[] DEFAULT '{}', log text DEFAULT 'full')
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
                                 disabled_reason, max_attempts, retry_schedule, timeout, public_headers,
                                 envelope, ignore_origins, log)
    VALUES (name, url, method, auth, username, password, headers, payload,
            batching, batch_wait, batch_max_items, secret, enabled,
            CASE WHEN NOT enabled THEN 'created disabled' END, max_attempts, retry_schedule, timeout,
            public_headers, envelope, ignore_origins, log)
    RETURNING profile_id INTO new_id;
    INSERT INTO webhook.binding (profile_id, event_id, created_by, search_path)
    SELECT new_id, e.event_id, current_user::regrole, ''
      FROM unnest(events) WITH ORDINALITY AS l(name, ord)
      JOIN webhook.event e ON e.name = l.name
     ORDER BY l.ord;
    RETURN new_id;
END
$$;
COMMENT ON FUNCTION webhook.create_profile(text, text, text[], text, text, text, text, jsonb, text, text, interval, int, text, boolean, int, interval[], interval, text[], text, text[], text) IS
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
                                      public_headers text[] DEFAULT NULL,
                                      envelope text DEFAULT NULL,
                                      ignore_origins text[] DEFAULT NULL, log text DEFAULT NULL)
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
        public_headers = coalesce(alter_profile.public_headers, p.public_headers),
        envelope = coalesce(alter_profile.envelope, p.envelope),
        ignore_origins = coalesce(alter_profile.ignore_origins, p.ignore_origins),
        log = coalesce(alter_profile.log, p.log)
     WHERE p.profile_id = id;
    IF enabled THEN
        PERFORM webhook.enable_profile(coalesce(new_name, name));
    ELSIF NOT enabled THEN
        PERFORM webhook.disable_profile(coalesce(new_name, name));
    END IF;
END
$$;
COMMENT ON FUNCTION webhook.alter_profile(text, text, text, text, text, text, jsonb, text, text, interval, int, text, boolean, int, interval[], interval, text, text[], text, text[], text) IS
    'Changes a profile; NULL leaves an option as it is. Deliveries not yet sent go out with the new settings.';

REVOKE ALL ON FUNCTION webhook.create_profile(text, text, text[], text, text, text, text, jsonb, text, text, interval, int, text, boolean, int, interval[], interval, text[], text, text[], text),
                       webhook.alter_profile(text, text, text, text, text, text, jsonb, text, text, interval, int, text, boolean, int, interval[], interval, text, text[], text, text[], text),
                       webhook.define_event(text, regclass, text, text[], text, text, text, jsonb, text),
                       webhook._render(text, text, text, jsonb, bigint, text, text, text, oid, text[], timestamptz, text, json, json, json, text, oid, text, text, oid, text, text, text, text, text)
    FROM PUBLIC;
DO $$
DECLARE
    g record;
BEGIN
    FOR g IN SELECT * FROM changed_function_grants LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION webhook.%I TO %s%s', g.function,
                                  CASE WHEN g.grantee = 0 THEN 'PUBLIC'
                                       ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(g.grantee)) END,
                                  CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
END $$;
DROP TABLE changed_function_grants;

/*
 * The guards check what their caller writes with helpers the caller must
 * be able to run: whoever could run the oldest of them (an administration
 * role given every function) can run the newer ones, _check_message and
 * the _untrusted_reason of 0.2, too.
 */
DO $$
DECLARE
    g record;
BEGIN
    FOR g IN SELECT a.grantee, a.is_grantable, f.helper
               FROM pg_catalog.aclexplode((SELECT p.proacl FROM pg_catalog.pg_proc p
                                            WHERE p.oid = 'webhook._require_column(regclass, text, text)'::regprocedure)) AS a
              CROSS JOIN (VALUES ('webhook._check_message(text, regclass)'),
                                 ('webhook._untrusted_reason(regclass)')) AS f(helper)
              WHERE a.privilege_type = 'EXECUTE' AND a.grantee <> 0
                AND a.grantee <> (SELECT p.proowner FROM pg_catalog.pg_proc p
                                   WHERE p.oid = 'webhook._require_column(regclass, text, text)'::regprocedure)
    LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %I%s', g.helper,
                                  pg_catalog.pg_get_userbyid(g.grantee),
                                  CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
END $$;

-- the new options, shown
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
       p.created_at, p.public_headers, p.envelope, p.guid, p.ignore_origins, p.log
  FROM webhook.profile p;

CREATE OR REPLACE VIEW webhook.events AS
SELECT e.name AS event, e.table_oid AS on_table, e.operation, e.columns, e.condition,
       e.title, e.object,
       CASE WHEN e.parent_table IS NOT NULL THEN
           pg_catalog.jsonb_build_object('object', e.parent_object, 'table', e.parent_table::text,
                                         'column', e.parent_column)
       END AS parent,
       e.key_columns,
       (SELECT count(*) FROM webhook.binding b WHERE b.event_id = e.event_id)::int AS bindings,
       e.created_by, e.created_at, e.message, e.agent_column
  FROM webhook.event e;

-- preview makes the halo envelope too
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
        EXECUTE pg_catalog.format('SELECT pg_catalog.to_json(t.*) FROM %s AS t WHERE %s', ev.table_oid, key_sql)
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
                                ev.created_by, p.envelope, p.guid::text,
                                pg_catalog.gen_random_uuid()::text, ev.message, ev.agent_column);
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

/*
 * A delivery of a profile that logs light keeps no body once it is
 * delivered or failed (JSON null): it cannot be sent again.
 */
CREATE OR REPLACE FUNCTION webhook.redeliver(delivery bigint) RETURNS bigint
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
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
    IF source.body::text = 'null' THEN
        RAISE EXCEPTION 'delivery % cannot be sent again: its body was not kept', delivery
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Its profile logs light: a delivery keeps no body once it is delivered or failed.',
                  HINT = 'Use webhook.alter_profile(..., log => ''full'') for deliveries to come.';
    END IF;
    new_id := webhook._resend(source);
    PERFORM webhook._wake();
    RETURN new_id;
END
$$;

CREATE OR REPLACE FUNCTION webhook.replay(profile text, since timestamptz, status text DEFAULT 'failed')
    RETURNS int LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    id bigint := webhook._profile_id(profile);
    n int;
    unkept bigint;
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
    -- one statement, one snapshot: a delivery finished meanwhile is either
    -- seen with its body gone, or not at all; the error undoes the resends
    SELECT count(*) FILTER (WHERE x.unkept), count(webhook._resend(x.d)) FILTER (WHERE NOT x.unkept)
      INTO unkept, n
      FROM (SELECT d,
                   -- (a body kept is not read for this: it is larger)
                   CASE WHEN pg_catalog.pg_column_size(d.body) <= 8 THEN d.body::text = 'null'
                        ELSE false END AS unkept
              FROM webhook.delivery d
             WHERE d.profile_id = id AND d.status = replay.status AND d.created_at >= since) AS x;
    IF unkept > 0 THEN
        RAISE EXCEPTION '% of these deliveries cannot be sent again: their bodies were not kept', unkept
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'They were made while the profile logged light: a delivery keeps no body once it is delivered or failed.',
                  HINT = 'Replay from a later time, or use webhook.alter_profile(..., log => ''full'') for deliveries to come.';
    END IF;
    IF n > 0 THEN
        PERFORM webhook._wake();
    END IF;
    RETURN n;
END
$$;
