/*
 * dispatch.c
 *		The sender's requests: those waiting for a connection slot, and how
 *		many of each database and profile are on the wire.
 *
 * The sender keeps the requests the workers handed it, ready, in one queue
 * per database, until a connection slot frees up: at most
 * webhook.max_concurrency of one database on the wire, and at most
 * webhook.max_per_profile of one profile.  A database's backlog or a slow
 * receiver fills its own share and no more; the other databases' and
 * profiles' requests go around it.  (What a worker has claimed is counted
 * on its side, in claims.c.)
 */
#include "webhook.h"
#include "dispatch.h"
#include "http.h"

#include "utils/hsearch.h"
#include "utils/memutils.h"

typedef struct ProfileKey
{
	uint32		origin;
	int64		profile_id;
} ProfileKey;

typedef struct ProfileOnWire
{
	ProfileKey	key;			/* hash key */
	int			count;			/* requests on the wire */
} ProfileOnWire;

/* One database's requests: those that came on one worker's channel. */
typedef struct DatabaseQueue
{
	uint32		origin;			/* hash key: the channel (see sender.c) */
	dlist_head	ready;			/* oldest first */
	int			ready_count;
	int			on_wire;
} DatabaseQueue;

static HTAB *profiles_on_wire = NULL;
static HTAB *databases = NULL;

static void
make_tables(void)
{
	HASHCTL		ctl;

	ctl.keysize = sizeof(ProfileKey);
	ctl.entrysize = sizeof(ProfileOnWire);
	ctl.hcxt = TopMemoryContext;
	profiles_on_wire = hash_create("webhook requests on the wire", 64, &ctl,
								   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	ctl.keysize = sizeof(uint32);
	ctl.entrysize = sizeof(DatabaseQueue);
	databases = hash_create("webhook requests by database", 16, &ctl,
							HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

static ProfileOnWire *
on_wire_of(uint32 origin, int64 profile_id)
{
	ProfileKey	key;
	bool		found;
	ProfileOnWire *entry;

	memset(&key, 0, sizeof(key));
	key.origin = origin;
	key.profile_id = profile_id;
	entry = hash_search(profiles_on_wire, &key, HASH_ENTER, &found);
	if (!found)
		entry->count = 0;
	return entry;
}

static DatabaseQueue *
queue_of(uint32 origin, bool create)
{
	bool		found;
	DatabaseQueue *queue;

	if (databases == NULL)
		make_tables();
	queue = hash_search(databases, &origin, create ? HASH_ENTER : HASH_FIND, &found);
	if (queue != NULL && !found)
	{
		dlist_init(&queue->ready);
		queue->ready_count = 0;
		queue->on_wire = 0;
	}
	return queue;
}

/* A queue with nothing ready and nothing on the wire is let go. */
static void
forget_if_empty(DatabaseQueue *queue)
{
	if (queue->ready_count == 0 && queue->on_wire == 0)
		hash_search(databases, &queue->origin, HASH_REMOVE, NULL);
}

void
webhook_dispatch_add(WebhookRequest *req)
{
	DatabaseQueue *queue = queue_of(req->origin, true);

	dlist_push_tail(&queue->ready, &req->node);
	queue->ready_count++;
}

/*
 * Start one database's ready requests, oldest first, while it has slots.
 * A request whose profile has its share on the wire waits; the ones behind
 * it that belong to other profiles go.
 */
static void
start_ready(DatabaseQueue *queue)
{
	dlist_mutable_iter iter;

	dlist_foreach_modify(iter, &queue->ready)
	{
		WebhookRequest *req = dlist_container(WebhookRequest, node, iter.cur);
		ProfileOnWire *wire;

		if (queue->on_wire >= webhook_max_concurrency)
			break;
		wire = on_wire_of(req->origin, req->profile_id);
		if (wire->count >= webhook_max_per_profile)
			continue;
		dlist_delete(&req->node);
		queue->ready_count--;
		queue->on_wire++;
		wire->count++;
		webhook_request_sign(req);
		webhook_http_start(req);
	}
}

/* Start ready requests of every database, each within its shares. */
void
webhook_dispatch_start(void)
{
	HASH_SEQ_STATUS seq;
	DatabaseQueue *queue;

	if (databases == NULL || !webhook_http_accepting())
		return;
	hash_seq_init(&seq, databases);
	while ((queue = hash_seq_search(&seq)) != NULL)
		if (queue->ready_count > 0)
			start_ready(queue);
}

/* A request came back from the wire. */
void
webhook_dispatch_finished(WebhookRequest *req)
{
	ProfileOnWire *wire = on_wire_of(req->origin, req->profile_id);
	DatabaseQueue *queue = queue_of(req->origin, false);

	if (wire->count > 0)
		wire->count--;
	if (wire->count == 0)
		hash_search(profiles_on_wire, &wire->key, HASH_REMOVE, NULL);
	if (queue != NULL)
	{
		if (queue->on_wire > 0)
			queue->on_wire--;
		forget_if_empty(queue);
	}
}

/*
 * Take back the waiting requests of a database's profile (or of all its
 * profiles): they are not to be sent.
 */
List *
webhook_dispatch_take_back(uint32 origin, int64 profile_id)
{
	List	   *result = NIL;
	dlist_mutable_iter iter;
	DatabaseQueue *queue = queue_of(origin, false);

	if (queue == NULL)
		return NIL;
	dlist_foreach_modify(iter, &queue->ready)
	{
		WebhookRequest *req = dlist_container(WebhookRequest, node, iter.cur);

		if (req->profile_id != profile_id && profile_id != WEBHOOK_ALL_PROFILES)
			continue;
		dlist_delete(&req->node);
		queue->ready_count--;
		result = lappend(result, req);
	}
	forget_if_empty(queue);
	return result;
}
