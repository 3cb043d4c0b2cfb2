/*
 * conditions.c
 *		Bindings' conditions evaluated by the capture trigger itself, with
 *		no query.
 *
 * A binding's condition is SQL over (n.r), the new row, and (o.r), the old
 * row, as webhook._capture_conditions() writes it: the structured
 * conditions compiled when they were saved and the changed columns of its
 * event.  The capture query evaluates it over the statement's rows; for a
 * table whose bindings call no SQL of users' own, the capture trigger
 * compiles the same text here, once per session and trigger, into an
 * expression over the transition tables' rows: parsed and analysed as the
 * query would be (the same operators, casts and collations, the values'
 * literals folded the same way), with (n.r).col a column of the new row
 * and (o.r).col one of the old.  The text is parsed as the writer, with the
 * search_path pinned, as the query is prepared.
 *
 * A condition whose shape is not that of a compiled one (a whole row, a
 * parameter, a subquery) is not compiled here: the trigger runs the query.
 */
#include "webhook.h"
#include "conditions.h"

#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "nodes/plannodes.h"
#include "optimizer/optimizer.h"
#include "parser/parse_collate.h"
#include "parser/parse_expr.h"
#include "parser/parse_node.h"
#include "parser/parse_relation.h"
#include "parser/parser.h"
#include "utils/rel.h"
#include "utils/syscache.h"

struct BindingConditions
{
	int			nbindings;
	int64	   *binding_ids;
	ExprState **tests;			/* NULL: the binding matches every row */
	List	   *depends_on;		/* PlanInvalItems: the functions and types */
};

/* The range table entries of the parse: n, the new row, and o, the old. */
#define NEW_ROW_RTINDEX 1
#define OLD_ROW_RTINDEX 2

/*
 * (n.r) and (o.r) are the rows themselves: whole-row references to the
 * captured table, whose fields the parser then resolves as its columns.
 * No other name is known.
 */
static Node *
row_reference(ParseState *pstate, ColumnRef *cref)
{
	Relation	rel = pstate->p_ref_hook_state;
	const char *row;

	if (list_length(cref->fields) == 2 &&
		IsA(linitial(cref->fields), String) && IsA(lsecond(cref->fields), String) &&
		strcmp(strVal(lsecond(cref->fields)), "r") == 0)
	{
		row = strVal(linitial(cref->fields));
		if (strcmp(row, "n") == 0 || strcmp(row, "o") == 0)
			return (Node *) makeVar(row[0] == 'n' ? NEW_ROW_RTINDEX : OLD_ROW_RTINDEX,
									InvalidAttrNumber, RelationGetForm(rel)->reltype, -1,
									InvalidOid, 0);
	}
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_COLUMN),
			 errmsg("a capture condition names something other than a column of the row"),
			 parser_errposition(pstate, cref->location)));
	return NULL;
}

/*
 * Is every node one that a compiled condition is made of?  Notes the
 * domains it coerces to (context: a List ** of PlanInvalItems): their
 * constraints are copied into the expression when it is made, and a plan
 * depends on them only through its executor state, made anew at each run.
 */
static bool
compiled_shape(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (IsA(node, CoerceToDomain))
	{
		List	  **depends_on = context;
		PlanInvalItem *item = makeNode(PlanInvalItem);

		item->cacheId = TYPEOID;
		item->hashValue = GetSysCacheHashValue1(TYPEOID,
												ObjectIdGetDatum(((CoerceToDomain *) node)->resulttype));
		*depends_on = lappend(*depends_on, item);
	}
	switch (nodeTag(node))
	{
		case T_Var:
			{
				Var		   *var = (Var *) node;

				/* a column of a row, never a whole row */
				if (var->varattno <= 0 || var->varlevelsup != 0 ||
					(var->varno != NEW_ROW_RTINDEX && var->varno != OLD_ROW_RTINDEX))
					return true;
				return false;
			}
		case T_Const:
		case T_OpExpr:
		case T_DistinctExpr:
		case T_NullIfExpr:
		case T_ScalarArrayOpExpr:
		case T_BoolExpr:
		case T_NullTest:
		case T_BooleanTest:
		case T_RelabelType:
		case T_CoerceViaIO:
		case T_ArrayCoerceExpr:
		case T_CoerceToDomain:
		case T_CaseTestExpr:
		case T_ArrayExpr:
		case T_List:
			break;
		case T_FuncExpr:
			if (((FuncExpr *) node)->funcretset)
				return true;
			break;
		default:
			return true;
	}
	return expression_tree_walker(node, compiled_shape, context);
}

/* The old row's columns are read from the expression context's outer tuple. */
static bool
old_row_to_outer(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (IsA(node, Var) && ((Var *) node)->varno == OLD_ROW_RTINDEX)
	{
		((Var *) node)->varno = OUTER_VAR;
		return false;
	}
	return expression_tree_walker(node, old_row_to_outer, context);
}

/* One condition as an expression, or NULL if it is not of a compiled shape. */
static Expr *
compile_one(Relation rel, const char *condition, List **depends_on)
{
	List	   *parsed = raw_parser(psprintf("SELECT %s", condition), RAW_PARSE_DEFAULT);
	SelectStmt *select;
	ResTarget  *target;
	ParseState *pstate;
	ParseNamespaceItem *item;
	Node	   *expr;

	if (list_length(parsed) != 1 || !IsA(((RawStmt *) linitial(parsed))->stmt, SelectStmt))
		return NULL;
	select = (SelectStmt *) ((RawStmt *) linitial(parsed))->stmt;
	if (list_length(select->targetList) != 1 || select->fromClause != NIL ||
		select->whereClause != NULL || select->groupClause != NIL ||
		select->havingClause != NULL || select->windowClause != NIL ||
		select->distinctClause != NIL || select->withClause != NULL ||
		select->sortClause != NIL || select->limitCount != NULL ||
		select->lockingClause != NIL || select->valuesLists != NIL ||
		select->op != SETOP_NONE)
		return NULL;
	target = linitial(select->targetList);

	pstate = make_parsestate(NULL);
	pstate->p_sourcetext = condition;
	pstate->p_pre_columnref_hook = row_reference;
	pstate->p_ref_hook_state = rel;
	item = addRangeTableEntryForRelation(pstate, rel, AccessShareLock,
										 makeAlias("n", NIL), false, false);
	addNSItemToQuery(pstate, item, false, true, false);
	item = addRangeTableEntryForRelation(pstate, rel, AccessShareLock,
										 makeAlias("o", NIL), false, false);
	addNSItemToQuery(pstate, item, false, true, false);

	expr = transformExpr(pstate, target->val, EXPR_KIND_WHERE);
	if (exprType(expr) != BOOLOID || pstate->p_hasSubLinks)
		return NULL;
	assign_expr_collations(pstate, expr);
	free_parsestate(pstate);

	/* as the planner would: constants folded, functions inlined */
	{
		List	   *relations = NIL;
		List	   *items = NIL;

		expr = (Node *) expression_planner_with_deps((Expr *) expr, &relations, &items);
		*depends_on = list_concat(*depends_on, items);
	}
	if (compiled_shape(expr, depends_on))
		return NULL;
	old_row_to_outer(expr, NULL);
	return (Expr *) expr;
}

/*
 * The bindings' conditions compiled, in the current memory context; NULL if
 * one of them is not of a compiled shape.  A condition that does not parse
 * (a column dropped, a type changed) raises its error, as the capture query
 * would.
 */
BindingConditions *
webhook_conditions_compile(Relation rel, int nbindings, const int64 *binding_ids,
						   char *const *conditions)
{
	BindingConditions *conds = palloc0(sizeof(BindingConditions));

	conds->nbindings = nbindings;
	conds->binding_ids = palloc(sizeof(int64) * nbindings);
	conds->tests = palloc0(sizeof(ExprState *) * nbindings);
	for (int i = 0; i < nbindings; i++)
	{
		conds->binding_ids[i] = binding_ids[i];
		if (conditions[i] != NULL)
		{
			Expr	   *expr = compile_one(rel, conditions[i], &conds->depends_on);

			if (expr == NULL)
				return NULL;
			conds->tests[i] = ExecInitExpr(expr, NULL);
		}
	}
	return conds;
}

/* Does a change of this catalogue entry (0: of any) make them stale? */
bool
webhook_conditions_depend_on(const BindingConditions *conds, int cacheid, uint32 hashvalue)
{
	ListCell   *lc;

	foreach(lc, conds->depends_on)
	{
		PlanInvalItem *item = lfirst(lc);

		if (item->cacheId == cacheid && (hashvalue == 0 || item->hashValue == hashvalue))
			return true;
	}
	return false;
}

int
webhook_conditions_count(const BindingConditions *conds)
{
	return conds->nbindings;
}

int64
webhook_conditions_binding(const BindingConditions *conds, int i)
{
	return conds->binding_ids[i];
}

/*
 * Which bindings a changed row matches (matched[i] for the i-th), and how
 * many.  A condition that is null does not match, as in the query.
 */
int
webhook_conditions_match(BindingConditions *conds, ExprContext *econtext,
						 TupleTableSlot *new_row, TupleTableSlot *old_row, bool *matched)
{
	int			count = 0;

	econtext->ecxt_scantuple = new_row;
	econtext->ecxt_outertuple = old_row;
	for (int i = 0; i < conds->nbindings; i++)
	{
		bool		isnull = false;

		matched[i] = conds->tests[i] == NULL ||
			DatumGetBool(ExecEvalExprSwitchContext(conds->tests[i], econtext, &isnull));
		if (isnull)
			matched[i] = false;
		count += matched[i];
	}
	ResetExprContext(econtext);
	return count;
}
