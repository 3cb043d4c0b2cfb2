/* webhook--0.10--0.11.sql: built-in failure events, what webhook.stats says of a profile's health */

\echo Use "ALTER EXTENSION webhook UPDATE TO '0.11'" to load this file. \quit

DO $$
BEGIN
    IF EXISTS (SELECT FROM webhook.event WHERE name LIKE 'webhook.%') THEN
        RAISE EXCEPTION 'events named webhook.* are the extension''s own from version 0.11'
            USING ERRCODE = 'duplicate_object',
                  DETAIL = 'Defined here: ' || (SELECT string_agg(name, ', ' ORDER BY name)
                                                 FROM webhook.event WHERE name LIKE 'webhook.%') || '.',
                  HINT = 'Define them again under other names, move their bindings, drop them, then update.';
    END IF;
END
$$;

/*
 * Built-in events: webhook.delivery_failed and webhook.profile_disabled are
 * inserts into these two tables, captured as any table's changes are, so a
 * binding, its conditions, payload kinds, envelopes, batching, signing and
 * retries apply to them as to any event.  A row lives only as long as the
 * statement that captures it: it is deleted in the same transaction.
 */
CREATE TABLE webhook.failed_delivery (
    delivery_id     bigint NOT NULL,
    profile         text NOT NULL,
    webhook_id      text NOT NULL,
    events          text[] NOT NULL,
    attempts        int NOT NULL,
    response_status int,
    error           text,
    failed_at       timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE webhook.failed_delivery IS
    'What webhook.delivery_failed carries: a delivery whose attempts are exhausted (or that a 410 ended). Rows are captured and deleted as they are written.';
REVOKE ALL ON webhook.failed_delivery FROM PUBLIC;

CREATE TABLE webhook.disabled_profile (
    profile_id           bigint NOT NULL,
    profile              text NOT NULL,
    reason               text,
    consecutive_failures int NOT NULL,
    last_error           text,
    last_error_at        timestamptz,
    disabled_at          timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE webhook.disabled_profile IS
    'What webhook.profile_disabled carries: a profile disabled by a 410, a run of failures or by hand. Rows are captured and deleted as they are written.';
REVOKE ALL ON webhook.disabled_profile FROM PUBLIC;

/*
 * Their rows are written by the extension alone (the worker, and the
 * profile's trigger as the extension's owner): a row of one's own would be
 * a forged alert, signed as the others are.
 */
CREATE FUNCTION webhook._builtin_row_guard() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user) THEN
        RAISE EXCEPTION 'permission denied for table %', TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'The rows of the built-in events are written by the extension only.',
                  HINT = 'Bind webhook.delivery_failed or webhook.profile_disabled to a profile instead.';
    END IF;
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION webhook._builtin_row_guard() FROM PUBLIC;
CREATE TRIGGER builtin_row_guard BEFORE INSERT OR UPDATE ON webhook.failed_delivery
    FOR EACH ROW WHEN (NOT webhook._in_worker()) EXECUTE FUNCTION webhook._builtin_row_guard();
CREATE TRIGGER builtin_row_guard BEFORE INSERT OR UPDATE ON webhook.disabled_profile
    FOR EACH ROW EXECUTE FUNCTION webhook._builtin_row_guard();

/*
 * A trigger function that runs as the extension's owner serves the tables
 * it was written for only: attached by a role to a table of its own (which
 * EXECUTE on it lets one do), the values it reads of NEW and OLD could run
 * that role's casts and operators with the owner's rights.  The first
 * statement of each, before it touches a value of the row.
 */
CREATE FUNCTION webhook._trigger_of(relid oid, trigger_function text, tables regclass[]) RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT relid = ANY (tables::oid[]) THEN
        RAISE EXCEPTION '% is a trigger of the webhook extension''s own tables', trigger_function
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'It cannot be attached to another table.';
    END IF;
END
$$;
REVOKE ALL ON FUNCTION webhook._trigger_of(oid, text, regclass[]) FROM PUBLIC;

CREATE OR REPLACE FUNCTION webhook._binding_refs() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM webhook._trigger_of(TG_RELID, 'webhook._binding_refs()', '{webhook.binding}');
    PERFORM FROM webhook.profile p WHERE p.profile_id = NEW.profile_id FOR KEY SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'profile % does not exist', NEW.profile_id
            USING ERRCODE = 'foreign_key_violation', HINT = 'See webhook.profiles.';
    END IF;
    PERFORM FROM webhook.event e WHERE e.event_id = NEW.event_id FOR KEY SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'event % does not exist', NEW.event_id
            USING ERRCODE = 'foreign_key_violation', HINT = 'See webhook.events.';
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION webhook._catalog_changed() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    tbl regclass;
BEGIN
    PERFORM webhook._trigger_of(TG_RELID, 'webhook._catalog_changed()', '{webhook.event,webhook.binding}');
    FOR tbl IN SELECT DISTINCT e.table_oid FROM webhook.event e
                WHERE e.event_id IN (NEW.event_id, OLD.event_id) LOOP
        PERFORM webhook._sync_triggers(tbl);
    END LOOP;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION webhook._event_deleted() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM webhook._trigger_of(TG_RELID, 'webhook._event_deleted()', '{webhook.event}');
    IF EXISTS (SELECT FROM webhook.binding b WHERE b.event_id = OLD.event_id) THEN
        RAISE EXCEPTION 'event % is still bound to a profile', quote_literal(OLD.name)
            USING ERRCODE = 'foreign_key_violation',
                  HINT = 'Remove it from its profiles first, or use webhook.drop_event(..., cascade => true).';
    END IF;
    RETURN OLD;
END
$$;

CREATE OR REPLACE FUNCTION webhook._keep_ids() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    id bigint;   -- the table's id column
BEGIN
    PERFORM webhook._trigger_of(TG_RELID, 'webhook._keep_ids()', '{webhook.event,webhook.profile}');
    id := (pg_catalog.to_jsonb(NEW) ->> TG_ARGV[0])::bigint;
    IF TG_OP = 'UPDATE' AND id IS DISTINCT FROM (pg_catalog.to_jsonb(OLD) ->> TG_ARGV[0])::bigint THEN
        RAISE EXCEPTION 'the id of a webhook % cannot change', TG_TABLE_NAME
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Make a new one, and move the bindings with webhook.add_event and webhook.remove_event.';
    END IF;
    IF TG_OP = 'INSERT' AND EXISTS (
           SELECT FROM webhook.binding b
            WHERE CASE TG_ARGV[0] WHEN 'event_id' THEN b.event_id ELSE b.profile_id END = id) THEN
        RAISE EXCEPTION 'bindings still name webhook % %', TG_TABLE_NAME, id
            USING ERRCODE = 'unique_violation', HINT = 'Let the id be given by its sequence.';
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION webhook._profile_deleted() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM webhook._trigger_of(TG_RELID, 'webhook._profile_deleted()', '{webhook.profile}');
    DELETE FROM webhook.binding b WHERE b.profile_id = OLD.profile_id;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION webhook._deadline_dropped() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM webhook._trigger_of(TG_RELID, 'webhook._deadline_dropped()', '{webhook.event}');
    DELETE FROM webhook.deadline d WHERE d.event_id = OLD.event_id;
    PERFORM webhook._sync_triggers(OLD.table_oid);
    RETURN NULL;
END
$$;

-- the built-in events keep their ids everywhere (install, upgrade, restore):
-- a restored binding names them by id, and only events of users are dumped
ALTER TABLE webhook.event DISABLE TRIGGER USER;
INSERT INTO webhook.event (event_id, name, table_oid, operation, title, object, key_columns, created_by,
                           search_path, message)
VALUES (-1, 'webhook.delivery_failed', 'webhook.failed_delivery', 'insert', 'Delivery Failed', 'failure',
        '{delivery_id}', current_user::regrole, 'pg_catalog, pg_temp',
        'The delivery {delivery_id} to profile {profile} failed.'),
       (-2, 'webhook.profile_disabled', 'webhook.disabled_profile', 'insert', 'Profile Disabled', 'failure',
        '{profile_id}', current_user::regrole, 'pg_catalog, pg_temp',
        'The profile {profile} was disabled: {reason}.');
ALTER TABLE webhook.event ENABLE TRIGGER USER;
SELECT pg_catalog.pg_extension_config_dump('webhook.event', 'WHERE event_id > 0');

-- fires before event_guard and event_deleted (triggers fire by name)
CREATE FUNCTION webhook._builtin_event_guard() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP <> 'INSERT' AND OLD.event_id < 0 THEN
        RAISE EXCEPTION 'event % is built in', quote_literal(OLD.name)
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Bind it with webhook.add_event, with conditions to choose what it sends.';
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.name LIKE 'webhook.%' THEN
        RAISE EXCEPTION 'event names beginning with "webhook." are the extension''s own'
            USING ERRCODE = 'reserved_name', HINT = 'Choose another name, e.g. ticket.escalated.';
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.event_id < 0 THEN
        RAISE EXCEPTION 'event ids below 0 are the extension''s own'
            USING ERRCODE = 'reserved_name', HINT = 'Let the id be given by its sequence.';
    END IF;
    RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
END
$$;
REVOKE ALL ON FUNCTION webhook._builtin_event_guard() FROM PUBLIC;
CREATE TRIGGER builtin_event_guard BEFORE INSERT OR UPDATE OR DELETE ON webhook.event
    FOR EACH ROW WHEN (NOT webhook._restoring()) EXECUTE FUNCTION webhook._builtin_event_guard();

/*
 * The capture trigger of a built-in event's table is made by _sync_triggers
 * when the event is bound, as any table's; a restored database has the
 * bindings but not that trigger (a table of the extension is not dumped),
 * so it is made again here, when the first failure comes.
 */
CREATE FUNCTION webhook._builtin_capture(builtin_event bigint) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    tbl regclass := (SELECT e.table_oid FROM webhook.event e WHERE e.event_id = builtin_event AND e.event_id < 0);
BEGIN
    IF tbl IS NULL OR NOT EXISTS (SELECT FROM webhook.binding b WHERE b.event_id = builtin_event) THEN
        RETURN false;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = tbl AND tgname = 'webhook_capture_insert') THEN
        PERFORM webhook._sync_triggers(tbl);
    END IF;
    RETURN true;
END
$$;
REVOKE ALL ON FUNCTION webhook._builtin_capture(bigint) FROM PUBLIC;

/*
 * The worker's record step: deliveries that have just failed for good.  A
 * delivery of failure events alone raises none: an alert about an alert
 * could go round for ever.
 */
CREATE FUNCTION webhook._delivery_failed(delivery_ids bigint[]) RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT webhook._builtin_capture(-1) THEN
        RETURN;
    END IF;
    INSERT INTO webhook.failed_delivery (delivery_id, profile, webhook_id, events, attempts,
                                         response_status, error)
    SELECT d.delivery_id, p.name, d.webhook_id, d.events, d.attempts, d.response_status, d.error
      FROM webhook.delivery d JOIN webhook.profile p ON p.profile_id = d.profile_id
     WHERE d.delivery_id = ANY (delivery_ids) AND d.status = 'failed'
       AND NOT d.events <@ ARRAY['webhook.delivery_failed', 'webhook.profile_disabled']
     ORDER BY d.delivery_id;
    DELETE FROM webhook.failed_delivery WHERE delivery_id = ANY (delivery_ids);
END
$$;
REVOKE ALL ON FUNCTION webhook._delivery_failed(bigint[]) FROM PUBLIC;

/*
 * A profile stopped, however it was (a 410, a run of failures, by hand, an
 * UPDATE): the built-in event, and NOTIFY webhook_failures, which any role
 * may LISTEN to: its payload names the profile and why, nothing of its
 * settings.
 */
CREATE FUNCTION webhook._profile_disabled() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM webhook._trigger_of(TG_RELID, 'webhook._profile_disabled()', '{webhook.profile}');
    -- (a NOTIFY payload is at most 8000 bytes: a long reason is cut)
    PERFORM pg_catalog.pg_notify('webhook_failures',
                                 pg_catalog.json_build_object('event', 'profile_disabled', 'profile', NEW.name,
                                                              'reason', left(NEW.disabled_reason, 1000))::text);
    -- what goes wrong in raising the event costs the alert, never the disabling
    BEGIN
        IF webhook._builtin_capture(-2) THEN
            INSERT INTO webhook.disabled_profile (profile_id, profile, reason, consecutive_failures,
                                                  last_error, last_error_at)
            VALUES (NEW.profile_id, NEW.name, NEW.disabled_reason, NEW.consecutive_failures,
                    NEW.last_error, NEW.last_error_at);
            DELETE FROM webhook.disabled_profile WHERE profile_id = NEW.profile_id;
        END IF;
    EXCEPTION
        WHEN lock_not_available OR deadlock_detected OR query_canceled THEN
            RAISE;
        WHEN OTHERS THEN
            RAISE WARNING 'webhook.profile_disabled could not be raised for profile %: %', NEW.name, SQLERRM;
    END;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION webhook._profile_disabled() FROM PUBLIC;

ALTER TABLE webhook.profile
    ADD COLUMN last_error text,            -- of its latest attempt that did not succeed
    ADD COLUMN last_error_at timestamptz;

CREATE TRIGGER profile_disabled AFTER UPDATE OF enabled ON webhook.profile
    FOR EACH ROW WHEN (OLD.enabled AND NOT NEW.enabled AND NOT webhook._restoring())
    EXECUTE FUNCTION webhook._profile_disabled();

-- Stop a profile: what waits for it is held, never dropped (profile_disabled says so).
CREATE OR REPLACE FUNCTION webhook._disable(id bigint, reason text) RETURNS void
    LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    UPDATE webhook.profile SET enabled = false, disabled_reason = reason WHERE profile_id = id;
$$;

/*
 * What the recorded attempts mean for their profiles: a delivered delivery
 * ends a run of failures, a failed one (attempts exhausted) lengthens it; a
 * run of disable_after (when > 0), or a 410 Gone, disables the profile.  An
 * attempt that did not succeed is the profile's last error: its error, or
 * the status the receiver answered.
 */
DROP FUNCTION webhook._note_outcomes(bigint[], text[], int[], int);
CREATE FUNCTION webhook._note_outcomes(profile_ids bigint[], statuses text[], response_statuses int[],
                                       errors text[], disable_after int)
    RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
    run int;
BEGIN
    FOR r IN SELECT u.profile_id, bool_or(u.status = 'delivered') AS ok,
                    count(*) FILTER (WHERE u.status = 'failed') AS failed,
                    bool_or(u.response_status = 410) AS gone,
                    (array_agg(COALESCE(u.error, 'HTTP ' || u.response_status) ORDER BY u.n DESC)
                       FILTER (WHERE u.status <> 'delivered'))[1] AS last_error
               FROM unnest(profile_ids, statuses, response_statuses, errors)
                    WITH ORDINALITY AS u(profile_id, status, response_status, error, n)
              GROUP BY u.profile_id LOOP
        -- a success on a profile without a run of failures changes nothing
        UPDATE webhook.profile p
           SET consecutive_failures = CASE WHEN r.ok THEN 0 ELSE p.consecutive_failures END + r.failed,
               last_error = COALESCE(r.last_error, p.last_error),
               last_error_at = CASE WHEN r.last_error IS NOT NULL THEN pg_catalog.now() ELSE p.last_error_at END
         WHERE p.profile_id = r.profile_id AND p.enabled
           AND (r.failed > 0 OR r.gone OR p.consecutive_failures > 0)
        RETURNING p.consecutive_failures INTO run;
        IF NOT FOUND THEN
            -- a retry's error alone: noted unless an operator's transaction
            -- holds the profile, which the worker does not wait for
            UPDATE webhook.profile p SET last_error = r.last_error, last_error_at = pg_catalog.now()
             WHERE r.last_error IS NOT NULL
               AND p.profile_id = (SELECT q.profile_id FROM webhook.profile q
                                    WHERE q.profile_id = r.profile_id AND q.enabled FOR UPDATE SKIP LOCKED);
            CONTINUE;
        END IF;
        IF r.gone THEN
            PERFORM webhook._disable(r.profile_id, 'the receiver answered 410 Gone');
        ELSIF disable_after > 0 AND run >= disable_after THEN
            PERFORM webhook._disable(r.profile_id, format('%s deliveries in a row failed', run));
        END IF;
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION webhook._note_outcomes(bigint[], text[], int[], text[], int) FROM PUBLIC;

/*
 * How long a delivery took to reach its receiver: from when it could first
 * be sent to the first response (the worker writes it when it records the
 * first attempt).  It could first be sent when its change was captured; a
 * batch when it closed (full, or its wait over); a redelivery when it was
 * asked for (ready_at).  Retries come later and are not in it.
 */
ALTER TABLE webhook.delivery
    ADD COLUMN ready_at timestamptz,
    ADD COLUMN first_response_ms double precision;

CREATE OR REPLACE FUNCTION webhook._resend(source webhook.delivery) RETURNS bigint
    LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO webhook.delivery (profile_id, webhook_id, events, items, body, status,
                                  next_attempt_at, captured_at, ready_at)
    VALUES (source.profile_id, source.webhook_id, source.events, source.items, source.body,
            'pending', pg_catalog.now(), source.captured_at, pg_catalog.now())
    RETURNING delivery_id
$$;

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
             q.oldest) AS oldest_pending_at
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
    'One row per profile: what it holds and sent, how fast (p50_ms, p95_ms: from when a delivery could first be sent to its first response, deliveries made in the last hour), and how it is doing (last_success_at, last_error, oldest_pending_at).';
