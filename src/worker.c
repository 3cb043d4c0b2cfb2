/*
 * worker.c
 *		The per-database worker: claims due deliveries, hands them to its
 *		sender, records what happened.
 *
 * The worker does the database side; its sender (sender.c), a process it
 * starts, does the HTTP side, and the two talk through a channel of two
 * shared-memory queues (channel.c).  The loop sleeps on its latch, set by
 * commits that queued work (see capture.c) and by the sender when it
 * posts outcomes, with a timeout for the earliest of: the next retry or
 * batch due, a group of outcomes waiting to be recorded, and housekeeping.
 *
 * Asked to stop (SIGTERM: a fast shutdown, or pg_terminate_backend), it
 * claims nothing more, has the sender pass back what it has not started,
 * records what comes back, and leaves once nothing it claimed is out, or
 * at webhook_stop_grace_ms (and a second for the last record): what was
 * answered is recorded, and not sent again by the next worker.  A sender
 * that leaves first (stopped alone) has its last outcomes recorded too,
 * before the worker ends with an error and is started again.
 */
#include "webhook.h"

#include <malloc.h>
#include "channel.h"
#include "claims.h"
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
 * Outcomes are recorded in groups of this many, or after this long.  Small
 * groups keep the sender stocked (a claim rides on each record); waiting
 * keeps a trickle of deliveries from costing a transaction each.  A step
 * that runs for other work takes along those that have waited half as
 * long: recording one outcome costs nearly what recording ten does, so
 * a trickle of commits, each with its step, does not record at each.
 */
#define RECORD_BATCH 64
#define RECORD_DELAY_MS 20
#define RECORD_RIDE_MS (RECORD_DELAY_MS / 2)

/*
 * A due delivery the last claim could not take is looked at again after
 * this; and a step looks for the next due time at least this often.
 */
#define DUE_RECHECK_MS 1000

/* A step that gave way to a lock is tried again after this. */
#define STEP_RETRY_MS 100

/* Stopping: the time left, after the requests, to record their outcomes. */
#define LAST_RECORD_MS 1000

bool		webhook_in_worker = false;

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
	proc_exit(0);
}

/* Start this worker's sender, connected through a new channel. */
static WebhookChannel *
start_sender(void)
{
	WebhookChannel *channel = webhook_channel_create();
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS;
	worker.bgw_start_time = BgWorkerStart_ConsistentState;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "webhook");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "webhook_sender_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "webhook sender for database %s", my_database_name);
	snprintf(worker.bgw_type, BGW_MAXLEN, "webhook sender");
	worker.bgw_main_arg = UInt32GetDatum(webhook_channel_handle(channel));
	worker.bgw_notify_pid = MyProcPid;
	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("could not start the webhook sender for database \"%s\"",
						my_database_name),
				 errhint("Each database with the extension needs two background worker slots; "
						 "raise max_worker_processes.")));
	webhook_channel_set_handle(channel, handle);
	return channel;
}

/*
 * The worker's own session settings, whatever the server, database or role
 * defaults say (ALTER DATABASE ... SET default_transaction_read_only = on, or
 * a tiny lock_timeout for every session, would otherwise stop it or make it
 * fail in a loop).
 */
static const char *const worker_settings[][2] = {
	/* its statements never resolve names through user schemas */
	{"search_path", "pg_catalog, pg_temp"},
	/* rows it reads for payloads come out as the capture writes them */
	{"TimeZone", "UTC"},
	{"bytea_output", "hex"},
	{"IntervalStyle", "postgres"},
	{"DateStyle", "ISO, MDY"},
	{"extra_float_digits", "1"},
	/* it writes, in short transactions of its own, and waits for locks */
	{"default_transaction_read_only", "off"},
	{"default_transaction_isolation", "read committed"},
	{"default_transaction_deferrable", "off"},
	{"session_replication_role", "origin"},
	{"statement_timeout", "0"},

	/*
	 * a wait for a lock longer than this is given up and the step tried
	 * again (see give_way_to_locks): so the worker sees a request to stop
	 * within that time, whatever holds the lock (a prepared transaction)
	 */
	{"lock_timeout", CppAsString2(WEBHOOK_STOP_GRACE_MS)},

	/*
	 * but should a wait of its close a circle with users' sessions, it is
	 * the one to find out, long before theirs look (deadlock_timeout, 1 s
	 * by default), and it gives way: see give_way_to_locks
	 */
	{"deadlock_timeout", "10ms"},
	{"idle_in_transaction_session_timeout", "0"},
	{"transform_null_equals", "off"},
	{"standard_conforming_strings", "on"},
	{"row_security", "on"},

	/*
	 * Its queries take a few rows off the head of an index.  The queue
	 * tables churn: between two vacuums they are mostly dead rows, and their
	 * statistics say little, so a plan that scans the table would read them
	 * all, every step; and a bitmap scan would read every due row to sort
	 * them, where the index gives them in order.
	 */
	{"enable_seqscan", "off"},
	{"enable_indexscan", "on"},
	{"enable_bitmapscan", "off"},
	/* and none is worth compiling (the line above inflates costs, too) */
	{"jit", "off"},
};

/*
 * Run one transaction of the worker, fn(arg).  One that deadlocks with
 * users' sessions, or cannot get a lock it does not wait for, is rolled
 * back whole, and false says to try it again a moment later: the worker
 * gives way, so that no user's statement fails.  Any other error ends the
 * worker (its successor starts from the database).
 */
static bool
give_way_to_locks(void (*fn) (void *arg), void *arg, MemoryContext cxt)
{
	volatile bool done = false;

	PG_TRY();
	{
		fn(arg);
		done = true;
	}
	PG_CATCH();
	{
		ErrorData  *error;

		MemoryContextSwitchTo(cxt);
		error = CopyErrorData();
		if (error->sqlerrcode != ERRCODE_T_R_DEADLOCK_DETECTED &&
			error->sqlerrcode != ERRCODE_LOCK_NOT_AVAILABLE)
			PG_RE_THROW();
		HOLD_INTERRUPTS();
		FlushErrorState();
		AbortCurrentTransaction();
		RESUME_INTERRUPTS();
		MemoryContextSwitchTo(cxt);
		pgstat_report_activity(STATE_IDLE, NULL);
		ereport(LOG,
				(errmsg("webhook worker for database \"%s\" gave way to a lock and tries again",
						my_database_name),
				 errdetail_internal("%s", error->message)));
	}
	PG_END_TRY();
	return done;
}

/* Have the sender pass back, unsent, what it holds of these profiles. */
static void
cancel_claims(WebhookChannel *channel, List *profile_ids)
{
	ListCell   *lc;

	foreach(lc, profile_ids)
	{
		webhook_channel_post_cancel(channel, *(int64 *) lfirst(lc));
		webhook_claims_cancelled(*(int64 *) lfirst(lc));
	}
}

static void
queue_step(void *arg)
{
	webhook_queue_step((WebhookStep *) arg);
}

static void
queue_purge(void *arg)
{
	*(bool *) arg = webhook_queue_purge();
}

/*
 * SIGTERM: stop once the requests on the wire are recorded (see the
 * header).  In a wait for a lock, end at once, as a backend would: what
 * holds it may not let go before the server stops.
 */
static void
handle_sigterm(SIGNAL_ARGS)
{
	if (MyProc != NULL && MyProc->waitLock != NULL)
		die(postgres_signal_arg);
	else
		SignalHandlerForShutdownRequest(postgres_signal_arg);
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
	bool		queue_changed = true;	/* a commit may have queued changes */
	bool		batches_due = true; /* a batch may be due to be put together */
	TimestampTz expand_again_at = 0;	/* the expansion waits for a lock */
	TimestampTz next_due = 0;
	bool		next_due_unknown = true;	/* it may have changed: look */
	TimestampTz next_due_found_at = 0;
	bool		claim_blocked = true;	/* a due delivery may be unclaimed */
	TimestampTz next_housekeeping = 0;
	List	   *finished = NIL;	/* outcomes from the sender, not yet recorded */
	List	   *unsent = NIL;	/* requests the sender gave back unsent */
	TimestampTz first_finished_at = 0;
	TimestampTz step_retry_at = 0;	/* a step gave way to a lock: not before */
	bool		sending;
	TimestampTz stop_by = 0;	/* asked to stop: leave by then */
	bool		sender_gone = false;
	WebhookChannel *channel;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, handle_sigterm);
	BackgroundWorkerUnblockSignals();
	/* each step allocates megabytes and frees them: keep them for the next */
	mallopt(M_MMAP_THRESHOLD, 4 * 1024 * 1024);
	mallopt(M_TRIM_THRESHOLD, 8 * 1024 * 1024);

	if (!worker_attach(dboid))
		proc_exit(0);
	webhook_in_worker = true;

	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	pgstat_report_appname("webhook worker");
	for (size_t i = 0; i < lengthof(worker_settings); i++)
		SetConfigOption(worker_settings[i][0], worker_settings[i][1], PGC_SUSET, PGC_S_OVERRIDE);
	StartTransactionCommand();
	my_database_name = MemoryContextStrdup(TopMemoryContext,
										   get_database_name(MyDatabaseId));
	CommitTransactionCommand();

	if (RecoveryInProgress())
		leave(LOG, "the server is in recovery");
	if (!webhook_queue_recover())
		leave(DEBUG1, "the extension is not installed in this database");
	sending = webhook_queue_sending();
	if (!sending)
		ereport(LOG,
				(errmsg("webhook worker for database \"%s\" does not send: webhook.sending is off",
						my_database_name)));

	channel = start_sender();
	wait_set = CreateWaitEventSet(TopMemoryContext, 2);
	AddWaitEventToSet(wait_set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);

	loop_cxt = AllocSetContextCreate(TopMemoryContext, "webhook worker loop",
									 ALLOCSET_DEFAULT_SIZES);
	for (;;)
	{
		WaitEvent	events[2];
		int			nevents;
		long		timeout;
		TimestampTz now;
		WebhookMessage msg;
		bool		record_now;

		MemoryContextSwitchTo(loop_cxt);
		MemoryContextReset(loop_cxt);
		/* a shorter webhook.retention applies now, not in a minute */
		if (webhook_handle_interrupts())
		{
			bool		was_sending = sending;

			next_housekeeping = 0;
			sending = webhook_queue_sending();
			if (sending != was_sending)
			{
				ereport(LOG,
						(errmsg("webhook worker for database \"%s\" %s", my_database_name,
								sending ? "sends again" : "stops sending: webhook.sending is off")));
				work_pending = next_due_unknown = true;
			}
		}
		if (stop_requested())
			leave(LOG, "its database needs to be free of other sessions");
		if (ShutdownRequestPending && stop_by == 0)
		{
			stop_by = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
												  webhook_stop_grace_ms() + LAST_RECORD_MS);
			cancel_claims(channel, webhook_claims_profiles());
		}

		/* what the sender passed back waits to be recorded */
		now = GetCurrentTimestamp();
		for (webhook_channel_receive(channel, &msg); msg.kind != MESSAGE_NONE;
			 webhook_channel_receive(channel, &msg))
		{
			MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

			if (msg.kind == MESSAGE_DETACHED)
			{
				/* what it passed back before it left is recorded first */
				MemoryContextSwitchTo(old);
				sender_gone = true;
				if (stop_by == 0)
					stop_by = TimestampTzPlusMilliseconds(now, LAST_RECORD_MS);
				break;
			}
			if (finished == NIL && unsent == NIL)
				first_finished_at = now;
			if (msg.kind == MESSAGE_RESULT)
				finished = lappend(finished, msg.request);
			else
				unsent = lappend(unsent, msg.request);
			MemoryContextSwitchTo(old);

			/*
			 * Off the wire: its place in the profile's allowance is free for
			 * the next claim.  It stays 'sending' until it is recorded, so
			 * no claim takes it again.
			 */
			webhook_claims_forget(msg.request->profile_id);
		}

		if (next_due != 0 && next_due <= now)
			work_pending = batches_due = true;
		if (expand_again_at != 0 && expand_again_at <= now)
			work_pending = queue_changed = true;

		/*
		 * A step when something may be waiting (a commit queued work, a
		 * retry came due, a record made room), and to record outcomes in
		 * groups: when many came back, or when the first of them has
		 * waited RECORD_DELAY_MS.  Give back at once.
		 */
		record_now = (finished != NIL || unsent != NIL) &&
			(list_length(finished) >= RECORD_BATCH || unsent != NIL || stop_by != 0 ||
			 now >= TimestampTzPlusMilliseconds(first_finished_at,
												work_pending ? RECORD_RIDE_MS : RECORD_DELAY_MS));

		/* stopping, and nothing more can come back to record (or no more time) */
		if (stop_by != 0 &&
			(now >= stop_by ||
			 (finished == NIL && unsent == NIL && (webhook_claims_count() == 0 || sender_gone))))
		{
			if (!ShutdownRequestPending)
				ereport(ERROR,
						(errcode(ERRCODE_INTERNAL_ERROR),
						 errmsg("the webhook sender for database \"%s\" stopped", my_database_name)));
			ereport(FATAL,
					(errcode(ERRCODE_ADMIN_SHUTDOWN),
					 errmsg("terminating webhook worker for database \"%s\" due to administrator command",
							my_database_name),
					 webhook_claims_count() > 0 ?
					 errdetail("%d requests were still on the wire; the next worker sends them again.",
							   webhook_claims_count()) : 0));
		}

		if ((work_pending || record_now) && now >= step_retry_at)
		{
			WebhookStep step;
			ListCell   *lc;

			step.finished = record_now ? finished : NIL;
			step.unsent = unsent;
			step.claim_limit = stop_by != 0 ? 0 :
				Max(PREFETCH_FACTOR * webhook_max_concurrency - webhook_claims_count(), 0);
			step.sending = sending;
			step.expand = queue_changed;
			step.assemble = batches_due;
			step.find_next_due = next_due_unknown || (next_due != 0 && next_due <= now) ||
				now >= TimestampTzPlusMilliseconds(next_due_found_at, DUE_RECHECK_MS);
			step.claim_as_made = !claim_blocked;
			if (!give_way_to_locks(queue_step, &step, loop_cxt))
			{
				/* nothing happened: the same outcomes wait, in a moment */
				work_pending = true;
				step_retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), STEP_RETRY_MS);
				goto sleep;
			}
			if (!step.extension_present)
				leave(LOG, "the extension was dropped");

			foreach(lc, step.finished)
				webhook_request_free(lfirst(lc));
			foreach(lc, unsent)
				webhook_request_free(lfirst(lc));
			if (step.finished != NIL)
			{
				list_free(finished);
				finished = NIL;
			}
			list_free(unsent);
			unsent = NIL;
			foreach(lc, step.claimed)
			{
				WebhookRequest *req = lfirst(lc);

				webhook_claims_add(req->profile_id);
				webhook_channel_post_request(channel, req);
				webhook_request_free(req);
			}
			/* committed: the next claim of each profile starts after this one */
			webhook_claims_marked(step.claim_marks);
			claim_blocked = step.claim_blocked;
			cancel_claims(channel, step.stopped);

			/* a full claim or a cut-short expansion or assembly: more is waiting */
			if (step.expand)
				expand_again_at = step.expand_again_at;
			queue_changed = step.more_occurrences;
			batches_due = step.more_batches;
			work_pending = queue_changed || batches_due ||
				(step.claim_limit > 0 && list_length(step.claimed) >= step.claim_limit);
			if (step.next_due_found)
			{
				next_due = step.next_due;
				next_due_found_at = now;
				next_due_unknown = false;
			}
			else if (step.find_next_due)
				next_due_unknown = true;	/* the claim was full: look next time */

			/*
			 * Come due while the step ran (after its now()): take it at once.
			 * Due before and not claimed: its profile has its share claimed,
			 * and a record will make room (the next step puts it together,
			 * should it be a batch).  Look again in a while all the same, so
			 * that nothing can keep the queue waiting for long.
			 */
			if (next_due != 0 && next_due <= GetCurrentTimestamp())
			{
				batches_due = true;
				if (next_due > step.taken_at)
					work_pending = true;
				else
					next_due = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), DUE_RECHECK_MS);
			}
		}

		/* gone while we posted to it: what it passed back is recorded first */
		if (!webhook_channel_flush(channel) && stop_by == 0)
		{
			sender_gone = true;
			stop_by = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), LAST_RECORD_MS);
		}

		now = GetCurrentTimestamp();
		if (now >= next_housekeeping)
		{
			bool		more = false;

			/* more to purge, or it gave way to a lock: again in a moment */
			if (!give_way_to_locks(queue_purge, &more, loop_cxt) || more)
				next_housekeeping = TimestampTzPlusMilliseconds(now, 100);
			else
				next_housekeeping = TimestampTzPlusMilliseconds(now, HOUSEKEEPING_MS);
		}

		/* sleep until the latch or the earliest timer */
sleep:
		timeout = ms_until(next_housekeeping, now);
		if (next_due != 0)
			timeout = Min(timeout, ms_until(next_due, now));
		if (expand_again_at != 0)
			timeout = Min(timeout, ms_until(expand_again_at, now));
		if (finished != NIL)
			timeout = Min(timeout, ms_until(TimestampTzPlusMilliseconds(first_finished_at,
																		RECORD_DELAY_MS), now));
		if (work_pending)
			timeout = 0;
		if (step_retry_at > now)
			timeout = ms_until(step_retry_at, now);
		if (stop_by != 0)
			timeout = Min(timeout, Max(ms_until(stop_by, now), 10));

		nevents = WaitEventSetWait(wait_set, timeout, events, lengthof(events),
								   PG_WAIT_EXTENSION);
		for (int i = 0; i < nevents; i++)
		{
			if (events[i].events & WL_LATCH_SET)
			{
				uint32		work;

				ResetLatch(MyLatch);
				/* a commit queued work, or the sender posted outcomes */
				work = webhook_work_queued(my_slot);
				if (work != 0)
					work_pending = queue_changed = true;
				/* new changes make nothing due that the step does not see */
				if (work & WORK_OTHER)
					batches_due = next_due_unknown = true;
			}
		}
	}
}
