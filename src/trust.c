/*
 * trust.c
 *		Whether handling a table's rows could run code that a user wrote.
 *
 * The worker reads linked rows as the role that defined the event, and
 * converts their keys and columns to text and JSON.  Casts to json, type
 * input and output functions, domain checks and row-level security
 * policies may be functions that some role wrote; run as another role (or
 * as the bootstrap superuser) they would act with rights their author
 * lacks.  Code is trusted when it is the system's own or belongs to a
 * superuser, who could do anything anyway; everything else makes the table
 * one the worker does not read.
 */
#include "webhook.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/pg_cast.h"
#include "catalog/pg_class.h"
#include "catalog/pg_constraint.h"
#include "catalog/pg_policy.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_range.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

PG_FUNCTION_INFO_V1(webhook_untrusted_reason);

/* Composite types inside composite types, at most. */
#define MAX_TYPE_DEPTH 8

bool
webhook_function_trusted(Oid funcid)
{
	HeapTuple	tuple;
	Oid			owner;

	if (!OidIsValid(funcid) || funcid < FirstNormalObjectId)
		return true;
	tuple = SearchSysCache1(PROCOID, ObjectIdGetDatum(funcid));
	if (!HeapTupleIsValid(tuple))
		return false;
	owner = ((Form_pg_proc) GETSTRUCT(tuple))->proowner;
	ReleaseSysCache(tuple);
	return superuser_arg(owner);
}

/* A cast from the type to json or jsonb made with an untrusted function. */
static bool
json_cast_untrusted(Oid typid)
{
	Oid			targets[] = {JSONOID, JSONBOID};

	for (size_t i = 0; i < lengthof(targets); i++)
	{
		HeapTuple	tuple = SearchSysCache2(CASTSOURCETARGET, ObjectIdGetDatum(typid),
										  ObjectIdGetDatum(targets[i]));

		if (HeapTupleIsValid(tuple))
		{
			Oid			castfunc = ((Form_pg_cast) GETSTRUCT(tuple))->castfunc;

			ReleaseSysCache(tuple);
			if (!webhook_function_trusted(castfunc))
				return true;
		}
	}
	return false;
}

/* Whether a catalog has a row whose key column (with an index) is value. */
static bool
catalog_has_row(Oid catalog, Oid index, AttrNumber column, Oid value)
{
	Relation	rel = table_open(catalog, AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	bool		found;

	ScanKeyInit(&key, column, BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(value));
	scan = systable_beginscan(rel, index, true, NULL, 1, &key);
	found = HeapTupleIsValid(systable_getnext(scan));
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return found;
}

/*
 * A check constraint is code as much as a function is, and it may call
 * built-in functions that run SQL of their own (query_to_xml, ts_stat):
 * a domain with checks is trusted only when a superuser owns it.
 */
static bool
domain_checks_untrusted(Oid typid, Oid owner)
{
	return !superuser_arg(owner) &&
		catalog_has_row(ConstraintRelationId, ConstraintTypidIndexId, Anum_pg_constraint_contypid, typid);
}

static const char *relation_untrusted_reason(Oid relid, int depth);

/* Why converting a value of the type could run untrusted code, or NULL. */
static const char *
type_untrusted_reason(Oid typid, int depth)
{
	HeapTuple	tuple;
	Form_pg_type typ;
	const char *reason = NULL;

	if (typid < FirstNormalObjectId)
		return NULL;
	if (depth > MAX_TYPE_DEPTH)
		return "its type nests too deeply";
	tuple = SearchSysCache1(TYPEOID, ObjectIdGetDatum(typid));
	if (!HeapTupleIsValid(tuple))
		return "its type is not there";
	typ = (Form_pg_type) GETSTRUCT(tuple);

	if (!webhook_function_trusted(typ->typinput) || !webhook_function_trusted(typ->typoutput))
		reason = "its type's input or output function was written by a role that is not a superuser";
	else if (json_cast_untrusted(typid))
		reason = "its type has a cast to json written by a role that is not a superuser";
	else
	{
		switch (typ->typtype)
		{
			case TYPTYPE_ENUM:
				break;
			case TYPTYPE_DOMAIN:
				reason = type_untrusted_reason(typ->typbasetype, depth + 1);
				if (reason == NULL && domain_checks_untrusted(typid, typ->typowner))
					reason = "its type is a domain with a check, owned by a role that is not a superuser";
				break;
			case TYPTYPE_COMPOSITE:
				reason = relation_untrusted_reason(typ->typrelid, depth + 1);
				break;
			case TYPTYPE_RANGE:
				reason = type_untrusted_reason(get_range_subtype(typid), depth + 1);
				break;
			case TYPTYPE_MULTIRANGE:
				reason = type_untrusted_reason(get_multirange_range(typid), depth + 1);
				break;
			case TYPTYPE_BASE:
				if (IsTrueArrayType(typ))
					reason = type_untrusted_reason(typ->typelem, depth + 1);
				break;
			default:
				reason = "its type is a pseudo-type";
				break;
		}
	}
	ReleaseSysCache(tuple);
	return reason;
}

/* Policies are code too: trusted on a table that a superuser owns. */
static const char *
policies_untrusted_reason(Oid relid, Oid owner)
{
	if (superuser_arg(owner) ||
		!catalog_has_row(PolicyRelationId, PolicyPolrelidPolnameIndexId, Anum_pg_policy_polrelid, relid))
		return NULL;
	return "the table has row-level security policies, and a role that is not a superuser owns it";
}

static const char *
relation_untrusted_reason(Oid relid, int depth)
{
	HeapTuple	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Form_pg_class cls;
	bool		row_security;
	Oid			owner;
	int			natts;

	if (!HeapTupleIsValid(tuple))
		return "the table is not there";
	cls = (Form_pg_class) GETSTRUCT(tuple);
	row_security = cls->relrowsecurity;
	owner = cls->relowner;
	natts = cls->relnatts;
	if (cls->relkind != RELKIND_RELATION && cls->relkind != RELKIND_PARTITIONED_TABLE &&
		cls->relkind != RELKIND_COMPOSITE_TYPE)
	{
		ReleaseSysCache(tuple);
		return "it is not a table";
	}
	ReleaseSysCache(tuple);

	for (AttrNumber attnum = 1; attnum <= natts; attnum++)
	{
		HeapTuple	att = SearchSysCache2(ATTNUM, ObjectIdGetDatum(relid), Int16GetDatum(attnum));
		Oid			typid;
		bool		dropped;
		const char *reason;

		if (!HeapTupleIsValid(att))
			continue;
		typid = ((Form_pg_attribute) GETSTRUCT(att))->atttypid;
		dropped = ((Form_pg_attribute) GETSTRUCT(att))->attisdropped;
		if (!dropped && (reason = type_untrusted_reason(typid, depth)) != NULL)
		{
			char	   *result = psprintf("column \"%s\": %s",
										  NameStr(((Form_pg_attribute) GETSTRUCT(att))->attname),
										  reason);

			ReleaseSysCache(att);
			return result;
		}
		ReleaseSysCache(att);
	}
	if (row_security)
		return policies_untrusted_reason(relid, owner);
	return NULL;
}

/*
 * Why reading the table's rows as another role, and making JSON of them,
 * could run code that a role other than a superuser wrote; NULL when it
 * cannot.
 */
const char *
webhook_relation_untrusted(Oid relid)
{
	return relation_untrusted_reason(relid, 0);
}

/* Why converting a value of the type could run such code; NULL when not. */
const char *
webhook_type_untrusted(Oid typid)
{
	return type_untrusted_reason(typid, 0);
}

/* webhook._untrusted_reason(regclass) RETURNS text: the same, for the SQL checks. */
Datum
webhook_untrusted_reason(PG_FUNCTION_ARGS)
{
	const char *reason = webhook_relation_untrusted(PG_GETARG_OID(0));

	if (reason == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(reason));
}
