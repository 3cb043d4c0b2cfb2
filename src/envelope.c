/*
 * envelope.c
 *		The JSON object sent for one occurrence, for each payload kind, built
 *		from the snapshot the capture trigger took.
 *
 *	{"id" : ..., "profile" : ..., "binding_id" : ..., "event" : ...,
 *	 "title" : ..., "object_id" : ..., "timestamp" : "...Z",
 *	 "<object>" : {...}, ["<parent>" : {...} | null,] ["changes" : {...}]}
 *
 *	small		the row as captured; the parent row
 *	full		the row with the row of each of its foreign keys after the
 *				key's column; the parent row, with its own
 *	event_only	no object, no parent, no changes
 *	custom		the object holds the profile's fields only, and changes
 *				only theirs, under the fields' names
 *
 * A profile with envelope 'halo' gets the shape Halo's own webhooks have,
 * for receivers written for them (see render_halo):
 *
 *	{"id" : ..., "webhook_id" : ..., "notification_id" : ..., "escmsg_id" : ...,
 *	 "event" : ..., "message" : ..., "object_id" : ..., "agent_id" : ...,
 *	 "timestamp" : "...0Z", ["<parent>" : {"id" : ..., ...},]
 *	 "<object>" : {"id" : ..., ...}}
 *
 * The worker builds one for every change it expands, and preview builds
 * one the same way.  Keys keep this order; snapshots are copied as the
 * capture wrote them except for the values rowjson.c rewrites.
 */
#include "webhook.h"
#include "envelope.h"
#include "rowjson.h"

#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "storage/proc.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/formatting.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(webhook_render);

Oid			webhook_rendering_table = InvalidOid;

typedef enum PayloadKind
{
	PAYLOAD_SMALL,
	PAYLOAD_FULL,
	PAYLOAD_EVENT_ONLY,
	PAYLOAD_CUSTOM
} PayloadKind;

/* A custom field, resolved against one binding's event. */
typedef struct CustomField
{
	char	   *name;
	char	   *column;
	bool		on_parent;		/* a column of the parent row */
	bool		resolved;		/* false: the column is not there, null */
	bool		send_id;
	char	   *display;		/* the linked row's column to send */
	ShapeLink  *link;			/* a single-select field: its lookup */
	ValueFix	fix;
} CustomField;

/* What one binding needs, worked out once per statement. */
typedef struct BindingPlan
{
	int64		binding_id;
	PayloadKind kind;
	bool		halo;			/* envelope 'halo' */
	char	   *halo_key;		/* halo: the table's single key column, or NULL */
	bool		halo_custom_id; /* halo: a custom field is named "id" */
	int			nfields;
	CustomField *fields;
	bool		needs_parent;	/* small, full, or a custom field of it */
	/* the envelope's part from profile to title, and what it was made of */
	StringInfoData names;
	text	   *names_of[3];	/* profile, event, title; NULL for a null */
	struct BindingPlan *next;
} BindingPlan;

typedef struct RenderCache
{
	LocalTransactionId lxid;
	BindingPlan *bindings;
} RenderCache;

static PayloadKind
payload_kind(const char *payload)
{
	if (payload == NULL || strcmp(payload, "small") == 0)
		return PAYLOAD_SMALL;
	if (strcmp(payload, "full") == 0)
		return PAYLOAD_FULL;
	if (strcmp(payload, "event_only") == 0)
		return PAYLOAD_EVENT_ONLY;
	if (strcmp(payload, "custom") == 0)
		return PAYLOAD_CUSTOM;
	return PAYLOAD_SMALL;
}

static char *
field_text(JsonbContainer *object, const char *key)
{
	JsonbValue	v;

	if (getKeyJsonValueFromContainer(object, key, strlen(key), &v) == NULL ||
		v.type != jbvString)
		return NULL;
	return pnstrdup(v.val.string.val, v.val.string.len);
}

static bool
field_flag(JsonbContainer *object, const char *key)
{
	JsonbValue	v;

	return getKeyJsonValueFromContainer(object, key, strlen(key), &v) != NULL &&
		v.type == jbvBool && v.val.boolean;
}

/*
 * The profile's custom fields (checked by set_payload_fields) against this
 * binding's tables: "column" is a column of the event's row, "<object>.column"
 * one of the row or the parent that goes under that key.
 */
static void
resolve_fields(BindingPlan *bp, Jsonb *fields, const char *object, Oid table,
			   const char *parent_object, Oid parent_table)
{
	int			n;

	if (fields == NULL || !JB_ROOT_IS_ARRAY(fields))
		return;
	n = JB_ROOT_COUNT(fields);
	bp->fields = palloc0(sizeof(CustomField) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		JsonbValue *element = getIthJsonbValueFromContainer(&fields->root, i);
		CustomField *f = &bp->fields[bp->nfields];
		char	   *dot;
		TableShape *shape;
		ShapeColumn *column;

		if (element == NULL || element->type != jbvBinary)
			continue;
		f->name = field_text(element->val.binary.data, "name");
		f->column = field_text(element->val.binary.data, "column");
		f->display = field_text(element->val.binary.data, "display");
		f->send_id = field_flag(element->val.binary.data, "send_id");
		if (f->name == NULL || f->column == NULL)
			continue;
		bp->nfields++;
		dot = strchr(f->column, '.');
		shape = webhook_table_shape(table);
		if (dot != NULL)
		{
			*dot = '\0';
			if (parent_object && strcmp(f->column, parent_object) == 0)
			{
				f->on_parent = true;
				bp->needs_parent = true;
				shape = webhook_table_shape(parent_table);
			}
			else if (object == NULL || strcmp(f->column, object) != 0)
				continue;
			f->column = dot + 1;
		}
		column = webhook_shape_column(shape, f->column, -1);
		if (column == NULL)
			continue;
		f->resolved = true;
		f->fix = column->fix;
		f->link = webhook_column_link(shape, f->column);
		if (f->display == NULL)
			f->display = "name";
	}
}

/* The single key column of an event's table, or NULL. */
static char *
single_key(FunctionCallInfo fcinfo)
{
	Datum	   *keys;
	bool	   *nulls;
	int			nkeys;
	char	   *key;

	if (PG_ARGISNULL(RENDER_KEY_COLUMNS))
		return NULL;
	deconstruct_array(PG_GETARG_ARRAYTYPE_P(RENDER_KEY_COLUMNS), TEXTOID, -1, false, TYPALIGN_INT,
					  &keys, &nulls, &nkeys);
	key = nkeys == 1 && !nulls[0] ? TextDatumGetCString(keys[0]) : NULL;
	pfree(keys);
	pfree(nulls);
	return key;
}

static BindingPlan *
binding_plan(FunctionCallInfo fcinfo)
{
	RenderCache *cache = fcinfo->flinfo->fn_extra;
	int64		binding_id = PG_ARGISNULL(RENDER_BINDING) ? 0 : PG_GETARG_INT64(RENDER_BINDING);
	BindingPlan *bp;
	MemoryContext old;

	if (cache == NULL || cache->lxid != MyProc->lxid)
	{
		cache = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(RenderCache));
		cache->lxid = MyProc->lxid;
		fcinfo->flinfo->fn_extra = cache;
	}
	for (bp = cache->bindings; bp != NULL; bp = bp->next)
		if (bp->binding_id == binding_id)
			return bp;

	old = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);
	bp = palloc0(sizeof(BindingPlan));
	bp->binding_id = binding_id;
	bp->kind = payload_kind(PG_ARGISNULL(RENDER_PAYLOAD) ? NULL :
							text_to_cstring(PG_GETARG_TEXT_PP(RENDER_PAYLOAD)));
	/* (_render of a schema before 0.9 has none of the halo arguments) */
	bp->halo = PG_NARGS() == RENDER_NARGS && !PG_ARGISNULL(RENDER_ENVELOPE) &&
		strcmp(text_to_cstring(PG_GETARG_TEXT_PP(RENDER_ENVELOPE)), "halo") == 0;
	/* a Halo envelope's agent_id of an action is its ticket's: the parent's */
	bp->needs_parent = bp->kind == PAYLOAD_SMALL || bp->kind == PAYLOAD_FULL ||
		(bp->halo && !PG_ARGISNULL(RENDER_AGENT_COLUMN));
	if (bp->kind == PAYLOAD_CUSTOM)
		resolve_fields(bp, PG_ARGISNULL(RENDER_FIELDS) ? NULL : PG_GETARG_JSONB_P(RENDER_FIELDS),
					   PG_ARGISNULL(RENDER_OBJECT) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(RENDER_OBJECT)),
					   PG_ARGISNULL(RENDER_TABLE) ? InvalidOid : PG_GETARG_OID(RENDER_TABLE),
					   PG_ARGISNULL(RENDER_PARENT_OBJECT) ? NULL :
					   text_to_cstring(PG_GETARG_TEXT_PP(RENDER_PARENT_OBJECT)),
					   PG_ARGISNULL(RENDER_PARENT_TABLE) ? InvalidOid : PG_GETARG_OID(RENDER_PARENT_TABLE));
	if (bp->halo)
	{
		bp->halo_key = single_key(fcinfo);
		for (int i = 0; i < bp->nfields; i++)
			bp->halo_custom_id |= strcmp(bp->fields[i].name, "id") == 0;
	}
	bp->next = cache->bindings;
	cache->bindings = bp;
	MemoryContextSwitchTo(old);
	return bp;
}

static void append_text_or_null(StringInfo out, FunctionCallInfo fcinfo, int arg);

/* Whether an argument is the text kept (both NULL, or equal). */
static bool
same_text(FunctionCallInfo fcinfo, int arg, text *kept)
{
	text	   *t;

	if (PG_ARGISNULL(arg) || kept == NULL)
		return PG_ARGISNULL(arg) && kept == NULL;
	t = PG_GETARG_TEXT_PP(arg);
	return VARSIZE_ANY_EXHDR(t) == VARSIZE_ANY_EXHDR(kept) &&
		memcmp(VARDATA_ANY(t), VARDATA_ANY(kept), VARSIZE_ANY_EXHDR(t)) == 0;
}

/*
 * The envelope's profile, binding_id, event and title: the same for every
 * change of a binding, written once for it (and again should they differ).
 */
static void
append_names(StringInfo out, BindingPlan *bp, FunctionCallInfo fcinfo)
{
	static const int args[3] = {RENDER_PROFILE, RENDER_EVENT, RENDER_TITLE};
	bool		same = bp->names.data != NULL;

	for (int i = 0; i < 3 && same; i++)
		same = same_text(fcinfo, args[i], bp->names_of[i]);
	if (!same)
	{
		MemoryContext old = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);

		if (bp->names.data == NULL)
			initStringInfo(&bp->names);
		resetStringInfo(&bp->names);
		appendStringInfoString(&bp->names, ", \"profile\" : ");
		append_text_or_null(&bp->names, fcinfo, RENDER_PROFILE);
		appendStringInfoString(&bp->names, ", \"binding_id\" : ");
		if (PG_ARGISNULL(RENDER_BINDING))
			appendStringInfoString(&bp->names, "null");
		else
			appendStringInfo(&bp->names, INT64_FORMAT, PG_GETARG_INT64(RENDER_BINDING));
		appendStringInfoString(&bp->names, ", \"event\" : ");
		append_text_or_null(&bp->names, fcinfo, RENDER_EVENT);
		appendStringInfoString(&bp->names, ", \"title\" : ");
		append_text_or_null(&bp->names, fcinfo, RENDER_TITLE);
		for (int i = 0; i < 3; i++)
			bp->names_of[i] = PG_ARGISNULL(args[i]) ? NULL
				: DatumGetTextPCopy(PG_GETARG_DATUM(args[i]));
		MemoryContextSwitchTo(old);
	}
	appendBinaryStringInfo(out, bp->names.data, bp->names.len);
}

static List *
fields_of(FunctionCallInfo fcinfo, int arg)
{
	text	   *t;

	if (PG_ARGISNULL(arg))
		return NIL;
	t = PG_GETARG_TEXT_PP(arg);
	return webhook_json_fields(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
}

/* The object_id: the key column's value, an object for several, or null. */
static void
append_object_id(StringInfo out, List *fields, ArrayType *key_columns, TableShape *shape)
{
	Datum	   *keys;
	bool	   *nulls;
	int			nkeys;

	deconstruct_array(key_columns, TEXTOID, -1, false, TYPALIGN_INT, &keys, &nulls, &nkeys);
	if (nkeys == 0)
	{
		appendStringInfoString(out, "null");
		return;
	}
	if (nkeys > 1)
		appendStringInfoString(out, "{ ");
	for (int i = 0; i < nkeys; i++)
	{
		char	   *key = nulls[i] ? NULL : TextDatumGetCString(keys[i]);
		JsonField  *f = key ? webhook_find_field(fields, key) : NULL;

		if (nkeys > 1)
		{
			if (i > 0)
				appendStringInfoString(out, ", ");
			escape_json(out, key ? key : "");
			appendStringInfoString(out, " : ");
		}
		if (f)
			webhook_append_fixed(out, f->value, f->len, webhook_column_fix(shape, key, -1));
		else
			appendStringInfoString(out, "null");
	}
	if (nkeys > 1)
		appendStringInfoString(out, " }");
}

/* {"col" : {"old" : ..., "new" : ...}} for the columns whose value changed. */
static void
append_changes(StringInfo out, List *old_fields, List *new_fields, TableShape *shape)
{
	ListCell   *lc;
	bool		any = false;

	foreach(lc, new_fields)
	{
		JsonField  *n = lfirst(lc);
		JsonField  *o = webhook_find_field(old_fields, n->key);
		ValueFix	fix;

		if (o == NULL || (o->len == n->len && memcmp(o->value, n->value, n->len) == 0))
			continue;
		fix = webhook_column_fix(shape, n->key, foreach_current_index(lc));
		appendStringInfoString(out, any ? ", " : "{ ");
		any = true;
		escape_json(out, n->key);
		appendStringInfoString(out, " : {\"old\" : ");
		webhook_append_fixed(out, o->value, o->len, fix);
		appendStringInfoString(out, ", \"new\" : ");
		webhook_append_fixed(out, n->value, n->len, fix);
		appendStringInfoChar(out, '}');
	}
	appendStringInfoString(out, any ? " }" : "{}");
}

/*
 * A custom field's value: the column's own, or for a single-select field
 * the display column of the row it points to (or its ID with send_id).
 */
static void
append_field_value(StringInfo out, CustomField *f, List *source, Oid reader)
{
	JsonField  *v = f->resolved ? webhook_find_field(source, f->column) : NULL;
	JsonField  *display;

	if (v == NULL)
	{
		appendStringInfoString(out, "null");
		return;
	}
	if (f->link == NULL || f->send_id)
	{
		webhook_append_fixed(out, v->value, v->len, f->fix);
		return;
	}
	display = webhook_linked_field(f->link, source, reader, f->display);
	if (display)
		appendBinaryStringInfo(out, display->value, display->len);
	else
		appendStringInfoString(out, "null");
}

static void
append_custom_object(StringInfo out, BindingPlan *bp, List *row_fields,
					 List *parent_fields, Oid reader)
{
	appendStringInfoChar(out, '{');
	for (int i = 0; i < bp->nfields; i++)
	{
		CustomField *f = &bp->fields[i];

		if (i > 0)
			appendStringInfoChar(out, ',');
		escape_json(out, f->name);
		appendStringInfoChar(out, ':');
		append_field_value(out, f, f->on_parent ? parent_fields : row_fields, reader);
	}
	appendStringInfoChar(out, '}');
}

/* The fields of the row itself that changed, under their names. */
static void
append_custom_changes(StringInfo out, BindingPlan *bp, List *old_fields, List *new_fields,
					  Oid reader)
{
	bool		any = false;

	for (int i = 0; i < bp->nfields; i++)
	{
		CustomField *f = &bp->fields[i];
		JsonField  *o;
		JsonField  *n;

		if (f->on_parent || !f->resolved)
			continue;
		o = webhook_find_field(old_fields, f->column);
		n = webhook_find_field(new_fields, f->column);
		if (o == NULL || n == NULL ||
			(o->len == n->len && memcmp(o->value, n->value, n->len) == 0))
			continue;
		appendStringInfoString(out, any ? ", " : "{ ");
		any = true;
		escape_json(out, f->name);
		appendStringInfoString(out, " : {\"old\" : ");
		append_field_value(out, f, old_fields, reader);
		appendStringInfoString(out, ", \"new\" : ");
		append_field_value(out, f, new_fields, reader);
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

/*
 * ISO 8601 in UTC with microseconds: 2026-11-28T18:06:39.123456Z, or with
 * seven fractional digits as .NET writes them (Halo's): ...39.1234560Z
 */
static void
append_utc_timestamp(StringInfo out, TimestampTz ts, bool seven_digits)
{
	struct pg_tm tm;
	fsec_t		fsec;

	if (TIMESTAMP_NOT_FINITE(ts) || timestamp2tm(ts, NULL, &tm, &fsec, NULL, NULL) != 0)
	{
		appendStringInfoString(out, "null");
		return;
	}
	if (tm.tm_year < 0 || tm.tm_year > 9999)
	{
		appendStringInfo(out, "\"%04d-%02d-%02dT%02d:%02d:%02d.%06d%sZ\"",
						 tm.tm_year, tm.tm_mon, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
						 (int) fsec, seven_digits ? "0" : "");
		return;
	}
	/* the same, written digit by digit: this runs for every change */
	{
		char		buf[sizeof("\"0000-00-00T00:00:00.0000000Z\"")];
		char	   *p = buf;
		const struct
		{
			int			value;
			int			width;
			char		after;
		}			parts[] = {
			{tm.tm_year, 4, '-'}, {tm.tm_mon, 2, '-'}, {tm.tm_mday, 2, 'T'},
			{tm.tm_hour, 2, ':'}, {tm.tm_min, 2, ':'}, {tm.tm_sec, 2, '.'},
			{(int) fsec * (seven_digits ? 10 : 1), seven_digits ? 7 : 6, 'Z'},
		};

		*p++ = '"';
		for (size_t i = 0; i < lengthof(parts); i++)
		{
			for (int d = parts[i].width - 1, v = parts[i].value; d >= 0; d--, v /= 10)
				p[d] = '0' + v % 10;
			p += parts[i].width;
			*p++ = parts[i].after;
		}
		*p++ = '"';
		appendBinaryStringInfo(out, buf, p - buf);
	}
}

static char *
text_arg(FunctionCallInfo fcinfo, int arg)
{
	return PG_ARGISNULL(arg) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(arg));
}

/*
 * Whose rights linked rows are read with.  Only the worker may name another
 * role (the event's author, from its own catalogue): in any other session
 * the argument is ignored and the caller reads as itself, so EXECUTE on
 * this function lends no one's rights.
 */
static Oid
render_reader(FunctionCallInfo fcinfo)
{
	if (!webhook_in_worker)
		return GetUserId();
	return PG_ARGISNULL(RENDER_READER) ? InvalidOid : PG_GETARG_OID(RENDER_READER);
}

/*
 * A value as a message shows it: strings without their quotes, null as
 * nothing, padded on the left with zeros to width (after a minus sign).
 */
static void
append_message_value(StringInfo msg, const char *value, int len, int width)
{
	char	   *text = value ? webhook_json_scalar_text(value, len) : NULL;
	int			textlen = text ? strlen(text) : 0;
	const char *digits = text;

	if (text && text[0] == '-' && width > textlen)
	{
		appendStringInfoChar(msg, '-');
		digits++;
		textlen--;
		width--;
	}
	for (int i = textlen; i < width; i++)
		appendStringInfoChar(msg, '0');
	if (digits)
		appendBinaryStringInfo(msg, digits, textlen);
}

/*
 * An event's message with its placeholders filled in: {column} from the
 * row, {object_id}, either with :0N for zero padding to N characters;
 * {{ and }} are braces.  define_event checked the template; a column gone
 * since shows as nothing, and what is not a placeholder as it is.
 */
static void
append_message(StringInfo out, const char *template, List *row_fields,
			   const char *object_id, int object_id_len)
{
	StringInfoData msg;
	const char *p = template;

	initStringInfo(&msg);
	while (*p)
	{
		const char *close;

		if ((p[0] == '{' && p[1] == '{') || (p[0] == '}' && p[1] == '}'))
		{
			appendStringInfoChar(&msg, p[0]);
			p += 2;
			continue;
		}
		close = p[0] == '{' ? strchr(p + 1, '}') : NULL;
		if (close == NULL || memchr(p + 1, '{', close - p - 1) != NULL)
		{
			appendStringInfoChar(&msg, *p++);
			continue;
		}
		{
			char	   *name = pnstrdup(p + 1, close - p - 1);
			char	   *colon = strrchr(name, ':');
			int			width = 0;
			JsonField  *f;

			if (colon && colon[1] == '0' && strspn(colon + 1, "0123456789") == strlen(colon + 1))
			{
				width = atoi(colon + 1);
				*colon = '\0';
			}
			if (strcmp(name, "object_id") == 0)
				append_message_value(&msg, object_id, object_id_len, width);
			else if ((f = webhook_find_field(row_fields, name)) != NULL)
				append_message_value(&msg, f->value, f->len, width);
			else
				append_message_value(&msg, NULL, 0, width);
			pfree(name);
		}
		p = close + 1;
	}
	escape_json(out, msg.data);
	pfree(msg.data);
}

/*
 * A row's object with an "id" key first, holding the row's key, for
 * receivers that read ticket.id whatever the key column is called.  An
 * object that is not one (null) is written as it is.
 */
static void
append_with_id(StringInfo out, const char *object, int len, const char *id, int idlen)
{
	int			i = 0;
	int			j;

	while (i < len && isspace((unsigned char) object[i]))
		i++;
	if (id == NULL || i >= len || object[i] != '{')
	{
		appendBinaryStringInfo(out, object, len);
		return;
	}
	appendStringInfoString(out, "{\"id\" : ");
	appendBinaryStringInfo(out, id, idlen);
	for (j = ++i; j < len && isspace((unsigned char) object[j]); j++)
		;
	if (j < len && object[j] != '}')
		appendStringInfoString(out, ", ");
	appendBinaryStringInfo(out, object + i, len - i);
}

/*
 * The value of a column of a row, as its payload writes it, in a buffer of
 * its own; NULL when the row has no such column.
 */
static char *
id_value(List *fields, const char *column, TableShape *shape, int *len)
{
	JsonField  *f = column ? webhook_find_field(fields, column) : NULL;
	StringInfoData buf;

	if (f == NULL)
		return NULL;
	initStringInfo(&buf);
	webhook_append_fixed(&buf, f->value, f->len, webhook_column_fix(shape, column, -1));
	*len = buf.len;
	return buf.data;
}

/*
 * Whether a row has a column "id" of its own (its key, or another): its
 * object, which writes every column, has an "id" then, and a second would
 * be one too many.
 */
static bool
own_id(List *fields)
{
	return webhook_find_field(fields, "id") != NULL;
}


/*
 * The Halo envelope (see the top of this file).  object_id is the ticket's
 * key: for an event with a parent (an action's), the parent's, read off
 * the row's parent column; agent_id is the ticket's agent column, the
 * parent row's when there is one.  No changes, profile or title: Halo's
 * receivers know none.
 */
static StringInfoData
render_halo(FunctionCallInfo fcinfo, BindingPlan *bp, text *row, List *row_fields,
			TableShape *shape, const char *parent_object, const char *parent_row,
			List *parent_fields, Oid reader)
{
	StringInfoData out;
	StringInfoData object_id;
	StringInfoData object;
	char	   *parent_column = text_arg(fcinfo, RENDER_PARENT_COLUMN);
	char	   *agent_column = text_arg(fcinfo, RENDER_AGENT_COLUMN);
	TableShape *parent_shape = parent_object && !PG_ARGISNULL(RENDER_PARENT_TABLE) ?
		webhook_table_shape(PG_GETARG_OID(RENDER_PARENT_TABLE)) : NULL;
	char	   *id;
	int			idlen = 0;

	if (shape == NULL)
		shape = webhook_table_shape(PG_ARGISNULL(RENDER_TABLE) ? InvalidOid : PG_GETARG_OID(RENDER_TABLE));

	initStringInfo(&object_id);
	if (parent_object && parent_column)
	{
		JsonField  *f = webhook_find_field(row_fields, parent_column);

		if (f)
			webhook_append_fixed(&object_id, f->value, f->len,
								 webhook_column_fix(shape, parent_column, -1));
		else
			appendStringInfoString(&object_id, "null");
	}
	else if (PG_ARGISNULL(RENDER_KEY_COLUMNS))
		appendStringInfoString(&object_id, "null");
	else
		append_object_id(&object_id, row_fields, PG_GETARG_ARRAYTYPE_P(RENDER_KEY_COLUMNS), shape);

	initStringInfo(&out);
	appendStringInfoString(&out, "{\"id\" : ");
	append_text_or_null(&out, fcinfo, RENDER_ID);
	appendStringInfoString(&out, ", \"webhook_id\" : ");
	append_text_or_null(&out, fcinfo, RENDER_PROFILE_GUID);
	appendStringInfoString(&out, ", \"notification_id\" : ");
	if (PG_ARGISNULL(RENDER_BINDING))
		appendStringInfoString(&out, "null");
	else
		appendStringInfo(&out, INT64_FORMAT, PG_GETARG_INT64(RENDER_BINDING));
	appendStringInfoString(&out, ", \"escmsg_id\" : ");
	append_text_or_null(&out, fcinfo, RENDER_CHANGE_ID);
	appendStringInfoString(&out, ", \"event\" : ");
	if (PG_ARGISNULL(RENDER_TITLE))
		appendStringInfoString(&out, "null");
	else
	{
		text	   *title = PG_GETARG_TEXT_PP(RENDER_TITLE);

		escape_json(&out, str_tolower(VARDATA_ANY(title), VARSIZE_ANY_EXHDR(title),
									  DEFAULT_COLLATION_OID));
	}
	appendStringInfoString(&out, ", \"message\" : ");
	if (PG_ARGISNULL(RENDER_MESSAGE))
		appendStringInfoString(&out, "null");
	else
		append_message(&out, text_arg(fcinfo, RENDER_MESSAGE), row_fields,
					   object_id.data, object_id.len);
	appendStringInfoString(&out, ", \"object_id\" : ");
	appendBinaryStringInfo(&out, object_id.data, object_id.len);
	appendStringInfoString(&out, ", \"agent_id\" : ");
	{
		bool		of_parent = parent_object != NULL;
		JsonField  *agent = agent_column == NULL ? NULL :
			webhook_find_field(of_parent ? parent_fields : row_fields, agent_column);

		if (agent)
			webhook_append_fixed(&out, agent->value, agent->len,
								 webhook_column_fix(of_parent ? parent_shape : shape, agent_column, -1));
		else
			appendStringInfoString(&out, "null");
	}
	appendStringInfoString(&out, ", \"timestamp\" : ");
	if (PG_ARGISNULL(RENDER_CAPTURED_AT))
		appendStringInfoString(&out, "null");
	else
		append_utc_timestamp(&out, PG_GETARG_TIMESTAMPTZ(RENDER_CAPTURED_AT), true);

	if (bp->kind == PAYLOAD_EVENT_ONLY)
	{
		appendStringInfoChar(&out, '}');
		return out;
	}

	/* the parent first: an action's ticket, then the action */
	initStringInfo(&object);
	if (parent_object && bp->kind != PAYLOAD_CUSTOM)
	{
		append_field_name(&out, parent_object);
		if (parent_row == NULL)
			appendStringInfoString(&out, "null");
		else
		{
			if (bp->kind == PAYLOAD_FULL)
				webhook_append_row(&object, parent_row, strlen(parent_row), parent_fields,
								   parent_shape, reader, true);
			else
				appendStringInfoString(&object, parent_row);
			id = own_id(parent_fields) ? NULL :
				id_value(parent_fields, text_arg(fcinfo, RENDER_PARENT_KEY), parent_shape, &idlen);
			append_with_id(&out, object.data, object.len, id, idlen);
			resetStringInfo(&object);
		}
	}

	append_field_name(&out, PG_ARGISNULL(RENDER_OBJECT) ? "object" : text_arg(fcinfo, RENDER_OBJECT));
	if (bp->kind == PAYLOAD_CUSTOM)
	{
		append_custom_object(&object, bp, row_fields, parent_fields, reader);
		id = bp->halo_custom_id ? NULL : id_value(row_fields, bp->halo_key, shape, &idlen);
	}
	else if (row == NULL)
	{
		appendStringInfoString(&object, "null");
		id = NULL;
	}
	else
	{
		webhook_append_row(&object, VARDATA_ANY(row), VARSIZE_ANY_EXHDR(row), row_fields,
						   shape, reader, bp->kind == PAYLOAD_FULL);
		id = own_id(row_fields) ? NULL : id_value(row_fields, bp->halo_key, shape, &idlen);
	}
	append_with_id(&out, object.data, object.len, id, idlen);
	appendStringInfoChar(&out, '}');
	return out;
}

/*
 * webhook._render(id, profile, payload, fields, binding_id, event, title,
 *				   object, table_oid, key_columns, captured_at, operation,
 *				   row_data, old_row, new_row, parent_object, parent_table,
 *				   parent_column, parent_key, reader, envelope,
 *				   profile_guid, change_id, message, agent_column) RETURNS json
 *
 * Not strict: a NULL comes out as null (the worker must never fail on a
 * snapshot), old_row and new_row only matter for an update, the parent
 * only when parent_object is given.  Rows read now are read as reader in
 * the worker, and as the caller anywhere else (see render_reader).
 */
Datum
webhook_render(PG_FUNCTION_ARGS)
{
	Oid			table = PG_ARGISNULL(RENDER_TABLE) ? InvalidOid : PG_GETARG_OID(RENDER_TABLE);
	BindingPlan *bp;
	StringInfoData out;
	text	   *row = PG_ARGISNULL(RENDER_ROW) ? NULL : PG_GETARG_TEXT_PP(RENDER_ROW);
	List	   *row_fields;
	Oid			reader = render_reader(fcinfo);
	TableShape *shape;
	char	   *operation;
	char	   *parent_object;
	const char *parent_row = NULL;
	List	   *parent_fields = NIL;
	bool		update;

	webhook_rendering_table = table;
	bp = binding_plan(fcinfo);
	row_fields = fields_of(fcinfo, RENDER_ROW);
	shape = bp->kind == PAYLOAD_EVENT_ONLY ? NULL : webhook_table_shape(table);
	operation = text_arg(fcinfo, RENDER_OPERATION);
	parent_object = text_arg(fcinfo, RENDER_PARENT_OBJECT);
	update = operation && strcmp(operation, "update") == 0;

	/* the parent, read now by its key in the row */
	if (parent_object && bp->needs_parent && !PG_ARGISNULL(RENDER_PARENT_TABLE) &&
		!PG_ARGISNULL(RENDER_PARENT_COLUMN) && !PG_ARGISNULL(RENDER_PARENT_KEY))
	{
		JsonField  *key = webhook_find_field(row_fields, text_arg(fcinfo, RENDER_PARENT_COLUMN));

		if (key && OidIsValid(reader))
			parent_row = webhook_row_by_key(PG_GETARG_OID(RENDER_PARENT_TABLE),
											text_arg(fcinfo, RENDER_PARENT_KEY),
											key->value, key->len, reader);
		if (parent_row && (bp->kind == PAYLOAD_FULL || bp->kind == PAYLOAD_CUSTOM || bp->halo))
			parent_fields = webhook_json_fields(parent_row, strlen(parent_row));
	}

	if (bp->halo)
	{
		out = render_halo(fcinfo, bp, row, row_fields, shape, parent_object, parent_row,
						  parent_fields, reader);
		webhook_rendering_table = InvalidOid;
		PG_RETURN_TEXT_P(cstring_to_text_with_len(out.data, out.len));
	}

	initStringInfo(&out);
	appendStringInfoString(&out, "{\"id\" : ");
	append_text_or_null(&out, fcinfo, RENDER_ID);
	append_names(&out, bp, fcinfo);
	appendStringInfoString(&out, ", \"object_id\" : ");
	if (PG_ARGISNULL(RENDER_KEY_COLUMNS))
		appendStringInfoString(&out, "null");
	else
		append_object_id(&out, row_fields, PG_GETARG_ARRAYTYPE_P(RENDER_KEY_COLUMNS),
						 shape ? shape : webhook_table_shape(table));
	appendStringInfoString(&out, ", \"timestamp\" : ");
	if (PG_ARGISNULL(RENDER_CAPTURED_AT))
		appendStringInfoString(&out, "null");
	else
		append_utc_timestamp(&out, PG_GETARG_TIMESTAMPTZ(RENDER_CAPTURED_AT), false);
	if (bp->kind != PAYLOAD_EVENT_ONLY)
		append_field_name(&out, PG_ARGISNULL(RENDER_OBJECT) ? "object" : text_arg(fcinfo, RENDER_OBJECT));

	switch (bp->kind)
	{
		case PAYLOAD_EVENT_ONLY:
			break;
		case PAYLOAD_CUSTOM:
			append_custom_object(&out, bp, row_fields, parent_fields, reader);
			break;
		case PAYLOAD_SMALL:
		case PAYLOAD_FULL:
			if (row == NULL)
				appendStringInfoString(&out, "null");
			else
				webhook_append_row(&out, VARDATA_ANY(row), VARSIZE_ANY_EXHDR(row), row_fields,
								   shape, reader, bp->kind == PAYLOAD_FULL);
			if (parent_object == NULL)
				break;
			append_field_name(&out, parent_object);
			if (parent_row == NULL)
				appendStringInfoString(&out, "null");
			else if (bp->kind == PAYLOAD_FULL)
				webhook_append_row(&out, parent_row, strlen(parent_row), parent_fields,
								   webhook_table_shape(PG_GETARG_OID(RENDER_PARENT_TABLE)),
								   reader, true);
			else
				appendStringInfoString(&out, parent_row);
			break;
	}

	if (update && bp->kind != PAYLOAD_EVENT_ONLY &&
		!PG_ARGISNULL(RENDER_OLD_ROW) && !PG_ARGISNULL(RENDER_NEW_ROW))
	{
		text	   *new_row = PG_GETARG_TEXT_PP(RENDER_NEW_ROW);
		List	   *new_fields = row_fields;
		List	   *old_fields = fields_of(fcinfo, RENDER_OLD_ROW);

		/* the worker passes the new row as the row itself: parse it once */
		if (row == NULL || VARSIZE_ANY_EXHDR(row) != VARSIZE_ANY_EXHDR(new_row) ||
			memcmp(VARDATA_ANY(row), VARDATA_ANY(new_row), VARSIZE_ANY_EXHDR(row)) != 0)
			new_fields = fields_of(fcinfo, RENDER_NEW_ROW);
		appendStringInfoString(&out, ", \"changes\" : ");
		if (bp->kind == PAYLOAD_CUSTOM)
			append_custom_changes(&out, bp, old_fields, new_fields, reader);
		else
			append_changes(&out, old_fields, new_fields, shape);
	}
	appendStringInfoChar(&out, '}');
	webhook_rendering_table = InvalidOid;
	PG_RETURN_TEXT_P(cstring_to_text_with_len(out.data, out.len));
}
