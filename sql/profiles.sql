-- Profile options: method, authentication, headers, secret, retries,
-- timeout; what the profiles view shows; and every bad option.
\set SHOW_CONTEXT never

SELECT webhook.create_profile('put_basic', 'https://hooks.example.com/in', ARRAY['ticket.created'],
                              method => 'put', auth => 'basic', username => 'desk', password => 's3cret',
                              headers => '{"X-Team": "service-desk", "X-Api-Key": "k-123"}',
                              max_attempts => 3, retry_schedule => '{1 second, 10 seconds}',
                              timeout => '5 seconds') > 0 AS created;
SELECT webhook.create_profile('bearer', 'https://hooks.example.com/in', ARRAY['ticket.created'],
                              method => 'PATCH', auth => 'bearer', password => 'tok-456',
                              secret => 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw') > 0 AS created;
SELECT name, method, auth, username, password, headers, secret, max_attempts, retry_schedule, timeout
  FROM webhook.profiles WHERE name IN ('put_basic', 'bearer') ORDER BY name;
-- a secret is made when none is given: whsec_ and 32 random bytes
SELECT secret ~ '^whsec_[A-Za-z0-9+/]{43}=$' AS made, length(decode(substr(secret, 7), 'base64')) AS bytes
  FROM webhook.profile WHERE name = 'put_basic';
SELECT count(DISTINCT secret) = count(*) AS all_different FROM webhook.profile;

-- every bad option is refused, and nothing is left behind
SELECT count(*) AS before FROM webhook.profile \gset
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], method => 'GET');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], method => NULL);
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], auth => 'digest');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], auth => 'basic', username => 'u');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], auth => 'basic', username => 'a:b', password => 'x');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], auth => 'bearer');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], auth => 'bearer', username => 'u', password => 't');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], password => 'x');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], auth => 'bearer', password => E'tok\r\nX-Evil: 1');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], headers => '["X-A: 1"]');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], headers => NULL);
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], headers => '{"X Bad": "1"}');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], headers => '{"X-A\r\nX-Evil": "1"}');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], headers => '{"X-A": "1\r\nX-Evil: 1"}');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], headers => '{"X-A": 1}');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], headers => '{"Authorization": "Basic x"}');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], headers => '{"webhook-signature": "v1,x"}');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], headers => '{"Content-Type": "text/plain"}');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], headers => '{"X-A": "1", "x-a": "2"}');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], headers => jsonb_build_object('X-A', repeat('v', 4097)));
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], secret => 'not-a-secret');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], secret => 'whsec_c2hvcnQ=');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], secret => 'whsec_!!!!');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], max_attempts => 0);
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], max_attempts => NULL);
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], retry_schedule => '{}');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], retry_schedule => '{-1 second}');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], retry_schedule => '{8 days}');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], timeout => '1 millisecond');
SELECT webhook.create_profile('p', 'http://127.0.0.1:9/', ARRAY['ticket.created'], timeout => '2 hours');
SELECT count(*) = :before AS nothing_created FROM webhook.profile;
-- a direct write is checked the same way
UPDATE webhook.profile SET method = 'DELETE' WHERE name = 'put_basic';
UPDATE webhook.profile SET headers = '{"Host": "evil"}' WHERE name = 'put_basic';

-- a role that may read the profiles view sees no password, token or secret
CREATE ROLE webhook_reader;
GRANT USAGE ON SCHEMA webhook TO webhook_reader;
GRANT SELECT ON webhook.profiles, webhook.deliveries, webhook.attempts, webhook.events TO webhook_reader;
SET ROLE webhook_reader;
SELECT name, password, secret, headers->>'X-Api-Key' AS api_key FROM webhook.profiles
 WHERE name IN ('put_basic', 'bearer') ORDER BY name;
SELECT secret FROM webhook.profile;
RESET ROLE;
DROP OWNED BY webhook_reader;
DROP ROLE webhook_reader;
