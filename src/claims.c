/*
 * claims.c
 *		The worker's claims, per profile: how many it has claimed and not
 *		yet answered, and where its claims have got to in the due order.
 *
 * The worker claims deliveries in large groups (one transaction for
 * hundreds) and hands them to the sender.  A claim takes no more than
 * PREFETCH_FACTOR times webhook.max_per_profile of one profile, counting
 * what is claimed already: a profile whose receiver hangs does not hold the
 * whole queue.
 *
 * A claim walks delivery_due_idx from the oldest due delivery of each
 * profile.  The deliveries claimed before, sent and recorded, leave entries
 * there until vacuum removes them, so in a long drain each claim would walk
 * over more of them.  So a profile's next claim starts after the last one
 * its claims took (its mark): what is due later is due after it in the
 * index, and what is made due now (a new delivery, a retry, one given back)
 * is due after it too.  A batch put together is due since an older time:
 * a claim after batches were put together looks from the oldest due (see
 * webhook_queue_step).  A delivery the mark can pass over (one another
 * transaction had locked, or made due with an older time) is found when
 * the mark is dropped: when a claim leaves its profile below its allowance
 * (it found all there was), and for every profile every MARK_MAX_AGE_MS.
 */
#include "webhook.h"
#include "claims.h"

#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#define MARK_MAX_AGE_MS 1000

typedef struct ProfileClaims
{
	int64		profile_id;		/* hash key */
	int			count;			/* claimed, not yet answered */
	bool		cancelled;		/* the sender was told to stop them */
	bool		marked;			/* the next claim starts after the mark */
	TimestampTz mark_due_at;
	int64		mark_delivery_id;
} ProfileClaims;

/* What a profile's settings say of its claims, if anything. */
typedef struct ProfileTerms
{
	int64		profile_id;		/* hash key */
	int			cap;			/* rate-limited: its allowance; 0: none */
	bool		ordered;		/* its deliveries of one object go in order */
} ProfileTerms;

static HTAB *claims = NULL;
static HTAB *terms = NULL;		/* profiles rate-limited or ordered */
static int	total = 0;			/* claimed, all profiles */
static TimestampTz marks_since = 0; /* when marks were last all dropped */

static ProfileClaims *
claims_of(int64 profile_id)
{
	bool		found;
	ProfileClaims *entry;

	if (claims == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(int64);
		ctl.entrysize = sizeof(ProfileClaims);
		ctl.hcxt = TopMemoryContext;
		claims = hash_create("webhook claims", 64, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	entry = hash_search(claims, &profile_id, HASH_ENTER, &found);
	if (!found)
	{
		entry->count = 0;
		entry->cancelled = false;
		entry->marked = false;
	}
	return entry;
}

static int64 *
copy_id(int64 id)
{
	int64	   *p = palloc(sizeof(int64));

	*p = id;
	return p;
}

void
webhook_claims_add(int64 profile_id)
{
	ProfileClaims *entry = claims_of(profile_id);

	entry->count++;
	/* claimed, so enabled again: a later disable must be told again */
	entry->cancelled = false;
	total++;
}

void
webhook_claims_forget(int64 profile_id)
{
	ProfileClaims *entry = claims_of(profile_id);

	if (entry->count > 0)
		entry->count--;
	/* a mark is kept for the claim that follows (see webhook_claims_marked) */
	if (entry->count == 0 && !entry->marked)
		hash_search(claims, &profile_id, HASH_REMOVE, NULL);
	total--;
}

int
webhook_claims_count(void)
{
	return total;
}

/* How many deliveries of one profile the worker holds claimed now. */
int
webhook_claims_held(int64 profile_id)
{
	ProfileClaims *entry = claims ? hash_search(claims, &profile_id, HASH_FIND, NULL) : NULL;

	return entry ? entry->count : 0;
}

/* How many deliveries of one profile the worker holds claimed at most. */
int
webhook_claims_allowance(void)
{
	return webhook_max_per_profile * PREFETCH_FACTOR;
}

/*
 * A rate-limited profile's allowance is smaller (see claim_sql): what it
 * sends in two seconds, and one more (cap; 0: no limit).  An ordered
 * profile's finished deliveries let the next of their objects go (see
 * promote_sql).  Learnt from its settings, as each claim reads them.
 */
void
webhook_claims_set_terms(int64 profile_id, int cap, bool ordered)
{
	ProfileTerms *entry;

	if (terms == NULL)
	{
		HASHCTL		ctl;

		if (cap == 0 && !ordered)
			return;
		ctl.keysize = sizeof(int64);
		ctl.entrysize = sizeof(ProfileTerms);
		ctl.hcxt = TopMemoryContext;
		terms = hash_create("webhook claim terms", 16, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	if (cap == 0 && !ordered)
	{
		hash_search(terms, &profile_id, HASH_REMOVE, NULL);
		return;
	}
	entry = hash_search(terms, &profile_id, HASH_ENTER, NULL);
	entry->cap = cap;
	entry->ordered = ordered;
}

static ProfileTerms *
terms_of(int64 profile_id)
{
	return terms ? hash_search(terms, &profile_id, HASH_FIND, NULL) : NULL;
}

/* The allowance of this profile. */
int
webhook_claims_allowance_of(int64 profile_id)
{
	ProfileTerms *entry = terms_of(profile_id);
	int			allowance = webhook_claims_allowance();

	return entry && entry->cap > 0 ? Min(entry->cap, allowance) : allowance;
}

/* Whether the profile orders its deliveries, as its last claim read it. */
bool
webhook_claims_ordered(int64 profile_id)
{
	ProfileTerms *entry = terms_of(profile_id);

	return entry && entry->ordered;
}

/*
 * Per profile with claims: its id, how many, and its mark (a ClaimMark *,
 * NULL when its next claim starts from the oldest due).
 */
void
webhook_claims_loads(List **profile_ids, List **counts, List **marks)
{
	HASH_SEQ_STATUS status;
	ProfileClaims *entry;
	TimestampTz now = GetCurrentTimestamp();
	bool		drop_marks = TimestampDifferenceExceeds(marks_since, now, MARK_MAX_AGE_MS);

	*profile_ids = NIL;
	*counts = NIL;
	*marks = NIL;
	if (drop_marks)
		marks_since = now;
	if (claims == NULL)
		return;
	hash_seq_init(&status, claims);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		ClaimMark  *mark = NULL;

		if (drop_marks)
			entry->marked = false;
		if (entry->marked)
		{
			mark = palloc(sizeof(ClaimMark));
			mark->profile_id = entry->profile_id;
			mark->due_at = entry->mark_due_at;
			mark->delivery_id = entry->mark_delivery_id;
		}
		*profile_ids = lappend(*profile_ids, copy_id(entry->profile_id));
		*counts = lappend_int(*counts, entry->count);
		*marks = lappend(*marks, mark);
	}
}

/*
 * After a claim has been committed and its deliveries added: the last
 * delivery it took of each profile (ClaimMark *).  A profile left below
 * its allowance had all its due deliveries taken: its next claim looks
 * from the oldest due again.
 */
void
webhook_claims_marked(List *marks)
{
	HASH_SEQ_STATUS status;
	ProfileClaims *entry;
	ListCell   *lc;

	foreach(lc, marks)
	{
		ClaimMark  *mark = lfirst(lc);

		entry = claims_of(mark->profile_id);
		entry->marked = true;
		entry->mark_due_at = mark->due_at;
		entry->mark_delivery_id = mark->delivery_id;
	}
	if (claims == NULL)
		return;
	hash_seq_init(&status, claims);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		if (entry->count < webhook_claims_allowance_of(entry->profile_id))
			entry->marked = false;
		if (entry->count == 0)
			hash_search(claims, &entry->profile_id, HASH_REMOVE, NULL);
	}
}

/* The profiles with claims that the sender has not been told to stop. */
List *
webhook_claims_profiles(void)
{
	HASH_SEQ_STATUS status;
	ProfileClaims *entry;
	List	   *result = NIL;

	if (claims == NULL)
		return NIL;
	hash_seq_init(&status, claims);
	while ((entry = hash_seq_search(&status)) != NULL)
		if (entry->count > 0 && !entry->cancelled)
			result = lappend(result, copy_id(entry->profile_id));
	return result;
}

void
webhook_claims_cancelled(int64 profile_id)
{
	claims_of(profile_id)->cancelled = true;
}
