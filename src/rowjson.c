/*
 * rowjson.c
 *		Row snapshots as JSON: their top-level fields, the shape of their
 *		table, and values written the way receivers expect.
 *
 * The capture trigger stores each changed row as row_to_json writes it, in
 * UTC: that is fast, and exact for every type.  Two kinds of column are
 * rewritten when the payload is made, from the table's column types:
 * timestamptz values end in "Z" instead of "+00:00", and bytea values are
 * base64 instead of PostgreSQL's "\\x" hex.  (Arrays of either too.)
 *
 * A table's shape (its columns, their fixes, its foreign keys) is read
 * once per transaction: the worker renders thousands of rows of a few
 * tables in one.
 */
#include "webhook.h"
#include "rowjson.h"

#include "access/relation.h"
#include "catalog/pg_type.h"
#include "common/base64.h"
#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/bytea.h"
#include "utils/float.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/json.h"
#include "utils/jsonfuncs.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "pgtime.h"

/* Parsing the top level of a JSON object. */

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

static JsonParseErrorType
parse_fields(const char *json, int len, JsonLexContext **lex, List **fields)
{
	FieldsState state = {0};
	JsonSemAction sem = {0};
	JsonParseErrorType result;

	*lex = makeJsonLexContextCstringLen((char *) json, len, GetDatabaseEncoding(), true);
	state.lex = *lex;
	sem.semstate = &state;
	sem.object_field_start = field_start;
	sem.object_field_end = field_end;
	result = pg_parse_json(*lex, &sem);
	*fields = state.fields;
	return result;
}

/*
 * A copy of the JSON, the same length, in which every \u escape that has no
 * text in this database (\u0000, a surrogate, a character the encoding
 * lacks) reads \u<replacement> instead.  Parsing it gives the same places,
 * and the keys as near as they can be.
 */
static char *
escapes_made_parseable(const char *json, int len, const char *replacement)
{
	char	   *copy = pnstrdup(json, len);
	bool		utf8 = GetDatabaseEncoding() == PG_UTF8;

	for (int i = 0; i + 1 < len; i++)
	{
		unsigned int code;

		if (copy[i] != '\\')
			continue;
		if (copy[i + 1] == 'u' && i + 5 < len &&
			isxdigit((unsigned char) copy[i + 2]) && isxdigit((unsigned char) copy[i + 3]) &&
			isxdigit((unsigned char) copy[i + 4]) && isxdigit((unsigned char) copy[i + 5]))
		{
			code = strtoul(pnstrdup(copy + i + 2, 4), NULL, 16);
			if (code == 0 || (code >= 0xD800 && code <= 0xDFFF) || (!utf8 && code >= 0x80))
				memcpy(copy + i + 2, replacement, 4);
		}
		i++;					/* past the escaped character */
	}
	return copy;
}

/*
 * Scanning a JSON text that is known to be valid (a json value, which its
 * input function checked, or what row_to_json wrote): the top-level fields
 * of an object without the parser's copy of every string it passes.  Any
 * surprise (a key with an escape, text that is not what was expected)
 * gives up, and the parser does it.
 */
static const char *
skip_space(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

/* Past the string that starts at p (at its quote); NULL at the end. */
static const char *
skip_string(const char *p, const char *end)
{
	for (p++; p < end; p++)
	{
		if (*p == '\\')
			p++;
		else if (*p == '"')
			return p + 1;
	}
	return NULL;
}

static const char *
skip_value(const char *p, const char *end)
{
	int			depth = 0;

	while (p < end)
	{
		switch (*p)
		{
			case '"':
				p = skip_string(p, end);
				if (p == NULL)
					return NULL;
				if (depth == 0)
					return p;
				continue;
			case '{':
			case '[':
				depth++;
				break;
			case '}':
			case ']':
				if (depth == 0)
					return p;	/* the end of a scalar */
				if (--depth == 0)
					return p + 1;
				break;
			case ',':
			case ' ':
			case '\t':
			case '\n':
			case '\r':
				if (depth == 0)
					return p;	/* the end of a scalar */
				break;
		}
		p++;
	}
	return depth == 0 ? p : NULL;
}

/*
 * The members of a JSON object (open '{': keys and the extent of their
 * values) or array (open '[': the extent of each element), in order;
 * false when the text is not one, or not what the scan expects.
 */
static bool
scan_members(const char *json, int len, char open, List **members)
{
	const char *end = json + len;
	const char *p = skip_space(json, end);
	char		close = open == '{' ? '}' : ']';

	*members = NIL;
	if (p == end || *p != open)
		return false;
	p = skip_space(p + 1, end);
	if (p < end && *p == close)
		return skip_space(p + 1, end) == end;
	while (p < end)
	{
		JsonField  *member = palloc(sizeof(JsonField));

		member->key = NULL;
		if (open == '{')
		{
			const char *key = p + 1;
			const char *key_end = *p == '"' ? skip_string(p, end) : NULL;

			if (key_end == NULL || memchr(key, '\\', key_end - 1 - key) != NULL)
				return false;
			p = skip_space(key_end, end);
			if (p == end || *p != ':')
				return false;
			p = skip_space(p + 1, end);
			member->key = pnstrdup(key, key_end - 1 - key);
		}
		member->value = p;
		p = skip_value(p, end);
		if (p == NULL || p == member->value)
			return false;
		member->len = p - member->value;
		*members = lappend(*members, member);
		p = skip_space(p, end);
		if (p < end && *p == close)
			return skip_space(p + 1, end) == end;
		if (p == end || *p != ',')
			return false;
		p = skip_space(p + 1, end);
	}
	return false;
}

/*
 * The elements of a JSON array known to be valid, as spans of its text
 * (JsonField with no key); false when the text is not an array, or not
 * what the scan expects: the caller then asks the parser.
 */
bool
webhook_scan_json_array(const char *json, int len, List **elements)
{
	return scan_members(json, len, '[', elements);
}

/*
 * The top-level fields of a JSON object, in order (none for a non-object).
 * The values are the JSON as written: a \u0000 or a lone surrogate in a
 * writer's json column passes through to the receiver unchanged.
 */
List *
webhook_json_fields(const char *json, int len)
{
	JsonLexContext *lex;
	List	   *fields;
	JsonParseErrorType result;

	if (scan_members(json, len, '{', &fields))
		return fields;
	list_free_deep(fields);
	result = parse_fields(json, len, &lex, &fields);

	if (result >= JSON_UNICODE_CODE_POINT_ZERO && result <= JSON_UNICODE_LOW_SURROGATE)
	{
		const char *copy = escapes_made_parseable(json, len, "003f");
		JsonLexContext *copy_lex;
		ListCell   *lc;

		if (parse_fields(copy, len, &copy_lex, &fields) == JSON_SUCCESS)
		{
			foreach(lc, fields)
			{
				JsonField  *f = lfirst(lc);

				f->value = json + (f->value - copy);
			}
			return fields;
		}
	}
	if (result != JSON_SUCCESS)
		json_ereport_error(result, lex);
	return fields;
}

/*
 * webhook._display_jsonb(json) RETURNS jsonb: the JSON as jsonb, for the
 * views.  jsonb has no text for \u0000 or a lone surrogate, which a json
 * column of a writer's may hold (and the payload sends as written): they
 * are shown as U+FFFD (as '?' where the database encoding lacks it).
 */
PG_FUNCTION_INFO_V1(webhook_display_jsonb);

typedef struct JsonbFromText
{
	char	   *text;
	Datum		result;
} JsonbFromText;

static void
jsonb_from_text(void *arg)
{
	JsonbFromText *conversion = arg;

	conversion->result = DirectFunctionCall1(jsonb_in, CStringGetDatum(conversion->text));
}

Datum
webhook_display_jsonb(PG_FUNCTION_ARGS)
{
	text	   *json = PG_GETARG_TEXT_PP(0);
	char	   *data = VARDATA_ANY(json);
	int			len = VARSIZE_ANY_EXHDR(json);
	JsonSemAction sem = {0};
	JsonParseErrorType result;

	JsonbFromText conversion;

	result = pg_parse_json(makeJsonLexContextCstringLen(data, len, GetDatabaseEncoding(), true), &sem);
	if (result >= JSON_UNICODE_CODE_POINT_ZERO && result <= JSON_UNICODE_LOW_SURROGATE)
		conversion.text = escapes_made_parseable(data, len,
												 GetDatabaseEncoding() == PG_UTF8 ? "fffd" : "003f");
	else
		conversion.text = pnstrdup(data, len);
	/* and what jsonb still refuses (a number past numeric's range) is shown as text */
	if (webhook_in_subtransaction(jsonb_from_text, &conversion) != NULL)
	{
		StringInfoData quoted;

		initStringInfo(&quoted);
		escape_json(&quoted, conversion.text);
		return DirectFunctionCall1(jsonb_in, CStringGetDatum(quoted.data));
	}
	return conversion.result;
}

JsonField *
webhook_find_field(List *fields, const char *key)
{
	ListCell   *lc;

	foreach(lc, fields)
		if (strcmp(((JsonField *) lfirst(lc))->key, key) == 0)
			return lfirst(lc);
	return NULL;
}

static bool
json_is_null(const char *value, int len)
{
	return value == NULL || (len == 4 && memcmp(value, "null", 4) == 0);
}

static void
scalar_seen(void *state, char *token, JsonTokenType tokentype)
{
	char	  **result = state;

	if (tokentype != JSON_TOKEN_NULL)
		*result = token;
}

/*
 * A JSON scalar as the text PostgreSQL reads back with a type's input
 * function: a string without its quotes and escapes, a number or boolean
 * as written; NULL for null.  A key's value in a snapshot is a scalar.
 * A string that cannot be text (a writer's json holding \u0000, a lone
 * surrogate, a character the database encoding lacks) comes back as
 * written between its quotes, escapes and all: one row's value must not
 * fail the change for every profile.
 */
char *
webhook_json_scalar_text(const char *value, int len)
{
	char	   *result = NULL;
	JsonSemAction sem = {0};
	JsonLexContext *lex;

	if (json_is_null(value, len))
		return NULL;
	if (value[0] != '"')
		return pnstrdup(value, len);
	lex = makeJsonLexContextCstringLen((char *) value, len, GetDatabaseEncoding(), true);
	sem.semstate = &result;
	sem.scalar = scalar_seen;
	if (pg_parse_json(lex, &sem) != JSON_SUCCESS || result == NULL)
		return len >= 2 ? pnstrdup(value + 1, len - 2) : pstrdup("");
	return result;
}

/*
 * What the payloads read once per transaction lives in one context, reset
 * when a new transaction asks for it.
 */
static MemoryContext payload_cxt = NULL;
static LocalTransactionId payload_lxid = InvalidLocalTransactionId;
static HTAB *shapes = NULL;

MemoryContext
webhook_payload_context(void)
{
	if (payload_cxt == NULL)
		payload_cxt = AllocSetContextCreate(TopMemoryContext, "webhook payloads",
											ALLOCSET_DEFAULT_SIZES);
	if (MyProc->lxid != payload_lxid)
	{
		MemoryContextReset(payload_cxt);
		shapes = NULL;
		payload_lxid = MyProc->lxid;
	}
	return payload_cxt;
}

static ValueFix
fix_of_type(Oid type)
{
	Oid			base = getBaseType(type);
	Oid			element = get_element_type(base);

	if (OidIsValid(element))
		base = getBaseType(element);
	if (base == TIMESTAMPTZOID)
		return FIX_TIMESTAMPTZ;
	if (base == BYTEAOID)
		return FIX_BYTEA;
	return FIX_NONE;
}

static bool
name_taken(TableShape *shape, const char *key)
{
	ListCell   *lc;

	for (int i = 0; i < shape->ncolumns; i++)
		if (strcmp(shape->columns[i].name, key) == 0)
			return true;
	foreach(lc, shape->links)
		if (strcmp(((ShapeLink *) lfirst(lc))->key, key) == 0)
			return true;
	return false;
}

/*
 * The payload key of a foreign key: its column without "_id" (status_id ->
 * status), <column>_object for a column without that suffix or when the
 * short name is a column already; a key of several columns goes under
 * its constraint's name.
 */
static char *
link_key(TableShape *shape, ForeignKeyCacheInfo *fk, char **columns)
{
	char	   *key;

	if (fk->nkeys > 1)
		key = get_constraint_name(fk->conoid);
	else
	{
		size_t		len = strlen(columns[0]);

		if (len > 3 && strcmp(columns[0] + len - 3, "_id") == 0)
			key = pnstrdup(columns[0], len - 3);
		else
			key = psprintf("%s_object", columns[0]);
	}
	if (key == NULL || name_taken(shape, key))
		key = psprintf("%s_object", key ? key : columns[0]);
	return key;
}

/*
 * The worker holds its queue's locks when it reads a user's table; waiting
 * for that table's lock then could deadlock with a session that holds it
 * and waits for the queue (DROP EXTENSION drops the capture triggers first).
 * So the worker does not wait: the expansion is tried again a moment later
 * (see webhook_expand in expand.c).  A backend waits as any query would.
 */
void
webhook_lock_user_table(Oid relid)
{
	if (!webhook_in_worker)
		LockRelationOid(relid, AccessShareLock);
	else if (!ConditionalLockRelationOid(relid, AccessShareLock))
		ereport(ERROR,
				(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
				 errmsg("table %u is locked", relid),
				 errdetail("The worker reads it for a payload and does not wait for its lock.")));
}

static void
read_shape(TableShape *shape)
{
	Relation	rel;
	TupleDesc	desc;
	List	   *fkeys;
	ListCell   *lc;

	webhook_lock_user_table(shape->relid);
	rel = try_relation_open(shape->relid, NoLock);
	shape->exists = rel != NULL;
	if (rel == NULL)
		return;
	desc = RelationGetDescr(rel);
	shape->columns = palloc0(sizeof(ShapeColumn) * desc->natts);
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped)
			continue;
		shape->columns[shape->ncolumns].name = pstrdup(NameStr(att->attname));
		shape->columns[shape->ncolumns].fix = fix_of_type(att->atttypid);
		if (shape->columns[shape->ncolumns].fix != FIX_NONE)
			shape->any_fix = true;
		shape->ncolumns++;
	}

	fkeys = RelationGetFKeyList(rel);
	foreach(lc, fkeys)
	{
		ForeignKeyCacheInfo *fk = lfirst(lc);
		ShapeLink  *link = palloc0(sizeof(ShapeLink));
		AttrNumber	last = 0;

		link->ncolumns = fk->nkeys;
		link->columns = palloc(sizeof(char *) * fk->nkeys);
		link->refcolumns = palloc(sizeof(char *) * fk->nkeys);
		link->types = palloc(sizeof(Oid) * fk->nkeys);
		link->reftable = fk->confrelid;
		for (int k = 0; k < fk->nkeys; k++)
		{
			link->columns[k] = pstrdup(NameStr(TupleDescAttr(desc, fk->conkey[k] - 1)->attname));
			link->refcolumns[k] = get_attname(fk->confrelid, fk->confkey[k], false);
			link->types[k] = get_atttype(fk->confrelid, fk->confkey[k]);
			if (fk->conkey[k] > last)
			{
				last = fk->conkey[k];
				link->last_column = link->columns[k];
			}
		}
		link->key = link_key(shape, fk, link->columns);
		shape->links = lappend(shape->links, link);
	}
	/* nothing is kept open: a change of the table is seen next transaction */
	relation_close(rel, AccessShareLock);
}

TableShape *
webhook_table_shape(Oid relid)
{
	MemoryContext cxt = webhook_payload_context();
	MemoryContext old;
	TableShape *shape;
	bool		found;

	if (!OidIsValid(relid))
		return NULL;
	if (shapes == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(TableShape);
		ctl.hcxt = cxt;
		shapes = hash_create("webhook table shapes", 16, &ctl,
							 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	shape = hash_search(shapes, &relid, HASH_ENTER, &found);
	if (!found)
	{
		memset(((char *) shape) + sizeof(Oid), 0, sizeof(TableShape) - sizeof(Oid));
		old = MemoryContextSwitchTo(cxt);
		PG_TRY();
		{
			read_shape(shape);
		}
		PG_CATCH();
		{
			hash_search(shapes, &relid, HASH_REMOVE, NULL);
			PG_RE_THROW();
		}
		PG_END_TRY();
		MemoryContextSwitchTo(old);
	}
	return shape;
}

/*
 * A column of the table, or NULL.  A snapshot's fields come in attribute
 * order, so a field's position finds its column at once, unless the table
 * changed since the snapshot was taken; -1: no position.
 */
ShapeColumn *
webhook_shape_column(TableShape *shape, const char *column, int position)
{
	if (shape == NULL)
		return NULL;
	if (position >= 0 && position < shape->ncolumns &&
		strcmp(shape->columns[position].name, column) == 0)
		return &shape->columns[position];
	for (int i = 0; i < shape->ncolumns; i++)
		if (strcmp(shape->columns[i].name, column) == 0)
			return &shape->columns[i];
	return NULL;
}

/* The fix of a column (none for a column the table no longer has). */
ValueFix
webhook_column_fix(TableShape *shape, const char *column, int position)
{
	ShapeColumn *c;

	if (shape == NULL || !shape->any_fix)
		return FIX_NONE;
	c = webhook_shape_column(shape, column, position);
	return c ? c->fix : FIX_NONE;
}

/* The foreign key made of this one column, if there is one. */
ShapeLink *
webhook_column_link(TableShape *shape, const char *column)
{
	ListCell   *lc;

	if (shape == NULL)
		return NULL;
	foreach(lc, shape->links)
	{
		ShapeLink  *link = lfirst(lc);

		if (link->ncolumns == 1 && strcmp(link->columns[0], column) == 0)
			return link;
	}
	return NULL;
}

/* "\\x0a0b" (as JSON writes PostgreSQL's hex) as "Cgs=" */
static void
append_base64_of_hex(StringInfo out, const char *hex, int len)
{
	int			nbytes = len / 2;
	char	   *bytes = palloc(nbytes + 1);
	char	   *encoded;
	int			encoded_len;

	for (int i = 0; i < nbytes; i++)
	{
		char		pair[3] = {hex[2 * i], hex[2 * i + 1], '\0'};

		bytes[i] = (char) strtol(pair, NULL, 16);
	}
	encoded = palloc(pg_b64_enc_len(nbytes) + 1);
	encoded_len = pg_b64_encode(bytes, nbytes, encoded, pg_b64_enc_len(nbytes));
	appendStringInfoChar(out, '"');
	if (encoded_len > 0)
		appendBinaryStringInfo(out, encoded, encoded_len);
	appendStringInfoChar(out, '"');
	pfree(bytes);
	pfree(encoded);
}

static bool
all_hex(const char *s, int len)
{
	for (int i = 0; i < len; i++)
		if (!isxdigit((unsigned char) s[i]))
			return false;
	return len % 2 == 0;
}

/* One JSON string token (quotes included), rewritten by its column's fix. */
static void
append_fixed_string(StringInfo out, const char *token, int len, ValueFix fix)
{
	if (fix == FIX_TIMESTAMPTZ && len > 8 && memcmp(token + len - 7, "+00:00\"", 7) == 0)
	{
		appendBinaryStringInfo(out, token, len - 7);
		appendStringInfoString(out, "Z\"");
		return;
	}
	/* "\\x...": the JSON escape of a backslash, then x and the hex digits */
	if (fix == FIX_BYTEA && len >= 5 && memcmp(token, "\"\\\\x", 4) == 0 &&
		all_hex(token + 4, len - 5))
	{
		append_base64_of_hex(out, token + 4, len - 5);
		return;
	}
	appendBinaryStringInfo(out, token, len);
}

/*
 * A column's JSON value, rewritten by its fix: the value itself for a
 * scalar, each string in it for an array.
 */
void
webhook_append_fixed(StringInfo out, const char *value, int len, ValueFix fix)
{
	int			i = 0;
	int			copied = 0;

	if (fix == FIX_NONE)
	{
		appendBinaryStringInfo(out, value, len);
		return;
	}
	while (i < len)
	{
		int			end;

		if (value[i] != '"')
		{
			i++;
			continue;
		}
		end = i + 1;
		while (end < len && value[end] != '"')
			end += value[end] == '\\' ? 2 : 1;
		if (end >= len)
			break;
		appendBinaryStringInfo(out, value + copied, i - copied);
		append_fixed_string(out, value + i, end - i + 1, fix);
		i = copied = end + 1;
	}
	appendBinaryStringInfo(out, value + copied, len - copied);
}

/*
 * A row snapshot, its values fixed by column, and with_links: the row of
 * each foreign key right after its (last) column, read now.  Everything
 * else is copied as it is.
 */
void
webhook_append_row(StringInfo out, const char *row, int len, List *fields,
				   TableShape *shape, Oid reader, bool with_links)
{
	const char *copied = row;
	ListCell   *lc;
	int			position = 0;

	if (shape == NULL || !shape->exists ||
		(!shape->any_fix && (!with_links || shape->links == NIL)))
	{
		appendBinaryStringInfo(out, row, len);
		return;
	}
	foreach(lc, fields)
	{
		JsonField  *f = lfirst(lc);
		ValueFix	fix = webhook_column_fix(shape, f->key, position++);
		const char *end = f->value + f->len;

		if (fix != FIX_NONE)
		{
			appendBinaryStringInfo(out, copied, f->value - copied);
			webhook_append_fixed(out, f->value, f->len, fix);
			copied = end;
		}
		if (with_links)
		{
			ListCell   *lk;

			foreach(lk, shape->links)
			{
				ShapeLink  *link = lfirst(lk);
				const char *linked;

				if (strcmp(link->last_column, f->key) != 0)
					continue;
				appendBinaryStringInfo(out, copied, end - copied);
				copied = end;
				appendStringInfoChar(out, ',');
				escape_json(out, link->key);
				appendStringInfoChar(out, ':');
				linked = webhook_linked_row(link, fields, reader);
				appendStringInfoString(out, linked ? linked : "null");
			}
		}
	}
	appendBinaryStringInfo(out, copied, row + len - copied);
}

/*
 * row_to_json as the payloads need it: timestamps in UTC, bytea in hex
 * (then base64, above).  The worker sets both once; a backend (preview)
 * sets them for the call.  Returns the GUC level to restore, or -1.
 */
int
webhook_render_begin(void)
{
	long		gmtoff;
	int			level;

	if (pg_get_timezone_offset(session_timezone, &gmtoff) && gmtoff == 0 &&
		bytea_output == BYTEA_OUTPUT_HEX && IntervalStyle == INTSTYLE_POSTGRES &&
		extra_float_digits > 0 && DateStyle == USE_ISO_DATES && DateOrder == DATEORDER_MDY)
		return -1;
	level = NewGUCNestLevel();
	(void) set_config_option("TimeZone", "UTC", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("bytea_output", "hex", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	/* intervals in one style, floats to their last digit */
	(void) set_config_option("IntervalStyle", "postgres", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("extra_float_digits", "1", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	/* dates as text (a deadline's key, a message) read back the same anywhere */
	(void) set_config_option("DateStyle", "ISO, MDY", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	return level;
}

void
webhook_render_end(int level)
{
	if (level >= 0)
		AtEOXact_GUC(true, level);
}
