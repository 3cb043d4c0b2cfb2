/*
 * webhook.h
 *		Declarations shared by the files of the webhook extension.
 *
 * One file per responsibility:
 *	init.c		_PG_init, GUCs, the utility hook and the commit callback
 *	shmem.c		shared state: the launcher's latch and one slot per database
 *	launcher.c	the launcher: starts the sender, and databases' workers in turn
 *	worker.c	the per-database worker: the database side of sending
 *	sender.c	the sender: the HTTP side of every worker, one for the server
 *	channel.c	the shared-memory queues between a worker and the sender
 *	queue.c		the worker's transactions: claim, record, purge; a status's owner
 *	expand.c	queued occurrences made into deliveries and batches
 *	claims.c	the worker's per-profile claims, and where each got to
 *	dispatch.c	the sender's per-database, per-profile shares of the wire
 *	http.c		libcurl multi interface driven by the worker's wait loop
 *	capture.c	the capture trigger that enqueues occurrences
 *	envelope.c	the JSON sent for one occurrence, for each payload kind
 *	rowjson.c	row snapshots: fields, table shapes, values as receivers want
 *	rowwrite.c	rows written as JSON by the capture, as row_to_json writes them
 *	linked.c	rows read when a payload is made: parents, foreign keys
 *	sign.c		Standard Webhooks signatures, secrets, Basic credentials
 *	network.c	webhook.blocked_networks
 *	trust.c		whether handling a table's rows could run users' code
 *	api.c		SQL-callable C functions used by the install script
 */
#ifndef WEBHOOK_H
#define WEBHOOK_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "port/atomics.h"
#include "storage/dsm.h"
#include "storage/latch.h"
#include "storage/lwlock.h"

#define WEBHOOK_VERSION "0.13"
#define WEBHOOK_EXTENSION_NAME "webhook"
#define WEBHOOK_SCHEMA_NAME "webhook"

/* GUCs (init.c) */
extern int	webhook_request_timeout;	/* ms */
extern int	webhook_connect_timeout;	/* ms */
extern int	webhook_max_response_size;	/* bytes */
extern int	webhook_retention;	/* seconds */
extern int	webhook_max_concurrency;
extern int	webhook_max_workers;
extern int	webhook_worker_idle_timeout;
extern int	webhook_disable_after_failures;
extern int	webhook_max_per_profile;
extern char *webhook_user_agent;
extern char *webhook_proxy;
extern char *webhook_blocked_networks;
extern char *webhook_origin;
extern bool webhook_handle_interrupts(void);

/*
 * On a fast shutdown, or when stopped alone, the worker and the sender
 * finish the requests on the wire, or abandon them, within this bound (or
 * webhook.request_timeout, when shorter); the worker records what came
 * back.  An abandoned request is sent again by the next worker.
 */
#define WEBHOOK_STOP_GRACE_MS 5000
extern long webhook_stop_grace_ms(void);
extern ErrorData *webhook_in_subtransaction(void (*fn) (void *arg), void *arg);

/* network.c */
struct sockaddr;
extern bool webhook_check_blocked_networks(char **newval, void **extra, int source);
extern void webhook_assign_blocked_networks(const char *newval, void *extra);
extern bool webhook_address_blocked(const struct sockaddr *sa);

/*
 * Shared memory (shmem.c).
 *
 * A slot belongs to one database.  Only cross-process state lives here: the
 * database OID, the worker's pid and latch (a PGPROC latch, valid in every
 * process), and flags.  The launcher owns the slot's life cycle.
 *
 * A database's worker runs while it has work: it leaves when it has had
 * none for webhook.worker_idle_timeout (sooner when other databases wait
 * for one of the webhook.max_workers places), saying when its next
 * delivery comes due; the launcher starts it again then, or when a commit
 * asks for it.
 */
typedef enum WebhookSlotState
{
	SLOT_FREE = 0,
	SLOT_REQUESTED,				/* a worker should be started */
	SLOT_STARTING,				/* registered, not yet attached */
	SLOT_RUNNING,				/* worker attached */
	SLOT_PAUSED,				/* stopped while a DROP/ALTER DATABASE runs */
	SLOT_IDLE					/* no worker: one starts for work or at wake_at */
} WebhookSlotState;

/* NOTIFY'd when a delivery fails for good and when a profile is disabled. */
#define WEBHOOK_FAILURES_CHANNEL "webhook_failures"

/* Databases with the extension that one server serves. */
#define WEBHOOK_MAX_DATABASES 1024

/*
 * What a commit asks of its database's worker.  New changes only need
 * expanding; anything else (an operator call, say) may have made
 * deliveries or batches due, or changed profiles.
 */
#define WORK_CHANGES	0x1
#define WORK_OTHER		0x2
#define WORK_DEADLINES	0x4		/* due times were set: the next may be sooner */

typedef struct WebhookDbSlot
{
	Oid			dboid;
	WebhookSlotState state;
	pid_t		pid;			/* worker pid, 0 when none */
	Latch	   *latch;			/* worker's latch, NULL when none */
	bool		stop_requested; /* the worker must exit soon */
	pg_atomic_uint32 work_queued;	/* WORK_* that commits asked for since
									 * the worker last looked */
	TimestampTz restart_at;		/* not before this time (crash backoff) */
	TimestampTz wake_at;		/* IDLE: start a worker then (0: on work only) */
	dsm_handle	channel;		/* the worker's channel to the sender, 0: none */
	TimestampTz served_at;		/* when a worker last started: who is next */
	TimestampTz purged_at;		/* when a worker last purged all it could */
} WebhookDbSlot;

typedef struct WebhookShared
{
	LWLock	   *lock;
	pid_t		launcher_pid;
	Latch	   *launcher_latch;
	pid_t		sender_pid;		/* the sender, 0 when none runs */
	Latch	   *sender_latch;
	pg_atomic_uint32 channels_changed;	/* a worker opened a channel */
	int			databases_waiting;	/* for a worker, with every place taken */
	int			nslots;
	WebhookDbSlot slots[FLEXIBLE_ARRAY_MEMBER];
} WebhookShared;

extern WebhookShared *webhook_shared;

extern void webhook_shmem_request(void);
extern void webhook_shmem_startup(void);
extern WebhookDbSlot *webhook_slot_find(Oid dboid);
extern void webhook_request_worker(Oid dboid);
extern void webhook_wake_worker(Oid dboid, uint32 work);
extern uint32 webhook_work_queued(WebhookDbSlot *slot);
extern bool webhook_pause_worker(Oid dboid);
extern void webhook_unpause_worker(Oid dboid, bool database_gone);
extern void webhook_publish_channel(WebhookDbSlot *slot, dsm_handle channel);

/* launcher.c */
extern void webhook_register_launcher(void);
extern PGDLLEXPORT void webhook_launcher_main(Datum main_arg);

/* worker.c, sender.c; webhook_in_worker is true in a worker only */
extern bool webhook_in_worker;
extern PGDLLEXPORT void webhook_worker_main(Datum main_arg);
extern PGDLLEXPORT void webhook_sender_main(Datum main_arg);

/* trust.c: whether a table's rows, a type, a function run users' code */
extern bool webhook_function_trusted(Oid funcid);
extern const char *webhook_type_untrusted(Oid typid);
extern const char *webhook_relation_untrusted(Oid relid);

/* sign.c */
extern char *webhook_signature(const char *secret, const char *msg_id,
							   const char *timestamp, const char *body);
extern char *webhook_basic_credentials(const char *username, const char *password);

/*
 * capture.c: wake this database's worker when the transaction commits, to
 * look at everything (WORK_OTHER)
 */
extern void webhook_wake_on_commit(void);
extern void webhook_start_on_commit(Oid dboid);
extern void webhook_capture_init(void);
extern int	webhook_capture_depth;
extern Oid	webhook_capture_relid;
extern int64 webhook_capture_key(void);
extern bool webhook_enqueueing;
extern int	webhook_pin_search_path(void);
extern Oid	webhook_queue_owner(void);
struct Tuplestorestate;
extern void webhook_enqueue_rows(struct Tuplestorestate *matches, Oid relid, const char *operation,
								 const char *capture_error);
struct _SPI_plan;
struct TupleDescData;
extern struct Tuplestorestate *webhook_select_rows(struct _SPI_plan *plan, bool keyed, int n,
												   const Oid *types, const Datum *values);
extern void webhook_register_rows(struct Tuplestorestate *rows, const char *relname,
								  struct TupleDescData *desc);
extern int	webhook_write_rows(struct _SPI_plan *plan, Datum *args, const char *nulls,
							   const char *relname);
extern struct TupleDescData *webhook_kept_tupdesc(struct TupleDescData **kept, int natts,
												  const char *const *names, const Oid *types);

struct TupleTableSlot;
struct TriggerData;
struct TupleDescData;
extern struct TupleTableSlot *webhook_transition_reader(struct Tuplestorestate *rows,
														struct TupleDescData *desc);

/* deadline.c: the schedule of deadline events, written as the queue's owner */
extern void webhook_schedule_rows(struct Tuplestorestate *rows);
typedef struct DueColumns DueColumns;
extern DueColumns *webhook_due_columns(Oid relid);
extern bool webhook_schedule_due_columns(DueColumns *due, struct TriggerData *trigdata);
extern void webhook_free_due_columns(DueColumns *due);

#endif							/* WEBHOOK_H */
