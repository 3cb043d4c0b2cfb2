/*
 * rowjson.h
 *		Row snapshots as JSON: their fields, the shape of their table, values
 *		written the way receivers expect, and the rows they link to.
 */
#ifndef WEBHOOK_ROWJSON_H
#define WEBHOOK_ROWJSON_H

#include "postgres.h"

#include "lib/stringinfo.h"
#include "access/tupdesc.h"
#include "nodes/pg_list.h"

/* One top-level field of a JSON object: its key and its raw value text. */
typedef struct JsonField
{
	char	   *key;
	const char *value;			/* points into the parsed text */
	int			len;
} JsonField;

extern List *webhook_json_fields(const char *json, int len);
extern bool webhook_scan_json_array(const char *json, int len, List **elements);
extern JsonField *webhook_find_field(List *fields, const char *key);
extern char *webhook_json_scalar_text(const char *value, int len);

/*
 * How a column's JSON value (as row_to_json writes it, in UTC) is rewritten
 * for receivers: timestamps with time zone end in "Z", bytea is base64.
 */
typedef enum ValueFix
{
	FIX_NONE,
	FIX_TIMESTAMPTZ,
	FIX_BYTEA
} ValueFix;

/* A foreign key of a table: the row it points to goes under key. */
typedef struct ShapeLink
{
	char	   *key;			/* status_id -> status, owner -> owner_object */
	int			ncolumns;
	char	  **columns;		/* of this table */
	char	   *last_column;	/* the link follows this column in a payload */
	Oid			reftable;
	char	  **refcolumns;
	Oid		   *types;			/* of the referenced columns */
} ShapeLink;

typedef struct ShapeColumn
{
	char	   *name;
	ValueFix	fix;
} ShapeColumn;

/* A table as the payloads see it, read once per transaction. */
typedef struct TableShape
{
	Oid			relid;			/* hash key */
	bool		exists;
	int			ncolumns;
	ShapeColumn *columns;		/* in attribute order, dropped ones left out */
	bool		any_fix;
	List	   *links;			/* ShapeLink *, by constraint */
} TableShape;

extern TableShape *webhook_table_shape(Oid relid);
extern ShapeColumn *webhook_shape_column(TableShape *shape, const char *column, int position);
extern ValueFix webhook_column_fix(TableShape *shape, const char *column, int position);
extern ShapeLink *webhook_column_link(TableShape *shape, const char *column);

extern void webhook_append_fixed(StringInfo out, const char *value, int len, ValueFix fix);
extern void webhook_append_row(StringInfo out, const char *row, int len, List *fields,
							   TableShape *shape, Oid reader, bool with_links);

/* Rows read at send time (linked.c) */
extern const char *webhook_linked_row(ShapeLink *link, List *fields, Oid reader);
extern JsonField *webhook_linked_field(ShapeLink *link, List *fields, Oid reader,
									   const char *column);
extern const char *webhook_row_by_key(Oid relid, const char *key_column, const char *value,
									  int len, Oid reader);
extern MemoryContext webhook_payload_context(void);

/* Rows written as row_to_json writes them (rowwrite.c) */
typedef struct RowWriter RowWriter;
struct TupleTableSlot;

extern RowWriter *webhook_row_writer(TupleDesc desc);
extern bool webhook_row_writer_current(RowWriter *writer, TupleDesc desc);
extern void webhook_retire_row_writer(RowWriter *writer);
extern void webhook_write_row(RowWriter *writer, StringInfo out, struct TupleTableSlot *slot);

/* Rendering settings: row_to_json in UTC, bytea in hex. */
extern int	webhook_render_begin(void);
extern void webhook_render_end(int level);

/* Lock a user's table to read it; the worker never waits for it. */
extern void webhook_lock_user_table(Oid relid);

/*
 * The captured table whose payload webhook._render is making, InvalidOid
 * when none is: a lock the worker could not get then holds up that
 * table's changes only (see webhook_expand in expand.c).
 */
extern Oid	webhook_rendering_table;

#endif							/* WEBHOOK_ROWJSON_H */
