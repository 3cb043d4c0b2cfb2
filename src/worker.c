/*
 * worker.c
 *		The per-database worker: claims due deliveries, sends them, records
 *		what happened.
 *
 * The loop sleeps on one WaitEventSet holding its latch (set by commits
 * that queued work, see capture.c) and libcurl's sockets (one epoll
 * descriptor, see http.c), with a timeout for the earliest of: libcurl's
 * timer, the next retry due, and housekeeping.  It never holds a
 * transaction while requests are on the wire.
 */
#include "webhook.h"
#include "dispatch.h"
#include "http.h"
#include "queue.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

/* Housekeeping (retention) runs this often. */
#define HOUSEKEEPING_MS 60000

/*
 * Finished requests are recorded in groups of this many, or when nothing
 * else is on the wire, or after this long.
 */
#define RECORD_BATCH 128
#define RECORD_DELAY_MS 20

static WebhookDbSlot *my_slot = NULL;

/* Set before a deliberate exit: the launcher must not restart us. */
static bool exit_on_purpose = false;

static void
worker_detach(int code, Datum arg)
{
	if (my_slot == NULL)
		return;
	LWLockAcquire(webhook_shared->lock, LW_EXCLUSIVE);
	if (my_slot->pid == MyProcPid)
	{
		my_slot->pid = 0;
		my_slot->latch = NULL;
		if (my_slot->state == SLOT_RUNNING)
		{
			if (exit_on_purpose)
				my_slot->state = SLOT_DONE;
			else
			{
				/* an error ended us: the launcher restarts after a pause */
				my_slot->state = SLOT_REQUESTED;
				my_slot->restart_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 5000);
			}
		}
	}
	LWLockRelease(webhook_shared->lock);
	if (webhook_shared->launcher_latch)
		SetLatch(webhook_shared->launcher_latch);
}

/* Take this database's slot, or return false when we are not wanted. */
static bool
worker_attach(Oid dboid)
{
	WebhookDbSlot *slot;
	bool		ok = false;

	LWLockAcquire(webhook_shared->lock, LW_EXCLUSIVE);
	slot = webhook_slot_find(dboid);
	if (slot != NULL && !slot->stop_requested &&
		(slot->state == SLOT_STARTING || slot->state == SLOT_REQUESTED))
	{
		slot->state = SLOT_RUNNING;
		slot->pid = MyProcPid;
		slot->latch = MyLatch;
		my_slot = slot;
		ok = true;
	}
	LWLockRelease(webhook_shared->lock);
	if (ok)
		on_shmem_exit(worker_detach, 0);
	return ok;
}

static bool
stop_requested(void)
{
	bool		stop;

	LWLockAcquire(webhook_shared->lock, LW_SHARED);
	stop = my_slot->stop_requested;
	LWLockRelease(webhook_shared->lock);
	return stop;
}

static char *my_database_name = NULL;

static void
leave(int elevel, const char *why)
{
	ereport(elevel, (errmsg("webhook worker for database \"%s\" is stopping: %s",
							my_database_name, why)));
	exit_on_purpose = true;
	webhook_http_shutdown();
	proc_exit(0);
}

static long
ms_until(TimestampTz when, TimestampTz now)
{
	if (when <= now)
		return 0;
	return (long) ((when - now + 999) / 1000);
}

void
webhook_worker_main(Datum main_arg)
{
	Oid			dboid = DatumGetObjectId(main_arg);
	WaitEventSet *wait_set;
	MemoryContext loop_cxt;
	bool		work_pending = true;	/* look at the queue on the next turn */
	TimestampTz next_due = 0;
	TimestampTz next_housekeeping = 0;
	List	   *finished = NIL;	/* back from the wire, not yet recorded */
	TimestampTz first_finished_at = 0;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	if (!worker_attach(dboid))
		proc_exit(0);

	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	pgstat_report_appname("webhook worker");
	/* the worker's statements never resolve names through user schemas */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);
	StartTransactionCommand();
	my_database_name = MemoryContextStrdup(TopMemoryContext,
										   get_database_name(MyDatabaseId));
	CommitTransactionCommand();

	if (RecoveryInProgress())
		leave(LOG, "the server is in recovery");
	if (!webhook_queue_recover())
		leave(DEBUG1, "the extension is not installed in this database");

	webhook_http_init();
	wait_set = CreateWaitEventSet(TopMemoryContext, 3);
	AddWaitEventToSet(wait_set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(wait_set, WL_SOCKET_READABLE, webhook_http_socket(), NULL, NULL);

	loop_cxt = AllocSetContextCreate(TopMemoryContext, "webhook worker loop",
									 ALLOCSET_DEFAULT_SIZES);
	for (;;)
	{
		WaitEvent	events[3];
		int			nevents;
		long		timeout;
		TimestampTz now;
		WebhookRequest *req;
		int			claim_room;
		bool		claim_now;
		bool		record_now;

		MemoryContextSwitchTo(loop_cxt);
		MemoryContextReset(loop_cxt);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			/* a shorter webhook.retention applies now, not in a minute */
			next_housekeeping = 0;
		}
		if (stop_requested())
			leave(LOG, "its database needs to be free of other sessions");

		/* what came back from the wire waits to be recorded */
		webhook_http_perform();
		now = GetCurrentTimestamp();
		while ((req = webhook_http_next_done()) != NULL)
		{
			MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

			webhook_dispatch_finished(req);
			if (finished == NIL)
				first_finished_at = now;
			finished = lappend(finished, req);
			MemoryContextSwitchTo(old);
		}

		if (next_due != 0 && next_due <= now)
			work_pending = true;

		/*
		 * Claim when something may be due, we hold less than our share, and
		 * fewer requests wait than there are slots.  Record in groups: when
		 * many finished, when nothing else is on the wire, or when the first
		 * of them has waited RECORD_DELAY_MS.
		 */
		claim_room = PREFETCH_FACTOR * webhook_max_concurrency - webhook_dispatch_claimed_count();
		claim_now = work_pending && claim_room > 0 &&
			webhook_dispatch_ready_count() < webhook_max_concurrency;
		record_now = finished != NIL &&
			(list_length(finished) >= RECORD_BATCH || webhook_http_in_flight() == 0 ||
			 now >= TimestampTzPlusMilliseconds(first_finished_at, RECORD_DELAY_MS));

		if (claim_now || record_now)
		{
			WebhookStep step;
			ListCell   *lc;

			/*
			 * What this step records is no longer ours: the claim in the same
			 * step may take its place.  (Should the step fail, the worker
			 * exits, and its successor starts from the database.)
			 */
			foreach(lc, finished)
				webhook_dispatch_forget(lfirst(lc));
			claim_room = PREFETCH_FACTOR * webhook_max_concurrency - webhook_dispatch_claimed_count();
			step.finished = finished;
			step.claim_limit = claim_now ? claim_room : 0;
			webhook_queue_step(&step);
			if (!step.extension_present)
				leave(LOG, "the extension was dropped");

			foreach(lc, finished)
				webhook_request_free(lfirst(lc));
			list_free(finished);
			finished = NIL;
			foreach(lc, step.given_back)
			{
				webhook_dispatch_forget(lfirst(lc));
				webhook_request_free(lfirst(lc));
			}
			foreach(lc, step.claimed)
				webhook_dispatch_add(lfirst(lc));

			if (claim_now)
				/* a full claim or a cut-short expansion means more is waiting */
				work_pending = step.more_occurrences ||
					list_length(step.claimed) >= step.claim_limit;
			if (record_now)
				/* room was made: what waited for it can be claimed */
				work_pending = true;
			next_due = step.next_due;

			/*
			 * Due but not claimed: its profile has its share claimed.  A
			 * record, not the clock, makes room for it.
			 */
			if (next_due != 0 && next_due <= GetCurrentTimestamp())
				next_due = 0;
		}

		webhook_dispatch_start();

		now = GetCurrentTimestamp();
		if (now >= next_housekeeping)
		{
			if (webhook_queue_purge())
				next_housekeeping = TimestampTzPlusMilliseconds(now, 100);
			else
				next_housekeeping = TimestampTzPlusMilliseconds(now, HOUSEKEEPING_MS);
		}

		/* sleep until a socket, the latch, or the earliest timer */
		timeout = ms_until(next_housekeeping, now);
		if (webhook_http_timeout_ms() >= 0)
			timeout = Min(timeout, webhook_http_timeout_ms());
		if (next_due != 0)
			timeout = Min(timeout, ms_until(next_due, now));
		if (finished != NIL)
			timeout = Min(timeout, ms_until(TimestampTzPlusMilliseconds(first_finished_at,
																		RECORD_DELAY_MS), now));
		if (work_pending &&
			PREFETCH_FACTOR * webhook_max_concurrency > webhook_dispatch_claimed_count() &&
			webhook_dispatch_ready_count() < webhook_max_concurrency)
			timeout = 0;

		nevents = WaitEventSetWait(wait_set, timeout, events, lengthof(events),
								   PG_WAIT_EXTENSION);
		for (int i = 0; i < nevents; i++)
		{
			if (events[i].events & WL_LATCH_SET)
			{
				ResetLatch(MyLatch);
				work_pending = true;
			}
		}
	}
}
