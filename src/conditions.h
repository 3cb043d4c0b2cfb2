/*
 * conditions.h
 *		Bindings' conditions evaluated by the capture trigger itself.
 */
#ifndef WEBHOOK_CONDITIONS_H
#define WEBHOOK_CONDITIONS_H

#include "postgres.h"

#include "executor/tuptable.h"
#include "nodes/execnodes.h"
#include "utils/relcache.h"

typedef struct BindingConditions BindingConditions;

extern BindingConditions *webhook_conditions_compile(Relation rel, int nbindings,
													 const int64 *binding_ids,
													 char *const *conditions);
extern bool webhook_conditions_depend_on(const BindingConditions *conds, int cacheid,
										 uint32 hashvalue);
extern int	webhook_conditions_count(const BindingConditions *conds);
extern int64 webhook_conditions_binding(const BindingConditions *conds, int i);
extern int	webhook_conditions_match(BindingConditions *conds, ExprContext *econtext,
									 TupleTableSlot *new_row, TupleTableSlot *old_row,
									 bool *matched);

#endif
