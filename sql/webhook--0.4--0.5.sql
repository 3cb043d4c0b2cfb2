/* webhook--0.4--0.5.sql: a preview of every table */

\echo Use "ALTER EXTENSION webhook UPDATE TO '0.5'" to load this file. \quit

/*
 * preview reads the row as t.*: to_json(t) of a table with a column named
 * t made a payload of that column, or found no row where it is NULL.
 */
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
