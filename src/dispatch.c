/*
 * dispatch.c
 *		What the worker holds between claiming a delivery and recording it.
 *
 * The worker claims deliveries in large groups (one transaction for
 * hundreds) and keeps them here, ready, until a connection slot frees up:
 * at most webhook.max_concurrency requests on the wire, and at most
 * webhook.max_per_profile of one profile.  A slow receiver fills its own
 * share and no more; the other profiles' requests go around it.
 *
 * Per profile we count what is claimed (ready, on the wire, or finished
 * but not yet recorded) and what is on the wire.  The claim asks for no
 * more than PREFETCH_FACTOR times the per-profile limit of one profile, so
 * that a profile whose receiver hangs does not hold the whole queue.
 */
#include "webhook.h"
#include "dispatch.h"
#include "http.h"

#include "utils/hsearch.h"
#include "utils/memutils.h"

typedef struct ProfileLoad
{
	int64		profile_id;		/* hash key */
	int			claimed;		/* claimed, not yet recorded */
	int			on_wire;		/* started, not yet finished */
} ProfileLoad;

static HTAB *loads = NULL;
static dlist_head ready = DLIST_STATIC_INIT(ready);
static int	ready_count = 0;
static int	claimed_count = 0;

static ProfileLoad *
load_of(int64 profile_id, bool create)
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
	load = hash_search(loads, &profile_id, create ? HASH_ENTER : HASH_FIND, &found);
	if (create && !found)
	{
		load->claimed = 0;
		load->on_wire = 0;
	}
	return load;
}

/* A delivery the claim gave us: it waits for a slot. */
void
webhook_dispatch_add(WebhookRequest *req)
{
	load_of(req->profile_id, true)->claimed++;
	claimed_count++;
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

	dlist_foreach_modify(iter, &ready)
	{
		WebhookRequest *req = dlist_container(WebhookRequest, node, iter.cur);
		ProfileLoad *load;

		if (webhook_http_in_flight() >= webhook_max_concurrency)
			break;
		load = load_of(req->profile_id, true);
		if (load->on_wire >= webhook_max_per_profile)
			continue;
		dlist_delete(&req->node);
		ready_count--;
		load->on_wire++;
		webhook_request_sign(req);
		webhook_http_start(req);
	}
}

/* A request came back from the wire (it still has to be recorded). */
void
webhook_dispatch_finished(WebhookRequest *req)
{
	ProfileLoad *load = load_of(req->profile_id, true);

	if (load->on_wire > 0)
		load->on_wire--;
}

/* A request's outcome was recorded, or it was given back: it is not ours. */
void
webhook_dispatch_forget(WebhookRequest *req)
{
	ProfileLoad *load = load_of(req->profile_id, true);

	if (load->claimed > 0)
		load->claimed--;
	claimed_count--;
	if (load->claimed == 0 && load->on_wire == 0)
		hash_search(loads, &req->profile_id, HASH_REMOVE, NULL);
}

int
webhook_dispatch_ready_count(void)
{
	return ready_count;
}

int
webhook_dispatch_claimed_count(void)
{
	return claimed_count;
}

/*
 * How many deliveries of each profile we hold, as two parallel lists for
 * the claim: it adds no more than the profile's allowance.
 */
void
webhook_dispatch_loads(List **profile_ids, List **counts)
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
		int64	   *id = palloc(sizeof(int64));

		*id = load->profile_id;
		*profile_ids = lappend(*profile_ids, id);
		*counts = lappend_int(*counts, load->claimed);
	}
}

/* The profiles that have requests waiting for a slot, without repeats. */
List *
webhook_dispatch_waiting_profiles(void)
{
	List	   *result = NIL;
	dlist_iter iter;

	dlist_foreach(iter, &ready)
	{
		WebhookRequest *req = dlist_container(WebhookRequest, node, iter.cur);
		ListCell   *lc;
		bool		seen = false;

		foreach(lc, result)
			if (*(int64 *) lfirst(lc) == req->profile_id)
				seen = true;
		if (!seen)
		{
			int64	   *id = palloc(sizeof(int64));

			*id = req->profile_id;
			result = lappend(result, id);
		}
	}
	return result;
}

/*
 * Take back the waiting requests of a profile (it was disabled or
 * dropped): they are not sent.  The caller gives their deliveries back to
 * the queue and frees them.
 */
List *
webhook_dispatch_take_back(int64 profile_id)
{
	List	   *result = NIL;
	dlist_mutable_iter iter;

	dlist_foreach_modify(iter, &ready)
	{
		WebhookRequest *req = dlist_container(WebhookRequest, node, iter.cur);

		if (req->profile_id != profile_id)
			continue;
		dlist_delete(&req->node);
		ready_count--;
		result = lappend(result, req);
	}
	return result;
}
