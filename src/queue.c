/*
 * queue.c
 *		The worker's SQL: turn captured occurrences into deliveries, claim the
 *		deliveries that are due, record the attempts, purge old history.
 *
 * Every function here is one short transaction of its own; none is ever
 * open while a request is on the wire.  Statements are prepared once and
 * kept (SPI_keepplan).  Results of many requests are recorded by one
 * statement that takes arrays.
 */
#include "webhook.h"
#include "http.h"
#include "queue.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

/* Changed rows turned into deliveries by one transaction, about. */
#define EXPAND_STEP 2000

/* Finished deliveries purged by one transaction at most. */
#define PURGE_STEP 1000

/* A claimed delivery not recorded by then is claimable again. */
#define LEASE_SECONDS 3600

/*
 * Each changed row of a queue row becomes one delivery per binding it
 * matched.  The envelope is built here, from the snapshot taken by the
 * capture trigger.  Queue rows are taken in order, up to $1 changed rows
 * (and at least one queue row).
 */
static const char *expand_sql =
"WITH locked AS ("
"  SELECT occurrence_id, row_count FROM webhook.occurrence"
"   ORDER BY occurrence_id LIMIT 1000 FOR UPDATE SKIP LOCKED"
"), picked AS ("
"  SELECT occurrence_id FROM ("
"    SELECT occurrence_id, row_count,"
"           pg_catalog.sum(row_count) OVER (ORDER BY occurrence_id) AS running FROM locked) AS x"
"   WHERE running - row_count < $1"
"), claimed AS ("
"  DELETE FROM webhook.occurrence WHERE occurrence_id IN (SELECT occurrence_id FROM picked)"
"  RETURNING *"
"), changed AS ("
"  SELECT c.occurrence_id, c.captured_at, c.capture_error, c.bindings, r.ord, r.new_row, r.old_row"
"    FROM claimed c"
"   CROSS JOIN LATERAL ROWS FROM (pg_catalog.json_array_elements(c.new_rows),"
"                                 pg_catalog.json_array_elements(c.old_rows))"
"         WITH ORDINALITY AS r(new_row, old_row, ord)"
"), item AS ("
"  SELECT c.occurrence_id, c.ord, c.captured_at, c.capture_error, b.binding_id, p.profile_id,"
"         p.name AS profile, p.enabled, e.name AS event, e.title, e.object, e.operation,"
"         CASE WHEN e.operation = 'delete' THEN c.old_row ELSE c.new_row END AS row,"
"         c.old_row, c.new_row, e.key_columns, e.parent_object, e.parent_table,"
"         e.parent_column, e.parent_key, pg_catalog.gen_random_uuid()::text AS id"
"  FROM changed c"
"  CROSS JOIN LATERAL pg_catalog.unnest(c.bindings) AS m(binding_id)"
"  JOIN webhook.binding b ON b.binding_id = m.binding_id"
"  JOIN webhook.event e ON e.event_id = b.event_id"
"  JOIN webhook.profile p ON p.profile_id = b.profile_id"
"), inserted AS ("
"  INSERT INTO webhook.delivery (profile_id, webhook_id, events, items, body, status,"
"                                next_attempt_at, captured_at, error)"
"  SELECT i.profile_id, i.id, ARRAY[i.event], 1,"
"         webhook._envelope(i.id, i.profile, i.binding_id, i.event, i.title, i.object,"
"                           i.key_columns, i.captured_at, i.operation, i.row, i.old_row,"
"                           i.new_row, i.parent_object,"
"                           CASE WHEN i.parent_table IS NOT NULL THEN"
"                             webhook._parent_row(i.parent_table, i.parent_key,"
"                                                 i.row -> i.parent_column) END),"
"         CASE WHEN i.capture_error IS NOT NULL THEN 'failed'"
"              WHEN i.enabled THEN 'pending' ELSE 'held' END,"
"         CASE WHEN i.capture_error IS NULL THEN pg_catalog.now() END, i.captured_at,"
"         'a condition failed when the change was captured: ' || i.capture_error"
"  FROM item i ORDER BY i.occurrence_id, i.ord, i.binding_id"
"  RETURNING 1"
")"
"SELECT (SELECT pg_catalog.count(*) FROM locked), (SELECT pg_catalog.count(*) FROM claimed)";

static const char *claim_sql =
"UPDATE webhook.delivery d"
"   SET status = 'sending', attempts = d.attempts + 1,"
"       last_attempt_at = pg_catalog.now(),"
"       lease_until = pg_catalog.now() + pg_catalog.make_interval(secs => $2)"
"  FROM webhook.profile p"
" WHERE p.profile_id = d.profile_id AND p.enabled"
"   AND d.delivery_id = ANY (ARRAY("
"       WITH busy AS ("
"          SELECT profile_id, pg_catalog.count(*) AS n FROM webhook.delivery"
"           WHERE status = 'sending' GROUP BY profile_id"
"        ), candidates AS ("
"          SELECT delivery_id, profile_id, next_attempt_at FROM webhook.delivery"
"           WHERE status IN ('pending', 'retrying') AND next_attempt_at <= pg_catalog.now()"
"           ORDER BY next_attempt_at, delivery_id LIMIT $1 * 4 FOR UPDATE SKIP LOCKED"
"        )"
"        SELECT c.delivery_id"
"          FROM (SELECT candidates.*, pg_catalog.row_number() OVER"
"                       (PARTITION BY profile_id ORDER BY next_attempt_at, delivery_id) AS n"
"                  FROM candidates) AS c"
"          LEFT JOIN busy b ON b.profile_id = c.profile_id"
"         WHERE c.n + COALESCE(b.n, 0) <= $3"
"         ORDER BY c.next_attempt_at, c.delivery_id LIMIT $1))"
" RETURNING d.delivery_id, d.attempts, d.profile_id, p.url, p.method, d.body::text,"
"           d.webhook_id, p.auth, p.username, p.password, p.secret,"
"           COALESCE((pg_catalog.date_part('epoch', p.timeout) * 1000)::int, -1),"
"           ARRAY(SELECT h.key || ': ' || h.value FROM pg_catalog.jsonb_each_text(p.headers) AS h"
"                  ORDER BY h.key),"
"           ARRAY(SELECT h.key FROM pg_catalog.jsonb_object_keys(p.headers) AS h(key)"
"                  WHERE h.key OPERATOR(pg_catalog.~*) '(auth|token|key|secret|cookie|password|session)')";

/*
 * The earliest waiting delivery: one step down the index.  (A disabled
 * profile's deliveries are held, not pending; see the worker for one that
 * is due but cannot be claimed.)
 */
static const char *next_due_sql =
"SELECT pg_catalog.min(next_attempt_at) FROM webhook.delivery"
" WHERE status IN ('pending', 'retrying')";

static const char *record_sql =
"WITH r AS ("
"  SELECT * FROM ROWS FROM (pg_catalog.unnest($1::int8[]), pg_catalog.unnest($2::int4[]),"
"                           pg_catalog.unnest($3::timestamptz[]), pg_catalog.unnest($4::float8[]),"
"                           pg_catalog.unnest($5::text[]), pg_catalog.unnest($6::int4[]),"
"                           pg_catalog.unnest($7::text[]), pg_catalog.unnest($8::text[]),"
"                           pg_catalog.unnest($9::text[]), pg_catalog.unnest($10::text[]))"
"    AS r(delivery_id, attempt, started_at, duration_ms, outcome, response_status,"
"         response_headers, response_body, error, request_headers)"
"), a AS ("
"  INSERT INTO webhook.attempt (delivery_id, attempt, started_at, duration_ms, outcome,"
"                               response_status, response_headers, response_body, error,"
"                               request_headers)"
"  SELECT delivery_id, attempt, started_at, duration_ms, outcome, response_status,"
"         response_headers::jsonb, response_body, error, request_headers::jsonb FROM r"
")"
"UPDATE webhook.delivery d"
"   SET status = CASE WHEN r.response_status BETWEEN 200 AND 299 THEN 'delivered'"
"                     WHEN d.attempts >= p.max_attempts OR r.response_status = 410 THEN 'failed'"
"                     ELSE 'retrying' END,"
"       next_attempt_at = CASE WHEN r.response_status BETWEEN 200 AND 299"
"                                OR d.attempts >= p.max_attempts OR r.response_status = 410 THEN NULL"
"                              ELSE pg_catalog.now()"
"                                   + COALESCE(webhook._retry_after(r.response_headers::jsonb),"
"                                              webhook._retry_delay(p.retry_schedule, d.attempts)) END,"
"       delivered_at = CASE WHEN r.response_status BETWEEN 200 AND 299 THEN pg_catalog.clock_timestamp() END,"
"       lease_until = NULL, response_status = r.response_status, duration_ms = r.duration_ms,"
"       error = r.error, response_body = r.response_body"
"  FROM r, webhook.profile p"
" WHERE d.delivery_id = r.delivery_id AND p.profile_id = d.profile_id AND d.status = 'sending'"
" RETURNING d.next_attempt_at, d.profile_id, d.status, r.response_status";

static const char *outcomes_sql =
"SELECT webhook._note_outcomes($1, $2, $3, $4)";

static const char *recover_sql =
"UPDATE webhook.delivery SET status = 'pending', attempts = attempts - 1, lease_until = NULL,"
"       next_attempt_at = pg_catalog.now()"
" WHERE status = 'sending'";

static const char *purge_sql =
"WITH old AS ("
"  SELECT delivery_id FROM webhook.delivery"
"   WHERE status IN ('delivered', 'failed')"
"     AND created_at < pg_catalog.now() - pg_catalog.make_interval(secs => $1)"
"   ORDER BY delivery_id LIMIT $2"
"), gone AS ("
"  DELETE FROM webhook.attempt WHERE delivery_id IN (SELECT delivery_id FROM old)"
")"
"DELETE FROM webhook.delivery WHERE delivery_id IN (SELECT delivery_id FROM old)";

static SPIPlanPtr expand_plan = NULL;
static SPIPlanPtr claim_plan = NULL;
static SPIPlanPtr next_due_plan = NULL;
static SPIPlanPtr record_plan = NULL;
static SPIPlanPtr outcomes_plan = NULL;
static SPIPlanPtr purge_plan = NULL;

/* The caller's memory context: results outlive the step's transaction. */
static MemoryContext caller_cxt = NULL;

static SPIPlanPtr
keep_plan(SPIPlanPtr *cache, const char *sql, int nargs, Oid *argtypes)
{
	if (*cache == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);

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
	caller_cxt = CurrentMemoryContext;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (!OidIsValid(get_extension_oid(WEBHOOK_EXTENSION_NAME, true)))
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

/*
 * The request of a claimed delivery: its body and every header, signed.
 * The Authorization header and secret-looking headers of the profile are
 * listed as redacted, so that the recorded request headers do not show them.
 */
static WebhookRequest *
request_from_claim(HeapTuple tuple, TupleDesc desc)
{
	WebhookRequest *req = webhook_request_create();
	MemoryContext old = MemoryContextSwitchTo(req->cxt);
	bool		isnull;
	char		timestamp[32];
	char	   *webhook_id;
	char	   *auth;
	char	   *signature;
	int			timeout_ms;

	req->delivery_id = DatumGetInt64(SPI_getbinval(tuple, desc, 1, &isnull));
	req->attempt = DatumGetInt32(SPI_getbinval(tuple, desc, 2, &isnull));
	req->profile_id = DatumGetInt64(SPI_getbinval(tuple, desc, 3, &isnull));
	req->url = copy_text(tuple, desc, 4, req->cxt);
	req->method = copy_text(tuple, desc, 5, req->cxt);
	req->body = copy_text(tuple, desc, 6, req->cxt);
	webhook_id = copy_text(tuple, desc, 7, req->cxt);
	auth = copy_text(tuple, desc, 8, req->cxt);
	timeout_ms = DatumGetInt32(SPI_getbinval(tuple, desc, 12, &isnull));
	req->timeout_ms = timeout_ms > 0 ? timeout_ms : webhook_request_timeout;

	snprintf(timestamp, sizeof(timestamp), "%lld",
			 (long long) (GetCurrentTimestamp() / USECS_PER_SEC +
						  (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY));
	signature = webhook_signature(copy_text(tuple, desc, 11, req->cxt), webhook_id,
								  timestamp, req->body);

	req->headers = list_make2(pstrdup("Content-Type: application/json"),
							  psprintf("User-Agent: %s", webhook_user_agent));
	if (strcmp(auth, "basic") == 0)
		req->headers = lappend(req->headers,
							   psprintf("Authorization: %s",
										webhook_basic_credentials(copy_text(tuple, desc, 9, req->cxt),
																  copy_text(tuple, desc, 10, req->cxt))));
	else if (strcmp(auth, "bearer") == 0)
		req->headers = lappend(req->headers,
							   psprintf("Authorization: Bearer %s", copy_text(tuple, desc, 10, req->cxt)));
	req->headers = list_concat(req->headers, text_array(tuple, desc, 13));
	req->headers = lappend(req->headers, psprintf("webhook-id: %s", webhook_id));
	req->headers = lappend(req->headers, psprintf("webhook-timestamp: %s", timestamp));
	if (signature)
		req->headers = lappend(req->headers, psprintf("webhook-signature: %s", signature));
	req->redacted = lappend(text_array(tuple, desc, 14), pstrdup("Authorization"));
	MemoryContextSwitchTo(old);
	return req;
}

/*
 * Expand new occurrences into deliveries, then claim up to limit due
 * deliveries, in one transaction.
 */
void
webhook_queue_claim(int limit, WebhookClaim *claim)
{
	Oid			expand_types[1] = {INT4OID};
	Oid			claim_types[3] = {INT4OID, INT4OID, INT4OID};
	Datum		args[3];
	bool		isnull;

	claim->requests = NIL;
	claim->more_occurrences = false;
	claim->next_due = 0;
	claim->extension_present = begin_step("webhook: claim");
	if (!claim->extension_present)
		return;

	args[0] = Int32GetDatum(EXPAND_STEP);
	if (SPI_execute_plan(keep_plan(&expand_plan, expand_sql, 1, expand_types),
						 args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not expand webhook occurrences");
	{
		int64		locked = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
														 SPI_tuptable->tupdesc, 1, &isnull));
		int64		claimed = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
														  SPI_tuptable->tupdesc, 2, &isnull));

		/* more is waiting when the step was cut short either way */
		claim->more_occurrences = locked >= 1000 || claimed < locked;
	}

	if (limit > 0)
	{
		args[0] = Int32GetDatum(limit);
		args[1] = Int32GetDatum(LEASE_SECONDS);
		args[2] = Int32GetDatum(webhook_max_per_profile);
		if (SPI_execute_plan(keep_plan(&claim_plan, claim_sql, 3, claim_types),
							 args, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
			elog(ERROR, "could not claim webhook deliveries");
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			WebhookRequest *req = request_from_claim(SPI_tuptable->vals[i],
													 SPI_tuptable->tupdesc);
			MemoryContext old = MemoryContextSwitchTo(caller_cxt);

			claim->requests = lappend(claim->requests, req);
			MemoryContextSwitchTo(old);
		}
	}

	if (SPI_execute_plan(keep_plan(&next_due_plan, next_due_sql, 0, NULL),
						 NULL, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the next webhook due time");
	{
		Datum		due = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
			claim->next_due = DatumGetTimestampTz(due);
	}
	end_step();
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

/*
 * Record the attempts of finished requests, all in one statement.  Returns
 * the earliest retry this scheduled, 0 for none.
 */
TimestampTz
webhook_queue_record(List *requests)
{
	enum
	{
		NCOLS = 10
	};
	Oid			types[NCOLS] = {INT8ARRAYOID, INT4ARRAYOID, TIMESTAMPTZARRAYOID,
		FLOAT8ARRAYOID, TEXTARRAYOID, INT4ARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
	TEXTARRAYOID, TEXTARRAYOID};
	Oid			elemtypes[NCOLS] = {INT8OID, INT4OID, TIMESTAMPTZOID, FLOAT8OID,
	TEXTOID, INT4OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};
	ArrayColumn cols[NCOLS];
	Datum		args[NCOLS];
	ListCell   *lc;

	TimestampTz next_retry = 0;

	if (requests == NIL)
		return 0;
	if (!begin_step("webhook: record"))
		return 0;

	/*
	 * A record lost in a crash leaves its delivery "sending"; the next
	 * worker sends it again under the same webhook-id.  So this commit need
	 * not wait for the disk.  (The claim, which creates the ids, does.)
	 */
	(void) set_config_option("synchronous_commit", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_LOCAL, true, 0, false);

	for (int i = 0; i < NCOLS; i++)
	{
		cols[i].state = NULL;
		cols[i].type = elemtypes[i];
	}
	foreach(lc, requests)
	{
		WebhookRequest *req = lfirst(lc);
		bool		response = req->outcome == OUTCOME_RESPONSE;

		add_value(&cols[0], Int64GetDatum(req->delivery_id), false);
		add_value(&cols[1], Int32GetDatum(req->attempt), false);
		add_value(&cols[2], TimestampTzGetDatum(req->started_at), false);
		add_value(&cols[3], Float8GetDatum(req->duration_ms), false);
		add_text(&cols[4], webhook_outcome_name(req->outcome));
		add_value(&cols[5], Int32GetDatum((int32) req->status), !response);
		add_text(&cols[6], response ? webhook_response_headers_json(req) : NULL);
		add_text(&cols[7], response ? req->response_body.data : NULL);
		add_text(&cols[8], req->error);
		add_text(&cols[9], webhook_request_headers_json(req));
	}
	for (int i = 0; i < NCOLS; i++)
		args[i] = makeArrayResult(cols[i].state, CurrentMemoryContext);

	if (SPI_execute_plan(keep_plan(&record_plan, record_sql, NCOLS, types),
						 args, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "could not record webhook attempts");
	{
		/* what the outcomes mean for the profiles: runs of failures, 410 */
		ArrayColumn outcome[3] = {{NULL, INT8OID}, {NULL, TEXTOID}, {NULL, INT4OID}};
		Oid			outcome_types[4] = {INT8ARRAYOID, TEXTARRAYOID, INT4ARRAYOID, INT4OID};
		Datum		outcome_args[4];
		SPITupleTable *recorded = SPI_tuptable;
		uint64		nrecorded = SPI_processed;

		for (uint64 i = 0; i < nrecorded; i++)
		{
			HeapTuple	row = recorded->vals[i];
			bool		isnull;
			Datum		at = SPI_getbinval(row, recorded->tupdesc, 1, &isnull);

			if (!isnull && (next_retry == 0 || DatumGetTimestampTz(at) < next_retry))
				next_retry = DatumGetTimestampTz(at);
			add_value(&outcome[0], SPI_getbinval(row, recorded->tupdesc, 2, &isnull), false);
			add_value(&outcome[1], SPI_getbinval(row, recorded->tupdesc, 3, &isnull), false);
			add_value(&outcome[2], SPI_getbinval(row, recorded->tupdesc, 4, &isnull), isnull);
		}
		if (nrecorded > 0)
		{
			for (int i = 0; i < 3; i++)
				outcome_args[i] = makeArrayResult(outcome[i].state, CurrentMemoryContext);
			outcome_args[3] = Int32GetDatum(webhook_disable_after_failures);
			if (SPI_execute_plan(keep_plan(&outcomes_plan, outcomes_sql, 4, outcome_types),
								 outcome_args, NULL, false, 0) != SPI_OK_SELECT)
				elog(ERROR, "could not note webhook outcomes");
		}
	}
	end_step();
	return next_retry;
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
	if (SPI_execute_plan(keep_plan(&purge_plan, purge_sql, 2, types),
						 args, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not purge webhook history");
	more = SPI_processed >= PURGE_STEP;
	end_step();
	return more;
}
