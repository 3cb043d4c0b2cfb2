-- Operating profiles: alter, disable (held), enable, send a test, redeliver,
-- replay, drop; and their errors.  The profile is disabled while its
-- deliveries are inspected, so that the worker leaves them alone.
\set SHOW_CONTEXT never

SELECT webhook.create_profile('ops2', 'http://127.0.0.1:9/ops2', ARRAY['ticket.created']) > 0 AS created;
SELECT webhook.disable_profile('ops2', 'maintenance of the receiver');
SELECT name, enabled, disabled_reason FROM webhook.profiles WHERE name = 'ops2';
-- changes go on being captured, and their deliveries are held
INSERT INTO tickets (summary, status_id) VALUES ('while disabled', 1);
DO $$
BEGIN
    FOR i IN 1..200 LOOP
        EXIT WHEN EXISTS (SELECT 1 FROM webhook.deliveries WHERE profile = 'ops2');
        PERFORM pg_sleep(0.05);
    END LOOP;
END $$;
SELECT count(*) AS held FROM webhook.deliveries WHERE profile = 'ops2' AND status = 'held';

-- alter_profile: NULL leaves an option as it is
SELECT webhook.alter_profile('ops2', url => 'https://hooks.example.com/v2', method => 'put',
                             retry_schedule => '{1 minute}', timeout => '3 seconds');
SELECT name, url, method, auth, retry_schedule, timeout FROM webhook.profiles WHERE name = 'ops2';
SELECT webhook.alter_profile('ops2', auth => 'bearer', password => 'tok');
SELECT auth, username, password FROM webhook.profiles WHERE name = 'ops2';
SELECT webhook.alter_profile('ops2', auth => 'none', retry_schedule => '{}', timeout => '0');
SELECT auth, password, retry_schedule, timeout FROM webhook.profiles WHERE name = 'ops2';
SELECT webhook.alter_profile('ops2', new_name => 'ops3');
SELECT webhook.alter_profile('ops3', new_name => 'ops2');
SELECT webhook.alter_profile('nope', url => 'http://127.0.0.1:9/');
SELECT webhook.alter_profile('ops2', url => 'ftp://x/');
SELECT webhook.alter_profile('ops2', auth => 'basic');
SELECT webhook.alter_profile('ops2', new_name => 'ops');
SELECT url, method FROM webhook.profiles WHERE name = 'ops2';

-- redeliver and replay make new deliveries with the same body and webhook-id
SELECT webhook.redeliver(delivery_id) > 0 AS redelivered FROM webhook.deliveries
 WHERE profile = 'ops2' AND status = 'held';
SELECT count(*) AS deliveries, count(DISTINCT webhook_id) AS webhook_ids,
       count(DISTINCT request_body::text) AS bodies, bool_and(status = 'held') AS all_held
  FROM webhook.deliveries WHERE profile = 'ops2';
SELECT webhook.redeliver(-1);
SELECT webhook.redeliver(NULL);
UPDATE webhook.delivery SET status = 'failed' WHERE delivery_id =
       (SELECT min(delivery_id) FROM webhook.deliveries WHERE profile = 'ops2');
SELECT webhook.replay('ops2', now() - interval '1 hour') AS replayed;
SELECT webhook.replay('ops2', now() + interval '1 hour') AS replayed_from_the_future;
SELECT webhook.replay('ops2', NULL);
SELECT webhook.replay('ops2', now(), 'held');
SELECT webhook.replay('nope', now());
SELECT status, count(*) FROM webhook.deliveries WHERE profile = 'ops2' GROUP BY status ORDER BY status;

-- a test send needs an enabled profile
SELECT webhook.send_test('ops2');
SELECT webhook.send_test('nope');

-- enabling sends what was held
BEGIN;
SELECT webhook.enable_profile('ops2');
SELECT status, count(*) FROM webhook.deliveries WHERE profile = 'ops2' GROUP BY status ORDER BY status;
SELECT webhook.send_test('ops2') > 0 AS test_queued;
SELECT events, items, request_body->>'event' AS event FROM webhook.deliveries
 WHERE profile = 'ops2' AND events = '{ping}';
ROLLBACK;
SELECT webhook.enable_profile('nope');
SELECT webhook.disable_profile('nope');

-- drop_profile removes the profile, its bindings and its deliveries
SELECT webhook.drop_profile('ops2');
SELECT count(*) AS profiles FROM webhook.profiles WHERE name = 'ops2';
SELECT count(*) AS deliveries FROM webhook.deliveries WHERE profile = 'ops2';
SELECT count(*) AS orphan_deliveries FROM webhook.delivery d
 WHERE NOT EXISTS (SELECT 1 FROM webhook.profile p WHERE p.profile_id = d.profile_id);
SELECT webhook.drop_profile('ops2');

-- a binding's profile and event (held by triggers, not foreign keys)
SELECT webhook.create_profile('refs', 'http://127.0.0.1:9/refs', ARRAY['ticket.created'], enabled => false) > 0 AS created;
SELECT count(*) AS bindings FROM webhook.bindings WHERE profile = 'refs';
INSERT INTO webhook.binding (profile_id, event_id, created_by, search_path)
SELECT -1, event_id, current_user::regrole, '' FROM webhook.event WHERE name = 'ticket.created';
INSERT INTO webhook.binding (profile_id, event_id, created_by, search_path)
SELECT profile_id, -99, current_user::regrole, '' FROM webhook.profile WHERE name = 'refs';
DELETE FROM webhook.event WHERE name = 'ticket.created';
DELETE FROM webhook.profile WHERE name = 'refs';
SELECT count(*) AS orphan_bindings FROM webhook.binding b
 WHERE NOT EXISTS (SELECT 1 FROM webhook.profile p WHERE p.profile_id = b.profile_id);

-- a delivery restored from a dump while it was sending is due again, its
-- attempt not counted (its request went with the server it was on); only
-- the worker writes deliveries that stay sending
BEGIN;
INSERT INTO webhook.delivery (profile_id, webhook_id, events, items, body, status, attempts,
                              last_attempt_at, next_attempt_at)
VALUES (-1, 'restored-1', '{ticket.created}', 1, '{}', 'sending', 2,
        now() - interval '1 minute', now() - interval '1 minute');
SELECT status, attempts, next_attempt_at = now() AS due_now
  FROM webhook.delivery WHERE webhook_id = 'restored-1';
SELECT webhook._in_worker() AS in_worker;
ROLLBACK;
