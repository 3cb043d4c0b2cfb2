/*
 * queue.c
 *		The worker's transactions: the step (expand new occurrences, with
 *		expand.c; put together due batches, claim the deliveries that are
 *		due, record the attempts), and the purge of old history.
 *
 * Every function here is one short transaction of its own; none is ever
 * open while a request is on the wire.  Statements are prepared once and
 * kept (SPI_keepplan).  Results of many requests are recorded by one
 * statement that takes arrays.
 *
 * The life of a delivery: every change of its status is one statement
 * here, correct under READ COMMITTED whatever operators do meanwhile.
 *
 *                         claim                  record: 2xx
 *   (expansion) --> pending -----> sending ---------------> delivered --+
 *   redeliver,         ^  ^         |  |  |                             |
 *   replay,            |  |  give   |  |  | record: attempts left       |
 *   send_test          |  +---------+  |  +-------> retrying            | purge,
 *                      |  back, and    |              |  claim when due | after
 *                      |  recover at   |              +--> sending      | webhook.
 *                      |  start        | record: attempts out, 410      | retention
 *                      |               +---------------> failed --------+--> gone
 *                      +-- a batch: pending from its first item, its body
 *                          put together when it is due (assemble)
 *
 * Held is not a status: a pending or retrying delivery of a disabled
 * profile is held, which the claim reads when it runs (webhook.deliveries
 * shows it).  Disabling and enabling a profile change the profile row
 * only, so nothing made meanwhile can miss the change; a delivery claimed
 * just before its profile was disabled is given back unsent (find_stopped).
 * Outside this file, deliveries are made, pending (or failed, with the
 * capture's error; or sending, when nothing else is due and the step
 * claims them as they are made: see ClaimAsMade), by the expansion
 * (expand.c); made pending by
 * webhook._resend (redeliver, replay) and send_test; have their batch's due
 * time moved or are cut by the batching settings' trigger
 * (_batching_changed); are deleted by drop_profile; and one restored in
 * flight is made pending again (_restored_in_flight).
 */
#include "webhook.h"

#include <math.h>
#include "claims.h"
#include "http.h"
#include "queue.h"
#include "rowjson.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/lmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

/* Due batches that one transaction locks at most. */
#define LOCK_STEP 1000

/* Items of due batches put together by one transaction, about. */
#define ASSEMBLE_STEP 10000

/* Finished deliveries purged by one transaction at most. */
#define PURGE_STEP 1000

/*
 * Put together the batches that are due: their items, in order, become
 * their body.  Up to $1 items in all (and at least one batch), oldest
 * first; the count of batches looked at says whether there may be more.
 *
 * A batch not put together yet is pending, or held with no due time, so
 * the due time alone finds it; a condition on the status would let the
 * planner take the index of every due delivery instead of the one of
 * these few, and read the whole backlog at each step.  The batches to
 * change are an array, looked up by key, here and in the purge: a table
 * that was empty when last analyzed would otherwise be joined to them row
 * by row.
 */
#define ASSEMBLE_SQL(next_attempt) \
"WITH locked AS (" \
"  SELECT d.delivery_id, d.items, d.next_attempt_at FROM webhook.delivery d" \
"   WHERE d.body IS NULL AND d.next_attempt_at <= pg_catalog.now()" \
"   ORDER BY d.next_attempt_at, d.delivery_id LIMIT " CppAsString2(LOCK_STEP) " FOR UPDATE SKIP LOCKED" \
"), due AS (" \
"  SELECT delivery_id FROM (" \
"    SELECT delivery_id, items," \
"           pg_catalog.sum(items) OVER (ORDER BY next_attempt_at, delivery_id) AS running" \
"      FROM locked) AS x" \
"   WHERE running - items < $1" \
"), assembled AS (" \
"  UPDATE webhook.delivery d" \
"     SET batch_key = NULL, next_attempt_at = " next_attempt "," \
"         body = (SELECT pg_catalog.json_agg(i.envelope ORDER BY i.item_no)" \
"                   FROM webhook.batch_item i WHERE i.delivery_id = d.delivery_id)" \
"    FROM due WHERE d.delivery_id = due.delivery_id" \
"     AND d.delivery_id = ANY (ARRAY(SELECT delivery_id FROM due))" \
"  RETURNING d.delivery_id" \
"), gone AS (" \
"  DELETE FROM webhook.batch_item i" \
"   WHERE i.delivery_id = ANY (ARRAY(SELECT delivery_id FROM assembled))" \
")" \
"SELECT (SELECT pg_catalog.count(*) FROM locked), (SELECT pg_catalog.count(*) FROM assembled)"

/*
 * A batch of an ordering profile goes after every delivery of the profile
 * made before it: it waits its turn if one of them is unfinished.
 */
static const char *assemble_sql =
ASSEMBLE_SQL("CASE WHEN d.order_key IS NOT NULL AND " ORDER_BLOCKED("d", "e.delivery_id < d.delivery_id")
			 " THEN 'infinity'::timestamptz ELSE d.next_attempt_at END");

/* The same of a schema before 0.13, which orders nothing. */
static const char *assemble_sql_before_0_13 = ASSEMBLE_SQL("d.next_attempt_at");

/*
 * Claim up to $1 due deliveries, oldest first, taking from each enabled
 * profile no more than $2 minus what the worker already holds of it ($3,
 * $4), after where its last claim got to ($5, $6; see claims.c): each
 * profile is looked at on its own, so that a backlog of one (say, a
 * receiver that hangs) never hides the others' due deliveries.  A disabled
 * profile's deliveries are held: this is where that is read.
 */
#define CLAIM_SQL(allowance) \
"UPDATE webhook.delivery d" \
"   SET status = 'sending', attempts = d.attempts + 1," \
"       last_attempt_at = pg_catalog.now()" \
" WHERE d.delivery_id = ANY (ARRAY(" \
"        SELECT c.delivery_id" \
"          FROM webhook.profile p" \
"          LEFT JOIN ROWS FROM (pg_catalog.unnest($3::int8[]), pg_catalog.unnest($4::int4[])," \
"                               pg_catalog.unnest($5::timestamptz[]), pg_catalog.unnest($6::int8[]))" \
"               AS held(profile_id, n, after_due_at, after_id) ON held.profile_id = p.profile_id" \
"         CROSS JOIN LATERAL (" \
"               SELECT due.delivery_id, due.next_attempt_at FROM webhook.delivery due" \
"                WHERE due.profile_id = p.profile_id AND due.status IN ('pending', 'retrying')" \
"                  AND due.next_attempt_at <= pg_catalog.now() AND due.body IS NOT NULL" \
"                  AND (due.next_attempt_at, due.delivery_id)" \
"                      > (COALESCE(held.after_due_at, '-infinity'), COALESCE(held.after_id, 0))" \
"                ORDER BY due.next_attempt_at, due.delivery_id" \
"                LIMIT GREATEST(" allowance " - COALESCE(held.n, 0), 0) FOR UPDATE SKIP LOCKED) AS c" \
"         WHERE p.enabled" \
"         ORDER BY c.next_attempt_at, c.delivery_id LIMIT $1))" \
" RETURNING d.delivery_id, d.attempts, d.profile_id, d.body::text, d.webhook_id, d.next_attempt_at"

/*
 * A profile's allowance is $2, but a rate-limited one's: what it sends in
 * two seconds, and one more.  Claimed, they wait in the sender, and hold
 * that much of the worker's claims, which the other profiles need.
 */
static const char *claim_sql =
CLAIM_SQL("LEAST($2, CASE WHEN p.max_rate IS NULL THEN $2 ELSE pg_catalog.ceil(p.max_rate * 2)::int + 1 END)");

/* The same of a schema before 0.12, which has no rate limits. */
static const char *claim_sql_before_0_12 = CLAIM_SQL("$2");

/*
 * What a request needs from its profile, read once per claim: with the
 * old secret of a rotation that has not ended, the rate limit, the TLS
 * options and whether it orders ($previous: a schema before 0.12 has none
 * of them, one before 0.13 does not order).
 */
#define PROFILES_SQL(previous) \
"SELECT p.profile_id, p.url, p.method, p.auth, p.username, p.password, p.secret," \
"       COALESCE((pg_catalog.date_part('epoch', p.timeout) * 1000)::int, -1)," \
"       ARRAY(SELECT h.key || ': ' || h.value FROM pg_catalog.jsonb_each_text(p.headers) AS h" \
"              ORDER BY h.key)," \
"       ARRAY(SELECT h.key FROM pg_catalog.jsonb_object_keys(p.headers) AS h(key)" \
"              WHERE h.key OPERATOR(pg_catalog.~*) '(auth|token|key|secret|cookie|password|session)')," \
previous \
"  FROM webhook.profile p WHERE p.profile_id = ANY ($1)"

#define PROFILE_ROTATION_RATE_TLS \
"       CASE WHEN p.previous_secret_until > pg_catalog.now() THEN p.previous_secret END," \
"       CASE WHEN p.previous_secret_until > pg_catalog.now() THEN p.previous_secret_until END," \
"       COALESCE(p.max_rate::float8, 0), p.client_cert, p.client_key, p.ca_cert,"

static const char *profiles_sql = PROFILES_SQL(PROFILE_ROTATION_RATE_TLS "p.ordering = 'per_object'");

static const char *profiles_sql_before_0_13 = PROFILES_SQL(PROFILE_ROTATION_RATE_TLS "false");

static const char *profiles_sql_before_0_12 =
PROFILES_SQL("NULL::text, NULL::timestamptz, 0::float8, NULL::text, NULL::text, NULL::text, false");

/* Of the profiles the worker holds requests for, those no longer enabled. */
static const char *stopped_sql =
"SELECT w.profile_id FROM pg_catalog.unnest($1::int8[]) AS w(profile_id)"
" WHERE NOT EXISTS (SELECT FROM webhook.profile p"
"                    WHERE p.profile_id = w.profile_id AND p.enabled)";

/*
 * Claimed deliveries the worker gives back unsent: due again, as they were
 * (held, while their profile is disabled), or when the pause their
 * receiver asked for ends ($2).
 */
static const char *give_back_sql =
"UPDATE webhook.delivery d"
"   SET status = 'pending', attempts = d.attempts - 1,"
"       next_attempt_at = GREATEST(pg_catalog.now(), COALESCE(b.due_at, pg_catalog.now()))"
"  FROM ROWS FROM (pg_catalog.unnest($1::int8[]), pg_catalog.unnest($2::timestamptz[])) AS b(delivery_id, due_at)"
" WHERE d.delivery_id = b.delivery_id AND d.delivery_id = ANY ($1) AND d.status = 'sending'";

/*
 * The earliest waiting delivery of an enabled profile, one step down the
 * index for each; but those that have their allowance claimed ($1): a
 * record will make room for them, and wake the worker.  One that waits its
 * turn in an order is due when the one before it finishes (promote_sql).
 */
static const char *next_due_sql =
"SELECT pg_catalog.min(first.next_attempt_at) FROM webhook.profile p"
" CROSS JOIN LATERAL (SELECT d.next_attempt_at FROM webhook.delivery d"
"                      WHERE d.profile_id = p.profile_id AND d.status IN ('pending', 'retrying')"
"                        AND d.next_attempt_at < 'infinity'"
"                      ORDER BY d.next_attempt_at LIMIT 1) AS first"
" WHERE p.enabled AND p.profile_id <> ALL ($1)";

/*
 * NOTIFY webhook_failures: a delivery's attempts are exhausted.  Any role
 * may LISTEN, so the payload names the delivery and its profile and says
 * nothing of what was sent or answered (webhook.deliveries does, to those
 * who may read it).  Sent when the step commits.
 */
static void
notify_failed(HeapTuple row, TupleDesc desc)
{
	StringInfoData payload;
	bool		isnull;
	bool		no_status;
	Datum		status = SPI_getbinval(row, desc, 3, &no_status);

	initStringInfo(&payload);
	appendStringInfo(&payload, "{\"event\": \"delivery_failed\", \"delivery_id\": %lld, \"profile\": ",
					 (long long) DatumGetInt64(SPI_getbinval(row, desc, 5, &isnull)));
	escape_json(&payload, SPI_getvalue(row, desc, 6));
	appendStringInfo(&payload, ", \"events\": %s, \"response_status\": ",
					 TextDatumGetCString(DirectFunctionCall1(array_to_json,
															 SPI_getbinval(row, desc, 7, &isnull))));
	if (no_status)
		appendStringInfoString(&payload, "null");
	else
		appendStringInfo(&payload, "%d", DatumGetInt32(status));
	appendStringInfoChar(&payload, '}');
	Async_Notify(WEBHOOK_FAILURES_CHANNEL, payload.data);
}

/*
 * Record finished requests: the delivery's new state, then its attempt.
 * A delivery that is gone (its profile was dropped) or no longer ours
 * gets no attempt row.  A profile that logs light ($log: its log) keeps
 * no response body or headers, and no request body once the delivery is
 * delivered or failed: JSON null then says the body was not kept.
 */
#define RECORD_SQL(log, first_response) \
"WITH r AS (" \
"  SELECT * FROM ROWS FROM (pg_catalog.unnest($1::int8[]), pg_catalog.unnest($2::int4[])," \
"                           pg_catalog.unnest($3::timestamptz[]), pg_catalog.unnest($4::float8[])," \
"                           pg_catalog.unnest($5::text[]), pg_catalog.unnest($6::int4[])," \
"                           pg_catalog.unnest($7::jsonb[]), pg_catalog.unnest($8::text[])," \
"                           pg_catalog.unnest($9::text[]), pg_catalog.unnest($10::jsonb[]))" \
"    AS r(delivery_id, attempt, started_at, duration_ms, outcome, response_status," \
"         response_headers, response_body, error, request_headers)" \
"), u AS (" \
"  UPDATE webhook.delivery d" \
"     SET status = CASE WHEN r.response_status BETWEEN 200 AND 299 THEN 'delivered'" \
"                       WHEN d.attempts >= p.max_attempts OR r.response_status = 410 THEN 'failed'" \
"                       ELSE 'retrying' END," \
"         next_attempt_at = CASE WHEN r.response_status BETWEEN 200 AND 299" \
"                                  OR d.attempts >= p.max_attempts OR r.response_status = 410 THEN NULL" \
"                                ELSE pg_catalog.now()" \
"                                     + COALESCE(webhook._retry_after(r.response_headers)," \
"                                                webhook._retry_delay(p.retry_schedule, d.attempts)) END," \
"         delivered_at = CASE WHEN r.response_status BETWEEN 200 AND 299" \
"                             THEN r.started_at + pg_catalog.make_interval(secs => r.duration_ms / 1000) END," \
"         response_status = r.response_status, duration_ms = r.duration_ms," \
"         error = r.error," first_response \
"         response_body = CASE WHEN " log " = 'light' THEN NULL ELSE r.response_body END," \
"         body = CASE WHEN " log " = 'light' AND (r.response_status BETWEEN 200 AND 299" \
"                         OR d.attempts >= p.max_attempts OR r.response_status = 410)" \
"                     THEN 'null'::json ELSE d.body END" \
"    FROM r, webhook.profile p" \
"   WHERE d.delivery_id = r.delivery_id AND p.profile_id = d.profile_id AND d.status = 'sending'" \
"  RETURNING d.delivery_id, d.profile_id, d.status, r.response_status," \
"            p.consecutive_failures > 0 AS in_failure_run, " log " = 'light' AS light," \
"            p.name AS profile, d.events, d.error" \
"), a AS (" \
"  INSERT INTO webhook.attempt (delivery_id, attempt, started_at, duration_ms, outcome," \
"                               response_status, response_headers, response_body, error," \
"                               request_headers)" \
"  SELECT r.delivery_id, r.attempt, r.started_at, r.duration_ms, r.outcome, r.response_status," \
"         CASE WHEN u.light THEN NULL ELSE r.response_headers END," \
"         CASE WHEN u.light THEN NULL ELSE r.response_body END, r.error, r.request_headers" \
"    FROM r JOIN u ON u.delivery_id = r.delivery_id" \
")" \
"SELECT profile_id, status, response_status, in_failure_run, delivery_id, profile, events, error FROM u"

/*
 * From when a delivery could first be sent to its first response (see
 * webhook--0.10--0.11.sql): its capture; a batch's close, which its due
 * time still is when its first attempt is recorded; a redelivery's request.
 */
#define FIRST_RESPONSE \
"         first_response_ms = CASE WHEN d.attempts = 1 AND r.response_status IS NOT NULL" \
"                                  THEN pg_catalog.date_part('epoch', r.started_at" \
"                                         - CASE WHEN d.ready_at IS NOT NULL THEN d.ready_at" \
"                                                WHEN p.batching <> 'none' OR d.items > 1 THEN d.next_attempt_at" \
"                                                ELSE d.captured_at END) * 1000 + r.duration_ms" \
"                                  ELSE d.first_response_ms END,"

static const char *record_sql = RECORD_SQL("p.log", FIRST_RESPONSE);

/* The same of a schema before 0.11, which keeps no first response. */
static const char *record_sql_before_0_11 = RECORD_SQL("p.log", "");

/* The same of a schema before 0.9, where every profile logs in full. */
static const char *record_sql_before_0_9 = RECORD_SQL("'full'::text", "");

static const char *outcomes_sql =
"SELECT webhook._note_outcomes($1, $2, $3, $4, $5)";

/* Before 0.11, a profile keeps no last error. */
static const char *outcomes_sql_before_0_11 =
"SELECT webhook._note_outcomes($1, $2, $3, $4)";

/* Deliveries failed for good: the built-in event webhook.delivery_failed. */
static const char *delivery_failed_sql =
"SELECT webhook._delivery_failed($1)";

/*
 * Deliveries of ordering profiles just finished ($1, recorded by this
 * step): the next of each one's object, and the batches after it (after a
 * batch, the next of every object), are due now if nothing else unfinished
 * goes before them.  The worker waits on no one: one locked is left to
 * release_sql.
 */
static const char *promote_sql =
"WITH done AS ("
"  SELECT DISTINCT d.profile_id, d.order_key FROM webhook.delivery d"
"   WHERE d.delivery_id = ANY ($1) AND d.order_key IS NOT NULL AND d.next_attempt_at IS NULL"
"), heads AS ("
"  SELECT h.delivery_id FROM done CROSS JOIN pg_catalog.unnest(ARRAY[done.order_key, '']) AS k(order_key)"
"   CROSS JOIN LATERAL ("
"    SELECT w.delivery_id FROM webhook.delivery w"
"     WHERE w.profile_id = done.profile_id AND w.order_key IS NOT NULL"
"       AND w.order_key = k.order_key AND w.next_attempt_at IS NOT NULL"
"     ORDER BY w.delivery_id LIMIT 1) AS h"
"  UNION"
"  SELECT h.delivery_id FROM done CROSS JOIN LATERAL ("
"    SELECT DISTINCT ON (w.order_key) w.delivery_id FROM webhook.delivery w"
"     WHERE w.profile_id = done.profile_id AND w.order_key > '' AND w.next_attempt_at IS NOT NULL"
"     ORDER BY w.order_key, w.delivery_id) AS h"
"   WHERE done.order_key = ''"
")"
"UPDATE webhook.delivery d SET next_attempt_at = pg_catalog.now()"
" WHERE d.delivery_id = ANY (ARRAY("
"        SELECT w.delivery_id FROM webhook.delivery w"
"         WHERE w.delivery_id = ANY (ARRAY(SELECT delivery_id FROM heads))"
"           AND w.next_attempt_at = 'infinity'"
"           AND NOT " ORDER_BLOCKED("w", "e.delivery_id < w.delivery_id")
"         FOR UPDATE SKIP LOCKED))";

/*
 * Every delivery waiting its turn that nothing goes before any more: what
 * promote_sql could not see (a replay that committed after the one before
 * finished) or passed over (locked).  Now and then, and when an operator
 * called.
 */
static const char *release_sql =
"UPDATE webhook.delivery d SET next_attempt_at = pg_catalog.now()"
" WHERE d.delivery_id = ANY (ARRAY("
"        SELECT w.delivery_id FROM webhook.profile p"
"          JOIN webhook.delivery w ON w.profile_id = p.profile_id"
"         WHERE w.next_attempt_at = 'infinity'"
"           AND NOT " ORDER_BLOCKED("w", "e.delivery_id < w.delivery_id")
"         FOR UPDATE OF w SKIP LOCKED))";

/* At start: what a worker that ended without recording left in flight. */
static const char *recover_sql =
"UPDATE webhook.delivery d"
"   SET status = 'pending', next_attempt_at = pg_catalog.now(), attempts = d.attempts - 1"
" WHERE d.status = 'sending'";

/* Ended rotations' old secrets, and retired secrets past the retention. */
static const char *tidy_secrets_sql =
"SELECT webhook._tidy_secrets($1)";

/* Through delivery_finished_idx: it reads only the rows it deletes. */
static const char *purge_sql =
"WITH old AS ("
"  SELECT delivery_id FROM webhook.delivery"
"   WHERE next_attempt_at IS NULL AND status IN ('delivered', 'failed')"
"     AND created_at < pg_catalog.now() - pg_catalog.make_interval(secs => $1)"
"   ORDER BY created_at LIMIT $2"
"), gone AS ("
"  DELETE FROM webhook.attempt WHERE delivery_id = ANY (ARRAY(SELECT delivery_id FROM old))"
")"
"DELETE FROM webhook.delivery WHERE delivery_id = ANY (ARRAY(SELECT delivery_id FROM old))";

static SPIPlanPtr assemble_plan = NULL;
static SPIPlanPtr assemble_plan_before_0_13 = NULL;
static SPIPlanPtr promote_plan = NULL;
static SPIPlanPtr release_plan = NULL;
static SPIPlanPtr claim_plan = NULL;
static SPIPlanPtr claim_plan_before_0_12 = NULL;
static SPIPlanPtr next_due_plan = NULL;
static SPIPlanPtr record_plan = NULL;
static SPIPlanPtr record_plan_before_0_11 = NULL;
static SPIPlanPtr record_plan_before_0_9 = NULL;
static SPIPlanPtr outcomes_plan = NULL;
static SPIPlanPtr outcomes_plan_before_0_11 = NULL;
static SPIPlanPtr delivery_failed_plan = NULL;
static SPIPlanPtr purge_plan = NULL;
static SPIPlanPtr profiles_plan = NULL;
static SPIPlanPtr profiles_plan_before_0_12 = NULL;
static SPIPlanPtr profiles_plan_before_0_13 = NULL;
static SPIPlanPtr tidy_secrets_plan = NULL;
static SPIPlanPtr stopped_plan = NULL;
static SPIPlanPtr give_back_plan = NULL;

/* The caller's memory context: results outlive the step's transaction. */
static MemoryContext caller_cxt = NULL;

/*
 * Prepare a statement once, for the life of the worker.  generic: its plan
 * is made once, not again for each call's parameters, which would cost
 * more than running it (a statement on an array of ids, which plans
 * differently by the array's length, changing at every step).  The others
 * are left to the plan cache, which plans the large ones better for what
 * they are given.
 */
SPIPlanPtr
webhook_keep_plan(SPIPlanPtr *cache, const char *sql, int nargs, Oid *argtypes, bool generic)
{
	if (*cache == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare_cursor(sql, nargs, argtypes,
											  generic ? CURSOR_OPT_GENERIC_PLAN : 0);

		if (plan == NULL)
			elog(ERROR, "could not prepare webhook statement: %s",
				 SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		*cache = plan;
	}
	return *cache;
}

/*
 * Start a transaction.  Returns false (and starts nothing) when the
 * extension is gone from this database.
 */
static bool
begin_step(const char *activity)
{
	Oid			extoid;

	caller_cxt = CurrentMemoryContext;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	extoid = get_extension_oid(WEBHOOK_EXTENSION_NAME, true);

	/*
	 * The extension's lock first, before any table's: a DROP EXTENSION takes
	 * it first too (see lock_tables_for_drop in init.c), and the step then
	 * waits for it to end, holding nothing it needs.
	 */
	if (OidIsValid(extoid))
	{
		LockDatabaseObject(ExtensionRelationId, extoid, 0, AccessShareLock);
		extoid = get_extension_oid(WEBHOOK_EXTENSION_NAME, true);
	}
	PushActiveSnapshot(GetTransactionSnapshot());
	if (!OidIsValid(extoid))
	{
		PopActiveSnapshot();
		CommitTransactionCommand();
		MemoryContextSwitchTo(caller_cxt);
		return false;
	}
	pgstat_report_activity(STATE_RUNNING, activity);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	return true;
}

static void
end_step(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(caller_cxt);
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

bool
webhook_schema_before_0_9(void)
{
	Oid			profile = get_relname_relid("profile", get_namespace_oid(WEBHOOK_SCHEMA_NAME, false));

	return get_attnum(profile, "ignore_origins") == InvalidAttrNumber;
}

bool
webhook_schema_before_0_11(void)
{
	Oid			delivery = get_relname_relid("delivery", get_namespace_oid(WEBHOOK_SCHEMA_NAME, false));

	return get_attnum(delivery, "first_response_ms") == InvalidAttrNumber;
}

bool
webhook_schema_before_0_12(void)
{
	Oid			profile = get_relname_relid("profile", get_namespace_oid(WEBHOOK_SCHEMA_NAME, false));

	return get_attnum(profile, "previous_secret") == InvalidAttrNumber;
}

bool
webhook_schema_before_0_13(void)
{
	Oid			profile = get_relname_relid("profile", get_namespace_oid(WEBHOOK_SCHEMA_NAME, false));

	return get_attnum(profile, "ordering") == InvalidAttrNumber;
}

/* Give the deliveries a dead worker left in flight back to the queue. */
bool
webhook_queue_recover(void)
{
	if (!begin_step("webhook: recover"))
		return false;
	if (SPI_execute(recover_sql, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not recover webhook deliveries");
	if (SPI_processed > 0)
		ereport(LOG,
				(errmsg("webhook worker re-queued %llu deliveries left in flight",
						(unsigned long long) SPI_processed)));
	end_step();
	return true;
}

static char *
copy_text(HeapTuple tuple, TupleDesc desc, int column, MemoryContext cxt)
{
	char	   *value = SPI_getvalue(tuple, desc, column);

	return value ? MemoryContextStrdup(cxt, value) : NULL;
}

/* The elements of a text[] column, as C strings in the current context. */
static List *
text_array(HeapTuple tuple, TupleDesc desc, int column)
{
	bool		isnull;
	Datum		value = SPI_getbinval(tuple, desc, column, &isnull);
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	List	   *result = NIL;

	if (isnull)
		return NIL;
	deconstruct_array(DatumGetArrayTypeP(value), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
		if (!nulls[i])
			result = lappend(result, TextDatumGetCString(elems[i]));
	return result;
}

/* What a request needs from its profile (profiles_sql), for one step. */
typedef struct ProfileSettings
{
	int64		profile_id;
	char	   *url;
	char	   *method;
	char	   *auth;
	char	   *username;
	char	   *password;
	char	   *secret;
	char	   *previous_secret;	/* NULL: no rotation in progress */
	TimestampTz previous_secret_until;	/* it signs until then */
	double		max_rate;		/* requests a second, 0: no limit */
	char	   *client_cert;	/* PEM, or NULL */
	char	   *client_key;
	char	   *ca_cert;
	bool		ordered;		/* ordering per_object */
	int			timeout_ms;		/* -1: webhook.request_timeout */
	List	   *headers;		/* the profile's own "Name: value" lines */
	List	   *redacted;		/* their names that look secret */
} ProfileSettings;

static Datum int8_array(List *values);

/* Read the settings of the profiles of the claimed deliveries. */
static List *
read_profiles(List *profile_ids)
{
	Oid			types[1] = {INT8ARRAYOID};
	Datum		args[1] = {int8_array(profile_ids)};
	List	   *result = NIL;

	SPIPlanPtr	plan = webhook_schema_before_0_12() ?
		webhook_keep_plan(&profiles_plan_before_0_12, profiles_sql_before_0_12, 1, types, true) :
		webhook_schema_before_0_13() ?
		webhook_keep_plan(&profiles_plan_before_0_13, profiles_sql_before_0_13, 1, types, true) :
		webhook_keep_plan(&profiles_plan, profiles_sql, 1, types, true);

	if (SPI_execute_plan(plan, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read webhook profiles");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		ProfileSettings *p = palloc0(sizeof(ProfileSettings));
		bool		isnull;

		p->profile_id = DatumGetInt64(SPI_getbinval(tuple, desc, 1, &isnull));
		p->url = SPI_getvalue(tuple, desc, 2);
		p->method = SPI_getvalue(tuple, desc, 3);
		p->auth = SPI_getvalue(tuple, desc, 4);
		p->username = SPI_getvalue(tuple, desc, 5);
		p->password = SPI_getvalue(tuple, desc, 6);
		p->secret = SPI_getvalue(tuple, desc, 7);
		p->timeout_ms = DatumGetInt32(SPI_getbinval(tuple, desc, 8, &isnull));
		p->headers = text_array(tuple, desc, 9);
		p->redacted = text_array(tuple, desc, 10);
		p->previous_secret = SPI_getvalue(tuple, desc, 11);
		if (p->previous_secret != NULL)
			p->previous_secret_until = DatumGetTimestampTz(SPI_getbinval(tuple, desc, 12, &isnull));
		p->max_rate = DatumGetFloat8(SPI_getbinval(tuple, desc, 13, &isnull));
		p->client_cert = SPI_getvalue(tuple, desc, 14);
		p->client_key = SPI_getvalue(tuple, desc, 15);
		p->ca_cert = SPI_getvalue(tuple, desc, 16);
		p->ordered = DatumGetBool(SPI_getbinval(tuple, desc, 17, &isnull));
		result = lappend(result, p);
	}
	return result;
}

static ProfileSettings *
find_profile(List *profiles, int64 profile_id)
{
	ListCell   *lc;

	foreach(lc, profiles)
		if (((ProfileSettings *) lfirst(lc))->profile_id == profile_id)
			return lfirst(lc);
	return NULL;
}

static char *
copy_or_null(const char *s)
{
	return s ? pstrdup(s) : NULL;
}

/*
 * The request of a delivery: its body and every header but the Standard
 * Webhooks timestamp and signature, which are made when it goes on the
 * wire (see webhook_request_sign).  The Authorization header and
 * secret-looking headers of the profile are listed as redacted, so that
 * the recorded request headers do not show them.
 */
static WebhookRequest *
new_request(ProfileSettings *p, const char *body, const char *webhook_id)
{
	WebhookRequest *req = webhook_request_create();
	MemoryContext old = MemoryContextSwitchTo(req->cxt);
	ListCell   *lc;

	req->profile_id = p->profile_id;
	req->body = body ? pstrdup(body) : NULL;	/* a claim copies its own */
	req->webhook_id = pstrdup(webhook_id);
	req->url = pstrdup(p->url);
	req->method = pstrdup(p->method);
	req->secret = copy_or_null(p->secret);
	/* settings kept from an earlier step may hold a rotation that has ended */
	if (p->previous_secret != NULL && GetCurrentTimestamp() < p->previous_secret_until)
	{
		req->previous_secret = pstrdup(p->previous_secret);
		req->previous_secret_until = p->previous_secret_until;
	}
	req->timeout_ms = p->timeout_ms > 0 ? p->timeout_ms : webhook_request_timeout;
	req->max_rate = p->max_rate;
	req->client_cert = copy_or_null(p->client_cert);
	req->client_key = copy_or_null(p->client_key);
	req->ca_cert = copy_or_null(p->ca_cert);

	req->headers = list_make2(pstrdup("Content-Type: application/json"),
							  psprintf("User-Agent: %s", webhook_user_agent));
	if (strcmp(p->auth, "basic") == 0)
		req->headers = lappend(req->headers,
							   psprintf("Authorization: %s",
										webhook_basic_credentials(p->username, p->password)));
	else if (strcmp(p->auth, "bearer") == 0)
		req->headers = lappend(req->headers, psprintf("Authorization: Bearer %s", p->password));
	foreach(lc, p->headers)
		req->headers = lappend(req->headers, pstrdup(lfirst(lc)));
	req->headers = lappend(req->headers, psprintf("webhook-id: %s", req->webhook_id));
	req->redacted = list_make1(pstrdup("Authorization"));
	foreach(lc, p->redacted)
		req->redacted = lappend(req->redacted, pstrdup(lfirst(lc)));
	MemoryContextSwitchTo(old);
	return req;
}

static WebhookRequest *
request_from_claim(HeapTuple tuple, TupleDesc desc, ProfileSettings *p)
{
	bool		isnull;
	char	   *webhook_id = TextDatumGetCString(SPI_getbinval(tuple, desc, 5, &isnull));
	WebhookRequest *req = new_request(p, NULL, webhook_id);

	req->delivery_id = DatumGetInt64(SPI_getbinval(tuple, desc, 1, &isnull));
	req->attempt = DatumGetInt32(SPI_getbinval(tuple, desc, 2, &isnull));
	req->body = copy_text(tuple, desc, 4, req->cxt);
	pfree(webhook_id);
	return req;
}

/*
 * The request a delivery of this profile with this body would make, for
 * webhook.preview: the same headers, signed now.  NULL: no such profile.
 * The caller is connected to SPI and frees the request.
 */
WebhookRequest *
webhook_profile_request(int64 profile_id, const char *webhook_id, const char *body)
{
	List	   *profiles = read_profiles(list_make1(&profile_id));
	WebhookRequest *req;

	if (profiles == NIL)
		return NULL;
	req = new_request(linitial(profiles), body, webhook_id);
	webhook_request_sign(req);
	return req;
}

typedef struct ArrayColumn
{
	ArrayBuildState *state;
	Oid			type;
} ArrayColumn;

static void
add_value(ArrayColumn *col, Datum value, bool isnull)
{
	col->state = accumArrayResult(col->state, value, isnull, col->type, CurrentMemoryContext);
}

static void
add_text(ArrayColumn *col, const char *value)
{
	add_value(col, value ? CStringGetTextDatum(value) : (Datum) 0, value == NULL);
}

/* The column as an array, empty when nothing was added. */
static Datum
column_array(ArrayColumn *col)
{
	if (col->state == NULL)
		return PointerGetDatum(construct_empty_array(col->type));
	return makeArrayResult(col->state, CurrentMemoryContext);
}

static Datum
int8_array(List *values)
{
	ArrayColumn col = {NULL, INT8OID};
	ListCell   *lc;

	foreach(lc, values)
		add_value(&col, Int64GetDatum(*(int64 *) lfirst(lc)), false);
	return column_array(&col);
}

/*
 * Header fields as a jsonb object, built as jsonb_in would build it from
 * their JSON (a name that occurs more than once keeps its last value),
 * without writing and parsing that JSON.
 */
static Datum
fields_jsonb(HeaderFields *fields)
{
	JsonbParseState *state = NULL;
	JsonbValue	field;
	ListCell   *name;
	ListCell   *value;

	(void) pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	field.type = jbvString;
	forboth(name, fields->names, value, fields->values)
	{
		field.val.string.val = lfirst(name);
		field.val.string.len = strlen(lfirst(name));
		(void) pushJsonbValue(&state, WJB_KEY, &field);
		field.val.string.val = lfirst(value);
		field.val.string.len = strlen(lfirst(value));
		(void) pushJsonbValue(&state, WJB_VALUE, &field);
	}
	return JsonbPGetDatum(JsonbValueToJsonb(pushJsonbValue(&state, WJB_END_OBJECT, NULL)));
}

/* A list of failed deliveries' ids (an int8[]): the built-in event's rows. */
static void
raise_delivery_failed(void *failed_ids)
{
	Oid			type = INT8ARRAYOID;
	Datum		arg = PointerGetDatum(failed_ids);

	if (SPI_execute_plan(webhook_keep_plan(&delivery_failed_plan, delivery_failed_sql, 1, &type, false),
						 &arg, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not raise webhook.delivery_failed");
}

/*
 * Record the attempts of finished requests, all in one statement, then
 * what they mean for their profiles (runs of failures, 410), and let the
 * next in order go (*released: some did).  True when a retry was
 * scheduled.
 */
static bool
record_finished(List *requests, bool *released)
{
	enum
	{
		NCOLS = 10
	};
	Oid			types[NCOLS] = {INT8ARRAYOID, INT4ARRAYOID, TIMESTAMPTZARRAYOID,
		FLOAT8ARRAYOID, TEXTARRAYOID, INT4ARRAYOID, JSONBARRAYOID, TEXTARRAYOID,
	TEXTARRAYOID, JSONBARRAYOID};
	Oid			elemtypes[NCOLS] = {INT8OID, INT4OID, TIMESTAMPTZOID, FLOAT8OID,
	TEXTOID, INT4OID, JSONBOID, TEXTOID, TEXTOID, JSONBOID};
	ArrayColumn cols[NCOLS];
	Datum		args[NCOLS];
	ListCell   *lc;
	ArrayColumn outcome[4] = {{NULL, INT8OID}, {NULL, TEXTOID}, {NULL, INT4OID}, {NULL, TEXTOID}};
	ArrayColumn failed = {NULL, INT8OID};
	Oid			outcome_types[5] = {INT8ARRAYOID, TEXTARRAYOID, INT4ARRAYOID, TEXTARRAYOID, INT4OID};
	Datum		outcome_args[5];
	bool		before_0_11 = webhook_schema_before_0_11();
	bool		to_note = false;
	bool		retrying = false;
	List	   *in_order = NIL;
	SPIPlanPtr	plan;

	for (int i = 0; i < NCOLS; i++)
	{
		cols[i].state = NULL;
		cols[i].type = elemtypes[i];
	}
	foreach(lc, requests)
	{
		WebhookRequest *req = lfirst(lc);
		bool		response = webhook_outcome_has_response(req->outcome);

		add_value(&cols[0], Int64GetDatum(req->delivery_id), false);
		add_value(&cols[1], Int32GetDatum(req->attempt), false);
		add_value(&cols[2], TimestampTzGetDatum(req->started_at), false);
		add_value(&cols[3], Float8GetDatum(req->duration_ms), false);
		add_text(&cols[4], webhook_outcome_name(req->outcome));
		add_value(&cols[5], Int32GetDatum((int32) req->status), !response);
		add_value(&cols[6], response ? fields_jsonb(&req->response_fields) : (Datum) 0, !response);
		add_text(&cols[7], response ? req->response_body.data : NULL);
		add_text(&cols[8], req->error);
		add_value(&cols[9], fields_jsonb(&req->request_fields), false);
		if (webhook_claims_ordered(req->profile_id))
			in_order = lappend(in_order, &req->delivery_id);
	}
	for (int i = 0; i < NCOLS; i++)
		args[i] = makeArrayResult(cols[i].state, CurrentMemoryContext);

	if (webhook_schema_before_0_9())
		plan = webhook_keep_plan(&record_plan_before_0_9, record_sql_before_0_9, NCOLS, types, false);
	else if (before_0_11)
		plan = webhook_keep_plan(&record_plan_before_0_11, record_sql_before_0_11, NCOLS, types, false);
	else
		plan = webhook_keep_plan(&record_plan, record_sql, NCOLS, types, false);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not record webhook attempts");

	/*
	 * Only failures and 410s change a profile, and a success that ends a
	 * run of failures: anything else has nothing to note.
	 */
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	row = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		bool		no_status;
		bool		no_error;
		char	   *status = TextDatumGetCString(SPI_getbinval(row, desc, 2, &isnull));
		Datum		response_status = SPI_getbinval(row, desc, 3, &no_status);
		Datum		error = SPI_getbinval(row, desc, 8, &no_error);

		if (strcmp(status, "retrying") == 0)
			retrying = true;
		if (strcmp(status, "failed") == 0)
		{
			notify_failed(row, desc);
			add_value(&failed, SPI_getbinval(row, desc, 5, &isnull), false);
		}
		if (strcmp(status, "delivered") != 0 ||
			(!no_status && DatumGetInt32(response_status) == 410) ||
			DatumGetBool(SPI_getbinval(row, desc, 4, &isnull)))
			to_note = true;
		add_value(&outcome[0], SPI_getbinval(row, desc, 1, &isnull), false);
		add_value(&outcome[1], SPI_getbinval(row, desc, 2, &isnull), false);
		add_value(&outcome[2], response_status, no_status);
		add_value(&outcome[3], error, no_error);
	}

	/* the next in order of those that finished may go */
	if (in_order != NIL && !webhook_schema_before_0_13())
	{
		Oid			type = INT8ARRAYOID;
		Datum		ids = int8_array(in_order);

		if (SPI_execute_plan(webhook_keep_plan(&promote_plan, promote_sql, 1, &type, false),
							 &ids, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not release webhook deliveries waiting their turn");
		*released = SPI_processed > 0;
	}

	/*
	 * Before the outcomes, which may disable the profile: its deliveries'
	 * failures come first.  A subtransaction: what goes wrong there costs
	 * the alert, never the record; but a wait for a lock that gave up, or
	 * a cancel, is the step's, which gives way and comes again.
	 */
	if (failed.state != NULL && !before_0_11)
	{
		ErrorData  *error = webhook_in_subtransaction(raise_delivery_failed,
													  DatumGetPointer(makeArrayResult(failed.state,
																					  CurrentMemoryContext)));

		if (error != NULL)
		{
			if (error->sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE ||
				error->sqlerrcode == ERRCODE_T_R_DEADLOCK_DETECTED ||
				error->sqlerrcode == ERRCODE_QUERY_CANCELED)
				ReThrowError(error);
			ereport(WARNING,
					(errmsg("webhook.delivery_failed could not be raised: %s", error->message)));
			FreeErrorData(error);
		}
	}
	if (!to_note)
		return retrying;
	for (int i = 0; i < 4; i++)
		outcome_args[i] = makeArrayResult(outcome[i].state, CurrentMemoryContext);
	outcome_args[4] = Int32GetDatum(webhook_disable_after_failures);
	if (before_0_11)
	{
		outcome_args[3] = outcome_args[4];
		outcome_types[3] = INT4OID;
		plan = webhook_keep_plan(&outcomes_plan_before_0_11, outcomes_sql_before_0_11, 4, outcome_types, false);
	}
	else
		plan = webhook_keep_plan(&outcomes_plan, outcomes_sql, 5, outcome_types, false);
	if (SPI_execute_plan(plan, outcome_args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not note webhook outcomes");
	return retrying;
}

/*
 * The profiles the worker holds claims of that were disabled or dropped
 * since: the sender is to give back what it has not started.
 */
static List *
find_stopped(void)
{
	Oid			types[1] = {INT8ARRAYOID};
	Datum		args[1];
	List	   *profiles = webhook_claims_profiles();
	List	   *stopped = NIL;

	if (profiles == NIL)
		return NIL;
	args[0] = int8_array(profiles);
	if (SPI_execute_plan(webhook_keep_plan(&stopped_plan, stopped_sql, 1, types, true),
						 args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not check webhook profiles");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		MemoryContext old = MemoryContextSwitchTo(caller_cxt);	/* outlives SPI */
		int64	   *id = palloc(sizeof(int64));

		*id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		stopped = lappend(stopped, id);
		MemoryContextSwitchTo(old);
	}
	return stopped;
}

/* Give back deliveries the sender returned unsent. */
static void
give_back(List *unsent)
{
	Oid			types[2] = {INT8ARRAYOID, TIMESTAMPTZARRAYOID};
	Datum		args[2];
	List	   *ids = NIL;
	ArrayColumn due = {NULL, TIMESTAMPTZOID};
	ListCell   *lc;

	foreach(lc, unsent)
	{
		WebhookRequest *req = lfirst(lc);

		ids = lappend(ids, &req->delivery_id);
		add_value(&due, TimestampTzGetDatum(req->due_again), req->due_again == 0);
	}
	args[0] = int8_array(ids);
	args[1] = column_array(&due);
	if (SPI_execute_plan(webhook_keep_plan(&give_back_plan, give_back_sql, 2, types, false),
						 args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not give back webhook deliveries");
}

/* What one claim took of a profile. */
typedef struct ProfileTaken
{
	ClaimMark	mark;			/* the last taken, in due order */
	int			count;
	int			held;			/* claimed before */
} ProfileTaken;

/*
 * Claim up to limit due deliveries into requests, within each profile's
 * allowance: after each profile's mark (see claims.c), or from the oldest
 * due when after_marks is false.  Sets *marks to the last delivery taken of
 * each profile (ClaimMark *), and *full to the ids of the profiles that
 * have their allowance claimed now.  made: what this step claimed as it
 * made it (MadeClaim *), which counts against the allowances too.
 */
static List *
claim_due(int limit, bool after_marks, List *made, List **marks, List **full)
{
	Oid			types[6] = {INT4OID, INT4OID, INT8ARRAYOID, INT4ARRAYOID,
	TIMESTAMPTZARRAYOID, INT8ARRAYOID};
	Datum		args[6];
	List	   *held_ids;
	List	   *held_counts;
	List	   *held_marks;
	ArrayColumn counts = {NULL, INT4OID};
	ArrayColumn after_due_at = {NULL, TIMESTAMPTZOID};
	ArrayColumn after_id = {NULL, INT8OID};
	ListCell   *lc;
	ListCell   *lc2;
	ListCell   *lc3;
	List	   *taken = NIL;	/* ProfileTaken * */
	List	   *profile_ids = NIL;
	List	   *profiles;
	List	   *result = NIL;
	SPITupleTable *claimed;
	uint64		nclaimed;
	int			allowance = webhook_claims_allowance();

	*marks = NIL;
	*full = NIL;
	webhook_claims_loads(&held_ids, &held_counts, &held_marks);
	foreach(lc, made)
	{
		MadeClaim  *m = lfirst(lc);
		bool		found = false;

		forboth(lc2, held_ids, lc3, held_counts)
		{
			if (*(int64 *) lfirst(lc2) == m->profile_id)
			{
				lfirst_int(lc3)++;
				found = true;
				break;
			}
		}
		if (!found)
		{
			held_ids = lappend(held_ids, &m->profile_id);
			held_counts = lappend_int(held_counts, 1);
			held_marks = lappend(held_marks, NULL);
		}
	}
	forboth(lc, held_counts, lc2, held_marks)
	{
		ClaimMark  *mark = after_marks ? lfirst(lc2) : NULL;

		add_value(&counts, Int32GetDatum(lfirst_int(lc)), false);
		add_value(&after_due_at, mark ? TimestampTzGetDatum(mark->due_at) : (Datum) 0, mark == NULL);
		add_value(&after_id, mark ? Int64GetDatum(mark->delivery_id) : (Datum) 0, mark == NULL);
	}
	args[0] = Int32GetDatum(limit);
	args[1] = Int32GetDatum(allowance);
	args[2] = int8_array(held_ids);
	args[3] = column_array(&counts);
	args[4] = column_array(&after_due_at);
	args[5] = column_array(&after_id);
	/*
	 * Generic: planned for each call's arrays it comes out the same (the
	 * profiles, then each one's range of the due index), and the planning
	 * was a tenth of the worker's time in a drain.  Left to the plan cache,
	 * it is planned at every call: the generic plan's guess of the arrays'
	 * lengths makes it look a little dearer.
	 */
	if (SPI_execute_plan(webhook_schema_before_0_12() ?
						 webhook_keep_plan(&claim_plan_before_0_12, claim_sql_before_0_12, 6, types, true) :
						 webhook_keep_plan(&claim_plan, claim_sql, 6, types, true),
						 args, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "could not claim webhook deliveries");
	claimed = SPI_tuptable;
	nclaimed = SPI_processed;

	/* per profile: how many were taken, and the last in due order */
	for (uint64 i = 0; i < nclaimed; i++)
	{
		bool		isnull;
		HeapTuple	row = claimed->vals[i];
		int64		id = DatumGetInt64(SPI_getbinval(row, claimed->tupdesc, 3, &isnull));
		int64		delivery_id = DatumGetInt64(SPI_getbinval(row, claimed->tupdesc, 1, &isnull));
		TimestampTz due_at = DatumGetTimestampTz(SPI_getbinval(row, claimed->tupdesc, 6, &isnull));
		ProfileTaken *t = NULL;

		foreach(lc, taken)
			if (((ProfileTaken *) lfirst(lc))->mark.profile_id == id)
				t = lfirst(lc);
		if (t == NULL)
		{
			MemoryContext old = MemoryContextSwitchTo(caller_cxt);

			t = palloc0(sizeof(ProfileTaken));
			t->mark.profile_id = id;
			t->held = 0;
			forboth(lc, held_ids, lc2, held_counts)
				if (*(int64 *) lfirst(lc) == id)
					t->held = lfirst_int(lc2);
			taken = lappend(taken, t);
			MemoryContextSwitchTo(old);
			profile_ids = lappend(profile_ids, &t->mark.profile_id);
		}
		/* the rows come in no particular order: the mark is the last in due order */
		if (t->count == 0 || due_at > t->mark.due_at ||
			(due_at == t->mark.due_at && delivery_id > t->mark.delivery_id))
		{
			t->mark.due_at = due_at;
			t->mark.delivery_id = delivery_id;
		}
		t->count++;
	}

	/* the rate-limited profiles' allowances, and which order, as their settings say now */
	profiles = nclaimed > 0 ? read_profiles(profile_ids) : NIL;
	foreach(lc, profiles)
	{
		ProfileSettings *p = lfirst(lc);

		webhook_claims_set_terms(p->profile_id, p->max_rate > 0 ? (int) ceil(p->max_rate * 2) + 1 : 0,
								 p->ordered);
	}

	/* the profiles now at their allowance: those held at it, those just filled */
	forboth(lc, held_ids, lc2, held_counts)
		if (lfirst_int(lc2) >= webhook_claims_allowance_of(*(int64 *) lfirst(lc)))
			*full = lappend(*full, lfirst(lc));
	foreach(lc, taken)
	{
		ProfileTaken *t = lfirst(lc);
		MemoryContext old = MemoryContextSwitchTo(caller_cxt);	/* outlives SPI */
		int			its_allowance = webhook_claims_allowance_of(t->mark.profile_id);

		*marks = lappend(*marks, &t->mark);
		MemoryContextSwitchTo(old);
		if (t->held < its_allowance && t->held + t->count >= its_allowance)
			*full = lappend(*full, &t->mark.profile_id);
	}
	if (nclaimed == 0)
		return NIL;

	for (uint64 i = 0; i < nclaimed; i++)
	{
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(claimed->vals[i], claimed->tupdesc, 3, &isnull));
		ProfileSettings *p = find_profile(profiles, id);
		WebhookRequest *req;
		MemoryContext old;

		if (p == NULL)			/* cannot happen: the claim joined the profile */
			elog(ERROR, "webhook profile %lld vanished during a claim", (long long) id);
		req = request_from_claim(claimed->vals[i], claimed->tupdesc, p);
		old = MemoryContextSwitchTo(caller_cxt);
		result = lappend(result, req);
		MemoryContextSwitchTo(old);
	}
	return result;
}

/*
 * Profile settings kept from step to step for the deliveries claimed as
 * made, each with the version of its profile row (xmin) it was read for:
 * a profile that changed since is a row of another version, read again.
 * (Read in a later statement of the step, the settings may be newer than
 * that version, never older.)  All are let go now and then, so that an
 * xmin is never compared with one from 2^32 transactions before.
 */
#define KEPT_PROFILES_MAX 256
#define KEPT_PROFILES_MS (10 * 60 * 1000)

typedef struct KeptProfile
{
	TransactionId version;
	ProfileSettings *settings;
} KeptProfile;

static MemoryContext kept_cxt = NULL;
static List *kept_profiles = NIL;	/* KeptProfile *, in kept_cxt */
static TimestampTz kept_since = 0;

static List *
copy_strings(List *strings)
{
	List	   *copy = NIL;
	ListCell   *lc;

	foreach(lc, strings)
		copy = lappend(copy, pstrdup(lfirst(lc)));
	return copy;
}

static ProfileSettings *
kept_profile(int64 profile_id, TransactionId version)
{
	ListCell   *lc;

	foreach(lc, kept_profiles)
	{
		KeptProfile *k = lfirst(lc);

		if (k->settings->profile_id == profile_id && k->version == version)
			return k->settings;
	}
	return NULL;
}

static void
keep_profile(ProfileSettings *p, TransactionId version)
{
	MemoryContext old;
	KeptProfile *k;
	ProfileSettings *copy;

	if (kept_cxt == NULL)
		kept_cxt = AllocSetContextCreate(TopMemoryContext, "webhook profile settings",
										 ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(kept_cxt);
	copy = palloc(sizeof(ProfileSettings));
	copy->profile_id = p->profile_id;
	copy->url = pstrdup(p->url);
	copy->method = pstrdup(p->method);
	copy->auth = pstrdup(p->auth);
	copy->username = copy_or_null(p->username);
	copy->password = copy_or_null(p->password);
	copy->secret = copy_or_null(p->secret);
	copy->previous_secret = copy_or_null(p->previous_secret);
	copy->previous_secret_until = p->previous_secret_until;
	copy->max_rate = p->max_rate;
	copy->client_cert = copy_or_null(p->client_cert);
	copy->client_key = copy_or_null(p->client_key);
	copy->ca_cert = copy_or_null(p->ca_cert);
	copy->ordered = p->ordered;
	copy->timeout_ms = p->timeout_ms;
	copy->headers = copy_strings(p->headers);
	copy->redacted = copy_strings(p->redacted);
	k = palloc(sizeof(KeptProfile));
	k->version = version;
	k->settings = copy;
	kept_profiles = lappend(kept_profiles, k);
	MemoryContextSwitchTo(old);
}

/*
 * The requests of the deliveries the expansion claimed as it made them,
 * with the settings of their profiles as kept, or read now.
 */
static List *
requests_made(List *made)
{
	List	   *to_read = NIL;	/* MadeClaim *, one per profile to read */
	List	   *result = NIL;
	ListCell   *lc;

	/* old versions and dropped profiles are let go now and then */
	if (kept_cxt != NULL &&
		(list_length(kept_profiles) >= KEPT_PROFILES_MAX ||
		 TimestampDifferenceExceeds(kept_since, GetCurrentTimestamp(), KEPT_PROFILES_MS)))
	{
		MemoryContextReset(kept_cxt);
		kept_profiles = NIL;
	}
	if (kept_profiles == NIL)
		kept_since = GetCurrentTimestamp();
	foreach(lc, made)
	{
		MadeClaim  *m = lfirst(lc);
		ListCell   *seen;
		bool		found = kept_profile(m->profile_id, m->profile_version) != NULL;

		foreach(seen, to_read)
			found = found || ((MadeClaim *) lfirst(seen))->profile_id == m->profile_id;
		if (!found)
			to_read = lappend(to_read, m);
	}
	if (to_read != NIL)
	{
		List	   *ids = NIL;
		List	   *profiles;

		foreach(lc, to_read)
			ids = lappend(ids, &((MadeClaim *) lfirst(lc))->profile_id);
		profiles = read_profiles(ids);
		foreach(lc, to_read)
		{
			MadeClaim  *m = lfirst(lc);
			ProfileSettings *p = find_profile(profiles, m->profile_id);

			if (p == NULL)		/* cannot happen: the expansion joined it */
				elog(ERROR, "webhook profile %lld vanished during an expansion",
					 (long long) m->profile_id);
			keep_profile(p, m->profile_version);
		}
	}
	foreach(lc, made)
	{
		MadeClaim  *m = lfirst(lc);
		ProfileSettings *p = kept_profile(m->profile_id, m->profile_version);
		WebhookRequest *req;
		MemoryContext old;

		if (p == NULL)			/* cannot happen: kept above */
			elog(ERROR, "webhook profile %lld has no settings", (long long) m->profile_id);
		req = new_request(p, m->body, m->webhook_id);
		req->delivery_id = m->delivery_id;
		req->attempt = 1;
		old = MemoryContextSwitchTo(caller_cxt);
		result = lappend(result, req);
		MemoryContextSwitchTo(old);
	}
	return result;
}

/*
 * The counts a statement of the step returns in columns locked_column and
 * the next: the rows it locked, at most lock_step, and those of them it
 * took.  True when rows were left for another step: it locked as many as
 * it could, or took fewer than it locked.
 */
bool
webhook_rows_left(HeapTuple row, TupleDesc desc, int locked_column, int lock_step)
{
	bool		isnull;
	int64		locked = DatumGetInt64(SPI_getbinval(row, desc, locked_column, &isnull));
	int64		taken = DatumGetInt64(SPI_getbinval(row, desc, locked_column + 1, &isnull));

	return locked >= lock_step || taken < locked;
}

/*
 * Put together the batches that are due, up to ASSEMBLE_STEP items (see
 * assemble_sql); true when some were left for another step.
 */
static bool
assemble_due(bool *assembled)
{
	Oid			types[1] = {INT4OID};
	Datum		args[1] = {Int32GetDatum(ASSEMBLE_STEP)};
	bool		isnull;

	if (SPI_execute_plan(webhook_schema_before_0_13() ?
						 webhook_keep_plan(&assemble_plan_before_0_13, assemble_sql_before_0_13, 1, types, false) :
						 webhook_keep_plan(&assemble_plan, assemble_sql, 1, types, false),
						 args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not assemble webhook batches");
	*assembled = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2,
											 &isnull)) > 0;
	return webhook_rows_left(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, LOCK_STEP);
}

/*
 * One transaction of the worker: record what finished, give back what came
 * back unsent, find profiles stopped since their deliveries were claimed,
 * expand new occurrences, put together the batches that are due, claim
 * what is due, and find when the next delivery (or batch) is due.  Each of
 * these runs only when it may find something to do: the expansion when a
 * commit queued changes, the assembly when a batch may be due, the search
 * for the next due time when the claim took less than it could and that
 * time may have changed.
 *
 * The commit does not wait for the disk.  A crash that loses it loses
 * nothing: a lost record leaves its deliveries "sending", a lost claim
 * leaves them pending, and they are sent again under the same webhook-id
 * (at least once).  A lost expansion leaves its occurrences queued, and
 * expanding them again gives the same webhook-ids (see expand.c).
 */
void
webhook_queue_step(WebhookStep *step)
{
	bool		isnull;
	Datum		due;
	bool		deferred = false;
	bool		claim_full = false;
	bool		assembled = false;
	bool		batched = false;
	bool		retrying = false;
	bool		released = false;	/* deliveries in order were made due */
	List	   *full_profiles = NIL;
	ClaimAsMade as_made = {0};
	bool		claim_as_made;

	step->claimed = NIL;
	step->claim_marks = NIL;
	step->stopped = NIL;
	step->claim_blocked = true;
	step->more_occurrences = false;
	step->more_batches = false;
	step->next_due = 0;
	step->next_due_found = false;
	step->deadlines_looked = false;
	step->next_deadline = 0;
	step->expand_again_at = 0;
	step->extension_present = begin_step("webhook: step");
	if (!step->extension_present)
		return;
	step->taken_at = GetCurrentTransactionStartTimestamp();
	(void) set_config_option("synchronous_commit", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_LOCAL, true, 0, false);

	if (step->finished != NIL)
		retrying = record_finished(step->finished, &released);
	if (step->unsent != NIL)
		give_back(step->unsent);
	if (step->sending)
		step->stopped = find_stopped();
	else
	{
		/* not sending: what the sender holds and has not started comes back */
		MemoryContext old = MemoryContextSwitchTo(caller_cxt);

		step->stopped = webhook_claims_profiles();
		MemoryContextSwitchTo(old);
	}

	/* what waited its turn and may go now: before the claim, which takes it */
	if (step->release_waiting && !webhook_schema_before_0_13())
	{
		if (SPI_execute_plan(webhook_keep_plan(&release_plan, release_sql, 0, NULL, false),
							 NULL, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not release webhook deliveries waiting their turn");
		released = released || SPI_processed > 0;
	}

	/*
	 * Nothing is due but what this step makes: the deliveries the expansion
	 * makes are claimed by the statement that makes them, and there is no
	 * claim besides, unless one was left (no room) or a batch is put
	 * together.  Something may have come due since the last claim when
	 * deliveries are given back, a batch may be due, or the next due time
	 * is to be looked for (it was reached, an operator called, or a second
	 * passed), or deliveries waiting their turn in an order were released:
	 * then only the claim finds it.
	 */
	claim_as_made = step->claim_as_made && step->sending && step->claim_limit > 0 &&
		step->unsent == NIL && !step->assemble && !step->find_next_due && !released;
	as_made.room = step->claim_limit;
	as_made.all_taken = true;
	/* what comes due is queued first, and expanded below */
	if (step->fire_deadlines)
	{
		if (webhook_fire_deadlines(&step->next_deadline))
			step->expand = true;
		step->deadlines_looked = true;
	}
	if (step->expand)
		step->more_occurrences = webhook_expand(&deferred, &batched,
												claim_as_made ? &as_made : NULL);
	/* a batch the expansion grew to full, or started due, is put together now */
	if (step->assemble || batched)
		step->more_batches = assemble_due(&assembled);
	if (as_made.made != NIL)
		step->claimed = requests_made(as_made.made);
	if (claim_as_made && as_made.all_taken && !batched && !assembled)
		step->claim_blocked = false;
	else if (step->claim_limit > 0 && step->sending)
	{
		/*
		 * A batch put together is due since its first change's time plus
		 * its wait, which may be before where a claim got to: this claim
		 * looks from the oldest due.
		 */
		int			limit = step->claim_limit - list_length(step->claimed);

		if (limit > 0)
		{
			List	   *due = claim_due(limit, !assembled, as_made.made, &step->claim_marks,
										  &full_profiles);
			MemoryContext old = MemoryContextSwitchTo(caller_cxt);	/* outlives SPI */

			step->claimed = list_concat(step->claimed, due);
			MemoryContextSwitchTo(old);
		}
		claim_full = list_length(step->claimed) >= step->claim_limit;
		step->claim_blocked = claim_full || full_profiles != NIL;
	}

	/*
	 * A full claim says that more is due now; otherwise, when, should that
	 * have changed: the worker may say so, and a retry scheduled, a
	 * delivery given back or a batch written here do.  A step that only
	 * made deliveries due now, took what it could of them and recorded
	 * final outcomes leaves it as it was.  Not read-only: it must see the
	 * retries this step has just scheduled.
	 */
	if (step->sending && !claim_full &&
		(step->find_next_due || retrying || step->unsent != NIL || batched || assembled))
	{
		Oid			types[1] = {INT8ARRAYOID};
		Datum		args[1] = {int8_array(full_profiles)};

		if (SPI_execute_plan(webhook_keep_plan(&next_due_plan, next_due_sql, 1, types, false),
							 args, NULL, false, 0) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "could not read the next webhook due time");
		step->next_due_found = true;
		due = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		if (!isnull)
			step->next_due = DatumGetTimestampTz(due);
	}
	/* a locked table held up (some of) the expansion: try again in a moment */
	if (deferred)
		step->expand_again_at = webhook_expand_retry_at();
	end_step();
}

static void
tidy_secrets(void *unused)
{
	Oid			type = INT4OID;
	Datum		arg = Int32GetDatum(webhook_retention);

	if (SPI_execute_plan(webhook_keep_plan(&tidy_secrets_plan, tidy_secrets_sql, 1, &type, false),
						 &arg, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not tidy webhook secrets");
}

/*
 * Delete one step of deliveries (and their attempts) older than
 * webhook.retention.  Returns true when there may be more to delete.
 */
bool
webhook_queue_purge(void)
{
	Oid			types[2] = {INT4OID, INT4OID};
	Datum		args[2];
	bool		more;

	if (!begin_step("webhook: purge"))
		return false;
	args[0] = Int32GetDatum(webhook_retention);
	args[1] = Int32GetDatum(PURGE_STEP);
	if (SPI_execute_plan(webhook_keep_plan(&purge_plan, purge_sql, 2, types, false),
						 args, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not purge webhook history");
	more = SPI_processed >= PURGE_STEP;

	/*
	 * Once per housekeeping, with its last step.  A subtransaction: what
	 * goes wrong there keeps a secret a while longer (an old one signs no
	 * more: it is read only until its time), never the purge; a cancel is
	 * the step's.
	 */
	if (!more && !webhook_schema_before_0_12())
	{
		ErrorData  *error = webhook_in_subtransaction(tidy_secrets, NULL);

		if (error != NULL)
		{
			if (error->sqlerrcode == ERRCODE_QUERY_CANCELED)
				ReThrowError(error);
			ereport(WARNING,
					(errmsg("webhook secrets could not be tidied: %s", error->message)));
			FreeErrorData(error);
		}
	}
	end_step();
	return more;
}

/*
 * Whether this database's worker sends: webhook.sending as the database
 * sets it (ALTER DATABASE ... SET), else as the server's configuration
 * files set it (postgresql.conf, ALTER SYSTEM), else on.  Read from the
 * catalog and the files, not from the worker's own session, which took the
 * database's value once, when it connected, and would keep it.
 */
static const char *sending_sql =
"SELECT COALESCE("
"  (SELECT pg_catalog.substr(c.setting, pg_catalog.length('webhook.sending=') + 1)"
"     FROM pg_catalog.pg_db_role_setting s, pg_catalog.unnest(s.setconfig) AS c(setting)"
"    WHERE s.setdatabase = $1 AND s.setrole = 0 AND c.setting LIKE 'webhook.sending=%'),"
"  (SELECT f.setting FROM pg_catalog.pg_file_settings f"
"    WHERE f.name = 'webhook.sending' AND f.error IS NULL ORDER BY f.seqno DESC LIMIT 1),"
"  'on')";

bool
webhook_queue_sending(void)
{
	Oid			types[1] = {OIDOID};
	Datum		args[1] = {ObjectIdGetDatum(MyDatabaseId)};
	bool		sending = true;
	char	   *value;

	if (!begin_step("webhook: settings"))
		return true;
	if (SPI_execute_with_args(sending_sql, 1, types, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read webhook.sending");
	value = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	if (value == NULL || !parse_bool(value, &sending))
		sending = true;
	end_step();
	return sending;
}
