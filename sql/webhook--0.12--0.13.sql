/* webhook--0.12--0.13.sql: a profile may send each object's changes one at a time, in commit order */

\echo Use "ALTER EXTENSION webhook UPDATE TO '0.13'" to load this file. \quit

/*
 * ordering 'per_object': a profile's deliveries of one object (a ticket,
 * and its actions) go out one at a time, in the order of their commits;
 * the next one waits until the one before got a 2xx or failed.
 */
ALTER TABLE webhook.profile ADD COLUMN ordering text NOT NULL DEFAULT 'none';
COMMENT ON COLUMN webhook.profile.ordering IS
    'none, or per_object: each object''s deliveries are sent one at a time, in commit order.';

/*
 * A delivery's place in its profile's order: the object it is about
 * ("ticket:42"), or '' for a batch, which goes after every delivery of the
 * profile made before it, and before every one made after it.  NULL: the
 * delivery is in no order.  A delivery whose turn has not come waits: it
 * is pending with next_attempt_at 'infinity', which no claim takes, and is
 * made due when the one before it finishes (see queue.c).
 */
ALTER TABLE webhook.delivery ADD COLUMN order_key text;
COMMENT ON COLUMN webhook.delivery.order_key IS
    'The object whose deliveries this one is sent in order with ('''': a batch, in order with all); NULL: in no order.';
-- the unfinished deliveries of each object in order, and of each profile
CREATE INDEX delivery_order_idx ON webhook.delivery (profile_id, order_key, delivery_id)
    WHERE order_key IS NOT NULL AND next_attempt_at IS NOT NULL;
CREATE INDEX delivery_ordered_idx ON webhook.delivery (profile_id, delivery_id)
    WHERE order_key IS NOT NULL AND next_attempt_at IS NOT NULL;

CREATE FUNCTION webhook._ordering_guard() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    NEW.ordering := lower(NEW.ordering);
    IF NEW.ordering IS NULL OR NEW.ordering NOT IN ('none', 'per_object') THEN
        RAISE EXCEPTION 'invalid ordering %', webhook._quoted(NEW.ordering)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'ordering is none, or per_object (each object''s changes one at a time, in commit order).';
    END IF;
    IF NEW.ordering = 'per_object' AND NEW.batching IN ('same_event', 'same_event_type') THEN
        RAISE EXCEPTION 'ordering per_object does not go with batching %', NEW.batching
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'Batches of separate events fill and go out independently, so one object''s changes in two of them could arrive out of order.',
                  HINT = 'Use batching => ''any_event'' (each object''s changes in order inside and across batches), or ''none''.';
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION webhook._ordering_guard() IS 'Checks a profile''s ordering and its batching (internal).';
REVOKE ALL ON FUNCTION webhook._ordering_guard() FROM PUBLIC;
-- after profile_guard, which writes batching in lower case
CREATE TRIGGER profile_ordering BEFORE INSERT OR UPDATE OF ordering, batching ON webhook.profile
    FOR EACH ROW EXECUTE FUNCTION webhook._ordering_guard();

/*
 * A profile that stops ordering sends what waited at once, in no order.
 * A delivery in flight is left to the worker, which records it (and is
 * never made to wait for this transaction).
 */
CREATE FUNCTION webhook._ordering_changed() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE webhook.delivery d
       SET order_key = NULL,
           next_attempt_at = CASE WHEN d.next_attempt_at = 'infinity' THEN pg_catalog.now()
                                  ELSE d.next_attempt_at END
     WHERE d.profile_id = NEW.profile_id AND d.order_key IS NOT NULL
       AND d.next_attempt_at IS NOT NULL AND d.status <> 'sending';
    PERFORM webhook._wake();
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION webhook._ordering_changed() IS
    'Sends at once what waited for its turn, when a profile stops ordering (internal).';
REVOKE ALL ON FUNCTION webhook._ordering_changed() FROM PUBLIC;
CREATE TRIGGER ordering_changed AFTER UPDATE OF ordering ON webhook.profile
    FOR EACH ROW WHEN (OLD.ordering = 'per_object' AND NEW.ordering = 'none')
    EXECUTE FUNCTION webhook._ordering_changed();

/*
 * Replay resends in the order the deliveries were made, each in its
 * object's order when the profile orders now: after what is unfinished
 * of its object.  (Redeliver sends at once, in no order: see README.)
 */
CREATE FUNCTION webhook._resend_in_order(source webhook.delivery) RETURNS bigint
    LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO webhook.delivery (profile_id, webhook_id, events, items, body, status,
                                  next_attempt_at, captured_at, ready_at, order_key)
    SELECT source.profile_id, source.webhook_id, source.events, source.items, source.body,
           'pending',
           -- as the worker's ORDER_BLOCKED (queue.h): all unfinished ones come before
           CASE WHEN k.order_key IS NOT NULL
                     AND (EXISTS (SELECT FROM webhook.delivery e
                                   WHERE e.profile_id = source.profile_id AND e.order_key IS NOT NULL
                                     AND e.order_key = ANY (ARRAY[k.order_key, ''])
                                     AND e.next_attempt_at IS NOT NULL)
                          OR (k.order_key = '' AND EXISTS (SELECT FROM webhook.delivery e
                                   WHERE e.profile_id = source.profile_id AND e.order_key IS NOT NULL
                                     AND e.next_attempt_at IS NOT NULL)))
                THEN 'infinity' ELSE pg_catalog.now() END,
           source.captured_at, pg_catalog.now(), k.order_key
      FROM (SELECT CASE WHEN p.ordering = 'per_object' THEN source.order_key END AS order_key
              FROM webhook.profile p WHERE p.profile_id = source.profile_id) AS k
    RETURNING delivery_id
$$;
COMMENT ON FUNCTION webhook._resend_in_order(webhook.delivery) IS
    'A new delivery of what a delivery sent, in its object''s order when its profile orders (internal).';
REVOKE ALL ON FUNCTION webhook._resend_in_order(webhook.delivery) FROM PUBLIC;

CREATE OR REPLACE FUNCTION webhook.replay(profile text, since timestamptz, status text DEFAULT 'failed')
    RETURNS int LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    id bigint := webhook._profile_id(profile);
    n int;
    unkept bigint;
BEGIN
    IF since IS NULL THEN
        RAISE EXCEPTION 'since must not be NULL'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'For example: now() - interval ''1 day''.';
    END IF;
    IF status IS NULL OR status NOT IN ('failed', 'delivered', 'retrying') THEN
        RAISE EXCEPTION 'invalid status %', webhook._quoted(status)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Replay failed, delivered or retrying deliveries.';
    END IF;
    -- one statement, one snapshot: a delivery finished meanwhile is either
    -- seen with its body gone, or not at all; the error undoes the resends.
    -- Resent oldest first, so that each object's come in their order.
    SELECT count(*) FILTER (WHERE x.unkept), count(webhook._resend_in_order(x.d)) FILTER (WHERE NOT x.unkept)
      INTO unkept, n
      FROM (SELECT d,
                   -- (a body kept is not read for this: it is larger)
                   CASE WHEN pg_catalog.pg_column_size(d.body) <= 8 THEN d.body::text = 'null'
                        ELSE false END AS unkept
              FROM webhook.delivery d
             WHERE d.profile_id = id AND d.status = replay.status AND d.created_at >= since
             ORDER BY d.delivery_id) AS x;
    IF unkept > 0 THEN
        RAISE EXCEPTION '% of these deliveries cannot be sent again: their bodies were not kept', unkept
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'They were made while the profile logged light: a delivery keeps no body once it is delivered or failed.',
                  HINT = 'Replay from a later time, or use webhook.alter_profile(..., log => ''full'') for deliveries to come.';
    END IF;
    IF n > 0 THEN
        PERFORM webhook._wake();
    END IF;
    RETURN n;
END
$$;

/*
 * create_profile and alter_profile take ordering: made anew, whoever could
 * call them before still can (rotate_secret's grants follow alter_profile's
 * once, in 0.12, and are kept as they are).
 */
CREATE TEMPORARY TABLE changed_function_grants AS
SELECT p.proname::text AS function, a.grantee, a.is_grantable
  FROM pg_catalog.pg_proc p CROSS JOIN LATERAL pg_catalog.aclexplode(p.proacl) AS a
 WHERE p.oid IN ('webhook.create_profile(text, text, text[], text, text, text, text, jsonb, text, text, interval, int, text, boolean, int, interval[], interval, text[], text, text[], text, numeric, text, text, text)'::regprocedure,
                 'webhook.alter_profile(text, text, text, text, text, text, jsonb, text, text, interval, int, text, boolean, int, interval[], interval, text, text[], text, text[], text, numeric, text, text, text)'::regprocedure)
   AND a.privilege_type = 'EXECUTE';
DROP FUNCTION webhook.create_profile(text, text, text[], text, text, text, text, jsonb, text, text, interval, int, text, boolean, int, interval[], interval, text[], text, text[], text, numeric, text, text, text);
DROP FUNCTION webhook.alter_profile(text, text, text, text, text, text, jsonb, text, text, interval, int, text, boolean, int, interval[], interval, text, text[], text, text[], text, numeric, text, text, text);

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
                                       ca_cert text DEFAULT NULL, ordering text DEFAULT 'none')
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
    -- the guard triggers check the rest, the name's uniqueness included
    INSERT INTO webhook.profile (name, url, method, auth, username, password, headers, payload,
                                 batching, batch_wait, batch_max_items, secret, enabled,
                                 disabled_reason, max_attempts, retry_schedule, timeout, public_headers,
                                 envelope, ignore_origins, log, max_rate, client_cert, client_key,
                                 ca_cert, ordering)
    VALUES (name, url, method, auth, username, password, headers, payload,
            batching, batch_wait, batch_max_items, secret, enabled,
            CASE WHEN NOT enabled THEN 'created disabled' END, max_attempts, retry_schedule, timeout,
            public_headers, envelope, ignore_origins, log, max_rate, client_cert, client_key,
            ca_cert, ordering)
    RETURNING profile_id INTO new_id;
    INSERT INTO webhook.binding (profile_id, event_id, created_by, search_path)
    SELECT new_id, e.event_id, current_user::regrole, ''
      FROM unnest(events) WITH ORDINALITY AS l(name, ord)
      JOIN webhook.event e ON e.name = l.name
     ORDER BY l.ord;
    RETURN new_id;
END
$$;
COMMENT ON FUNCTION webhook.create_profile(text, text, text[], text, text, text, text, jsonb, text, text, interval, int, text, boolean, int, interval[], interval, text[], text, text[], text, numeric, text, text, text, text) IS
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
                                      ca_cert text DEFAULT NULL, ordering text DEFAULT NULL)
    RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    id bigint := webhook._profile_id(name);
BEGIN
    -- the guard triggers check the result as a whole, the new name's uniqueness included
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
                       ELSE coalesce(alter_profile.ca_cert, p.ca_cert) END,
        ordering = coalesce(alter_profile.ordering, p.ordering)
     WHERE p.profile_id = id;
    IF enabled THEN
        PERFORM webhook.enable_profile(coalesce(new_name, name));
    ELSIF NOT enabled THEN
        PERFORM webhook.disable_profile(coalesce(new_name, name));
    END IF;
END
$$;
COMMENT ON FUNCTION webhook.alter_profile(text, text, text, text, text, text, jsonb, text, text, interval, int, text, boolean, int, interval[], interval, text, text[], text, text[], text, numeric, text, text, text, text) IS
    'Changes a profile; NULL leaves an option as it is. Deliveries not yet sent go out with the new settings.';

REVOKE ALL ON FUNCTION webhook.create_profile(text, text, text[], text, text, text, text, jsonb, text, text, interval, int, text, boolean, int, interval[], interval, text[], text, text[], text, numeric, text, text, text, text),
                       webhook.alter_profile(text, text, text, text, text, text, jsonb, text, text, interval, int, text, boolean, int, interval[], interval, text, text[], text, text[], text, numeric, text, text, text, text)
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

-- ordering, last
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
       p.ca_cert, p.ordering
  FROM webhook.profile p;

/*
 * A delivery whose turn has not come is waiting (held while its profile is
 * disabled), with no due time; order_key, last, says whose order it is in.
 */
CREATE OR REPLACE VIEW webhook.deliveries AS
SELECT d.delivery_id, p.name AS profile, d.events, d.items,
       CASE WHEN d.status IN ('pending', 'retrying') AND NOT p.enabled THEN 'held'
            WHEN d.next_attempt_at = 'infinity' THEN 'waiting' ELSE d.status END
         AS status,
       d.attempts, d.created_at, d.last_attempt_at,
       CASE WHEN p.enabled AND d.next_attempt_at < 'infinity' THEN d.next_attempt_at END AS next_attempt_at,
       d.response_status, d.duration_ms, d.error,
       -- a batch that waits shows the items it has so far
       webhook._display_jsonb(COALESCE(d.body, (SELECT pg_catalog.json_agg(i.envelope ORDER BY i.item_no)
                                                  FROM webhook.batch_item i WHERE i.delivery_id = d.delivery_id)))
         AS request_body,
       CASE WHEN pg_catalog.has_table_privilege('webhook.profile', 'SELECT') THEN d.response_body
            ELSE webhook._scrub(d.response_body, s.secrets) END AS response_body,
       d.webhook_id, d.captured_at, d.delivered_at, d.order_key
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

-- waiting, last: deliveries whose turn in their object's order has not come
CREATE OR REPLACE VIEW webhook.stats AS
SELECT p.name AS profile, p.enabled,
       (COALESCE(sum(d.items) FILTER (WHERE d.status IN ('pending', 'retrying')), 0) + q.changes)::bigint AS queued,
       count(*) FILTER (WHERE d.status IN ('pending', 'retrying') AND NOT p.enabled)::bigint AS held,
       count(*) FILTER (WHERE d.status = 'sending')::bigint AS in_flight,
       count(*) FILTER (WHERE d.status = 'delivered')::bigint AS delivered,
       count(*) FILTER (WHERE d.status = 'retrying' AND p.enabled)::bigint AS retrying,
       count(*) FILTER (WHERE d.status = 'failed')::bigint AS failed,
       round((pg_catalog.percentile_cont(0.5) WITHIN GROUP (ORDER BY d.first_response_ms)
              FILTER (WHERE d.created_at > pg_catalog.now() - interval '1 hour'))::numeric, 1) AS p50_ms,
       round((pg_catalog.percentile_cont(0.95) WITHIN GROUP (ORDER BY d.first_response_ms)
              FILTER (WHERE d.created_at > pg_catalog.now() - interval '1 hour'))::numeric, 1) AS p95_ms,
       p.consecutive_failures, p.disabled_reason,
       max(d.delivered_at) AS last_success_at,
       p.last_error,
       LEAST(min(d.captured_at) FILTER (WHERE d.status IN ('pending', 'retrying', 'sending')),
             q.oldest) AS oldest_pending_at,
       count(*) FILTER (WHERE d.next_attempt_at = 'infinity' AND p.enabled)::bigint AS waiting
  FROM webhook.profile p
  -- its changes not yet made into deliveries, read once
  CROSS JOIN LATERAL (SELECT COALESCE(sum(o.row_count * pg_catalog.cardinality(o.bindings)), 0) AS changes,
                             min(o.captured_at) AS oldest
                        FROM webhook.occurrence o
                       WHERE o.bindings && ARRAY(SELECT b.binding_id FROM webhook.binding b
                                                  WHERE b.profile_id = p.profile_id)) AS q
  LEFT JOIN webhook.delivery d ON d.profile_id = p.profile_id
 GROUP BY p.profile_id, q.changes, q.oldest;
COMMENT ON VIEW webhook.stats IS
    'One row per profile: what it holds and sent, how fast (p50_ms, p95_ms: from when a delivery could first be sent to its first response, deliveries made in the last hour), and how it is doing (last_success_at, last_error, oldest_pending_at, waiting).';
