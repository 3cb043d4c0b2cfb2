/* webhook--0.11--0.12.sql: a profile's signing secret rotates, the old one signing alongside for a while */

\echo Use "ALTER EXTENSION webhook UPDATE TO '0.12'" to load this file. \quit

/*
 * While a rotation lasts, a request carries two signatures in
 * webhook-signature, the new secret's first: a receiver that has either
 * secret verifies it, so the receiver can take the new one when it likes.
 */
ALTER TABLE webhook.profile
    ADD COLUMN previous_secret text,
    ADD COLUMN previous_secret_until timestamptz,
    ADD CONSTRAINT profile_previous_secret_check
        CHECK ((previous_secret IS NULL) = (previous_secret_until IS NULL));
COMMENT ON COLUMN webhook.profile.previous_secret IS
    'The secret that webhook.rotate_secret replaced: requests are signed with it too until previous_secret_until.';

/*
 * A secret set other than by a rotation (alter_profile, an UPDATE) ends the
 * rotation; an old secret past its time is dropped at the profile's next
 * change (the worker drops those of unchanged profiles).
 */
CREATE FUNCTION webhook._rotation_guard() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    key_bytes int;
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.secret IS DISTINCT FROM OLD.secret
       AND NEW.previous_secret IS NOT DISTINCT FROM OLD.previous_secret THEN
        NEW.previous_secret := NULL;
        NEW.previous_secret_until := NULL;
    END IF;
    IF NEW.previous_secret_until <= pg_catalog.now() THEN
        NEW.previous_secret := NULL;
        NEW.previous_secret_until := NULL;
    END IF;
    IF (NEW.previous_secret IS NULL) <> (NEW.previous_secret_until IS NULL) THEN
        RAISE EXCEPTION 'a previous secret and its end go together'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Rotate with webhook.rotate_secret, which sets both.';
    END IF;
    IF NEW.previous_secret IS NULL THEN
        RETURN NEW;
    END IF;
    IF NEW.previous_secret_until > pg_catalog.now() + interval '1 year' THEN
        RAISE EXCEPTION 'a previous secret signs for a year at most'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Rotate with webhook.rotate_secret, whose keep_old is 0 to 1 year.';
    END IF;
    BEGIN
        key_bytes := length(decode(substr(NEW.previous_secret, 7), 'base64'));
    EXCEPTION WHEN OTHERS THEN
        key_bytes := 0;
    END;
    IF NEW.previous_secret !~ '^whsec_[A-Za-z0-9+/]+={0,2}$' OR key_bytes NOT BETWEEN 24 AND 64 THEN
        RAISE EXCEPTION 'invalid previous secret'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'webhook.rotate_secret keeps the secret it replaces; a secret is whsec_ followed by the base64 of 24 to 64 bytes.';
    END IF;
    IF NEW.previous_secret = NEW.secret THEN
        RAISE EXCEPTION 'the previous secret is the secret itself'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'webhook.rotate_secret replaces the secret with a different one.';
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION webhook._rotation_guard() IS
    'Checks the previous secret of a rotation, ends the rotation when the secret is set otherwise (internal).';
REVOKE ALL ON FUNCTION webhook._rotation_guard() FROM PUBLIC;
-- after profile_guard, which makes a secret for a NULL one
CREATE TRIGGER profile_secret_rotation BEFORE INSERT OR UPDATE ON webhook.profile
    FOR EACH ROW EXECUTE FUNCTION webhook._rotation_guard();

CREATE FUNCTION webhook.rotate_secret(profile text, keep_old interval DEFAULT '24 hours',
                                      new_secret text DEFAULT NULL)
    RETURNS text LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    id bigint := webhook._profile_id(profile);
    made text;
BEGIN
    -- as times, not intervals: an interval's year is 360 days
    IF keep_old IS NULL OR keep_old < '0'
       OR pg_catalog.now() + keep_old > pg_catalog.now() + interval '1 year' THEN
        RAISE EXCEPTION 'keep_old must be between 0 and 1 year'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'It is how long the old secret signs too; the default is 24 hours, 0 drops it at once.';
    END IF;
    IF new_secret = (SELECT p.secret FROM webhook.profile p WHERE p.profile_id = id) THEN
        RAISE EXCEPTION 'new_secret is the secret profile % has already', webhook._quoted(profile)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give a different secret, or leave new_secret NULL to have one made.';
    END IF;
    -- a rotation in progress ends: the secret it kept is dropped
    UPDATE webhook.profile p
       SET previous_secret = p.secret,
           previous_secret_until = pg_catalog.now() + keep_old,
           secret = COALESCE(new_secret, webhook._new_secret())
     WHERE p.profile_id = id
    RETURNING p.secret INTO made;
    RETURN made;
END
$$;
COMMENT ON FUNCTION webhook.rotate_secret(text, interval, text) IS
    'Gives the profile a new signing secret (made, or new_secret) and returns it; the old one signs too for keep_old.';
REVOKE ALL ON FUNCTION webhook.rotate_secret(text, interval, text) FROM PUBLIC;

-- whoever may change a profile may rotate its secret
DO $$
DECLARE
    g record;
BEGIN
    FOR g IN SELECT a.grantee, a.is_grantable
               FROM pg_catalog.pg_proc p CROSS JOIN LATERAL pg_catalog.aclexplode(p.proacl) AS a
              WHERE p.oid = 'webhook.alter_profile(text, text, text, text, text, text, jsonb, text, text, interval, int, text, boolean, int, interval[], interval, text, text[], text, text[], text)'::regprocedure
                AND a.privilege_type = 'EXECUTE' AND a.grantee <> 0 AND a.grantee <> p.proowner
    LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION webhook.rotate_secret(text, interval, text) TO %I%s',
                                  pg_catalog.pg_get_userbyid(g.grantee),
                                  CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
END $$;

/*
 * Secrets a profile no longer signs with, kept as long as the responses
 * that may echo them (webhook.retention): the views redact them for
 * readers as they redact the secrets in use.  Written by the extension
 * alone; read by nobody but its owner.
 */
CREATE TABLE webhook.retired_secret (
    profile_id bigint NOT NULL,
    secret     text NOT NULL,
    retired_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX retired_secret_profile_idx ON webhook.retired_secret (profile_id);
COMMENT ON TABLE webhook.retired_secret IS
    'Signing secrets replaced or dropped, kept for webhook.retention so that echoes of them stay redacted.';
REVOKE ALL ON webhook.retired_secret FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('webhook.retired_secret', '');

CREATE FUNCTION webhook._secret_retired() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM webhook._trigger_of(TG_RELID, 'webhook._secret_retired()', '{webhook.profile}');
    INSERT INTO webhook.retired_secret (profile_id, secret)
    SELECT NEW.profile_id, v.secret FROM (VALUES (OLD.secret), (OLD.previous_secret)) AS v(secret)
     WHERE v.secret IS NOT NULL AND v.secret IS DISTINCT FROM NEW.secret
       AND v.secret IS DISTINCT FROM NEW.previous_secret;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION webhook._secret_retired() IS 'Keeps the secrets a profile stops signing with (internal).';
REVOKE ALL ON FUNCTION webhook._secret_retired() FROM PUBLIC;
CREATE TRIGGER secret_retired AFTER UPDATE OF secret, previous_secret ON webhook.profile
    FOR EACH ROW WHEN (OLD.secret IS DISTINCT FROM NEW.secret
                       OR OLD.previous_secret IS DISTINCT FROM NEW.previous_secret)
    EXECUTE FUNCTION webhook._secret_retired();

/*
 * The worker's, at its housekeeping: drops the old secrets of rotations
 * that have ended from profiles nobody is changing (one being changed
 * drops its own, in the guard), and forgets retired secrets older than
 * the history kept ($1 seconds) or of profiles that are gone.
 */
CREATE FUNCTION webhook._tidy_secrets(retention_seconds int) RETURNS void
    LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
UPDATE webhook.profile p SET previous_secret = NULL, previous_secret_until = NULL
 WHERE p.profile_id = ANY (ARRAY(SELECT q.profile_id FROM webhook.profile q
                                  WHERE q.previous_secret_until <= pg_catalog.now()
                                  FOR UPDATE SKIP LOCKED));
DELETE FROM webhook.retired_secret r
 WHERE r.retired_at < pg_catalog.now() - pg_catalog.make_interval(secs => retention_seconds)
    OR NOT EXISTS (SELECT FROM webhook.profile p WHERE p.profile_id = r.profile_id);
$$;
COMMENT ON FUNCTION webhook._tidy_secrets(int) IS
    'Drops ended rotations'' old secrets and retired secrets past the retention (internal, the worker''s).';
REVOKE ALL ON FUNCTION webhook._tidy_secrets(int) FROM PUBLIC;

/*
 * max_rate: at most that many requests a second to the profile's receiver
 * (NULL: no limit), paced by the sender, which also pauses a profile whose
 * receiver answers 429 or 503 (for its Retry-After, else for a time that
 * doubles while it goes on).
 */
ALTER TABLE webhook.profile ADD COLUMN max_rate numeric;

CREATE FUNCTION webhook._max_rate_guard() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.max_rate IS NOT NULL AND NOT (NEW.max_rate >= 0.001 AND NEW.max_rate <= 100000) THEN
        RAISE EXCEPTION 'max_rate must be between 0.001 and 100000 requests a second'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Leave it NULL for no limit (alter_profile: pass 0 to lift a limit).';
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION webhook._max_rate_guard() IS 'Checks a profile''s max_rate (internal).';
REVOKE ALL ON FUNCTION webhook._max_rate_guard() FROM PUBLIC;
CREATE TRIGGER profile_max_rate BEFORE INSERT OR UPDATE OF max_rate ON webhook.profile
    FOR EACH ROW EXECUTE FUNCTION webhook._max_rate_guard();

/*
 * Client certificates (mutual TLS) and a private CA, per profile: PEM
 * text.  The key is a credential, kept and redacted as passwords are.
 */
ALTER TABLE webhook.profile
    ADD COLUMN client_cert text,
    ADD COLUMN client_key text,
    ADD COLUMN ca_cert text;

CREATE FUNCTION webhook._tls_guard() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    certs constant text := '^\s*(-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----\s*)+$';
BEGIN
    IF (NEW.client_cert IS NULL) <> (NEW.client_key IS NULL) THEN
        RAISE EXCEPTION 'client_cert and client_key go together'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give both (PEM), or neither; alter_profile removes them with ''''.';
    END IF;
    IF NEW.client_cert IS NOT NULL AND (length(NEW.client_cert) > 16384 OR NEW.client_cert !~ certs) THEN
        RAISE EXCEPTION 'client_cert is not a PEM certificate'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the text of a PEM file: -----BEGIN CERTIFICATE----- ... (a chain may follow, at most 16 kB).';
    END IF;
    -- not quoted back: it is a credential
    IF NEW.client_key IS NOT NULL AND (length(NEW.client_key) > 16384
           OR NEW.client_key !~ '^\s*-----BEGIN (RSA |EC )?PRIVATE KEY-----[A-Za-z0-9+/=\s]+-----END (RSA |EC )?PRIVATE KEY-----\s*$') THEN
        RAISE EXCEPTION 'client_key is not an unencrypted PEM private key'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the text of a PEM key file: -----BEGIN PRIVATE KEY----- ... (unencrypted, at most 16 kB: decrypt an encrypted one first, e.g. openssl pkey -in key.pem).';
    END IF;
    IF NEW.ca_cert IS NOT NULL AND (length(NEW.ca_cert) > 32768 OR NEW.ca_cert !~ certs) THEN
        RAISE EXCEPTION 'ca_cert is not a PEM certificate'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the text of the CA''s PEM file: -----BEGIN CERTIFICATE----- ... (several may follow, at most 32 kB).';
    END IF;
    IF (NEW.client_cert IS NOT NULL OR NEW.ca_cert IS NOT NULL) AND NEW.url !~* '^https://' THEN
        RAISE EXCEPTION 'client certificates and ca_cert need an https URL'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use https://, or remove them (alter_profile: client_cert => '''', client_key => '''', ca_cert => '''').';
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION webhook._tls_guard() IS 'Checks a profile''s client certificate, key and CA (internal).';
REVOKE ALL ON FUNCTION webhook._tls_guard() FROM PUBLIC;
-- (not of the worker's updates of a profile's counters)
CREATE TRIGGER profile_tls BEFORE INSERT OR UPDATE OF client_cert, client_key, ca_cert, url ON webhook.profile
    FOR EACH ROW EXECUTE FUNCTION webhook._tls_guard();

/*
 * create_profile and alter_profile take max_rate and the TLS options: made
 * anew, whoever could call them before still can.
 */
CREATE TEMPORARY TABLE changed_function_grants AS
SELECT p.proname::text AS function, a.grantee, a.is_grantable
  FROM pg_catalog.pg_proc p CROSS JOIN LATERAL pg_catalog.aclexplode(p.proacl) AS a
 WHERE p.oid IN ('webhook.create_profile(text, text, text[], text, text, text, text, jsonb, text, text, interval, int, text, boolean, int, interval[], interval, text[], text, text[], text)'::regprocedure,
                 'webhook.alter_profile(text, text, text, text, text, text, jsonb, text, text, interval, int, text, boolean, int, interval[], interval, text, text[], text, text[], text)'::regprocedure)
   AND a.privilege_type = 'EXECUTE';
DROP FUNCTION webhook.create_profile(text, text, text[], text, text, text, text, jsonb, text, text, interval, int, text, boolean, int, interval[], interval, text[], text, text[], text);
DROP FUNCTION webhook.alter_profile(text, text, text, text, text, text, jsonb, text, text, interval, int, text, boolean, int, interval[], interval, text, text[], text, text[], text);

CREATE FUNCTION webhook.create_profile(name text, url text, events text[],
                                       method text DEFAULT 'POST', auth text DEFAULT 'none',
                                       username text DEFAULT NULL, password text DEFAULT NULL,
                                       headers jsonb DEFAULT '{}', payload text DEFAULT 'small',
                                       batching text DEFAULT 'none',
                                       batch_wait interval DEFAULT '10 seconds',
                                       batch_max_items int DEFAULT 100,
                                       secret text DEFAULT NULL, enabled boolean DEFAULT true,
                                       max_attempts int DEFAULT 8,
                                       retry_schedule interval[] DEFAULT NULL,
                                       timeout interval DEFAULT NULL,
                                       public_headers text[] DEFAULT '{}',
                                       envelope text DEFAULT 'standard',
                                       ignore_origins text[] DEFAULT '{}', log text DEFAULT 'full',
                                       max_rate numeric DEFAULT NULL,
                                       client_cert text DEFAULT NULL, client_key text DEFAULT NULL,
                                       ca_cert text DEFAULT NULL)
    RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_id bigint;
    ev text;
BEGIN
    IF events IS NULL OR cardinality(events) = 0 THEN
        RAISE EXCEPTION 'a profile needs at least one event'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'List events of webhook.events, e.g. ARRAY[''ticket.created''].';
    END IF;
    FOREACH ev IN ARRAY events LOOP
        IF ev IS NULL OR NOT EXISTS (SELECT 1 FROM webhook.event e WHERE e.name = ev) THEN
            RAISE EXCEPTION 'event % does not exist', webhook._quoted(ev)
                USING ERRCODE = 'undefined_object',
                      HINT = 'Define it with webhook.define_event, or pick one of webhook.events.';
        END IF;
    END LOOP;
    IF (SELECT count(DISTINCT e) FROM unnest(events) AS e) <> cardinality(events) THEN
        RAISE EXCEPTION 'an event is listed more than once'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'List each event once; bind it again with webhook.add_event for other conditions.';
    END IF;
    IF enabled IS NULL THEN
        RAISE EXCEPTION 'enabled must not be NULL'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass true or false.';
    END IF;
    -- the guard trigger checks the rest, the name's uniqueness included
    INSERT INTO webhook.profile (name, url, method, auth, username, password, headers, payload,
                                 batching, batch_wait, batch_max_items, secret, enabled,
                                 disabled_reason, max_attempts, retry_schedule, timeout, public_headers,
                                 envelope, ignore_origins, log, max_rate, client_cert, client_key,
                                 ca_cert)
    VALUES (name, url, method, auth, username, password, headers, payload,
            batching, batch_wait, batch_max_items, secret, enabled,
            CASE WHEN NOT enabled THEN 'created disabled' END, max_attempts, retry_schedule, timeout,
            public_headers, envelope, ignore_origins, log, max_rate, client_cert, client_key,
            ca_cert)
    RETURNING profile_id INTO new_id;
    INSERT INTO webhook.binding (profile_id, event_id, created_by, search_path)
    SELECT new_id, e.event_id, current_user::regrole, ''
      FROM unnest(events) WITH ORDINALITY AS l(name, ord)
      JOIN webhook.event e ON e.name = l.name
     ORDER BY l.ord;
    RETURN new_id;
END
$$;
COMMENT ON FUNCTION webhook.create_profile(text, text, text[], text, text, text, text, jsonb, text, text, interval, int, text, boolean, int, interval[], interval, text[], text, text[], text, numeric, text, text, text) IS
    'Creates a webhook profile that sends the listed events to the URL.';

CREATE FUNCTION webhook.alter_profile(name text, url text DEFAULT NULL, method text DEFAULT NULL,
                                      auth text DEFAULT NULL, username text DEFAULT NULL,
                                      password text DEFAULT NULL, headers jsonb DEFAULT NULL,
                                      payload text DEFAULT NULL, batching text DEFAULT NULL,
                                      batch_wait interval DEFAULT NULL,
                                      batch_max_items int DEFAULT NULL,
                                      secret text DEFAULT NULL, enabled boolean DEFAULT NULL,
                                      max_attempts int DEFAULT NULL,
                                      retry_schedule interval[] DEFAULT NULL,
                                      timeout interval DEFAULT NULL, new_name text DEFAULT NULL,
                                      public_headers text[] DEFAULT NULL,
                                      envelope text DEFAULT NULL,
                                      ignore_origins text[] DEFAULT NULL, log text DEFAULT NULL,
                                      max_rate numeric DEFAULT NULL,
                                      client_cert text DEFAULT NULL, client_key text DEFAULT NULL,
                                      ca_cert text DEFAULT NULL)
    RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    id bigint := webhook._profile_id(name);
BEGIN
    -- the guard trigger checks the result as a whole, the new name's uniqueness included
    UPDATE webhook.profile p SET
        name = coalesce(new_name, p.name),
        url = coalesce(alter_profile.url, p.url),
        method = coalesce(alter_profile.method, p.method),
        auth = coalesce(alter_profile.auth, p.auth),
        -- changing auth replaces the credentials
        username = CASE WHEN alter_profile.auth IS NOT NULL THEN alter_profile.username
                        ELSE coalesce(alter_profile.username, p.username) END,
        password = CASE WHEN alter_profile.auth IS NOT NULL THEN alter_profile.password
                        ELSE coalesce(alter_profile.password, p.password) END,
        headers = coalesce(alter_profile.headers, p.headers),
        payload = coalesce(alter_profile.payload, p.payload),
        batching = coalesce(alter_profile.batching, p.batching),
        batch_wait = coalesce(alter_profile.batch_wait, p.batch_wait),
        batch_max_items = coalesce(alter_profile.batch_max_items, p.batch_max_items),
        secret = coalesce(alter_profile.secret, p.secret),
        max_attempts = coalesce(alter_profile.max_attempts, p.max_attempts),
        -- '{}' and '0' go back to the defaults
        retry_schedule = CASE WHEN alter_profile.retry_schedule = '{}' THEN NULL
                              ELSE coalesce(alter_profile.retry_schedule, p.retry_schedule) END,
        timeout = CASE WHEN alter_profile.timeout = '0' THEN NULL
                       ELSE coalesce(alter_profile.timeout, p.timeout) END,
        public_headers = coalesce(alter_profile.public_headers, p.public_headers),
        envelope = coalesce(alter_profile.envelope, p.envelope),
        ignore_origins = coalesce(alter_profile.ignore_origins, p.ignore_origins),
        log = coalesce(alter_profile.log, p.log),
        -- 0 lifts the limit
        max_rate = CASE WHEN alter_profile.max_rate = 0 THEN NULL
                        ELSE coalesce(alter_profile.max_rate, p.max_rate) END,
        -- '' removes
        client_cert = CASE WHEN alter_profile.client_cert = '' THEN NULL
                           ELSE coalesce(alter_profile.client_cert, p.client_cert) END,
        client_key = CASE WHEN alter_profile.client_key = '' THEN NULL
                          ELSE coalesce(alter_profile.client_key, p.client_key) END,
        ca_cert = CASE WHEN alter_profile.ca_cert = '' THEN NULL
                       ELSE coalesce(alter_profile.ca_cert, p.ca_cert) END
     WHERE p.profile_id = id;
    IF enabled THEN
        PERFORM webhook.enable_profile(coalesce(new_name, name));
    ELSIF NOT enabled THEN
        PERFORM webhook.disable_profile(coalesce(new_name, name));
    END IF;
END
$$;
COMMENT ON FUNCTION webhook.alter_profile(text, text, text, text, text, text, jsonb, text, text, interval, int, text, boolean, int, interval[], interval, text, text[], text, text[], text, numeric, text, text, text) IS
    'Changes a profile; NULL leaves an option as it is. Deliveries not yet sent go out with the new settings.';

REVOKE ALL ON FUNCTION webhook.create_profile(text, text, text[], text, text, text, text, jsonb, text, text, interval, int, text, boolean, int, interval[], interval, text[], text, text[], text, numeric, text, text, text),
                       webhook.alter_profile(text, text, text, text, text, text, jsonb, text, text, interval, int, text, boolean, int, interval[], interval, text, text[], text, text[], text, numeric, text, text, text)
    FROM PUBLIC;
DO $$
DECLARE
    g record;
BEGIN
    FOR g IN SELECT * FROM changed_function_grants LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION webhook.%I TO %s%s', g.function,
                                  CASE WHEN g.grantee = 0 THEN 'PUBLIC'
                                       ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(g.grantee)) END,
                                  CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
END $$;
DROP TABLE changed_function_grants;

-- a rotation in progress, shown with when it ends (the secrets never), and max_rate
CREATE OR REPLACE VIEW webhook.profiles AS
SELECT p.name,
       CASE WHEN pg_catalog.has_table_privilege('webhook.profile', 'SELECT') THEN p.url
            ELSE webhook._redact_url(p.url) END AS url,
       p.method, p.auth, p.username,
       CASE WHEN p.password IS NOT NULL THEN '[redacted]' END AS password,
       (SELECT COALESCE(pg_catalog.jsonb_object_agg(h.key,
                            CASE WHEN h.key ~* '(auth|token|key|secret|cookie|password|session)'
                                      OR (NOT pg_catalog.has_table_privilege('webhook.profile', 'SELECT')
                                          AND NOT pg_catalog.lower(h.key) = ANY (pg_catalog.lower(p.public_headers::text)::text[]))
                                 THEN '"[redacted]"'::jsonb ELSE h.value END), '{}')
          FROM pg_catalog.jsonb_each(p.headers) AS h) AS headers,
       p.payload, p.payload_fields, p.batching, p.batch_wait, p.batch_max_items,
       '[redacted]'::text AS secret, p.enabled, p.disabled_reason, p.max_attempts,
       p.retry_schedule, p.timeout, p.consecutive_failures,
       ARRAY(SELECT e.name FROM webhook.binding b JOIN webhook.event e ON e.event_id = b.event_id
              WHERE b.profile_id = p.profile_id ORDER BY b.binding_id) AS events,
       p.created_at, p.public_headers, p.envelope, p.guid, p.ignore_origins, p.log,
       CASE WHEN p.previous_secret_until > pg_catalog.now() THEN p.previous_secret_until END
         AS previous_secret_until,
       p.max_rate, p.client_cert,
       CASE WHEN p.client_key IS NOT NULL THEN '[redacted]' END AS client_key,
       p.ca_cert
  FROM webhook.profile p;

-- the old and the retired secrets, echoed back by a receiver, are redacted as the secret is
CREATE OR REPLACE VIEW webhook.deliveries AS
SELECT d.delivery_id, p.name AS profile, d.events, d.items,
       CASE WHEN d.status IN ('pending', 'retrying') AND NOT p.enabled THEN 'held' ELSE d.status END
         AS status,
       d.attempts, d.created_at, d.last_attempt_at,
       CASE WHEN p.enabled THEN d.next_attempt_at END AS next_attempt_at,
       d.response_status, d.duration_ms, d.error,
       -- a batch that waits shows the items it has so far
       webhook._display_jsonb(COALESCE(d.body, (SELECT pg_catalog.json_agg(i.envelope ORDER BY i.item_no)
                                                  FROM webhook.batch_item i WHERE i.delivery_id = d.delivery_id)))
         AS request_body,
       CASE WHEN pg_catalog.has_table_privilege('webhook.profile', 'SELECT') THEN d.response_body
            ELSE webhook._scrub(d.response_body, s.secrets) END AS response_body,
       d.webhook_id, d.captured_at, d.delivered_at
  FROM webhook.delivery d
  LEFT JOIN webhook.profile p ON p.profile_id = d.profile_id
  LEFT JOIN LATERAL (
       SELECT ARRAY[p.password, p.secret, pg_catalog.substr(p.secret, 7),
                    p.previous_secret, pg_catalog.substr(p.previous_secret, 7), p.client_key,
                    pg_catalog.translate(pg_catalog.encode(pg_catalog.convert_to(
                        COALESCE(p.username, '') || ':' || p.password, 'UTF8'), 'base64'), E'\n', '')]
              || ARRAY(SELECT v.secret FROM webhook.retired_secret r,
                              LATERAL (VALUES (r.secret), (pg_catalog.substr(r.secret, 7))) AS v(secret)
                        WHERE r.profile_id = p.profile_id)
              || ARRAY(SELECT h.value #>> '{}' FROM pg_catalog.jsonb_each(p.headers) AS h
                        WHERE NOT pg_catalog.lower(h.key) = ANY (pg_catalog.lower(p.public_headers::text)::text[]))
              || ARRAY(SELECT m[1] FROM pg_catalog.regexp_matches(p.url, '[?&][^=&#]*=([^&#]*)', 'g') AS m)
                AS secrets
        WHERE d.response_body IS NOT NULL AND NOT pg_catalog.has_table_privilege('webhook.profile', 'SELECT')
       ) AS s ON true;

CREATE OR REPLACE VIEW webhook.attempts AS
SELECT a.delivery_id, a.attempt, a.started_at, a.duration_ms, a.outcome, a.response_status,
       CASE WHEN s.secrets IS NULL THEN a.response_headers
            ELSE (SELECT pg_catalog.jsonb_object_agg(h.key, pg_catalog.to_jsonb(webhook._scrub(h.value, s.secrets)))
                    FROM pg_catalog.jsonb_each_text(a.response_headers) AS h) END AS response_headers,
       CASE WHEN s.secrets IS NULL THEN a.response_body
            ELSE webhook._scrub(a.response_body, s.secrets) END AS response_body,
       a.error,
       CASE WHEN s.secrets IS NULL THEN a.request_headers
            ELSE (SELECT pg_catalog.jsonb_object_agg(h.key,
                             CASE WHEN h.key = ANY (s.header_names) THEN '"[redacted]"'::jsonb ELSE h.value END)
                    FROM pg_catalog.jsonb_each(a.request_headers) AS h) END AS request_headers
  FROM webhook.attempt a
  LEFT JOIN LATERAL (
       SELECT ARRAY[p.password, p.secret, pg_catalog.substr(p.secret, 7),
                    p.previous_secret, pg_catalog.substr(p.previous_secret, 7), p.client_key,
                    pg_catalog.translate(pg_catalog.encode(pg_catalog.convert_to(
                        COALESCE(p.username, '') || ':' || p.password, 'UTF8'), 'base64'), E'\n', '')]
              || ARRAY(SELECT v.secret FROM webhook.retired_secret r,
                              LATERAL (VALUES (r.secret), (pg_catalog.substr(r.secret, 7))) AS v(secret)
                        WHERE r.profile_id = p.profile_id)
              || ARRAY(SELECT h.value #>> '{}' FROM pg_catalog.jsonb_each(p.headers) AS h
                        WHERE NOT pg_catalog.lower(h.key) = ANY (pg_catalog.lower(p.public_headers::text)::text[]))
              || ARRAY(SELECT m[1] FROM pg_catalog.regexp_matches(p.url, '[?&][^=&#]*=([^&#]*)', 'g') AS m)
                AS secrets,
              ARRAY(SELECT k FROM pg_catalog.jsonb_object_keys(p.headers) AS k
                     WHERE NOT pg_catalog.lower(k) = ANY (pg_catalog.lower(p.public_headers::text)::text[]))
                AS header_names
         FROM webhook.delivery d JOIN webhook.profile p ON p.profile_id = d.profile_id
        WHERE d.delivery_id = a.delivery_id
          AND NOT pg_catalog.has_table_privilege('webhook.profile', 'SELECT')
       ) AS s ON true;
