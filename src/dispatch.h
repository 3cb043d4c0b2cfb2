/*
 * dispatch.h
 *		Claimed deliveries waiting for a connection slot, and per-profile
 *		counts that keep each profile within its share.
 */
#ifndef WEBHOOK_DISPATCH_H
#define WEBHOOK_DISPATCH_H

#include "postgres.h"

#include "nodes/pg_list.h"

struct WebhookRequest;

/*
 * The claim holds at most this many times webhook.max_concurrency
 * deliveries in all, and this many times webhook.max_per_profile of one
 * profile: enough to keep every slot busy between two claims.
 */
#define PREFETCH_FACTOR 8

extern void webhook_dispatch_add(struct WebhookRequest *req);
extern void webhook_dispatch_start(void);
extern void webhook_dispatch_finished(struct WebhookRequest *req);
extern void webhook_dispatch_forget(struct WebhookRequest *req);
extern int	webhook_dispatch_ready_count(void);
extern int	webhook_dispatch_claimed_count(void);
extern void webhook_dispatch_loads(List **profile_ids, List **counts);
extern List *webhook_dispatch_waiting_profiles(void);
extern List *webhook_dispatch_take_back(int64 profile_id);

#endif							/* WEBHOOK_DISPATCH_H */
