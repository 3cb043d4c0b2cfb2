/*
 * dispatch.c
 *		The sender's requests: those waiting for a connection slot, and how
 *		many of each profile are on the wire.
 *
 * The sender keeps the requests it was handed, ready, until a connection
 * slot frees up: at most webhook.max_concurrency on the wire, and at most
 * webhook.max_per_profile of one profile.  A slow receiver fills its own
 * share and no more; the other profiles' requests go around it.  (What the
 * worker has claimed is counted on its side, in claims.c.)
 */
#include "webhook.h"
#include "dispatch.h"
#include "http.h"

#include "utils/hsearch.h"
#include "utils/memutils.h"

typedef struct ProfileOnWire
{
	int64		profile_id;		/* hash key */
	int			count;			/* requests on the wire */
} ProfileOnWire;

static HTAB *on_wire = NULL;

static ProfileOnWire *
on_wire_of(int64 profile_id)
{
	bool		found;
	ProfileOnWire *entry;

	if (on_wire == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(int64);
		ctl.entrysize = sizeof(ProfileOnWire);
		ctl.hcxt = TopMemoryContext;
		on_wire = hash_create("webhook requests on the wire", 64, &ctl,
							  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	entry = hash_search(on_wire, &profile_id, HASH_ENTER, &found);
	if (!found)
		entry->count = 0;
	return entry;
}

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
		ProfileOnWire *wire;

		if (webhook_http_in_flight() >= webhook_max_concurrency)
			break;
		wire = on_wire_of(req->profile_id);
		if (wire->count >= webhook_max_per_profile)
			continue;
		dlist_delete(&req->node);
		ready_count--;
		wire->count++;
		webhook_request_sign(req);
		webhook_http_start(req);
	}
}

/* A request came back from the wire. */
void
webhook_dispatch_finished(WebhookRequest *req)
{
	ProfileOnWire *wire = on_wire_of(req->profile_id);

	if (wire->count > 0)
		wire->count--;
	if (wire->count == 0)
		hash_search(on_wire, &req->profile_id, HASH_REMOVE, NULL);
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
