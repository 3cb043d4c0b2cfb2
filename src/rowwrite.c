/*
 * rowwrite.c
 *		A changed row as JSON text, exactly as row_to_json writes it, with
 *		how to write each column looked up once per table instead of once per
 *		value.
 *
 * row_to_json looks up every column's type (its base type, output function,
 * a cast to json) for every row it writes, and reads the columns one by one
 * from a heap tuple; in a bulk statement that was most of what capturing
 * cost the writer.  A RowWriter holds those answers for one table's tuple
 * descriptor.  A change of any type or cast makes every writer out of date
 * (syscache callbacks), so what it writes never differs from row_to_json.
 *
 * Values are written by the types' own output and cast functions, under the
 * rendering settings (webhook_render_begin), which the caller sets: they
 * are the same for every row written, so a date or time that repeats is
 * written from the text of the last one.  Arrays and composites, rare in a ticket table,
 * are handed to array_to_json and row_to_json whole.
 */
#include "webhook.h"
#include "rowjson.h"

#include "access/tupdesc.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/jsonapi.h"
#include "executor/tuptable.h"
#include "parser/parse_coerce.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/fmgrprotos.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

/* How one column's values are written: row_to_json's categories. */
typedef enum ValueKind
{
	KIND_BOOL,
	KIND_INTEGER,				/* int2, int4, int8: always a JSON number */
	KIND_NUMBER,				/* float4, float8, numeric: a number unless NaN or infinite */
	KIND_DATETIME,				/* date, timestamp, timestamptz: JsonEncodeDateTime */
	KIND_JSON,					/* json, jsonb: their text as it is */
	KIND_ARRAY,
	KIND_COMPOSITE,
	KIND_CAST,					/* a type of a user's with a cast to json */
	KIND_TEXT					/* anything else: its text, as a JSON string */
} ValueKind;

typedef struct ColumnWriter
{
	int			attnum;			/* 0-based */
	char	   *key;			/* ,"name": (the first without the comma) */
	int			key_len;
	ValueKind	kind;
	Oid			type;			/* the base type */
	FmgrInfo	function;		/* output or cast function, where one is used */
	/* dates and times: the last value written, as the rows of a bulk
	 * statement often share one (now()) */
	bool		has_last;
	Datum		last_value;
	char		last_text[MAXDATELEN + 3];	/* quoted */
} ColumnWriter;

struct RowWriter
{
	MemoryContext context;		/* holds the writer */
	uint64		generation;		/* type_generation when made */
	int			natts;			/* of the descriptor it was made for */
	Oid			rowtype;
	int			ncolumns;
	ColumnWriter *columns;		/* dropped columns left out */
};

/* Counts changes of types and casts: a writer made before one is stale. */
static uint64 type_generation = 1;
static bool callbacks_registered = false;

/*
 * Writers replaced in this transaction: a capture further up the stack may
 * still be writing with one, so they are freed when it ends.
 */
static List *retired_writers = NIL;

static void
types_changed(Datum arg, int cacheid, uint32 hashvalue)
{
	type_generation++;
}

static void
free_retired_writers(XactEvent event, void *arg)
{
	ListCell   *lc;

	if (retired_writers == NIL)
		return;
	if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT &&
		event != XACT_EVENT_PARALLEL_COMMIT && event != XACT_EVENT_PARALLEL_ABORT &&
		event != XACT_EVENT_PREPARE)
		return;
	foreach(lc, retired_writers)
		MemoryContextDelete(((RowWriter *) lfirst(lc))->context);
	list_free(retired_writers);
	retired_writers = NIL;
}

static ValueKind
column_kind(Oid type, FmgrInfo *function, MemoryContext context)
{
	Oid			func = InvalidOid;
	bool		varlena;
	ValueKind	kind;

	switch (type)
	{
		case BOOLOID:
			return KIND_BOOL;
		case INT2OID:
		case INT4OID:
		case INT8OID:
			return KIND_INTEGER;
		case FLOAT4OID:
		case FLOAT8OID:
		case NUMERICOID:
			kind = KIND_NUMBER;
			break;
		case DATEOID:
		case TIMESTAMPOID:
		case TIMESTAMPTZOID:
			return KIND_DATETIME;
		case JSONOID:
		case JSONBOID:
			kind = KIND_JSON;
			break;
		default:
			if (OidIsValid(get_element_type(type)) || type == ANYARRAYOID ||
				type == ANYCOMPATIBLEARRAYOID || type == RECORDARRAYOID)
				return KIND_ARRAY;
			if (type_is_rowtype(type))
				return KIND_COMPOSITE;
			kind = KIND_TEXT;
			/* a type of a user's may say how it becomes json */
			if (type >= FirstNormalObjectId &&
				find_coercion_pathway(JSONOID, type, COERCION_EXPLICIT, &func) == COERCION_PATH_FUNC &&
				OidIsValid(func))
				kind = KIND_CAST;
			break;
	}
	if (kind != KIND_CAST)
		getTypeOutputInfo(type, &func, &varlena);
	fmgr_info_cxt(func, function, context);
	return kind;
}

RowWriter *
webhook_row_writer(TupleDesc desc)
{
	MemoryContext context = AllocSetContextCreate(TopMemoryContext, "webhook row writer",
												  ALLOCSET_SMALL_SIZES);
	MemoryContext old = MemoryContextSwitchTo(context);
	RowWriter  *writer = palloc0(sizeof(RowWriter));

	if (!callbacks_registered)
	{
		CacheRegisterSyscacheCallback(TYPEOID, types_changed, (Datum) 0);
		CacheRegisterSyscacheCallback(CASTSOURCETARGET, types_changed, (Datum) 0);
		RegisterXactCallback(free_retired_writers, NULL);
		callbacks_registered = true;
	}
	writer->context = context;
	writer->generation = type_generation;
	writer->natts = desc->natts;
	writer->rowtype = desc->tdtypeid;
	writer->columns = palloc0(sizeof(ColumnWriter) * Max(desc->natts, 1));
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		ColumnWriter *column = &writer->columns[writer->ncolumns];
		StringInfoData key;

		if (att->attisdropped)
			continue;
		initStringInfo(&key);
		if (writer->ncolumns > 0)
			appendStringInfoChar(&key, ',');
		escape_json(&key, NameStr(att->attname));
		appendStringInfoChar(&key, ':');
		column->attnum = i;
		column->key = key.data;
		column->key_len = key.len;
		column->type = getBaseType(att->atttypid);
		column->kind = column_kind(column->type, &column->function, context);
		writer->ncolumns++;
	}
	MemoryContextSwitchTo(old);
	return writer;
}

/* The writer still writes rows of desc as row_to_json would. */
bool
webhook_row_writer_current(RowWriter *writer, TupleDesc desc)
{
	return writer->generation == type_generation && writer->natts == desc->natts &&
		writer->rowtype == desc->tdtypeid;
}

/* Done with a writer: it is freed when the transaction ends. */
void
webhook_retire_row_writer(RowWriter *writer)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

	retired_writers = lappend(retired_writers, writer);
	MemoryContextSwitchTo(old);
}

/* Append a function's json or text result, and free it. */
static void
append_text_datum(StringInfo out, Datum json)
{
	text	   *t = DatumGetTextPP(json);

	appendBinaryStringInfo(out, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
	pfree(t);
}

static void
append_value(StringInfo out, ColumnWriter *column, Datum value)
{
	char		buf[MAXDATELEN + 1];
	char	   *text;

	switch (column->kind)
	{
		case KIND_BOOL:
			appendStringInfoString(out, DatumGetBool(value) ? "true" : "false");
			return;
		case KIND_INTEGER:
			/* what int2out, int4out and int8out write */
			enlargeStringInfo(out, MAXINT8LEN + 1);
			if (column->type == INT8OID)
				out->len += pg_lltoa(DatumGetInt64(value), out->data + out->len);
			else
				out->len += pg_ltoa(column->type == INT2OID ? (int32) DatumGetInt16(value)
									: DatumGetInt32(value), out->data + out->len);
			return;
		case KIND_NUMBER:
			text = OutputFunctionCall(&column->function, value);
			if (IsValidJsonNumber(text, strlen(text)))
				appendStringInfoString(out, text);
			else
				escape_json(out, text);
			pfree(text);
			return;
		case KIND_DATETIME:
			if (!column->has_last || column->last_value != value)
			{
				JsonEncodeDateTime(buf, value, column->type, NULL);
				snprintf(column->last_text, sizeof(column->last_text), "\"%s\"", buf);
				column->last_value = value;
				column->has_last = true;
			}
			appendStringInfoString(out, column->last_text);
			return;
		case KIND_JSON:
			text = OutputFunctionCall(&column->function, value);
			appendStringInfoString(out, text);
			pfree(text);
			return;
		case KIND_ARRAY:
			append_text_datum(out, DirectFunctionCall1(array_to_json, value));
			return;
		case KIND_COMPOSITE:
			append_text_datum(out, DirectFunctionCall1(row_to_json, value));
			return;
		case KIND_CAST:
			append_text_datum(out, FunctionCall1(&column->function, value));
			return;
		case KIND_TEXT:
			text = OutputFunctionCall(&column->function, value);
			escape_json(out, text);
			pfree(text);
			return;
	}
}

/* Append the slot's row as a JSON object; the slot has the writer's shape. */
void
webhook_write_row(RowWriter *writer, StringInfo out, TupleTableSlot *slot)
{
	slot_getallattrs(slot);
	appendStringInfoChar(out, '{');
	for (int i = 0; i < writer->ncolumns; i++)
	{
		ColumnWriter *column = &writer->columns[i];

		appendBinaryStringInfo(out, column->key, column->key_len);
		if (slot->tts_isnull[column->attnum])
			appendStringInfoString(out, "null");
		else
			append_value(out, column, slot->tts_values[column->attnum]);
	}
	appendStringInfoChar(out, '}');
}
