/* webhook--0.7--0.8.sql: conditions evaluated in the capture trigger itself */

\echo Use "ALTER EXTENSION webhook UPDATE TO '0.8'" to load this file. \quit

/*
 * What each binding of a table and operation asks of a changed row: one SQL
 * boolean expression over (n.r), the new row, and (o.r), the old row (NULL:
 * every row), and whether it calls SQL of a user's own (an event's
 * condition, a binding's condition_sql), which takes the capture key as $1.
 * The capture query is built from these; when no binding calls users' SQL,
 * the capture trigger evaluates them itself, without a query.
 */
CREATE FUNCTION webhook._capture_conditions(tbl regclass, op text)
    RETURNS TABLE (binding_id int8, condition text, user_sql boolean)
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT x.binding_id,
           NULLIF(array_to_string(ARRAY[
               CASE WHEN e.columns IS NOT NULL THEN
                   '(' || (SELECT string_agg(format('(n.r).%1$I IS DISTINCT FROM (o.r).%1$I', c), ' OR ')
                             FROM unnest(e.columns) AS c) || ')' END,
               CASE WHEN e.condition IS NOT NULL THEN
                   format('webhook.%I(n.r, o.r, $1)', '_condition_e' || e.event_id) END,
               CASE WHEN x.compiled IS NOT NULL THEN '(' || x.compiled || ')' END,
               CASE WHEN x.condition_sql IS NOT NULL THEN
                   format('webhook.%I(n.r, o.r, $1)', '_condition_b' || x.binding_id) END],
             ' AND '), ''),
           e.condition IS NOT NULL OR x.condition_sql IS NOT NULL
      FROM webhook.binding x JOIN webhook.event e ON e.event_id = x.event_id
     WHERE e.table_oid = tbl AND e.operation = op
     ORDER BY x.binding_id
$$;
COMMENT ON FUNCTION webhook._capture_conditions(regclass, text) IS
    'The condition each binding of a table and operation puts on a changed row, as SQL (internal).';
REVOKE ALL ON FUNCTION webhook._capture_conditions(regclass, text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION webhook._capture_plan(tbl regclass, op text,
                                                 OUT query text, OUT fallback text, OUT bindings bigint[])
    RETURNS record LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
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
