/* webhook--0.9--0.10.sql: deadline events, NOTIFY webhook_failures */

\echo Use "ALTER EXTENSION webhook UPDATE TO '0.10'" to load this file. \quit

/*
 * A deadline event fires when now() reaches a row's due time less its
 * `before`: due names a timestamptz column of the table or is an expression
 * over new.  The capture triggers append to webhook.deadline the due times
 * that writes set: a row inserted with one, a row whose due time (or key)
 * changed.  The worker takes what is due by the index on fire_at, reads the
 * row as it is then, with the event author's rights, and queues it as a
 * change of the event if its due time is still that one and the conditions
 * hold; the entries it took are deleted.  So a deleted row, a due time
 * cleared or moved costs the writer nothing: its entry is dropped when it
 * comes due, for it is no longer the row's.
 */
ALTER TABLE webhook.event DROP CONSTRAINT event_operation_check,
    ADD CONSTRAINT event_operation_check CHECK (operation IN ('insert', 'update', 'delete', 'deadline')),
    ADD COLUMN due text,
    ADD COLUMN due_before interval,
    ADD COLUMN due_column text;        -- due names this timestamptz column (NULL: an expression)

CREATE TABLE webhook.deadline (
    event_id bigint NOT NULL,
    row_key  text NOT NULL,             -- the row's key values, as a JSON array of text
    due      timestamptz NOT NULL,
    fire_at  timestamptz NOT NULL       -- due - the event's before
)
WITH (autovacuum_vacuum_scale_factor = 0.02);
-- what is due next, in the worker's order: its one look, however many rows
-- wait; a row's due time written twice is two neighbours
CREATE INDEX deadline_fire_idx ON webhook.deadline (fire_at, event_id, row_key);
COMMENT ON TABLE webhook.deadline IS 'Due times of deadline events written and not reached yet.';
SELECT pg_catalog.pg_extension_config_dump('webhook.deadline', '');
REVOKE ALL ON webhook.deadline FROM PUBLIC;
-- written by the capture triggers and the worker only, as the queue is
CREATE TRIGGER deadline_guard BEFORE INSERT OR UPDATE ON webhook.deadline
    FOR EACH ROW WHEN (NOT webhook._restoring()) EXECUTE FUNCTION webhook._occurrence_guard();

CREATE FUNCTION webhook._check_due(expr text, tbl regclass) RETURNS void
    LANGUAGE c STRICT SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'webhook_check_due';
COMMENT ON FUNCTION webhook._check_due(text, regclass) IS
    'Refuses anything but one timestamptz SQL expression over new, a row of the table (internal).';
REVOKE ALL ON FUNCTION webhook._check_due(text, regclass) FROM PUBLIC;

-- The primary key of a table, its columns in order ('{}': it has none).
CREATE FUNCTION webhook._key_columns(tbl regclass) RETURNS text[]
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(array_agg(a.attname::text ORDER BY k.ord), '{}')
      FROM pg_catalog.pg_index i
      CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
      JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
     WHERE i.indrelid = tbl AND i.indisprimary
$$;
COMMENT ON FUNCTION webhook._key_columns(regclass) IS 'The primary key columns of a table, in order (internal).';
REVOKE ALL ON FUNCTION webhook._key_columns(regclass) FROM PUBLIC;

-- An event's parent, {"object", "table", "column"}: its table and that table's key.
CREATE FUNCTION webhook._parent_of(parent jsonb, on_table regclass,
                                   OUT parent_table regclass, OUT parent_key text)
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
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
    parent_table := CASE WHEN strpos(parent ->> 'table', '.') > 0 THEN to_regclass(parent ->> 'table')
                         ELSE to_regclass(format('%I.%s', (SELECT n.nspname FROM pg_namespace n
                                                            JOIN pg_class c ON c.relnamespace = n.oid
                                                           WHERE c.oid = on_table),
                                                 parent ->> 'table')) END;
    IF parent_table IS NULL THEN
        RAISE EXCEPTION 'parent table % does not exist', quote_literal(parent ->> 'table')
            USING ERRCODE = 'undefined_table',
                  HINT = 'Name the table that the parent column points to; without a schema, it is looked for in the schema of on_table.';
    END IF;
    SELECT a.attname INTO parent_key
      FROM pg_catalog.pg_index i
      JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
     WHERE i.indrelid = parent_table AND i.indisprimary AND i.indnatts = 1;
    IF parent_key IS NULL THEN
        RAISE EXCEPTION 'parent table % has no single-column primary key', parent_table
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The parent row is found by its primary key.';
    END IF;
END
$$;
COMMENT ON FUNCTION webhook._parent_of(jsonb, regclass) IS
    'The table and key of an event''s parent, checked (internal).';
REVOKE ALL ON FUNCTION webhook._parent_of(jsonb, regclass) FROM PUBLIC;

/*
 * The guard of the event catalogue, with deadline events: a due time (a
 * timestamptz column, or an expression over new), a before of zero or
 * more, a primary key to find the row again by, and rows the worker can
 * read as the author (it reads them when they are due).
 */
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
    IF TG_OP = 'UPDATE' AND OLD.operation = 'deadline'
       AND (NEW.due, NEW.due_before, NEW.due_column, NEW.key_columns)
           IS DISTINCT FROM (OLD.due, OLD.due_before, OLD.due_column, OLD.key_columns) THEN
        RAISE EXCEPTION 'the due time and key of deadline event % cannot change', quote_literal(OLD.name)
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Define a new deadline event instead (the rows are scheduled when it is defined).';
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
    IF NEW.operation IS NULL OR NEW.operation NOT IN ('insert', 'update', 'delete', 'deadline') THEN
        RAISE EXCEPTION 'invalid operation %', webhook._quoted(NEW.operation)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The operation is insert, update or delete (deadline events are defined by define_deadline_event).';
    END IF;
    IF NEW.operation = 'deadline' THEN
        IF NEW.due IS NULL OR NEW.due_before IS NULL THEN
            RAISE EXCEPTION 'a deadline event needs a due time and a before'
                USING ERRCODE = 'null_value_not_allowed',
                      HINT = 'Name a timestamptz column, or write an expression over new, e.g. due => ''due_at''.';
        END IF;
        IF NEW.due_before < interval '0' OR NEW.due_before > interval '100 years' THEN
            RAISE EXCEPTION 'before must be between 0 and 100 years, got %', NEW.due_before
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'The event fires when now() reaches the due time less before, e.g. before => ''1 hour''.';
        END IF;
        IF TG_OP = 'INSERT' THEN
            -- whether due is a column is decided once, here: a column renamed
            -- later is never read as an expression
            NEW.due_column := NULL;
            IF EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = NEW.table_oid AND a.attname = NEW.due
                          AND a.attnum > 0 AND NOT a.attisdropped) THEN
                IF NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = NEW.table_oid AND a.attname = NEW.due
                                  AND a.attnum > 0 AND NOT a.attisdropped AND a.atttypid = 'timestamptz'::regtype) THEN
                    RAISE EXCEPTION 'due column % is not of type timestamptz', quote_ident(NEW.due)
                        USING ERRCODE = 'datatype_mismatch',
                              HINT = 'Name a timestamptz column, or convert it in an expression, e.g. due => ''new.due_on::timestamptz''.';
                END IF;
                NEW.due_column := NEW.due;
            END IF;
            IF cardinality(NEW.key_columns) = 0 THEN
                RAISE EXCEPTION 'table % has no primary key', NEW.table_oid
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'A deadline event finds its row again by the primary key when it is due.';
            END IF;
            IF NEW.key_columns IS DISTINCT FROM webhook._key_columns(NEW.table_oid) THEN
                RAISE EXCEPTION 'the key columns of a deadline event are its table''s primary key'
                    USING ERRCODE = 'invalid_parameter_value', HINT = 'Define it with webhook.define_deadline_event.';
            END IF;
        END IF;
        -- an expression runs as its author: whoever writes the event, checked as for a new one
        IF NEW.due_column IS NULL THEN
            PERFORM webhook._check_due(NEW.due, NEW.table_oid);
        END IF;
        -- keys are read back from their text as the author: built-in types only,
        -- whose casts no role but a superuser can write, and whose text is one
        IF NOT webhook._deadline_keys_supported(NEW.table_oid, NEW.key_columns) THEN
            RAISE EXCEPTION 'the primary key of table % has a column of a type deadline events do not support',
                            NEW.table_oid
                USING ERRCODE = 'feature_not_supported',
                      HINT = 'Key columns of a deadline event''s table are of type smallint, integer, bigint, numeric, text, varchar, uuid, date, timestamp, timestamptz or boolean.';
        END IF;
        IF NOT has_table_privilege(NEW.table_oid, 'SELECT') THEN
            RAISE EXCEPTION 'permission denied for table %', NEW.table_oid
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'A deadline event reads its row when it is due: you need SELECT on the table.';
        END IF;
        untrusted := webhook._untrusted_reason(NEW.table_oid);
        IF untrusted IS NOT NULL THEN
            RAISE EXCEPTION 'the rows of table % cannot be read for deadline events', NEW.table_oid
                USING ERRCODE = 'insufficient_privilege', DETAIL = pg_catalog.initcap(left(untrusted, 1)) || substr(untrusted, 2) || '.',
                      HINT = 'Rows read as another role may use only types, casts, checks and policies of the system or of superusers.';
        END IF;
    ELSIF NEW.due IS NOT NULL OR NEW.due_before IS NOT NULL OR NEW.due_column IS NOT NULL THEN
        RAISE EXCEPTION 'a due time is only for deadline events'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Define it with webhook.define_deadline_event.';
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

/*
 * The key columns of a deadline event's table are read back from their
 * text, as the author: built-in types only, whose casts no role but a
 * superuser can write, and whose text is the same by a cast and by the
 * output function.
 */
CREATE FUNCTION webhook._deadline_keys_supported(tbl regclass, keys text[]) RETURNS boolean
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT count(a.attname) = cardinality(keys)
           AND bool_and(a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype, 'numeric'::regtype,
                                       'text'::regtype, 'varchar'::regtype, 'uuid'::regtype, 'date'::regtype,
                                       'timestamp'::regtype, 'timestamptz'::regtype, 'bool'::regtype))
      FROM unnest(keys) AS k
      JOIN pg_attribute a ON a.attrelid = tbl AND a.attname = k AND a.attnum > 0 AND NOT a.attisdropped
$$;
COMMENT ON FUNCTION webhook._deadline_keys_supported(regclass, text[]) IS
    'Whether the key columns of a deadline event''s table are of the types it supports (internal).';
REVOKE ALL ON FUNCTION webhook._deadline_keys_supported(regclass, text[]) FROM PUBLIC;

/*
 * The due time of a deadline event over a row (row_expr, of the event's
 * table), as SQL: its column, or the function that holds its expression
 * (made by _sync_triggers, owned by the author, answering only inside a
 * capture of its table given the capture key, $1).
 */
CREATE FUNCTION webhook._due_sql(e webhook.event, row_expr text) RETURNS text
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN e.due_column IS NOT NULL THEN format('(%s).%I', row_expr, e.due_column)
                ELSE format('webhook.%I(%s, $1)', '_due_e' || e.event_id, row_expr) END
$$;
REVOKE ALL ON FUNCTION webhook._due_sql(webhook.event, text) FROM PUBLIC;

-- A row's key (row_expr, of a table with key columns keys), as the text of a JSON array of text.
CREATE FUNCTION webhook._row_key_sql(keys text[], row_expr text) RETURNS text
    LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT format('pg_catalog.to_json(ARRAY[%s]::pg_catalog.text[])::pg_catalog.text',
                  (SELECT string_agg(format('(%s).%I::pg_catalog.text', row_expr, k), ', ' ORDER BY o)
                     FROM unnest(keys) WITH ORDINALITY AS u(k, o)))
$$;
REVOKE ALL ON FUNCTION webhook._row_key_sql(text[], text) FROM PUBLIC;

/*
 * The due times a statement sets for the deadline events of a table whose
 * due time is an expression (the column ones are read by the capture
 * trigger itself): a SELECT of (event_id, row_key, due) over the transition
 * tables (op insert, update) or over the table itself (op 'existing', for a
 * new event: the rows whose due time is still to come), run as the writer.
 * An update sets only the rows whose due time or key changed.  NULL:
 * nothing to schedule (a delete never schedules).
 */
CREATE FUNCTION webhook._schedule_query(tbl regclass, op text, only_event bigint DEFAULT NULL) RETURNS text
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e webhook.event;
    typ text := tbl::text;
    parts text[] := '{}';
    new_due text;
    old_due text;
    new_key text;
    old_key text;
BEGIN
    FOR e IN SELECT * FROM webhook.event ev
              WHERE ev.table_oid = tbl AND ev.operation = 'deadline'
                AND (only_event IS NULL OR ev.event_id = only_event)
              ORDER BY ev.event_id LOOP
        new_due := webhook._due_sql(e, 'n.r');
        old_due := webhook._due_sql(e, 'o.r');
        new_key := webhook._row_key_sql(e.key_columns, 'n.r');
        old_key := webhook._row_key_sql(e.key_columns, 'o.r');
        IF op = 'insert' THEN
            parts := parts || format('SELECT %s::int8, %s, %s FROM (SELECT (t.*)::%s AS r FROM webhook_new AS t) AS n'
                                     ' WHERE %s IS NOT NULL', e.event_id, new_key, new_due, typ, new_due);
        ELSIF op = 'existing' THEN
            parts := parts || format('SELECT %s::int8, %s, %s FROM (SELECT (t.*)::%s AS r FROM %s AS t) AS n'
                                     ' WHERE %s > pg_catalog.now()', e.event_id, new_key, new_due, typ, typ, new_due);
        ELSIF op = 'update' THEN
            -- the old and new transition tables hold the rows in the same order
            parts := parts || format(
                'SELECT %1$s::int8, c.new_key, c.new_due FROM (SELECT %2$s AS new_key, %3$s AS old_key,'
                ' %4$s AS new_due, %5$s AS old_due'
                ' FROM (SELECT pg_catalog.row_number() OVER () AS i, (t.*)::%6$s AS r FROM webhook_new AS t) AS n'
                ' JOIN (SELECT pg_catalog.row_number() OVER () AS i, (t.*)::%6$s AS r FROM webhook_old AS t) AS o'
                ' ON o.i = n.i) AS c'
                ' WHERE c.new_due IS NOT NULL AND (c.new_due IS DISTINCT FROM c.old_due OR c.new_key <> c.old_key)',
                e.event_id, new_key, old_key, new_due, old_due, typ);
        END IF;
    END LOOP;
    IF cardinality(parts) = 0 THEN
        RETURN NULL;
    END IF;
    RETURN 'SELECT * FROM (' || array_to_string(parts, ' UNION ALL ') || ') AS s(event_id, row_key, due)';
END
$$;
COMMENT ON FUNCTION webhook._schedule_query(regclass, text, bigint) IS
    'What a statement changes of the schedule of a table''s deadline events, as a query (internal).';
REVOKE ALL ON FUNCTION webhook._schedule_query(regclass, text, bigint) FROM PUBLIC;

/*
 * The capture plan gains the schedule of the table's deadline events, in
 * the order of their ids: per event, the query of the due times a statement
 * sets (schedule; NULL for an event whose due time is a column, which the
 * trigger reads itself, and for a delete), one per event so that one whose
 * due time fails costs only its own; and what to queue when it fails
 * (schedule_fallback, NULL for an event without bindings: the changed rows,
 * for every binding of that event, recorded as failed deliveries with the
 * error).  Empty for a delete, which schedules nothing.
 */
DROP FUNCTION webhook._capture_plan(regclass, text);
CREATE FUNCTION webhook._capture_plan(tbl regclass, op text,
                                      OUT query text, OUT fallback text, OUT bindings bigint[],
                                      OUT schedule text[], OUT schedule_fallback text[])
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b record;
    typ text := tbl::text;
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
    SELECT array_agg(CASE WHEN NOT e.due_is_column THEN webhook._schedule_query(tbl, op, e.event_id) END
                     ORDER BY e.event_id),
           array_agg(CASE WHEN NOT e.due_is_column AND x.ids IS NOT NULL THEN
                         format('SELECT %L::int8[] AS bindings, pg_catalog.to_json(t.*) AS new_row,'
                                ' NULL::json AS old_row FROM webhook_new AS t', x.ids) END
                     ORDER BY e.event_id)
      INTO schedule, schedule_fallback
      FROM (SELECT ev.event_id, ev.due_column IS NOT NULL AS due_is_column
              FROM webhook.event ev WHERE ev.table_oid = tbl AND ev.operation = 'deadline') AS e
      LEFT JOIN LATERAL (SELECT array_agg(y.binding_id ORDER BY y.binding_id) AS ids
                           FROM webhook.binding y WHERE y.event_id = e.event_id) AS x ON true
     WHERE op <> 'delete';

    FOR b IN SELECT * FROM webhook._capture_conditions(tbl, op) LOOP
        ids := ids || b.binding_id;
        user_sql := user_sql OR b.user_sql;
        IF b.condition IS NULL THEN
            parts := parts || format('%s::int8', b.binding_id);
            any_unconditional := true;
        ELSE
            conditional := true;
            parts := parts || format('CASE WHEN COALESCE(%s, false) THEN %s::int8 END',
                                     b.condition, b.binding_id);
            filters := filters || format('COALESCE(%s, false)', b.condition);
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
    'What the capture trigger of a table and operation queues and schedules (internal).';
REVOKE ALL ON FUNCTION webhook._capture_plan(regclass, text) FROM PUBLIC;

/*
 * What the worker runs when rows of a deadline event are due: a SELECT of
 * the rows ($2, their keys; $3, the due times they were written with) as
 * they are now and still due then, with the bindings whose conditions hold
 * (the event's condition too), run as the author; and the fallback, run
 * when that fails or cannot be made (problem): every binding, the keys
 * only, to be recorded as failed deliveries with the error.  No query and
 * no problem: the event has no bindings.
 */
CREATE FUNCTION webhook._deadline_plan(ev bigint, OUT query text, OUT fallback text,
                                       OUT author oid, OUT tbl oid, OUT problem text)
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e webhook.event;
    b record;
    typ text;
    parts text[] := '{}';
    ids bigint[] := '{}';
    key_match text;
    found_keys int;
BEGIN
    SELECT * INTO e FROM webhook.event x WHERE x.event_id = ev AND x.operation = 'deadline';
    IF NOT FOUND THEN
        RETURN;
    END IF;
    author := e.created_by;
    tbl := e.table_oid;
    typ := e.table_oid::regclass::text;
    FOR b IN SELECT c.* FROM webhook._capture_conditions(e.table_oid, 'deadline') c
               JOIN webhook.binding x ON x.binding_id = c.binding_id
              WHERE x.event_id = ev LOOP
        ids := ids || b.binding_id;
        parts := parts || CASE WHEN b.condition IS NULL THEN format('%s::int8', b.binding_id)
                               ELSE format('CASE WHEN COALESCE(%s, false) THEN %s::int8 END',
                                           b.condition, b.binding_id) END;
    END LOOP;
    IF cardinality(ids) = 0 THEN
        RETURN;
    END IF;
    fallback := format('SELECT %L::int8[] AS bindings,'
                       ' pg_catalog.json_build_object(''row_key'', k.row_key::pg_catalog.json) AS new_row,'
                       ' NULL::json AS old_row FROM pg_catalog.unnest($2::text[]) AS k(row_key)', ids);
    SELECT string_agg(format('t.%I = (k.row_key::pg_catalog.json ->> %s)::%s', a.attname, u.o - 1,
                             pg_catalog.format_type(a.atttypid, NULL)), ' AND ' ORDER BY u.o), count(a.attname)
      INTO key_match, found_keys
      FROM unnest(e.key_columns) WITH ORDINALITY AS u(k, o)
      LEFT JOIN pg_attribute a ON a.attrelid = e.table_oid AND a.attname = u.k AND a.attnum > 0 AND NOT a.attisdropped;
    IF found_keys <> cardinality(e.key_columns) OR NOT webhook._deadline_keys_supported(e.table_oid, e.key_columns) THEN
        problem := format('a key column of table %s (%s) is gone, or of a type deadline events do not support',
                          typ, array_to_string(e.key_columns, ', '));
        RETURN;
    END IF;
    IF e.due_column IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_attribute a
                                                 WHERE a.attrelid = e.table_oid AND a.attname = e.due_column
                                                   AND a.attnum > 0 AND NOT a.attisdropped
                                                   AND a.atttypid = 'timestamptz'::regtype) THEN
        problem := format('the due column %s of table %s is gone, or no longer of type timestamptz',
                          quote_ident(e.due_column), typ);
        RETURN;
    END IF;
    query := format('SELECT m.ids AS bindings, pg_catalog.to_json(n.r) AS new_row, NULL::json AS old_row'
                    ' FROM (SELECT (t.*)::%1$s AS r FROM ROWS FROM (pg_catalog.unnest($2::text[]), pg_catalog.unnest($3::timestamptz[])) AS k(row_key, due)'
                    '        JOIN %1$s AS t ON %2$s WHERE %3$s = k.due) AS n'
                    ' CROSS JOIN (SELECT NULL::%1$s AS r) AS o'
                    ' CROSS JOIN LATERAL (SELECT pg_catalog.array_remove(ARRAY[%4$s], NULL) AS ids) AS m'
                    ' WHERE pg_catalog.cardinality(m.ids) > 0',
                    typ, key_match, webhook._due_sql(e, '(t.*)::' || typ), array_to_string(parts, ', '));
END
$$;
COMMENT ON FUNCTION webhook._deadline_plan(bigint) IS
    'What the worker runs when rows of a deadline event are due (internal).';
REVOKE ALL ON FUNCTION webhook._deadline_plan(bigint) FROM PUBLIC;

/*
 * The triggers of a table follow its bindings and its deadline events (a
 * deadline event keeps its schedule whether bound or not, so that binding
 * it later finds the rows' due times already there); the due times
 * written as expressions run in functions owned by their author, as
 * conditions do.
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
    FOR b IN SELECT 'e' || e.event_id AS id, e.condition AS expr, e.created_by, e.search_path, 'boolean' AS returns
               FROM webhook.event e
              WHERE e.table_oid = tbl AND e.condition IS NOT NULL
                AND EXISTS (SELECT 1 FROM webhook.binding x WHERE x.event_id = e.event_id)
             UNION ALL
             SELECT 'b' || x.binding_id, x.condition_sql, x.created_by, x.search_path, 'boolean'
               FROM webhook.binding x JOIN webhook.event e ON e.event_id = x.event_id
              WHERE e.table_oid = tbl AND x.condition_sql IS NOT NULL
             UNION ALL
             SELECT 'due_e' || e.event_id, e.due, e.created_by, e.search_path, 'timestamptz'
               FROM webhook.event e
              WHERE e.table_oid = tbl AND e.operation = 'deadline' AND e.due_column IS NULL LOOP
        fn := format('webhook.%I', CASE WHEN b.returns = 'boolean' THEN '_condition_' || b.id ELSE '_' || b.id END);
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
        IF b.returns = 'boolean' THEN
            EXECUTE format('CREATE OR REPLACE FUNCTION %s(new %s, old %s, _webhook_capture_key int8) RETURNS boolean'
                           ' LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT'
                           ' AS %L', fn, typ, typ,
                           format('SELECT CASE WHEN webhook._capturing(%L::pg_catalog.regclass, _webhook_capture_key)'
                                  ' THEN (%s) END', typ, b.expr));
        ELSE
            EXECUTE format('CREATE OR REPLACE FUNCTION %s(new %s, _webhook_capture_key int8) RETURNS timestamptz'
                           ' LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT'
                           ' AS %L', fn, typ,
                           format('SELECT CASE WHEN webhook._capturing(%L::pg_catalog.regclass, _webhook_capture_key)'
                                  ' THEN (%s) END', typ, b.expr));
        END IF;
        PERFORM set_config('search_path', 'pg_catalog, pg_temp', true);
        EXECUTE format('ALTER FUNCTION %s OWNER TO %I', fn || CASE WHEN b.returns = 'boolean'
                                                                  THEN format('(%s, %s, int8)', typ, typ)
                                                                  ELSE format('(%s, int8)', typ) END,
                       (SELECT rolname FROM pg_roles WHERE oid = b.created_by));
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', fn || CASE WHEN b.returns = 'boolean'
                                                                  THEN format('(%s, %s, int8)', typ, typ)
                                                                  ELSE format('(%s, int8)', typ) END);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO PUBLIC', fn || CASE WHEN b.returns = 'boolean'
                                                                  THEN format('(%s, %s, int8)', typ, typ)
                                                                  ELSE format('(%s, int8)', typ) END);
    END LOOP;

    FOREACH op IN ARRAY ARRAY['insert', 'update', 'delete'] LOOP
        trigger_name := 'webhook_capture_' || op;
        SELECT * INTO plan FROM webhook._capture_plan(tbl, op);
        IF plan.query IS NULL AND plan.bindings IS NULL AND plan.schedule IS NULL THEN
            IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = tbl AND tgname = trigger_name) THEN
                EXECUTE format('DROP TRIGGER %I ON %s', trigger_name, tbl);
            END IF;
            CONTINUE;
        END IF;
        -- the trigger's one argument names the plan's version: an unchanged
        -- plan leaves the trigger, and its table's lock, alone
        version := md5(concat_ws('/', plan.query, plan.fallback, plan.bindings::text,
                                 plan.schedule, plan.schedule_fallback));
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

    -- functions of conditions and due times that are gone
    FOR fn IN SELECT p.oid::regprocedure::text FROM pg_proc p
               WHERE p.pronamespace = 'webhook'::regnamespace
                 AND p.proname ~ '^_(condition_[eb]|due_e)[0-9]+$'
                 AND NOT EXISTS (SELECT 1 FROM webhook.event e
                                  WHERE p.proname = '_condition_e' || e.event_id
                                    AND e.condition IS NOT NULL
                                    AND EXISTS (SELECT 1 FROM webhook.binding x WHERE x.event_id = e.event_id))
                 AND NOT EXISTS (SELECT 1 FROM webhook.binding x
                                  WHERE p.proname = '_condition_b' || x.binding_id
                                    AND x.condition_sql IS NOT NULL)
                 AND NOT EXISTS (SELECT 1 FROM webhook.event e
                                  WHERE p.proname = '_due_e' || e.event_id AND e.operation = 'deadline') LOOP
        EXECUTE 'DROP FUNCTION ' || fn;
    END LOOP;
END
$$;

/*
 * A new deadline event: its table's triggers keep its schedule from now on,
 * and the rows already there whose due time is to come are scheduled, their
 * due times worked out as the event's author (C: webhook_deadline_defined).
 * One dropped takes its schedule with it.
 */
CREATE FUNCTION webhook._deadline_defined() RETURNS trigger
    LANGUAGE c SET search_path = pg_catalog, pg_temp AS 'MODULE_PATHNAME', 'webhook_deadline_defined';
REVOKE ALL ON FUNCTION webhook._deadline_defined() FROM PUBLIC;
CREATE TRIGGER deadline_defined AFTER INSERT ON webhook.event
    FOR EACH ROW WHEN (NEW.operation = 'deadline' AND NOT webhook._restoring())
    EXECUTE FUNCTION webhook._deadline_defined();

CREATE FUNCTION webhook._deadline_dropped() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM webhook.deadline d WHERE d.event_id = OLD.event_id;
    PERFORM webhook._sync_triggers(OLD.table_oid);
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION webhook._deadline_dropped() FROM PUBLIC;
CREATE TRIGGER deadline_dropped AFTER DELETE ON webhook.event
    FOR EACH ROW WHEN (OLD.operation = 'deadline') EXECUTE FUNCTION webhook._deadline_dropped();

-- define_event finds the key and the parent with the helpers above
CREATE OR REPLACE FUNCTION webhook.define_event(event text, on_table regclass, operation text,
                                                columns text[] DEFAULT NULL, condition text DEFAULT NULL,
                                                title text DEFAULT NULL, object text DEFAULT NULL,
                                                parent jsonb DEFAULT NULL, message text DEFAULT NULL)
    RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    op text := lower(btrim(operation));
    p_table regclass;
    p_key text;
    new_id bigint;
BEGIN
    IF on_table IS NULL THEN
        RAISE EXCEPTION 'on_table must not be NULL'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Name the table whose changes the event is about.';
    END IF;
    IF op = 'deadline' THEN
        RAISE EXCEPTION 'a deadline event is defined with define_deadline_event'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'For example: webhook.define_deadline_event(''ticket.deadline'', ''tickets'', due => ''due_at'').';
    END IF;
    IF EXISTS (SELECT 1 FROM webhook.event e WHERE e.name = define_event.event) THEN
        RAISE EXCEPTION 'event % already exists', quote_literal(event)
            USING ERRCODE = 'duplicate_object', HINT = 'Choose another name, or drop it with webhook.drop_event.';
    END IF;
    IF parent IS NOT NULL THEN
        SELECT * INTO p_table, p_key FROM webhook._parent_of(parent, on_table);
    END IF;

    -- the guard trigger checks the rest, privileges included
    INSERT INTO webhook.event (name, table_oid, operation, columns, condition, title, object,
                               parent_object, parent_table, parent_column, parent_key,
                               key_columns, created_by, search_path, message)
    VALUES (event, on_table, op, columns, condition,
            coalesce(title, initcap(translate(event, '._', '  '))),
            coalesce(object, split_part(event, '.', 1)),
            parent ->> 'object', p_table, parent ->> 'column', p_key,
            webhook._key_columns(on_table), current_user::regrole, '', message)
    RETURNING event_id INTO new_id;
    RETURN new_id;
END
$$;

CREATE FUNCTION webhook.define_deadline_event(event text, on_table regclass, due text,
                                              before interval DEFAULT '0', condition text DEFAULT NULL,
                                              title text DEFAULT NULL, object text DEFAULT NULL,
                                              parent jsonb DEFAULT NULL, message text DEFAULT NULL)
    RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p_table regclass;
    p_key text;
    new_id bigint;
BEGIN
    IF on_table IS NULL OR due IS NULL OR before IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', CASE WHEN on_table IS NULL THEN 'on_table'
                                                  WHEN due IS NULL THEN 'due' ELSE 'before' END
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Name the table, its timestamptz column (or an expression over new) and how long before to fire, e.g. ''1 hour'' or ''0''.';
    END IF;
    IF EXISTS (SELECT 1 FROM webhook.event e WHERE e.name = define_deadline_event.event) THEN
        RAISE EXCEPTION 'event % already exists', quote_literal(event)
            USING ERRCODE = 'duplicate_object', HINT = 'Choose another name, or drop it with webhook.drop_event.';
    END IF;
    IF parent IS NOT NULL THEN
        SELECT * INTO p_table, p_key FROM webhook._parent_of(parent, on_table);
    END IF;

    -- the guard trigger checks the rest; deadline_defined schedules the rows there
    INSERT INTO webhook.event (name, table_oid, operation, condition, title, object,
                               parent_object, parent_table, parent_column, parent_key,
                               key_columns, created_by, search_path, message, due, due_before)
    VALUES (event, on_table, 'deadline', condition,
            coalesce(title, initcap(translate(event, '._', '  '))),
            coalesce(object, split_part(event, '.', 1)),
            parent ->> 'object', p_table, parent ->> 'column', p_key,
            webhook._key_columns(on_table), current_user::regrole, '', message, btrim(due), before)
    RETURNING event_id INTO new_id;
    RETURN new_id;
END
$$;
COMMENT ON FUNCTION webhook.define_deadline_event(text, regclass, text, interval, text, text, text, jsonb, text) IS
    'Adds a deadline event: it fires once for a row and due time, when now() reaches the due time less before.';
REVOKE ALL ON FUNCTION webhook.define_deadline_event(text, regclass, text, interval, text, text, text, jsonb, text) FROM PUBLIC;

-- define_ticket_events gains ticket.deadline (Halo's Ticket Deadline)
CREATE TEMPORARY TABLE changed_function_grants AS
SELECT p.proname::text AS function, a.grantee, a.is_grantable
  FROM pg_catalog.pg_proc p CROSS JOIN LATERAL pg_catalog.aclexplode(p.proacl) AS a
 WHERE p.oid = 'webhook.define_ticket_events(regclass, regclass, text, text, text, text, text[], text)'::regprocedure
   AND a.privilege_type = 'EXECUTE';
DROP FUNCTION webhook.define_ticket_events(regclass, regclass, text, text, text, text, text[], text);

CREATE FUNCTION webhook.define_ticket_events(tickets regclass, actions regclass DEFAULT NULL,
                                             agent text DEFAULT 'agent_id',
                                             team text DEFAULT 'team_id',
                                             status text DEFAULT 'status_id',
                                             priority text DEFAULT 'priority_id',
                                             closed_statuses text[] DEFAULT NULL,
                                             action_ticket text DEFAULT 'ticket_id',
                                             deadline text DEFAULT NULL)
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
    IF deadline IS NOT NULL THEN PERFORM webhook._require_column(tickets, deadline, 'deadline'); END IF;
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
    IF deadline IS NOT NULL THEN
        -- a closed ticket has no deadline to miss
        PERFORM webhook.define_deadline_event('ticket.deadline', tickets, deadline,
            condition => CASE WHEN closed IS NOT NULL THEN
                             format('new.%1$I IS NULL OR new.%1$I NOT IN (%2$s)', status, closed) END,
            title => 'Ticket Deadline',
            message => 'The deadline has been reached for Ticket ID: {object_id:07}.', object => 'ticket');
        defined := defined || 'ticket.deadline'::text;
        RETURN NEXT 'ticket.deadline';
    END IF;
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
COMMENT ON FUNCTION webhook.define_ticket_events(regclass, regclass, text, text, text, text, text[], text, text) IS
    'Defines the standard ticket events on a tickets table (and an actions table), ticket.deadline when a deadline column is named; returns their names.';
REVOKE ALL ON FUNCTION webhook.define_ticket_events(regclass, regclass, text, text, text, text, text[], text, text) FROM PUBLIC;

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
 * Whoever can define events can define deadline events; whoever can run
 * the guards' oldest helper can run the new ones (see 0.9).
 */
DO $$
DECLARE
    g record;
BEGIN
    FOR g IN SELECT a.grantee, a.is_grantable, 'webhook.define_deadline_event(text, regclass, text, interval, text, text, text, jsonb, text)' AS fn
               FROM pg_catalog.aclexplode((SELECT p.proacl FROM pg_catalog.pg_proc p
                                            WHERE p.oid = 'webhook.define_event(text, regclass, text, text[], text, text, text, jsonb, text)'::regprocedure)) AS a
              WHERE a.privilege_type = 'EXECUTE'
                AND a.grantee <> (SELECT p.proowner FROM pg_catalog.pg_proc p
                                   WHERE p.oid = 'webhook.define_event(text, regclass, text, text[], text, text, text, jsonb, text)'::regprocedure)
             UNION ALL
             SELECT a.grantee, a.is_grantable, f.helper
               FROM pg_catalog.aclexplode((SELECT p.proacl FROM pg_catalog.pg_proc p
                                            WHERE p.oid = 'webhook._require_column(regclass, text, text)'::regprocedure)) AS a
              CROSS JOIN (VALUES ('webhook._check_due(text, regclass)'),
                                 ('webhook._deadline_keys_supported(regclass, text[])'),
                                 ('webhook._key_columns(regclass)'),
                                 ('webhook._parent_of(jsonb, regclass)')) AS f(helper)
              WHERE a.privilege_type = 'EXECUTE' AND a.grantee <> 0
                AND a.grantee <> (SELECT p.proowner FROM pg_catalog.pg_proc p
                                   WHERE p.oid = 'webhook._require_column(regclass, text, text)'::regprocedure)
    LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %s%s', g.fn,
                                  CASE WHEN g.grantee = 0 THEN 'PUBLIC'
                                       ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(g.grantee)) END,
                                  CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
END $$;

-- the due times shown
CREATE OR REPLACE VIEW webhook.events AS
SELECT e.name AS event, e.table_oid AS on_table, e.operation, e.columns, e.condition,
       e.title, e.object,
       CASE WHEN e.parent_table IS NOT NULL THEN
           pg_catalog.jsonb_build_object('object', e.parent_object, 'table', e.parent_table::text,
                                         'column', e.parent_column)
       END AS parent,
       e.key_columns,
       (SELECT count(*) FROM webhook.binding b WHERE b.event_id = e.event_id)::int AS bindings,
       e.created_by, e.created_at, e.message, e.agent_column, e.due, e.due_before AS before
  FROM webhook.event e;

-- the due times written and not reached yet (one moved, or whose row was
-- deleted, is dropped when it comes due: it is no longer the row's)
CREATE VIEW webhook.deadlines AS
SELECT e.name AS event, e.table_oid AS on_table,
       (SELECT pg_catalog.jsonb_object_agg(k.col, k.value)
          FROM ROWS FROM (pg_catalog.unnest(e.key_columns),
                          pg_catalog.json_array_elements_text(d.row_key::json)) AS k(col, value)) AS row_key,
       d.due, d.fire_at
  FROM webhook.deadline d JOIN webhook.event e ON e.event_id = d.event_id;
COMMENT ON VIEW webhook.deadlines IS 'Due times of deadline events written and not reached yet: the row (its key), the due time, when it fires.';
REVOKE ALL ON webhook.deadlines FROM PUBLIC;


/*
 * Stop a profile: what waits for it is held, never dropped; and say so, when
 * it was enabled, on NOTIFY webhook_failures (as the worker says there that
 * a delivery failed for good).  Any role may LISTEN: the payload names the
 * profile and why, nothing of its settings.
 */
CREATE OR REPLACE FUNCTION webhook._disable(id bigint, reason text) RETURNS void
    LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.pg_notify('webhook_failures',
                                pg_catalog.json_build_object('event', 'profile_disabled', 'profile', p.name,
                                                             'reason', reason)::text)
      FROM webhook.profile p WHERE p.profile_id = id AND p.enabled;
    UPDATE webhook.profile SET enabled = false, disabled_reason = reason WHERE profile_id = id;
$$;
