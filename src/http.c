/*
 * http.c
 *		HTTP requests through the libcurl multi interface, driven by the
 *		worker's own wait loop.
 *
 * libcurl tells us which sockets to watch (socket callback) and when to
 * call back on a timer (timer callback).  The sockets live in one epoll
 * set, and that epoll descriptor is one event of the worker's WaitEventSet,
 * next to its latch: the worker sleeps until a socket is ready, a timer is
 * due, or a commit sets its latch.  Connections stay in the multi handle's
 * cache and are reused (keep-alive).
 */
#include "webhook.h"
#include "http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <curl/curl.h>

#include "mb/pg_wchar.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

static CURLM *multi = NULL;
static int	epoll_fd = -1;
static int	in_flight = 0;
static bool connections_stale = false;
static TimestampTz timer_deadline = 0;	/* 0: no timer */
static dlist_head done_requests = DLIST_STATIC_INIT(done_requests);

/*
 * Easy handles of finished requests, kept for the next ones: making one
 * anew costs more than a request to a fast receiver.  Each is reset before
 * it is used again, so that no option of one profile's request is left
 * for another's.
 */
#define IDLE_HANDLES_MAX 256
static CURL *idle_handles[IDLE_HANDLES_MAX];
static int	nidle_handles = 0;

static CURL *
take_handle(void)
{
	CURL	   *easy;

	if (nidle_handles == 0)
		return curl_easy_init();
	easy = idle_handles[--nidle_handles];
	curl_easy_reset(easy);
	return easy;
}

static void
keep_handle(CURL *easy)
{
	if (nidle_handles < IDLE_HANDLES_MAX)
		idle_handles[nidle_handles++] = easy;
	else
		curl_easy_cleanup(easy);
}

static void
drop_idle_handles(void)
{
	while (nidle_handles > 0)
		curl_easy_cleanup(idle_handles[--nidle_handles]);
}

const char *
webhook_outcome_name(WebhookOutcome outcome)
{
	switch (outcome)
	{
		case OUTCOME_RESPONSE:
			return "response";
		case OUTCOME_BODY_TOO_LARGE:
			return "body_too_large";
		case OUTCOME_TIMEOUT:
			return "timeout";
		case OUTCOME_CONNECT_ERROR:
			return "connect_error";
		case OUTCOME_TLS_ERROR:
			return "tls_error";
		case OUTCOME_BLOCKED:
			return "blocked";
		case OUTCOME_ERROR:
			return "error";
	}
	return "error";
}

/* Did the attempt get an HTTP status (and headers, and a body)? */
bool
webhook_outcome_has_response(WebhookOutcome outcome)
{
	return outcome == OUTCOME_RESPONSE || outcome == OUTCOME_BODY_TOO_LARGE;
}

WebhookRequest *
webhook_request_create(void)
{
	MemoryContext cxt = AllocSetContextCreate(TopMemoryContext,
											  "webhook request",
											  ALLOCSET_SMALL_SIZES);
	WebhookRequest *req = MemoryContextAllocZero(cxt, sizeof(WebhookRequest));

	req->cxt = cxt;
	return req;
}

void
webhook_request_free(WebhookRequest *req)
{
	if (req->header_list)
		curl_slist_free_all(req->header_list);
	if (req->easy)
		curl_easy_cleanup(req->easy);
	MemoryContextDelete(req->cxt);
}

static size_t
write_body(char *data, size_t size, size_t nmemb, void *userp)
{
	WebhookRequest *req = userp;
	size_t		len = size * nmemb;
	size_t		room = webhook_max_response_size - req->response_body.len;

	if (len > room)
	{
		/* keep what fits; returning short makes libcurl stop reading */
		appendBinaryStringInfo(&req->response_body, data, room);
		req->body_truncated = true;
		return room;
	}
	appendBinaryStringInfo(&req->response_body, data, len);
	return len;
}

static size_t
write_header(char *data, size_t size, size_t nmemb, void *userp)
{
	WebhookRequest *req = userp;
	size_t		len = size * nmemb;

	/* a new status line (after 100 Continue, say) starts a new response */
	if (len >= 5 && strncmp(data, "HTTP/", 5) == 0)
		resetStringInfo(&req->response_headers);
	if (req->response_headers.len + len <= (size_t) Max(webhook_max_response_size, 8192))
		appendBinaryStringInfo(&req->response_headers, data, len);
	return len;
}

/*
 * Refuse to connect to an address of webhook.blocked_networks.  Through a
 * proxy, every connection is to the proxy, which the server's
 * configuration chose: the target is checked before (blocked_target).
 */
static curl_socket_t
open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *address)
{
	WebhookRequest *req = clientp;

	if (purpose == CURLSOCKTYPE_IPCXN && !req->via_proxy &&
		webhook_address_blocked(&address->addr))
	{
		char		text[INET6_ADDRSTRLEN] = "?";

		if (address->family == AF_INET)
			inet_ntop(AF_INET, &((struct sockaddr_in *) &address->addr)->sin_addr, text, sizeof(text));
		else if (address->family == AF_INET6)
			inet_ntop(AF_INET6, &((struct sockaddr_in6 *) &address->addr)->sin6_addr, text, sizeof(text));
		req->blocked_address = MemoryContextStrdup(req->cxt, text);
		return CURL_SOCKET_BAD;
	}
	return socket(address->family, address->socktype, address->protocol);
}

static int
socket_callback(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	struct epoll_event ev;

	memset(&ev, 0, sizeof(ev));
	ev.data.fd = fd;
	if (what == CURL_POLL_REMOVE)
	{
		if (socketp != NULL)
			(void) epoll_ctl(epoll_fd, EPOLL_CTL_DEL, fd, NULL);
		curl_multi_assign(multi, fd, NULL);
		return 0;
	}
	if (what & CURL_POLL_IN)
		ev.events |= EPOLLIN;
	if (what & CURL_POLL_OUT)
		ev.events |= EPOLLOUT;
	if (socketp == NULL)
	{
		if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0 && errno == EEXIST)
			(void) epoll_ctl(epoll_fd, EPOLL_CTL_MOD, fd, &ev);
		curl_multi_assign(multi, fd, (void *) 1);
	}
	else
		(void) epoll_ctl(epoll_fd, EPOLL_CTL_MOD, fd, &ev);
	return 0;
}

static int
timer_callback(CURLM *m, long timeout_ms, void *userp)
{
	if (timeout_ms < 0)
		timer_deadline = 0;
	else
		timer_deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	return 0;
}

static CURLM *
new_multi(void)
{
	CURLM	   *m = curl_multi_init();

	if (m == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not create a libcurl multi handle")));
	curl_multi_setopt(m, CURLMOPT_SOCKETFUNCTION, socket_callback);
	curl_multi_setopt(m, CURLMOPT_TIMERFUNCTION, timer_callback);
	curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, (long) Max(webhook_max_concurrency, 8));
	return m;
}

void
webhook_http_init(void)
{
	if (curl_global_init(CURL_GLOBAL_ALL) != CURLE_OK)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not initialize libcurl")));
	epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (epoll_fd < 0)
		ereport(ERROR,
				(errcode_for_socket_access(),
				 errmsg("could not create epoll descriptor: %m")));
	multi = new_multi();
}

/*
 * Connections that were opened before webhook.blocked_networks changed may
 * lead to addresses it now blocks, and the check is made only when a
 * connection opens: they must not carry another request.  No request starts
 * until those in flight are done; then the multi handle, with every
 * connection it keeps, is replaced.
 */
void
webhook_http_forget_connections(void)
{
	connections_stale = true;
}

bool
webhook_http_accepting(void)
{
	if (!connections_stale)
		return true;
	if (in_flight > 0)
		return false;
	drop_idle_handles();
	curl_multi_cleanup(multi);
	multi = new_multi();
	timer_deadline = 0;
	connections_stale = false;
	return true;
}

void
webhook_http_shutdown(void)
{
	drop_idle_handles();
	if (multi)
		curl_multi_cleanup(multi);
	multi = NULL;
	if (epoll_fd >= 0)
		close(epoll_fd);
	epoll_fd = -1;
}

int
webhook_http_in_flight(void)
{
	return in_flight;
}

int
webhook_http_socket(void)
{
	return epoll_fd;
}

/* Milliseconds until libcurl wants its timer called, -1 for none. */
long
webhook_http_timeout_ms(void)
{
	TimestampTz now;

	if (timer_deadline == 0)
		return -1;
	now = GetCurrentTimestamp();
	if (timer_deadline <= now)
		return 0;
	return (long) ((timer_deadline - now + 999) / 1000);
}

/*
 * Through a proxy: the target's address, when the URL's host is one, in
 * webhook.blocked_networks (a host name is resolved by the proxy, out of
 * our sight).
 */
static const char *
blocked_target(WebhookRequest *req)
{
	CURLU	   *url = curl_url();
	char	   *host = NULL;
	const char *blocked = NULL;

	if (url != NULL && curl_url_set(url, CURLUPART_URL, req->url, 0) == CURLUE_OK &&
		curl_url_get(url, CURLUPART_HOST, &host, 0) == CURLUE_OK)
	{
		struct sockaddr_storage sa;
		char	   *bare = host;
		size_t		len = strlen(host);

		memset(&sa, 0, sizeof(sa));
		/* an address with a trailing dot is one too, to a resolver */
		if (len > 1 && host[len - 1] == '.')
			host[--len] = '\0';
		/* a zone id or an escape: no plain address, and not to be guessed */
		if (strchr(host, '%') != NULL)
			blocked = MemoryContextStrdup(req->cxt, host);
		else if (len > 2 && host[0] == '[' && host[len - 1] == ']')
		{
			bare = pnstrdup(host + 1, len - 2);
			if (inet_pton(AF_INET6, bare, &((struct sockaddr_in6 *) &sa)->sin6_addr) == 1)
				sa.ss_family = AF_INET6;
		}
		else if (inet_pton(AF_INET, host, &((struct sockaddr_in *) &sa)->sin_addr) == 1)
			sa.ss_family = AF_INET;
		if (sa.ss_family != 0 && webhook_address_blocked((struct sockaddr *) &sa))
			blocked = MemoryContextStrdup(req->cxt, bare);
	}
	curl_free(host);
	curl_url_cleanup(url);
	return blocked;
}

/* A PEM text for libcurl, which keeps its own copy. */
static void
set_pem(CURL *easy, CURLoption option, char *pem)
{
	struct curl_blob blob;

	blob.data = pem;
	blob.len = strlen(pem);
	blob.flags = CURL_BLOB_COPY;
	curl_easy_setopt(easy, option, &blob);
}

void
webhook_http_start(WebhookRequest *req)
{
	CURL	   *easy;
	ListCell   *lc;
	MemoryContext old = MemoryContextSwitchTo(req->cxt);

	initStringInfo(&req->response_body);
	initStringInfo(&req->response_headers);
	req->errbuf = palloc0(CURL_ERROR_SIZE);
	req->started_at = GetCurrentTimestamp();

	req->via_proxy = webhook_proxy[0] != '\0';
	if (req->via_proxy && (req->blocked_address = (char *) blocked_target(req)) != NULL)
	{
		req->outcome = OUTCOME_BLOCKED;
		req->error = psprintf("connecting to %s is refused by webhook.blocked_networks",
							  req->blocked_address);
		dlist_push_tail(&done_requests, &req->node);
		MemoryContextSwitchTo(old);
		return;
	}

	easy = take_handle();
	if (easy == NULL)
	{
		req->outcome = OUTCOME_ERROR;
		req->error = pstrdup("could not create a libcurl handle");
		dlist_push_tail(&done_requests, &req->node);
		MemoryContextSwitchTo(old);
		return;
	}
	req->easy = easy;

	foreach(lc, req->headers)
		req->header_list = curl_slist_append(req->header_list, (char *) lfirst(lc));
	/* no "Expect: 100-continue" round trip before larger bodies */
	req->header_list = curl_slist_append(req->header_list, "Expect:");

	curl_easy_setopt(easy, CURLOPT_PRIVATE, req);
	curl_easy_setopt(easy, CURLOPT_URL, req->url);
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
	/* a proxy of webhook.proxy only, never one from the environment */
	curl_easy_setopt(easy, CURLOPT_PROXY, webhook_proxy);
	curl_easy_setopt(easy, CURLOPT_NOPROXY, "");
	if (req->client_cert && req->client_key)
	{
		set_pem(easy, CURLOPT_SSLCERT_BLOB, req->client_cert);
		curl_easy_setopt(easy, CURLOPT_SSLCERTTYPE, "PEM");
		set_pem(easy, CURLOPT_SSLKEY_BLOB, req->client_key);
		curl_easy_setopt(easy, CURLOPT_SSLKEYTYPE, "PEM");
	}
	if (req->ca_cert)
		set_pem(easy, CURLOPT_CAINFO_BLOB, req->ca_cert);
	curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, req->errbuf);
	curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long) req->timeout_ms);
	curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, (long) webhook_connect_timeout);
	curl_easy_setopt(easy, CURLOPT_USERAGENT, webhook_user_agent);
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, req->header_list);
	curl_easy_setopt(easy, CURLOPT_POSTFIELDS, req->body);
	curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE, (long) strlen(req->body));
	if (strcmp(req->method, "POST") != 0)
		curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, req->method);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, write_body);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, req);
	curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, write_header);
	curl_easy_setopt(easy, CURLOPT_HEADERDATA, req);
	curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, open_socket);
	curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, req);

	MemoryContextSwitchTo(old);

	if (curl_multi_add_handle(multi, easy) != CURLM_OK)
	{
		req->outcome = OUTCOME_ERROR;
		req->error = MemoryContextStrdup(req->cxt, "could not add the request to libcurl");
		dlist_push_tail(&done_requests, &req->node);
		return;
	}
	in_flight++;
}

static WebhookOutcome
classify(CURLcode code)
{
	switch (code)
	{
		case CURLE_OPERATION_TIMEDOUT:
			return OUTCOME_TIMEOUT;
		case CURLE_COULDNT_RESOLVE_HOST:
		case CURLE_COULDNT_RESOLVE_PROXY:
		case CURLE_COULDNT_CONNECT:
			return OUTCOME_CONNECT_ERROR;
		case CURLE_SSL_CONNECT_ERROR:
		case CURLE_PEER_FAILED_VERIFICATION:
		case CURLE_SSL_CERTPROBLEM:
		case CURLE_SSL_CIPHER:
		case CURLE_SSL_CACERT_BADFILE:
		case CURLE_SSL_ISSUER_ERROR:
		case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
		case CURLE_SSL_INVALIDCERTSTATUS:
		case CURLE_SSL_CRL_BADFILE:
		case CURLE_USE_SSL_FAILED:
			return OUTCOME_TLS_ERROR;
		default:
			return OUTCOME_ERROR;
	}
}

/*
 * Make received bytes storable as text in the database encoding: a NUL or
 * an invalid byte becomes '?'.  Receivers may answer with anything.
 */
static void
make_storable(StringInfo buf)
{
	int			encoding = GetDatabaseEncoding();
	int			i = 0;

	/* most answers are storable as they are (no NUL, valid): one pass says so */
	if (pg_verify_mbstr(encoding, buf->data, buf->len, true))
		return;

	while (i < buf->len)
	{
		int			len = pg_encoding_verifymbchar(encoding, buf->data + i, buf->len - i);

		if (len <= 0 || buf->data[i] == '\0')
		{
			buf->data[i] = '?';
			len = 1;
		}
		i += len;
	}
}

static void
finish_request(WebhookRequest *req, CURLcode code)
{
	curl_off_t	total_us = 0;

	curl_easy_getinfo(req->easy, CURLINFO_RESPONSE_CODE, &req->status);
	curl_easy_getinfo(req->easy, CURLINFO_TOTAL_TIME_T, &total_us);
	req->duration_ms = total_us / 1000.0;
	if (code == CURLE_OK)
	{
		curl_off_t	retry_after = 0;

		/* seconds, from either form (seconds, or an HTTP date) */
		curl_easy_getinfo(req->easy, CURLINFO_RETRY_AFTER, &retry_after);
		req->retry_after_s = retry_after;
	}

	if (code == CURLE_WRITE_ERROR && req->body_truncated)
		req->outcome = OUTCOME_BODY_TOO_LARGE;
	else if (code == CURLE_OK)
		req->outcome = OUTCOME_RESPONSE;
	else if (req->blocked_address)
	{
		req->outcome = OUTCOME_BLOCKED;
		req->error = MemoryContextStrdup(req->cxt,
										 psprintf("connecting to %s is refused by webhook.blocked_networks",
												  req->blocked_address));
		req->status = 0;
	}
	else
	{
		req->outcome = classify(code);
		req->error = MemoryContextStrdup(req->cxt,
										 req->errbuf[0] ? req->errbuf : curl_easy_strerror(code));
		/* a status seen before a timeout or reset is not a response */
		req->status = 0;
	}

	make_storable(&req->response_body);
	make_storable(&req->response_headers);

	curl_multi_remove_handle(multi, req->easy);
	keep_handle(req->easy);
	req->easy = NULL;
	curl_slist_free_all(req->header_list);
	req->header_list = NULL;
	in_flight--;
	dlist_push_tail(&done_requests, &req->node);
}

/* Let libcurl work on every ready socket and a due timer. */
void
webhook_http_perform(void)
{
	struct epoll_event events[64];
	int			running;
	int			n;
	CURLMsg    *msg;
	int			left;

	do
	{
		n = epoll_wait(epoll_fd, events, lengthof(events), 0);
		for (int i = 0; i < n; i++)
		{
			int			flags = 0;

			if (events[i].events & EPOLLIN)
				flags |= CURL_CSELECT_IN;
			if (events[i].events & EPOLLOUT)
				flags |= CURL_CSELECT_OUT;
			if (events[i].events & (EPOLLERR | EPOLLHUP))
				flags |= CURL_CSELECT_ERR;
			curl_multi_socket_action(multi, events[i].data.fd, flags, &running);
		}
	} while (n == lengthof(events));

	if (timer_deadline != 0 && timer_deadline <= GetCurrentTimestamp())
	{
		timer_deadline = 0;
		curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
	}

	while ((msg = curl_multi_info_read(multi, &left)) != NULL)
	{
		WebhookRequest *req;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &req);
		finish_request(req, msg->data.result);
	}
}

WebhookRequest *
webhook_http_next_done(void)
{
	if (dlist_is_empty(&done_requests))
		return NULL;
	return dlist_container(WebhookRequest, node, dlist_pop_head_node(&done_requests));
}

/* Add a header field "name: value" to the fields, the name namelen long. */
static void
add_field(HeaderFields *fields, const char *name, int namelen, const char *value)
{
	fields->names = lappend(fields->names, pnstrdup(name, namelen));
	fields->values = lappend(fields->values, pstrdup(value));
}

/* The request headers as recorded: secrets replaced by "[redacted]". */
void
webhook_request_header_fields(WebhookRequest *req, HeaderFields *fields)
{
	ListCell   *lc;

	fields->names = NIL;
	fields->values = NIL;
	foreach(lc, req->headers)
	{
		const char *line = lfirst(lc);
		const char *colon = strchr(line, ':');
		const char *value;
		bool		secret = false;
		ListCell   *rc;

		if (colon == NULL)
			continue;
		value = colon + 1;
		while (*value == ' ')
			value++;
		foreach(rc, req->redacted)
			if (pg_strncasecmp(line, lfirst(rc), colon - line) == 0 &&
				strlen(lfirst(rc)) == (size_t) (colon - line))
				secret = true;
		add_field(fields, line, colon - line, secret ? "[redacted]" : value);
	}
}

/* The request headers as a JSON object, as recorded (for webhook.preview). */
char *
webhook_request_headers_json(WebhookRequest *req)
{
	StringInfoData out;
	HeaderFields fields;
	ListCell   *name;
	ListCell   *value;

	webhook_request_header_fields(req, &fields);
	initStringInfo(&out);
	appendStringInfoChar(&out, '{');
	forboth(name, fields.names, value, fields.values)
	{
		if (name != list_head(fields.names))
			appendStringInfoString(&out, ", ");
		escape_json(&out, lfirst(name));
		appendStringInfoString(&out, ": ");
		escape_json(&out, lfirst(value));
	}
	appendStringInfoChar(&out, '}');
	return out.data;
}

/*
 * The response headers as recorded, in the order received; the status line
 * is left out (it is a column).  (A header that occurs more than once keeps
 * its last value when they are stored as jsonb.)
 */
void
webhook_response_header_fields(WebhookRequest *req, HeaderFields *fields)
{
	char	   *raw = pstrdup(req->response_headers.data);
	char	   *save = NULL;

	fields->names = NIL;
	fields->values = NIL;
	for (char *line = strtok_r(raw, "\r\n", &save); line; line = strtok_r(NULL, "\r\n", &save))
	{
		char	   *colon = strchr(line, ':');
		char	   *value;

		if (colon == NULL || strncmp(line, "HTTP/", 5) == 0)
			continue;
		value = colon + 1;
		while (*value == ' ' || *value == '\t')
			value++;
		add_field(fields, line, colon - line, value);
	}
	pfree(raw);
}
