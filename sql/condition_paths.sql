-- Structured conditions are evaluated by the capture trigger itself; a
-- binding with condition_sql makes it run the capture query instead.  The
-- same bindings on two tables of the same columns, one of them also bound
-- with condition_sql, must queue the same rows for the same bindings.
\set SHOW_CONTEXT never
CREATE TYPE diff_mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN diff_pos AS int CHECK (VALUE > 0);
CREATE TABLE diff_a (id int PRIMARY KEY, i int, big bigint, num numeric(10,2), f float8, t text,
                     vc varchar(8), bp char(6), tc text COLLATE "C", d date, ts timestamptz,
                     b boolean, u uuid, m diff_mood, p diff_pos, j jsonb);
CREATE TABLE diff_b (LIKE diff_a INCLUDING ALL);
SELECT count(webhook.define_event(tbl || '.' || op, tbl::regclass, op)) AS events
  FROM unnest(ARRAY['diff_a', 'diff_b']) AS tbl, unnest(ARRAY['insert', 'update', 'delete']) AS op;
SELECT webhook.create_profile('diff', 'http://127.0.0.1:9/', ARRAY['diff_a.insert']) > 0 AS ok;
SELECT binding_id AS diff_first FROM webhook.bindings WHERE profile = 'diff' \gset
SELECT count(webhook.define_event(tbl || '.cols', tbl::regclass, 'update', columns => ARRAY['t', 'num']))
  FROM unnest(ARRAY['diff_a', 'diff_b']) AS tbl;
CREATE TABLE diff_labels (binding_id bigint PRIMARY KEY, tbl text, label text);
CREATE FUNCTION diff_bind(op text, label text, conditions jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO diff_labels
    SELECT webhook.add_event('diff', tbl || '.' || op, conditions), tbl, label
      FROM unnest(ARRAY['diff_a', 'diff_b']) AS tbl $$;
SELECT diff_bind(op, op || ' ' || label, conditions::jsonb)
  FROM unnest(ARRAY['insert', 'update', 'delete']) AS op,
       (VALUES ('eq_i', '[{"field": "i", "op": "eq", "value": 3}]'),
               ('ne_i', '[{"field": "i", "op": "ne", "value": 3}]'),
               ('gt_big', '[{"field": "big", "op": "gt", "value": 10000000000}]'),
               ('lte_num', '[{"field": "num", "op": "lte", "value": 1.005}]'),
               ('gte_f', '[{"field": "f", "op": "gte", "value": 0.1}]'),
               ('contains_t', '[{"field": "t", "op": "contains", "value": "STRASSE"}]'),
               ('contains_sz', '[{"field": "t", "op": "contains", "value": "ße"}]'),
               ('not_contains_vc', '[{"field": "vc", "op": "not_contains", "value": "b"}]'),
               ('contains_bp', '[{"field": "bp", "op": "contains", "value": "b "}]'),
               ('has_value_bp', '[{"field": "bp", "op": "has_value"}]'),
               ('no_value_bp', '[{"field": "bp", "op": "no_value"}]'),
               ('no_value_t', '[{"field": "t", "op": "no_value"}]'),
               ('in_t', '[{"field": "t", "op": "in", "value": ["a", "B"]}]'),
               ('not_in_i', '[{"field": "i", "op": "not_in", "value": [1, 2]}]'),
               ('lt_tc', '[{"field": "tc", "op": "lt", "value": "a"}]'),
               ('lt_d', '[{"field": "d", "op": "lt", "value": "2026-03-01"}]'),
               ('gt_ts', '[{"field": "ts", "op": "gt", "value": "2026-01-01 12:00"}]'),
               ('eq_b', '[{"field": "b", "op": "eq", "value": false}]'),
               ('eq_u', '[{"field": "u", "op": "eq", "value": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}]'),
               ('gt_m', '[{"field": "m", "op": "gt", "value": "sad"}]'),
               ('eq_p', '[{"field": "p", "op": "eq", "value": 5}]'),
               ('in_p', '[{"field": "p", "op": "in", "value": [1, 2]}]'),
               ('has_value_j', '[{"field": "j", "op": "has_value"}]'),
               ('and', '[{"field": "i", "op": "gte", "value": 2}, {"field": "t", "op": "has_value"}]')) AS c(label, conditions);
SELECT diff_bind('update', 'update ' || label, conditions::jsonb)
  FROM (VALUES ('changed_i', '[{"field": "i", "op": "changed"}]'),
               ('changed_bp', '[{"field": "bp", "op": "changed"}]'),
               ('changed_j', '[{"field": "j", "op": "changed"}]'),
               ('from_x', '[{"field": "t", "op": "changed_from", "value": "x"}]'),
               ('to_happy', '[{"field": "m", "op": "changed_to", "value": "happy"}]')) AS c(label, conditions);
SELECT webhook.remove_event(:diff_first);
INSERT INTO diff_labels
SELECT webhook.add_event('diff', tbl || '.cols'), tbl, 'cols' FROM unnest(ARRAY['diff_a', 'diff_b']) AS tbl;
-- diff_b's capture runs the query
INSERT INTO diff_labels
SELECT webhook.add_event('diff', 'diff_b.' || op, NULL, condition_sql => 'new IS NOT NULL OR old IS NOT NULL'),
       'diff_b', 'query'
  FROM unnest(ARRAY['insert', 'update', 'delete']) AS op;

CREATE VIEW diff_queued AS
SELECT o.table_oid::text AS tbl, o.operation,
       (SELECT string_agg(l.label, ',' ORDER BY l.label) FROM unnest(o.bindings) AS m(id)
          JOIN diff_labels l ON l.binding_id = m.id WHERE l.label <> 'query') AS labels,
       (SELECT string_agg(coalesce(r->>'id', '?'), ',' ORDER BY ord)
          FROM json_array_elements(coalesce(o.new_rows, o.old_rows)) WITH ORDINALITY AS x(r, ord)) AS ids,
       o.capture_error IS NOT NULL AS failed, cardinality(o.bindings) AS nbindings
  FROM webhook.occurrence o WHERE o.table_oid::text IN ('diff_a', 'diff_b');
CREATE FUNCTION diff_workload(tbl text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format($w$
        INSERT INTO %1$I VALUES
            (1, 3, 20000000000, 1.01, 0.1, 'Hauptstraße', 'abc', 'ab', 'B', '2026-01-01', '2026-01-01 12:00:01', false,
             'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'ok', 5, '{"a": 1}'),
            (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
            (3, 1, 10000000000, 1.00, 0.09999, '', 'xyz', '   ', 'a', '2026-03-01', '2026-01-01 12:00', true,
             'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12', 'sad', 1, 'null'),
            (4, 2, -1, -5, 'NaN', 'B', 'ab', 'b c', 'Z', '2025-12-31', '2030-01-01', NULL, NULL, 'happy', 2, '[]'),
            (5, 3, 0, 1.005, 1e300, 'x', 'b', 'b', '', '2026-02-28', '2026-01-01 11:59 -08', false, NULL, 'ok', 7, '{}');
        UPDATE %1$I SET i = i + 1, t = 'a' WHERE id IN (1, 5);
        UPDATE %1$I SET m = 'happy', bp = 'b   ' WHERE id IN (2, 3, 4);
        UPDATE %1$I SET j = '{"a": 1}', num = num WHERE id IN (1, 3);
        UPDATE %1$I SET t = t, i = i;
        DELETE FROM %1$I WHERE id IN (2, 4);
        DELETE FROM %1$I;$w$, tbl);
END $$;

BEGIN;
SELECT diff_workload('diff_a');
SELECT diff_workload('diff_b');
-- the rows and bindings of every queue row, the same for both tables
SELECT count(*) FILTER (WHERE tbl = 'diff_a') AS queue_rows_a, count(*) FILTER (WHERE tbl = 'diff_b') AS queue_rows_b,
       count(*) FILTER (WHERE tbl = 'diff_a' AND labels IS NOT NULL) AS with_labels_a
  FROM diff_queued;
(SELECT operation, labels, ids FROM diff_queued WHERE tbl = 'diff_a' AND labels IS NOT NULL
 EXCEPT ALL SELECT operation, labels, ids FROM diff_queued WHERE tbl = 'diff_b' AND labels IS NOT NULL)
UNION ALL
(SELECT operation, labels, ids FROM diff_queued WHERE tbl = 'diff_b' AND labels IS NOT NULL
 EXCEPT ALL SELECT operation, labels, ids FROM diff_queued WHERE tbl = 'diff_a' AND labels IS NOT NULL);
-- what the conditions matched, for the record
SELECT operation, labels, ids FROM diff_queued WHERE tbl = 'diff_a' ORDER BY operation, ids, labels;
ROLLBACK;

-- a condition that fails when it runs (the value 5 no longer fits its
-- domain) keeps the change, queued for every binding with the error, in
-- both ways of capturing
ALTER DOMAIN diff_pos ADD CONSTRAINT above_ten CHECK (VALUE > 10) NOT VALID;
BEGIN;
INSERT INTO diff_a (id, i) VALUES (1, 3);
INSERT INTO diff_b (id, i) VALUES (1, 3);
SELECT tbl, operation, ids, failed, nbindings FROM diff_queued ORDER BY tbl;
ROLLBACK;
ALTER DOMAIN diff_pos DROP CONSTRAINT above_ten;

-- a statement of more rows than a queue row holds: each row queued once
-- for each binding it matched
CREATE VIEW diff_pairs AS
SELECT o.table_oid::text AS tbl, l.label, r->>'id' AS id
  FROM webhook.occurrence o CROSS JOIN json_array_elements(o.new_rows) AS r
       CROSS JOIN unnest(o.bindings) AS m(id) JOIN diff_labels l ON l.binding_id = m.id
 WHERE o.table_oid::text IN ('diff_a', 'diff_b') AND l.label <> 'query';
BEGIN;
INSERT INTO diff_a (id, i, t, p) SELECT g, CASE WHEN g <= 2200 THEN 3 ELSE g % 5 END, CASE WHEN g % 3 = 0 AND g > 2200 THEN 'B' END, 1 + g % 6 FROM generate_series(1, 2500) g;
INSERT INTO diff_b (id, i, t, p) SELECT g, CASE WHEN g <= 2200 THEN 3 ELSE g % 5 END, CASE WHEN g % 3 = 0 AND g > 2200 THEN 'B' END, 1 + g % 6 FROM generate_series(1, 2500) g;
SELECT count(*) FILTER (WHERE tbl = 'diff_a') AS pairs_a, count(*) FILTER (WHERE tbl = 'diff_b') AS pairs_b,
       (SELECT max(row_count) FROM webhook.occurrence WHERE table_oid = 'diff_a'::regclass) AS largest_a
  FROM diff_pairs;
(SELECT label, id FROM diff_pairs WHERE tbl = 'diff_a' EXCEPT ALL SELECT label, id FROM diff_pairs WHERE tbl = 'diff_b')
UNION ALL
(SELECT label, id FROM diff_pairs WHERE tbl = 'diff_b' EXCEPT ALL SELECT label, id FROM diff_pairs WHERE tbl = 'diff_a');
ROLLBACK;

-- a column a condition names dropped: the conditions no longer compile,
-- the query runs and fails, and the change is kept with the error
ALTER TABLE diff_a DROP COLUMN vc;
BEGIN;
INSERT INTO diff_a (id, i) VALUES (1, 3);
SELECT tbl, operation, ids, failed, nbindings FROM diff_queued ORDER BY tbl;
ROLLBACK;
