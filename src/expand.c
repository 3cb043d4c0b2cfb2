/*
 * expand.c
 *		Turn the changes the capture trigger queued in webhook.occurrence into
 *		deliveries: for each changed row and binding it matched, an envelope
 *		(envelope.c) and the delivery that carries it, or its place in a
 *		batch.  Runs in the worker's step (see webhook_queue_step).
 *
 * When no profile batches, which is most of the time, one statement takes
 * the queue rows with what their envelopes need, C makes the envelopes
 * (each queue row's JSON split once, whatever the number of its bindings),
 * and a second statement inserts the deliveries: two small statements
 * instead of one that costs more to start than one change costs to expand.
 * When a profile batches, one statement (expand_sql) does it all, batches
 * included.  Both make the same deliveries, in the same order, with the
 * same webhook-ids.
 *
 * A delivery is made pending, or failed with the capture's error; every
 * change of its status after that is queue.c's.
 */
#include "webhook.h"
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
 * The name-based UUID (RFC 9562, version 8, SHA-256) of the text NAME, as
 * text: the same as webhook._name_uuid, spelled out for an extension whose
 * SQL is not updated yet.
 */
#define NAME_UUID(name) \
	"(SELECT pg_catalog.encode(pg_catalog.set_byte(pg_catalog.set_byte(" \
	"          pg_catalog.substr(h, 1, 16), 6, (pg_catalog.get_byte(h, 6) & 15) | 128)," \
	"          8, (pg_catalog.get_byte(h, 8) & 63) | 128), 'hex')::uuid::text" \
	"   FROM pg_catalog.sha256(pg_catalog.convert_to(" name ", 'UTF8')) AS h)"

/*
 * The queue rows an expansion takes, oldest first (see expand_sql), and
 * the bindings each matched: the CTEs locked, picked, claimed and matched,
 * for the statement that goes on.
 */
#define TAKE_OCCURRENCES(guard) \
"WITH locked AS ("\
"  SELECT occurrence_id, row_count FROM webhook.occurrence"\
"   WHERE table_oid <> ALL ($2::oid[]) " guard \
"   ORDER BY occurrence_id LIMIT " CppAsString2(EXPAND_LOCK_STEP) " FOR UPDATE SKIP LOCKED"\
"), picked AS ("\
"  SELECT occurrence_id FROM ("\
"    SELECT occurrence_id, row_count,"\
"           pg_catalog.sum(row_count) OVER (ORDER BY occurrence_id) AS running FROM locked) AS x"\
"   WHERE running - row_count < $1"\
"), claimed AS ("\
"  DELETE FROM webhook.occurrence WHERE occurrence_id IN (SELECT occurrence_id FROM picked)"\
"  RETURNING *"\
"), matched AS ("\
"  SELECT DISTINCT ON (c.occurrence_id, b.profile_id, b.event_id) c.occurrence_id, b.binding_id"\
"    FROM claimed c"\
"   CROSS JOIN LATERAL pg_catalog.unnest(c.bindings) AS m(binding_id)"\
"    JOIN webhook.binding b ON b.binding_id = m.binding_id"\
"   ORDER BY c.occurrence_id, b.profile_id, b.event_id, b.binding_id"

/* Whether a profile batches, which only expand_sql knows how to do. */
#define ANY_PROFILE_BATCHES \
"EXISTS (SELECT FROM webhook.profile WHERE batching <> 'none')"

/*
 * Each changed row of a queue row becomes one item per binding it matched:
 * its envelope, built here from the snapshot taken by the capture trigger.
 * Queue rows are taken in order, up to $1 changed rows (and at least one
 * queue row).  An item's id is derived from its queue row's seed,
 * the row's place in it and the binding: the same however often the queue
 * row is expanded.  The queue rows of the tables in $2 wait (see
 * DeferredTable).  A change that matched several bindings of one event in
 * one profile is one item, of the lowest binding.
 *
 * An item of a profile that does not batch (or whose condition failed) is
 * a delivery of its own.  The others join their profile's open batch of
 * the same key (binding, event or none, by the batching mode), in commit
 * order: the items are numbered on from the batch's count, and every
 * batch_max_items of them make a batch.  A batch that reaches
 * batch_max_items is due at once and takes no more; a new one is due at
 * its first item's capture time + batch_wait.  Items wait in batch_item
 * until their batch is due, except those of a new batch that is full
 * already (a backlog): its body is made here.  A new batch's webhook-id
 * derives from its first item's id, so that it too is the same after a
 * lost expansion.
 *
 * An open batch locked by someone else (an alter_profile not committed
 * yet) is passed over: the worker never waits on a user's transaction.
 * Its items then start another batch; the newest open batch of a key is
 * the one that grows.
 */
static const char *expand_sql =
TAKE_OCCURRENCES("")
"), changed AS ("
"  SELECT c.occurrence_id, c.captured_at, c.capture_error, c.id_seed, r.ord,"
"         r.new_row, r.old_row"
"    FROM claimed c"
"   CROSS JOIN LATERAL ROWS FROM (pg_catalog.json_array_elements(c.new_rows),"
"                                 pg_catalog.json_array_elements(c.old_rows))"
"         WITH ORDINALITY AS r(new_row, old_row, ord)"
"), item AS ("
"  SELECT c.occurrence_id, c.ord, c.captured_at, c.capture_error, b.binding_id, p.profile_id,"
"         p.name AS profile, p.batching, p.batch_wait, p.batch_max_items,"
"         p.payload, p.payload_fields, e.name AS event, e.title, e.object, e.operation,"
"         e.table_oid, e.created_by AS reader,"
"         CASE WHEN e.operation = 'delete' THEN c.old_row ELSE c.new_row END AS row,"
"         c.old_row, c.new_row, e.key_columns, e.parent_object, e.parent_table,"
"         e.parent_column, e.parent_key,"
"         CASE p.batching WHEN 'same_event' THEN 'binding ' || b.binding_id"
"                         WHEN 'same_event_type' THEN 'event ' || e.event_id"
"                         ELSE 'any' END AS batch_key,"
"         " NAME_UUID("c.id_seed::text || '/' || c.ord || '/' || b.binding_id") " AS id"
"  FROM changed c"
"  JOIN matched m ON m.occurrence_id = c.occurrence_id"
"  JOIN webhook.binding b ON b.binding_id = m.binding_id"
"  JOIN webhook.event e ON e.event_id = b.event_id"
"  JOIN webhook.profile p ON p.profile_id = b.profile_id"
"), rendered AS ("
"  SELECT i.occurrence_id, i.ord, i.binding_id, i.profile_id, i.id, i.event,"
"         i.capture_error, i.captured_at,"
"         i.batch_key, i.batch_wait, i.batch_max_items,"
"         (i.batching <> 'none' AND i.capture_error IS NULL) AS batched,"
"         webhook._render(i.id, i.profile, i.payload, i.payload_fields, i.binding_id, i.event,"
"                         i.title, i.object, i.table_oid, i.key_columns, i.captured_at,"
"                         i.operation, i.row, i.old_row, i.new_row, i.parent_object,"
"                         i.parent_table, i.parent_column, i.parent_key, i.reader) AS envelope"
"  FROM item i"
"), single AS ("
"  INSERT INTO webhook.delivery (profile_id, webhook_id, events, items, body, status,"
"                                next_attempt_at, captured_at, error)"
"  SELECT i.profile_id, i.id, ARRAY[i.event], 1, i.envelope,"
"         CASE WHEN i.capture_error IS NULL THEN 'pending' ELSE 'failed' END,"
"         CASE WHEN i.capture_error IS NULL THEN pg_catalog.now() END, i.captured_at,"
"         i.capture_error"
"  FROM rendered i WHERE NOT i.batched ORDER BY i.occurrence_id, i.ord, i.binding_id"

"), open_locked AS ("
"  SELECT d.delivery_id, d.profile_id, d.batch_key, d.items FROM webhook.delivery d"
"   WHERE d.batch_key IS NOT NULL"
"     AND d.profile_id IN (SELECT b.profile_id FROM webhook.binding b"
"                           WHERE b.binding_id IN (SELECT m.binding_id FROM matched m))"
"     FOR UPDATE SKIP LOCKED"
"), open AS ("
"  SELECT DISTINCT ON (o.profile_id, o.batch_key) o.*"
"    FROM open_locked o ORDER BY o.profile_id, o.batch_key, o.delivery_id DESC"
"), placed AS ("
"  SELECT i.occurrence_id, i.ord, i.binding_id, i.profile_id, i.id, i.event,"
"         i.captured_at, i.batch_key,"
"         i.batch_wait, i.batch_max_items, o.delivery_id AS open_id,"
"         COALESCE(o.items, 0) AS open_items,"
"         pg_catalog.count(*) OVER (PARTITION BY i.profile_id, i.batch_key) AS new_items,"
"         COALESCE(o.items, 0) - 1 + pg_catalog.row_number() OVER ("
"             PARTITION BY i.profile_id, i.batch_key ORDER BY i.occurrence_id, i.ord, i.binding_id)"
"           AS position"
"    FROM rendered i"
"    LEFT JOIN open o ON o.profile_id = i.profile_id AND o.batch_key = i.batch_key"
"   WHERE i.batched"
"), chunked AS ("
"  SELECT p.*, p.position / p.batch_max_items AS chunk,"
"         (p.position % p.batch_max_items)::int + 1 AS item_no,"
"         (p.open_id IS NULL OR p.position >= p.batch_max_items) AS fresh,"
"         p.open_items + p.new_items >= (p.position / p.batch_max_items + 1) * p.batch_max_items"
"           AS full"
"    FROM placed p"
"), grp AS ("
"  SELECT c.profile_id, c.batch_key, c.chunk,"
"         CASE WHEN c.chunk = 0 THEN pg_catalog.min(c.open_id) END AS open_id,"
"         pg_catalog.max(c.item_no) AS last_no, pg_catalog.min(c.batch_max_items) AS max_items,"
"         pg_catalog.min(c.batch_wait) AS wait,"
"         pg_catalog.min(c.captured_at) AS first_captured,"
"         " NAME_UUID("'batch/' || (pg_catalog.array_agg(c.id ORDER BY c.position))[1]") ""
"           AS webhook_id,"
"         pg_catalog.array_agg(DISTINCT c.event) AS events"
"    FROM chunked c GROUP BY c.profile_id, c.batch_key, c.chunk"
"), whole AS ("
"  SELECT c.profile_id, c.batch_key, c.chunk,"
"         pg_catalog.json_agg(r.envelope ORDER BY c.item_no) AS body"
"    FROM chunked c JOIN rendered r USING (occurrence_id, ord, binding_id)"
"   WHERE c.fresh AND c.full"
"   GROUP BY c.profile_id, c.batch_key, c.chunk"
"), grown AS ("
"  UPDATE webhook.delivery d"
"     SET items = g.last_no,"
"         events = ARRAY(SELECT DISTINCT x FROM pg_catalog.unnest(d.events || g.events) AS x ORDER BY 1),"
"         batch_key = CASE WHEN g.last_no < g.max_items THEN d.batch_key END,"
"         next_attempt_at = CASE WHEN g.last_no >= g.max_items AND d.status = 'pending'"
"                                THEN pg_catalog.now() ELSE d.next_attempt_at END"
"    FROM grp g"
"   WHERE d.delivery_id = g.open_id"
"     AND d.delivery_id = ANY (ARRAY(SELECT x.open_id FROM grp x WHERE x.open_id IS NOT NULL))"
"), created AS ("
"  INSERT INTO webhook.delivery (profile_id, webhook_id, events, items, body, status,"
"                                next_attempt_at, captured_at, batch_key)"
"  SELECT g.profile_id, g.webhook_id, g.events, g.last_no, w.body,"
"         'pending',"
"         CASE WHEN g.last_no >= g.max_items THEN pg_catalog.now()"
"              ELSE g.first_captured + g.wait END,"
"         g.first_captured, CASE WHEN g.last_no < g.max_items THEN g.batch_key END"
"    FROM grp g"
"    LEFT JOIN whole w ON w.profile_id = g.profile_id AND w.batch_key = g.batch_key"
"                     AND w.chunk = g.chunk"
"   WHERE g.open_id IS NULL"
"  RETURNING delivery_id, webhook_id"
"), target AS ("
"  SELECT g.profile_id, g.batch_key, g.chunk, COALESCE(g.open_id, n.delivery_id) AS delivery_id"
"    FROM grp g LEFT JOIN created n ON g.open_id IS NULL AND n.webhook_id = g.webhook_id"
"), filed AS ("
"  INSERT INTO webhook.batch_item (delivery_id, item_no, envelope)"
"  SELECT t.delivery_id, c.item_no, r.envelope"
"    FROM chunked c"
"    JOIN rendered r USING (occurrence_id, ord, binding_id)"
"    JOIN target t ON t.profile_id = c.profile_id AND t.batch_key = c.batch_key AND t.chunk = c.chunk"
"   WHERE NOT (c.fresh AND c.full)"
")"
"SELECT (SELECT pg_catalog.count(*) FROM locked), (SELECT pg_catalog.count(*) FROM claimed),"
"       " ANY_PROFILE_BATCHES;

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

/*
 * The changes of queue rows when no profile batches, which is most of the
 * time: the queue rows, taken as expand_sql takes them, each with the
 * bindings it matched (a change that matched several bindings of one event
 * in one profile keeps the lowest) and what the envelope needs of each,
 * in no order; and one row without a queue row, that says how many queue
 * rows were locked and taken, and whether a profile batches (then nothing
 * is taken, and expand_sql is run instead).
 */
static const char *take_single_sql =
TAKE_OCCURRENCES("AND NOT " ANY_PROFILE_BATCHES)
")"
"SELECT NULL::int8, NULL::timestamptz, NULL::text, NULL::text, NULL::json, NULL::json,"
"       NULL::int8, NULL::int8, NULL::text, NULL::text, NULL::jsonb, NULL::text, NULL::text,"
"       NULL::text, NULL::text, NULL::oid, NULL::oid, NULL::text[], NULL::text, NULL::oid,"
"       NULL::text, NULL::text,"
"       (SELECT pg_catalog.count(*) FROM locked), (SELECT pg_catalog.count(*) FROM claimed),"
"       " ANY_PROFILE_BATCHES
" UNION ALL "
"SELECT c.occurrence_id, c.captured_at, c.capture_error, c.id_seed::text, c.new_rows, c.old_rows,"
"        b.binding_id, p.profile_id, p.name, p.payload, p.payload_fields, e.name, e.title,"
"        e.object, e.operation, e.table_oid::oid, e.created_by::oid, e.key_columns,"
"        e.parent_object, e.parent_table::oid, e.parent_column, e.parent_key, NULL, NULL, NULL"
"   FROM claimed c"
"   JOIN matched m ON m.occurrence_id = c.occurrence_id"
"   JOIN webhook.binding b ON b.binding_id = m.binding_id"
"   JOIN webhook.event e ON e.event_id = b.event_id"
"   JOIN webhook.profile p ON p.profile_id = b.profile_id";

static SPIPlanPtr expand_plan = NULL;
static SPIPlanPtr take_single_plan = NULL;
static SPIPlanPtr insert_plan = NULL;
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

	if (isnull)
		return NIL;
	json = DatumGetTextPP(array);
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
 * The webhook-id of the item of row ord of a queue row and a binding: what
 * NAME_UUID makes of "seed/ord/binding", as text.
 */
static char *
item_id(const char *seed, int64 ord, int64 binding_id)
{
	char	   *name = psprintf("%s/" INT64_FORMAT "/" INT64_FORMAT, seed, ord, binding_id);
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
	pfree(name);
	return id;
}

/* The columns of take_single_sql. */
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
	TAKE_LOCKED,
	TAKE_TAKEN,					/* the column after TAKE_LOCKED: see webhook_rows_left */
	TAKE_BATCHING
};

/* The deliveries made, in order, as the arrays expand_insert_sql takes. */
typedef struct NewDeliveries
{
	ArrayBuildState *profile_ids;
	ArrayBuildState *webhook_ids;
	ArrayBuildState *events;
	ArrayBuildState *bodies;
	ArrayBuildState *captured_at;
	ArrayBuildState *errors;
	int			count;
} NewDeliveries;

static const char *expand_insert_sql =
"INSERT INTO webhook.delivery (profile_id, webhook_id, events, items, body, status,"
"                              next_attempt_at, captured_at, error)"
"SELECT d.profile_id, d.webhook_id, ARRAY[d.event], 1, d.body,"
"       CASE WHEN d.error IS NULL THEN 'pending' ELSE 'failed' END,"
"       CASE WHEN d.error IS NULL THEN pg_catalog.now() END, d.captured_at, d.error"
"  FROM ROWS FROM (pg_catalog.unnest($1::int8[]), pg_catalog.unnest($2::text[]),"
"                  pg_catalog.unnest($3::text[]), pg_catalog.unnest($4::json[]),"
"                  pg_catalog.unnest($5::timestamptz[]), pg_catalog.unnest($6::text[]))"
"       WITH ORDINALITY AS d(profile_id, webhook_id, event, body, captured_at, error, n)"
" ORDER BY d.n";

static void
add_column(ArrayBuildState **state, Datum value, bool isnull, Oid type)
{
	*state = accumArrayResult(*state, value, isnull, type, CurrentMemoryContext);
}

/*
 * The envelope of one item, made by webhook._render's own code, and the
 * delivery that carries it.
 */
static void
add_item(NewDeliveries *out, FunctionCallInfo render, MemoryContext item_cxt,
		 HeapTuple binding, TupleDesc desc,
		 const char *seed, int64 ord, Datum old_row, bool no_old, Datum new_row, bool no_new)
{
	NullableDatum *args = render->args;
	bool		isnull;
	int64		binding_id = DatumGetInt64(SPI_getbinval(binding, desc, TAKE_BINDING, &isnull));
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
		{RENDER_READER, TAKE_READER},
	};
	char	   *operation;
	bool		delete;
	Datum		envelope;
	Datum		profile_id;
	Datum		error;
	bool		no_error;

	for (size_t i = 0; i < lengthof(from_take); i++)
		args[from_take[i].arg].value = SPI_getbinval(binding, desc, from_take[i].column,
													 &args[from_take[i].arg].isnull);
	args[RENDER_ID].value = CStringGetTextDatum(id);
	args[RENDER_ID].isnull = false;
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
	MemoryContextSwitchTo(old);

	profile_id = SPI_getbinval(binding, desc, TAKE_PROFILE_ID, &isnull);
	error = SPI_getbinval(binding, desc, TAKE_CAPTURE_ERROR, &no_error);
	add_column(&out->profile_ids, profile_id, false, INT8OID);
	add_column(&out->webhook_ids, args[RENDER_ID].value, false, TEXTOID);
	add_column(&out->events, args[RENDER_EVENT].value, args[RENDER_EVENT].isnull, TEXTOID);
	add_column(&out->bodies, envelope, false, JSONOID);
	add_column(&out->captured_at, args[RENDER_CAPTURED_AT].value, args[RENDER_CAPTURED_AT].isnull,
			   TIMESTAMPTZOID);
	add_column(&out->errors, error, no_error, TEXTOID);
	out->count++;
	/* the arrays hold copies: what making this one took goes */
	MemoryContextReset(item_cxt);
}

/* The rows of take_single_sql that carry items, in the order they are made. */
static int
compare_taken(const void *a, const void *b, void *arg)
{
	TupleDesc	desc = arg;
	HeapTuple	x = *(HeapTuple const *) a;
	HeapTuple	y = *(HeapTuple const *) b;
	bool		isnull;
	int64		xo = DatumGetInt64(SPI_getbinval(x, desc, TAKE_OCCURRENCE, &isnull));
	int64		yo = DatumGetInt64(SPI_getbinval(y, desc, TAKE_OCCURRENCE, &isnull));
	int64		xb = DatumGetInt64(SPI_getbinval(x, desc, TAKE_BINDING, &isnull));
	int64		yb = DatumGetInt64(SPI_getbinval(y, desc, TAKE_BINDING, &isnull));

	if (xo != yo)
		return xo < yo ? -1 : 1;
	return xb < yb ? -1 : xb > yb ? 1 : 0;
}

/*
 * Expand without batching (see take_single_sql).  False when a profile
 * batches: nothing was taken, and expand_sql is to run.  *more says that
 * rows were left for another step.
 */
static bool
expand_single(Datum *args, bool *more)
{
	Oid			types[2] = {INT4OID, OIDARRAYOID};
	SPITupleTable *taken_rows;
	TupleDesc	desc;
	HeapTuple  *items;
	int			nitems = 0;
	HeapTuple	counts = NULL;
	bool		isnull;
	NewDeliveries out = {0};
	FmgrInfo	render_info;
	MemoryContext item_cxt;
	LOCAL_FCINFO(render, RENDER_NARGS);

	if (SPI_execute_plan(webhook_keep_plan(&take_single_plan, take_single_sql, 2, types, false),
						 args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not take webhook occurrences");
	taken_rows = SPI_tuptable;
	desc = taken_rows->tupdesc;
	items = palloc(sizeof(HeapTuple) * Max(SPI_processed, 1));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	row = taken_rows->vals[i];

		(void) SPI_getbinval(row, desc, TAKE_OCCURRENCE, &isnull);
		if (!isnull)
			items[nitems++] = row;
		else
			counts = row;
	}
	if (counts == NULL)			/* cannot happen: the statement always has it */
		elog(ERROR, "webhook occurrences taken without their counts");
	*more = webhook_rows_left(counts, desc, TAKE_LOCKED, EXPAND_LOCK_STEP);
	if (DatumGetBool(SPI_getbinval(counts, desc, TAKE_BATCHING, &isnull)))
		return false;
	qsort_arg(items, nitems, sizeof(HeapTuple), compare_taken, desc);

	/* one call of webhook._render's code per item; its cache lasts the step */
	MemSet(&render_info, 0, sizeof(render_info));
	render_info.fn_nargs = RENDER_NARGS;
	render_info.fn_mcxt = CurrentMemoryContext;
	InitFunctionCallInfoData(*render, &render_info, RENDER_NARGS, InvalidOid, NULL, NULL);
	item_cxt = AllocSetContextCreate(CurrentMemoryContext, "webhook expansion item",
									 ALLOCSET_DEFAULT_SIZES);

	/*
	 * Rows read for the envelopes (parents, linked rows) are read as of now,
	 * as in expand_sql, whose statement's snapshot saw the queue rows: not as
	 * of the step's start, before these rows were committed, maybe.
	 */
	PushActiveSnapshot(GetTransactionSnapshot());

	/* a queue row's items: for each of its rows in turn, one per binding */
	for (int first = 0, last; first < nitems; first = last)
	{
		HeapTuple	row = items[first];
		int64		occurrence = DatumGetInt64(SPI_getbinval(row, desc, TAKE_OCCURRENCE, &isnull));
		char	   *seed = TextDatumGetCString(SPI_getbinval(row, desc, TAKE_ID_SEED, &isnull));
		Datum		value;
		List	   *new_rows;
		List	   *old_rows;
		int			nrows;

		for (last = first + 1; last < nitems; last++)
			if (DatumGetInt64(SPI_getbinval(items[last], desc, TAKE_OCCURRENCE, &isnull)) != occurrence)
				break;
		value = SPI_getbinval(row, desc, TAKE_NEW_ROWS, &isnull);
		new_rows = json_array_texts(value, isnull);
		value = SPI_getbinval(row, desc, TAKE_OLD_ROWS, &isnull);
		old_rows = json_array_texts(value, isnull);
		nrows = Max(list_length(new_rows), list_length(old_rows));
		for (int ord = 1; ord <= nrows; ord++)
		{
			bool		no_new = ord > list_length(new_rows);
			bool		no_old = ord > list_length(old_rows);
			Datum		new_row = no_new ? (Datum) 0 : PointerGetDatum(list_nth(new_rows, ord - 1));
			Datum		old_row = no_old ? (Datum) 0 : PointerGetDatum(list_nth(old_rows, ord - 1));

			CHECK_FOR_INTERRUPTS();
			for (int i = first; i < last; i++)
				add_item(&out, render, item_cxt, items[i], desc, seed, ord,
						 old_row, no_old, new_row, no_new);
		}
	}
	PopActiveSnapshot();

	if (out.count > 0)
	{
		Oid			insert_types[6] = {INT8ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, JSONARRAYOID,
		TIMESTAMPTZARRAYOID, TEXTARRAYOID};
		Datum		insert_args[6];
		SPIPlanPtr	plan = webhook_keep_plan(&insert_plan, expand_insert_sql, 6, insert_types,
											 false);

		insert_args[0] = makeArrayResult(out.profile_ids, CurrentMemoryContext);
		insert_args[1] = makeArrayResult(out.webhook_ids, CurrentMemoryContext);
		insert_args[2] = makeArrayResult(out.events, CurrentMemoryContext);
		insert_args[3] = makeArrayResult(out.bodies, CurrentMemoryContext);
		insert_args[4] = makeArrayResult(out.captured_at, CurrentMemoryContext);
		insert_args[5] = makeArrayResult(out.errors, CurrentMemoryContext);
		if (SPI_execute_plan(plan, insert_args, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not insert webhook deliveries");
	}
	return true;
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
	bool		more;
} ExpandStep;

/* The last expansion saw a profile that batches: expand_sql goes first. */
static bool profiles_batch = true;

/* Run expand_sql; true when rows were left for another step. */
static bool
expand_all(Datum *args)
{
	Oid			types[2] = {INT4OID, OIDARRAYOID};
	bool		isnull;

	if (SPI_execute_plan(webhook_keep_plan(&expand_plan, expand_sql, 2, types, false),
						 args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not expand webhook occurrences");
	profiles_batch = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3,
												&isnull));
	return webhook_rows_left(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, EXPAND_LOCK_STEP);
}

static void
expand_step(void *arg)
{
	ExpandStep *step = arg;
	Datum		args[2];

	args[0] = Int32GetDatum(step->limit);
	args[1] = deferred_table_array();
	if (!profiles_batch && expand_single(args, &step->more))
		return;
	step->more = expand_all(args);
}

/*
 * expand_step in a subtransaction; the error, if any, comes back in
 * *error, and *locked says it was a lock the worker would have had to wait
 * for.
 */
static bool
expand_guarded(int limit, char **error, bool *locked)
{
	ExpandStep	step = {limit, false};
	ErrorData  *edata;

	webhook_rendering_table = InvalidOid;
	edata = webhook_in_subtransaction(expand_step, &step);
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
 * DeferredTable), and *deferred asks for another try soon.
 */
bool
webhook_expand(bool *deferred)
{
	Oid			types[2] = {TEXTOID, OIDARRAYOID};
	Datum		args[2];
	char	   *error;
	bool		locked;
	bool		more;

	*deferred = false;
	expire_deferred_tables();
	for (int limit = EXPAND_STEP;;)
	{
		more = expand_guarded(limit, &error, &locked);
		if (error == NULL)
		{
			*deferred = deferred_tables != NIL;
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
	(void) expand_guarded(1, &error, &locked);
	if (error != NULL && locked)
		*deferred = true;
	else if (error != NULL)
		elog(ERROR, "could not expand webhook occurrences: %s", error);
	else
		*deferred = deferred_tables != NIL;
	return !*deferred;
}

