/*
 * sender.c
 *		The sender: the HTTP side of every database's worker, one process
 *		for the server.
 *
 * A worker (worker.c) does the database work: it claims deliveries, hands
 * them to the sender through its channel (channel.c), and records the
 * outcomes the sender passes back.  The launcher starts the sender; each
 * worker publishes its channel in its slot, and the sender attaches to
 * every channel it finds.  It keeps the requests it is handed, one queue
 * per channel, until a connection slot frees up (dispatch.c), sends them
 * through libcurl's multi interface (http.c), signing each as it starts,
 * and posts each outcome back on the channel the request came on.  So HTTP
 * goes on while workers are in transactions, needs no database connection
 * and no background worker slot per database, and one database's backlog
 * or hanging receiver takes only its own share of the wire.
 *
 * The sender takes no locks.  A worker that leaves detaches its channel:
 * the sender drops what it held of it unstarted, and the outcomes of its
 * requests still on the wire (still "sending" in the database, they are
 * sent again, under the same webhook-id, by the next worker).  A sender
 * that dies detaches every channel; their workers record what came back,
 * end, and start again, with the next sender.
 *
 * Asked to stop (SIGTERM: a fast shutdown), it starts nothing more, passes
 * back what it had not started, and leaves once the requests on the wire
 * have finished and been passed back, or at webhook_stop_grace_ms, when it
 * abandons the rest.
 */
#include "webhook.h"
#include "channel.h"
#include "dispatch.h"
#include "http.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

/* A worker's channel that the sender is attached to. */
typedef struct ServedChannel
{
	uint32		origin;			/* this sender's number for it, never reused */
	int			slot_index;
	dsm_handle	handle;
	WebhookChannel *channel;
} ServedChannel;

static List *served = NIL;		/* ServedChannel * */
static uint32 next_origin = 1;
static uint32 channels_seen = 0;

static ServedChannel *
served_channel(uint32 origin)
{
	ListCell   *lc;

	foreach(lc, served)
	{
		ServedChannel *sc = lfirst(lc);

		if (sc->origin == origin)
			return sc;
	}
	return NULL;
}

/* Attach to the channels that workers published since the last look. */
static void
attach_new_channels(void)
{
	uint32		changed = pg_atomic_read_u32(&webhook_shared->channels_changed);
	int			n = 0;
	int		   *indexes;
	dsm_handle *handles;

	if (changed == channels_seen)
		return;
	channels_seen = changed;

	indexes = palloc(sizeof(int) * webhook_shared->nslots);
	handles = palloc(sizeof(dsm_handle) * webhook_shared->nslots);
	LWLockAcquire(webhook_shared->lock, LW_SHARED);
	for (int i = 0; i < webhook_shared->nslots; i++)
	{
		if (webhook_shared->slots[i].channel != 0)
		{
			indexes[n] = i;
			handles[n] = webhook_shared->slots[i].channel;
			n++;
		}
	}
	LWLockRelease(webhook_shared->lock);

	for (int i = 0; i < n; i++)
	{
		ListCell   *lc;
		bool		known = false;
		WebhookChannel *channel;
		ServedChannel *sc;
		MemoryContext old;

		foreach(lc, served)
		{
			sc = lfirst(lc);
			if (sc->slot_index == indexes[i] && sc->handle == handles[i])
				known = true;
		}
		if (known)
			continue;
		/* NULL: the worker is gone already */
		channel = webhook_channel_attach(handles[i]);
		if (channel == NULL)
			continue;
		old = MemoryContextSwitchTo(TopMemoryContext);
		sc = palloc(sizeof(ServedChannel));
		sc->origin = next_origin++;
		sc->slot_index = indexes[i];
		sc->handle = handles[i];
		sc->channel = channel;
		served = lappend(served, sc);
		MemoryContextSwitchTo(old);
	}
	pfree(indexes);
	pfree(handles);
}

/* Pass back, unsent, the requests of a profile (or all) not started yet. */
static void
give_back(ServedChannel *sc, int64 profile_id)
{
	ListCell   *lc;
	List	   *unsent = webhook_dispatch_take_back(sc->origin, profile_id);

	foreach(lc, unsent)
	{
		webhook_channel_post_result(sc->channel, lfirst(lc), false);
		webhook_request_free(lfirst(lc));
	}
	list_free(unsent);
}

/*
 * Its worker is gone: drop what it held unstarted; the outcomes of its
 * requests on the wire find no channel and are dropped when they finish.
 */
static void
let_go(ServedChannel *sc)
{
	ListCell   *lc;
	List	   *unsent = webhook_dispatch_take_back(sc->origin, WEBHOOK_ALL_PROFILES);

	foreach(lc, unsent)
		webhook_request_free(lfirst(lc));
	list_free(unsent);
	webhook_channel_detach(sc->channel);
	served = list_delete_ptr(served, sc);
	pfree(sc);
}

/* Let go of the channels whose workers have gone, and of the list. */
static void
let_go_all(List *gone)
{
	ListCell   *lc;

	foreach(lc, gone)
		let_go(lfirst(lc));
	list_free(gone);
}

/* Take every message the workers posted. */
static void
take_messages(void)
{
	ListCell   *lc;
	List	   *gone = NIL;

	foreach(lc, served)
	{
		ServedChannel *sc = lfirst(lc);
		WebhookMessage msg;

		for (webhook_channel_receive(sc->channel, &msg); msg.kind != MESSAGE_NONE;
			 webhook_channel_receive(sc->channel, &msg))
		{
			if (msg.kind == MESSAGE_DETACHED)
			{
				gone = lappend(gone, sc);
				break;
			}
			else if (msg.kind == MESSAGE_REQUEST)
			{
				msg.request->origin = sc->origin;
				webhook_dispatch_add(msg.request);
			}
			else if (msg.kind == MESSAGE_CANCEL)
				give_back(sc, msg.profile_id);
			else
				elog(ERROR, "webhook sender got a message it does not expect (%d)", (int) msg.kind);
		}
	}
	let_go_all(gone);
}

/* Post back the outcome of every request that finished. */
static void
post_finished(void)
{
	WebhookRequest *req;

	webhook_http_perform();
	while ((req = webhook_http_next_done()) != NULL)
	{
		ServedChannel *sc = served_channel(req->origin);

		webhook_dispatch_finished(req);
		if (sc != NULL)
			webhook_channel_post_result(sc->channel, req, true);
		webhook_request_free(req);
	}
}

/* Send what is posted on every channel; let go of those whose worker left. */
static void
flush_channels(void)
{
	ListCell   *lc;
	List	   *gone = NIL;

	foreach(lc, served)
	{
		ServedChannel *sc = lfirst(lc);

		if (!webhook_channel_flush(sc->channel))
			gone = lappend(gone, sc);
	}
	let_go_all(gone);
}

static bool
any_unflushed(void)
{
	ListCell   *lc;

	foreach(lc, served)
		if (webhook_channel_has_unflushed(((ServedChannel *) lfirst(lc))->channel))
			return true;
	return false;
}

static void
sender_detach(int code, Datum arg)
{
	LWLockAcquire(webhook_shared->lock, LW_EXCLUSIVE);
	if (webhook_shared->sender_pid == MyProcPid)
	{
		webhook_shared->sender_pid = 0;
		webhook_shared->sender_latch = NULL;
	}
	LWLockRelease(webhook_shared->lock);
	if (webhook_shared->launcher_latch)
		SetLatch(webhook_shared->launcher_latch);
}

/* Take the sender's place; false when another sender has it. */
static bool
sender_attach(void)
{
	bool		ok = false;

	LWLockAcquire(webhook_shared->lock, LW_EXCLUSIVE);
	if (webhook_shared->sender_pid == 0)
	{
		webhook_shared->sender_pid = MyProcPid;
		webhook_shared->sender_latch = MyLatch;
		ok = true;
	}
	LWLockRelease(webhook_shared->lock);
	if (ok)
		on_shmem_exit(sender_detach, 0);
	return ok;
}

static void
leave_quietly(void)
{
	webhook_http_shutdown();
	proc_exit(0);
}

/*
 * How long to wait for the next event: libcurl's next timer, or a request
 * held back by its profile's pace, or (leaving) a short while.  -1: no end.
 */
static long
wait_ms(bool leaving)
{
	long		curl_ms = webhook_http_timeout_ms();
	long		paced_ms = webhook_dispatch_wait_ms();
	long		ms = curl_ms < 0 ? paced_ms : paced_ms < 0 ? curl_ms : Min(curl_ms, paced_ms);

	if (leaving)
		ms = ms < 0 ? 100 : Min(ms, 100);
	return ms;
}

/*
 * The webhook.blocked_networks that the open connections were checked
 * against, and the webhook.proxy they go through: when either changes,
 * they are let go.
 */
static char *blocked_networks_in_use = NULL;
static char *proxy_in_use = NULL;

/* What a proxy leaves to the proxy, said in the log whenever one is set. */
static void
warn_of_proxy(void)
{
	if (webhook_proxy[0] != '\0')
		ereport(LOG,
				(errmsg("webhook requests go through webhook.proxy"),
				 errdetail("webhook.blocked_networks is checked on URLs whose host is an address; "
						   "host names are resolved by the proxy, which must refuse what it should not reach.")));
}

void
webhook_sender_main(Datum main_arg)
{
	WaitEventSet *wait_set;
	MemoryContext loop_cxt;
	TimestampTz stop_by = 0;	/* asked to stop: leave by then */

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();

	/* no database: only to be seen in pg_stat_activity */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("webhook sender");
	if (!sender_attach())
		proc_exit(0);

	blocked_networks_in_use = MemoryContextStrdup(TopMemoryContext, webhook_blocked_networks);
	proxy_in_use = MemoryContextStrdup(TopMemoryContext, webhook_proxy);
	warn_of_proxy();
	webhook_http_init();
	wait_set = CreateWaitEventSet(TopMemoryContext, 3);
	AddWaitEventToSet(wait_set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(wait_set, WL_SOCKET_READABLE, webhook_http_socket(), NULL, NULL);

	loop_cxt = AllocSetContextCreate(TopMemoryContext, "webhook sender loop",
									 ALLOCSET_DEFAULT_SIZES);
	for (;;)
	{
		WaitEvent	events[3];
		int			nevents;

		MemoryContextSwitchTo(loop_cxt);
		MemoryContextReset(loop_cxt);
		if (webhook_handle_interrupts() &&
			(strcmp(blocked_networks_in_use, webhook_blocked_networks) != 0 ||
			 strcmp(proxy_in_use, webhook_proxy) != 0))
		{
			pfree(blocked_networks_in_use);
			pfree(proxy_in_use);
			blocked_networks_in_use = MemoryContextStrdup(TopMemoryContext, webhook_blocked_networks);
			proxy_in_use = MemoryContextStrdup(TopMemoryContext, webhook_proxy);
			webhook_http_forget_connections();
			warn_of_proxy();
		}

		if (ShutdownRequestPending && stop_by == 0)
			stop_by = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), webhook_stop_grace_ms());

		attach_new_channels();
		take_messages();
		post_finished();
		if (stop_by == 0)
		{
			WebhookRequest *req;

			webhook_dispatch_start();
			while ((req = webhook_dispatch_next_given_back()) != NULL)
			{
				ServedChannel *sc = served_channel(req->origin);

				if (sc != NULL)
					webhook_channel_post_result(sc->channel, req, false);
				webhook_request_free(req);
			}
		}
		else
		{
			ListCell   *lc;

			foreach(lc, served)
				give_back(lfirst(lc), WEBHOOK_ALL_PROFILES);
		}
		/* a request that could not even start is done already */
		post_finished();
		flush_channels();
		if (stop_by != 0 && !any_unflushed() &&
			(webhook_http_in_flight() == 0 || GetCurrentTimestamp() >= stop_by))
			leave_quietly();

		nevents = WaitEventSetWait(wait_set, wait_ms(stop_by != 0),
								   events, lengthof(events), PG_WAIT_EXTENSION);
		for (int i = 0; i < nevents; i++)
			if (events[i].events & WL_LATCH_SET)
				ResetLatch(MyLatch);
	}
}
