/*
 * launcher.c
 *		The launcher: one background worker, started with the server, that
 *		starts the workers of the databases that have the extension.
 *
 * It needs no database name.  At start it asks for a worker in every
 * database that accepts connections; a worker that finds no extension ends
 * at once.  Afterwards it starts a database's worker when a backend asks
 * (CREATE EXTENSION, a commit in a database whose worker left for want of
 * work), when the database's next delivery comes due, and again after one
 * died, with a back-off.  At most webhook.max_workers run at once; those
 * waiting are served in turn, the one served longest ago first, and the
 * running ones leave their place when others wait (see worker.c).  It runs
 * only on a primary: on a standby it starts after promotion.
 */
#include "webhook.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
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

/*
 * Wait before retrying when no background worker slot was free (a worker
 * that leaves wakes the launcher sooner), and between warnings of it.
 */
#define NO_SLOT_RETRY_MS 1000
#define NO_SLOT_WARN_MS 60000

/* The sender is not started again sooner than this after its last start. */
#define SENDER_RESTART_DELAY_MS 1000

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

/*
 * Register a process of ours ("webhook worker", "webhook sender"), told
 * to this launcher when it ends; the launcher, not the postmaster,
 * restarts it.
 */
static bool
register_process(const char *type, const char *function, Datum arg,
				 BackgroundWorkerHandle **handle)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "webhook");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "%s", function);
	snprintf(worker.bgw_name, BGW_MAXLEN, "%s", type);
	snprintf(worker.bgw_type, BGW_MAXLEN, "%s", type);
	worker.bgw_main_arg = arg;
	worker.bgw_notify_pid = MyProcPid;
	return RegisterDynamicBackgroundWorker(&worker, handle);
}

static bool
start_worker(int index, Oid dboid)
{
	BackgroundWorkerHandle *handle;

	if (!register_process("webhook worker", "webhook_worker_main", ObjectIdGetDatum(dboid), &handle))
		return false;
	handles[index] = handle;
	return true;
}

/* A database's name for a message, or its OID when it has none. */
static char *
database_label(Oid dboid)
{
	MemoryContext outer = CurrentMemoryContext;
	char	   *name;

	StartTransactionCommand();
	name = get_database_name(dboid);
	if (name != NULL)
		name = MemoryContextStrdup(outer, name);
	CommitTransactionCommand();
	MemoryContextSwitchTo(outer);
	return name != NULL ? name : psprintf("%u", dboid);
}

/* When the last "no background worker slot" warning was given. */
static TimestampTz no_slot_warned_at = 0;

/*
 * Say, at most once a minute, that the sender (dboid invalid) or a
 * database's worker could not start.
 */
static void
warn_no_slot(TimestampTz now, Oid dboid, int running)
{
	char	   *what;

	if (no_slot_warned_at != 0 &&
		now < TimestampTzPlusMilliseconds(no_slot_warned_at, NO_SLOT_WARN_MS))
		return;
	what = OidIsValid(dboid) ?
		psprintf("a webhook worker for database \"%s\"", database_label(dboid)) :
		pstrdup("the webhook sender");
	ereport(WARNING,
			(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
			 errmsg("could not start %s: no background worker slot is free", what),
			 errdetail("%d webhook workers are running.", running),
			 errhint("Increase max_worker_processes, or lower webhook.max_workers.")));
	pfree(what);
	no_slot_warned_at = now;
}

/* Lower *next, the launcher's next wake-up (0: none), to when. */
static void
wake_by(TimestampTz *next, TimestampTz when)
{
	if (*next == 0 || when < *next)
		*next = when;
}

/* The sender, as this launcher started it. */
static BackgroundWorkerHandle *sender_handle = NULL;
static TimestampTz sender_started_at = 0;

/*
 * Start the sender when none runs: at start, and again after it ended
 * (not sooner than SENDER_RESTART_DELAY_MS after the last start, should it
 * fail at once).  When it must wait, *next says until when.
 */
static void
ensure_sender(TimestampTz now, TimestampTz *next, int running)
{
	pid_t		pid;
	pid_t		sender_pid;
	TimestampTz not_before;

	if (sender_handle != NULL && GetBackgroundWorkerPid(sender_handle, &pid) != BGWH_STOPPED)
		return;
	LWLockAcquire(webhook_shared->lock, LW_SHARED);
	sender_pid = webhook_shared->sender_pid;
	LWLockRelease(webhook_shared->lock);
	/* one that a launcher before this one started */
	if (sender_pid != 0)
		return;
	not_before = TimestampTzPlusMilliseconds(sender_started_at, SENDER_RESTART_DELAY_MS);
	if (sender_started_at != 0 && now < not_before)
	{
		wake_by(next, not_before);
		return;
	}

	if (sender_handle != NULL)
		pfree(sender_handle);
	sender_handle = NULL;
	sender_started_at = now;
	if (!register_process("webhook sender", "webhook_sender_main", (Datum) 0, &sender_handle))
	{
		sender_handle = NULL;
		warn_no_slot(now, InvalidOid, running);
		wake_by(next, TimestampTzPlusMilliseconds(now, NO_SLOT_RETRY_MS));
	}
}

/*
 * Whether the slot's database wants a worker now; if later, lower *next to
 * when.  Caller holds the lock.
 */
static bool
wants_worker(WebhookDbSlot *slot, TimestampTz now, TimestampTz *next)
{
	TimestampTz when;

	if (slot->state == SLOT_REQUESTED)
		when = slot->restart_at;
	else if (slot->state == SLOT_IDLE)
	{
		if (pg_atomic_read_u32(&slot->work_queued) != 0)
			return true;
		when = slot->wake_at;
		if (when == 0)
			return false;
	}
	else
		return false;
	if (when <= now)
		return true;
	wake_by(next, when);
	return false;
}

/*
 * Forget the workers that ended; a starting one that ended before it
 * attached is started again later.  alive[i]: slot i's last worker is
 * still a process, if one that has let go of its slot (it holds its
 * background worker slot until the postmaster has seen it end).
 */
static void
notice_ended_workers(TimestampTz now, bool *alive)
{
	for (int i = 0; i < webhook_shared->nslots; i++)
	{
		WebhookDbSlot *slot = &webhook_shared->slots[i];
		pid_t		pid;

		alive[i] = false;
		if (handles[i] == NULL)
			continue;
		if (GetBackgroundWorkerPid(handles[i], &pid) != BGWH_STOPPED)
		{
			alive[i] = true;
			continue;
		}
		pfree(handles[i]);
		handles[i] = NULL;
		LWLockAcquire(webhook_shared->lock, LW_EXCLUSIVE);
		if (slot->state == SLOT_STARTING)
		{
			slot->state = SLOT_REQUESTED;
			slot->restart_at = TimestampTzPlusMilliseconds(now, RESTART_DELAY_MS);
		}
		LWLockRelease(webhook_shared->lock);
	}
}

/*
 * One pass over the slots: start workers for the databases that want one,
 * those served longest ago first, while fewer than webhook.max_workers run;
 * tell the running ones how many wait.  Returns how long to sleep, or -1
 * for "until woken".
 */
static long
launcher_pass(void)
{
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz next = 0;
	int			running = 0;
	int			waiting = 0;
	bool		more_waiting;
	int			next_index;
	bool	   *alive = palloc(sizeof(bool) * webhook_shared->nslots);

	notice_ended_workers(now, alive);

	for (;;)
	{
		Oid			dboid = InvalidOid;
		WebhookDbSlot *slot = NULL;

		/* the one to start: wants a worker, served longest ago */
		LWLockAcquire(webhook_shared->lock, LW_SHARED);
		running = waiting = 0;
		next_index = -1;
		for (int i = 0; i < webhook_shared->nslots; i++)
		{
			WebhookDbSlot *s = &webhook_shared->slots[i];

			if (s->state == SLOT_STARTING || s->state == SLOT_RUNNING || alive[i])
				running++;
			else if (wants_worker(s, now, &next))
			{
				waiting++;
				if (next_index < 0 || s->served_at < webhook_shared->slots[next_index].served_at)
					next_index = i;
			}
		}
		if (next_index >= 0)
		{
			slot = &webhook_shared->slots[next_index];
			dboid = slot->dboid;
		}
		LWLockRelease(webhook_shared->lock);

		if (slot == NULL || running >= webhook_max_workers)
			break;

		if (!database_exists(dboid))
		{
			LWLockAcquire(webhook_shared->lock, LW_EXCLUSIVE);
			if (slot->dboid == dboid && (slot->state == SLOT_REQUESTED || slot->state == SLOT_IDLE))
				slot->state = SLOT_FREE;
			LWLockRelease(webhook_shared->lock);
			continue;
		}

		LWLockAcquire(webhook_shared->lock, LW_EXCLUSIVE);
		if (slot->dboid != dboid || !(slot->state == SLOT_REQUESTED || slot->state == SLOT_IDLE))
		{
			LWLockRelease(webhook_shared->lock);
			continue;
		}
		slot->state = SLOT_STARTING;
		slot->served_at = now;
		LWLockRelease(webhook_shared->lock);

		if (!start_worker(next_index, dboid))
		{
			/* every background worker slot is taken: when one frees up */
			warn_no_slot(now, dboid, running);
			LWLockAcquire(webhook_shared->lock, LW_EXCLUSIVE);
			if (slot->state == SLOT_STARTING && slot->dboid == dboid)
			{
				slot->state = SLOT_REQUESTED;
				slot->restart_at = TimestampTzPlusMilliseconds(now, NO_SLOT_RETRY_MS);
			}
			LWLockRelease(webhook_shared->lock);
			wake_by(&next, TimestampTzPlusMilliseconds(now, NO_SLOT_RETRY_MS));
			break;
		}
	}

	ensure_sender(now, &next, running);

	/* the running workers give way when others wait (see worker.c) */
	LWLockAcquire(webhook_shared->lock, LW_EXCLUSIVE);
	more_waiting = waiting > webhook_shared->databases_waiting;
	webhook_shared->databases_waiting = waiting;
	if (more_waiting)
		for (int i = 0; i < webhook_shared->nslots; i++)
			if (webhook_shared->slots[i].state == SLOT_RUNNING && webhook_shared->slots[i].latch)
				SetLatch(webhook_shared->slots[i].latch);
	LWLockRelease(webhook_shared->lock);

	pfree(alive);
	if (next == 0)
		return -1;
	return Max((long) ((next - now) / 1000), 1);
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
