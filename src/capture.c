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
	int			in_use;			/* executions on the stack */
	bool		stale;			/* the table changed: prepare again */
} CaptureEntry;

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
			hash_search(capture_cache, &entry->tgoid, HASH_REMOVE, NULL);
			stale_entries--;
		}
	}
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
		entry->in_use = 0;
		entry->stale = false;
	}
	if (entry->plan == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare(trigger->tgargs[1], 0, NULL);

		if (plan == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not prepare the capture query of trigger \"%s\": %s",
							trigger->tgname, SPI_result_code_string(SPI_result)),
					 errhint("Run SELECT webhook.sync_triggers() to rebuild the triggers.")));
		SPI_keepplan(plan);
		entry->plan = plan;
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
enqueue_matches(Tuplestorestate *matches, Oid relid, const char *operation)
{
	EphemeralNamedRelation enr = palloc0(sizeof(EphemeralNamedRelationData));
	Oid			argtypes[2] = {OIDOID, TEXTOID};
	Datum		args[2];
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
									   "INSERT INTO webhook.occurrence (table_oid, operation, bindings, new_row, old_row)"
									   " SELECT $1, $2, bindings, new_row, old_row FROM " MATCHES_RELATION,
									   2, argtypes);

		if (plan == NULL)
			elog(ERROR, "could not prepare the webhook enqueue statement: %s",
				 SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		enqueue_plan = plan;
	}

	args[0] = ObjectIdGetDatum(relid);
	args[1] = CStringGetTextDatum(operation);

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(queue_owner(), save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	rc = SPI_execute_plan(enqueue_plan, args, NULL, false, 0);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "could not queue webhook occurrences: %s", SPI_result_code_string(rc));
}

Datum
webhook_capture(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Trigger    *trigger;
	Oid			relid;
	CaptureEntry *entry;
	Tuplestorestate *matches;
	DestReceiver *dest;
	SPIExecuteOptions options;
	int			guc_level;
	int			rc;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("webhook._capture() can only be called as a trigger")));
	trigger = trigdata->tg_trigger;
	if (!TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_STATEMENT(trigdata->tg_event) ||
		trigger->tgnargs != 2)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("webhook._capture() must be an AFTER ... FOR EACH STATEMENT trigger with two arguments"),
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

	/* step 1, as the user who changed the rows: which rows match */
	matches = tuplestore_begin_heap(false, false, work_mem);
	dest = CreateDestReceiver(DestTuplestore);
	SetTuplestoreDestReceiverParams(dest, matches, CurrentMemoryContext, false, NULL, NULL);
	memset(&options, 0, sizeof(options));
	options.read_only = false;
	options.dest = dest;
	/* rows are rendered in UTC whatever the writer's time zone */
	guc_level = NewGUCNestLevel();
	(void) set_config_option("TimeZone", "UTC", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	entry->in_use++;
	rc = SPI_execute_plan_extended(entry->plan, &options);
	entry->in_use--;
	AtEOXact_GUC(true, guc_level);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "the capture query of trigger \"%s\" failed: %s",
			 trigger->tgname, SPI_result_code_string(rc));

	/* step 2, as the queue's owner: queue them */
	if (tuplestore_tuple_count(matches) > 0)
	{
		enqueue_matches(matches, relid, trigger->tgargs[0]);
		wake_at_commit = true;
	}

	tuplestore_end(matches);
	dest->rDestroy(dest);
	SPI_finish();
	return PointerGetDatum(NULL);
}
