/*
 * worker.c
 *		The per-database worker: claims due deliveries, hands them to its
 *		sender, records what happened.
 *
 * The worker does the database side; the sender (sender.c), one process
 * for the server, does the HTTP side, and the two talk through a channel
 * of two shared-memory queues (channel.c) that the worker opens.  The
 * loop sleeps on its latch, set by commits that queued work (see
 * capture.c) and by the sender when it posts outcomes, with a timeout for
 * the earliest of: the next retry or batch due, a group of outcomes
 * waiting to be recorded, and housekeeping.
 *
 * Asked to stop (SIGTERM: a fast shutdown, or pg_terminate_backend), it
 * claims nothing more, has the sender pass back what it has not started,
 * records what comes back, and leaves once nothing it claimed is out, or
 * at webhook_stop_grace_ms (and a second for the last record): what was
 * answered is recorded, and not sent again by the next worker.  A sender
 * that leaves first (stopped alone) has its last outcomes recorded too,
 * before the worker ends with an error and is started again.
 *
 * It runs while its database has work.  With nothing on the wire, nothing
 * to record and nothing due for webhook.worker_idle_timeout, it leaves,
 * leaving the time its next delivery or batch comes due in its slot; the
 * launcher starts a worker again then, or when a commit asks for one.
 * When other databases wait for a place (webhook.max_workers), it leaves
 * as soon as it has nothing on the wire and nothing due, or, busy, after
 * WORKER_SLICE_MS: it claims nothing more, records what comes back, and
 * leaves its place to the next, to come back in its turn.
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

/*
 * A step looks for deliveries waiting their turn in an order that nothing
 * holds up any more (see release_sql) at least this often, while it runs,
 * and after an operator's call.
 */
#define RELEASE_RECHECK_MS 5000

/* A step that gave way to a lock is tried again after this. */
#define STEP_RETRY_MS 100

/* Stopping: the time left, after the requests, to record their outcomes. */
#define LAST_RECORD_MS 1000

/* Others wait for a place: a busy worker gives its own up after this. */
#define WORKER_SLICE_MS 2000

/* An idle worker whose next delivery is due sooner than this stays. */
#define IDLE_MIN_SLEEP_MS 1000

/* An idle database's worker comes back at least this often, to purge. */
#define IDLE_HOUSEKEEPING_MS (3600 * 1000)

bool		webhook_in_worker = false;

static WebhookDbSlot *my_slot = NULL;

/* Set before a deliberate exit: what the slot becomes, and when to wake. */
static bool exit_on_purpose = false;
static WebhookSlotState state_on_exit = SLOT_FREE;
static TimestampTz wake_at_on_exit = 0;

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
		my_slot->channel = 0;
		if (my_slot->state == SLOT_RUNNING)
		{
			if (exit_on_purpose)
			{
				my_slot->state = state_on_exit;
				/* a commit's wake-up that came as we left is not lost */
				my_slot->wake_at = pg_atomic_read_u32(&my_slot->work_queued) != 0 ?
					GetCurrentTimestamp() : wake_at_on_exit;
			}
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

/* Whether we must stop; and how many databases wait for a worker. */
static bool
stop_requested(int *databases_waiting)
{
	bool		stop;

	LWLockAcquire(webhook_shared->lock, LW_SHARED);
	stop = my_slot->stop_requested;
	*databases_waiting = webhook_shared->databases_waiting;
	LWLockRelease(webhook_shared->lock);
	return stop;
}

static char *my_database_name = NULL;

/*
 * Leave on purpose.  The slot becomes "then": free (no extension here),
 * or idle, for a worker to start again when work comes or at wake_at.
 */
static void
leave(int elevel, WebhookSlotState then, TimestampTz wake_at, const char *why)
{
	ereport(elevel, (errmsg("webhook worker for database \"%s\" is stopping: %s",
							my_database_name, why)));
	exit_on_purpose = true;
	state_on_exit = then;
	wake_at_on_exit = wake_at;
	proc_exit(0);
}

/*
 * Open this worker's channel to the sender and publish it: the sender
 * attaches when it sees it (what is posted before waits in the ring).
 */
static WebhookChannel *
open_channel(void)
{
	WebhookChannel *channel = webhook_channel_create();

	webhook_publish_channel(my_slot, webhook_channel_handle(channel));
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

/*
 * Leave the place to others, or leave for want of work (see the header).
 * due_soon: there is work now, or soon; quiet: nothing is on the wire or
 * waits to be recorded.
 */
static void
leave_when_idle(bool due_soon, bool quiet, TimestampTz next_due, TimestampTz now,
				int databases_waiting, bool yielding, TimestampTz *busy_at)
{
	TimestampTz wake_at;

	if (due_soon || !quiet)
		*busy_at = now;
	if (!quiet)
		return;
	/* a commit that came since the latch was last looked at: stay for it */
	if (pg_atomic_read_u32(&my_slot->work_queued) != 0)
	{
		SetLatch(MyLatch);
		return;
	}
	wake_at = TimestampTzPlusMilliseconds(now, IDLE_HOUSEKEEPING_MS);
	if (next_due != 0 && next_due < wake_at)
		wake_at = next_due;
	if (yielding || (databases_waiting > 0 && !due_soon))
		leave(DEBUG1, SLOT_IDLE, due_soon ? now : wake_at, "other databases wait for a worker");
	if (!due_soon &&
		now >= TimestampTzPlusMilliseconds(*busy_at, webhook_worker_idle_timeout * 1000L))
		leave(DEBUG1, SLOT_IDLE, wake_at, "it has had no work for webhook.worker_idle_timeout");
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
	TimestampTz deadline_at = 0;	/* the next deadline event is due, 0: none */
	bool		deadlines_unknown = true;	/* due times may have been set: look */
	bool		claim_blocked = true;	/* a due delivery may be unclaimed */
	bool		release_unknown = true; /* a waiting delivery may be free to go */
	TimestampTz released_at = 0;
	TimestampTz next_housekeeping = 0;
	List	   *finished = NIL;	/* outcomes from the sender, not yet recorded */
	List	   *unsent = NIL;	/* requests the sender gave back unsent */
	TimestampTz first_finished_at = 0;
	TimestampTz step_retry_at = 0;	/* a step gave way to a lock: not before */
	bool		sending;
	TimestampTz stop_by = 0;	/* asked to stop: leave by then */
	bool		sender_gone = false;
	TimestampTz started_at;
	TimestampTz busy_at;		/* last had work, or something on the wire */
	int			databases_waiting = 0;	/* for a place, every one taken */
	bool		yielding = false;	/* they waited long enough: claim no more */
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
	/* what commits asked for until now, the first step looks at anyway */
	(void) webhook_work_queued(my_slot);
	started_at = busy_at = GetCurrentTimestamp();
	/* a worker that left a moment ago purged: not again at each start */
	LWLockAcquire(webhook_shared->lock, LW_SHARED);
	if (my_slot->purged_at != 0)
		next_housekeeping = TimestampTzPlusMilliseconds(my_slot->purged_at, HOUSEKEEPING_MS);
	LWLockRelease(webhook_shared->lock);

	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	pgstat_report_appname("webhook worker");
	for (size_t i = 0; i < lengthof(worker_settings); i++)
		SetConfigOption(worker_settings[i][0], worker_settings[i][1], PGC_SUSET, PGC_S_OVERRIDE);
	StartTransactionCommand();
	my_database_name = MemoryContextStrdup(TopMemoryContext,
										   get_database_name(MyDatabaseId));
	CommitTransactionCommand();

	if (RecoveryInProgress())
		leave(LOG, SLOT_FREE, 0, "the server is in recovery");
	if (!webhook_queue_recover())
		leave(DEBUG1, SLOT_FREE, 0, "the extension is not installed in this database");
	sending = webhook_queue_sending();
	if (!sending)
		ereport(LOG,
				(errmsg("webhook worker for database \"%s\" does not send: webhook.sending is off",
						my_database_name)));

	channel = open_channel();
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
		if (stop_requested(&databases_waiting))
			leave(LOG, SLOT_FREE, 0, "its database needs to be free of other sessions");
		yielding = databases_waiting > 0 &&
			GetCurrentTimestamp() >= TimestampTzPlusMilliseconds(started_at, WORKER_SLICE_MS);
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
		if (deadlines_unknown || (deadline_at != 0 && deadline_at <= now))
			work_pending = true;
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
						 errmsg("the webhook sender stopped while serving database \"%s\"", my_database_name)));
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
			step.claim_limit = (stop_by != 0 || yielding) ? 0 :
				Max(PREFETCH_FACTOR * webhook_max_concurrency - webhook_claims_count(), 0);
			step.sending = sending;
			step.expand = queue_changed;
			step.assemble = batches_due;
			step.find_next_due = next_due_unknown || (next_due != 0 && next_due <= now) ||
				now >= TimestampTzPlusMilliseconds(next_due_found_at, DUE_RECHECK_MS);
			step.claim_as_made = !claim_blocked;
			step.release_waiting = release_unknown ||
				now >= TimestampTzPlusMilliseconds(released_at, RELEASE_RECHECK_MS);
			step.fire_deadlines = deadlines_unknown || (deadline_at != 0 && deadline_at <= now);
			if (!give_way_to_locks(queue_step, &step, loop_cxt))
			{
				/* nothing happened: the same outcomes wait, in a moment */
				work_pending = true;
				step_retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), STEP_RETRY_MS);
				goto sleep;
			}
			if (!step.extension_present)
			{
				/* idle, not free: a CREATE EXTENSION that came meanwhile wakes it */
				leave(LOG, SLOT_IDLE, 0, "the extension was dropped");
			}

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
			if (step.release_waiting)
			{
				release_unknown = false;
				released_at = now;
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
			if (step.deadlines_looked)
			{
				deadline_at = step.next_deadline;
				deadlines_unknown = false;
				if (deadline_at != 0 && deadline_at <= GetCurrentTimestamp())
					work_pending = true;
			}

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
			{
				next_housekeeping = TimestampTzPlusMilliseconds(now, HOUSEKEEPING_MS);
				LWLockAcquire(webhook_shared->lock, LW_EXCLUSIVE);
				my_slot->purged_at = now;
				LWLockRelease(webhook_shared->lock);
			}
		}

		if (stop_by == 0 && !sender_gone)
		{
			TimestampTz wake_at = next_due;

			if (deadline_at != 0 && (wake_at == 0 || deadline_at < wake_at))
				wake_at = deadline_at;
			leave_when_idle(work_pending || expand_again_at != 0 || next_due_unknown ||
							deadlines_unknown || step_retry_at > now ||
							(wake_at != 0 && wake_at <= TimestampTzPlusMilliseconds(now, IDLE_MIN_SLEEP_MS)),
							finished == NIL && unsent == NIL && webhook_claims_count() == 0,
							wake_at, now, databases_waiting, yielding, &busy_at);
		}

		/* sleep until the latch or the earliest timer */
sleep:
		timeout = ms_until(next_housekeeping, now);
		if (next_due != 0)
			timeout = Min(timeout, ms_until(next_due, now));
		if (deadline_at != 0)
			timeout = Min(timeout, ms_until(deadline_at, now));
		if (expand_again_at != 0)
			timeout = Min(timeout, ms_until(expand_again_at, now));
		if (finished != NIL)
			timeout = Min(timeout, ms_until(TimestampTzPlusMilliseconds(first_finished_at,
																		RECORD_DELAY_MS), now));
		if (stop_by == 0 && databases_waiting == 0)
			timeout = Min(timeout, ms_until(TimestampTzPlusMilliseconds(busy_at,
																		webhook_worker_idle_timeout * 1000L), now));
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
					batches_due = next_due_unknown = release_unknown = true;
				if (work & (WORK_OTHER | WORK_DEADLINES))
					deadlines_unknown = true;
			}
		}
	}
}
