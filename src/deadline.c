/*
 * deadline.c
 *		Deadline events: the schedule that the capture triggers keep, and the
 *		worker's firing of what comes due.
 *
 * webhook.deadline holds the due times that writes set and that are still
 * to come: the event, the row's key, the due time, and fire_at, the due time
 * less the event's before.  The capture trigger appends one when a row is
 * inserted with a due time, or its due time (or key) changes, as the
 * queue's owner: for a due time that is a column, read here from the
 * statement's rows (webhook_schedule_due_columns), as cheap as the direct
 * path of capture.c; for one that is an expression, worked out as the
 * writer by a query (webhook._schedule_query) and written by a statement of
 * ours (webhook_schedule_rows).  A delete, a due time cleared, or moved,
 * writes nothing: the old entry is dropped when it comes due.  When a
 * deadline event is defined, the rows already there whose due time is to
 * come are scheduled as its author (webhook_deadline_defined).
 *
 * The worker takes what is due by the index on fire_at, and never scans the
 * table (webhook_fire_deadlines): for each event, it reads the rows as they
 * are now, with the author's rights, and queues those whose due time is
 * still the one written as changes of the event ("deadline"), for the
 * bindings whose conditions hold then (webhook._deadline_plan).  The
 * entries it took are deleted in the same transaction, so each row and due
 * time fires once; a due time set again is a new entry.
 */
#include "webhook.h"
#include "queue.h"
#include "rowjson.h"

#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/json.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

PG_FUNCTION_INFO_V1(webhook_deadline_defined);

#define SCHEDULE_RELATION "webhook_schedule"

/* Entries the worker fires in one step at most. */
#define FIRE_LIMIT 1000

/* Due entries of a locked table: looked at again after this. */
#define FIRE_RETRY_MS 100

/* Takes in one step at most, each passing over the events held so far. */
#define FIRE_ROUNDS 4

/* How long the worker waits for the lock of a table it reads rows of. */
#define FIRE_LOCK_TIMEOUT "100ms"

/* The columns of webhook.deadline. */
enum
{
	D_EVENT_ID, D_ROW_KEY, D_DUE, D_FIRE_AT, D_NATTS
};

/* A due time before year 1000 is due at once: less before, it could leave the range. */
#define EARLIEST_BEFORE "1000-01-01 00:00:00+00"

static TupleDesc schedule_desc = NULL;
static SPIPlanPtr schedule_plan = NULL;
static SPIPlanPtr take_plan = NULL;
static SPIPlanPtr next_plan = NULL;

/* The due times a query worked out, appended. */
static const char *schedule_sql =
"INSERT INTO webhook.deadline (event_id, row_key, due, fire_at)"
" SELECT s.event_id, s.row_key, s.due,"
"        CASE WHEN s.due < '" EARLIEST_BEFORE "'::timestamptz THEN s.due ELSE s.due - e.due_before END"
"   FROM " SCHEDULE_RELATION " AS s JOIN webhook.event e ON e.event_id = s.event_id"
"  WHERE s.due IS NOT NULL";

/*
 * What is due, event by event: the soonest entries in the index's order,
 * with any that repeat the last (a row's due time written twice is one),
 * each row and due time once, and the entries to delete; but those of the
 * events held ($1, their tables locked).
 */
static const char *take_sql =
"WITH due AS ("
"  SELECT ctid AS entry, event_id, row_key, due FROM webhook.deadline"
"   WHERE fire_at <= pg_catalog.now() AND event_id <> ALL ($1)"
"   ORDER BY fire_at, event_id, row_key FETCH FIRST " CppAsString2(FIRE_LIMIT) " ROWS WITH TIES"
"), rows AS (SELECT DISTINCT event_id, row_key, due FROM due)"
"SELECT r.event_id, pg_catalog.array_agg(r.row_key), pg_catalog.array_agg(r.due),"
"       (SELECT pg_catalog.array_agg(d.entry) FROM due d WHERE d.event_id = r.event_id)"
"  FROM rows r GROUP BY r.event_id";

static const char *next_sql = "SELECT pg_catalog.min(fire_at) FROM webhook.deadline";

static TupleDesc
schedule_tupdesc(void)
{
	static const char *const names[] = {"event_id", "row_key", "due"};
	static const Oid types[] = {INT8OID, TEXTOID, TIMESTAMPTZOID};

	return webhook_kept_tupdesc(&schedule_desc, D_DUE + 1, names, types);
}

/*
 * Append the due times a query worked out: rows of (event_id, row_key,
 * due), as the queue's owner, by a statement of ours that runs no one's
 * code.  SPI is connected, the search_path pinned.
 */
void
webhook_schedule_rows(Tuplestorestate *rows)
{
	webhook_register_rows(rows, SCHEDULE_RELATION, schedule_tupdesc());
	if (schedule_plan == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare(schedule_sql, 0, NULL);

		if (plan == NULL)
			elog(ERROR, "could not prepare the webhook schedule statement: %s",
				 SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		schedule_plan = plan;
	}
	if (webhook_write_rows(schedule_plan, NULL, NULL, SCHEDULE_RELATION) != SPI_OK_INSERT)
		elog(ERROR, "could not write the webhook deadlines");
}

/* A deadline event whose due time is a column: read from the rows themselves. */
typedef struct DueColumn
{
	int64		event_id;
	AttrNumber	due;
	Interval	before;
	int			nkeys;
	AttrNumber *keys;
	FmgrInfo   *key_out;
} DueColumn;

struct DueColumns
{
	int			n;
	DueColumn  *events;
};

/*
 * The table's deadline events whose due time is a column (NULL: none), read
 * from the catalogue when the capture trigger loads its plan (SPI is
 * connected, as the queue's owner); kept until the plan is.
 */
DueColumns *
webhook_due_columns(Oid relid)
{
	Oid			argtypes[1] = {OIDOID};
	Datum		args[1] = {ObjectIdGetDatum(relid)};
	DueColumns *due;

	if (SPI_execute_with_args("SELECT event_id, due_column, due_before, key_columns FROM webhook.event"
							  " WHERE table_oid = $1 AND operation = 'deadline' ORDER BY event_id",
							  1, argtypes, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the deadline events of table %u", relid);
	if (SPI_processed == 0)
		return NULL;
	/* what is kept lives as long as the plan; the rest goes with SPI's */
	due = MemoryContextAllocZero(TopMemoryContext, sizeof(DueColumns));
	due->events = MemoryContextAllocZero(TopMemoryContext, sizeof(DueColumn) * SPI_processed);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		DueColumn  *e = &due->events[due->n];
		bool		isnull;
		char	   *column = SPI_getvalue(tuple, desc, 2);
		Datum	   *keys;
		int			nkeys;

		bool		usable = true;

		if (column == NULL)
			continue;			/* an expression: its query */
		e->event_id = DatumGetInt64(SPI_getbinval(tuple, desc, 1, &isnull));
		e->due = get_attnum(relid, column);
		if (e->due <= 0 || get_atttype(relid, e->due) != TIMESTAMPTZOID)
		{
			/* nothing to write: what is due is never found (see webhook._deadline_plan) */
			ereport(WARNING,
					(errmsg("the due column \"%s\" of webhook deadline event %lld is gone, or no longer of type timestamptz",
							column, (long long) e->event_id),
					 errdetail("Changes of table \"%s\" schedule nothing for it.", get_rel_name(relid)),
					 errhint("Define the event again.")));
			continue;
		}
		e->before = *DatumGetIntervalP(SPI_getbinval(tuple, desc, 3, &isnull));
		deconstruct_array(DatumGetArrayTypeP(SPI_getbinval(tuple, desc, 4, &isnull)),
						  TEXTOID, -1, false, TYPALIGN_INT, &keys, NULL, &nkeys);
		e->nkeys = nkeys;
		e->keys = MemoryContextAlloc(TopMemoryContext, sizeof(AttrNumber) * Max(nkeys, 1));
		e->key_out = MemoryContextAllocZero(TopMemoryContext, sizeof(FmgrInfo) * Max(nkeys, 1));
		for (int k = 0; k < nkeys && usable; k++)
		{
			Oid			out;
			bool		varlena;

			e->keys[k] = get_attnum(relid, TextDatumGetCString(keys[k]));
			usable = e->keys[k] > 0;
			if (usable)
			{
				getTypeOutputInfo(get_atttype(relid, e->keys[k]), &out, &varlena);
				fmgr_info_cxt(out, &e->key_out[k], TopMemoryContext);
			}
		}
		if (!usable || nkeys == 0)
		{
			ereport(WARNING,
					(errmsg("a key column of webhook deadline event %lld is gone", (long long) e->event_id),
					 errdetail("Changes of table \"%s\" schedule nothing for it.", get_rel_name(relid)),
					 errhint("Define the event again.")));
			pfree(e->keys);
			pfree(e->key_out);
			continue;
		}
		due->n++;
	}
	if (due->n == 0)
	{
		webhook_free_due_columns(due);
		return NULL;			/* every due time is an expression */
	}
	return due;
}

void
webhook_free_due_columns(DueColumns *due)
{
	if (due == NULL)
		return;
	for (int i = 0; i < due->n; i++)
	{
		pfree(due->events[i].keys);
		pfree(due->events[i].key_out);
	}
	pfree(due->events);
	pfree(due);
}

/* Two values of a column are the same (as stored: a change that is not one costs an entry). */
static bool
same_value(TupleTableSlot *a, TupleTableSlot *b, AttrNumber att)
{
	Form_pg_attribute attr = TupleDescAttr(a->tts_tupleDescriptor, att - 1);
	bool		a_null;
	bool		b_null;
	Datum		a_value = slot_getattr(a, att, &a_null);
	Datum		b_value = slot_getattr(b, att, &b_null);

	if (a_null || b_null)
		return a_null == b_null;
	return datumIsEqual(a_value, b_value, attr->attbyval, attr->attlen);
}

/* The row's key as JSON text: an array of the key values as text. */
static Datum
row_key(DueColumn *e, TupleTableSlot *slot)
{
	StringInfoData key;

	initStringInfo(&key);
	appendStringInfoChar(&key, '[');
	for (int k = 0; k < e->nkeys; k++)
	{
		bool		isnull;
		Datum		value = slot_getattr(slot, e->keys[k], &isnull);

		if (k > 0)
			appendStringInfoChar(&key, ',');
		if (isnull)
			appendStringInfoString(&key, "null");
		else
			escape_json(&key, OutputFunctionCall(&e->key_out[k], value));
	}
	appendStringInfoChar(&key, ']');
	return PointerGetDatum(cstring_to_text_with_len(key.data, key.len));
}

/*
 * The capture trigger's own: append the due times the statement set for the
 * table's deadline events whose due time is a column, read from the
 * statement's rows (an insert with a due time, an update that changed it or
 * the key), with the executor's low-level routines, as the direct path of
 * capture.c queues rows.  Returns true when it wrote any.
 */
bool
webhook_schedule_due_columns(DueColumns *due, TriggerData *trigdata)
{
	TupleDesc	desc = RelationGetDescr(trigdata->tg_relation);
	TupleTableSlot *new_slot;
	TupleTableSlot *old_slot;
	Relation	deadlines = NULL;
	EState	   *estate = NULL;
	ResultRelInfo *rri = NULL;
	TupleTableSlot *out = NULL;
	TimestampTz earliest = 0;
	int			render_level;
	bool		written = false;
	MemoryContext row_cxt;
	MemoryContext old;

	if (due == NULL || due->n == 0 || trigdata->tg_newtable == NULL)
		return false;
	/* a row's key is made, written and forgotten: a statement of millions stays small */
	row_cxt = AllocSetContextCreate(CurrentMemoryContext, "webhook deadline row", ALLOCSET_SMALL_SIZES);
	new_slot = webhook_transition_reader(trigdata->tg_newtable, desc);
	old_slot = webhook_transition_reader(trigdata->tg_oldtable, desc);
	render_level = webhook_render_begin();
	while (tuplestore_gettupleslot(trigdata->tg_newtable, true, false, new_slot))
	{
		/* the old and new transition tables hold the rows in the same order */
		if (old_slot && !tuplestore_gettupleslot(trigdata->tg_oldtable, true, false, old_slot))
			elog(ERROR, "the old and new rows of the statement do not pair up");
		for (int i = 0; i < due->n; i++)
		{
			DueColumn  *e = &due->events[i];
			bool		isnull;
			Datum		when = slot_getattr(new_slot, e->due, &isnull);
			bool		key_same = true;

			if (isnull)
				continue;
			if (old_slot)
			{
				for (int k = 0; k < e->nkeys && key_same; k++)
					key_same = same_value(new_slot, old_slot, e->keys[k]);
				if (key_same && same_value(new_slot, old_slot, e->due))
					continue;
			}
			if (deadlines == NULL)
			{
				Oid			relid = get_relname_relid("deadline", get_namespace_oid(WEBHOOK_SCHEMA_NAME, false));

				deadlines = table_open(relid, RowExclusiveLock);
				if (RelationGetDescr(deadlines)->natts != D_NATTS)
					elog(ERROR, "webhook.deadline does not have the expected columns");
				estate = CreateExecutorState();
				rri = makeNode(ResultRelInfo);
				InitResultRelInfo(rri, deadlines, 1, NULL, 0);
				ExecOpenIndices(rri, false);
				out = MakeSingleTupleTableSlot(RelationGetDescr(deadlines), &TTSOpsVirtual);
				earliest = DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in,
																   CStringGetDatum(EARLIEST_BEFORE),
																   ObjectIdGetDatum(InvalidOid),
																   Int32GetDatum(-1)));
			}
			ExecClearTuple(out);
			MemoryContextReset(row_cxt);
			old = MemoryContextSwitchTo(row_cxt);
			memset(out->tts_isnull, false, D_NATTS * sizeof(bool));
			out->tts_values[D_EVENT_ID] = Int64GetDatum(e->event_id);
			out->tts_values[D_ROW_KEY] = row_key(e, new_slot);
			out->tts_values[D_DUE] = when;
			out->tts_values[D_FIRE_AT] = DatumGetTimestampTz(when) < earliest ? when :
				DirectFunctionCall2(timestamptz_mi_interval, when, IntervalPGetDatum(&e->before));
			ExecStoreVirtualTuple(out);
			table_tuple_insert(deadlines, out, GetCurrentCommandId(true), 0, NULL);
			ExecInsertIndexTuples(rri, out, estate, false, false, NULL, NIL);
			MemoryContextSwitchTo(old);
			ResetPerTupleExprContext(estate);
			written = true;
		}
	}
	webhook_render_end(render_level);
	MemoryContextDelete(row_cxt);
	ExecDropSingleTupleTableSlot(new_slot);
	if (old_slot)
		ExecDropSingleTupleTableSlot(old_slot);
	if (deadlines != NULL)
	{
		ExecDropSingleTupleTableSlot(out);
		ExecCloseIndices(rri);
		FreeExecutorState(estate);
		table_close(deadlines, NoLock);
	}
	return written;
}

/* Run a query of ours (no parameters) as the queue's owner: its first column. */
static char *
owner_query_text(const char *sql, int nargs, Oid *argtypes, Datum *args)
{
	Oid			save_userid;
	int			save_sec_context;
	char	   *result = NULL;
	int			rc;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(webhook_queue_owner(), save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	rc = SPI_execute_with_args(sql, nargs, argtypes, args, NULL, false, 1);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	if (rc < 0)
		elog(ERROR, "could not run \"%s\": %s", sql, SPI_result_code_string(rc));
	if (SPI_processed > 0)
		result = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	return result;
}

/*
 * webhook._deadline_defined(), AFTER INSERT on webhook.event for a deadline
 * event: the table's triggers keep the event's schedule from now on, and the
 * rows already there whose due time is to come are scheduled now.  Their due
 * times are worked out as the inserting role, the event's author (the guard
 * made it so), with the capture key that the author's due-time function
 * asks for.
 */
Datum
webhook_deadline_defined(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	HeapTuple	tuple;
	TupleDesc	desc;
	bool		isnull;
	Oid			relid;
	int64		event_id;
	Oid			argtypes[2] = {REGCLASSOID, INT8OID};
	Datum		args[2];
	char	   *query;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		!TRIGGER_FIRED_BY_INSERT(trigdata->tg_event) || !TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("webhook._deadline_defined() can only be called as an AFTER INSERT trigger")));
	/* only the catalogue's own trigger: on any other table its row would be forged */
	if (RelationGetRelid(trigdata->tg_relation) !=
		get_relname_relid("event", get_namespace_oid(WEBHOOK_SCHEMA_NAME, false)))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("webhook._deadline_defined() is a trigger of webhook.event only")));
	tuple = trigdata->tg_trigtuple;
	desc = RelationGetDescr(trigdata->tg_relation);
	event_id = DatumGetInt64(heap_getattr(tuple, SPI_fnumber(desc, "event_id"), desc, &isnull));
	relid = DatumGetObjectId(heap_getattr(tuple, SPI_fnumber(desc, "table_oid"), desc, &isnull));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	args[0] = ObjectIdGetDatum(relid);
	args[1] = Int64GetDatum(event_id);
	(void) owner_query_text("SELECT webhook._sync_triggers($1)::text", 1, argtypes, args);
	query = owner_query_text("SELECT webhook._schedule_query($1, 'existing', $2)", 2, argtypes, args);
	if (query != NULL)
	{
		Tuplestorestate *volatile rows = NULL;
		SPIPlanPtr	plan;
		Oid			keytype[1] = {INT8OID};
		int			render_level = webhook_render_begin();
		int			guc_level = webhook_pin_search_path();
		Oid			outer_relid = webhook_capture_relid;

		plan = SPI_prepare(query, 1, keytype);
		if (plan == NULL)
			elog(ERROR, "could not prepare the schedule of a new deadline event: %s",
				 SPI_result_code_string(SPI_result));
		webhook_capture_depth++;
		webhook_capture_relid = relid;
		PG_TRY();
		{
			rows = webhook_select_rows(plan, true, 0, NULL, NULL);
		}
		PG_FINALLY();
		{
			webhook_capture_depth--;
			webhook_capture_relid = outer_relid;
		}
		PG_END_TRY();
		if (tuplestore_tuple_count(rows) > 0)
			webhook_schedule_rows(rows);
		tuplestore_end(rows);
		AtEOXact_GUC(true, guc_level);
		webhook_render_end(render_level);
	}
	SPI_finish();
	webhook_wake_on_commit();
	return PointerGetDatum(NULL);
}

/* The due entries of one event, and how to fire them. */
typedef struct DueEntries
{
	int64		event_id;
	Datum		row_keys;		/* text[] */
	Datum		dues;			/* timestamptz[] */
	Datum		entries;		/* tid[]: what to delete */
	char	   *query;			/* NULL: the event has no bindings, or a problem */
	char	   *fallback;
	char	   *problem;		/* why the query cannot be made */
	Oid			author;
	Oid			relid;
	uint64		queued;
} DueEntries;

/* A SELECT of matches over the entries ($1 the capture key, $2, $3), queued. */
static uint64
queue_matches(DueEntries *due, const char *query, const char *capture_error)
{
	Oid			argtypes[3] = {INT8OID, TEXTARRAYOID, TIMESTAMPTZARRAYOID};
	Datum		values[2] = {due->row_keys, due->dues};
	Tuplestorestate *matches;
	SPIPlanPtr	plan;
	uint64		queued;

	plan = SPI_prepare(query, 3, argtypes);
	if (plan == NULL)
		elog(ERROR, "could not prepare the deadline query of event %lld: %s",
			 (long long) due->event_id, SPI_result_code_string(SPI_result));
	matches = webhook_select_rows(plan, true, 2, argtypes + 1, values);
	SPI_freeplan(plan);
	queued = tuplestore_tuple_count(matches);
	if (queued > 0)
		webhook_enqueue_rows(matches, due->relid, "deadline", capture_error);
	tuplestore_end(matches);
	return queued;
}

/*
 * Lock the event's table, as the worker locks what it reads (it does not
 * wait, see webhook_lock_user_table), and check that its rows can be read
 * as another role: the types, casts, checks and policies are the system's
 * or superusers'.
 */
static void
lock_table(void *arg)
{
	DueEntries *due = arg;
	const char *untrusted;

	webhook_lock_user_table(due->relid);
	untrusted = webhook_relation_untrusted(due->relid);
	if (untrusted != NULL)
		due->problem = psprintf("the rows of table \"%s\" cannot be read as another role: %s",
								get_rel_name(due->relid), untrusted);
	else if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(due->author)))
		due->problem = "the author of the event no longer exists";
}

/*
 * Read the due rows as the author, and queue those still due for the
 * bindings whose conditions hold.  No one's code but the author's runs, as
 * it would in the author's own SELECT.
 */
static void
fire_as_author(void *arg)
{
	DueEntries *due = arg;
	Oid			save_userid;
	int			save_sec_context;
	int			render_level;
	int			guc_level;

	render_level = webhook_render_begin();
	guc_level = webhook_pin_search_path();
	(void) set_config_option("lock_timeout", FIRE_LOCK_TIMEOUT, PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(due->author, save_sec_context |
						   SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
	webhook_capture_depth++;
	webhook_capture_relid = due->relid;
	due->queued = queue_matches(due, due->query, NULL);
	webhook_capture_depth--;
	webhook_capture_relid = InvalidOid;
	SetUserIdAndSecContext(save_userid, save_sec_context);
	AtEOXact_GUC(true, guc_level);
	webhook_render_end(render_level);
}

/* The rows as failed deliveries that say why: the keys only, no one's code. */
static void
fire_failed(void *arg)
{
	DueEntries *due = arg;
	int			guc_level = webhook_pin_search_path();

	due->queued = queue_matches(due, due->fallback,
								psprintf("the deadline could not be checked when it came due: %s",
										 due->problem));
	AtEOXact_GUC(true, guc_level);
}

static void
read_plan(DueEntries *due)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		args[1] = {Int64GetDatum(due->event_id)};
	HeapTuple	tuple;
	TupleDesc	desc;
	bool		isnull;

	if (SPI_execute_with_args("SELECT query, fallback, author, tbl, problem FROM webhook._deadline_plan($1)",
							  1, argtypes, args, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read the plan of deadline event %lld", (long long) due->event_id);
	tuple = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	due->query = SPI_getvalue(tuple, desc, 1);
	due->fallback = SPI_getvalue(tuple, desc, 2);
	due->author = DatumGetObjectId(SPI_getbinval(tuple, desc, 3, &isnull));
	due->relid = DatumGetObjectId(SPI_getbinval(tuple, desc, 4, &isnull));
	due->problem = SPI_getvalue(tuple, desc, 5);
}

/* An error of the worker's own (it stops), not of what it read. */
static void
rethrow_if_fatal(ErrorData *error)
{
	if (error->elevel >= FATAL || ProcDiePending)
		ReThrowError(error);
}

/*
 * Fire one event's due entries, and take them off the schedule.  False: its
 * table is locked by someone else; they wait for the next look, and the
 * other events' are fired meanwhile.
 */
static bool
fire_event(DueEntries *due)
{
	Oid			argtypes[1] = {TIDARRAYOID};
	Datum		args[1] = {due->entries};
	ErrorData  *error;

	read_plan(due);
	if (due->query != NULL)
	{
		error = webhook_in_subtransaction(lock_table, due);
		if (error != NULL)
		{
			rethrow_if_fatal(error);
			return false;
		}
	}
	if (due->query != NULL && due->problem == NULL)
	{
		error = webhook_in_subtransaction(fire_as_author, due);
		webhook_capture_depth = 0;
		webhook_capture_relid = InvalidOid;
		if (error != NULL)
		{
			rethrow_if_fatal(error);
			due->problem = pstrdup(error->message);
		}
	}
	if (due->problem != NULL && due->fallback != NULL)
	{
		ereport(WARNING,
				(errcode(ERRCODE_TRIGGERED_ACTION_EXCEPTION),
				 errmsg("webhook deadline event %lld could not be checked when due: %s",
						(long long) due->event_id, due->problem),
				 errdetail("Its due rows are recorded as failed deliveries.")));
		error = webhook_in_subtransaction(fire_failed, due);
		if (error != NULL)
		{
			rethrow_if_fatal(error);
			ereport(WARNING,
					(errmsg("the due rows of webhook deadline event %lld are dropped: %s",
							(long long) due->event_id, error->message)));
		}
	}
	if (SPI_execute_with_args("DELETE FROM webhook.deadline WHERE ctid = ANY ($1)",
							  1, argtypes, args, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not take fired deadlines off the schedule");
	return true;
}

/*
 * In a step of the worker (SPI connected): queue the deadline events that
 * are due.  Returns true when it queued changes; *next_at is when to look
 * again (0: nothing is scheduled).  Entries of an event whose table is
 * locked are passed over for the others', and looked at again in a moment.
 * A schema older than 0.10 has no deadlines.
 */
bool
webhook_fire_deadlines(TimestampTz *next_at)
{
	Oid			nsp = get_namespace_oid(WEBHOOK_SCHEMA_NAME, false);
	Oid			argtypes[1] = {INT8ARRAYOID};
	bool		queued = false;
	List	   *held = NIL;
	bool		more = false;
	bool		isnull;
	Datum		next;
	TimestampTz now = GetCurrentTransactionStartTimestamp();

	*next_at = 0;
	if (!OidIsValid(get_relname_relid("deadline", nsp)))
		return false;

	for (int round = 0; round < FIRE_ROUNDS; round++)
	{
		ArrayBuildState *skip = NULL;
		Datum		args[1];
		uint64		ngroups;
		uint64		taken = 0;
		DueEntries *groups;
		int			nheld = list_length(held);
		ListCell   *lc;

		foreach(lc, held)
			skip = accumArrayResult(skip, Int64GetDatum(*(int64 *) lfirst(lc)), false, INT8OID,
									CurrentMemoryContext);
		args[0] = skip ? makeArrayResult(skip, CurrentMemoryContext) :
			PointerGetDatum(construct_empty_array(INT8OID));
		if (SPI_execute_plan(webhook_keep_plan(&take_plan, take_sql, 1, argtypes, false),
							 args, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read the due webhook deadlines");
		ngroups = SPI_processed;
		groups = palloc0(sizeof(DueEntries) * Max(ngroups, 1));
		for (uint64 i = 0; i < ngroups; i++)
		{
			HeapTuple	tuple = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			ArrayType  *entries;

			groups[i].event_id = DatumGetInt64(SPI_getbinval(tuple, desc, 1, &isnull));
			groups[i].row_keys = SPI_datumTransfer(SPI_getbinval(tuple, desc, 2, &isnull), false, -1);
			groups[i].dues = SPI_datumTransfer(SPI_getbinval(tuple, desc, 3, &isnull), false, -1);
			groups[i].entries = SPI_datumTransfer(SPI_getbinval(tuple, desc, 4, &isnull), false, -1);
			entries = DatumGetArrayTypeP(groups[i].entries);
			taken += ArrayGetNItems(ARR_NDIM(entries), ARR_DIMS(entries));
		}
		for (uint64 i = 0; i < ngroups; i++)
		{
			if (!fire_event(&groups[i]))
			{
				int64	   *id = palloc(sizeof(int64));

				*id = groups[i].event_id;
				held = lappend(held, id);
			}
			else if (groups[i].queued > 0)
				queued = true;
		}
		more = taken >= FIRE_LIMIT;
		/* a full take: the next step takes more; held ones: the others now */
		if (more || list_length(held) == nheld)
			break;
	}

	if (SPI_execute_plan(webhook_keep_plan(&next_plan, next_sql, 0, NULL, false),
						 NULL, NULL, true, 0) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read the next webhook deadline");
	next = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!isnull)
	{
		*next_at = DatumGetTimestampTz(next);
		/* due and left: more than a step takes (now), or held (in a moment) */
		if (*next_at <= now)
			*next_at = more ? now : TimestampTzPlusMilliseconds(GetCurrentTimestamp(), FIRE_RETRY_MS);
	}
	return queued;
}
