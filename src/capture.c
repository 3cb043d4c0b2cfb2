/*
 * capture.c
 *		The capture trigger: queues every changed row that matches a binding,
 *		in the transaction that changed it.
 *
 * webhook._sync_triggers() attaches one AFTER ... FOR EACH STATEMENT
 * trigger per table and operation that has bindings, with the rows of the
 * statement as transition tables (webhook_new, webhook_old).  A queue row
 * holds the changed rows of one statement that matched the same bindings,
 * up to CHUNK_ROWS, as JSON arrays.  What a trigger captures comes from
 * webhook._capture_plan(table, operation), never from the trigger itself
 * (see load_capture):
 *
 *	bindings	every binding matches every row: the direct path builds the
 *				queue rows here, no query
 *	query		a SELECT of the matching rows with the bindings each matched,
 *				run as the writer; its rows are queued as the queue's owner,
 *				by a statement of ours that runs no one's code
 *	fallback	every binding, no condition: run with the error when the
 *				query fails (it runs conditions); see webhook_capture()
 *
 * When no binding calls users' SQL, the query's conditions are compiled
 * here instead (conditions.c) and the rows that match are queued by the
 * direct path, without the query.
 *
 * A change of bindings replaces the trigger, so a new trigger OID means a
 * new plan; plans are cached by trigger OID.
 */
#include "webhook.h"
#include "conditions.h"
#include "rowjson.h"

#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "utils/array.h"
#include "commands/sequence.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "executor/tstoreReceiver.h"
#include "miscadmin.h"
#include "nodes/params.h"
#include "parser/parse_func.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "pgtime.h"
#include "utils/queryenvironment.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/tuplestore.h"
#include "utils/uuid.h"

PG_FUNCTION_INFO_V1(webhook_capture);
PG_FUNCTION_INFO_V1(webhook_occurrence_guard);

#define MATCHES_RELATION "webhook_matches"

/* Changed rows of one statement that one queue row holds at most. */
#define CHUNK_ROWS 1000

typedef struct CaptureEntry
{
	Oid			tgoid;			/* hash key */
	Oid			relid;
	bool		loaded;			/* what follows is filled in */
	char	   *operation;		/* insert, update or delete */
	char	   *query;			/* NULL: nothing to capture */
	char	   *fallback;		/* NULL unless the query may fail */
	bool		keyed;			/* the queries take the capture key as $1 */
	SPIPlanPtr	plan;
	SPIPlanPtr	fallback_plan;
	int			nschedules;		/* the table's deadline events (0: none) */
	char	  **schedules;		/* per event, what a statement changes of
								 * its schedule */
	char	  **schedule_fallbacks; /* per event, what to queue when that
									 * fails (NULL: the event has no binding) */
	SPIPlanPtr *schedule_plans;
	SPIPlanPtr *schedule_fallback_plans;
	bool		schedule_queries;	/* one of the schedules is a query */
	DueColumns *due_columns;	/* the events whose due time is a column */
	Datum		bindings;		/* direct path: the bindings, an int8[] */
	RowWriter  *writer;			/* direct path: how its rows become JSON */
	BindingConditions *conditions;	/* the query's conditions, evaluated here */
	MemoryContext conditions_cxt;
	int			in_use;			/* executions on the stack */
	bool		stale;			/* the table changed: prepare again */
} CaptureEntry;

int			webhook_capture_depth = 0;
Oid			webhook_capture_relid = InvalidOid;	/* the table being captured */

/*
 * The capture queries pass this session's capture key to the functions that
 * hold users' SQL conditions (as $1), which answer only when given it: a
 * condition of one role cannot call another's with rows of its own making,
 * for it cannot name the key (see webhook._capturing(regclass, int8)).
 */
static int64 session_capture_key = 0;

int64
webhook_capture_key(void)
{
	while (session_capture_key == 0)
	{
		if (!pg_strong_random(&session_capture_key, sizeof(session_capture_key)))
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not generate random values")));
	}
	return session_capture_key;
}

/*
 * The capture trigger's own INSERT into the queue is running (or its
 * writing of the deadlines' schedule, see deadline.c).
 */
bool		webhook_enqueueing = false;

/* A direct capture is building in the kept buffers (see start_rows). */
static bool kept_buffers_in_use = false;

static HTAB *capture_cache = NULL;
static Oid	queue_relid_known = InvalidOid;	/* see queue_relid() */
static Oid	queue_seq_relid_known = InvalidOid;
static int	stale_entries = 0;
static SPIPlanPtr enqueue_plan = NULL;
static bool enqueue_plan_has_origin = false;
static TupleDesc matches_desc = NULL;

/*
 * What the transaction asks at commit: wake this database's worker, start
 * workers (for this database after CREATE EXTENSION, for a new database
 * after CREATE DATABASE; not before, the launcher would not see them).
 */
static uint32 work_at_commit = 0;	/* WORK_*: wake the worker for it */
static Oid	start_at_commit[4];
static int	nstart_at_commit = 0;

static void
capture_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			for (int i = 0; i < nstart_at_commit; i++)
				webhook_request_worker(start_at_commit[i]);
			if (work_at_commit != 0)
				webhook_wake_worker(MyDatabaseId, work_at_commit);
			work_at_commit = 0;
			nstart_at_commit = 0;
			/* a savepoint rolled back may have left it set */
			kept_buffers_in_use = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			if (capture_cache)
			{
				HASH_SEQ_STATUS seq;
				CaptureEntry *entry;

				hash_seq_init(&seq, capture_cache);
				while ((entry = hash_seq_search(&seq)) != NULL)
					entry->in_use = 0;
			}
			webhook_capture_depth = 0;
			webhook_capture_relid = InvalidOid;
			webhook_enqueueing = false;
			kept_buffers_in_use = false;
			work_at_commit = 0;
			nstart_at_commit = 0;
			break;
		case XACT_EVENT_PREPARE:
			/* COMMIT PREPARED wakes the worker (see init.c) */
			work_at_commit = 0;
			nstart_at_commit = 0;
			break;
		default:
			break;
	}
}

static void
capture_relcache_callback(Datum arg, Oid relid)
{
	HASH_SEQ_STATUS seq;
	CaptureEntry *entry;

	if (relid == InvalidOid || relid == queue_relid_known || relid == queue_seq_relid_known)
		queue_relid_known = InvalidOid;
	if (capture_cache == NULL)
		return;
	/* only mark here: a plan may be executing right now */
	hash_seq_init(&seq, capture_cache);
	while ((entry = hash_seq_search(&seq)) != NULL)
	{
		if (!entry->stale && (relid == InvalidOid || entry->relid == relid))
		{
			entry->stale = true;
			stale_entries++;
		}
	}
}

/*
 * Conditions compiled here hold the functions and domains they call, folded
 * and inlined as a plan would: a change of one is a new plan, as it would be
 * for the query.
 */
static void
capture_syscache_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	HASH_SEQ_STATUS seq;
	CaptureEntry *entry;

	if (capture_cache == NULL)
		return;
	hash_seq_init(&seq, capture_cache);
	while ((entry = hash_seq_search(&seq)) != NULL)
	{
		if (!entry->stale && entry->conditions != NULL &&
			webhook_conditions_depend_on(entry->conditions, cacheid, hashvalue))
		{
			entry->stale = true;
			stale_entries++;
		}
	}
}

void
webhook_capture_init(void)
{
	RegisterXactCallback(capture_xact_callback, NULL);
	CacheRegisterRelcacheCallback(capture_relcache_callback, (Datum) 0);
	CacheRegisterSyscacheCallback(PROCOID, capture_syscache_callback, (Datum) 0);
	CacheRegisterSyscacheCallback(TYPEOID, capture_syscache_callback, (Datum) 0);
}

void
webhook_wake_on_commit(void)
{
	work_at_commit |= WORK_OTHER;
}

void
webhook_start_on_commit(Oid dboid)
{
	for (int i = 0; i < nstart_at_commit; i++)
		if (start_at_commit[i] == dboid)
			return;
	if (nstart_at_commit < (int) lengthof(start_at_commit))
		start_at_commit[nstart_at_commit++] = dboid;
}

/* Free the plans of stale entries that are not executing. */
static void
sweep_stale_entries(void)
{
	HASH_SEQ_STATUS seq;
	CaptureEntry *entry;

	hash_seq_init(&seq, capture_cache);
	while ((entry = hash_seq_search(&seq)) != NULL)
	{
		if (entry->stale && entry->in_use == 0)
		{
			if (entry->plan)
				SPI_freeplan(entry->plan);
			if (entry->fallback_plan)
				SPI_freeplan(entry->fallback_plan);
			for (int i = 0; i < entry->nschedules; i++)
			{
				if (entry->schedule_plans[i])
					SPI_freeplan(entry->schedule_plans[i]);
				if (entry->schedule_fallback_plans[i])
					SPI_freeplan(entry->schedule_fallback_plans[i]);
				if (entry->schedules[i])
					pfree(entry->schedules[i]);
				if (entry->schedule_fallbacks[i])
					pfree(entry->schedule_fallbacks[i]);
			}
			webhook_free_due_columns(entry->due_columns);
			if (entry->nschedules > 0)
			{
				pfree(entry->schedules);
				pfree(entry->schedule_fallbacks);
				pfree(entry->schedule_plans);
				pfree(entry->schedule_fallback_plans);
			}
			if (entry->bindings)
				pfree(DatumGetPointer(entry->bindings));
			if (entry->query)
				pfree(entry->query);
			if (entry->fallback)
				pfree(entry->fallback);
			if (entry->operation)
				pfree(entry->operation);
			if (entry->writer)
				webhook_retire_row_writer(entry->writer);
			if (entry->conditions_cxt)
				MemoryContextDelete(entry->conditions_cxt);
			hash_search(capture_cache, &entry->tgoid, HASH_REMOVE, NULL);
			stale_entries--;
		}
	}
}

/*
 * A capture query is a SELECT of the matching rows, run as the writer.  The
 * triggers of version 0.1, until ALTER EXTENSION webhook UPDATE replaces
 * them, may carry a whole INSERT into the queue instead, run as the queue's
 * owner (a fallback INSERT takes the error as $1).
 */
static bool
is_queue_insert(const char *query)
{
	return strncmp(query, "INSERT", 6) == 0;
}

/*
 * Names in the statements of ours resolve in pg_catalog (then pg_temp, for
 * relations and types only), whatever the writer's search_path: a type,
 * operator or function of the writer's own must never be what a statement
 * run as the queue's owner finds.  Returns the GUC level to restore.
 */
int
webhook_pin_search_path(void)
{
	int			level = NewGUCNestLevel();

	(void) set_config_option("search_path", "pg_catalog, pg_temp", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	return level;
}

static SPIPlanPtr
prepare_capture_query(CaptureEntry *entry, Trigger *trigger, const char *query, bool fallback)
{
	Oid			argtypes[1] = {entry->keyed ? INT8OID : TEXTOID};
	int			level = webhook_pin_search_path();
	SPIPlanPtr	plan = SPI_prepare(query, entry->keyed || (fallback && is_queue_insert(query)) ? 1 : 0,
								   argtypes);

	AtEOXact_GUC(true, level);
	if (plan == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not prepare the capture query of trigger \"%s\": %s",
						trigger->tgname, SPI_result_code_string(SPI_result)),
				 errhint("Run SELECT webhook.sync_triggers() to rebuild the triggers.")));
	SPI_keepplan(plan);
	return plan;
}

static CaptureEntry *
capture_entry(Trigger *trigger, Oid relid)
{
	CaptureEntry *entry;
	bool		found;

	if (capture_cache == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(CaptureEntry);
		capture_cache = hash_create("webhook capture plans", 64, &ctl,
									HASH_ELEM | HASH_BLOBS);
	}
	if (stale_entries > 0)
		sweep_stale_entries();

	entry = hash_search(capture_cache, &trigger->tgoid, HASH_ENTER, &found);
	if (!found)
	{
		entry->relid = relid;
		entry->loaded = false;
		entry->operation = NULL;
		entry->query = NULL;
		entry->fallback = NULL;
		entry->keyed = false;
		entry->plan = NULL;
		entry->fallback_plan = NULL;
		entry->nschedules = 0;
		entry->schedule_queries = false;
		entry->due_columns = NULL;
		entry->bindings = (Datum) 0;
		entry->writer = NULL;
		entry->conditions = NULL;
		entry->conditions_cxt = NULL;
		entry->in_use = 0;
		entry->stale = false;
	}
	return entry;
}

static TupleDesc
matches_tupdesc(void)
{
	static const char *const names[] = {"bindings", "new_row", "old_row"};
	static const Oid types[] = {INT8ARRAYOID, JSONOID, JSONOID};

	return webhook_kept_tupdesc(&matches_desc, 3, names, types);
}

/*
 * webhook.occurrence and its id sequence, looked up once per session and
 * forgotten when either changes (DROP EXTENSION); an error when the
 * extension is not there.
 */

static Oid
queue_relid(Oid *seq_relid)
{
	if (!OidIsValid(queue_relid_known))
	{
		Oid			nsp = get_namespace_oid(WEBHOOK_SCHEMA_NAME, false);
		Oid			relid = get_relname_relid("occurrence", nsp);
		Oid			seq = get_relname_relid("occurrence_occurrence_id_seq", nsp);

		if (!OidIsValid(relid) || !OidIsValid(seq))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_TABLE),
					 errmsg("webhook.occurrence does not exist"),
					 errhint("Is the webhook extension installed in this database?")));
		queue_relid_known = relid;
		queue_seq_relid_known = seq;
	}
	if (seq_relid)
		*seq_relid = queue_seq_relid_known;
	return queue_relid_known;
}

/* The role that owns webhook.occurrence: the queue is written as it. */
Oid
webhook_queue_owner(void)
{
	Oid			relid = queue_relid(NULL);
	HeapTuple	tup;
	Oid			owner;

	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	return owner;
}

static char *
keep_string(const char *s)
{
	return (s == NULL || s[0] == '\0') ? NULL : MemoryContextStrdup(TopMemoryContext, s);
}

/* The plan's schedule and schedule_fallback (text[], one per deadline event). */
static void
keep_schedules(CaptureEntry *entry, HeapTuple tuple, TupleDesc desc, int schedule)
{
	bool		isnull;
	Datum		queries = SPI_getbinval(tuple, desc, schedule, &isnull);
	Datum		fallbacks;
	Datum	   *query_texts;
	Datum	   *fallback_texts;
	bool	   *query_nulls;
	bool	   *fallback_nulls;
	int			n;
	int			nfallbacks;

	if (isnull)
		return;
	fallbacks = SPI_getbinval(tuple, desc, schedule + 1, &isnull);
	deconstruct_array(DatumGetArrayTypeP(queries), TEXTOID, -1, false, TYPALIGN_INT,
					  &query_texts, &query_nulls, &n);
	deconstruct_array(DatumGetArrayTypeP(fallbacks), TEXTOID, -1, false, TYPALIGN_INT,
					  &fallback_texts, &fallback_nulls, &nfallbacks);
	if (n != nfallbacks)
		elog(ERROR, "the capture plan of table %u has %d schedules and %d fallbacks",
			 entry->relid, n, nfallbacks);
	entry->schedules = MemoryContextAllocZero(TopMemoryContext, sizeof(char *) * n);
	entry->schedule_fallbacks = MemoryContextAllocZero(TopMemoryContext, sizeof(char *) * n);
	entry->schedule_plans = MemoryContextAllocZero(TopMemoryContext, sizeof(SPIPlanPtr) * n);
	entry->schedule_fallback_plans = MemoryContextAllocZero(TopMemoryContext, sizeof(SPIPlanPtr) * n);
	for (int i = 0; i < n; i++)
	{
		if (!query_nulls[i])
			entry->schedules[i] = keep_string(TextDatumGetCString(query_texts[i]));
		entry->schedule_queries |= entry->schedules[i] != NULL;
		if (!fallback_nulls[i])
			entry->schedule_fallbacks[i] = keep_string(TextDatumGetCString(fallback_texts[i]));
	}
	entry->nschedules = n;
}

static Datum
keep_bindings(const char *text)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
	Datum		result = OidInputFunctionCall(F_ARRAY_IN, (char *) text, INT8OID, -1);

	MemoryContextSwitchTo(old);
	return result;
}

/* The bindings' conditions, read to be compiled here (see conditions.c). */
typedef struct ConditionsLoad
{
	CaptureEntry *entry;
	Relation	rel;
	int			nbindings;		/* 0: the query runs them */
	int64	   *binding_ids;
	char	  **conditions;		/* NULL: the binding matches every row */
} ConditionsLoad;

/*
 * Read what each binding asks of a row, as the query's plan was read; none
 * if one of them calls users' SQL (it takes the capture key, which only the
 * query passes), or from a version of the extension without them.
 */
static void
read_conditions(ConditionsLoad *load, Datum *args)
{
	Oid			argtypes[2] = {REGCLASSOID, TEXTOID};
	Oid			fn = LookupFuncName(list_make2(makeString(WEBHOOK_SCHEMA_NAME),
											   makeString("_capture_conditions")),
									2, argtypes, true);
	int			rc;

	if (!OidIsValid(fn))
		return;
	rc = SPI_execute_with_args("SELECT binding_id, condition, user_sql"
							   "  FROM webhook._capture_conditions($1, $2)",
							   2, argtypes, args, NULL, true, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read the capture conditions of table %u", load->entry->relid);
	load->binding_ids = palloc(sizeof(int64) * Max(SPI_processed, 1));
	load->conditions = palloc(sizeof(char *) * Max(SPI_processed, 1));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;

		if (DatumGetBool(SPI_getbinval(tuple, desc, 3, &isnull)) || isnull)
			return;
		load->binding_ids[i] = DatumGetInt64(SPI_getbinval(tuple, desc, 1, &isnull));
		load->conditions[i] = SPI_getvalue(tuple, desc, 2);
	}
	load->nbindings = SPI_processed;
}

static void
compile_step(void *arg)
{
	ConditionsLoad *load = arg;
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "webhook capture conditions",
											  ALLOCSET_SMALL_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	BindingConditions *conds = webhook_conditions_compile(load->rel, load->nbindings,
														  load->binding_ids, load->conditions);

	MemoryContextSwitchTo(old);
	if (conds == NULL)
	{
		MemoryContextDelete(cxt);
		return;
	}
	MemoryContextSetParent(cxt, TopMemoryContext);
	load->entry->conditions = conds;
	load->entry->conditions_cxt = cxt;
}

/*
 * Compile the conditions as the writer, with names resolved as in the
 * capture query.  One that fails to (a column dropped since it was saved)
 * leaves them to the query, whose failure is kept with the change.
 */
static void
compile_conditions(ConditionsLoad *load)
{
	int			level = webhook_pin_search_path();
	ErrorData  *error = webhook_in_subtransaction(compile_step, load);

	AtEOXact_GUC(true, level);
	if (error != NULL)
		FreeErrorData(error);
}

/*
 * What a trigger captures: the query, its fallback, or the bindings that
 * every row matches (the direct path).  They come from the extension's own
 * catalogue, webhook._capture_plan(table, operation), as the queue's owner:
 * never from the trigger's arguments, which whoever attaches the trigger
 * chooses.  (Triggers made before that function existed, by version 0.1,
 * carry them as arguments until ALTER EXTENSION webhook UPDATE replaces
 * them.)
 */
static void
load_capture(CaptureEntry *entry, TriggerData *trigdata)
{
	Trigger    *trigger = trigdata->tg_trigger;
	const char *operation = TRIGGER_FIRED_BY_INSERT(trigdata->tg_event) ? "insert" :
		TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ? "update" : "delete";
	Oid			argtypes[2] = {REGCLASSOID, TEXTOID};
	Oid			plan_fn = LookupFuncName(list_make2(makeString(WEBHOOK_SCHEMA_NAME),
												   makeString("_capture_plan")),
										2, argtypes, true);

	entry->operation = MemoryContextStrdup(TopMemoryContext, operation);
	if (OidIsValid(plan_fn))
	{
		ConditionsLoad load = {entry, trigdata->tg_relation, 0, NULL, NULL};
		Datum		args[2];
		Oid			save_userid;
		int			save_sec_context;
		int			level;
		int			rc;

		args[0] = ObjectIdGetDatum(entry->relid);
		args[1] = CStringGetTextDatum(operation);
		/*
		 * The latest snapshot: the catalogue as committed with this trigger,
		 * also in a transaction whose own snapshot is older (repeatable
		 * read), whose next statements would otherwise keep an old plan.
		 */
		PushActiveSnapshot(GetLatestSnapshot());
		level = webhook_pin_search_path();
		GetUserIdAndSecContext(&save_userid, &save_sec_context);
		SetUserIdAndSecContext(webhook_queue_owner(), save_sec_context |
							   SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
		/* every column: before 0.10, the plan has no schedule */
		rc = SPI_execute_with_args("SELECT * FROM webhook._capture_plan($1, $2)",
								   2, argtypes, args, NULL, true, 1);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "could not read the capture plan of table %u", entry->relid);
		if (SPI_processed > 0)
		{
			HeapTuple	tuple = SPI_tuptable->vals[0];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			char	   *bindings = SPI_getvalue(tuple, desc, SPI_fnumber(desc, "bindings"));
			int			schedule = SPI_fnumber(desc, "schedule");

			entry->query = keep_string(SPI_getvalue(tuple, desc, SPI_fnumber(desc, "query")));
			entry->fallback = keep_string(SPI_getvalue(tuple, desc, SPI_fnumber(desc, "fallback")));
			if (schedule > 0)
				keep_schedules(entry, tuple, desc, schedule);
			if (entry->nschedules > 0)
				entry->due_columns = webhook_due_columns(entry->relid);
			entry->keyed = true;
			if (bindings != NULL)
				entry->bindings = keep_bindings(bindings);
		}
		if (entry->query != NULL)
			read_conditions(&load, args);
		SetUserIdAndSecContext(save_userid, save_sec_context);
		AtEOXact_GUC(true, level);
		PopActiveSnapshot();
		if (load.nbindings > 0)
			compile_conditions(&load);
	}
	else if (trigger->tgnargs >= 2 && trigger->tgnargs <= 4)
	{
		entry->query = keep_string(trigger->tgargs[1]);
		entry->fallback = trigger->tgnargs >= 3 ? keep_string(trigger->tgargs[2]) : NULL;
		if (trigger->tgnargs == 4)
			entry->bindings = keep_bindings(trigger->tgargs[3]);
	}
	entry->loaded = true;
}

/* The session's webhook.origin, as a text datum: false when it has none. */
static bool
session_origin(Datum *origin)
{
	if (webhook_origin == NULL || webhook_origin[0] == '\0')
		return false;
	*origin = CStringGetTextDatum(webhook_origin);
	return true;
}

/*
 * Run a SELECT (SPI is connected) and keep what it returns: keyed, with this
 * session's capture key as $1 (see webhook_capture_key), then the n values
 * given.
 */
Tuplestorestate *
webhook_select_rows(SPIPlanPtr plan, bool keyed, int n, const Oid *types, const Datum *values)
{
	Tuplestorestate *rows = tuplestore_begin_heap(false, false, work_mem);
	DestReceiver *dest = CreateDestReceiver(DestTuplestore);
	SPIExecuteOptions options;
	int			first = keyed ? 1 : 0;
	int			rc;

	SetTuplestoreDestReceiverParams(dest, rows, CurrentMemoryContext, false, NULL, NULL);
	memset(&options, 0, sizeof(options));
	options.read_only = false;
	options.dest = dest;
	if (first + n > 0)
	{
		options.params = makeParamList(first + n);
		options.params->numParams = first + n;
		if (keyed)
		{
			options.params->params[0].value = Int64GetDatum(webhook_capture_key());
			options.params->params[0].ptype = INT8OID;
		}
		for (int i = 0; i < n; i++)
		{
			options.params->params[first + i].value = values[i];
			options.params->params[first + i].ptype = types[i];
		}
		for (int i = 0; i < first + n; i++)
		{
			options.params->params[i].isnull = false;
			options.params->params[i].pflags = PARAM_FLAG_CONST;
		}
	}
	rc = SPI_execute_plan_extended(plan, &options);
	dest->rDestroy(dest);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "a webhook capture query failed: %s", SPI_result_code_string(rc));
	return rows;
}

/*
 * Make rows the capture worked out (of desc) a relation, relname, of the
 * statements of ours that write them as the queue's owner (see
 * webhook_write_rows).  SPI is connected.
 */
void
webhook_register_rows(Tuplestorestate *rows, const char *relname, TupleDesc desc)
{
	EphemeralNamedRelation enr = palloc0(sizeof(EphemeralNamedRelationData));

	enr->md.name = pstrdup(relname);
	enr->md.reliddesc = InvalidOid;
	enr->md.tupdesc = desc;
	enr->md.enrtype = ENR_NAMED_TUPLESTORE;
	enr->md.enrtuples = tuplestore_tuple_count(rows);
	enr->reldata = rows;
	if (SPI_register_relation(enr) != SPI_OK_REL_REGISTER)
		elog(ERROR, "could not register the rows \"%s\"", relname);
}

/*
 * Run a statement of ours, which runs no one's code, over the rows
 * registered as relname, as the queue's owner: the one way the capture
 * writes the queue's tables by a statement.  The rows are unregistered
 * after (the worker writes more than once in one connection), and nothing
 * stays set after an error, also one that a writer's own exception block
 * catches.  Returns what SPI returned.
 */
int
webhook_write_rows(SPIPlanPtr plan, Datum *args, const char *nulls, const char *relname)
{
	Oid			save_userid;
	int			save_sec_context;
	volatile int rc = 0;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(webhook_queue_owner(), save_sec_context |
						   SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
	PG_TRY();
	{
		webhook_enqueueing = true;
		rc = SPI_execute_plan(plan, args, nulls, false, 0);
	}
	PG_FINALLY();
	{
		webhook_enqueueing = false;
		SetUserIdAndSecContext(save_userid, save_sec_context);
		(void) SPI_unregister_relation(relname);
	}
	PG_END_TRY();
	return rc;
}

/* A tuple descriptor made once for the session (the rows the capture writes). */
TupleDesc
webhook_kept_tupdesc(TupleDesc *kept, int natts, const char *const *names, const Oid *types)
{
	if (*kept == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
		TupleDesc	desc = CreateTemplateTupleDesc(natts);

		for (int i = 0; i < natts; i++)
			TupleDescInitEntry(desc, i + 1, names[i], types[i], -1, 0);
		*kept = desc;
		MemoryContextSwitchTo(old);
	}
	return *kept;
}

/* Queue matched rows (bindings, new_row, old_row).  SPI is connected. */
void
webhook_enqueue_rows(Tuplestorestate *matches, Oid relid, const char *operation,
					 const char *capture_error)
{
	Oid			argtypes[4] = {OIDOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		args[4];
	char		nulls[4] = {' ', ' ', capture_error ? ' ' : 'n', ' '};
	int			rc;
	bool		has_origin;

	webhook_register_rows(matches, MATCHES_RELATION, matches_tupdesc());

	/* before ALTER EXTENSION webhook UPDATE to 0.9, the queue has no origin */
	has_origin = get_attnum(queue_relid(NULL), "origin") != InvalidAttrNumber;
	if (enqueue_plan != NULL && enqueue_plan_has_origin != has_origin)
	{
		SPI_freeplan(enqueue_plan);
		enqueue_plan = NULL;
	}
	if (enqueue_plan == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare(psprintf(
											   "INSERT INTO webhook.occurrence (table_oid, operation, bindings,"
											   "                                new_rows, old_rows, row_count, capture_error%s)"
											   " SELECT $1, $2, g.bindings,"
											   "        CASE WHEN $2 <> 'delete' THEN pg_catalog.json_agg(g.new_row ORDER BY g.i) END,"
											   "        CASE WHEN $2 <> 'insert' THEN pg_catalog.json_agg(g.old_row ORDER BY g.i) END,"
											   "        pg_catalog.count(*), $3%s"
											   "   FROM (SELECT pg_catalog.row_number() OVER () AS i, m.* FROM " MATCHES_RELATION " AS m) AS g"
											   "  GROUP BY g.bindings, (g.i - 1) / " CppAsString2(CHUNK_ROWS),
											   has_origin ? ", origin" : "", has_origin ? ", $4" : ""),
									   has_origin ? 4 : 3, argtypes);

		enqueue_plan_has_origin = has_origin;
		if (plan == NULL)
			elog(ERROR, "could not prepare the webhook enqueue statement: %s",
				 SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		enqueue_plan = plan;
	}

	args[0] = ObjectIdGetDatum(relid);
	args[1] = CStringGetTextDatum(operation);
	args[2] = capture_error ? CStringGetTextDatum(capture_error) : (Datum) 0;
	if (!session_origin(&args[3]))
		nulls[3] = 'n';

	rc = webhook_write_rows(enqueue_plan, args, nulls, MATCHES_RELATION);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "could not queue webhook occurrences: %s", SPI_result_code_string(rc));
}

/*
 * Run one capture query and queue what matched (or, schedule: write what it
 * returns into the deadlines' schedule); returns how many rows it returned.  Rows are rendered in UTC, bytea in hex, whatever the
 * writer's settings (see webhook_render_begin), and names resolve in
 * pg_catalog whatever the writer's search_path.
 */
static uint64
capture_query(CaptureEntry *entry, SPIPlanPtr plan, const char *query,
				  Trigger *trigger, Oid relid, const char *capture_error, bool schedule)
{
	int			render_level;
	int			guc_level;
	int			rc;
	uint64		queued;
	Oid			outer_relid;

	render_level = webhook_render_begin();
	guc_level = webhook_pin_search_path();
	entry->in_use++;
	webhook_capture_depth++;
	outer_relid = webhook_capture_relid;
	webhook_capture_relid = relid;

	if (is_queue_insert(query))
	{
		Oid			save_userid;
		int			save_sec_context;
		Datum		args[1];
		char		nulls[1];

		args[0] = capture_error ? CStringGetTextDatum(capture_error) : (Datum) 0;
		nulls[0] = capture_error ? ' ' : 'n';
		GetUserIdAndSecContext(&save_userid, &save_sec_context);
		SetUserIdAndSecContext(webhook_queue_owner(), save_sec_context |
							   SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
		rc = SPI_execute_plan(plan, args, nulls, false, 0);
		SetUserIdAndSecContext(save_userid, save_sec_context);
		if (rc != SPI_OK_INSERT)
			elog(ERROR, "the capture query of trigger \"%s\" failed: %s",
				 trigger->tgname, SPI_result_code_string(rc));
		queued = SPI_processed;
	}
	else
	{
		Tuplestorestate *matches = webhook_select_rows(plan, entry->keyed, 0, NULL, NULL);

		queued = tuplestore_tuple_count(matches);
		if (queued > 0 && schedule)
			webhook_schedule_rows(matches);
		else if (queued > 0)
			webhook_enqueue_rows(matches, relid, entry->operation, capture_error);
		tuplestore_end(matches);
	}

	webhook_capture_depth--;
	webhook_capture_relid = outer_relid;
	entry->in_use--;
	AtEOXact_GUC(true, guc_level);
	webhook_render_end(render_level);
	return queued;
}

/*
 * The same, leaving the capture's state as it found it when it fails: an
 * error may be caught by the writer's own exception block, and the session
 * goes on.
 */
static uint64
run_capture_query(CaptureEntry *entry, SPIPlanPtr plan, const char *query,
				  Trigger *trigger, Oid relid, const char *capture_error, bool schedule)
{
	int			depth = webhook_capture_depth;
	Oid			capturing = webhook_capture_relid;
	int			in_use = entry->in_use;
	uint64		queued = 0;

	PG_TRY();
	{
		queued = capture_query(entry, plan, query, trigger, relid, capture_error, schedule);
	}
	PG_CATCH();
	{
		webhook_capture_depth = depth;
		webhook_capture_relid = capturing;
		entry->in_use = in_use;
		PG_RE_THROW();
	}
	PG_END_TRY();
	return queued;
}

/*
 * The direct path, for a table and operation whose bindings all match
 * every row (no columns, no conditions): no query at all.  Each changed row
 * becomes one queue row, built here and inserted with the executor's
 * low-level routines, as logical replication applies rows.  The JSON of a
 * row is row_to_json's (see rowwrite.c).
 */

TupleTableSlot *
webhook_transition_reader(Tuplestorestate *rows, TupleDesc desc)
{
	int			ptr;

	if (rows == NULL)
		return NULL;
	/* a read pointer of our own: other triggers may read the same rows */
	ptr = tuplestore_alloc_read_pointer(rows, EXEC_FLAG_REWIND);
	tuplestore_select_read_pointer(rows, ptr);
	tuplestore_rescan(rows);
	return MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);
}

/* The columns of webhook.occurrence. */
enum
{
	Q_OCCURRENCE_ID, Q_CAPTURED_AT, Q_TABLE_OID, Q_OPERATION, Q_BINDINGS,
	Q_NEW_ROWS, Q_OLD_ROWS, Q_ROW_COUNT, Q_CAPTURE_ERROR, Q_ID_SEED, Q_ORIGIN, Q_NATTS
};

/*
 * A queue row holds up to CHUNK_ROWS changed rows of one statement, or
 * about CHUNK_BYTES of their JSON, whichever comes first.
 */
#define CHUNK_BYTES (4 * 1024 * 1024)

/*
 * The JSON arrays of the chunk being built.  They are kept from one
 * statement to the next (allocating and freeing large buffers for every
 * statement costs more than the rest), and dropped when they grew large.
 * Each starts with room for a varlena header, so that it becomes a json
 * datum in place.  A capture that runs while one is building (a cast to
 * json that writes to a captured table) builds in buffers of its own.
 */
static StringInfoData new_rows_buf;
static StringInfoData old_rows_buf;

#define KEEP_BUFFER_BYTES (256 * 1024)

static void
start_rows(StringInfo rows)
{
	if (rows->data == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		initStringInfo(rows);
		MemoryContextSwitchTo(old);
	}
	resetStringInfo(rows);
	appendBinaryStringInfo(rows, "\0\0\0\0", VARHDRSZ);
}

static void
release_rows(StringInfo rows)
{
	if (rows->data != NULL && rows->maxlen > KEEP_BUFFER_BYTES)
	{
		pfree(rows->data);
		rows->data = NULL;
	}
}

/* The array as a json datum, in the buffer itself. */
static Datum
finish_rows(StringInfo rows)
{
	appendStringInfoChar(rows, ']');
	SET_VARSIZE(rows->data, rows->len);
	return PointerGetDatum(rows->data);
}

/* Where a statement's queue rows go. */
typedef struct QueueTarget
{
	Relation	queue;
	Oid			seq_relid;
	EState	   *estate;
	ResultRelInfo *rri;
	TupleTableSlot *slot;
	Datum		table_oid;
	Datum		operation;
	RowWriter  *writer;
	bool		has_new;
	bool		has_old;
	bool		has_origin;		/* the queue has its origin column */
} QueueTarget;

/* The rows of one statement that matched the same bindings, being built. */
typedef struct QueueChunk
{
	Datum		bindings;		/* an int8[] */
	bool	   *matched;		/* with conditions: which of them */
	StringInfo	new_rows;		/* "[row,row" while open */
	StringInfo	old_rows;
	int			count;
} QueueChunk;

static void
append_row(RowWriter *writer, StringInfo rows, TupleTableSlot *slot, int count)
{
	if (count == 0)
		start_rows(rows);
	appendStringInfoChar(rows, count == 0 ? '[' : ',');
	webhook_write_row(writer, rows, slot);
}

/*
 * A new queue row's id seed, which its webhook-ids derive from (see
 * expand.c), so each must be unique: random bits drawn once
 * per session, with a count of the seeds made mixed into the last seven
 * bytes.  A strong random draw for every statement would cost as much as
 * the rest of capturing a single row.  Shaped as a version 4 UUID, as the
 * column's default (gen_random_uuid()) makes.
 */
static Datum
new_id_seed(void)
{
	static uint8 session_bits[UUID_LEN];
	static uint64 seeds_made = 0;
	pg_uuid_t  *uuid = palloc(UUID_LEN);

	if (seeds_made == 0 && !pg_strong_random(session_bits, UUID_LEN))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate random values")));
	seeds_made++;
	memcpy(uuid->data, session_bits, UUID_LEN);
	for (int i = 0; i < 7; i++)
		uuid->data[UUID_LEN - 1 - i] ^= (uint8) (seeds_made >> (8 * i));
	uuid->data[6] = (uuid->data[6] & 0x0f) | 0x40;
	uuid->data[8] = (uuid->data[8] & 0x3f) | 0x80;
	return UUIDPGetDatum(uuid);
}

static void
flush_chunk(QueueTarget *target, QueueChunk *chunk)
{
	TupleTableSlot *out = target->slot;

	if (chunk->count == 0)
		return;

	ExecClearTuple(out);
	memset(out->tts_isnull, false, out->tts_tupleDescriptor->natts * sizeof(bool));
	out->tts_values[Q_OCCURRENCE_ID] = Int64GetDatum(nextval_internal(target->seq_relid, false));
	out->tts_values[Q_CAPTURED_AT] = TimestampTzGetDatum(GetCurrentTimestamp());
	out->tts_values[Q_TABLE_OID] = target->table_oid;
	out->tts_values[Q_OPERATION] = target->operation;
	out->tts_values[Q_BINDINGS] = chunk->bindings;
	if (target->has_new)
		out->tts_values[Q_NEW_ROWS] = finish_rows(chunk->new_rows);
	else
		out->tts_isnull[Q_NEW_ROWS] = true;
	if (target->has_old)
		out->tts_values[Q_OLD_ROWS] = finish_rows(chunk->old_rows);
	else
		out->tts_isnull[Q_OLD_ROWS] = true;
	out->tts_values[Q_ROW_COUNT] = Int32GetDatum(chunk->count);
	out->tts_isnull[Q_CAPTURE_ERROR] = true;
	out->tts_values[Q_ID_SEED] = new_id_seed();
	if (target->has_origin)
		out->tts_isnull[Q_ORIGIN] = !session_origin(&out->tts_values[Q_ORIGIN]);
	ExecStoreVirtualTuple(out);

	table_tuple_insert(target->queue, out, GetCurrentCommandId(true), 0, NULL);
	ExecInsertIndexTuples(target->rri, out, target->estate, false, false, NULL, NIL);
	ExecClearTuple(out);
	chunk->count = 0;
}

/*
 * A new chunk: the first of the statement builds in the kept buffers
 * unless a capture that is running already does.
 */
static QueueChunk *
new_chunk(Datum bindings, const bool *matched, int nbindings)
{
	QueueChunk *chunk = palloc0(sizeof(QueueChunk));

	chunk->bindings = bindings;
	if (matched != NULL)
		chunk->matched = memcpy(palloc(nbindings * sizeof(bool)), matched, nbindings * sizeof(bool));
	if (!kept_buffers_in_use)
	{
		kept_buffers_in_use = true;
		chunk->new_rows = &new_rows_buf;
		chunk->old_rows = &old_rows_buf;
	}
	else
	{
		chunk->new_rows = makeStringInfo();
		chunk->old_rows = makeStringInfo();
	}
	return chunk;
}

static void
free_chunk(QueueChunk *chunk)
{
	if (chunk->new_rows == &new_rows_buf)
	{
		release_rows(chunk->new_rows);
		release_rows(chunk->old_rows);
		kept_buffers_in_use = false;
	}
	else
	{
		pfree(chunk->new_rows->data);
		pfree(chunk->old_rows->data);
	}
}

/* The chunk of the rows that matched these bindings, made when first met. */
static QueueChunk *
chunk_for(List **chunks, BindingConditions *conds, const bool *matched)
{
	int			nbindings = webhook_conditions_count(conds);
	Datum	   *ids;
	int			nids = 0;
	ListCell   *lc;
	QueueChunk *chunk;

	foreach(lc, *chunks)
	{
		chunk = lfirst(lc);
		if (memcmp(chunk->matched, matched, nbindings * sizeof(bool)) == 0)
			return chunk;
	}
	ids = palloc(nbindings * sizeof(Datum));
	for (int i = 0; i < nbindings; i++)
		if (matched[i])
			ids[nids++] = Int64GetDatum(webhook_conditions_binding(conds, i));
	chunk = new_chunk(PointerGetDatum(construct_array(ids, nids, INT8OID, sizeof(int64),
													  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE)),
					  matched, nbindings);
	*chunks = lappend(*chunks, chunk);
	return chunk;
}

/* A slot holding a row of nulls: the old row of an insert, the new of a delete. */
static TupleTableSlot *
null_row(TupleDesc desc)
{
	TupleTableSlot *slot = MakeSingleTupleTableSlot(desc, &TTSOpsVirtual);

	return ExecStoreAllNullTuple(slot);
}

/*
 * Queue the changed rows of a statement: every row for the entry's
 * bindings (the direct path), or, with conditions, each row for the
 * bindings it matches, in one queue row per set of bindings.  Returns the
 * number of rows queued.
 */
static uint64
capture_rows(TriggerData *trigdata, CaptureEntry *entry, BindingConditions *conds)
{
	QueueTarget target;
	List	   *chunks = NIL;
	QueueChunk *all = NULL;
	TupleTableSlot *new_slot;
	TupleTableSlot *old_slot;
	TupleTableSlot *new_or_null = NULL;
	TupleTableSlot *old_or_null = NULL;
	ExprContext *econtext = NULL;
	bool	   *matched = NULL;
	TupleDesc	desc = RelationGetDescr(trigdata->tg_relation);
	int			render_level;
	uint64		queued = 0;
	ListCell   *lc;

	memset(&target, 0, sizeof(target));
	target.queue = table_open(queue_relid(&target.seq_relid), RowExclusiveLock);
	/* before ALTER EXTENSION webhook UPDATE to 0.9, the queue has no origin */
	target.has_origin = RelationGetDescr(target.queue)->natts == Q_NATTS;
	if (RelationGetDescr(target.queue)->natts != Q_NATTS - (target.has_origin ? 0 : 1))
		elog(ERROR, "webhook.occurrence does not have the expected columns");
	target.estate = CreateExecutorState();
	target.rri = makeNode(ResultRelInfo);
	InitResultRelInfo(target.rri, target.queue, 1, NULL, 0);
	ExecOpenIndices(target.rri, false);
	target.slot = MakeSingleTupleTableSlot(RelationGetDescr(target.queue), &TTSOpsVirtual);
	target.table_oid = ObjectIdGetDatum(RelationGetRelid(trigdata->tg_relation));
	target.operation = CStringGetTextDatum(entry->operation);
	if (entry->writer != NULL && !webhook_row_writer_current(entry->writer, desc))
	{
		webhook_retire_row_writer(entry->writer);
		entry->writer = NULL;
	}
	if (entry->writer == NULL)
		entry->writer = webhook_row_writer(desc);
	/* this call's own: a nested capture may replace the entry's */
	target.writer = entry->writer;
	new_slot = webhook_transition_reader(trigdata->tg_newtable, desc);
	old_slot = webhook_transition_reader(trigdata->tg_oldtable, desc);
	target.has_new = new_slot != NULL;
	target.has_old = old_slot != NULL;

	if (conds == NULL)
	{
		all = new_chunk(entry->bindings, NULL, 0);
		chunks = list_make1(all);
	}
	else
	{
		econtext = GetPerTupleExprContext(target.estate);
		matched = palloc(webhook_conditions_count(conds) * sizeof(bool));
		new_or_null = new_slot ? new_slot : null_row(desc);
		old_or_null = old_slot ? old_slot : null_row(desc);
	}

	render_level = webhook_render_begin();

	for (;;)
	{
		bool		have_new = new_slot &&
			tuplestore_gettupleslot(trigdata->tg_newtable, true, false, new_slot);
		bool		have_old = old_slot &&
			tuplestore_gettupleslot(trigdata->tg_oldtable, true, false, old_slot);
		QueueChunk *chunk = all;

		if (!have_new && !have_old)
			break;
		/* the old and new transition tables hold the rows in the same order */
		if ((new_slot && !have_new) || (old_slot && !have_old))
			elog(ERROR, "the old and new rows of the statement do not pair up");

		if (conds != NULL)
		{
			if (webhook_conditions_match(conds, econtext, new_or_null, old_or_null, matched) == 0)
				continue;
			chunk = chunk_for(&chunks, conds, matched);
		}
		if (have_new)
			append_row(target.writer, chunk->new_rows, new_slot, chunk->count);
		if (have_old)
			append_row(target.writer, chunk->old_rows, old_slot, chunk->count);
		chunk->count++;
		queued++;
		if (chunk->count >= CHUNK_ROWS ||
			(have_new ? chunk->new_rows->len : 0) + (have_old ? chunk->old_rows->len : 0) >= CHUNK_BYTES)
			flush_chunk(&target, chunk);
	}
	foreach(lc, chunks)
		flush_chunk(&target, lfirst(lc));

	webhook_render_end(render_level);
	foreach(lc, chunks)
		free_chunk(lfirst(lc));
	if (new_or_null && new_or_null != new_slot)
		ExecDropSingleTupleTableSlot(new_or_null);
	if (old_or_null && old_or_null != old_slot)
		ExecDropSingleTupleTableSlot(old_or_null);
	if (new_slot)
		ExecDropSingleTupleTableSlot(new_slot);
	if (old_slot)
		ExecDropSingleTupleTableSlot(old_slot);
	ExecDropSingleTupleTableSlot(target.slot);
	ExecCloseIndices(target.rri);
	FreeExecutorState(target.estate);
	table_close(target.queue, NoLock);
	return queued;
}

typedef struct CaptureRun
{
	CaptureEntry *entry;
	TriggerData *trigdata;
	uint64		queued;
	int			schedule;		/* run_schedule_query: which event's */
} CaptureRun;

/* The capture query of a trigger whose conditions may fail. */
static void
run_conditional_query(void *arg)
{
	CaptureRun *run = arg;
	CaptureEntry *entry = run->entry;
	Trigger    *trigger = run->trigdata->tg_trigger;

	if (entry->plan == NULL)
		entry->plan = prepare_capture_query(entry, trigger, entry->query, false);
	run->queued = run_capture_query(entry, entry->plan, entry->query, trigger,
									RelationGetRelid(run->trigdata->tg_relation), NULL, false);
}

/* The schedule of one of the table's deadline events, over the statement's rows. */
static void
run_schedule_query(void *arg)
{
	CaptureRun *run = arg;
	CaptureEntry *entry = run->entry;
	Trigger    *trigger = run->trigdata->tg_trigger;
	int			i = run->schedule;

	if (entry->schedule_plans[i] == NULL)
		entry->schedule_plans[i] = prepare_capture_query(entry, trigger, entry->schedules[i], false);
	run->queued = run_capture_query(entry, entry->schedule_plans[i], entry->schedules[i], trigger,
									RelationGetRelid(run->trigdata->tg_relation), NULL, true);
}

/* The conditions compiled here, over the statement's rows. */
static void
run_conditions(void *arg)
{
	CaptureRun *run = arg;

	run->queued = capture_rows(run->trigdata, run->entry, run->entry->conditions);
}

/*
 * A condition failed: the change must not fail with it.  Keep it, and
 * queue it for every binding with the error, to be recorded as failed
 * deliveries.  SPI is connected, with the transition tables registered.
 */
static uint64
queue_failed(CaptureEntry *entry, TriggerData *trigdata, ErrorData *error)
{
	Trigger    *trigger = trigdata->tg_trigger;

	ereport(WARNING,
			(errcode(ERRCODE_TRIGGERED_ACTION_EXCEPTION),
			 errmsg("a webhook condition on table \"%s\" failed: %s",
					RelationGetRelationName(trigdata->tg_relation), error->message),
			 errdetail("The change is kept; its occurrences are recorded as failed deliveries."),
			 errhint("Correct the condition; webhook.deliveries shows the error.")));
	if (entry->fallback_plan == NULL)
		entry->fallback_plan = prepare_capture_query(entry, trigger, entry->fallback, true);
	return run_capture_query(entry, entry->fallback_plan, entry->fallback, trigger,
							 RelationGetRelid(trigdata->tg_relation),
							 psprintf("a condition failed when the change was captured: %s",
									  error->message), false);
}

/*
 * Run fn, which may fail on a condition, in a subtransaction; its error,
 * with the state it left restored.
 */
static ErrorData *
run_guarded(void (*fn) (void *arg), CaptureRun *run)
{
	CaptureEntry *entry = run->entry;
	int			in_use = entry->in_use;
	int			depth = webhook_capture_depth;
	Oid			capturing = webhook_capture_relid;
	bool		kept_in_use = kept_buffers_in_use;
	ErrorData  *error;

	/* a nested capture must not free the entry's conditions under us */
	entry->in_use++;
	error = webhook_in_subtransaction(fn, run);
	entry->in_use = in_use;
	if (error != NULL)
	{
		webhook_capture_depth = depth;
		webhook_capture_relid = capturing;
		kept_buffers_in_use = kept_in_use;
		webhook_enqueueing = false;
	}
	return error;
}

static void
connect_with_rows(TriggerData *trigdata)
{
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_register_trigger_data(trigdata) != SPI_OK_TD_REGISTER)
		elog(ERROR, "could not register the transition tables");
}

/*
 * Keep the schedule of the table's deadline events (see deadline.c): the
 * due times the statement set, changed or took away, event by event.  A
 * due time that cannot be worked out (its expression failed) must not fail
 * the change: its rows are queued for every binding of that event, with
 * the error, to be recorded as failed deliveries.  Returns true when the
 * schedule or the queue was written.
 */
static bool
schedule_deadlines(CaptureEntry *entry, TriggerData *trigdata)
{
	Trigger    *trigger = trigdata->tg_trigger;
	bool		written = false;

	connect_with_rows(trigdata);
	for (int i = 0; i < entry->nschedules; i++)
	{
		CaptureRun	run = {entry, trigdata, 0, i};
		ErrorData  *error;

		if (entry->schedules[i] == NULL)
			continue;
		error = run_guarded(run_schedule_query, &run);
		if (error != NULL)
		{
			ereport(WARNING,
					(errcode(ERRCODE_TRIGGERED_ACTION_EXCEPTION),
					 errmsg("the due time of a webhook deadline event on table \"%s\" failed: %s",
							RelationGetRelationName(trigdata->tg_relation), error->message),
					 errdetail("The change is kept; its deadlines are not scheduled%s.",
							   entry->schedule_fallbacks[i] ? ", and are recorded as failed deliveries" : ""),
					 errhint("Correct the due time's expression; webhook.deliveries shows the error.")));
			if (entry->schedule_fallbacks[i] != NULL)
			{
				if (entry->schedule_fallback_plans[i] == NULL)
					entry->schedule_fallback_plans[i] =
						prepare_capture_query(entry, trigger, entry->schedule_fallbacks[i], true);
				run.queued = run_capture_query(entry, entry->schedule_fallback_plans[i],
											   entry->schedule_fallbacks[i], trigger,
											   RelationGetRelid(trigdata->tg_relation),
											   psprintf("the due time failed when the change was captured: %s",
														error->message), false);
			}
		}
		written |= run.queued > 0;
	}
	SPI_finish();
	return written;
}

Datum
webhook_capture(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Trigger    *trigger;
	CaptureEntry *entry;
	CaptureRun	run;
	ErrorData  *error;
	uint64		queued = 0;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("webhook._capture() can only be called as a trigger")));
	trigger = trigdata->tg_trigger;
	if (!TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_STATEMENT(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("webhook._capture() must be an AFTER ... FOR EACH STATEMENT trigger"),
				 errhint("Let webhook.sync_triggers() create the triggers.")));

	/* a statement that changed no row has nothing to queue */
	if ((trigdata->tg_newtable == NULL || tuplestore_tuple_count(trigdata->tg_newtable) == 0) &&
		(trigdata->tg_oldtable == NULL || tuplestore_tuple_count(trigdata->tg_oldtable) == 0))
		return PointerGetDatum(NULL);

	entry = capture_entry(trigger, RelationGetRelid(trigdata->tg_relation));
	if (!entry->loaded)
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		load_capture(entry, trigdata);
		SPI_finish();
	}
	run.entry = entry;
	run.trigdata = trigdata;
	run.queued = 0;
	run.schedule = 0;

	if (entry->bindings != (Datum) 0)
	{
		/* every binding matches every row: the direct path */
		queued = capture_rows(trigdata, entry, NULL);
	}
	else if (entry->query == NULL)
	{
		/* no binding on this table and operation (any more) */
	}
	else if (entry->conditions != NULL)
	{
		/* the conditions evaluated here, the matching rows queued directly */
		error = run_guarded(run_conditions, &run);
		queued = run.queued;
		if (error != NULL)
		{
			connect_with_rows(trigdata);
			queued = queue_failed(entry, trigdata, error);
			SPI_finish();
		}
	}
	else if (entry->fallback == NULL)
	{
		/* no condition: nothing in the query can fail */
		connect_with_rows(trigdata);
		if (entry->plan == NULL)
			entry->plan = prepare_capture_query(entry, trigger, entry->query, false);
		queued = run_capture_query(entry, entry->plan, entry->query, trigger,
								   RelationGetRelid(trigdata->tg_relation), NULL, false);
		SPI_finish();
	}
	else
	{
		/*
		 * The query may fail: it runs SQL written by users (condition,
		 * condition_sql), and a column it names may have been dropped.
		 */
		connect_with_rows(trigdata);
		error = run_guarded(run_conditional_query, &run);
		queued = run.queued;
		if (error != NULL)
			queued = queue_failed(entry, trigdata, error);
		SPI_finish();
	}

	if (queued > 0)
		work_at_commit |= WORK_CHANGES;
	/* the deadline events' due times: those of columns, then the others */
	if (entry->due_columns != NULL && webhook_schedule_due_columns(entry->due_columns, trigdata))
		work_at_commit |= WORK_DEADLINES;
	if (entry->schedule_queries && schedule_deadlines(entry, trigdata))
		work_at_commit |= WORK_CHANGES | WORK_DEADLINES;
	return PointerGetDatum(NULL);
}

/*
 * webhook._occurrence_guard(), BEFORE INSERT OR UPDATE on webhook.occurrence:
 * a queued change is read by the worker with the rights of its event's
 * author, so only the capture trigger writes one (its direct path inserts
 * below the executor, its query path runs this statement of its own), the
 * worker marks one it cannot read, and a superuser may do anything.  Table
 * privileges on the queue lend no one the author's rights.
 */
Datum
webhook_occurrence_guard(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("webhook._occurrence_guard() can only be called as a trigger")));
	if (!webhook_enqueueing && !webhook_in_worker && !superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for table %s", RelationGetRelationName(trigdata->tg_relation)),
				 errdetail("Changes are queued by the capture triggers only."),
				 errhint("Change a table that has events instead; see webhook.events.")));
	return PointerGetDatum(TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ?
						   trigdata->tg_newtuple : trigdata->tg_trigtuple);
}
