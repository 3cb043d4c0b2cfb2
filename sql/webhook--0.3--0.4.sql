/* webhook--0.3--0.4.sql: delivery at the speed of the wire */

\echo Use "ALTER EXTENSION webhook UPDATE TO '0.4'" to load this file. \quit

/*
 * Version 0.4 writes each delivery fewer times.  A claim changes only
 * columns that no index holds, in its keys or its predicate, so that its
 * new row version stays on the page, with no index entry (a HOT update):
 * the indexes of what waits and of what is finished say so by the due
 * time alone, which only a record changes.
 */

-- a finished delivery has no due time; anything else has one
UPDATE webhook.delivery SET next_attempt_at = NULL
 WHERE status IN ('delivered', 'failed') AND next_attempt_at IS NOT NULL;
UPDATE webhook.delivery SET next_attempt_at = pg_catalog.now()
 WHERE status NOT IN ('delivered', 'failed') AND next_attempt_at IS NULL;

-- what is due, profile by profile, in the claim's order (deliveries on the
-- wire are in it too, passed over by their status)
DROP INDEX webhook.delivery_due_idx;
CREATE INDEX delivery_due_idx ON webhook.delivery (profile_id, next_attempt_at, delivery_id)
    WHERE next_attempt_at IS NOT NULL;

-- finished deliveries by age: the purge reads only those it deletes
DROP INDEX webhook.delivery_finished_idx;
CREATE INDEX delivery_finished_idx ON webhook.delivery (created_at)
    WHERE next_attempt_at IS NULL;
