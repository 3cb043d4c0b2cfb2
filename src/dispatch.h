/*
 * dispatch.h
 *		The sender's requests: those ready to start, and each database's
 *		and profile's share of what is on the wire.
 */
#ifndef WEBHOOK_DISPATCH_H
#define WEBHOOK_DISPATCH_H

#include "postgres.h"

#include "nodes/pg_list.h"

struct WebhookRequest;

extern void webhook_dispatch_add(struct WebhookRequest *req);
extern void webhook_dispatch_start(void);
extern void webhook_dispatch_finished(struct WebhookRequest *req);
extern long webhook_dispatch_wait_ms(void);
extern struct WebhookRequest *webhook_dispatch_next_given_back(void);
/* The requests of a profile (or WEBHOOK_ALL_PROFILES) not started yet. */
#define WEBHOOK_ALL_PROFILES INT64CONST(-1)
extern List *webhook_dispatch_take_back(uint32 origin, int64 profile_id);

#endif							/* WEBHOOK_DISPATCH_H */
