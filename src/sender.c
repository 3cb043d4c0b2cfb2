/*
 * sender.c
 *		The sender: the HTTP side of a database's worker, in a process of
 *		its own.
 *
 * The worker (worker.c) does the database work: it claims deliveries,
 * hands them to its sender through the channel (channel.c), and records
 * the outcomes the sender passes back.  The sender keeps the requests it
 * is handed until a connection slot frees up (dispatch.c), sends them
 * through libcurl's multi interface (http.c), signing each as it starts,
 * and posts each outcome back.  So HTTP goes on while the worker is in a
 * transaction, and the two use two cores.
 *
 * The sender has no database connection, takes no locks, and lives as long
 * as its worker: when either goes, the channel detaches and the other
 * leaves too.  Requests it held are still "sending" in the database, and
 * the next worker sends them again under the same webhook-id.
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
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

static void
leave_quietly(void)
{
	webhook_http_shutdown();
	proc_exit(0);
}

/* Pass back, unsent, the requests of a profile (or all) not started yet. */
static void
give_back(WebhookChannel *channel, int64 profile_id)
{
	ListCell   *lc;
	List	   *unsent = webhook_dispatch_take_back(profile_id);

	foreach(lc, unsent)
	{
		webhook_channel_post_result(channel, lfirst(lc), false);
		webhook_request_free(lfirst(lc));
	}
	list_free(unsent);
}

/* Take every message the worker posted. */
static void
take_messages(WebhookChannel *channel)
{
	WebhookMessage msg;

	for (;;)
	{
		webhook_channel_receive(channel, &msg);
		switch (msg.kind)
		{
			case MESSAGE_NONE:
				return;
			case MESSAGE_DETACHED:
				leave_quietly();
				break;
			case MESSAGE_REQUEST:
				webhook_dispatch_add(msg.request);
				break;
			case MESSAGE_CANCEL:
				give_back(channel, msg.profile_id);
				break;
			default:
				elog(ERROR, "webhook sender got a message it does not expect (%d)", (int) msg.kind);
		}
	}
}

/* Post back the outcome of every request that finished. */
static void
post_finished(WebhookChannel *channel)
{
	WebhookRequest *req;

	webhook_http_perform();
	while ((req = webhook_http_next_done()) != NULL)
	{
		webhook_dispatch_finished(req);
		webhook_channel_post_result(channel, req, true);
		webhook_request_free(req);
	}
}

/* The webhook.blocked_networks that the open connections were checked against. */
static char *blocked_networks_in_use = NULL;

void
webhook_sender_main(Datum main_arg)
{
	dsm_handle handle = DatumGetUInt32(main_arg);
	WebhookChannel *channel;
	WaitEventSet *wait_set;
	MemoryContext loop_cxt;
	TimestampTz stop_by = 0;	/* asked to stop: leave by then */

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();

	channel = webhook_channel_attach(handle);
	blocked_networks_in_use = MemoryContextStrdup(TopMemoryContext, webhook_blocked_networks);
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
			strcmp(blocked_networks_in_use, webhook_blocked_networks) != 0)
		{
			pfree(blocked_networks_in_use);
			blocked_networks_in_use = MemoryContextStrdup(TopMemoryContext, webhook_blocked_networks);
			webhook_http_forget_connections();
		}

		if (ShutdownRequestPending && stop_by == 0)
			stop_by = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), webhook_stop_grace_ms());

		take_messages(channel);
		post_finished(channel);
		if (stop_by == 0)
			webhook_dispatch_start();
		else
			give_back(channel, WEBHOOK_ALL_PROFILES);
		/* a request that could not even start is done already */
		post_finished(channel);
		if (!webhook_channel_flush(channel))
			leave_quietly();
		if (stop_by != 0 && !webhook_channel_has_unflushed(channel) &&
			(webhook_http_in_flight() == 0 || GetCurrentTimestamp() >= stop_by))
			leave_quietly();

		nevents = WaitEventSetWait(wait_set,
								   stop_by == 0 ? webhook_http_timeout_ms() : Min(webhook_http_timeout_ms(), 100),
								   events, lengthof(events), PG_WAIT_EXTENSION);
		for (int i = 0; i < nevents; i++)
			if (events[i].events & WL_LATCH_SET)
				ResetLatch(MyLatch);
	}
}
