/*
 * dispatch.c
 *		Per-profile shares of the work in hand, on both sides of the channel.
 *
 * The worker claims deliveries in large groups (one transaction for
 * hundreds) and hands them to its sender.  It counts, per profile, what it
 * has claimed and not yet recorded, so that a claim takes no more than
 * PREFETCH_FACTOR times webhook.max_per_profile of one profile: a profile
 * whose receiver hangs does not hold the whole queue.
 *
 * The sender keeps the requests it was handed, ready, until a connection
 * slot frees up: at most webhook.max_concurrency on the wire, and at most
 * webhook.max_per_profile of one profile.  A slow receiver fills its own
 * share and no more; the other profiles' requests go around it.
 */
#include "webhook.h"
#include "dispatch.h"
#include "http.h"

#include "utils/hsearch.h"
#include "utils/memutils.h"

typedef struct ProfileLoad
{
	int64		profile_id;		/* hash key */
	int			count;			/* worker: claimed; sender: on the wire */
	bool		cancelled;		/* worker: the sender was told to stop it */
} ProfileLoad;

static HTAB *loads = NULL;
static int	total = 0;			/* worker: claimed, all profiles */

static ProfileLoad *
load_of(int64 profile_id)
{
	bool		found;
	ProfileLoad *load;

	if (loads == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(int64);
		ctl.entrysize = sizeof(ProfileLoad);
		ctl.hcxt = TopMemoryContext;
		loads = hash_create("webhook profile loads", 64, &ctl,
							HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	load = hash_search(loads, &profile_id, HASH_ENTER, &found);
	if (!found)
	{
		load->count = 0;
		load->cancelled = false;
	}
	return load;
}

static void
unload(int64 profile_id)
{
	ProfileLoad *load = load_of(profile_id);

	if (load->count > 0)
		load->count--;
	if (load->count == 0)
		hash_search(loads, &profile_id, HASH_REMOVE, NULL);
}

static int64 *
copy_id(int64 id)
{
	int64	   *p = palloc(sizeof(int64));

	*p = id;
	return p;
}

/* The worker's side: what it has claimed and not yet recorded. */

void
webhook_claims_add(int64 profile_id)
{
	ProfileLoad *load = load_of(profile_id);

	load->count++;
	/* claimed, so enabled again: a later disable must be told again */
	load->cancelled = false;
	total++;
}

void
webhook_claims_forget(int64 profile_id)
{
	unload(profile_id);
	total--;
}

int
webhook_claims_count(void)
{
	return total;
}

/* How many deliveries of each profile are claimed, as two lists. */
void
webhook_claims_loads(List **profile_ids, List **counts)
{
	HASH_SEQ_STATUS status;
	ProfileLoad *load;

	*profile_ids = NIL;
	*counts = NIL;
	if (loads == NULL)
		return;
	hash_seq_init(&status, loads);
	while ((load = hash_seq_search(&status)) != NULL)
	{
		*profile_ids = lappend(*profile_ids, copy_id(load->profile_id));
		*counts = lappend_int(*counts, load->count);
	}
}

/* The profiles with claims that the sender has not been told to stop. */
List *
webhook_claims_profiles(void)
{
	HASH_SEQ_STATUS status;
	ProfileLoad *load;
	List	   *result = NIL;

	if (loads == NULL)
		return NIL;
	hash_seq_init(&status, loads);
	while ((load = hash_seq_search(&status)) != NULL)
		if (!load->cancelled)
			result = lappend(result, copy_id(load->profile_id));
	return result;
}

void
webhook_claims_cancelled(int64 profile_id)
{
	load_of(profile_id)->cancelled = true;
}

/* The sender's side: requests waiting for a slot, and what is on the wire. */

static dlist_head ready = DLIST_STATIC_INIT(ready);
static int	ready_count = 0;

void
webhook_dispatch_add(WebhookRequest *req)
{
	dlist_push_tail(&ready, &req->node);
	ready_count++;
}

/*
 * Start ready requests, oldest first, while there are slots.  A request
 * whose profile has its share on the wire waits; the ones behind it that
 * belong to other profiles go.
 */
void
webhook_dispatch_start(void)
{
	dlist_mutable_iter iter;

	if (!webhook_http_accepting())
		return;
	dlist_foreach_modify(iter, &ready)
	{
		WebhookRequest *req = dlist_container(WebhookRequest, node, iter.cur);
		ProfileLoad *load;

		if (webhook_http_in_flight() >= webhook_max_concurrency)
			break;
		load = load_of(req->profile_id);
		if (load->count >= webhook_max_per_profile)
			continue;
		dlist_delete(&req->node);
		ready_count--;
		load->count++;
		webhook_request_sign(req);
		webhook_http_start(req);
	}
}

/* A request came back from the wire. */
void
webhook_dispatch_finished(WebhookRequest *req)
{
	unload(req->profile_id);
}

int
webhook_dispatch_ready_count(void)
{
	return ready_count;
}

/* Take back the waiting requests of a profile: they are not to be sent. */
List *
webhook_dispatch_take_back(int64 profile_id)
{
	List	   *result = NIL;
	dlist_mutable_iter iter;

	dlist_foreach_modify(iter, &ready)
	{
		WebhookRequest *req = dlist_container(WebhookRequest, node, iter.cur);

		if (req->profile_id != profile_id && profile_id != WEBHOOK_ALL_PROFILES)
			continue;
		dlist_delete(&req->node);
		ready_count--;
		result = lappend(result, req);
	}
	return result;
}
