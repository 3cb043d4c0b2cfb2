/*
 * http.h
 *		One HTTP request of a delivery, and the libcurl multi driver.
 */
#ifndef WEBHOOK_HTTP_H
#define WEBHOOK_HTTP_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "lib/ilist.h"
#include "lib/stringinfo.h"
#include "nodes/pg_list.h"

/* How one attempt ended; stored in webhook.attempt.outcome. */
typedef enum WebhookOutcome
{
	OUTCOME_RESPONSE,			/* a complete HTTP response, any status */
	OUTCOME_BODY_TOO_LARGE,		/* a response whose body passed
								 * webhook.max_response_size: cut there */
	OUTCOME_TIMEOUT,
	OUTCOME_CONNECT_ERROR,
	OUTCOME_TLS_ERROR,
	OUTCOME_BLOCKED,			/* the address is in webhook.blocked_networks */
	OUTCOME_ERROR				/* anything else: protocol, send, receive */
} WebhookOutcome;

extern const char *webhook_outcome_name(WebhookOutcome outcome);
extern bool webhook_outcome_has_response(WebhookOutcome outcome);

/* Header fields as recorded: a name and a value each, in order. */
typedef struct HeaderFields
{
	List	   *names;			/* char * */
	List	   *values;			/* char * */
} HeaderFields;

typedef struct WebhookRequest
{
	MemoryContext cxt;			/* owns the request and everything in it */
	dlist_node	node;

	/* what to send */
	uint32		origin;			/* in the sender: the channel it came on */
	int64		delivery_id;
	int32		attempt;
	int64		profile_id;
	char	   *url;
	char	   *method;
	char	   *body;
	char	   *webhook_id;
	char	   *secret;			/* whsec_..., NULL: unsigned */
	char	   *previous_secret;	/* during a rotation: signs too, */
	TimestampTz previous_secret_until;	/* until then */
	List	   *headers;		/* "Name: value" strings, in order; the
								 * timestamp and signature are added when
								 * the request starts */
	List	   *redacted;		/* header names whose values are not recorded */
	int			timeout_ms;
	double		max_rate;		/* of its profile, requests a second; 0: none */
	char	   *client_cert;	/* PEM: a client certificate (mutual TLS), */
	char	   *client_key;		/* its key, */
	char	   *ca_cert;		/* the CA to trust instead of the system's */

	/* what happened */
	TimestampTz started_at;
	double		duration_ms;
	WebhookOutcome outcome;
	long		status;			/* HTTP status, 0 without a response */
	char	   *error;			/* NULL without an error */
	StringInfoData response_body;
	StringInfoData response_headers;	/* raw lines of the final response */
	HeaderFields response_fields;	/* as recorded; made by the sender */
	HeaderFields request_fields;	/* as recorded, secrets redacted */
	bool		body_truncated;
	int64		retry_after_s;	/* the response's Retry-After, 0: none */
	TimestampTz due_again;		/* given back unsent: due then (0: now) */
	bool		via_proxy;		/* started through webhook.proxy */
	char	   *blocked_address;	/* set when the connection was refused */

	/* libcurl state, released when the request completes */
	void	   *easy;
	struct curl_slist *header_list;
	char	   *errbuf;
} WebhookRequest;

extern WebhookRequest *webhook_request_create(void);
extern void webhook_request_free(WebhookRequest *req);
extern void webhook_request_sign(WebhookRequest *req);
extern void webhook_request_header_fields(WebhookRequest *req, HeaderFields *fields);
extern void webhook_response_header_fields(WebhookRequest *req, HeaderFields *fields);
extern char *webhook_request_headers_json(WebhookRequest *req);

extern void webhook_http_init(void);
extern void webhook_http_shutdown(void);
extern void webhook_http_start(WebhookRequest *req);
extern void webhook_http_forget_connections(void);
extern bool webhook_http_accepting(void);
extern int	webhook_http_in_flight(void);
extern int	webhook_http_socket(void);
extern long webhook_http_timeout_ms(void);
extern void webhook_http_perform(void);
extern WebhookRequest *webhook_http_next_done(void);

#endif							/* WEBHOOK_HTTP_H */
