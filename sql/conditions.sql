-- Conditions: every operator, true and false, NULLs, and the errors.
-- Each binding is labelled; a change lists the labels of the bindings it
-- matched, seen in the writing transaction.
\set SHOW_CONTEXT never

CREATE TABLE cond_t (id int PRIMARY KEY, n int, t text, d timestamptz, b boolean, x numeric);
SELECT webhook.define_event('cond.inserted', 'cond_t', 'insert') > 0 AS ok;
SELECT webhook.define_event('cond.updated', 'cond_t', 'update') > 0 AS ok;
SELECT webhook.define_event('cond.deleted', 'cond_t', 'delete') > 0 AS ok;
SELECT webhook.create_profile('cond', 'http://127.0.0.1:9/', ARRAY['cond.inserted']) > 0 AS ok;

CREATE TABLE labels (binding_id bigint PRIMARY KEY, label text);
INSERT INTO labels SELECT binding_id, 'all' FROM webhook.bindings WHERE profile = 'cond';
CREATE FUNCTION bind(event text, label text, conditions jsonb) RETURNS void
    LANGUAGE sql AS $$ INSERT INTO labels SELECT webhook.add_event('cond', event, conditions), label $$;
CREATE VIEW matched AS
SELECT o.operation, coalesce(o.new_row, o.old_row)->>'id' AS id,
       string_agg(l.label, ' ' ORDER BY l.label) AS bindings
  FROM webhook._occurrence_rows o CROSS JOIN unnest(o.bindings) AS m(id) JOIN labels l ON l.binding_id = m.id
 GROUP BY 1, 2 ORDER BY 1, 2;

SELECT bind('cond.inserted', 'eq', '[{"field": "n", "op": "eq", "value": 1}]');
SELECT bind('cond.inserted', 'ne', '[{"field": "n", "op": "ne", "value": 1}]');
SELECT bind('cond.inserted', 'gt', '[{"field": "n", "op": "gt", "value": 1}]');
SELECT bind('cond.inserted', 'gte', '[{"field": "n", "op": "gte", "value": 1}]');
SELECT bind('cond.inserted', 'lt', '[{"field": "n", "op": "lt", "value": 5}]');
SELECT bind('cond.inserted', 'lte', '[{"field": "n", "op": "lte", "value": 5}]');
SELECT bind('cond.inserted', 'contains', '[{"field": "t", "op": "contains", "value": "FIRE"}]');
SELECT bind('cond.inserted', 'not_contains', '[{"field": "t", "op": "not_contains", "value": "fire"}]');
SELECT bind('cond.inserted', 'in', '[{"field": "n", "op": "in", "value": [1, 5]}]');
SELECT bind('cond.inserted', 'not_in', '[{"field": "n", "op": "not_in", "value": [1]}]');
SELECT bind('cond.inserted', 'has_value_t', '[{"field": "t", "op": "has_value"}]');
SELECT bind('cond.inserted', 'no_value_t', '[{"field": "t", "op": "no_value"}]');
SELECT bind('cond.inserted', 'has_value_n', '[{"field": "n", "op": "has_value"}]');
SELECT bind('cond.inserted', 'no_value_n', '[{"field": "n", "op": "no_value"}]');
SELECT bind('cond.inserted', 'later', '[{"field": "d", "op": "gt", "value": "2026-06-01T00:00:00Z"}]');
SELECT bind('cond.inserted', 'true_b', '[{"field": "b", "op": "eq", "value": true}]');
SELECT bind('cond.inserted', 'decimal', '[{"field": "x", "op": "gte", "value": 2.5}]');
SELECT bind('cond.inserted', 'and', '[{"field": "n", "op": "eq", "value": 1}, {"field": "t", "op": "contains", "value": "fire"}]');
SELECT bind('cond.inserted', 'quote', $$[{"field": "t", "op": "eq", "value": "it's'); DROP TABLE cond_t; --"}]$$);
SELECT bind('cond.updated', 'changed', '[{"field": "n", "op": "changed"}]');
SELECT bind('cond.updated', 'from_1', '[{"field": "n", "op": "changed_from", "value": 1}]');
SELECT bind('cond.updated', 'to_5', '[{"field": "n", "op": "changed_to", "value": 5}]');
SELECT bind('cond.updated', 'to_closed', '[{"field": "t", "op": "changed_to", "value": "closed"}]');
SELECT bind('cond.updated', 'now_5', '[{"field": "n", "op": "eq", "value": 5}]');
SELECT bind('cond.deleted', 'gone_5', '[{"field": "n", "op": "eq", "value": 5}]');

BEGIN;
INSERT INTO cond_t VALUES (1, 1, 'Printer on Fire', '2026-01-01', true, 2.5),
                          (2, NULL, NULL, NULL, NULL, NULL),
                          (3, 5, '', '2027-01-01', false, 2.4999),
                          (4, 2, $$it's'); DROP TABLE cond_t; --$$, NULL, NULL, NULL);
UPDATE cond_t SET n = 5 WHERE id = 1;
UPDATE cond_t SET n = 1 WHERE id = 2;
UPDATE cond_t SET t = 'closed' WHERE id = 3;
UPDATE cond_t SET n = n WHERE id = 4;
DELETE FROM cond_t;
SELECT * FROM matched;
ROLLBACK;
SELECT count(*) AS cond_t_still_there FROM cond_t;

-- what a binding compiles to: quoted names, typed literals
SELECT b.compiled FROM webhook.binding b JOIN labels l USING (binding_id)
 WHERE l.label IN ('and', 'quote', 'in', 'to_5') ORDER BY l.label;

-- a binding's conditions are its own: two bindings of one event give OR
SELECT event, count(*) AS bindings FROM webhook.bindings WHERE profile = 'cond'
 GROUP BY event ORDER BY event;

-- every bad condition is refused, naming the problem; nothing is added
SELECT count(*) AS before FROM webhook.binding \gset
SELECT webhook.add_event('cond', 'cond.inserted', '{"field": "n"}');
SELECT webhook.add_event('cond', 'cond.inserted', '["n = 1"]');
SELECT webhook.add_event('cond', 'cond.inserted', '[{"field": "n", "op": "eq", "value": 1, "extra": 2}]');
SELECT webhook.add_event('cond', 'cond.inserted', '[{"op": "eq", "value": 1}]');
SELECT webhook.add_event('cond', 'cond.inserted', '[{"field": 3, "op": "eq", "value": 1}]');
SELECT webhook.add_event('cond', 'cond.inserted', '[{"field": "nope", "op": "eq", "value": 1}]');
SELECT webhook.add_event('cond', 'cond.inserted', '[{"field": "n; DROP TABLE cond_t", "op": "eq", "value": 1}]');
SELECT webhook.add_event('cond', 'cond.inserted', '[{"field": "n", "op": "equals", "value": 1}]');
SELECT webhook.add_event('cond', 'cond.inserted', '[{"field": "n", "value": 1}]');
SELECT webhook.add_event('cond', 'cond.inserted', '[{"field": "n", "op": "changed"}]');
SELECT webhook.add_event('cond', 'cond.deleted', '[{"field": "n", "op": "changed_to", "value": 1}]');
SELECT webhook.add_event('cond', 'cond.inserted', '[{"field": "n", "op": "has_value", "value": 1}]');
SELECT webhook.add_event('cond', 'cond.inserted', '[{"field": "n", "op": "eq"}]');
SELECT webhook.add_event('cond', 'cond.inserted', '[{"field": "n", "op": "eq", "value": null}]');
SELECT webhook.add_event('cond', 'cond.inserted', '[{"field": "n", "op": "eq", "value": "one"}]');
SELECT webhook.add_event('cond', 'cond.inserted', '[{"field": "n", "op": "eq", "value": 1.5}]');
SELECT webhook.add_event('cond', 'cond.inserted', '[{"field": "n", "op": "eq", "value": [1]}]');
SELECT webhook.add_event('cond', 'cond.inserted', '[{"field": "d", "op": "gt", "value": "yesterday-ish"}]');
SELECT webhook.add_event('cond', 'cond.inserted', '[{"field": "n", "op": "contains", "value": "1"}]');
SELECT webhook.add_event('cond', 'cond.inserted', '[{"field": "b", "op": "gt", "value": true}]');
SELECT webhook.add_event('cond', 'cond.inserted', '[{"field": "n", "op": "in", "value": 1}]');
SELECT webhook.add_event('cond', 'cond.inserted', '[{"field": "n", "op": "in", "value": []}]');
SELECT webhook.add_event('cond', 'cond.inserted', '[{"field": "n", "op": "in", "value": [1, {"a": 1}]}]');
SELECT webhook.add_event('cond', 'cond.inserted', '[{"field": "n", "op": "in", "value": [1, "x"]}]');
SELECT webhook.add_event('cond', 'cond.inserted', 'null');
SELECT count(*) = :before AS nothing_added FROM webhook.binding;
