/* webhook--0.6--0.7.sql: the worker claims a delivery as it makes it */

\echo Use "ALTER EXTENSION webhook UPDATE TO '0.7'" to load this file. \quit

/*
 * When nothing else is due, the worker's step inserts the deliveries it
 * makes already sending, their first attempt begun, rather than inserting
 * them pending and claiming them with another statement.  A delivery
 * restored from a dump while it was sending is still made pending again
 * (its request is lost with the server it was on); the worker's own are
 * not.
 */
CREATE FUNCTION webhook._in_worker() RETURNS boolean
    LANGUAGE c STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'webhook_is_worker';
COMMENT ON FUNCTION webhook._in_worker() IS
    'True in this database''s webhook worker: the deliveries it writes sending are its own.';
REVOKE ALL ON FUNCTION webhook._in_worker() FROM PUBLIC;

DROP TRIGGER restored_in_flight ON webhook.delivery;
CREATE TRIGGER restored_in_flight BEFORE INSERT ON webhook.delivery
    FOR EACH ROW WHEN (NEW.status = 'sending' AND NOT webhook._in_worker())
    EXECUTE FUNCTION webhook._restored_in_flight();
