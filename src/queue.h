/*
 * queue.h
 *		The worker's work in the database: each call is one short transaction.
 */
#ifndef WEBHOOK_QUEUE_H
#define WEBHOOK_QUEUE_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "nodes/pg_list.h"

typedef struct WebhookClaim
{
	bool		extension_present;	/* false: the extension was dropped */
	List	   *requests;		/* WebhookRequest *, ready to start */
	bool		more_occurrences;	/* the expansion step was cut short */
	TimestampTz next_due;		/* earliest waiting delivery, 0 for none */
} WebhookClaim;

extern bool webhook_queue_recover(void);
extern void webhook_queue_claim(int limit, WebhookClaim *claim);
extern TimestampTz webhook_queue_record(List *requests);
extern bool webhook_queue_purge(void);

#endif							/* WEBHOOK_QUEUE_H */
