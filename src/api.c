/*
 * api.c
 *		SQL-callable C functions of the install script.
 */
#include "webhook.h"

#include "fmgr.h"
#include "miscadmin.h"

PG_FUNCTION_INFO_V1(webhook_start_worker);
PG_FUNCTION_INFO_V1(webhook_wake);

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
	webhook_start_on_commit();
	PG_RETURN_VOID();
}

/* webhook._wake(): wake this database's worker when the transaction commits. */
Datum
webhook_wake(PG_FUNCTION_ARGS)
{
	webhook_wake_on_commit();
	PG_RETURN_VOID();
}
