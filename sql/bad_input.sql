-- Bad input for every public function: wrong, NULL, empty, huge (1 MB),
-- malformed and hostile arguments.  Each is a clear error, and nothing is
-- left half-made: the counts of every catalogue table are the same after.
\set SHOW_CONTEXT never
\set VERBOSITY default

CREATE FUNCTION pg_temp.counts() RETURNS text LANGUAGE sql AS $$
    SELECT format('events %s, profiles %s, bindings %s, deliveries %s, occurrences %s, triggers %s',
                  (SELECT count(*) FROM webhook.event), (SELECT count(*) FROM webhook.profile),
                  (SELECT count(*) FROM webhook.binding), (SELECT count(*) FROM webhook.delivery),
                  (SELECT count(*) FROM webhook.occurrence),
                  (SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'webhook%'))
$$;
SELECT webhook.create_profile('target', 'http://127.0.0.1:9/', ARRAY['ticket.created'], enabled => false) > 0 AS created;
-- the worker expands what earlier tests queued: counted once it has
DO $$
BEGIN
    FOR i IN 1..600 LOOP
        EXIT WHEN NOT EXISTS (SELECT 1 FROM webhook.occurrence);
        PERFORM pg_sleep(0.05);
    END LOOP;
END $$;
SELECT pg_temp.counts() AS before \gset

-- define_event
SELECT webhook.define_event(NULL, 'tickets', 'insert');
SELECT webhook.define_event('', 'tickets', 'insert');
SELECT webhook.define_event(repeat('e', 1000000), 'tickets', 'insert');
SELECT webhook.define_event('x.y', NULL, 'insert');
SELECT webhook.define_event('x.y', 'no_such_table', 'insert');
SELECT webhook.define_event('x.y', 'tickets; DROP TABLE tickets', 'insert');
SELECT webhook.define_event('x.y', 'pg_class', 'insert');
SELECT webhook.define_event('x.y', 'tickets', NULL);
SELECT webhook.define_event('x.y', 'tickets', 'truncate');
SELECT webhook.define_event('x.y', 'tickets', 'update', columns => '{}');
SELECT webhook.define_event('x.y', 'tickets', 'update', columns => ARRAY['summary; DROP TABLE tickets']);
SELECT webhook.define_event('x.y', 'tickets', 'update', columns => ARRAY[NULL]);
SELECT webhook.define_event('x.y', 'tickets', 'insert', condition => 'true; DROP TABLE tickets');
SELECT webhook.define_event('x.y', 'tickets', 'insert', condition => 'new.summary');
SELECT webhook.define_event('x.y', 'tickets', 'insert', condition => repeat('(', 100000));
SELECT webhook.define_event('x.y', 'tickets', 'insert', object => 'tic"ket');
SELECT webhook.define_event('x.y', 'tickets', 'insert', object => '');
SELECT webhook.define_event('x.y', 'actions', 'insert', parent => '"ticket"');
SELECT webhook.define_event('x.y', 'actions', 'insert', parent => '{"object": "ticket"}');
SELECT webhook.define_event('x.y', 'actions', 'insert',
                            parent => '{"object": "ticket", "table": "tickets", "column": "nope"}');
SELECT webhook.define_event('ticket.created', 'tickets', 'insert');

-- define_ticket_events, drop_event
SELECT webhook.define_ticket_events(NULL);
SELECT webhook.define_ticket_events('tickets', agent => 'no_such_column');
SELECT webhook.define_ticket_events('tickets', closed_statuses => '{not a number}');
SELECT webhook.drop_event(NULL);
SELECT webhook.drop_event(repeat('e', 1000000));
SELECT webhook.drop_event('ticket.created');

-- create_profile (more URLs and headers in api.sql and profiles.sql)
SELECT webhook.create_profile(NULL, 'http://127.0.0.1:9/', ARRAY['ticket.created']);
SELECT webhook.create_profile('', 'http://127.0.0.1:9/', ARRAY['ticket.created']);
SELECT webhook.create_profile(repeat('p', 1000000), 'http://127.0.0.1:9/', ARRAY['ticket.created']);
SELECT webhook.create_profile('target', 'http://127.0.0.1:9/', ARRAY['ticket.created']);
SELECT webhook.create_profile('p', '', ARRAY['ticket.created']);
SELECT webhook.create_profile('p', 'http://user:pw@example.com/', ARRAY['ticket.created']);
SELECT webhook.create_profile('p', 'http://example.com/' || repeat('a', 1000000), ARRAY['ticket.created']);
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', NULL);
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', '{}');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY[NULL]);
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created''; DROP TABLE tickets; --']);
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created', 'ticket.created']);
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], method => 'DELETE');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], method => NULL);
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], auth => 'digest');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], auth => 'basic');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], auth => 'basic',
                              username => 'a:b', password => 'x');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], auth => 'bearer',
                              password => E'tok\r\nX-Evil: 1');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], headers => '[1, 2]');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], headers => '{"Host": "evil"}');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], headers => '{"webhook-id": "x"}');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'],
                              headers => jsonb_build_object('X-A', repeat('v', 1000000)));
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], payload => 'huge');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], batching => 'always');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], batch_wait => '-1 second');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], batch_wait => '25 hours');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], batch_max_items => 0);
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], secret => 'not a secret');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], secret => 'whsec_AAAA');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], enabled => NULL);
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], max_attempts => 0);
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], max_attempts => 101);
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], retry_schedule => '{-1 second}');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], retry_schedule => '{8 days}');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], retry_schedule => ARRAY[NULL::interval]);
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], timeout => '1 ms');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], timeout => '2 hours');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], timeout => 'soon');

-- alter_profile, enable, disable, drop
SELECT webhook.alter_profile(NULL);
SELECT webhook.alter_profile('nope');
SELECT webhook.alter_profile(repeat('p', 1000000), url => 'http://127.0.0.1:9/');
SELECT webhook.alter_profile('target', url => 'gopher://127.0.0.1/');
SELECT webhook.alter_profile('target', new_name => '');
SELECT webhook.alter_profile('target', headers => '{"Authorization": "Bearer x"}');
SELECT webhook.alter_profile('target', method => 'PUT', batching => 'any_event');
SELECT webhook.enable_profile(NULL);
SELECT webhook.enable_profile('nope');
SELECT webhook.disable_profile('nope');
SELECT webhook.drop_profile(NULL);
SELECT webhook.drop_profile('nope''; DROP TABLE tickets; --');

-- add_event, remove_event (the profile's only binding cannot go)
SELECT webhook.remove_event(binding_id) FROM webhook.bindings WHERE profile = 'target';
SELECT webhook.add_event(NULL, 'ticket.created');
SELECT webhook.add_event('target', NULL);
SELECT webhook.add_event('target', 'ticket.created', conditions => '{"field": "priority_id"}');
SELECT webhook.add_event('target', 'ticket.created', conditions => '[{"field": "priority_id", "op": "eq"}]');
SELECT webhook.add_event('target', 'ticket.created', conditions => '[{"field": "priority_id", "op": "like", "value": 1}]');
SELECT webhook.add_event('target', 'ticket.created', conditions => '[{"field": "priority_id", "op": "eq", "value": "one"}]');
SELECT webhook.add_event('target', 'ticket.created',
                         conditions => '[{"field": "priority_id\"; DROP TABLE tickets; --", "op": "eq", "value": 1}]');
SELECT webhook.add_event('target', 'ticket.created',
                         conditions => '[{"field": "summary", "op": "contains", "value": "'' OR 1=1 --"}]') > 0 AS quoted_value_is_a_value;
SELECT webhook.add_event('target', 'ticket.created', condition_sql => 'new.priority_id = 1); DROP TABLE tickets; --');
SELECT webhook.add_event('target', 'ticket.created', condition_sql => '');
SELECT webhook.add_event('target', 'ticket.created', condition_sql => repeat('x', 1000000));
SELECT webhook.remove_event(NULL);
SELECT webhook.remove_event(-1);

-- set_payload_fields, preview
SELECT webhook.set_payload_fields(NULL, '[]');
SELECT webhook.set_payload_fields('target', '[]');
SELECT webhook.preview('target', 'ticket.created', '');
SELECT webhook.preview('target', NULL, '1');

-- operations
SELECT webhook.send_test(NULL);
SELECT webhook.send_test('target');
SELECT webhook.redeliver(NULL);
SELECT webhook.redeliver(-1);
SELECT webhook.replay(NULL, now());
SELECT webhook.replay('target', NULL);
SELECT webhook.replay('target', now(), 'exploded');
SELECT webhook.replay('target', 'yesterday-ish');

-- settings: malformed CIDR ranges and values (ALTER SYSTEM checks them
-- as the server would, and writes nothing when they are wrong)
ALTER SYSTEM SET webhook.blocked_networks = '10.0.0.0/33';
ALTER SYSTEM SET webhook.blocked_networks = 'not-a-network';
ALTER SYSTEM SET webhook.blocked_networks = '10.0.0.0/8; 192.168.0.0/16';
ALTER SYSTEM SET webhook.blocked_networks = '::1/129';
ALTER SYSTEM SET webhook.request_timeout = '-5s';
ALTER SYSTEM SET webhook.max_concurrency = 0;
ALTER SYSTEM SET webhook.user_agent = E'agent\r\nX-Evil: 1';
ALTER SYSTEM SET webhook.user_agent = E'agent\rX-Evil: 1';
ALTER SYSTEM SET webhook.user_agent = 'agent-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx';
SET webhook.blocked_networks = '';

-- nothing was made, changed or queued by any of the above but the one
-- binding whose hostile-looking value is only a value
SELECT pg_temp.counts() = replace(:'before', 'bindings ' || split_part(split_part(:'before', 'bindings ', 2), ',', 1),
                                  'bindings ' || (split_part(split_part(:'before', 'bindings ', 2), ',', 1)::int + 1))
       AS nothing_half_made;
SELECT name, url, method, enabled, headers FROM webhook.profiles WHERE name = 'target';
SELECT to_regclass('tickets') IS NOT NULL AS tickets_still_there;
SELECT webhook.drop_profile('target');
