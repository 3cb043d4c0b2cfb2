/*
 * linked.c
 *		Rows read when a payload is made: the parent of a row (an action's
 *		ticket), the rows its foreign keys point to (full payloads) and the
 *		display values of custom fields.
 *
 * They are read with the rights of the role that defined the event (the
 * one that had TRIGGER on the table and SELECT on the parent), never the
 * worker's: a table that role cannot read comes out as null.  A row that
 * is not there is null too, and so is one that cannot be read for any
 * other reason (a key that does not convert, a policy that fails): the
 * worker must never stop on a payload, so each read runs in a
 * subtransaction of its own.
 *
 * Lookup tables are small and much repeated, so every row read is kept
 * for the rest of the transaction, as are the prepared statements.
 */
#include "webhook.h"
#include "rowjson.h"

#include "catalog/namespace.h"
#include "catalog/pg_operator.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/typcache.h"

/* How long the worker waits for the lock of a table it reads rows of. */
#define LINKED_LOCK_TIMEOUT "100ms"

/* Keys longer than this are read each time, not kept. */
#define LOOKUP_KEY_LEN 256

typedef struct LookupEntry
{
	char		key[LOOKUP_KEY_LEN];	/* hash key: table, role, values */
	char	   *json;			/* the row; NULL: none, or not readable */
	List	   *fields;			/* its fields, parsed when first asked for */
	bool		parsed;
} LookupEntry;

typedef struct LookupPlan
{
	Oid			relid;
	int			ncolumns;
	char	  **columns;
	SPIPlanPtr	plan;			/* NULL: the statement could not be made */
} LookupPlan;

/* Both live in the payload context, and go when it is reset. */
static HTAB *lookups = NULL;
static List *plans = NIL;		/* LookupPlan * */

/* The payload context is being reset (a new transaction): let go of it all. */
static void
forget_lookups(void *arg)
{
	ListCell   *lc;

	foreach(lc, plans)
	{
		LookupPlan *lp = lfirst(lc);

		if (lp->plan != NULL)
			SPI_freeplan(lp->plan);
	}
	plans = NIL;
	lookups = NULL;
}

static void
lookup_context(void)
{
	MemoryContext cxt = webhook_payload_context();

	if (lookups == NULL)
	{
		MemoryContextCallback *forget = MemoryContextAlloc(cxt, sizeof(MemoryContextCallback));
		HASHCTL		ctl;

		forget->func = forget_lookups;
		forget->arg = NULL;
		MemoryContextRegisterResetCallback(cxt, forget);
		ctl.keysize = LOOKUP_KEY_LEN;
		ctl.entrysize = sizeof(LookupEntry);
		ctl.hcxt = cxt;
		lookups = hash_create("webhook linked rows", 256, &ctl,
							  HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	}
}

/* OPERATOR(schema.name), for SQL that no search_path can redirect. */
static char *
qualified_operator(Oid opno)
{
	HeapTuple	tuple = SearchSysCache1(OPEROID, ObjectIdGetDatum(opno));
	Form_pg_operator op;
	char	   *result;

	if (!HeapTupleIsValid(tuple))
		return NULL;
	op = (Form_pg_operator) GETSTRUCT(tuple);
	result = psprintf("OPERATOR(%s.%s)", quote_identifier(get_namespace_name(op->oprnamespace)),
					  NameStr(op->oprname));
	ReleaseSysCache(tuple);
	return result;
}

/*
 * SELECT row_to_json(t.*) FROM <table> t WHERE t.<col> = $1 AND ..., every
 * name qualified and each equality the type's own operator, so that no
 * search_path can change what it runs; t.*, the row, even when the table
 * has a column named t.
 */
static char *
lookup_sql(Oid relid, int ncolumns, char **columns, Oid *types)
{
	StringInfoData sql;

	initStringInfo(&sql);
	appendStringInfo(&sql, "SELECT pg_catalog.row_to_json(t.*) FROM %s.%s AS t WHERE ",
					 quote_identifier(get_namespace_name(get_rel_namespace(relid))),
					 quote_identifier(get_rel_name(relid)));
	for (int i = 0; i < ncolumns; i++)
	{
		TypeCacheEntry *tc = lookup_type_cache(types[i], TYPECACHE_EQ_OPR);
		char	   *op = OidIsValid(tc->eq_opr) ? qualified_operator(tc->eq_opr) : NULL;

		if (op == NULL || !webhook_function_trusted(get_opcode(tc->eq_opr)))
			return NULL;
		appendStringInfo(&sql, "%st.%s %s $%d", i > 0 ? " AND " : "",
						 quote_identifier(columns[i]), op, i + 1);
	}
	appendStringInfoString(&sql, " LIMIT 1");
	return sql.data;
}

static LookupPlan *
lookup_plan(Oid relid, int ncolumns, char **columns, Oid *types)
{
	ListCell   *lc;
	LookupPlan *lp;
	MemoryContext old;
	char	   *sql;
	const char *untrusted;

	foreach(lc, plans)
	{
		lp = lfirst(lc);
		if (lp->relid == relid && lp->ncolumns == ncolumns)
		{
			int			i;

			for (i = 0; i < ncolumns; i++)
				if (strcmp(lp->columns[i], columns[i]) != 0)
					break;
			if (i == ncolumns)
				return lp;
		}
	}
	old = MemoryContextSwitchTo(webhook_payload_context());
	lp = palloc0(sizeof(LookupPlan));
	lp->relid = relid;
	lp->ncolumns = ncolumns;
	lp->columns = palloc(sizeof(char *) * ncolumns);
	for (int i = 0; i < ncolumns; i++)
		lp->columns[i] = pstrdup(columns[i]);
	plans = lappend(plans, lp);
	MemoryContextSwitchTo(old);

	/* no code of a user's may run as the reader, or as the worker */
	untrusted = webhook_relation_untrusted(relid);
	if (untrusted != NULL)
	{
		ereport(WARNING,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("webhook does not read table \"%s\" for payloads: %s",
						get_rel_name(relid), untrusted),
				 errdetail("Its rows are sent as null."),
				 errhint("Only types, casts, checks and policies of the system or of superusers are used "
						 "when rows are read as another role.")));
		return lp;
	}
	sql = lookup_sql(relid, ncolumns, columns, types);
	if (sql != NULL)
	{
		SPIPlanPtr	plan = SPI_prepare(sql, ncolumns, types);

		if (plan == NULL || SPI_keepplan(plan) != 0)
			elog(ERROR, "could not prepare \"%s\": %s", sql, SPI_result_code_string(SPI_result));
		lp->plan = plan;
	}
	return lp;
}

/* Read the row, as reader; returns it (fixed) in the payload context. */
static char *
read_row(Oid relid, int ncolumns, char **columns, Oid *types, char **values, Oid reader)
{
	LookupPlan *lp;
	Datum	   *args = palloc(sizeof(Datum) * ncolumns);
	Oid			save_userid;
	int			save_sec_context;
	char	   *result = NULL;
	int			rc;
	int			guc_level = -1;

	/*
	 * Locked first, so that what lookup_plan checks of the table stays true
	 * while it is read; the worker does not wait for the lock (see
	 * webhook_lock_user_table), nor long for any other (less than
	 * deadlock_timeout, so that it gives way first).
	 */
	webhook_lock_user_table(relid);
	if (webhook_in_worker)
	{
		guc_level = NewGUCNestLevel();
		(void) set_config_option("lock_timeout", LINKED_LOCK_TIMEOUT, PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	}
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "could not connect to SPI");
	lp = lookup_plan(relid, ncolumns, columns, types);
	if (lp->plan == NULL)
	{
		SPI_finish();
		if (guc_level >= 0)
			AtEOXact_GUC(true, guc_level);
		return NULL;
	}
	/* the keys are converted as the reader too (trusted types only, above) */
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(reader, save_sec_context |
						   SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
	for (int i = 0; i < ncolumns; i++)
	{
		Oid			input;
		Oid			ioparam;

		getTypeInputInfo(types[i], &input, &ioparam);
		args[i] = OidInputFunctionCall(input, values[i], ioparam, -1);
	}
	rc = SPI_execute_plan(lp->plan, args, NULL, true, 1);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	if (guc_level >= 0)
		AtEOXact_GUC(true, guc_level);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read a linked row: %s", SPI_result_code_string(rc));
	if (SPI_processed > 0)
	{
		char	   *row = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

		if (row != NULL)
		{
			StringInfoData fixed;
			MemoryContext old = MemoryContextSwitchTo(webhook_payload_context());

			initStringInfo(&fixed);
			MemoryContextSwitchTo(old);
			webhook_append_row(&fixed, row, strlen(row),
							   webhook_json_fields(row, strlen(row)),
							   webhook_table_shape(relid), reader, false);
			result = fixed.data;
		}
	}
	SPI_finish();
	return result;
}

typedef struct RowRead
{
	Oid			relid;
	int			ncolumns;
	char	  **columns;
	Oid		   *types;
	char	  **values;
	Oid			reader;
	char	   *result;
} RowRead;

static void
read_row_step(void *arg)
{
	RowRead    *r = arg;

	r->result = read_row(r->relid, r->ncolumns, r->columns, r->types, r->values, r->reader);
}

/*
 * read_row in a subtransaction: any error is a row that is not there, but
 * a lock the worker would have to wait for, which defers the expansion.
 */
static char *
read_row_safely(Oid relid, int ncolumns, char **columns, Oid *types, char **values,
				Oid reader)
{
	RowRead		r = {relid, ncolumns, columns, types, values, reader, NULL};
	ErrorData  *error = webhook_in_subtransaction(read_row_step, &r);

	if (error == NULL)
		return r.result;
	if (error->sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE)
		ReThrowError(error);
	return NULL;
}

/* The types of a table's columns; false when one is not there. */
static bool
column_types(Oid relid, int ncolumns, char **columns, Oid *types)
{
	for (int i = 0; i < ncolumns; i++)
	{
		AttrNumber	attnum = get_attnum(relid, columns[i]);

		if (attnum == InvalidAttrNumber)
			return false;
		types[i] = get_atttype(relid, attnum);
	}
	return true;
}

/*
 * read_row_safely for the lookup cached under key (if cached): a read that
 * a lock held up is not a row that is not there, and is not remembered.
 */
static char *
read_row_or_forget(const char *key, bool cached, Oid relid, int ncolumns, char **columns,
				   Oid *types, char **values, Oid reader)
{
	char	   *volatile json = NULL;

	PG_TRY();
	{
		json = read_row_safely(relid, ncolumns, columns, types, values, reader);
	}
	PG_CATCH();
	{
		if (cached)
			(void) hash_search(lookups, key, HASH_REMOVE, NULL);
		PG_RE_THROW();
	}
	PG_END_TRY();
	return json;
}

/*
 * The row of relid whose columns have these values, read once per
 * transaction.  types may be NULL: the catalog gives them, on a miss only.
 */
static LookupEntry *
lookup(Oid relid, int ncolumns, char **columns, Oid *types, char **values, Oid reader)
{
	StringInfoData key;
	LookupEntry *entry = NULL;
	bool		found;

	lookup_context();
	initStringInfo(&key);
	/* unit separators: no value can shift one part into the next */
	appendStringInfo(&key, "%u\x1f%u", relid, reader);
	for (int i = 0; i < ncolumns; i++)
		appendStringInfo(&key, "\x1f%s\x1f%s", columns[i], values[i]);
	if (key.len < LOOKUP_KEY_LEN)
	{
		entry = hash_search(lookups, key.data, HASH_ENTER, &found);
		if (found)
			return entry;
	}
	else
		entry = palloc(sizeof(LookupEntry));
	entry->json = NULL;
	entry->fields = NIL;
	entry->parsed = false;
	if (types == NULL)
	{
		types = palloc(sizeof(Oid) * ncolumns);
		if (!column_types(relid, ncolumns, columns, types))
			return entry;
	}
	if (pg_class_aclcheck(relid, reader, ACL_SELECT) == ACLCHECK_OK)
	{
		int			level = webhook_render_begin();

		entry->json = read_row_or_forget(key.data, key.len < LOOKUP_KEY_LEN, relid, ncolumns,
										 columns, types, values, reader);
		webhook_render_end(level);
	}
	return entry;
}

/* The row a foreign key points to, from the key's values in a snapshot. */
static LookupEntry *
linked_entry(ShapeLink *link, List *fields, Oid reader)
{
	char	  **values = palloc(sizeof(char *) * link->ncolumns);

	for (int i = 0; i < link->ncolumns; i++)
	{
		JsonField  *f = webhook_find_field(fields, link->columns[i]);

		values[i] = f ? webhook_json_scalar_text(f->value, f->len) : NULL;
		if (values[i] == NULL)
			return NULL;
	}
	return lookup(link->reftable, link->ncolumns, link->refcolumns, link->types, values, reader);
}

const char *
webhook_linked_row(ShapeLink *link, List *fields, Oid reader)
{
	LookupEntry *entry = linked_entry(link, fields, reader);

	return entry ? entry->json : NULL;
}

/*
 * One column of the row a foreign key points to (a display value); the
 * row is parsed once per transaction, however many changes show it.
 */
JsonField *
webhook_linked_field(ShapeLink *link, List *fields, Oid reader, const char *column)
{
	LookupEntry *entry = linked_entry(link, fields, reader);

	if (entry == NULL || entry->json == NULL)
		return NULL;
	if (!entry->parsed)
	{
		MemoryContext old = MemoryContextSwitchTo(webhook_payload_context());

		entry->fields = webhook_json_fields(entry->json, strlen(entry->json));
		entry->parsed = true;
		MemoryContextSwitchTo(old);
	}
	return webhook_find_field(entry->fields, column);
}

/* The row of relid whose key_column has this JSON value (a parent row). */
const char *
webhook_row_by_key(Oid relid, const char *key_column, const char *value, int len, Oid reader)
{
	char	   *text = webhook_json_scalar_text(value, len);

	if (text == NULL || !OidIsValid(relid))
		return NULL;
	return lookup(relid, 1, (char **) &key_column, NULL, &text, reader)->json;
}
