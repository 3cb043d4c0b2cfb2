/*
 * sign.c
 *		Standard Webhooks signing, secrets, and HTTP Basic credentials.
 *
 * webhook-signature is "v1," followed by the base64 HMAC-SHA256, keyed with
 * the base64-decoded part of the profile's "whsec_..." secret, of
 * "<webhook-id>.<webhook-timestamp>.<body>".
 */
#include "webhook.h"
#include "http.h"

#include "common/base64.h"
#include "common/cryptohash.h"
#include "common/hmac.h"
#include "fmgr.h"
#include "port.h"
#include "utils/builtins.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#define SECRET_PREFIX "whsec_"
#define SECRET_BYTES 32
#define SHA256_BYTES 32

PG_FUNCTION_INFO_V1(webhook_new_secret);

static char *
base64(const char *data, int len)
{
	int			max = pg_b64_enc_len(len);
	char	   *out = palloc(max + 1);
	int			n = pg_b64_encode(data, len, out, max);

	if (n < 0)
		elog(ERROR, "could not encode base64");
	out[n] = '\0';
	return out;
}

/*
 * The signature header's value, or NULL when the secret is not a valid
 * "whsec_" secret (the profile guard refuses those, so this is a last
 * defence, not a path taken).
 */
char *
webhook_signature(const char *secret, const char *msg_id, const char *timestamp,
				  const char *body)
{
	const char *encoded;
	int			keylen;
	char	   *key;
	pg_hmac_ctx *ctx;
	uint8		mac[SHA256_BYTES];
	bool		ok;

	if (secret == NULL || strncmp(secret, SECRET_PREFIX, strlen(SECRET_PREFIX)) != 0)
		return NULL;
	encoded = secret + strlen(SECRET_PREFIX);
	key = palloc(pg_b64_dec_len(strlen(encoded)) + 1);
	keylen = pg_b64_decode(encoded, strlen(encoded), key, pg_b64_dec_len(strlen(encoded)));
	if (keylen <= 0)
		return NULL;

	ctx = pg_hmac_create(PG_SHA256);
	if (ctx == NULL)
		elog(ERROR, "out of memory");
	ok = pg_hmac_init(ctx, (uint8 *) key, keylen) == 0 &&
		pg_hmac_update(ctx, (const uint8 *) msg_id, strlen(msg_id)) == 0 &&
		pg_hmac_update(ctx, (const uint8 *) ".", 1) == 0 &&
		pg_hmac_update(ctx, (const uint8 *) timestamp, strlen(timestamp)) == 0 &&
		pg_hmac_update(ctx, (const uint8 *) ".", 1) == 0 &&
		pg_hmac_update(ctx, (const uint8 *) body, strlen(body)) == 0 &&
		pg_hmac_final(ctx, mac, sizeof(mac)) == 0;
	pg_hmac_free(ctx);
	pfree(key);
	if (!ok)
		elog(ERROR, "could not compute the webhook signature");
	return psprintf("v1,%s", base64((const char *) mac, sizeof(mac)));
}

/* "Basic <base64 of user:password>", for an Authorization header. */
char *
webhook_basic_credentials(const char *username, const char *password)
{
	char	   *pair = psprintf("%s:%s", username ? username : "", password ? password : "");

	return psprintf("Basic %s", base64(pair, strlen(pair)));
}

/* webhook._new_secret(): a new "whsec_" secret of 32 random bytes. */
Datum
webhook_new_secret(PG_FUNCTION_ARGS)
{
	char		bytes[SECRET_BYTES];

	if (!pg_strong_random(bytes, sizeof(bytes)))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate random bytes for a webhook secret")));
	PG_RETURN_TEXT_P(cstring_to_text(psprintf(SECRET_PREFIX "%s", base64(bytes, sizeof(bytes)))));
}

/*
 * Add webhook-timestamp and webhook-signature to a request that is about
 * to go on the wire: the timestamp is the send time, as receivers check it
 * against their clock (five minutes of tolerance, typically).
 */
void
webhook_request_sign(WebhookRequest *req)
{
	static ResourceOwner signing_owner = NULL;
	MemoryContext old = MemoryContextSwitchTo(req->cxt);
	ResourceOwner old_owner = CurrentResourceOwner;
	char		timestamp[32];
	char	   *signature;

	/* the HMAC context is a resource: outside a transaction it needs an owner */
	if (CurrentResourceOwner == NULL)
	{
		if (signing_owner == NULL)
			signing_owner = ResourceOwnerCreate(NULL, "webhook signing");
		CurrentResourceOwner = signing_owner;
	}

	snprintf(timestamp, sizeof(timestamp), "%lld",
			 (long long) (GetCurrentTimestamp() / USECS_PER_SEC +
						  (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY));
	req->headers = lappend(req->headers, psprintf("webhook-timestamp: %s", timestamp));
	signature = webhook_signature(req->secret, req->webhook_id, timestamp, req->body);
	/*
	 * A rotation's old secret signs second (receivers try each in turn),
	 * until its time: a request may wait in the sender past it.
	 */
	if (signature && req->previous_secret && GetCurrentTimestamp() < req->previous_secret_until)
	{
		char	   *previous = webhook_signature(req->previous_secret, req->webhook_id,
												 timestamp, req->body);

		if (previous)
			signature = psprintf("%s %s", signature, previous);
	}
	CurrentResourceOwner = old_owner;
	if (signature)
		req->headers = lappend(req->headers, psprintf("webhook-signature: %s", signature));
	MemoryContextSwitchTo(old);
}
