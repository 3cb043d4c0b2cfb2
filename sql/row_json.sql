-- The rows the capture trigger queues, written as row_to_json writes them
-- (see src/rowwrite.c), seen inside the writing transaction.

-- A changed row is queued as row_to_json writes it, whatever its column
-- types, as the worker renders (UTC, bytea in hex); dropped columns left out.
BEGIN;
CREATE TYPE mood AS ENUM ('calm', 'on fire');
CREATE TYPE place AS (floor int, room text);
CREATE DOMAIN ticket_code AS text CHECK (VALUE <> '');
CREATE DOMAIN small_count AS int2;
CREATE TABLE every_type (
    id int PRIMARY KEY, gone int, b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, n numeric,
    d date, ts timestamp, tstz timestamptz, tm time, tmtz timetz, iv interval,
    j json, jb jsonb, t text, vc varchar(10), c char(4), by bytea, u uuid, o oid, inet_ inet,
    arr int[], arr2 text[], m mood, p place, code ticket_code, cnt small_count, "we""ird key" text);
ALTER TABLE every_type DROP COLUMN gone;
SELECT webhook.define_event('every.created', 'every_type', 'insert') > 0 AS defined;
SELECT webhook.create_profile('every type', 'http://127.0.0.1:9/', ARRAY['every.created']) > 0 AS created;
SET LOCAL TimeZone = 'America/New_York';
SET LOCAL bytea_output = 'escape';
SET LOCAL extra_float_digits = 0;
INSERT INTO every_type VALUES
  (1, true, -32768, -2147483648, 9223372036854775807, 'NaN', '-Infinity', 'NaN',
   'infinity', '2026-12-01 10:11:12.5', '2026-12-01 10:11:12.123456+02', '10:11:12', '10:11:12+03',
   '1 year 2 days 03:04:05.6', '{"a": [1, 2], "b" : "x"}', '{"b": null, "a": 1.50}',
   E'quote " backslash \\ tab \t newline \n control \u0001 é 😀', 'vc', 'ab', '\x00ff27',
   'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 4294967295, '::1/128', '{1,NULL,3}', '{{a,"b c"},{NULL,"d\"e"}}',
   'on fire', ROW(3, 'B"2'), 'X-1', 7, 'k'),
  (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
   NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
  (3, false, 0, 0, 0, 1.5, 0.1, 12.50, '2026-01-01', '-infinity', '1999-12-31 23:59:59.999999+00',
   '00:00', '00:00+00', '-1 day', 'null', '[]', '', '', '', '', '00000000-0000-0000-0000-000000000000',
   0, '10.0.0.1', '{}', '{}', 'calm', ROW(NULL, NULL), 'Y', -1, ''),
  (4, true, 1, 1, 1, 1e30, 1e-300, 1e30, '0044-03-15 BC', '0044-03-15 12:00 BC', '0044-03-15 12:00+00 BC',
   '24:00', '23:59:59.999999-14', '-178000000 years', '"s"', '"s"', repeat('long ', 200),
   NULL, 'abcd', repeat('\x00', 1)::bytea, NULL, NULL, NULL, '{{1,2},{3,4}}', NULL, NULL, NULL, NULL, NULL, NULL);
SET LOCAL TimeZone = 'UTC';
SET LOCAL bytea_output = 'hex';
SET LOCAL IntervalStyle = 'postgres';
SET LOCAL extra_float_digits = 1;
SELECT e.id, (SELECT o.new_rows -> (e.id - 1) FROM webhook.occurrence o
               WHERE o.table_oid = 'every_type'::regclass)::text = row_to_json(e)::text AS as_row_to_json
  FROM every_type e ORDER BY e.id;
-- and a payload made of it has every column, whatever its key or value
SELECT e.id,
       (SELECT array_agg(k COLLATE "C" ORDER BY k COLLATE "C") FROM jsonb_object_keys(p.object) AS k)
       = (SELECT array_agg(a.attname::text COLLATE "C" ORDER BY a.attname::text COLLATE "C")
            FROM pg_attribute a
           WHERE a.attrelid = 'every_type'::regclass AND a.attnum > 0 AND NOT a.attisdropped)
         AS every_column,
       p.object -> 'we"ird key' AS weird_key, left((p.object -> 't')::text, 30) AS t, p.object -> 'arr2' AS arr2,
       p.object -> 'j' AS j, p.object -> 'p' AS p
  FROM every_type e,
       LATERAL (SELECT webhook.preview('every type', 'every.created', e.id::text) -> 'body' -> 'every'
                  AS object) AS p
 ORDER BY e.id;
-- a parent read by its key is the row, though a column is named t
CREATE TABLE box (id int PRIMARY KEY, t text);
CREATE TABLE box_item (id int PRIMARY KEY, box_id int REFERENCES box);
INSERT INTO box VALUES (1, 'the t column'), (2, NULL);
INSERT INTO box_item VALUES (1, 1), (2, 2);
SELECT webhook.define_event('box_item.created', 'box_item', 'insert',
                            parent => '{"object": "box", "table": "box", "column": "box_id"}') > 0 AS defined;
SELECT webhook.add_event('every type', 'box_item.created');
SELECT i.id, webhook.preview('every type', 'box_item.created', i.id::text) -> 'body' -> 'box' AS box
  FROM box_item i ORDER BY i.id;
-- a type's cast to json is used, and a cast dropped is seen at once
CREATE TYPE level AS ENUM ('low', 'high');
CREATE FUNCTION level_json(level) RETURNS json LANGUAGE sql AS $$ SELECT json_build_object('level', $1::text) $$;
CREATE CAST (level AS json) WITH FUNCTION level_json(level);
CREATE TABLE leveled (id int PRIMARY KEY, lv level);
SELECT webhook.define_event('leveled.created', 'leveled', 'insert') > 0 AS defined;
SELECT webhook.add_event('every type', 'leveled.created');
INSERT INTO leveled VALUES (1, 'high');
DROP CAST (level AS json);
INSERT INTO leveled VALUES (2, 'low');
SELECT new_rows::text FROM webhook.occurrence WHERE table_oid = 'leveled'::regclass ORDER BY occurrence_id;
-- a cast that writes to a captured table while a row is being written
CREATE FUNCTION level_json_noisy(level) RETURNS json LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO every_type (id, t) SELECT 1000 + g, repeat('x', 1000) FROM generate_series(1, 300) g
        ON CONFLICT (id) DO NOTHING;
    RETURN json_build_object('level', $1::text);
END $$;
CREATE CAST (level AS json) WITH FUNCTION level_json_noisy(level);
INSERT INTO leveled VALUES (3, 'low'), (4, 'high');
SELECT row_count, new_rows::text FROM webhook.occurrence WHERE table_oid = 'leveled'::regclass
 ORDER BY occurrence_id DESC LIMIT 1;
SELECT row_count, json_array_length(new_rows) AS rows, new_rows -> 299 ->> 'id' AS last_id
  FROM webhook.occurrence WHERE table_oid = 'every_type'::regclass AND row_count = 300;
ROLLBACK;
