/*
 * init.c
 *		Library entry point: GUCs, shared memory hooks, the launcher, and the
 *		utility hook that keeps the worker out of the way of DROP DATABASE.
 */
#include "webhook.h"

#include <limits.h>

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_database.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/lmgr.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/syscache.h"

PG_MODULE_MAGIC;

int			webhook_request_timeout = 30000;
int			webhook_connect_timeout = 5000;
int			webhook_max_response_size = 65536;
int			webhook_retention = 30 * 24 * 3600;
int			webhook_max_concurrency = 64;
int			webhook_disable_after_failures = 100;
int			webhook_max_per_profile = 32;
int			webhook_max_workers = 4;
int			webhook_worker_idle_timeout = 60;
/* for SHOW only: the worker reads the setting with webhook_queue_sending */
static bool webhook_sending = true;
char	   *webhook_user_agent = NULL;
char	   *webhook_proxy = NULL;
char	   *webhook_origin = NULL;	/* webhook.origin: this session's tag for its changes */

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static ProcessUtility_hook_type prev_ProcessUtility = NULL;

void		_PG_init(void);

static void
webhook_shmem_request_hook(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	webhook_shmem_request();
}

static void
webhook_shmem_startup_hook(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	webhook_shmem_startup();
}

/*
 * The database that a utility statement needs free of other sessions, if
 * any: DROP DATABASE, ALTER DATABASE ... RENAME / SET TABLESPACE, and the
 * template of CREATE DATABASE all refuse to run while our worker is
 * connected, so the worker is paused around them.
 */
static const char *
database_needing_exclusive_use(Node *stmt)
{
	ListCell   *lc;

	switch (nodeTag(stmt))
	{
		case T_DropdbStmt:
			return ((DropdbStmt *) stmt)->dbname;
		case T_RenameStmt:
			if (((RenameStmt *) stmt)->renameType == OBJECT_DATABASE)
				return ((RenameStmt *) stmt)->subname;
			return NULL;
		case T_AlterDatabaseStmt:
			foreach(lc, ((AlterDatabaseStmt *) stmt)->options)
			{
				DefElem    *opt = lfirst_node(DefElem, lc);

				if (strcmp(opt->defname, "tablespace") == 0)
					return ((AlterDatabaseStmt *) stmt)->dbname;
			}
			return NULL;
		case T_CreatedbStmt:
			foreach(lc, ((CreatedbStmt *) stmt)->options)
			{
				DefElem    *opt = lfirst_node(DefElem, lc);

				if (strcmp(opt->defname, "template") == 0 && opt->arg != NULL)
					return defGetString(opt);
			}
			return "template1";
		default:
			return NULL;
	}
}

/*
 * Whether a statement that needs the database free of other sessions will
 * really run: pausing the worker for one that fails its own checks would
 * let any role stop deliveries (and re-send what was on the wire) at will.
 * These are the checks the statement itself makes first, in its order:
 * outside a transaction block where it must be, not on the current
 * database, with the ownership or privilege it needs.
 */
static bool
exclusive_use_will_run(Node *stmt, Oid dboid, bool is_top_level)
{
	bool		needs_top_level = !IsA(stmt, RenameStmt);

	if (needs_top_level && (!is_top_level || IsTransactionBlock()))
		return false;
	if (dboid == MyDatabaseId)
		return false;
	switch (nodeTag(stmt))
	{
		case T_DropdbStmt:
		case T_AlterDatabaseStmt:
			return pg_database_ownercheck(dboid, GetUserId());
		case T_RenameStmt:
			return pg_database_ownercheck(dboid, GetUserId()) && have_createdb_privilege();
		case T_CreatedbStmt:
			{
				HeapTuple	tuple;
				bool		is_template;

				if (!have_createdb_privilege())
					return false;
				tuple = SearchSysCache1(DATABASEOID, ObjectIdGetDatum(dboid));
				if (!HeapTupleIsValid(tuple))
					return false;
				is_template = ((Form_pg_database) GETSTRUCT(tuple))->datistemplate;
				ReleaseSysCache(tuple);
				return is_template || pg_database_ownercheck(dboid, GetUserId());
			}
		default:
			return false;
	}
}

static bool
is_drop_of_our_extension(Node *stmt)
{
	DropStmt   *drop;
	ListCell   *lc;

	if (!IsA(stmt, DropStmt))
		return false;
	drop = (DropStmt *) stmt;
	if (drop->removeType != OBJECT_EXTENSION)
		return false;
	foreach(lc, drop->objects)
	{
		Node	   *name = lfirst(lc);

		if (IsA(name, String) && strcmp(strVal(name), WEBHOOK_EXTENSION_NAME) == 0)
			return true;
	}
	return false;
}

/* A header value: no line breaks or other control characters to inject with. */
static bool
check_user_agent(char **newval, void **extra, GucSource source)
{
	if (strlen(*newval) > 256)
	{
		GUC_check_errdetail("The User-Agent is at most 256 characters.");
		return false;
	}
	for (const char *c = *newval; *c; c++)
		if ((unsigned char) *c < 0x20 || *c == 0x7f)
		{
			GUC_check_errdetail("The User-Agent must not contain control characters.");
			return false;
		}
	return true;
}

/* Empty, or an http:// or https:// proxy URL without control characters or spaces. */
static bool
check_proxy(char **newval, void **extra, GucSource source)
{
	if (**newval == '\0')
		return true;
	if (pg_strncasecmp(*newval, "http://", 7) != 0 && pg_strncasecmp(*newval, "https://", 8) != 0)
	{
		GUC_check_errdetail("A proxy is an http:// or https:// URL, e.g. http://proxy.example.com:3128.");
		return false;
	}
	for (const char *c = *newval; *c; c++)
		if ((unsigned char) *c <= 0x20 || *c == 0x7f)
		{
			GUC_check_errdetail("The proxy URL must not contain spaces or control characters.");
			return false;
		}
	return true;
}

static bool
check_origin(char **newval, void **extra, GucSource source)
{
	/* printable ASCII: the value is stored whatever the database's encoding */
	for (const char *c = *newval; *c; c++)
		if ((unsigned char) *c < 0x20 || (unsigned char) *c > 0x7e)
		{
			GUC_check_errdetail("An origin is made of printable ASCII characters.");
			GUC_check_errhint("Name the application that makes the changes, e.g. 'crm-sync'.");
			return false;
		}
	if (strlen(*newval) > 64)
	{
		GUC_check_errdetail("An origin is at most 64 characters.");
		GUC_check_errhint("Name the application that makes the changes, e.g. 'crm-sync'.");
		return false;
	}
	return true;
}

/*
 * The locks DROP EXTENSION webhook needs, taken before it drops anything:
 * the extension's, which the worker takes first in each of its steps (so
 * that its next step waits, holding nothing), then those of the tables
 * with capture triggers and of the extension's own tables, all or none.
 * Writers take their ticket table's lock and then the queue's, a reader
 * of the views may write tickets after, in any order: a drop that took the
 * locks one by one, in its own order, would deadlock with them.  So it
 * waits only for the one lock it could not get, holding none of the
 * others, then tries them all again.
 */
static void
lock_tables_for_drop(Oid extoid)
{
	List	   *tables = NIL;
	Oid			waited = InvalidOid;
	ListCell   *lc;

	LockDatabaseObject(ExtensionRelationId, extoid, 0, AccessExclusiveLock);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute("SELECT DISTINCT t.tgrelid FROM pg_catalog.pg_trigger t"
					" WHERE t.tgfoid = pg_catalog.to_regprocedure('webhook._capture()')"
					" UNION "
					"SELECT c.oid FROM pg_catalog.pg_class c"
					" WHERE c.relnamespace = pg_catalog.to_regnamespace('webhook') AND c.relkind = 'r'"
					" ORDER BY 1", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not list the tables of the webhook extension");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);

		tables = lappend_oid(tables, DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i],
																	SPI_tuptable->tupdesc, 1, &isnull)));
		MemoryContextSwitchTo(old);
	}
	SPI_finish();

	for (;;)
	{
		Oid			blocked = InvalidOid;
		List	   *taken = NIL;

		if (OidIsValid(waited))
		{
			LockRelationOid(waited, AccessExclusiveLock);
			taken = lappend_oid(taken, waited);
		}
		foreach(lc, tables)
		{
			Oid			relid = lfirst_oid(lc);

			if (relid == waited)
				continue;
			if (!ConditionalLockRelationOid(relid, AccessExclusiveLock))
			{
				blocked = relid;
				break;
			}
			taken = lappend_oid(taken, relid);
		}
		if (!OidIsValid(blocked))
			return;
		foreach(lc, taken)
			UnlockRelationOid(lfirst_oid(lc), AccessExclusiveLock);
		list_free(taken);
		waited = blocked;
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * The capture triggers on users' tables depend on webhook._capture(), so
 * they would make DROP EXTENSION fail, and the functions that hold users'
 * condition SQL are not members of the extension; both belong to it in
 * spirit, so they go first, in the same transaction.
 */
static void
drop_capture_triggers(void)
{
	int			rc;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rc = SPI_execute("DO $$"
					 "DECLARE t record;"
					 "BEGIN"
					 "  IF pg_catalog.to_regprocedure('webhook._capture()') IS NULL THEN RETURN; END IF;"
					 "  FOR t IN SELECT tgrelid::pg_catalog.regclass AS tbl, tgname FROM pg_catalog.pg_trigger"
					 "            WHERE tgfoid = 'webhook._capture()'::pg_catalog.regprocedure LOOP"
					 "    EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', t.tgname, t.tbl);"
					 "  END LOOP;"
					 "  FOR t IN SELECT oid::pg_catalog.regprocedure AS fn FROM pg_catalog.pg_proc"
					 "            WHERE pronamespace = 'webhook'::pg_catalog.regnamespace"
					 "              AND proname ~ '^_condition_[eb][0-9]+$' LOOP"
					 "    EXECUTE 'DROP FUNCTION ' || t.fn;"
					 "  END LOOP;"
					 "END $$", false, 0);
	if (rc < 0)
		elog(ERROR, "could not drop the webhook capture triggers: %s", SPI_result_code_string(rc));
	SPI_finish();
}

/*
 * A TRUNCATE or LOCK TABLE of the extension's tables that the user may run.
 * It locks them in the order written; a step of the worker locks them in
 * its statements' order: two tables locked in turn by each would deadlock.
 */
static bool
locks_our_tables(Node *stmt)
{
	List	   *relations;
	Oid			schema;
	ListCell   *lc;

	if (IsA(stmt, TruncateStmt))
		relations = ((TruncateStmt *) stmt)->relations;
	else if (IsA(stmt, LockStmt) && ((LockStmt *) stmt)->mode > RowExclusiveLock)
		relations = ((LockStmt *) stmt)->relations;
	else
		return false;
	schema = get_namespace_oid(WEBHOOK_SCHEMA_NAME, true);
	if (!OidIsValid(schema))
		return false;
	foreach(lc, relations)
	{
		Oid			relid = RangeVarGetRelid(lfirst_node(RangeVar, lc), NoLock, true);

		if (OidIsValid(relid) && get_rel_namespace(relid) == schema &&
			pg_class_aclcheck(relid, GetUserId(), ACL_TRUNCATE | ACL_UPDATE | ACL_DELETE) == ACLCHECK_OK)
			return true;
	}
	return false;
}

static void
webhook_ProcessUtility(PlannedStmt *pstmt, const char *queryString,
					   bool readOnlyTree, ProcessUtilityContext context,
					   ParamListInfo params, QueryEnvironment *queryEnv,
					   DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *stmt = pstmt->utilityStmt;
	const char *dbname = database_needing_exclusive_use(stmt);
	Oid			paused = InvalidOid;

	if (dbname != NULL)
	{
		Oid			dboid = get_database_oid(dbname, true);

		if (OidIsValid(dboid) &&
			exclusive_use_will_run(stmt, dboid, context == PROCESS_UTILITY_TOPLEVEL) &&
			webhook_pause_worker(dboid))
			paused = dboid;
	}

	if (is_drop_of_our_extension(stmt))
	{
		Oid			extoid = get_extension_oid(WEBHOOK_EXTENSION_NAME, true);

		/* one that may not drop it fails in the drop, having locked nothing */
		if (OidIsValid(extoid) && pg_extension_ownercheck(extoid, GetUserId()))
		{
			lock_tables_for_drop(extoid);
			drop_capture_triggers();
		}
	}

	/*
	 * An update, or a TRUNCATE of the queue, takes the extension's lock
	 * first, as a drop does: the worker's step that holds it ends (it waits
	 * for nothing of ours) and the next waits for the statement holding
	 * nothing, so that its table locks never wait for a step that waits for
	 * them.
	 */
	if (IsA(stmt, AlterExtensionStmt) &&
		strcmp(((AlterExtensionStmt *) stmt)->extname, WEBHOOK_EXTENSION_NAME) == 0)
	{
		Oid			extoid = get_extension_oid(WEBHOOK_EXTENSION_NAME, true);

		if (OidIsValid(extoid) && pg_extension_ownercheck(extoid, GetUserId()))
			LockDatabaseObject(ExtensionRelationId, extoid, 0, AccessExclusiveLock);
	}
	else if (locks_our_tables(stmt))
	{
		Oid			extoid = get_extension_oid(WEBHOOK_EXTENSION_NAME, true);

		if (OidIsValid(extoid))
			LockDatabaseObject(ExtensionRelationId, extoid, 0, AccessExclusiveLock);
	}

	PG_TRY();
	{
		if (prev_ProcessUtility)
			prev_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);
		else
			standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
									params, queryEnv, dest, qc);
	}
	PG_CATCH();
	{
		if (OidIsValid(paused))
			webhook_unpause_worker(paused, false);
		PG_RE_THROW();
	}
	PG_END_TRY();

	if (OidIsValid(paused))
		webhook_unpause_worker(paused, IsA(stmt, DropdbStmt));

	if (IsA(stmt, CreatedbStmt))
	{
		/* a database copied from a template may already have the extension */
		Oid			newdb = get_database_oid(((CreatedbStmt *) stmt)->dbname, true);

		if (OidIsValid(newdb))
			webhook_start_on_commit(newdb);
	}
	else if (is_drop_of_our_extension(stmt))
		webhook_wake_on_commit();
	else if (IsA(stmt, TransactionStmt) &&
			 ((TransactionStmt *) stmt)->kind == TRANS_STMT_COMMIT_PREPARED)
		webhook_wake_worker(MyDatabaseId, WORK_CHANGES | WORK_OTHER);
}

static void
define_gucs(void)
{
	DefineCustomIntVariable("webhook.request_timeout",
							"Sets how long one HTTP request may take, connection included.",
							"A request still running after this is recorded as a timeout and retried. "
							"A profile's timeout overrides it.",
							&webhook_request_timeout,
							30000, 100, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("webhook.connect_timeout",
							"Sets how long connecting to a receiver may take.",
							NULL,
							&webhook_connect_timeout,
							5000, 100, 600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("webhook.max_response_size",
							"Sets how much of a response body is read and kept.",
							"Reading stops at this size; the rest of the body is discarded.",
							&webhook_max_response_size,
							65536, 0, 64 * 1024 * 1024,
							PGC_SIGHUP, GUC_UNIT_BYTE,
							NULL, NULL, NULL);
	DefineCustomIntVariable("webhook.retention",
							"Sets how long finished deliveries and their attempts are kept.",
							"The worker deletes older ones in small steps.",
							&webhook_retention,
							30 * 24 * 3600, 60, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);
	DefineCustomIntVariable("webhook.max_concurrency",
							"Sets how many HTTP requests one worker keeps in flight.",
							NULL,
							&webhook_max_concurrency,
							64, 1, 10000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("webhook.max_workers",
							"Sets how many databases' workers run at once.",
							"A database's worker runs while it has work; others wait their turn. "
							"Each takes a background worker slot; the launcher and the sender one each.",
							&webhook_max_workers,
							4, 1, WEBHOOK_MAX_DATABASES,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("webhook.worker_idle_timeout",
							"Sets how long a database's worker stays without work.",
							"It is started again when work comes or comes due.",
							&webhook_worker_idle_timeout,
							60, 1, 24 * 3600,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);
	DefineCustomIntVariable("webhook.max_per_profile",
							"Sets how many HTTP requests of one profile are in flight at most.",
							"Keeps one slow receiver from taking every slot of webhook.max_concurrency.",
							&webhook_max_per_profile,
							32, 1, 10000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("webhook.disable_after_failures",
							"Sets after how many failed deliveries in a row a profile is disabled.",
							"A delivery has failed when its attempts ran out. 0 never disables.",
							&webhook_disable_after_failures,
							100, 0, INT_MAX,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomStringVariable("webhook.blocked_networks",
							   "Sets the address ranges the worker never connects to.",
							   "A comma-separated list of CIDR ranges, checked on the address a host name "
							   "resolves to. The default blocks link-local addresses, where cloud metadata "
							   "services answer, and the unspecified addresses, which reach this host.",
							   &webhook_blocked_networks,
							   "169.254.0.0/16, fe80::/10, 0.0.0.0/8, ::/128",
							   PGC_SIGHUP, GUC_LIST_INPUT,
							   (GucStringCheckHook) webhook_check_blocked_networks,
							   webhook_assign_blocked_networks, NULL);
	DefineCustomBoolVariable("webhook.sending",
							 "Sets whether the worker sends.",
							 "Off, changes are still captured and queued, and nothing is sent: for a "
							 "restored copy or a clone that must not reach the receivers. Also per "
							 "database (ALTER DATABASE ... SET); the worker reads it on reload.",
							 &webhook_sending,
							 true,
							 PGC_SUSET, 0,
							 NULL, NULL, NULL);
	DefineCustomStringVariable("webhook.user_agent",
							   "Sets the User-Agent header of every request.",
							   NULL,
							   &webhook_user_agent,
							   "webhook/" WEBHOOK_VERSION,
							   PGC_SIGHUP, 0,
							   check_user_agent, NULL, NULL);
	DefineCustomStringVariable("webhook.proxy",
							   "Sets an HTTP proxy that every request goes through.",
							   "Empty (the default): requests go to their receivers directly; a proxy "
							   "of the environment is never used. Through a proxy, webhook.blocked_networks "
							   "is checked on a URL whose host is an address; host names are resolved by "
							   "the proxy, which must block what it should not reach.",
							   &webhook_proxy,
							   "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY,
							   check_proxy, NULL, NULL);
	DefineCustomStringVariable("webhook.origin",
							   "Tags the changes this session makes with where they come from.",
							   "A profile whose ignore_origins lists the tag does not send them: "
							   "a receiver that writes back sets it so as not to hear its own changes. "
							   "Empty: no tag.",
							   &webhook_origin,
							   "",
							   PGC_USERSET, 0,
							   check_origin, NULL, NULL);
	MarkGUCPrefixReserved("webhook");
}

void
_PG_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("webhook must be loaded via shared_preload_libraries"),
				 errhint("Add webhook to shared_preload_libraries in postgresql.conf and restart the server.")));

	define_gucs();

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = webhook_shmem_request_hook;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = webhook_shmem_startup_hook;
	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = webhook_ProcessUtility;

	webhook_capture_init();
	webhook_register_launcher();
}

/*
 * The start of each turn of a background process's loop: act on a
 * termination request, and reload the configuration when asked (SIGHUP).
 * Returns true when it was reloaded.
 */
bool
webhook_handle_interrupts(void)
{
	CHECK_FOR_INTERRUPTS();
	if (!ConfigReloadPending)
		return false;
	ConfigReloadPending = false;
	ProcessConfigFile(PGC_SIGHUP);
	return true;
}

long
webhook_stop_grace_ms(void)
{
	return Min(webhook_request_timeout, WEBHOOK_STOP_GRACE_MS);
}

/*
 * Run fn(arg) in a subtransaction of its own: NULL when it succeeded, else
 * its error, copied into the caller's memory context, with everything the
 * subtransaction did rolled back.  For work on data a user wrote, which
 * must cost one change or one row, never the whole transaction.
 */
ErrorData *
webhook_in_subtransaction(void (*fn) (void *arg), void *arg)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	ErrorData  *volatile error = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		fn(arg);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		error = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return error;
}
