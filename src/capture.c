/*
 * capture.c
 *		The capture trigger: queues an occurrence for every changed row that
 *		matches a binding, in the transaction that changed it.
 *
 * webhook._sync_triggers() attaches one AFTER ... FOR EACH STATEMENT
 * trigger per table and operation that has bindings, with the rows of the
 * statement as transition tables (webhook_new, webhook_old).  Its second
 * argument is a query, generated from the bindings, that returns one row
 * (bindings, new_row, old_row) per changed row that matched at least one
 * binding.  A change of bindings replaces the trigger, so a new trigger
 * OID means a new query; plans are cached by trigger OID.
 *
 * The query runs as the user who changed the rows, as any trigger would.
 * Its result is then inserted into webhook.occurrence as the owner of that
 * table, so ticket writers need no privilege on the queue.
 */
#include "webhook.h"

#include "access/xact.h"
#include "utils/resowner.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "executor/tstoreReceiver.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/queryenvironment.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/tuplestore.h"

PG_FUNCTION_INFO_V1(webhook_capture);

#define MATCHES_RELATION "webhook_matches"

typedef struct CaptureEntry
{
	Oid			tgoid;			/* hash key */
	Oid			relid;
	SPIPlanPtr	plan;
	SPIPlanPtr	fallback_plan;	/* NULL unless the query runs user SQL */
	int			in_use;			/* executions on the stack */
	bool		stale;			/* the table changed: prepare again */
} CaptureEntry;

int			webhook_capture_depth = 0;

static HTAB *capture_cache = NULL;
static int	stale_entries = 0;
static SPIPlanPtr enqueue_plan = NULL;
static TupleDesc matches_desc = NULL;

/* What the transaction asks of the worker at commit. */
static bool wake_at_commit = false;
static bool start_at_commit = false;

static void
capture_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (start_at_commit)
				webhook_request_worker(MyDatabaseId);
			if (wake_at_commit)
				webhook_wake_worker(MyDatabaseId);
			wake_at_commit = start_at_commit = false;
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
			wake_at_commit = start_at_commit = false;
			break;
		case XACT_EVENT_PREPARE:
			/* COMMIT PREPARED wakes the worker (see init.c) */
			wake_at_commit = start_at_commit = false;
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

void
webhook_capture_init(void)
{
	RegisterXactCallback(capture_xact_callback, NULL);
	CacheRegisterRelcacheCallback(capture_relcache_callback, (Datum) 0);
}

void
webhook_wake_on_commit(void)
{
	wake_at_commit = true;
}

void
webhook_start_on_commit(void)
{
	start_at_commit = true;
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
			hash_search(capture_cache, &entry->tgoid, HASH_REMOVE, NULL);
			stale_entries--;
		}
	}
}

static SPIPlanPtr
prepare_capture_query(Trigger *trigger, const char *query)
{
	SPIPlanPtr	plan = SPI_prepare(query, 0, NULL);

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
		entry->plan = NULL;
		entry->fallback_plan = NULL;
		entry->in_use = 0;
		entry->stale = false;
	}
	return entry;
}

static TupleDesc
matches_tupdesc(void)
{
	if (matches_desc == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
		TupleDesc	desc = CreateTemplateTupleDesc(3);

		TupleDescInitEntry(desc, 1, "bindings", INT8ARRAYOID, -1, 0);
		TupleDescInitEntry(desc, 2, "new_row", JSONOID, -1, 0);
		TupleDescInitEntry(desc, 3, "old_row", JSONOID, -1, 0);
		matches_desc = desc;
		MemoryContextSwitchTo(old);
	}
	return matches_desc;
}

/* The role that owns webhook.occurrence: the queue is written as it. */
static Oid
queue_owner(void)
{
	Oid			nsp = get_namespace_oid(WEBHOOK_SCHEMA_NAME, false);
	Oid			relid = get_relname_relid("occurrence", nsp);
	HeapTuple	tup;
	Oid			owner;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("webhook.occurrence does not exist"),
				 errhint("Is the webhook extension installed in this database?")));
	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	return owner;
}

static void
enqueue_matches(Tuplestorestate *matches, Oid relid, const char *operation,
				const char *capture_error)
{
	EphemeralNamedRelation enr = palloc0(sizeof(EphemeralNamedRelationData));
	Oid			argtypes[3] = {OIDOID, TEXTOID, TEXTOID};
	Datum		args[3];
	char		nulls[3] = {' ', ' ', capture_error ? ' ' : 'n'};
	Oid			save_userid;
	int			save_sec_context;
	int			rc;

	enr->md.name = MATCHES_RELATION;
	enr->md.reliddesc = InvalidOid;
	enr->md.tupdesc = matches_tupdesc();
	enr->md.enrtype = ENR_NAMED_TUPLESTORE;
	enr->md.enrtuples = tuplestore_tuple_count(matches);
	enr->reldata = matches;
	if (SPI_register_relation(enr) != SPI_OK_REL_REGISTER)
		elog(ERROR, "could not register the matched rows");

	if (enqueue_plan == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare(
									   "INSERT INTO webhook.occurrence"
									   " (table_oid, operation, bindings, new_row, old_row, capture_error)"
									   " SELECT $1, $2, bindings, new_row, old_row, $3 FROM " MATCHES_RELATION,
									   3, argtypes);

		if (plan == NULL)
			elog(ERROR, "could not prepare the webhook enqueue statement: %s",
				 SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		enqueue_plan = plan;
	}

	args[0] = ObjectIdGetDatum(relid);
	args[1] = CStringGetTextDatum(operation);
	args[2] = capture_error ? CStringGetTextDatum(capture_error) : (Datum) 0;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(queue_owner(), save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	rc = SPI_execute_plan(enqueue_plan, args, nulls, false, 0);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "could not queue webhook occurrences: %s", SPI_result_code_string(rc));
}

/*
 * Run one capture query as the current user, into a tuplestore: the rows
 * that matched at least one binding.  Rows are rendered in UTC whatever the
 * writer's time zone.
 */
static Tuplestorestate *
run_capture_query(CaptureEntry *entry, SPIPlanPtr plan, const char *tgname)
{
	Tuplestorestate *matches = tuplestore_begin_heap(false, false, work_mem);
	DestReceiver *dest = CreateDestReceiver(DestTuplestore);
	SPIExecuteOptions options;
	int			guc_level;
	int			rc;

	SetTuplestoreDestReceiverParams(dest, matches, CurrentMemoryContext, false, NULL, NULL);
	memset(&options, 0, sizeof(options));
	options.read_only = false;
	options.dest = dest;

	guc_level = NewGUCNestLevel();
	(void) set_config_option("TimeZone", "UTC", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	entry->in_use++;
	webhook_capture_depth++;
	rc = SPI_execute_plan_extended(plan, &options);
	webhook_capture_depth--;
	entry->in_use--;
	AtEOXact_GUC(true, guc_level);
	dest->rDestroy(dest);

	if (rc != SPI_OK_SELECT)
		elog(ERROR, "the capture query of trigger \"%s\" failed: %s",
			 tgname, SPI_result_code_string(rc));
	return matches;
}

Datum
webhook_capture(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Trigger    *trigger;
	Oid			relid;
	CaptureEntry *entry;
	Tuplestorestate *volatile matches = NULL;
	char	   *volatile capture_error = NULL;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("webhook._capture() can only be called as a trigger")));
	trigger = trigdata->tg_trigger;
	if (!TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_STATEMENT(trigdata->tg_event) ||
		trigger->tgnargs < 2 || trigger->tgnargs > 3)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("webhook._capture() must be an AFTER ... FOR EACH STATEMENT trigger with two or three arguments"),
				 errhint("Let webhook.sync_triggers() create the triggers.")));

	/* a statement that changed no row has nothing to queue */
	if ((trigdata->tg_newtable == NULL || tuplestore_tuple_count(trigdata->tg_newtable) == 0) &&
		(trigdata->tg_oldtable == NULL || tuplestore_tuple_count(trigdata->tg_oldtable) == 0))
		return PointerGetDatum(NULL);

	relid = RelationGetRelid(trigdata->tg_relation);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_register_trigger_data(trigdata) != SPI_OK_TD_REGISTER)
		elog(ERROR, "could not register the transition tables");

	entry = capture_entry(trigger, relid);

	if (trigger->tgnargs < 3 || trigger->tgargs[2][0] == '\0')
	{
		if (entry->plan == NULL)
			entry->plan = prepare_capture_query(trigger, trigger->tgargs[1]);
		matches = run_capture_query(entry, entry->plan, trigger->tgname);
	}
	else
	{
		/*
		 * The query may fail: it runs SQL written by users (condition,
		 * condition_sql), and a column it names may have been dropped.  The
		 * change must not fail with it: keep it, and queue it for every
		 * binding with the error, to be recorded as failed deliveries.
		 */
		MemoryContext cxt = CurrentMemoryContext;
		ResourceOwner owner = CurrentResourceOwner;
		int			in_use = entry->in_use;
		int			depth = webhook_capture_depth;

		BeginInternalSubTransaction(NULL);
		MemoryContextSwitchTo(cxt);
		PG_TRY();
		{
			if (entry->plan == NULL)
				entry->plan = prepare_capture_query(trigger, trigger->tgargs[1]);
			matches = run_capture_query(entry, entry->plan, trigger->tgname);
			ReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(cxt);
			CurrentResourceOwner = owner;
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			MemoryContextSwitchTo(cxt);
			edata = CopyErrorData();
			FlushErrorState();
			RollbackAndReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(cxt);
			CurrentResourceOwner = owner;
			entry->in_use = in_use;
			webhook_capture_depth = depth;

			capture_error = edata->message;
			ereport(WARNING,
					(errcode(ERRCODE_TRIGGERED_ACTION_EXCEPTION),
					 errmsg("a webhook condition on table \"%s\" failed: %s",
							RelationGetRelationName(trigdata->tg_relation), edata->message),
					 errdetail("The change is kept; its occurrences are recorded as failed deliveries."),
					 errhint("Correct the condition; webhook.deliveries shows the error.")));
			if (entry->fallback_plan == NULL)
				entry->fallback_plan = prepare_capture_query(trigger, trigger->tgargs[2]);
			matches = run_capture_query(entry, entry->fallback_plan, trigger->tgname);
		}
		PG_END_TRY();
	}

	if (tuplestore_tuple_count(matches) > 0)
	{
		enqueue_matches(matches, relid, trigger->tgargs[0], capture_error);
		wake_at_commit = true;
	}

	SPI_finish();
	return PointerGetDatum(NULL);
}
