/*
 * dispatch.h
 *		Per-profile shares: what the worker has claimed, what its sender
 *		holds ready and has on the wire.
 */
#ifndef WEBHOOK_DISPATCH_H
#define WEBHOOK_DISPATCH_H

#include "postgres.h"

#include "nodes/pg_list.h"

struct WebhookRequest;

/*
 * The worker holds at most this many times webhook.max_concurrency
 * deliveries claimed in all, and this many times webhook.max_per_profile of
 * one profile: enough to keep every slot busy between two claims.
 */
#define PREFETCH_FACTOR 8

/* the worker */
extern void webhook_claims_add(int64 profile_id);
extern void webhook_claims_forget(int64 profile_id);
extern int	webhook_claims_count(void);
extern void webhook_claims_loads(List **profile_ids, List **counts);
extern List *webhook_claims_profiles(void);
extern void webhook_claims_cancelled(int64 profile_id);

/* the sender */
extern void webhook_dispatch_add(struct WebhookRequest *req);
extern void webhook_dispatch_start(void);
extern void webhook_dispatch_finished(struct WebhookRequest *req);
extern int	webhook_dispatch_ready_count(void);
/* The requests of a profile (or WEBHOOK_ALL_PROFILES) not started yet. */
#define WEBHOOK_ALL_PROFILES INT64CONST(-1)
extern List *webhook_dispatch_take_back(int64 profile_id);

#endif							/* WEBHOOK_DISPATCH_H */
