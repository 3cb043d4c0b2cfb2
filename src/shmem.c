/*
 * shmem.c
 *		Shared state between backends, the launcher and the workers.
 *
 * One slot per database that has (or may have) the extension.  Backends ask
 * for a worker (CREATE EXTENSION), wake it (a commit that queued work), or
 * pause it (DROP DATABASE); the launcher starts what is requested.  A
 * worker publishes its channel in its slot, for the sender to attach.
 */
#include "webhook.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

WebhookShared *webhook_shared = NULL;

/* How long DROP DATABASE waits for the worker to leave. */
#define PAUSE_WAIT_MS 10000

static int
slot_count(void)
{
	return WEBHOOK_MAX_DATABASES;
}

static Size
shared_size(void)
{
	return add_size(offsetof(WebhookShared, slots),
					mul_size(slot_count(), sizeof(WebhookDbSlot)));
}

void
webhook_shmem_request(void)
{
	RequestAddinShmemSpace(shared_size());
	RequestNamedLWLockTranche("webhook", 1);
}

void
webhook_shmem_startup(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	webhook_shared = ShmemInitStruct("webhook", shared_size(), &found);
	if (!found)
	{
		memset(webhook_shared, 0, shared_size());
		webhook_shared->lock = &(GetNamedLWLockTranche("webhook"))->lock;
		webhook_shared->nslots = slot_count();
		pg_atomic_init_u32(&webhook_shared->channels_changed, 0);
	}
	LWLockRelease(AddinShmemInitLock);
}

/* The slot of a database, or NULL.  Caller holds the lock. */
WebhookDbSlot *
webhook_slot_find(Oid dboid)
{
	for (int i = 0; i < webhook_shared->nslots; i++)
	{
		WebhookDbSlot *slot = &webhook_shared->slots[i];

		if (slot->state != SLOT_FREE && slot->dboid == dboid)
			return slot;
	}
	return NULL;
}

static void
wake_launcher(void)
{
	Latch	   *latch = webhook_shared->launcher_latch;

	if (latch)
		SetLatch(latch);
}

/*
 * Ask the launcher for a worker in this database.  A database without the
 * extension gets a worker that looks, finds nothing, and ends.
 */
void
webhook_request_worker(Oid dboid)
{
	WebhookDbSlot *slot;

	if (webhook_shared == NULL)
		return;

	LWLockAcquire(webhook_shared->lock, LW_EXCLUSIVE);
	slot = webhook_slot_find(dboid);
	if (slot == NULL)
	{
		for (int i = 0; i < webhook_shared->nslots; i++)
		{
			if (webhook_shared->slots[i].state == SLOT_FREE)
			{
				slot = &webhook_shared->slots[i];
				memset(slot, 0, sizeof(*slot));
				pg_atomic_init_u32(&slot->work_queued, WORK_CHANGES | WORK_OTHER);
				slot->dboid = dboid;
				slot->state = SLOT_IDLE;
				break;
			}
		}
	}
	if (slot == NULL)
	{
		LWLockRelease(webhook_shared->lock);
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("webhook serves at most %d databases", WEBHOOK_MAX_DATABASES),
				 errdetail("Database %u gets no worker.", dboid)));
		return;
	}
	if (slot->state == SLOT_IDLE)
	{
		slot->state = SLOT_REQUESTED;
		slot->restart_at = 0;
	}
	LWLockRelease(webhook_shared->lock);
	wake_launcher();
}

/*
 * Ask this database's worker for work (WORK_*), and set its latch if it
 * runs; if none does, the launcher starts one.
 */
void
webhook_wake_worker(Oid dboid, uint32 work)
{
	WebhookDbSlot *slot;
	Latch	   *latch = NULL;

	if (webhook_shared == NULL)
		return;

	LWLockAcquire(webhook_shared->lock, LW_SHARED);
	slot = webhook_slot_find(dboid);
	if (slot != NULL)
	{
		pg_atomic_fetch_or_u32(&slot->work_queued, work);
		latch = slot->latch;
		if (slot->state == SLOT_IDLE)
			latch = webhook_shared->launcher_latch;
	}
	LWLockRelease(webhook_shared->lock);

	if (latch)
		SetLatch(latch);
}

/*
 * The work (WORK_*) commits asked for since the last call.  (The worker's
 * latch is set by the sender too; only this says the queue changed.)
 */
uint32
webhook_work_queued(WebhookDbSlot *slot)
{
	return pg_atomic_exchange_u32(&slot->work_queued, 0);
}

/*
 * Stop this database's worker and keep it stopped until unpaused.  Returns
 * true when there was a worker (running or about to run) to stop.  Waits
 * for the worker to leave, so that the statement that needs the database
 * to itself does not find it connected.
 */
bool
webhook_pause_worker(Oid dboid)
{
	WebhookDbSlot *slot;
	Latch	   *latch = NULL;
	bool		paused = false;
	TimestampTz deadline;

	if (webhook_shared == NULL)
		return false;

	LWLockAcquire(webhook_shared->lock, LW_EXCLUSIVE);
	slot = webhook_slot_find(dboid);
	if (slot != NULL && slot->state != SLOT_PAUSED)
	{
		slot->state = SLOT_PAUSED;
		slot->stop_requested = true;
		latch = slot->latch;
		paused = true;
	}
	LWLockRelease(webhook_shared->lock);

	if (!paused)
		return false;
	if (latch)
		SetLatch(latch);

	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), PAUSE_WAIT_MS);
	for (;;)
	{
		pid_t		pid;

		LWLockAcquire(webhook_shared->lock, LW_SHARED);
		pid = slot->pid;
		LWLockRelease(webhook_shared->lock);
		if (pid == 0 || GetCurrentTimestamp() >= deadline)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 10, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	return true;
}

/* Undo webhook_pause_worker: restart the worker, or forget the database. */
void
webhook_unpause_worker(Oid dboid, bool database_gone)
{
	WebhookDbSlot *slot;

	LWLockAcquire(webhook_shared->lock, LW_EXCLUSIVE);
	slot = webhook_slot_find(dboid);
	if (slot != NULL && slot->state == SLOT_PAUSED)
	{
		slot->stop_requested = false;
		if (database_gone)
			slot->state = SLOT_FREE;
		else
		{
			slot->state = SLOT_REQUESTED;
			slot->restart_at = 0;
		}
	}
	LWLockRelease(webhook_shared->lock);
	wake_launcher();
}

/*
 * Publish this worker's channel (0: withdraw it) and tell the sender,
 * which attaches to every channel it finds published.
 */
void
webhook_publish_channel(WebhookDbSlot *slot, dsm_handle channel)
{
	Latch	   *latch;

	LWLockAcquire(webhook_shared->lock, LW_EXCLUSIVE);
	slot->channel = channel;
	latch = webhook_shared->sender_latch;
	LWLockRelease(webhook_shared->lock);
	pg_atomic_fetch_add_u32(&webhook_shared->channels_changed, 1);
	if (latch)
		SetLatch(latch);
}
