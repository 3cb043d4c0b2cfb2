/*
 * envelope.c
 *		The JSON object sent for one occurrence, built from the snapshot the
 *		capture trigger took.
 *
 *	{"id" : ..., "profile" : ..., "binding_id" : ..., "event" : ...,
 *	 "title" : ..., "object_id" : ..., "timestamp" : "...Z",
 *	 "<object>" : {row}, ["<parent>" : {row} | null,] ["changes" : {...}]}
 *
 * The worker builds one for every delivery it expands, so this is C: as
 * SQL functions these were most of the expansion's time.  Keys keep this
 * order, and the row snapshots are copied as the capture wrote them.
 */
#include "webhook.h"

#include "catalog/pg_type.h"
#include "common/jsonapi.h"
#include "fmgr.h"
#include "nodes/pg_list.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/jsonfuncs.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(webhook_object_id);
PG_FUNCTION_INFO_V1(webhook_changes);
PG_FUNCTION_INFO_V1(webhook_envelope);

/* One top-level field of a JSON object: its key and its raw value text. */
typedef struct JsonField
{
	char	   *key;
	const char *value;			/* points into the parsed text */
	int			len;
} JsonField;

typedef struct FieldsState
{
	JsonLexContext *lex;
	List	   *fields;			/* JsonField * in document order */
	JsonField  *current;
} FieldsState;

/* At a top-level key, the lexer already stands on the value's first token. */
static void
field_start(void *state, char *fname, bool isnull)
{
	FieldsState *fs = state;

	if (fs->lex->lex_level != 1)
		return;
	fs->current = palloc0(sizeof(JsonField));
	fs->current->key = fname;
	fs->current->value = fs->lex->token_start;
}

/* ... and at its end, just past the value's last token. */
static void
field_end(void *state, char *fname, bool isnull)
{
	FieldsState *fs = state;

	if (fs->lex->lex_level != 1 || fs->current == NULL)
		return;
	fs->current->len = fs->lex->prev_token_terminator - fs->current->value;
	fs->fields = lappend(fs->fields, fs->current);
	fs->current = NULL;
}

static bool
same_text(text *a, text *b)
{
	return VARSIZE_ANY_EXHDR(a) == VARSIZE_ANY_EXHDR(b) &&
		memcmp(VARDATA_ANY(a), VARDATA_ANY(b), VARSIZE_ANY_EXHDR(a)) == 0;
}

/* The top-level fields of a JSON object, in order (none for a non-object). */
static List *
json_fields(text *json)
{
	FieldsState state = {0};
	JsonSemAction sem = {0};
	JsonLexContext *lex = makeJsonLexContext(json, true);

	state.lex = lex;
	sem.semstate = &state;
	sem.object_field_start = field_start;
	sem.object_field_end = field_end;
	pg_parse_json_or_ereport(lex, &sem);
	return state.fields;
}

static JsonField *
find_field(List *fields, const char *key)
{
	ListCell   *lc;

	foreach(lc, fields)
		if (strcmp(((JsonField *) lfirst(lc))->key, key) == 0)
			return lfirst(lc);
	return NULL;
}

/* The object_id: the key column's value, an object for several, or null. */
static void
append_object_id(StringInfo out, List *fields, ArrayType *key_columns)
{
	Datum	   *keys;
	bool	   *nulls;
	int			nkeys;

	deconstruct_array(key_columns, TEXTOID, -1, false, TYPALIGN_INT, &keys, &nulls, &nkeys);
	if (nkeys == 1)
	{
		JsonField  *f = nulls[0] ? NULL : find_field(fields, TextDatumGetCString(keys[0]));

		if (f)
			appendBinaryStringInfo(out, f->value, f->len);
		else
			appendStringInfoString(out, "null");
		return;
	}
	if (nkeys == 0)
	{
		appendStringInfoString(out, "null");
		return;
	}
	appendStringInfoString(out, "{ ");
	for (int i = 0; i < nkeys; i++)
	{
		char	   *key = nulls[i] ? NULL : TextDatumGetCString(keys[i]);
		JsonField  *f = key ? find_field(fields, key) : NULL;

		if (i > 0)
			appendStringInfoString(out, ", ");
		escape_json(out, key ? key : "");
		appendStringInfoString(out, " : ");
		if (f)
			appendBinaryStringInfo(out, f->value, f->len);
		else
			appendStringInfoString(out, "null");
	}
	appendStringInfoString(out, " }");
}

/* {"col" : {"old" : ..., "new" : ...}} for the columns whose value changed. */
static void
append_changes(StringInfo out, List *old_fields, List *new_fields)
{
	ListCell   *lc;
	bool		any = false;

	foreach(lc, new_fields)
	{
		JsonField  *n = lfirst(lc);
		JsonField  *o = find_field(old_fields, n->key);

		if (o == NULL || (o->len == n->len && memcmp(o->value, n->value, n->len) == 0))
			continue;
		appendStringInfoString(out, any ? ", " : "{ ");
		any = true;
		escape_json(out, n->key);
		appendStringInfoString(out, " : {\"old\" : ");
		appendBinaryStringInfo(out, o->value, o->len);
		appendStringInfoString(out, ", \"new\" : ");
		appendBinaryStringInfo(out, n->value, n->len);
		appendStringInfoChar(out, '}');
	}
	appendStringInfoString(out, any ? " }" : "{}");
}

static void
append_field_name(StringInfo out, const char *name)
{
	appendStringInfoString(out, ", ");
	escape_json(out, name);
	appendStringInfoString(out, " : ");
}

static void
append_text_or_null(StringInfo out, FunctionCallInfo fcinfo, int arg)
{
	if (PG_ARGISNULL(arg))
		appendStringInfoString(out, "null");
	else
		escape_json(out, text_to_cstring(PG_GETARG_TEXT_PP(arg)));
}

static void
append_json_or_null(StringInfo out, FunctionCallInfo fcinfo, int arg)
{
	if (PG_ARGISNULL(arg))
		appendStringInfoString(out, "null");
	else
		appendStringInfoString(out, text_to_cstring(PG_GETARG_TEXT_PP(arg)));
}

/* ISO 8601 in UTC with microseconds: 2026-11-28T18:06:39.123456Z */
static void
append_utc_timestamp(StringInfo out, TimestampTz ts)
{
	struct pg_tm tm;
	fsec_t		fsec;

	if (TIMESTAMP_NOT_FINITE(ts) || timestamp2tm(ts, NULL, &tm, &fsec, NULL, NULL) != 0)
	{
		appendStringInfoString(out, "null");
		return;
	}
	appendStringInfo(out, "\"%04d-%02d-%02dT%02d:%02d:%02d.%06dZ\"",
					 tm.tm_year, tm.tm_mon, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
					 (int) fsec);
}

/* webhook._object_id(row_data json, key_columns text[]) RETURNS json */
Datum
webhook_object_id(PG_FUNCTION_ARGS)
{
	StringInfoData out;
	ArrayType  *keys = PG_GETARG_ARRAYTYPE_P(1);

	if (ArrayGetNItems(ARR_NDIM(keys), ARR_DIMS(keys)) == 0)
		PG_RETURN_NULL();
	initStringInfo(&out);
	append_object_id(&out, json_fields(PG_GETARG_TEXT_PP(0)), keys);
	PG_RETURN_TEXT_P(cstring_to_text_with_len(out.data, out.len));
}

/* webhook._changes(old_row json, new_row json) RETURNS json */
Datum
webhook_changes(PG_FUNCTION_ARGS)
{
	StringInfoData out;

	initStringInfo(&out);
	append_changes(&out, json_fields(PG_GETARG_TEXT_PP(0)), json_fields(PG_GETARG_TEXT_PP(1)));
	PG_RETURN_TEXT_P(cstring_to_text_with_len(out.data, out.len));
}

/*
 * webhook._envelope(id, profile, binding_id, event, title, object,
 *					 key_columns, captured_at, operation, row_data, old_row,
 *					 new_row, parent_object, parent_row) RETURNS json
 *
 * Not strict: a NULL comes out as null (the worker must never fail on a
 * snapshot), old_row and new_row only matter for an update, and the parent
 * only when parent_object is given.
 */
Datum
webhook_envelope(PG_FUNCTION_ARGS)
{
	StringInfoData out;
	List	   *row_fields = NIL;
	bool		update;

	if (!PG_ARGISNULL(9))
		row_fields = json_fields(PG_GETARG_TEXT_PP(9));
	update = !PG_ARGISNULL(8) && strcmp(text_to_cstring(PG_GETARG_TEXT_PP(8)), "update") == 0;

	initStringInfo(&out);
	appendStringInfoString(&out, "{\"id\" : ");
	append_text_or_null(&out, fcinfo, 0);
	appendStringInfoString(&out, ", \"profile\" : ");
	append_text_or_null(&out, fcinfo, 1);
	appendStringInfoString(&out, ", \"binding_id\" : ");
	if (PG_ARGISNULL(2))
		appendStringInfoString(&out, "null");
	else
		appendStringInfo(&out, INT64_FORMAT, PG_GETARG_INT64(2));
	appendStringInfoString(&out, ", \"event\" : ");
	append_text_or_null(&out, fcinfo, 3);
	appendStringInfoString(&out, ", \"title\" : ");
	append_text_or_null(&out, fcinfo, 4);
	appendStringInfoString(&out, ", \"object_id\" : ");
	if (PG_ARGISNULL(6))
		appendStringInfoString(&out, "null");
	else
		append_object_id(&out, row_fields, PG_GETARG_ARRAYTYPE_P(6));
	appendStringInfoString(&out, ", \"timestamp\" : ");
	if (PG_ARGISNULL(7))
		appendStringInfoString(&out, "null");
	else
		append_utc_timestamp(&out, PG_GETARG_TIMESTAMPTZ(7));
	append_field_name(&out, PG_ARGISNULL(5) ? "object" : text_to_cstring(PG_GETARG_TEXT_PP(5)));
	append_json_or_null(&out, fcinfo, 9);
	if (!PG_ARGISNULL(12))
	{
		append_field_name(&out, text_to_cstring(PG_GETARG_TEXT_PP(12)));
		append_json_or_null(&out, fcinfo, 13);
	}
	if (update && !PG_ARGISNULL(10) && !PG_ARGISNULL(11))
	{
		text	   *new_row = PG_GETARG_TEXT_PP(11);
		List	   *new_fields = row_fields;

		/* the worker passes the new row as the row itself: parse it once */
		if (PG_ARGISNULL(9) || !same_text(new_row, PG_GETARG_TEXT_PP(9)))
			new_fields = json_fields(new_row);
		appendStringInfoString(&out, ", \"changes\" : ");
		append_changes(&out, json_fields(PG_GETARG_TEXT_PP(10)), new_fields);
	}
	appendStringInfoChar(&out, '}');
	PG_RETURN_TEXT_P(cstring_to_text_with_len(out.data, out.len));
}
