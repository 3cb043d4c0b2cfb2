/*
 * channel.c
 *		The two message queues between a database's worker and the sender,
 *		and the messages on them.
 *
 * The worker creates a dynamic shared memory segment with two shm_mq rings
 * (one each way) and publishes its handle in its slot, where the sender
 * finds it.  Neither
 * side ever waits on the other: messages are sent without blocking, and
 * what does not fit waits in the sender's own list until the other side
 * has read some (it sets our latch when it does).
 *
 * Messages are flat: a kind byte, then fixed-size fields and strings
 * (length, -1 for NULL, then the bytes).
 */
#include "webhook.h"
#include "channel.h"
#include "http.h"

#include "storage/proc.h"
#include "storage/shm_mq.h"
#include "utils/memutils.h"

/*
 * Each ring; a message longer than this still passes, in pieces, and what
 * does not fit waits in the sender's list.  A worker makes its channel
 * each time it starts, and the segment's memory is allocated then: a
 * megabyte each way holds hundreds of requests, and costs the start little.
 */
#define CHANNEL_QUEUE_SIZE (1024 * 1024)

struct WebhookChannel
{
	dsm_segment *seg;
	shm_mq_handle *out;			/* what this side sends */
	shm_mq_handle *in;			/* what this side receives */
	List	   *unflushed;		/* StringInfo, oldest first: the ring was full */
};

/* the writing side */

static void
put_int64(StringInfo buf, int64 value)
{
	appendBinaryStringInfo(buf, (char *) &value, sizeof(value));
}

static void
put_int32(StringInfo buf, int32 value)
{
	appendBinaryStringInfo(buf, (char *) &value, sizeof(value));
}

static void
put_double(StringInfo buf, double value)
{
	appendBinaryStringInfo(buf, (char *) &value, sizeof(value));
}

static void
put_string(StringInfo buf, const char *value)
{
	int32		len = value ? (int32) strlen(value) : -1;

	put_int32(buf, len);
	if (value)
		appendBinaryStringInfo(buf, value, len);
}

static void
put_list(StringInfo buf, List *strings)
{
	ListCell   *lc;

	put_int32(buf, list_length(strings));
	foreach(lc, strings)
		put_string(buf, lfirst(lc));
}

/* the reading side: a cursor over one received message */

typedef struct Reader
{
	const char *pos;
	const char *end;
} Reader;

static void
get_bytes(Reader *r, void *out, Size len)
{
	if (r->pos + len > r->end)
		elog(ERROR, "webhook channel message is truncated");
	memcpy(out, r->pos, len);
	r->pos += len;
}

static int64
get_int64(Reader *r)
{
	int64		value;

	get_bytes(r, &value, sizeof(value));
	return value;
}

static int32
get_int32(Reader *r)
{
	int32		value;

	get_bytes(r, &value, sizeof(value));
	return value;
}

static double
get_double(Reader *r)
{
	double		value;

	get_bytes(r, &value, sizeof(value));
	return value;
}

static char *
get_string(Reader *r)
{
	int32		len = get_int32(r);
	char	   *value;

	if (len < 0)
		return NULL;
	value = palloc(len + 1);
	get_bytes(r, value, len);
	value[len] = '\0';
	return value;
}

static List *
get_list(Reader *r)
{
	int32		n = get_int32(r);
	List	   *result = NIL;

	for (int i = 0; i < n; i++)
		result = lappend(result, get_string(r));
	return result;
}

/* set-up */

static WebhookChannel *
channel_new(dsm_segment *seg, shm_mq *out, shm_mq *in)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
	WebhookChannel *channel = palloc0(sizeof(WebhookChannel));

	channel->seg = seg;
	channel->out = shm_mq_attach(out, seg, NULL);
	channel->in = shm_mq_attach(in, seg, NULL);
	MemoryContextSwitchTo(old);
	return channel;
}

/* The worker's end: a new segment with both rings. */
WebhookChannel *
webhook_channel_create(void)
{
	dsm_segment *seg = dsm_create(2 * CHANNEL_QUEUE_SIZE, 0);
	char	   *base = dsm_segment_address(seg);
	shm_mq	   *to_sender;
	shm_mq	   *to_worker;

	/* the segment lives as long as the worker, not a transaction */
	dsm_pin_mapping(seg);
	to_sender = shm_mq_create(base, CHANNEL_QUEUE_SIZE);
	to_worker = shm_mq_create(base + CHANNEL_QUEUE_SIZE, CHANNEL_QUEUE_SIZE);
	shm_mq_set_sender(to_sender, MyProc);
	shm_mq_set_receiver(to_worker, MyProc);
	return channel_new(seg, to_sender, to_worker);
}

dsm_handle
webhook_channel_handle(WebhookChannel *channel)
{
	return dsm_segment_handle(channel->seg);
}

/* The sender's end; NULL when the worker is gone already. */
WebhookChannel *
webhook_channel_attach(dsm_handle handle)
{
	dsm_segment *seg = dsm_attach(handle);
	char	   *base;
	shm_mq	   *to_sender;
	shm_mq	   *to_worker;

	if (seg == NULL)
		return NULL;
	dsm_pin_mapping(seg);
	base = dsm_segment_address(seg);
	to_sender = (shm_mq *) base;
	to_worker = (shm_mq *) (base + CHANNEL_QUEUE_SIZE);
	shm_mq_set_receiver(to_sender, MyProc);
	shm_mq_set_sender(to_worker, MyProc);
	return channel_new(seg, to_worker, to_sender);
}

/* The sender lets go of a worker's channel (the worker has gone). */
void
webhook_channel_detach(WebhookChannel *channel)
{
	ListCell   *lc;

	foreach(lc, channel->unflushed)
	{
		StringInfo	buf = lfirst(lc);

		pfree(buf->data);
		pfree(buf);
	}
	list_free(channel->unflushed);
	dsm_detach(channel->seg);
	pfree(channel);
}

/* posting */

static StringInfo
new_message(WebhookMessageKind kind)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
	StringInfo	buf = makeStringInfo();

	appendStringInfoChar(buf, (char) kind);
	MemoryContextSwitchTo(old);
	return buf;
}

static void
post(WebhookChannel *channel, StringInfo buf)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

	channel->unflushed = lappend(channel->unflushed, buf);
	MemoryContextSwitchTo(old);
}

void
webhook_channel_post_request(WebhookChannel *channel, WebhookRequest *req)
{
	StringInfo	buf = new_message(MESSAGE_REQUEST);

	put_int64(buf, req->delivery_id);
	put_int32(buf, req->attempt);
	put_int64(buf, req->profile_id);
	put_int32(buf, req->timeout_ms);
	put_double(buf, req->max_rate);
	put_string(buf, req->client_cert);
	put_string(buf, req->client_key);
	put_string(buf, req->ca_cert);
	put_string(buf, req->url);
	put_string(buf, req->method);
	put_string(buf, req->body);
	put_string(buf, req->webhook_id);
	put_string(buf, req->secret);
	put_string(buf, req->previous_secret);
	put_int64(buf, req->previous_secret_until);
	put_list(buf, req->headers);
	put_list(buf, req->redacted);
	post(channel, buf);
}

void
webhook_channel_post_cancel(WebhookChannel *channel, int64 profile_id)
{
	StringInfo	buf = new_message(MESSAGE_CANCEL);

	put_int64(buf, profile_id);
	post(channel, buf);
}

/*
 * A finished request's outcome (sent) or the request back unsent (it was
 * cancelled before it started).  (The message buffer grows in its own
 * context; the JSON made here is the caller's, short-lived.)
 */
void
webhook_channel_post_result(WebhookChannel *channel, WebhookRequest *req, bool sent)
{
	StringInfo	buf = new_message(sent ? MESSAGE_RESULT : MESSAGE_UNSENT);

	put_int64(buf, req->delivery_id);
	put_int32(buf, req->attempt);
	put_int64(buf, req->profile_id);
	if (!sent)
		put_int64(buf, req->due_again);
	else
	{
		bool		response = webhook_outcome_has_response(req->outcome);
		HeaderFields response_fields = {NIL, NIL};
		HeaderFields request_fields;
		MemoryContext old;

		put_int64(buf, req->started_at);
		put_double(buf, req->duration_ms);
		put_int32(buf, (int32) req->outcome);
		put_int32(buf, (int32) req->status);
		put_string(buf, req->error);
		put_string(buf, response ? req->response_body.data : NULL);
		old = MemoryContextSwitchTo(req->cxt);	/* freed with the request */
		if (response)
			webhook_response_header_fields(req, &response_fields);
		webhook_request_header_fields(req, &request_fields);
		MemoryContextSwitchTo(old);
		put_list(buf, response_fields.names);
		put_list(buf, response_fields.values);
		put_list(buf, request_fields.names);
		put_list(buf, request_fields.values);
	}
	post(channel, buf);
}

/*
 * Send what is posted, as far as the ring takes it.  Returns false when the
 * other side is gone.  Only the last message forces the other side to be
 * woken: the ones before it are seen with it.
 */
bool
webhook_channel_flush(WebhookChannel *channel)
{
	while (channel->unflushed != NIL)
	{
		StringInfo	buf = linitial(channel->unflushed);
		bool		last = list_length(channel->unflushed) == 1;
		shm_mq_result res = shm_mq_send(channel->out, buf->len, buf->data, true, last);

		if (res == SHM_MQ_WOULD_BLOCK)
			return true;
		if (res == SHM_MQ_DETACHED)
			return false;
		pfree(buf->data);
		pfree(buf);
		channel->unflushed = list_delete_first(channel->unflushed);
	}
	return true;
}

bool
webhook_channel_has_unflushed(WebhookChannel *channel)
{
	return channel->unflushed != NIL;
}

/* The next message, without waiting; its request is in its own context. */
void
webhook_channel_receive(WebhookChannel *channel, WebhookMessage *msg)
{
	Size		nbytes;
	void	   *data;
	shm_mq_result res = shm_mq_receive(channel->in, &nbytes, &data, true);
	Reader		r;
	WebhookRequest *req;
	MemoryContext old;

	msg->request = NULL;
	msg->profile_id = 0;
	if (res == SHM_MQ_WOULD_BLOCK)
	{
		msg->kind = MESSAGE_NONE;
		return;
	}
	if (res == SHM_MQ_DETACHED)
	{
		msg->kind = MESSAGE_DETACHED;
		return;
	}
	r.pos = data;
	r.end = (char *) data + nbytes;
	msg->kind = (WebhookMessageKind) *r.pos++;
	if (msg->kind == MESSAGE_CANCEL)
	{
		msg->profile_id = get_int64(&r);
		return;
	}

	req = webhook_request_create();
	old = MemoryContextSwitchTo(req->cxt);
	req->delivery_id = get_int64(&r);
	req->attempt = get_int32(&r);
	req->profile_id = get_int64(&r);
	if (msg->kind == MESSAGE_REQUEST)
	{
		req->timeout_ms = get_int32(&r);
		req->max_rate = get_double(&r);
		req->client_cert = get_string(&r);
		req->client_key = get_string(&r);
		req->ca_cert = get_string(&r);
		req->url = get_string(&r);
		req->method = get_string(&r);
		req->body = get_string(&r);
		req->webhook_id = get_string(&r);
		req->secret = get_string(&r);
		req->previous_secret = get_string(&r);
		req->previous_secret_until = get_int64(&r);
		req->headers = get_list(&r);
		req->redacted = get_list(&r);
	}
	else if (msg->kind == MESSAGE_RESULT)
	{
		char	   *body;

		req->started_at = get_int64(&r);
		req->duration_ms = get_double(&r);
		req->outcome = (WebhookOutcome) get_int32(&r);
		req->status = get_int32(&r);
		req->error = get_string(&r);
		body = get_string(&r);
		req->response_fields.names = get_list(&r);
		req->response_fields.values = get_list(&r);
		req->request_fields.names = get_list(&r);
		req->request_fields.values = get_list(&r);
		initStringInfo(&req->response_body);
		if (body)
			appendStringInfoString(&req->response_body, body);
	}
	else if (msg->kind == MESSAGE_UNSENT)
		req->due_again = get_int64(&r);
	else
		elog(ERROR, "unknown webhook channel message kind %d", (int) msg->kind);
	MemoryContextSwitchTo(old);
	msg->request = req;
}
