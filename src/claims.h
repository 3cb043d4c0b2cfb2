/*
 * claims.h
 *		The worker's claims: per profile, what it has claimed and not yet
 *		answered, and where in the due order its claims have got to.
 */
#ifndef WEBHOOK_CLAIMS_H
#define WEBHOOK_CLAIMS_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "nodes/pg_list.h"

/*
 * The worker holds at most this many times webhook.max_concurrency
 * deliveries claimed in all, and this many times webhook.max_per_profile of
 * one profile: enough to keep every slot busy between two claims.
 */
#define PREFETCH_FACTOR 8

/* How far a profile's claims have got: the last delivery claimed, in due order. */
typedef struct ClaimMark
{
	int64		profile_id;
	TimestampTz due_at;
	int64		delivery_id;
} ClaimMark;

extern void webhook_claims_add(int64 profile_id);
extern void webhook_claims_forget(int64 profile_id);
extern int	webhook_claims_count(void);
extern int	webhook_claims_held(int64 profile_id);
extern int	webhook_claims_allowance(void);
extern void webhook_claims_set_terms(int64 profile_id, int cap, bool ordered);
extern int	webhook_claims_allowance_of(int64 profile_id);
extern bool webhook_claims_ordered(int64 profile_id);
extern void webhook_claims_loads(List **profile_ids, List **counts, List **marks);
extern void webhook_claims_marked(List *marks);
extern List *webhook_claims_profiles(void);
extern void webhook_claims_cancelled(int64 profile_id);

#endif							/* WEBHOOK_CLAIMS_H */
