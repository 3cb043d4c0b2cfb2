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
 *
 * A profile is also paced: no faster than its max_rate (a token bucket
 * that holds one request, so they go evenly spaced), and not at all for a
 * while after its receiver answered 429 or 503: for the Retry-After it
 * gave (an hour at most), else for a pause that doubles from a second to
 * a minute while such answers go on, and ends with the first success.
 * What a paused profile has waiting is given back to its worker, due when
 * the pause ends: it would hold the worker's claims, and with them every
 * other profile's deliveries, for as long.
 */
#include "webhook.h"
#include "dispatch.h"
#include "http.h"

#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#define PAUSE_FIRST_MS 1000
#define PAUSE_MAX_MS (60 * 1000)
#define RETRY_AFTER_MAX_S 3600
/* a pace not used for this long is forgotten */
#define PACE_IDLE_MS (10 * 60 * 1000)

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

/* A profile's pace: its rate limit's bucket, and a pause it was asked for. */
typedef struct ProfilePace
{
	ProfileKey	key;			/* hash key */
	double		tokens;			/* requests it may start now, at most 1 */
	TimestampTz refilled_at;
	TimestampTz paused_until;
	int			pause_ms;		/* the last pause without Retry-After, 0: none */
	TimestampTz used_at;
} ProfilePace;

static HTAB *profiles_on_wire = NULL;
static HTAB *databases = NULL;
static HTAB *paces = NULL;

/* when a request held back by its pace may start (0: none is) */
static TimestampTz next_paced_start = 0;

/* requests of paused profiles, to give back (webhook_dispatch_next_given_back) */
static dlist_head given_back = DLIST_STATIC_INIT(given_back);

typedef enum PaceVerdict
{
	PACE_GO,					/* it took its token */
	PACE_WAIT,					/* no token yet */
	PACE_PAUSED					/* its profile is paused */
} PaceVerdict;

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
	ctl.keysize = sizeof(ProfileKey);
	ctl.entrysize = sizeof(ProfilePace);
	paces = hash_create("webhook profile paces", 16, &ctl,
						HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

static ProfilePace *
pace_of(uint32 origin, int64 profile_id, bool create, TimestampTz now)
{
	ProfileKey	key;
	bool		found;
	ProfilePace *pace;

	memset(&key, 0, sizeof(key));
	key.origin = origin;
	key.profile_id = profile_id;
	pace = hash_search(paces, &key, create ? HASH_ENTER : HASH_FIND, &found);
	if (pace == NULL)
		return NULL;
	if (!found)
	{
		pace->tokens = 1;
		pace->refilled_at = now;
		pace->paused_until = 0;
		pace->pause_ms = 0;
	}
	pace->used_at = now;
	return pace;
}

static void
wake_at(TimestampTz when)
{
	if (next_paced_start == 0 || when < next_paced_start)
		next_paced_start = when;
}

/*
 * Whether the request may start: its profile is paused (due_again is set
 * to the pause's end), or out of tokens; else it takes its token.
 */
static PaceVerdict
pace_verdict(WebhookRequest *req, TimestampTz now)
{
	ProfilePace *pace;

	if (req->max_rate <= 0 && hash_get_num_entries(paces) == 0)
		return PACE_GO;
	pace = pace_of(req->origin, req->profile_id, req->max_rate > 0, now);
	if (pace == NULL)
		return PACE_GO;
	if (now < pace->paused_until)
	{
		req->due_again = pace->paused_until;
		return PACE_PAUSED;
	}
	if (req->max_rate > 0)
	{
		pace->tokens = Min(1.0, pace->tokens + (now - pace->refilled_at) / 1e6 * req->max_rate);
		pace->refilled_at = now;
		if (pace->tokens < 1.0)
		{
			/* (max_rate is at least 0.001: the wait at most 1000 s) */
			double		wait_us = Min((1.0 - pace->tokens) / req->max_rate * 1e6,
									  (double) USECS_PER_DAY);

			wake_at(now + (int64) wait_us + 1);
			return PACE_WAIT;
		}
		pace->tokens -= 1.0;
	}
	return PACE_GO;
}

/*
 * After a response: a 429 or 503 pauses its profile, a success ends a run
 * of pauses.
 */
static void
pace_after(WebhookRequest *req)
{
	TimestampTz now = GetCurrentTimestamp();
	ProfilePace *pace;
	bool		slow_down = req->outcome == OUTCOME_RESPONSE &&
		(req->status == 429 || req->status == 503);

	pace = pace_of(req->origin, req->profile_id, slow_down, now);
	if (pace == NULL)
		return;
	if (slow_down)
	{
		int64		pause_ms;

		if (req->retry_after_s > 0)
			pause_ms = Min(req->retry_after_s, RETRY_AFTER_MAX_S) * 1000;
		else
			pause_ms = pace->pause_ms = pace->pause_ms == 0 ? PAUSE_FIRST_MS :
				Min(pace->pause_ms * 2, PAUSE_MAX_MS);
		pace->paused_until = Max(pace->paused_until, TimestampTzPlusMilliseconds(now, pause_ms));
	}
	else if (req->outcome == OUTCOME_RESPONSE && req->status >= 200 && req->status < 300)
		pace->pause_ms = 0;
}

/* Forget the paces of profiles that have sent nothing for a while. */
static void
forget_idle_paces(TimestampTz now)
{
	HASH_SEQ_STATUS seq;
	ProfilePace *pace;

	hash_seq_init(&seq, paces);
	while ((pace = hash_seq_search(&seq)) != NULL)
		if (pace->paused_until < now &&
			TimestampDifferenceExceeds(pace->used_at, now, PACE_IDLE_MS))
			hash_search(paces, &pace->key, HASH_REMOVE, NULL);
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
start_ready(DatabaseQueue *queue, TimestampTz now)
{
	dlist_mutable_iter iter;

	dlist_foreach_modify(iter, &queue->ready)
	{
		WebhookRequest *req = dlist_container(WebhookRequest, node, iter.cur);
		ProfileOnWire *wire;
		PaceVerdict verdict;

		if (queue->on_wire >= webhook_max_concurrency)
			break;
		wire = on_wire_of(req->origin, req->profile_id);
		if (wire->count >= webhook_max_per_profile)
			continue;
		verdict = pace_verdict(req, now);
		if (verdict == PACE_WAIT)
			continue;
		dlist_delete(&req->node);
		if (verdict == PACE_PAUSED)
		{
			queue->ready_count--;
			dlist_push_tail(&given_back, &req->node);
			continue;
		}
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
	TimestampTz now;

	next_paced_start = 0;
	if (databases == NULL || !webhook_http_accepting())
		return;
	now = GetCurrentTimestamp();
	forget_idle_paces(now);
	hash_seq_init(&seq, databases);
	while ((queue = hash_seq_search(&seq)) != NULL)
		if (queue->ready_count > 0)
			start_ready(queue, now);
}

/* The next request of a paused profile to give back unsent, or NULL. */
WebhookRequest *
webhook_dispatch_next_given_back(void)
{
	if (dlist_is_empty(&given_back))
		return NULL;
	return dlist_container(WebhookRequest, node, dlist_pop_head_node(&given_back));
}

/*
 * Milliseconds until a request held back by its profile's pace may start,
 * or -1 when none is.
 */
long
webhook_dispatch_wait_ms(void)
{
	long		secs;
	int			usecs;

	if (next_paced_start == 0)
		return -1;
	TimestampDifference(GetCurrentTimestamp(), next_paced_start, &secs, &usecs);
	return Min(secs, 24 * 3600) * 1000 + (usecs + 999) / 1000;
}

/* A request came back from the wire. */
void
webhook_dispatch_finished(WebhookRequest *req)
{
	ProfileOnWire *wire = on_wire_of(req->origin, req->profile_id);
	DatabaseQueue *queue = queue_of(req->origin, false);

	pace_after(req);
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
