/*
 * queue.h
 *		The worker's work in the database: each call is one short transaction.
 */
#ifndef WEBHOOK_QUEUE_H
#define WEBHOOK_QUEUE_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "nodes/pg_list.h"

/* One transaction of the worker: see webhook_queue_step. */
typedef struct WebhookStep
{
	/* in */
	List	   *finished;		/* WebhookRequest * to record */
	List	   *unsent;			/* WebhookRequest * returned unsent */
	int			claim_limit;	/* deliveries to claim at most (0: none) */
	bool		sending;		/* false: claim nothing, give back what is claimed */
	bool		expand;			/* new occurrences may be queued */
	bool		assemble;		/* a batch may be due to be put together */
	bool		find_next_due;	/* what is due may have changed: look */
	bool		fire_deadlines; /* deadlines may be due, or the next sooner */
	bool		claim_as_made;	/* the last claim took all that was due:
								 * unless something came due since, claim
								 * what the expansion makes as it makes it,
								 * and no claim besides */
	bool		release_waiting;	/* look for deliveries in order whose
									 * turn has come (see release_sql) */

	/* out */
	bool		extension_present;	/* false: the extension was dropped */
	List	   *claimed;		/* WebhookRequest *, for the sender */
	List	   *claim_marks;	/* ClaimMark *: how far the claim got */
	List	   *stopped;		/* int64 * profile ids disabled or dropped */
	bool		claim_blocked;	/* a due delivery may be left unclaimed */
	bool		more_occurrences;	/* the expansion was cut short */
	bool		more_batches;	/* putting due batches together was cut short */
	bool		next_due_found; /* looked for next_due: it is what follows */
	TimestampTz next_due;		/* earliest waiting delivery or batch, 0: none */
	bool		deadlines_looked;	/* fired what was due: next_deadline follows */
	TimestampTz next_deadline;	/* when to look at deadlines again, 0: none */
	TimestampTz expand_again_at;	/* a locked table held up the
									 * expansion: try again then (0: no) */
	TimestampTz taken_at;		/* what was due by then was taken (now()) */
} WebhookStep;

extern bool webhook_queue_recover(void);

/*
 * The installed schema is older than 0.9 (the library was installed before
 * ALTER EXTENSION webhook UPDATE): the worker serves it as it is.
 */
extern bool webhook_schema_before_0_9(void);
extern bool webhook_schema_before_0_11(void);
extern bool webhook_schema_before_0_12(void);
extern bool webhook_schema_before_0_13(void);

/*
 * Whether the delivery D (an SQL alias) of an ordering profile must wait:
 * an unfinished delivery of its profile, made before it (the condition
 * EARLIER on e and D), goes before it in the order: one of its object, or
 * a batch; or, for a batch (order key ''), any.  Each branch is one probe
 * of delivery_order_idx or delivery_ordered_idx.
 */
#define ORDER_BLOCKED(d, earlier) \
"(EXISTS (SELECT FROM webhook.delivery e" \
"          WHERE e.profile_id = " d ".profile_id AND e.order_key IS NOT NULL" \
"            AND e.order_key = ANY (ARRAY[" d ".order_key, ''])" \
"            AND e.next_attempt_at IS NOT NULL AND " earlier ")" \
" OR (" d ".order_key = '' AND EXISTS (SELECT FROM webhook.delivery e" \
"          WHERE e.profile_id = " d ".profile_id AND e.order_key IS NOT NULL" \
"            AND e.next_attempt_at IS NOT NULL AND " earlier ")))"

/*
 * Deliveries the expansion claims as it makes them: those due at once, of
 * enabled profiles, within the room given and each profile's allowance.
 */
typedef struct MadeClaim
{
	int64		delivery_id;
	int64		profile_id;
	TransactionId profile_version;	/* its profile row's xmin, as the step
									 * saw it: what the settings kept from
									 * earlier steps are checked against */
	char	   *webhook_id;
	char	   *body;
} MadeClaim;

typedef struct ClaimAsMade
{
	int			room;			/* in: how many it may claim in all */
	List	   *made;			/* out: MadeClaim *, in the order made */
	bool		all_taken;		/* out: none due at once was left unclaimed */
} ClaimAsMade;

/* deadline.c, in a step: queue the deadline events that are due */
extern bool webhook_fire_deadlines(TimestampTz *next_at);

/* expand.c, in a step */
extern bool webhook_expand(bool *deferred, bool *batched, ClaimAsMade *claim);
extern TimestampTz webhook_expand_retry_at(void);

/* a statement of the worker's, prepared once; the counts it returns */
struct _SPI_plan;
extern struct _SPI_plan *webhook_keep_plan(struct _SPI_plan **cache, const char *sql,
										   int nargs, Oid *argtypes, bool generic);
struct HeapTupleData;
struct TupleDescData;
extern bool webhook_rows_left(struct HeapTupleData *row, struct TupleDescData *desc,
							  int locked_column, int lock_step);
extern void webhook_queue_step(WebhookStep *step);
extern bool webhook_queue_purge(void);
extern bool webhook_queue_sending(void);

struct WebhookRequest;
extern struct WebhookRequest *webhook_profile_request(int64 profile_id, const char *webhook_id,
													  const char *body);

#endif							/* WEBHOOK_QUEUE_H */
