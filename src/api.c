/*
 * api.c
 *		SQL-callable C functions of the install script.
 */
#include "webhook.h"
#include "http.h"
#include "queue.h"

#include "catalog/pg_namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/nodeFuncs.h"
#include "nodes/parsenodes.h"
#include "parser/parser.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/plancache.h"
#include "utils/syscache.h"

PG_FUNCTION_INFO_V1(webhook_start_worker);
PG_FUNCTION_INFO_V1(webhook_wake);
PG_FUNCTION_INFO_V1(webhook_is_worker);
PG_FUNCTION_INFO_V1(webhook_check_condition);
PG_FUNCTION_INFO_V1(webhook_check_due);
PG_FUNCTION_INFO_V1(webhook_capturing);
PG_FUNCTION_INFO_V1(webhook_capturing_table);
PG_FUNCTION_INFO_V1(webhook_request_preview);

/*
 * webhook._start_worker(): called by CREATE EXTENSION.  The launcher starts
 * this database's worker when the transaction commits.
 */
Datum
webhook_start_worker(PG_FUNCTION_ARGS)
{
	if (webhook_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("webhook must be loaded via shared_preload_libraries"),
				 errhint("Add webhook to shared_preload_libraries in postgresql.conf and restart the server.")));
	webhook_start_on_commit(MyDatabaseId);
	PG_RETURN_VOID();
}

/* webhook._wake(): wake this database's worker when the transaction commits. */
Datum
webhook_wake(PG_FUNCTION_ARGS)
{
	webhook_wake_on_commit();
	PG_RETURN_VOID();
}

/*
 * webhook._in_worker(): true in the worker, whose step writes deliveries
 * already sending (see ClaimAsMade in queue.h); the trigger that makes a
 * restored delivery pending again leaves those alone.
 */
Datum
webhook_is_worker(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(webhook_in_worker);
}

/* The error being handled, taken over so that another can be raised. */
static ErrorData *
take_error(MemoryContext cxt)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(cxt);
	edata = CopyErrorData();
	FlushErrorState();
	return edata;
}

/* Conditions longer than this are refused before they are parsed. */
#define MAX_CONDITION_LENGTH 10000

/* At most 200 bytes of a condition, for a message. */
static char *
shown(const char *expr)
{
	int			len = strlen(expr);
	int			cut = pg_mbcliplen(expr, len, 200);

	return cut < len ? psprintf("%s...", pnstrdup(expr, cut)) : pstrdup(expr);
}

/* What an expression of users' own is, for the checks and their messages. */
typedef struct ExpressionKind
{
	const char *what;			/* "condition" */
	const char *label;			/* "Condition", in details */
	const char *rows;			/* the FROM clause it is analysed over */
	Oid			type;			/* what it must return */
	const char *wrong_type;		/* the message when it returns another */
	const char *example;		/* a hint's example */
	const char *names_hint;		/* the hint when a name is not found */
	const char *type_hint;		/* the hint when it returns another type */
} ExpressionKind;

static const ExpressionKind condition_kind = {
	"condition", "Condition", "(SELECT (NULL::%1$s).*) AS new, (SELECT (NULL::%1$s).*) AS old",
	BOOLOID, "a condition must be a boolean expression",
	"Write a boolean expression over new and old, e.g. new.priority_id = 1 AND old.priority_id <> 1.",
	"Refer to the rows as new and old, e.g. new.priority_id = 1.",
	"Compare something, e.g. new.priority_id = 1."
};

static const ExpressionKind due_kind = {
	/*
	 * The function that holds it names its capture key _webhook_capture_key:
	 * two relations with a column of that name make a bare reference to it
	 * ambiguous, as a condition's new and old make it (a column of the
	 * table so named is new._webhook_capture_key)
	 */
	"due time", "Due time",
	"(SELECT (NULL::%1$s).*) AS new, (SELECT NULL::int8 AS _webhook_capture_key) AS _webhook_key_1,"
	" (SELECT NULL::int8 AS _webhook_capture_key) AS _webhook_key_2",
	TIMESTAMPTZOID, "a due time must be a timestamptz expression",
	"Write a timestamptz expression over new, e.g. new.created_at + interval '4 hours'.",
	"Refer to the row as new, e.g. new.created_at + interval '4 hours'.",
	"Convert it, e.g. new.due_on::timestamptz, or name a timestamptz column."
};

typedef struct NameCheck
{
	const ExpressionKind *kind;
	const char *expr;
} NameCheck;

/*
 * A table or type named without a schema must be one of pg_catalog's: a
 * condition runs as its author in the writer's session, where any other
 * such name could be found in the writer's own temporary schema.
 * (Functions and operators are never looked for there.)
 */
static bool
unqualified_name(Node *node, void *context)
{
	NameCheck  *check = context;
	const char *name = NULL;
	bool		found = true;

	if (node == NULL)
		return false;
	if (IsA(node, RangeVar) && ((RangeVar *) node)->schemaname == NULL)
	{
		name = ((RangeVar *) node)->relname;
		found = OidIsValid(get_relname_relid(name, PG_CATALOG_NAMESPACE));
	}
	else if (IsA(node, TypeName) && list_length(((TypeName *) node)->names) == 1)
	{
		name = strVal(linitial(((TypeName *) node)->names));
		found = OidIsValid(GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid, CStringGetDatum(name),
										   ObjectIdGetDatum(PG_CATALOG_NAMESPACE)));
	}
	if (!found)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a %s must name its tables and types with their schema: \"%s\"",
						check->kind->what, name),
				 errdetail("%s: %s", check->kind->label, shown(check->expr)),
				 errhint("Write schema.%s; only pg_catalog's names may stand alone.", name)));
	return raw_expression_tree_walker(node, unqualified_name, context);
}

/*
 * Refuse anything but one SQL expression of the kind's type over rows of
 * the table.  The text is first parsed alone, so that it cannot close the
 * expression and smuggle in more SQL; then it is analysed (not run) over a
 * row of the table to check its names and its type.
 */
static void
check_expression(const ExpressionKind *kind, char *expr, Oid relid)
{
	MemoryContext cxt = CurrentMemoryContext;
	List	   *volatile parsed = NIL;
	SelectStmt *volatile select = NULL;
	char	   *relname;
	char	   *query;
	SPIPlanPtr	volatile plan = NULL;
	CachedPlanSource *source;
	int			guc_level;
	NameCheck	check = {kind, expr};

	if (strlen(expr) > MAX_CONDITION_LENGTH)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("a %s is at most %d characters", kind->what, MAX_CONDITION_LENGTH),
				 errdetail("Got %d: %s", (int) strlen(expr), shown(expr)),
				 errhint("Write a shorter expression, or put the logic in a function and call it.")));
	PG_TRY();
	{
		parsed = raw_parser(expr, RAW_PARSE_PLPGSQL_EXPR);
	}
	PG_CATCH();
	{
		ErrorData  *edata = take_error(cxt);

		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("a %s must be one SQL expression", kind->what),
				 errdetail("%s in: %s", edata->message, shown(expr)),
				 errhint("%s", kind->example)));
	}
	PG_END_TRY();
	if (list_length(parsed) == 1 && IsA(linitial_node(RawStmt, parsed)->stmt, SelectStmt))
		select = (SelectStmt *) linitial_node(RawStmt, parsed)->stmt;
	if (select == NULL || select->op != SETOP_NONE ||
		list_length(select->targetList) != 1 ||
		linitial_node(ResTarget, select->targetList)->name != NULL ||
		select->distinctClause || select->intoClause || select->fromClause ||
		select->whereClause || select->groupClause || select->havingClause ||
		select->windowClause || select->valuesLists || select->sortClause ||
		select->limitOffset || select->limitCount || select->lockingClause ||
		select->withClause)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a %s must be one SQL expression", kind->what),
				 errdetail("Got: %s", shown(expr)),
				 errhint("%s", kind->example)));

	relname = format_type_be_qualified(get_rel_type_id(relid));
	query = psprintf("SELECT (%s) FROM %s", expr, psprintf(kind->rows, relname));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	/*
	 * Names resolve as they will when the expression runs, in pg_catalog
	 * (its function's search_path is "pg_catalog, pg_temp").
	 */
	(void) raw_expression_tree_walker(linitial_node(ResTarget, select->targetList)->val,
									  unqualified_name, &check);
	guc_level = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	PG_TRY();
	{
		plan = SPI_prepare(query, 0, NULL);
	}
	PG_CATCH();
	{
		ErrorData  *edata = take_error(cxt);

		ereport(ERROR,
				(errcode(edata->sqlerrcode),
				 errmsg("invalid %s: %s", kind->what, edata->message),
				 errdetail("%s: %s", kind->label, shown(expr)),
				 errhint("%s", kind->names_hint)));
	}
	PG_END_TRY();
	if (plan == NULL)
		elog(ERROR, "could not analyse the %s: %s", kind->what, SPI_result_code_string(SPI_result));
	source = linitial(SPI_plan_get_plan_sources(plan));
	if (source->resultDesc == NULL || source->resultDesc->natts != 1 ||
		TupleDescAttr(source->resultDesc, 0)->atttypid != kind->type)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("%s", kind->wrong_type),
				 errdetail("\"%s\" is of type %s.", shown(expr),
						   source->resultDesc && source->resultDesc->natts == 1 ?
						   format_type_be(TupleDescAttr(source->resultDesc, 0)->atttypid) : "?"),
				 errhint("%s", kind->type_hint)));
	SPI_freeplan(plan);
	AtEOXact_GUC(true, guc_level);
	SPI_finish();
}

/* webhook._check_condition(expr text, tbl regclass): a boolean over new and old. */
Datum
webhook_check_condition(PG_FUNCTION_ARGS)
{
	check_expression(&condition_kind, text_to_cstring(PG_GETARG_TEXT_PP(0)), PG_GETARG_OID(1));
	PG_RETURN_VOID();
}

/* webhook._check_due(expr text, tbl regclass): a deadline's timestamptz over new. */
Datum
webhook_check_due(PG_FUNCTION_ARGS)
{
	check_expression(&due_kind, text_to_cstring(PG_GETARG_TEXT_PP(0)), PG_GETARG_OID(1));
	PG_RETURN_VOID();
}

/*
 * webhook._capturing(): true while a capture trigger evaluates its
 * conditions in this session.  The functions that run condition_sql with
 * their author's rights answer nothing outside of that.
 */
Datum
webhook_capturing(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(webhook_capture_depth > 0);
}

/*
 * webhook._capturing(tbl regclass, key int8): true while a capture trigger
 * of that table evaluates its conditions, and given this session's capture
 * key, which only the capture query passes.  The functions that hold users'
 * SQL conditions answer only then: called by anyone else, with rows of
 * their own making (from a condition of their own, too), they answer NULL.
 */
Datum
webhook_capturing_table(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(webhook_capture_depth > 0 && webhook_capture_relid == PG_GETARG_OID(0) &&
				   PG_GETARG_INT64(1) == webhook_capture_key());
}

/*
 * webhook._request(profile_id bigint, webhook_id text, body text) RETURNS
 * json: {"method", "url", "headers"} of the request that a delivery with
 * this body would make, built and signed by the worker's own code; the
 * headers that the attempts show redacted are redacted here too.
 */
Datum
webhook_request_preview(PG_FUNCTION_ARGS)
{
	int64		profile_id = PG_GETARG_INT64(0);
	char	   *webhook_id = text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	   *body = text_to_cstring(PG_GETARG_TEXT_PP(2));
	WebhookRequest *req;
	StringInfoData out;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	req = webhook_profile_request(profile_id, webhook_id, body);
	SPI_finish();
	if (req == NULL)
		PG_RETURN_NULL();
	initStringInfo(&out);
	appendStringInfoString(&out, "{\"method\" : ");
	escape_json(&out, req->method);
	appendStringInfoString(&out, ", \"url\" : ");
	escape_json(&out, req->url);
	appendStringInfo(&out, ", \"headers\" : %s}", webhook_request_headers_json(req));
	webhook_request_free(req);
	PG_RETURN_TEXT_P(cstring_to_text_with_len(out.data, out.len));
}
