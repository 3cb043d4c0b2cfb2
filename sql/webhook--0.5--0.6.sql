/* webhook--0.5--0.6.sql: no CHECK on the statuses the worker writes */

\echo Use "ALTER EXTENSION webhook UPDATE TO '0.6'" to load this file. \quit

/*
 * A CHECK constraint is parsed and planned again by every statement that
 * writes its table: the worker's claim, record and insert paid that for
 * each step, 5% of its work at a trickle of single changes.  Statuses and
 * outcomes are written by the extension alone (the worker's queue.c, and
 * the functions of this script's predecessors), never by users, and the
 * tests check every one of them.
 */
ALTER TABLE webhook.delivery DROP CONSTRAINT delivery_status_check;
ALTER TABLE webhook.attempt DROP CONSTRAINT attempt_outcome_check;
COMMENT ON COLUMN webhook.delivery.status IS
    'pending, sending, retrying, delivered or failed: written by the worker alone.';
COMMENT ON COLUMN webhook.attempt.outcome IS
    'response, body_too_large, timeout, connect_error, tls_error, blocked or error.';
