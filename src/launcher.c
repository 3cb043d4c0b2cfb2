/*
 * launcher.c
 *		The launcher: one background worker, started with the server, that
 *		starts one worker for every database that has the extension.
 *
 * It needs no database name.  At start it asks for a worker in every
 * database that accepts connections; a worker that finds no extension ends
 * at once.  Afterwards it starts what backends request (CREATE EXTENSION,
 * CREATE DATABASE) and restarts workers that died, with a back-off.  It
 * runs only on a primary: on a standby it starts after promotion.
 */
#include "webhook.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

/* Wait before restarting a worker that ended with an error. */
#define RESTART_DELAY_MS 5000

/* Wait before retrying when no background worker slot was free. */
#define NO_SLOT_RETRY_MS 10000

/* Handles of the workers this launcher registered, by slot index. */
static BackgroundWorkerHandle **handles = NULL;

void
webhook_register_launcher(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "webhook");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "webhook_launcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "webhook launcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "webhook launcher");
	RegisterBackgroundWorker(&worker);
}

static void
launcher_detach(int code, Datum arg)
{
	LWLockAcquire(webhook_shared->lock, LW_EXCLUSIVE);
	if (webhook_shared->launcher_pid == MyProcPid)
	{
		webhook_shared->launcher_pid = 0;
		webhook_shared->launcher_latch = NULL;
	}
	LWLockRelease(webhook_shared->lock);
}

/* Every database that accepts connections and is not a template. */
static List *
connectable_databases(void)
{
	List	   *dbs = NIL;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	MemoryContext outer = CurrentMemoryContext;

	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while (HeapTupleIsValid(tup = heap_getnext(scan, ForwardScanDirection)))
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);
		MemoryContext old;

		if (!db->datallowconn || db->datistemplate)
			continue;
		old = MemoryContextSwitchTo(outer);
		dbs = lappend_oid(dbs, db->oid);
		MemoryContextSwitchTo(old);
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	return dbs;
}

static bool
database_exists(Oid dboid)
{
	bool		exists;

	StartTransactionCommand();
	exists = SearchSysCacheExists1(DATABASEOID, ObjectIdGetDatum(dboid));
	CommitTransactionCommand();
	return exists;
}

static bool
start_worker(int index, Oid dboid)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;	/* the launcher restarts it */
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "webhook");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "webhook_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "webhook worker");
	snprintf(worker.bgw_type, BGW_MAXLEN, "webhook worker");
	worker.bgw_main_arg = ObjectIdGetDatum(dboid);
	worker.bgw_notify_pid = MyProcPid;

	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
		return false;
	if (handles[index])
		pfree(handles[index]);
	handles[index] = handle;
	return true;
}

/*
 * One pass over the slots: start what is requested and due, notice workers
 * that never attached.  Returns how long to sleep, or -1 for "until woken".
 */
static long
launcher_pass(void)
{
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz next = 0;
	long		sleep_ms;

	for (int i = 0; i < webhook_shared->nslots; i++)
	{
		WebhookDbSlot *slot = &webhook_shared->slots[i];
		WebhookSlotState state;
		Oid			dboid;
		TimestampTz restart_at;

		LWLockAcquire(webhook_shared->lock, LW_SHARED);
		state = slot->state;
		dboid = slot->dboid;
		restart_at = slot->restart_at;
		LWLockRelease(webhook_shared->lock);

		if (state == SLOT_STARTING && handles[i] != NULL)
		{
			pid_t		pid;

			if (GetBackgroundWorkerPid(handles[i], &pid) == BGWH_STOPPED)
			{
				/* it ended before attaching: try again later */
				LWLockAcquire(webhook_shared->lock, LW_EXCLUSIVE);
				if (slot->state == SLOT_STARTING && slot->dboid == dboid)
				{
					slot->state = SLOT_REQUESTED;
					slot->restart_at = TimestampTzPlusMilliseconds(now, RESTART_DELAY_MS);
				}
				LWLockRelease(webhook_shared->lock);
				state = SLOT_REQUESTED;
				restart_at = TimestampTzPlusMilliseconds(now, RESTART_DELAY_MS);
			}
		}

		if (state != SLOT_REQUESTED)
			continue;
		if (restart_at > now)
		{
			if (next == 0 || restart_at < next)
				next = restart_at;
			continue;
		}
		if (!database_exists(dboid))
		{
			LWLockAcquire(webhook_shared->lock, LW_EXCLUSIVE);
			if (slot->state == SLOT_REQUESTED && slot->dboid == dboid)
				slot->state = SLOT_FREE;
			LWLockRelease(webhook_shared->lock);
			continue;
		}

		LWLockAcquire(webhook_shared->lock, LW_EXCLUSIVE);
		if (slot->state != SLOT_REQUESTED || slot->dboid != dboid)
		{
			LWLockRelease(webhook_shared->lock);
			continue;
		}
		slot->state = SLOT_STARTING;
		LWLockRelease(webhook_shared->lock);

		if (!start_worker(i, dboid))
		{
			ereport(WARNING,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("could not start a webhook worker for database %u: no background worker slot is free", dboid),
					 errhint("Increase max_worker_processes and restart the server.")));
			LWLockAcquire(webhook_shared->lock, LW_EXCLUSIVE);
			if (slot->state == SLOT_STARTING && slot->dboid == dboid)
			{
				slot->state = SLOT_REQUESTED;
				slot->restart_at = TimestampTzPlusMilliseconds(now, NO_SLOT_RETRY_MS);
			}
			LWLockRelease(webhook_shared->lock);
			next = (next == 0) ? TimestampTzPlusMilliseconds(now, NO_SLOT_RETRY_MS) : next;
		}
	}

	if (next == 0)
		return -1;
	sleep_ms = (long) ((next - now) / 1000);
	return Max(sleep_ms, 1);
}

void
webhook_launcher_main(Datum main_arg)
{
	List	   *dbs;
	ListCell   *lc;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	/* shared catalogs only: enough to list the databases */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("webhook launcher");

	handles = MemoryContextAllocZero(TopMemoryContext,
									 sizeof(BackgroundWorkerHandle *) * webhook_shared->nslots);

	LWLockAcquire(webhook_shared->lock, LW_EXCLUSIVE);
	webhook_shared->launcher_pid = MyProcPid;
	webhook_shared->launcher_latch = MyLatch;
	/* a previous launcher's handles are gone: starting slots start again */
	for (int i = 0; i < webhook_shared->nslots; i++)
		if (webhook_shared->slots[i].state == SLOT_STARTING)
			webhook_shared->slots[i].state = SLOT_REQUESTED;
	LWLockRelease(webhook_shared->lock);
	on_shmem_exit(launcher_detach, 0);

	dbs = connectable_databases();
	foreach(lc, dbs)
		webhook_request_worker(lfirst_oid(lc));
	list_free(dbs);

	for (;;)
	{
		long		sleep_ms;
		int			events = WL_LATCH_SET | WL_EXIT_ON_PM_DEATH;

		(void) webhook_handle_interrupts();

		sleep_ms = launcher_pass();
		if (sleep_ms >= 0)
			events |= WL_TIMEOUT;
		(void) WaitLatch(MyLatch, events, sleep_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
