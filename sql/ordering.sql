-- ordering: create_profile and alter_profile take it, webhook.profiles
-- shows it, bad values and combinations are refused; replay keeps each
-- object's order, redeliver sends in none (the order on the wire: TAP
-- 031_ordering).
\set SHOW_CONTEXT never
\set VERBOSITY default

SELECT webhook.define_event('ord.updated', 'tickets', 'update', object => 'ticket') > 0 AS defined;
SELECT webhook.create_profile('ord', 'http://127.0.0.1:9/ord', ARRAY['ord.updated'],
                              ordering => 'per_object', enabled => false) > 0 AS created;
SELECT webhook.create_profile('ord_batched', 'http://127.0.0.1:9/ord', ARRAY['ord.updated'],
                              ordering => 'PER_OBJECT', batching => 'any_event', enabled => false) > 0 AS created;
SELECT webhook.create_profile('unord', 'http://127.0.0.1:9/ord', ARRAY['ord.updated'],
                              enabled => false) > 0 AS created;
SELECT name, ordering, batching FROM webhook.profiles WHERE name LIKE '%ord%' ORDER BY name;
-- NULL leaves it
SELECT webhook.alter_profile('ord', timeout => '5 seconds');
SELECT ordering FROM webhook.profiles WHERE name = 'ord';
SELECT webhook.alter_profile('unord', ordering => 'per_object');
SELECT webhook.alter_profile('unord', ordering => 'none');
SELECT ordering FROM webhook.profiles WHERE name = 'unord';

-- bad values and combinations, refused with nothing changed
SELECT count(*) AS before FROM webhook.profile \gset
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ord.updated'], ordering => 'per_ticket');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ord.updated'], ordering => NULL);
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ord.updated'], ordering => '');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ord.updated'], ordering => 'per_object',
                              batching => 'same_event');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ord.updated'], ordering => 'per_object',
                              batching => 'same_event_type');
SELECT count(*) = :before AS nothing_made FROM webhook.profile;
SELECT webhook.alter_profile('ord', ordering => 'sometimes');
SELECT webhook.alter_profile('ord', batching => 'same_event');
SELECT webhook.alter_profile('ord_batched', batching => 'same_event_type');
SELECT webhook.alter_profile('unord', batching => 'same_event', ordering => 'per_object');
UPDATE webhook.profile SET ordering = 'random' WHERE name = 'ord';
SELECT name, ordering, batching FROM webhook.profiles WHERE name LIKE '%ord%' ORDER BY name;

-- replay: in the order made, each in its object's order when the profile
-- orders; after an unfinished one of its object (or a batch), it waits
SELECT profile_id AS ord FROM webhook.profile WHERE name = 'ord' \gset
INSERT INTO webhook.delivery (profile_id, webhook_id, events, items, body, status, next_attempt_at, order_key)
VALUES (:ord, 'w1', '{ord.updated}', 1, '{"n": 1}', 'delivered', NULL, 'ticket:1'),
       (:ord, 'w2', '{ord.updated}', 1, '{"n": 2}', 'delivered', NULL, 'ticket:1'),
       (:ord, 'w3', '{ord.updated}', 1, '{"n": 3}', 'delivered', NULL, 'ticket:2'),
       (:ord, 'w4', '{ord.updated}', 1, '{"n": 4}', 'pending', now(), 'ticket:3'),
       (:ord, 'w5', '{ord.updated}', 1, '{"n": 5}', 'delivered', NULL, 'ticket:3'),
       (:ord, 'w6', '{ord.updated}', 1, '{"n": 6}', 'delivered', NULL, NULL);
SELECT webhook.replay('ord', now() - interval '1 hour', 'delivered') AS replayed;
SELECT webhook_id, order_key, next_attempt_at = 'infinity' AS waits, status
  FROM webhook.delivery WHERE profile_id = :ord AND ready_at IS NOT NULL ORDER BY delivery_id;
-- what webhook.deliveries shows: held while the profile is disabled
SELECT webhook_id, status, next_attempt_at FROM webhook.deliveries
 WHERE profile = 'ord' AND order_key = 'ticket:1' AND status <> 'delivered' ORDER BY delivery_id;
-- redeliver sends in no order
SELECT webhook.redeliver(delivery_id) > 0 AS redelivered FROM webhook.delivery
 WHERE profile_id = :ord AND webhook_id = 'w5' AND ready_at IS NULL;
SELECT order_key, next_attempt_at = 'infinity' AS waits FROM webhook.delivery
 WHERE profile_id = :ord ORDER BY delivery_id DESC LIMIT 1;
-- a profile that stops ordering lets every delivery go, in no order
SELECT webhook.alter_profile('ord', ordering => 'none');
SELECT count(*) FILTER (WHERE next_attempt_at = 'infinity') AS waiting,
       count(*) FILTER (WHERE order_key IS NOT NULL AND next_attempt_at IS NOT NULL) AS in_order
  FROM webhook.delivery WHERE profile_id = :ord;
-- a profile that does not order replays in none
SELECT webhook.replay('ord', now() - interval '1 hour', 'delivered') AS replayed;
SELECT count(*) FILTER (WHERE order_key IS NOT NULL) AS in_order FROM webhook.delivery
 WHERE profile_id = :ord AND next_attempt_at IS NOT NULL;

SELECT webhook.drop_profile(name) FROM webhook.profile WHERE name LIKE '%ord%' ORDER BY name;
SELECT webhook.drop_event('ord.updated');
