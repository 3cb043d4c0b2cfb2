-- Batching settings: the modes, the wait, the maximum items, the
-- combinations that are refused, at create_profile and alter_profile.
\set SHOW_CONTEXT never

SELECT webhook.create_profile('plain', 'http://127.0.0.1:9/', ARRAY['ticket.created']) > 0 AS created;
SELECT webhook.create_profile('per_binding', 'http://127.0.0.1:9/', ARRAY['ticket.created'],
                              batching => 'same_event', enabled => false) > 0 AS created;
SELECT webhook.create_profile('per_event', 'http://127.0.0.1:9/', ARRAY['ticket.created'],
                              batching => 'SAME_EVENT_TYPE', batch_wait => '0', batch_max_items => 1,
                              enabled => false) > 0 AS created;
SELECT webhook.create_profile('everything', 'http://127.0.0.1:9/', ARRAY['ticket.created'],
                              batching => 'any_event', batch_wait => '24 hours', batch_max_items => 10000,
                              enabled => false) > 0 AS created;
SELECT name, method, payload, batching, batch_wait, batch_max_items, enabled, disabled_reason
  FROM webhook.profiles WHERE name IN ('plain', 'per_binding', 'per_event', 'everything') ORDER BY name;

-- every bad setting is refused, and nothing is left behind
SELECT count(*) AS before FROM webhook.profile \gset
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], batching => 'sometimes');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], batching => NULL);
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], batching => 'any_event', batch_wait => '-1 second');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], batching => 'any_event', batch_wait => '24 hours 1 second');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], batching => 'any_event', batch_wait => '1 day 1 second');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], batch_wait => NULL);
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], batching => 'any_event', batch_max_items => 0);
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], batching => 'any_event', batch_max_items => 10001);
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], batch_max_items => NULL);
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], batching => 'same_event', method => 'PUT');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], batching => 'any_event', method => 'patch');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], batching => 'any_event', payload => 'full');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], enabled => NULL);
SELECT count(*) = :before AS nothing_created FROM webhook.profile;

-- alter_profile: a change that would make the combination invalid is refused
SELECT webhook.alter_profile('per_binding', method => 'PUT');
SELECT webhook.create_profile('putting', 'http://127.0.0.1:9/', ARRAY['ticket.created'], method => 'PUT') > 0 AS created;
SELECT webhook.alter_profile('putting', batching => 'any_event');
SELECT webhook.alter_profile('per_binding', batch_wait => '2 days');
SELECT webhook.alter_profile('per_binding', batch_max_items => -5);
SELECT webhook.alter_profile('per_binding', batching => 'never');
-- a direct write is checked the same way
UPDATE webhook.profile SET method = 'PATCH' WHERE name = 'everything';
UPDATE webhook.profile SET batch_max_items = 0 WHERE name = 'everything';
-- together, the change is valid
SELECT webhook.alter_profile('putting', method => 'POST', batching => 'any_event', batch_wait => '90 seconds');
SELECT webhook.alter_profile('per_event', batching => 'none', method => 'PUT');
SELECT webhook.alter_profile('everything', batch_max_items => 50, enabled => true);
SELECT webhook.alter_profile('everything', enabled => false);
SELECT name, method, batching, batch_wait, batch_max_items, enabled
  FROM webhook.profiles WHERE name IN ('putting', 'per_event', 'everything') ORDER BY name;

-- a batching profile's test ping is an array too
SELECT webhook.send_test('putting') AS ping \gset
SELECT json_typeof(body) AS body, json_array_length(body) AS length, body -> 0 ->> 'event' AS event, items
  FROM webhook.delivery WHERE delivery_id = :ping;
SELECT webhook.send_test('plain') AS ping \gset
SELECT json_typeof(body) AS body, body ->> 'event' AS event, items
  FROM webhook.delivery WHERE delivery_id = :ping;

SELECT webhook.drop_profile(name) FROM webhook.profile
 WHERE name IN ('plain', 'per_binding', 'per_event', 'everything', 'putting');
