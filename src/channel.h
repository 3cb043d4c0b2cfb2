/*
 * channel.h
 *		The two message queues between a database's worker and the sender.
 *
 * The worker (database side) posts requests to send and cancellations; the
 * sender (HTTP side) posts back each request's result, or the request
 * itself unsent when it was cancelled.
 */
#ifndef WEBHOOK_CHANNEL_H
#define WEBHOOK_CHANNEL_H

#include "postgres.h"

#include "nodes/pg_list.h"
#include "postmaster/bgworker.h"
#include "storage/dsm.h"

struct WebhookRequest;

typedef enum WebhookMessageKind
{
	MESSAGE_NONE,				/* nothing waiting */
	MESSAGE_DETACHED,			/* the other side is gone */
	MESSAGE_REQUEST,			/* worker -> sender: send this */
	MESSAGE_CANCEL,				/* worker -> sender: do not start requests
								 * of this profile */
	MESSAGE_RESULT,				/* sender -> worker: what happened */
	MESSAGE_UNSENT				/* sender -> worker: cancelled, not sent */
} WebhookMessageKind;

typedef struct WebhookMessage
{
	WebhookMessageKind kind;
	struct WebhookRequest *request; /* REQUEST, RESULT, UNSENT */
	int64		profile_id;		/* CANCEL */
} WebhookMessage;

typedef struct WebhookChannel WebhookChannel;

extern WebhookChannel *webhook_channel_create(void);
extern dsm_handle webhook_channel_handle(WebhookChannel *channel);
extern WebhookChannel *webhook_channel_attach(dsm_handle handle);
extern void webhook_channel_detach(WebhookChannel *channel);

extern void webhook_channel_post_request(WebhookChannel *channel, struct WebhookRequest *req);
extern void webhook_channel_post_cancel(WebhookChannel *channel, int64 profile_id);
extern void webhook_channel_post_result(WebhookChannel *channel, struct WebhookRequest *req,
										bool sent);
extern bool webhook_channel_flush(WebhookChannel *channel);
extern bool webhook_channel_has_unflushed(WebhookChannel *channel);
extern void webhook_channel_receive(WebhookChannel *channel, WebhookMessage *msg);

#endif							/* WEBHOOK_CHANNEL_H */
