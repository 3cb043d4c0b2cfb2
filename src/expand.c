/*
 * expand.c
 *		Turn the changes the capture trigger queued in webhook.occurrence into
 *		deliveries: for each changed row and binding it matched, an envelope
 *		(envelope.c) and the delivery that carries it, or its place in a
 *		batch.  Runs in the worker's step (see webhook_queue_step).
 *
 * One statement takes the queue rows with what their envelopes need (
 * take_sql), C makes the envelopes (each queue row's JSON split once,
 * whatever the number of its bindings) and places the items of batching
 * profiles in their batches, and a second statement writes what was made:
 * the deliveries alone (insert_sql), or with the batches grown and their
 * items filed (write_batches_sql).
 *
 * A delivery is made pending, or failed with the capture's error; every
 * change of its status after that is queue.c's.
 */
#include "webhook.h"
#include "claims.h"
#include "envelope.h"
#include "queue.h"
#include "rowjson.h"

#include "catalog/pg_type.h"
#include "common/cryptohash.h"
#include "common/jsonapi.h"
#include "common/sha2.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/hsearch.h"
#include "utils/jsonfuncs.h"
#include "miscadmin.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

/* Queue rows that one expansion locks at most. */
#define EXPAND_LOCK_STEP 1000

/* Changed rows turned into deliveries by one transaction, about. */
#define EXPAND_STEP 2000

/* An expansion held up by a locked table is tried again after this. */
#define EXPAND_RETRY_MS 200

/*
 * The changes of queue rows, oldest queue row first, up to $1 changed rows
 * (and at least one queue row); the queue rows of the tables in $2 wait
 * (see DeferredTable).  Each comes with the bindings it matched (a change
 * that matched several bindings of one event in one profile keeps the
 * lowest) and what its envelope and its batch need, in no order; and one
 * row without a queue row, that says how many queue rows were locked and
 * taken.  The rows to delete are an array, looked up by their key: the
 * statistics of a queue that was empty when last analyzed would otherwise
 * have the planner join them to the queue row by row, in time that grows
 * with the square of the backlog.
 */
#define TAKE_SQL(origin_filter, halo_columns, claimable, ordering) \
"WITH locked AS (" \
"  SELECT occurrence_id, row_count FROM webhook.occurrence" \
"   WHERE table_oid <> ALL ($2::oid[])" \
"   ORDER BY occurrence_id LIMIT " CppAsString2(EXPAND_LOCK_STEP) " FOR UPDATE SKIP LOCKED" \
"), picked AS (" \
"  SELECT occurrence_id FROM (" \
"    SELECT occurrence_id, row_count," \
"           pg_catalog.sum(row_count) OVER (ORDER BY occurrence_id) AS running FROM locked) AS x" \
"   WHERE running - row_count < $1" \
"), claimed AS (" \
"  DELETE FROM webhook.occurrence" \
"   WHERE occurrence_id = ANY (ARRAY(SELECT occurrence_id FROM picked))" \
"  RETURNING *" \
"), matched AS (" \
"  SELECT DISTINCT ON (c.occurrence_id, b.profile_id, b.event_id) c.occurrence_id, b.binding_id" \
"    FROM claimed c" \
"   CROSS JOIN LATERAL pg_catalog.unnest(c.bindings) AS m(binding_id)" \
"    JOIN webhook.binding b ON b.binding_id = m.binding_id" \
"    JOIN webhook.profile p ON p.profile_id = b.profile_id" \
origin_filter \
"   ORDER BY c.occurrence_id, b.profile_id, b.event_id, b.binding_id" \
")" \
"SELECT NULL::int8, NULL::timestamptz, NULL::text, NULL::text, NULL::json, NULL::json," \
"       NULL::int8, NULL::int8, NULL::text, NULL::text, NULL::jsonb, NULL::text, NULL::text," \
"       NULL::text, NULL::text, NULL::oid, NULL::oid, NULL::text[], NULL::text, NULL::oid," \
"       NULL::text, NULL::text, NULL::int8, NULL::text, NULL::interval, NULL::int4, NULL::bool, NULL::xid," \
"       NULL::text, NULL::text, NULL::text, NULL::text, NULL::text," \
"       (SELECT pg_catalog.count(*) FROM locked), (SELECT pg_catalog.count(*) FROM claimed)" \
" UNION ALL " \
"SELECT c.occurrence_id, c.captured_at, c.capture_error, c.id_seed::text, c.new_rows, c.old_rows," \
"        b.binding_id, p.profile_id, p.name, p.payload, p.payload_fields, e.name, e.title," \
"        e.object, e.operation, e.table_oid::oid, e.created_by::oid, e.key_columns," \
"        e.parent_object, e.parent_table::oid, e.parent_column, e.parent_key," \
"        e.event_id, p.batching, p.batch_wait, p.batch_max_items, " claimable ", p.xmin," \
"        " halo_columns ", " ordering ", NULL, NULL" \
"   FROM claimed c" \
"   JOIN matched m ON m.occurrence_id = c.occurrence_id" \
"   JOIN webhook.binding b ON b.binding_id = m.binding_id" \
"   JOIN webhook.event e ON e.event_id = b.event_id" \
"   JOIN webhook.profile p ON p.profile_id = b.profile_id"

/*
 * A rate-limited profile's deliveries are not claimed as they are made:
 * its claims are kept few (see claim_sql in queue.c).  Nor are an ordering
 * profile's, which may have to wait their turn.
 */
static const char *take_sql =
TAKE_SQL("   WHERE c.origin IS NULL OR c.origin <> ALL (p.ignore_origins)",
		 "p.envelope, p.guid::text, e.message, e.agent_column",
		 "p.enabled AND p.max_rate IS NULL AND p.ordering = 'none'", "p.ordering");

/* The same of a schema before 0.13, which orders nothing. */
static const char *take_sql_before_0_13 =
TAKE_SQL("   WHERE c.origin IS NULL OR c.origin <> ALL (p.ignore_origins)",
		 "p.envelope, p.guid::text, e.message, e.agent_column", "p.enabled AND p.max_rate IS NULL",
		 "'none'::text");

/* The same of a schema before 0.12, which has no rate limits. */
static const char *take_sql_before_0_12 =
TAKE_SQL("   WHERE c.origin IS NULL OR c.origin <> ALL (p.ignore_origins)",
		 "p.envelope, p.guid::text, e.message, e.agent_column", "p.enabled", "'none'::text");

/*
 * The same of a schema before 0.9 (a library installed before ALTER
 * EXTENSION webhook UPDATE): no origins, the standard envelope.
 */
static const char *take_sql_before_0_9 =
TAKE_SQL("", "'standard'::text, NULL::text, NULL::text, NULL::text", "p.enabled", "'none'::text");

/*
 * The deliveries made, in order: single items, and batches.  A batch's
 * events arrive as one text, the distinct names joined by commas (an
 * event's name has none), and are kept sorted, as a grown batch's are.
 * No due time is now: a single item or a full batch is due at once.  One
 * claimed as it is made ($10, see ClaimAsMade) is made sending, its first
 * attempt begun.  One in an object's order ($11, see delivery.order_key)
 * waits for its turn when an unfinished one goes before it.
 */
#define INSERT_DELIVERIES(order_key_column, next_attempt) \
"INSERT INTO webhook.delivery (profile_id, webhook_id, events, items, body, status, attempts,"\
"                              last_attempt_at, next_attempt_at, captured_at, error, batch_key"\
order_key_column ")"\
"SELECT d.profile_id, d.webhook_id,"\
"       CASE WHEN pg_catalog.strpos(d.events, ',') = 0 THEN ARRAY[d.events]"\
"            ELSE ARRAY(SELECT e FROM pg_catalog.unnest(pg_catalog.string_to_array(d.events, ','))"\
"                         AS e ORDER BY 1) END,"\
"       d.items, d.body,"\
"       CASE WHEN d.error IS NOT NULL THEN 'failed' WHEN d.claimed THEN 'sending' ELSE 'pending' END,"\
"       CASE WHEN d.claimed THEN 1 ELSE 0 END, CASE WHEN d.claimed THEN pg_catalog.now() END,"\
"       CASE WHEN d.error IS NULL THEN " next_attempt " END,"\
"       d.captured_at, d.error, d.batch_key" order_key_column \
"  FROM ROWS FROM (pg_catalog.unnest($1::int8[]), pg_catalog.unnest($2::text[]),"\
"                  pg_catalog.unnest($3::text[]), pg_catalog.unnest($4::int4[]),"\
"                  pg_catalog.unnest($5::json[]), pg_catalog.unnest($6::timestamptz[]),"\
"                  pg_catalog.unnest($7::timestamptz[]), pg_catalog.unnest($8::text[]),"\
"                  pg_catalog.unnest($9::text[]), pg_catalog.unnest($10::bool[]),"\
"                  pg_catalog.unnest($11::text[]))"\
"       WITH ORDINALITY AS d(profile_id, webhook_id, events, items, body, due_at, captured_at,"\
"                            error, batch_key, claimed, order_key, n)"\
" ORDER BY d.n"\
" RETURNING delivery_id, webhook_id, status"

/*
 * A delivery in order waits when one made before it in this statement has
 * its key, or an unfinished one of the profile goes before it (see
 * ORDER_BLOCKED in queue.h; every delivery made before has a lower id).  A
 * batch still open is due when it closes, and waits then if it must (see
 * assemble_sql in queue.c).
 */
#define ORDERED_INSERT \
INSERT_DELIVERIES(", order_key", \
"CASE WHEN d.order_key IS NOT NULL AND d.due_at IS NULL"\
"           AND (pg_catalog.row_number() OVER (PARTITION BY d.profile_id, d.order_key ORDER BY d.n) > 1"\
"                OR " ORDER_BLOCKED("d", "true") ")"\
"      THEN 'infinity'::timestamptz ELSE COALESCE(d.due_at, pg_catalog.now()) END")

/* The same of a schema before 0.13, which orders nothing. */
#define UNORDERED_INSERT INSERT_DELIVERIES("", "COALESCE(d.due_at, pg_catalog.now())")

/* The ids of those claimed as made, in the order they were made. */
#define INSERT_SQL(insert) \
"WITH made AS (" insert ")" \
"SELECT delivery_id, webhook_id FROM made WHERE status = 'sending'"

static const char *insert_sql = INSERT_SQL(ORDERED_INSERT);
static const char *insert_sql_before_0_13 = INSERT_SQL(UNORDERED_INSERT);

/*
 * The deliveries made, the open batches that grew ($12 to $15: the last
 * item's number, the new items' events, whether the batch is full now: it
 * then takes no more, and is due), and the items filed in batch_item ($16
 * to $19), each in an open batch by its id or in a new one by its
 * webhook-id; then, as insert_sql, those claimed as made.
 */
#define WRITE_BATCHES_SQL(insert) \
"WITH made AS (" \
insert \
"), grown AS (" \
"  UPDATE webhook.delivery d" \
"     SET items = g.last_no," \
"         events = ARRAY(SELECT DISTINCT x FROM pg_catalog.unnest(" \
"                          d.events || pg_catalog.string_to_array(g.events, ',')) AS x ORDER BY 1)," \
"         batch_key = CASE WHEN g.now_full THEN NULL ELSE d.batch_key END," \
"         next_attempt_at = CASE WHEN g.now_full AND d.status = 'pending' THEN pg_catalog.now()" \
"                                ELSE d.next_attempt_at END" \
"    FROM ROWS FROM (pg_catalog.unnest($12::int8[]), pg_catalog.unnest($13::int4[])," \
"                    pg_catalog.unnest($14::text[]), pg_catalog.unnest($15::bool[]))" \
"         AS g(delivery_id, last_no, events, now_full)" \
"   WHERE d.delivery_id = g.delivery_id AND d.delivery_id = ANY ($12)" \
"), filed AS (" \
"  INSERT INTO webhook.batch_item (delivery_id, item_no, envelope)" \
"  SELECT COALESCE(i.delivery_id, m.delivery_id), i.item_no, i.envelope" \
"    FROM ROWS FROM (pg_catalog.unnest($16::int8[]), pg_catalog.unnest($17::text[])," \
"                    pg_catalog.unnest($18::int4[]), pg_catalog.unnest($19::json[]))" \
"         AS i(delivery_id, webhook_id, item_no, envelope)" \
"    LEFT JOIN made m ON m.webhook_id = i.webhook_id" \
")" \
"SELECT delivery_id, webhook_id FROM made WHERE status = 'sending'"

static const char *write_batches_sql = WRITE_BATCHES_SQL(ORDERED_INSERT);
static const char *write_batches_sql_before_0_13 = WRITE_BATCHES_SQL(UNORDERED_INSERT);

/*
 * The open batches of the profiles that have items to place: the newest of
 * each key takes them.  One locked by someone else (an alter_profile not
 * committed yet) is passed over, as the worker never waits on a user's
 * transaction: its items then start another batch.
 */
static const char *open_batches_sql =
"SELECT d.delivery_id, d.profile_id, d.batch_key, d.items FROM webhook.delivery d"
" WHERE d.batch_key IS NOT NULL AND d.profile_id = ANY ($1) FOR UPDATE SKIP LOCKED";

/*
 * A queue row that the expansion cannot turn into deliveries (a value that
 * the JSON parser refuses, say): its changes become failed deliveries with
 * the error, and no payload.  It is the row the expansion takes first.
 */
static const char *poison_sql =
"UPDATE webhook.occurrence o"
"   SET capture_error = 'the worker could not make a payload of this change: ' || $1,"
"       new_rows = CASE WHEN o.new_rows IS NOT NULL THEN h.nulls END,"
"       old_rows = CASE WHEN o.old_rows IS NOT NULL THEN h.nulls END"
"  FROM (SELECT x.occurrence_id,"
"               (SELECT pg_catalog.json_agg(NULL::json)"
"                  FROM pg_catalog.generate_series(1, LEAST(x.row_count, 1000))) AS nulls"
"          FROM webhook.occurrence x WHERE x.table_oid <> ALL ($2::oid[])"
"         ORDER BY x.occurrence_id LIMIT 1 FOR UPDATE SKIP LOCKED) AS h"
" WHERE o.occurrence_id = h.occurrence_id";
static SPIPlanPtr poison_plan = NULL;

/*
 * The elements of a JSON array, as text: the rows of a queue row, split
 * once for all the bindings they matched.  NULL is no array (no element).
 */
typedef struct ArraySplit
{
	JsonLexContext *lex;
	char	   *start;
	List	   *elements;
} ArraySplit;

static void
element_start(void *state, bool isnull)
{
	ArraySplit *split = state;

	if (split->lex->lex_level == 1)
		split->start = split->lex->token_start;
}

static void
element_end(void *state, bool isnull)
{
	ArraySplit *split = state;

	if (split->lex->lex_level == 1)
		split->elements = lappend(split->elements,
								  cstring_to_text_with_len(split->start,
														   split->lex->prev_token_terminator - split->start));
}

/* What json_array_elements says of a queue row that is not an array. */
static void
not_an_array(void *state)
{
	if (((ArraySplit *) state)->lex->lex_level == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cannot call %s on a non-array", "json_array_elements")));
}

static void
scalar_not_an_array(void *state, char *token, JsonTokenType tokentype)
{
	if (((ArraySplit *) state)->lex->lex_level == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cannot call %s on a scalar", "json_array_elements")));
}

static List *
json_array_texts(Datum array, bool isnull)
{
	text	   *json;
	ArraySplit	split = {0};
	JsonSemAction sem = {0};
	JsonParseErrorType result;
	List	   *spans;
	ListCell   *lc;

	if (isnull)
		return NIL;
	json = DatumGetTextPP(array);
	/* a json value is valid JSON: a scan finds its elements, or the parser */
	if (webhook_scan_json_array(VARDATA_ANY(json), VARSIZE_ANY_EXHDR(json), &spans))
	{
		foreach(lc, spans)
		{
			JsonField  *span = lfirst(lc);

			split.elements = lappend(split.elements,
									 cstring_to_text_with_len(span->value, span->len));
		}
		list_free_deep(spans);
		return split.elements;
	}
	list_free_deep(spans);
	split.lex = makeJsonLexContextCstringLen(VARDATA_ANY(json), VARSIZE_ANY_EXHDR(json),
											 GetDatabaseEncoding(), false);
	sem.semstate = &split;
	sem.array_element_start = element_start;
	sem.array_element_end = element_end;
	sem.object_start = not_an_array;
	sem.scalar = scalar_not_an_array;
	result = pg_parse_json(split.lex, &sem);
	if (result != JSON_SUCCESS)
		json_ereport_error(result, split.lex);
	return split.elements;
}

/*
 * The name-based UUID (RFC 9562, version 8, SHA-256) of the text NAME, as
 * text: what webhook._name_uuid makes of it.
 */
static char *
name_uuid(const char *name)
{
	uint8		h[PG_SHA256_DIGEST_LENGTH];
	pg_cryptohash_ctx *ctx = pg_cryptohash_create(PG_SHA256);
	char	   *id = palloc(37);
	char	   *out = id;

	if (pg_cryptohash_init(ctx) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) name, strlen(name)) < 0 ||
		pg_cryptohash_final(ctx, h, sizeof(h)) < 0)
		elog(ERROR, "could not make a webhook-id: %s", pg_cryptohash_error(ctx));
	pg_cryptohash_free(ctx);
	h[6] = (h[6] & 15) | 128;
	h[8] = (h[8] & 63) | 128;
	for (int i = 0; i < 16; i++)
	{
		if (i == 4 || i == 6 || i == 8 || i == 10)
			*out++ = '-';
		*out++ = "0123456789abcdef"[h[i] >> 4];
		*out++ = "0123456789abcdef"[h[i] & 15];
	}
	*out = '\0';
	return id;
}

/*
 * The webhook-id of the item of row ord of a queue row and a binding: the
 * same however often the queue row is expanded.
 */
static char *
item_id(const char *seed, int64 ord, int64 binding_id)
{
	char	   *name = psprintf("%s/" INT64_FORMAT "/" INT64_FORMAT, seed, ord, binding_id);
	char	   *id = name_uuid(name);

	pfree(name);
	return id;
}

/* A change's own id, the same for every binding it matched. */
static char *
change_id(const char *seed, int64 ord)
{
	char	   *name = psprintf("%s/" INT64_FORMAT, seed, ord);
	char	   *id = name_uuid(name);

	pfree(name);
	return id;
}

/* A new batch's webhook-id derives from its first item's: it too is stable. */
static char *
batch_id(const char *first_item_id)
{
	char	   *name = psprintf("batch/%s", first_item_id);
	char	   *id = name_uuid(name);

	pfree(name);
	return id;
}

/* The columns of take_sql. */
enum
{
	TAKE_OCCURRENCE = 1,
	TAKE_CAPTURED_AT,
	TAKE_CAPTURE_ERROR,
	TAKE_ID_SEED,
	TAKE_NEW_ROWS,
	TAKE_OLD_ROWS,
	TAKE_BINDING,
	TAKE_PROFILE_ID,
	TAKE_PROFILE,
	TAKE_PAYLOAD,
	TAKE_FIELDS,
	TAKE_EVENT,
	TAKE_TITLE,
	TAKE_OBJECT,
	TAKE_OPERATION,
	TAKE_TABLE,
	TAKE_READER,
	TAKE_KEY_COLUMNS,
	TAKE_PARENT_OBJECT,
	TAKE_PARENT_TABLE,
	TAKE_PARENT_COLUMN,
	TAKE_PARENT_KEY,
	TAKE_EVENT_ID,
	TAKE_BATCHING,
	TAKE_BATCH_WAIT,
	TAKE_BATCH_MAX_ITEMS,
	TAKE_ENABLED,				/* and claimable as made */
	TAKE_PROFILE_VERSION,		/* the profile row's xmin: see MadeClaim */
	TAKE_ENVELOPE,
	TAKE_PROFILE_GUID,
	TAKE_MESSAGE,
	TAKE_AGENT_COLUMN,
	TAKE_ORDERING,
	TAKE_LOCKED,
	TAKE_TAKEN					/* the column after TAKE_LOCKED: see webhook_rows_left */
};

/* A row of take_sql, its columns read once. */
typedef struct TakenRow
{
	Datum		values[TAKE_TAKEN];
	bool		nulls[TAKE_TAKEN];
} TakenRow;

#define TAKEN(row, column) ((row)->values[(column) - 1])
#define TAKEN_NULL(row, column) ((row)->nulls[(column) - 1])

/* An item of a batching profile, waiting for its place in a batch. */
typedef struct BatchedItem
{
	char	   *id;
	Datum		envelope;
	char	   *event;
	Datum		captured_at;
	bool		no_captured_at;
} BatchedItem;

/*
 * The new items of one profile's batches of one key, in commit order.  The
 * key is as batch_key stores it: the binding's, the event's, or any.
 */
typedef struct BatchKey
{
	int64		profile_id;
	char		key[32];
} BatchKey;

typedef struct NewBatchItems
{
	BatchKey	key;			/* the hash key: first */
	int			max_items;
	Datum		wait;
	List	   *items;			/* BatchedItem * */
	int64		open_id;		/* the open batch they join, or 0 */
	int			open_items;
	bool		ordered;		/* the profile orders: its batches go one at a time */
} NewBatchItems;

/* What a step makes, as the arrays of insert_sql and write_batches_sql. */
typedef struct Expansion
{
	/* new deliveries */
	ArrayBuildState *profile_ids;
	ArrayBuildState *webhook_ids;
	ArrayBuildState *events;
	ArrayBuildState *items;
	ArrayBuildState *bodies;
	ArrayBuildState *due_at;
	ArrayBuildState *captured_at;
	ArrayBuildState *errors;
	ArrayBuildState *batch_keys;
	ArrayBuildState *claimed;
	ArrayBuildState *order_keys;
	int			made;
	ClaimAsMade *claim;			/* NULL: none is claimed as it is made */
	/* open batches that grew */
	ArrayBuildState *grown_ids;
	ArrayBuildState *grown_last_nos;
	ArrayBuildState *grown_events;
	ArrayBuildState *grown_full;
	int			grown;
	/* items filed in batch_item */
	ArrayBuildState *filed_ids;
	ArrayBuildState *filed_webhook_ids;
	ArrayBuildState *filed_nos;
	ArrayBuildState *filed_envelopes;
	int			filed;
	/* the batching profiles' items, by batch key, in order of their first */
	HTAB	   *batches;
	List	   *batch_order;	/* NewBatchItems * */
} Expansion;

static void
add_column(ArrayBuildState **state, Datum value, bool isnull, Oid type)
{
	*state = accumArrayResult(*state, value, isnull, type, CurrentMemoryContext);
}

static void
add_text(ArrayBuildState **state, const char *value)
{
	add_column(state, value ? CStringGetTextDatum(value) : (Datum) 0, value == NULL, TEXTOID);
}

/*
 * Whether a delivery due at once, of an enabled profile, is claimed as it
 * is made: while there is room, and its profile has not its allowance
 * claimed.  All of them are made oldest first, so these are the oldest.
 */
static bool
claim_as_made(Expansion *x, TakenRow *item_of, const char *webhook_id, Datum body)
{
	int64		profile_id = DatumGetInt64(TAKEN(item_of, TAKE_PROFILE_ID));
	ClaimAsMade *claim = x->claim;
	int			held = webhook_claims_held(profile_id);
	ListCell   *lc;
	MadeClaim  *m;

	foreach(lc, claim->made)
		if (((MadeClaim *) lfirst(lc))->profile_id == profile_id)
			held++;
	if (list_length(claim->made) >= claim->room || held >= webhook_claims_allowance_of(profile_id))
	{
		claim->all_taken = false;
		return false;
	}
	m = palloc(sizeof(MadeClaim));
	m->delivery_id = 0;			/* known once it is written */
	m->profile_id = profile_id;
	m->profile_version = DatumGetTransactionId(TAKEN(item_of, TAKE_PROFILE_VERSION));
	m->webhook_id = pstrdup(webhook_id);
	m->body = TextDatumGetCString(body);
	claim->made = lappend(claim->made, m);
	return true;
}

/* item_of: the take's row of a single item (NULL: a batch) */
static void
add_delivery(Expansion *x, Datum profile_id, const char *webhook_id, const char *events,
			 int items, Datum body, bool no_body, Datum due_at, bool no_due_at,
			 Datum captured_at, bool no_captured_at, Datum error, bool no_error,
			 const char *batch_key, const char *order_key, TakenRow *item_of)
{
	bool		claimed = false;

	/* one due at once that is not claimed here is left for the claim */
	if (x->claim != NULL && no_due_at && no_error)
	{
		if (item_of != NULL && DatumGetBool(TAKEN(item_of, TAKE_ENABLED)))
			claimed = claim_as_made(x, item_of, webhook_id, body);
		else
			x->claim->all_taken = false;
	}
	add_column(&x->claimed, BoolGetDatum(claimed), false, BOOLOID);
	add_column(&x->profile_ids, profile_id, false, INT8OID);
	add_text(&x->webhook_ids, webhook_id);
	add_text(&x->events, events);
	add_column(&x->items, Int32GetDatum(items), false, INT4OID);
	add_column(&x->bodies, body, no_body, JSONOID);
	add_column(&x->due_at, due_at, no_due_at, TIMESTAMPTZOID);
	add_column(&x->captured_at, captured_at, no_captured_at, TIMESTAMPTZOID);
	add_column(&x->errors, error, no_error, TEXTOID);
	add_text(&x->batch_keys, batch_key);
	add_text(&x->order_keys, order_key);
	x->made++;
}

/*
 * Whether an item goes into a batch, and under which key: not when its
 * profile does not batch, nor when its change could not be captured (it is
 * a failed delivery of its own).
 */
static bool
batch_key_of(TakenRow *binding, BatchKey *key)
{
	char	   *batching = TextDatumGetCString(TAKEN(binding, TAKE_BATCHING));

	if (strcmp(batching, "none") == 0 || !TAKEN_NULL(binding, TAKE_CAPTURE_ERROR))
		return false;
	MemSet(key, 0, sizeof(*key));
	key->profile_id = DatumGetInt64(TAKEN(binding, TAKE_PROFILE_ID));
	if (strcmp(batching, "same_event") == 0)
		snprintf(key->key, sizeof(key->key), "binding " INT64_FORMAT,
				 DatumGetInt64(TAKEN(binding, TAKE_BINDING)));
	else if (strcmp(batching, "same_event_type") == 0)
		snprintf(key->key, sizeof(key->key), "event " INT64_FORMAT,
				 DatumGetInt64(TAKEN(binding, TAKE_EVENT_ID)));
	else
		strlcpy(key->key, "any", sizeof(key->key));
	return true;
}

/* Whether the item's profile sends each object's deliveries in order. */
static bool
ordered(TakenRow *binding)
{
	text	   *ordering = DatumGetTextPP(TAKEN(binding, TAKE_ORDERING));

	return VARSIZE_ANY_EXHDR(ordering) == 10 && memcmp(VARDATA_ANY(ordering), "per_object", 10) == 0;
}

static void
append_field_value(StringInfo out, List *fields, Datum column)
{
	JsonField  *f = webhook_find_field(fields, TextDatumGetCString(column));

	if (f)
		appendBinaryStringInfo(out, f->value, f->len);
	else
		appendStringInfoString(out, "null");
}

/*
 * The order a single item of an ordering profile goes in (see
 * delivery.order_key): its object's, by the values of the event's key
 * columns in ROW; for an event with a parent (an action), the parent's, so
 * that a ticket's changes and its actions' go in one order.  A key too
 * long for an index entry is hashed.
 */
static char *
order_key_of(TakenRow *binding, Datum row, bool no_row)
{
	List	   *fields = NIL;
	StringInfoData key;
	char	   *hashed;

	if (!no_row)
	{
		text	   *t = DatumGetTextPP(row);

		fields = webhook_json_fields(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
	}
	initStringInfo(&key);
	if (!TAKEN_NULL(binding, TAKE_PARENT_OBJECT) && !TAKEN_NULL(binding, TAKE_PARENT_COLUMN))
	{
		appendStringInfo(&key, "%s:", TextDatumGetCString(TAKEN(binding, TAKE_PARENT_OBJECT)));
		append_field_value(&key, fields, TAKEN(binding, TAKE_PARENT_COLUMN));
	}
	else
	{
		Datum	   *columns = NULL;
		bool	   *nulls;
		int			ncolumns = 0;

		if (!TAKEN_NULL(binding, TAKE_OBJECT))
			appendStringInfoString(&key, TextDatumGetCString(TAKEN(binding, TAKE_OBJECT)));
		appendStringInfoChar(&key, ':');
		if (!TAKEN_NULL(binding, TAKE_KEY_COLUMNS))
			deconstruct_array(DatumGetArrayTypeP(TAKEN(binding, TAKE_KEY_COLUMNS)), TEXTOID, -1,
							  false, TYPALIGN_INT, &columns, &nulls, &ncolumns);
		if (ncolumns == 0)
			appendStringInfoString(&key, "null");
		for (int i = 0; i < ncolumns; i++)
		{
			if (i > 0)
				appendStringInfoChar(&key, ',');
			if (nulls[i])
				appendStringInfoString(&key, "null");
			else
				append_field_value(&key, fields, columns[i]);
		}
	}
	list_free_deep(fields);
	if (key.len <= 200)
		return key.data;
	hashed = psprintf("#%s", name_uuid(key.data));
	pfree(key.data);
	return hashed;
}

static bool
halo_envelope(TakenRow *binding)
{
	text	   *envelope = DatumGetTextPP(TAKEN(binding, TAKE_ENVELOPE));

	return VARSIZE_ANY_EXHDR(envelope) == 4 && memcmp(VARDATA_ANY(envelope), "halo", 4) == 0;
}

/*
 * The envelope of one item, made by webhook._render's own code: a delivery
 * of its own, or an item kept for its batch.
 */
static void
add_item(Expansion *x, FunctionCallInfo render, MemoryContext item_cxt,
		 TakenRow *binding, const char *seed, int64 ord, Datum old_row, bool no_old, Datum new_row, bool no_new)
{
	NullableDatum *args = render->args;
	int64		binding_id = DatumGetInt64(TAKEN(binding, TAKE_BINDING));
	MemoryContext old = MemoryContextSwitchTo(item_cxt);
	char	   *id = item_id(seed, ord, binding_id);
	static const struct
	{
		RenderArg	arg;
		int			column;
	}			from_take[] = {
		{RENDER_PROFILE, TAKE_PROFILE}, {RENDER_PAYLOAD, TAKE_PAYLOAD},
		{RENDER_FIELDS, TAKE_FIELDS}, {RENDER_BINDING, TAKE_BINDING},
		{RENDER_EVENT, TAKE_EVENT}, {RENDER_TITLE, TAKE_TITLE}, {RENDER_OBJECT, TAKE_OBJECT},
		{RENDER_TABLE, TAKE_TABLE}, {RENDER_KEY_COLUMNS, TAKE_KEY_COLUMNS},
		{RENDER_CAPTURED_AT, TAKE_CAPTURED_AT}, {RENDER_OPERATION, TAKE_OPERATION},
		{RENDER_PARENT_OBJECT, TAKE_PARENT_OBJECT}, {RENDER_PARENT_TABLE, TAKE_PARENT_TABLE},
		{RENDER_PARENT_COLUMN, TAKE_PARENT_COLUMN}, {RENDER_PARENT_KEY, TAKE_PARENT_KEY},
		{RENDER_READER, TAKE_READER}, {RENDER_ENVELOPE, TAKE_ENVELOPE},
		{RENDER_PROFILE_GUID, TAKE_PROFILE_GUID}, {RENDER_MESSAGE, TAKE_MESSAGE},
		{RENDER_AGENT_COLUMN, TAKE_AGENT_COLUMN},
	};
	char	   *operation;
	bool		delete;
	Datum		envelope;
	BatchKey	key;
	bool		batched;
	char	   *order_key = NULL;	/* in item_cxt */

	for (size_t i = 0; i < lengthof(from_take); i++)
	{
		args[from_take[i].arg].value = TAKEN(binding, from_take[i].column);
		args[from_take[i].arg].isnull = TAKEN_NULL(binding, from_take[i].column);
	}
	args[RENDER_ID].value = CStringGetTextDatum(id);
	args[RENDER_ID].isnull = false;
	/* Halo's escmsg_id: one per change, whichever profile it goes to */
	args[RENDER_CHANGE_ID].isnull = !halo_envelope(binding);
	if (!args[RENDER_CHANGE_ID].isnull)
		args[RENDER_CHANGE_ID].value = CStringGetTextDatum(change_id(seed, ord));
	operation = args[RENDER_OPERATION].isnull ? NULL
		: TextDatumGetCString(args[RENDER_OPERATION].value);
	delete = operation && strcmp(operation, "delete") == 0;
	args[RENDER_ROW].value = delete ? old_row : new_row;
	args[RENDER_ROW].isnull = delete ? no_old : no_new;
	args[RENDER_OLD_ROW].value = old_row;
	args[RENDER_OLD_ROW].isnull = no_old;
	args[RENDER_NEW_ROW].value = new_row;
	args[RENDER_NEW_ROW].isnull = no_new;
	render->isnull = false;
	envelope = webhook_render(render);
	/* a change that could not be captured is a failed delivery, in no order */
	batched = batch_key_of(binding, &key);
	if (!batched && ordered(binding) && TAKEN_NULL(binding, TAKE_CAPTURE_ERROR))
		order_key = order_key_of(binding, args[RENDER_ROW].value, args[RENDER_ROW].isnull);
	MemoryContextSwitchTo(old);

	if (batched)
	{
		NewBatchItems *batch;
		BatchedItem *item = palloc(sizeof(BatchedItem));
		bool		found;

		batch = hash_search(x->batches, &key, HASH_ENTER, &found);
		if (!found)
		{
			batch->max_items = DatumGetInt32(TAKEN(binding, TAKE_BATCH_MAX_ITEMS));
			batch->wait = datumCopy(TAKEN(binding, TAKE_BATCH_WAIT), false, sizeof(Interval));
			batch->items = NIL;
			batch->open_id = 0;
			batch->open_items = 0;
			batch->ordered = ordered(binding);
			x->batch_order = lappend(x->batch_order, batch);
		}
		item->id = pstrdup(id);
		item->envelope = datumCopy(envelope, false, -1);
		item->event = TextDatumGetCString(args[RENDER_EVENT].value);
		item->no_captured_at = args[RENDER_CAPTURED_AT].isnull;
		item->captured_at = args[RENDER_CAPTURED_AT].value;
		batch->items = lappend(batch->items, item);
	}
	else
	{
		add_delivery(x, TAKEN(binding, TAKE_PROFILE_ID), id,
					 args[RENDER_EVENT].isnull ? NULL : TextDatumGetCString(args[RENDER_EVENT].value),
					 1, envelope, false, (Datum) 0, true,
					 args[RENDER_CAPTURED_AT].value, args[RENDER_CAPTURED_AT].isnull,
					 TAKEN(binding, TAKE_CAPTURE_ERROR), TAKEN_NULL(binding, TAKE_CAPTURE_ERROR),
					 NULL, order_key, binding);
	}
	/* what is kept was copied: what making this one took goes */
	MemoryContextReset(item_cxt);
}

/* The rows of take_sql that carry items, in the order they are made. */
static int
compare_taken(const void *a, const void *b)
{
	TakenRow   *x = *(TakenRow * const *) a;
	TakenRow   *y = *(TakenRow * const *) b;
	int64		xo = DatumGetInt64(TAKEN(x, TAKE_OCCURRENCE));
	int64		yo = DatumGetInt64(TAKEN(y, TAKE_OCCURRENCE));
	int64		xb = DatumGetInt64(TAKEN(x, TAKE_BINDING));
	int64		yb = DatumGetInt64(TAKEN(y, TAKE_BINDING));

	if (xo != yo)
		return xo < yo ? -1 : 1;
	return xb < yb ? -1 : xb > yb ? 1 : 0;
}

/*
 * The open batches the new items join: for each key, its newest open
 * batch (see open_batches_sql).
 */
static void
find_open_batches(Expansion *x)
{
	Oid			types[1] = {INT8ARRAYOID};
	static SPIPlanPtr plan = NULL;
	ArrayBuildState *profile_ids = NULL;
	Datum		args[1];
	ListCell   *lc;

	foreach(lc, x->batch_order)
		add_column(&profile_ids, Int64GetDatum(((NewBatchItems *) lfirst(lc))->key.profile_id),
				   false, INT8OID);
	args[0] = makeArrayResult(profile_ids, CurrentMemoryContext);
	if (SPI_execute_plan(webhook_keep_plan(&plan, open_batches_sql, 1, types, true),
						 args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not lock the open webhook batches");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	row = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int64		delivery_id = DatumGetInt64(SPI_getbinval(row, desc, 1, &isnull));
		char	   *key_text = TextDatumGetCString(SPI_getbinval(row, desc, 3, &isnull));
		BatchKey	key;
		NewBatchItems *batch;

		MemSet(&key, 0, sizeof(key));
		key.profile_id = DatumGetInt64(SPI_getbinval(row, desc, 2, &isnull));
		if (strlen(key_text) >= sizeof(key.key))
			continue;			/* not a key the expansion makes */
		strlcpy(key.key, key_text, sizeof(key.key));
		batch = hash_search(x->batches, &key, HASH_FIND, NULL);
		if (batch != NULL && delivery_id > batch->open_id)
		{
			batch->open_id = delivery_id;
			batch->open_items = DatumGetInt32(SPI_getbinval(row, desc, 4, &isnull));
		}
	}
}

/* The distinct events of some items, joined by commas. */
static char *
events_of(List *items, int first, int last)
{
	List	   *names = NIL;
	StringInfoData out;
	ListCell   *lc;

	for (int i = first; i < last; i++)
	{
		char	   *event = ((BatchedItem *) list_nth(items, i))->event;
		bool		seen = false;

		foreach(lc, names)
			if (strcmp(lfirst(lc), event) == 0)
				seen = true;
		if (!seen)
			names = lappend(names, event);
	}
	initStringInfo(&out);
	foreach(lc, names)
	{
		if (out.len > 0)
			appendStringInfoChar(&out, ',');
		appendStringInfoString(&out, lfirst(lc));
	}
	list_free(names);
	return out.data;
}

static void
file_item(Expansion *x, int64 delivery_id, const char *webhook_id, int item_no, Datum envelope)
{
	add_column(&x->filed_ids, Int64GetDatum(delivery_id), delivery_id == 0, INT8OID);
	add_text(&x->filed_webhook_ids, webhook_id);
	add_column(&x->filed_nos, Int32GetDatum(item_no), false, INT4OID);
	add_column(&x->filed_envelopes, envelope, false, JSONOID);
	x->filed++;
}

/*
 * Place one key's new items, in commit order, after the items of its open
 * batch: numbered on from its count, every max_items of them make a batch.
 * Those that fit in the open batch are filed in it; it takes no more, and
 * is due, once full.  Each further max_items (a backlog) make a new batch,
 * due at once, its body written here; the rest start a new open batch, due
 * at its first item's capture time plus the wait, their envelopes filed
 * until it is due.
 */
static void
place_batch_items(Expansion *x, NewBatchItems *batch)
{
	int			max = batch->max_items;
	int			open_items = batch->open_id != 0 ? batch->open_items : 0;
	int			n = list_length(batch->items);

	for (int first = 0, last; first < n; first = last)
	{
		int			chunk = (open_items + first) / max;
		bool		fresh = batch->open_id == 0 || open_items + first >= max;
		bool		full = open_items + n >= (chunk + 1) * max;
		int			last_no;
		char	   *events;

		last = Min(n, (chunk + 1) * max - open_items);
		last_no = (open_items + last - 1) % max + 1;
		events = events_of(batch->items, first, last);
		if (!fresh)
		{
			for (int i = first; i < last; i++)
				file_item(x, batch->open_id, NULL, (open_items + i) % max + 1,
						  ((BatchedItem *) list_nth(batch->items, i))->envelope);
			add_column(&x->grown_ids, Int64GetDatum(batch->open_id), false, INT8OID);
			add_column(&x->grown_last_nos, Int32GetDatum(last_no), false, INT4OID);
			add_text(&x->grown_events, events);
			add_column(&x->grown_full, BoolGetDatum(last_no >= max), false, BOOLOID);
			x->grown++;
		}
		else
		{
			BatchedItem *head = list_nth(batch->items, first);
			char	   *webhook_id = batch_id(head->id);
			Datum		first_captured = (Datum) 0;
			bool		no_first_captured = true;

			for (int i = first; i < last; i++)
			{
				BatchedItem *item = list_nth(batch->items, i);

				if (!item->no_captured_at &&
					(no_first_captured ||
					 DatumGetTimestampTz(item->captured_at) < DatumGetTimestampTz(first_captured)))
				{
					first_captured = item->captured_at;
					no_first_captured = false;
				}
			}
			if (full)
			{
				/* as json_agg writes an array of json values */
				StringInfoData body;

				initStringInfo(&body);
				appendStringInfoChar(&body, '[');
				for (int i = first; i < last; i++)
				{
					text	   *envelope = DatumGetTextPP(((BatchedItem *) list_nth(batch->items, i))->envelope);

					if (i > first)
						appendStringInfoString(&body, ", ");
					appendBinaryStringInfo(&body, VARDATA_ANY(envelope), VARSIZE_ANY_EXHDR(envelope));
				}
				appendStringInfoChar(&body, ']');
				add_delivery(x, Int64GetDatum(batch->key.profile_id), webhook_id, events, last_no,
							 PointerGetDatum(cstring_to_text_with_len(body.data, body.len)), false,
							 (Datum) 0, true, first_captured, no_first_captured,
							 (Datum) 0, true, NULL, batch->ordered ? "" : NULL, NULL);
				pfree(body.data);
			}
			else
			{
				Datum		due_at = (Datum) 0;

				if (!no_first_captured)
					due_at = DirectFunctionCall2(timestamptz_pl_interval, first_captured, batch->wait);
				add_delivery(x, Int64GetDatum(batch->key.profile_id), webhook_id, events, last_no,
							 (Datum) 0, true, due_at, no_first_captured,
							 first_captured, no_first_captured, (Datum) 0, true, batch->key.key,
							 batch->ordered ? "" : NULL, NULL);
				for (int i = first; i < last; i++)
					file_item(x, 0, webhook_id, (open_items + i) % max + 1,
							  ((BatchedItem *) list_nth(batch->items, i))->envelope);
			}
		}
	}
}

/* The expansion wrote to batches, one of which may be due now. */
static bool batches_written = false;

/* Write what the step made: insert_sql, or write_batches_sql. */
static void
write_expansion(Expansion *x)
{
	static SPIPlanPtr insert_plan = NULL;
	static SPIPlanPtr write_batches_plan = NULL;
	static SPIPlanPtr insert_plan_before_0_13 = NULL;
	static SPIPlanPtr write_batches_plan_before_0_13 = NULL;
	bool		before_0_13 = webhook_schema_before_0_13();

	/* the parameters, in order: insert_sql's eleven, then write_batches_sql's */
	const struct
	{
		ArrayBuildState **values;
		Oid			element_type;
		Oid			array_type;
	}			columns[] = {
		{&x->profile_ids, INT8OID, INT8ARRAYOID},
		{&x->webhook_ids, TEXTOID, TEXTARRAYOID},
		{&x->events, TEXTOID, TEXTARRAYOID},
		{&x->items, INT4OID, INT4ARRAYOID},
		{&x->bodies, JSONOID, JSONARRAYOID},
		{&x->due_at, TIMESTAMPTZOID, TIMESTAMPTZARRAYOID},
		{&x->captured_at, TIMESTAMPTZOID, TIMESTAMPTZARRAYOID},
		{&x->errors, TEXTOID, TEXTARRAYOID},
		{&x->batch_keys, TEXTOID, TEXTARRAYOID},
		{&x->claimed, BOOLOID, BOOLARRAYOID},
		{&x->order_keys, TEXTOID, TEXTARRAYOID},
		{&x->grown_ids, INT8OID, INT8ARRAYOID},
		{&x->grown_last_nos, INT4OID, INT4ARRAYOID},
		{&x->grown_events, TEXTOID, TEXTARRAYOID},
		{&x->grown_full, BOOLOID, BOOLARRAYOID},
		{&x->filed_ids, INT8OID, INT8ARRAYOID},
		{&x->filed_webhook_ids, TEXTOID, TEXTARRAYOID},
		{&x->filed_nos, INT4OID, INT4ARRAYOID},
		{&x->filed_envelopes, JSONOID, JSONARRAYOID},
	};
	Oid			types[lengthof(columns)];
	Datum		args[lengthof(columns)];
	bool		batches = x->grown > 0 || x->filed > 0;
	int			nargs = batches ? lengthof(columns) : 11;
	SPIPlanPtr	plan;

	if (x->made == 0 && !batches)
		return;
	for (int i = 0; i < nargs; i++)
	{
		types[i] = columns[i].array_type;
		args[i] = *columns[i].values != NULL
			? makeArrayResult(*columns[i].values, CurrentMemoryContext)
			: PointerGetDatum(construct_empty_array(columns[i].element_type));
	}
	if (batches)
	{
		plan = before_0_13 ?
			webhook_keep_plan(&write_batches_plan_before_0_13, write_batches_sql_before_0_13, nargs, types, false) :
			webhook_keep_plan(&write_batches_plan, write_batches_sql, nargs, types, false);
		batches_written = true;
	}
	else
		plan = before_0_13 ?
			webhook_keep_plan(&insert_plan_before_0_13, insert_sql_before_0_13, nargs, types, false) :
			webhook_keep_plan(&insert_plan, insert_sql, nargs, types, false);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not insert webhook deliveries");

	/* the ids of those claimed as made, which come back in the order made */
	if (x->claim == NULL)
		return;
	if (SPI_processed != (uint64) list_length(x->claim->made))
		elog(ERROR, "webhook deliveries claimed as made: %llu written of %d",
			 (unsigned long long) SPI_processed, list_length(x->claim->made));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		MadeClaim  *m = list_nth(x->claim->made, i);
		HeapTuple	row = SPI_tuptable->vals[i];
		bool		isnull;
		char	   *webhook_id = SPI_getvalue(row, SPI_tuptable->tupdesc, 2);

		if (strcmp(webhook_id, m->webhook_id) != 0)
			elog(ERROR, "webhook deliveries claimed as made came back out of order");
		m->delivery_id = DatumGetInt64(SPI_getbinval(row, SPI_tuptable->tupdesc, 1, &isnull));
	}
}

/*
 * Expand what take_sql takes; *more says that rows were left for another
 * step.
 */
static void
expand_changes(Datum *args, bool *more, ClaimAsMade *claim)
{
	Oid			types[2] = {INT4OID, OIDARRAYOID};
	static SPIPlanPtr take_plan = NULL;
	static SPIPlanPtr take_plan_before_0_9 = NULL;
	static SPIPlanPtr take_plan_before_0_12 = NULL;
	static SPIPlanPtr take_plan_before_0_13 = NULL;
	bool		before_0_9 = webhook_schema_before_0_9();
	SPITupleTable *taken_rows;
	TupleDesc	desc;
	TakenRow  **items;
	int			nitems = 0;
	HeapTuple	counts = NULL;
	bool		isnull;
	Expansion	x = {0};
	HASHCTL		hash_ctl;
	FmgrInfo	render_info;
	MemoryContext item_cxt;
	ListCell   *lc;
	LOCAL_FCINFO(render, RENDER_NARGS);

	if (SPI_execute_plan(before_0_9 ?
						 webhook_keep_plan(&take_plan_before_0_9, take_sql_before_0_9, 2, types, false) :
						 webhook_schema_before_0_12() ?
						 webhook_keep_plan(&take_plan_before_0_12, take_sql_before_0_12, 2, types, false) :
						 webhook_schema_before_0_13() ?
						 webhook_keep_plan(&take_plan_before_0_13, take_sql_before_0_13, 2, types, false) :
						 webhook_keep_plan(&take_plan, take_sql, 2, types, false),
						 args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not take webhook occurrences");
	taken_rows = SPI_tuptable;
	desc = taken_rows->tupdesc;
	items = palloc(sizeof(TakenRow *) * Max(SPI_processed, 1));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	row = taken_rows->vals[i];

		(void) SPI_getbinval(row, desc, TAKE_OCCURRENCE, &isnull);
		if (!isnull)
		{
			items[nitems] = palloc(sizeof(TakenRow));
			heap_deform_tuple(row, desc, items[nitems]->values, items[nitems]->nulls);
			nitems++;
		}
		else
			counts = row;
	}
	if (counts == NULL)			/* cannot happen: the statement always has it */
		elog(ERROR, "webhook occurrences taken without their counts");
	*more = webhook_rows_left(counts, desc, TAKE_LOCKED, EXPAND_LOCK_STEP);
	qsort(items, nitems, sizeof(TakenRow *), compare_taken);
	x.claim = claim;

	hash_ctl.keysize = sizeof(BatchKey);
	hash_ctl.entrysize = sizeof(NewBatchItems);
	hash_ctl.hcxt = CurrentMemoryContext;
	x.batches = hash_create("webhook batches of an expansion", 16, &hash_ctl,
							HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

	/* one call of webhook._render's code per item; its cache lasts the step */
	MemSet(&render_info, 0, sizeof(render_info));
	render_info.fn_nargs = RENDER_NARGS;
	render_info.fn_mcxt = CurrentMemoryContext;
	InitFunctionCallInfoData(*render, &render_info, RENDER_NARGS, InvalidOid, NULL, NULL);
	item_cxt = AllocSetContextCreate(CurrentMemoryContext, "webhook expansion item",
									 ALLOCSET_DEFAULT_SIZES);

	/*
	 * Rows read for the envelopes (parents, linked rows) are read as of now,
	 * when the queue rows are seen: not as of the step's start, before these
	 * rows were committed, maybe.
	 */
	PushActiveSnapshot(GetTransactionSnapshot());

	/* a queue row's items: for each of its rows in turn, one per binding */
	for (int first = 0, last; first < nitems; first = last)
	{
		TakenRow   *row = items[first];
		int64		occurrence = DatumGetInt64(TAKEN(row, TAKE_OCCURRENCE));
		char	   *seed = TextDatumGetCString(TAKEN(row, TAKE_ID_SEED));
		List	   *new_rows;
		List	   *old_rows;
		int			nrows;

		for (last = first + 1; last < nitems; last++)
			if (DatumGetInt64(TAKEN(items[last], TAKE_OCCURRENCE)) != occurrence)
				break;
		new_rows = json_array_texts(TAKEN(row, TAKE_NEW_ROWS), TAKEN_NULL(row, TAKE_NEW_ROWS));
		old_rows = json_array_texts(TAKEN(row, TAKE_OLD_ROWS), TAKEN_NULL(row, TAKE_OLD_ROWS));
		nrows = Max(list_length(new_rows), list_length(old_rows));
		for (int ord = 1; ord <= nrows; ord++)
		{
			bool		no_new = ord > list_length(new_rows);
			bool		no_old = ord > list_length(old_rows);
			Datum		new_row = no_new ? (Datum) 0 : PointerGetDatum(list_nth(new_rows, ord - 1));
			Datum		old_row = no_old ? (Datum) 0 : PointerGetDatum(list_nth(old_rows, ord - 1));

			CHECK_FOR_INTERRUPTS();
			for (int i = first; i < last; i++)
				add_item(&x, render, item_cxt, items[i], seed, ord,
						 old_row, no_old, new_row, no_new);
		}
	}
	PopActiveSnapshot();

	if (x.batch_order != NIL)
	{
		find_open_batches(&x);
		foreach(lc, x.batch_order)
			place_batch_items(&x, lfirst(lc));
	}
	write_expansion(&x);
}

/*
 * Captured tables whose changes wait a moment: making a payload of one
 * needed a table that someone holds locked (a parent, a linked row's
 * table).  The changes of the other tables go on meanwhile, and each
 * table's keep their order.  Kept in TopMemoryContext.
 */
typedef struct DeferredTable
{
	Oid			relid;
	TimestampTz until;
} DeferredTable;

static List *deferred_tables = NIL;

/* Let go of the tables whose time is up. */
static void
expire_deferred_tables(void)
{
	TimestampTz now = GetCurrentTimestamp();
	ListCell   *lc;

	foreach(lc, deferred_tables)
	{
		DeferredTable *t = lfirst(lc);

		if (t->until <= now)
		{
			deferred_tables = foreach_delete_current(deferred_tables, lc);
			pfree(t);
		}
	}
}

/* The tables set aside, as an oid[]. */
static Datum
deferred_table_array(void)
{
	int			n = list_length(deferred_tables);
	Datum	   *relids = palloc(sizeof(Datum) * Max(n, 1));
	int			i = 0;
	ListCell   *lc;

	foreach(lc, deferred_tables)
		relids[i++] = ObjectIdGetDatum(((DeferredTable *) lfirst(lc))->relid);
	return PointerGetDatum(construct_array(relids, n, OIDOID, sizeof(Oid), true, TYPALIGN_INT));
}

static void
defer_table(Oid relid)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
	DeferredTable *t = palloc(sizeof(DeferredTable));

	t->relid = relid;
	t->until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), EXPAND_RETRY_MS);
	deferred_tables = lappend(deferred_tables, t);
	MemoryContextSwitchTo(old);
}

static bool
table_deferred(Oid relid)
{
	ListCell   *lc;

	foreach(lc, deferred_tables)
		if (((DeferredTable *) lfirst(lc))->relid == relid)
			return true;
	return false;
}

/*
 * When the expansion is to be tried again, after it said it waits for a
 * lock: when the first table set aside is let go, or in a moment when the
 * lock held up the expansion as a whole.
 */
TimestampTz
webhook_expand_retry_at(void)
{
	TimestampTz due = 0;
	ListCell   *lc;

	foreach(lc, deferred_tables)
	{
		DeferredTable *t = lfirst(lc);

		if (due == 0 || t->until < due)
			due = t->until;
	}
	if (due == 0)
		due = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), EXPAND_RETRY_MS);
	return due;
}
typedef struct ExpandStep
{
	int			limit;
	ClaimAsMade *claim;
	bool		more;
} ExpandStep;

static void
expand_step(void *arg)
{
	ExpandStep *step = arg;
	Datum		args[2];

	args[0] = Int32GetDatum(step->limit);
	args[1] = deferred_table_array();
	expand_changes(args, &step->more, step->claim);
}

/*
 * expand_step in a subtransaction; the error, if any, comes back in
 * *error, and *locked says it was a lock the worker would have had to wait
 * for.
 */
static bool
expand_guarded(int limit, ClaimAsMade *claim, char **error, bool *locked)
{
	ExpandStep	step = {limit, claim, false};
	ErrorData  *edata;

	webhook_rendering_table = InvalidOid;
	/* what a try claimed is rolled back with it, should it fail */
	if (claim != NULL)
	{
		claim->made = NIL;
		claim->all_taken = true;
	}
	edata = webhook_in_subtransaction(expand_step, &step);
	if (edata != NULL && claim != NULL)
	{
		claim->made = NIL;
		claim->all_taken = false;
	}
	*error = edata ? edata->message : NULL;
	*locked = edata && edata->sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE;
	return step.more;
}

/*
 * Expand new occurrences, in the worker's step (connected to SPI); true
 * when more wait.  The queue holds what
 * writers wrote, and one row that the expansion cannot turn into
 * deliveries (a value that the JSON parser refuses, say) must not stop the
 * others: when a step fails, fewer rows are tried, down to the first one
 * alone, which is then marked with the error (poison_sql) and expanded into
 * failed deliveries.  A user's table that is locked is not an error of the
 * row: the changes of the table whose payload needed it wait (see
 * DeferredTable), and *deferred asks for another try soon.  *batched says
 * that batches were written to, and may be due to be put together.
 */
bool
webhook_expand(bool *deferred, bool *batched, ClaimAsMade *claim)
{
	Oid			types[2] = {TEXTOID, OIDARRAYOID};
	Datum		args[2];
	char	   *error;
	bool		locked;
	bool		more;

	*deferred = false;
	batches_written = false;
	expire_deferred_tables();
	for (int limit = EXPAND_STEP;;)
	{
		more = expand_guarded(limit, claim, &error, &locked);
		if (error == NULL)
		{
			*deferred = deferred_tables != NIL;
			*batched = batches_written;
			return more || limit < EXPAND_STEP;
		}
		if (locked)
		{
			/* (one set aside already cannot be met again: only a lock elsewhere) */
			if (OidIsValid(webhook_rendering_table) && !table_deferred(webhook_rendering_table))
			{
				defer_table(webhook_rendering_table);
				continue;
			}
			*deferred = true;
			*batched = batches_written;
			return false;
		}
		if (limit == 1)
			break;
		limit /= 2;
	}
	ereport(WARNING,
			(errcode(ERRCODE_DATA_EXCEPTION),
			 errmsg("webhook could not make a payload of a queued change: %s", error),
			 errdetail("Its deliveries are recorded as failed, with the error.")));
	args[0] = CStringGetTextDatum(pnstrdup(error, pg_mbcliplen(error, strlen(error), 300)));
	args[1] = deferred_table_array();
	if (SPI_execute_plan(webhook_keep_plan(&poison_plan, poison_sql, 2, types, false),
						 args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not mark a webhook occurrence that cannot be expanded");
	(void) expand_guarded(1, claim, &error, &locked);
	if (error != NULL && locked)
		*deferred = true;
	else if (error != NULL)
		elog(ERROR, "could not expand webhook occurrences: %s", error);
	else
		*deferred = deferred_tables != NIL;
	*batched = batches_written;
	return !*deferred;
}

