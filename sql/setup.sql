-- The extension and the sample service-desk schema used by the other tests.
CREATE EXTENSION webhook;
SELECT extname, extversion, extrelocatable FROM pg_extension WHERE extname = 'webhook';
\i test/sql/sample_schema.sql
-- the worker of this database starts when CREATE EXTENSION commits
DO $$
BEGIN
    FOR i IN 1..200 LOOP
        PERFORM pg_stat_clear_snapshot();
        EXIT WHEN EXISTS (SELECT 1 FROM pg_stat_activity
                           WHERE backend_type = 'webhook worker' AND datname = current_database());
        PERFORM pg_sleep(0.05);
    END LOOP;
END $$;
SELECT count(*) AS workers FROM pg_stat_activity
 WHERE backend_type = 'webhook worker' AND datname = current_database();
-- the webhook.* settings exist and the prefix is reserved
SELECT name, setting, unit, context FROM pg_settings WHERE name LIKE 'webhook.%' ORDER BY name;
SET webhook.no_such_setting = 1;
