-- Secret rotation: webhook.rotate_secret, what webhook.profiles shows of
-- it, its bad inputs, who may call it, and the old secret redacted as the
-- secret is (the two signatures on the wire: TAP 028_secret_rotation).
\set SHOW_CONTEXT never
\set VERBOSITY default

SELECT webhook.define_event('rot.created', 'tickets', 'insert', object => 'ticket') > 0 AS defined;
SELECT webhook.create_profile('rot', 'http://127.0.0.1:9/rot', ARRAY['rot.created'],
                              secret => 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', enabled => false) > 0 AS created;
SELECT previous_secret_until FROM webhook.profiles WHERE name = 'rot';
INSERT INTO tickets (ticket_id, summary, status_id) VALUES (4401, 'Rotate the desk''s keys', 1);

-- a new secret is made and returned; the old one signs too for a day
SELECT webhook.rotate_secret('rot') AS made \gset
SELECT :'made' ~ '^whsec_[A-Za-z0-9+/]{43}=$' AS made_is_a_secret,
       secret = :'made' AS secret_is_the_new_one,
       previous_secret = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw' AS previous_is_the_old_one,
       previous_secret_until - now() BETWEEN '23 hours 59 minutes' AND '24 hours' AS for_a_day
  FROM webhook.profile WHERE name = 'rot';
SELECT secret, previous_secret_until - now() BETWEEN '23 hours 59 minutes' AND '24 hours' AS until_shown
  FROM webhook.profiles WHERE name = 'rot';

-- a request made now carries both signatures, the new secret's first
SELECT webhook.preview('rot', 'rot.created', '4401')
       -> 'headers' ->> 'webhook-signature' ~ '^v1,[A-Za-z0-9+/]{43}= v1,[A-Za-z0-9+/]{43}=$' AS two_signatures;

-- a given secret, kept an hour; the rotation before ends, its old secret dropped
SELECT webhook.rotate_secret('rot', '1 hour', new_secret => 'whsec_ZGVza3RvcC1yb3RhdGlvbi1zZWNyZXQtMzItYnl0ZXM=');
SELECT previous_secret = :'made' AS previous_is_the_made_one,
       previous_secret_until - now() BETWEEN '59 minutes' AND '1 hour' AS for_an_hour
  FROM webhook.profile WHERE name = 'rot';

-- keep_old 0 keeps nothing: one signature from now on
SELECT webhook.rotate_secret('rot', '0') <> '' AS rotated;
SELECT previous_secret IS NULL AS none_kept, previous_secret_until IS NULL AS no_end
  FROM webhook.profile WHERE name = 'rot';
SELECT webhook.preview('rot', 'rot.created', '4401')
       -> 'headers' ->> 'webhook-signature' ~ '^v1,[A-Za-z0-9+/]{43}=$' AS one_signature;

-- a secret set with alter_profile ends a rotation
SELECT webhook.rotate_secret('rot', '1 hour') <> '' AS rotated;
SELECT webhook.alter_profile('rot', secret => 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw');
SELECT previous_secret IS NULL AS ended, previous_secret_until FROM webhook.profile WHERE name = 'rot';
-- and so does one set with an UPDATE; changing anything else does not
SELECT webhook.rotate_secret('rot', '1 hour') <> '' AS rotated;
SELECT webhook.alter_profile('rot', timeout => '5 seconds');
SELECT previous_secret = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw' AS still_rotating FROM webhook.profile WHERE name = 'rot';
UPDATE webhook.profile SET secret = 'whsec_ZGVza3RvcC1yb3RhdGlvbi1zZWNyZXQtMzItYnl0ZXM=' WHERE name = 'rot';
SELECT previous_secret IS NULL AS ended FROM webhook.profile WHERE name = 'rot';
-- an old secret past its time is dropped at the profile's next change
SELECT webhook.rotate_secret('rot', '1 hour') <> '' AS rotated;
BEGIN;
ALTER TABLE webhook.profile DISABLE TRIGGER profile_secret_rotation;
UPDATE webhook.profile SET previous_secret_until = now() - interval '1 second' WHERE name = 'rot';
ALTER TABLE webhook.profile ENABLE TRIGGER profile_secret_rotation;
SELECT previous_secret_until FROM webhook.profiles WHERE name = 'rot';
SELECT webhook.alter_profile('rot', timeout => '6 seconds');
SELECT previous_secret IS NULL AS dropped FROM webhook.profile WHERE name = 'rot';
COMMIT;

-- bad inputs, each refused with nothing changed
SELECT secret AS before FROM webhook.profile WHERE name = 'rot' \gset
SELECT webhook.rotate_secret('nope');
SELECT webhook.rotate_secret(NULL);
SELECT webhook.rotate_secret('rot', NULL);
SELECT webhook.rotate_secret('rot', '-1 second');
SELECT webhook.rotate_secret('rot', '2 years');
SELECT webhook.rotate_secret('rot', new_secret => 'whsec_short');
SELECT webhook.rotate_secret('rot', new_secret => 'secret');
SELECT webhook.rotate_secret('rot', new_secret => :'before');
UPDATE webhook.profile SET previous_secret = 'whsec_nope', previous_secret_until = now() + interval '1 hour' WHERE name = 'rot';
UPDATE webhook.profile SET previous_secret = secret, previous_secret_until = now() + interval '1 hour' WHERE name = 'rot';
UPDATE webhook.profile SET previous_secret = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw' WHERE name = 'rot';
UPDATE webhook.profile SET previous_secret_until = now() + interval '1 hour' WHERE name = 'rot';
UPDATE webhook.profile SET previous_secret = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', previous_secret_until = 'infinity'
 WHERE name = 'rot';
UPDATE webhook.profile SET previous_secret = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
       previous_secret_until = now() + interval '13 months' WHERE name = 'rot';
SELECT secret = :'before' AS unchanged, previous_secret IS NULL AS no_rotation FROM webhook.profile WHERE name = 'rot';

-- a year is a year of days, not of 30-day months
SELECT webhook.rotate_secret('rot', '365 days') <> '' AS a_year_of_days;
SELECT webhook.rotate_secret('rot', '367 days');

-- who may rotate: not PUBLIC, not the read-only role; it sees when, never the secrets
SELECT webhook.rotate_secret('rot', '1 hour') <> '' AS rotated;
CREATE ROLE rot_reader;
GRANT USAGE ON SCHEMA webhook TO rot_reader;
GRANT SELECT ON webhook.profiles, webhook.deliveries, webhook.attempts TO rot_reader;
SELECT has_function_privilege('public', 'webhook.rotate_secret(text, interval, text)', 'EXECUTE') AS public_may;
SET ROLE rot_reader;
SELECT webhook.rotate_secret('rot');
SELECT secret, previous_secret_until IS NOT NULL AS rotating FROM webhook.profiles WHERE name = 'rot';
SELECT previous_secret FROM webhook.profile;
RESET ROLE;

-- an old secret that a receiver echoes back is redacted for the reader
INSERT INTO webhook.delivery (profile_id, webhook_id, events, items, body, status, response_body)
SELECT profile_id, 'rot-1', '{rot.created}', 1, '{}', 'delivered',
       'echo: ' || previous_secret || ' and ' || substr(previous_secret, 7)
  FROM webhook.profile WHERE name = 'rot';
INSERT INTO webhook.attempt (delivery_id, attempt, started_at, outcome, response_status, response_headers,
                             response_body, request_headers)
SELECT delivery_id, 1, now(), 'response', 200, jsonb_build_object('X-Echo', response_body), response_body, '{}'
  FROM webhook.delivery WHERE webhook_id = 'rot-1';
SET ROLE rot_reader;
SELECT response_body FROM webhook.deliveries WHERE webhook_id = 'rot-1';
SELECT a.response_headers, a.response_body FROM webhook.attempts a
  JOIN webhook.deliveries d USING (delivery_id) WHERE d.webhook_id = 'rot-1';
RESET ROLE;
SELECT response_body LIKE '%whsec_%' AS superuser_sees_the_echo FROM webhook.deliveries WHERE webhook_id = 'rot-1';

-- and stays redacted once the rotation has ended and the secret is gone
-- from the profile: each secret the profile stopped signing with is kept,
-- out of every role's sight but the owner's, as long as the history
SELECT count(*) AS retired_so_far FROM webhook.retired_secret
 WHERE profile_id = (SELECT profile_id FROM webhook.profile WHERE name = 'rot');
SELECT webhook.rotate_secret('rot', '0') <> '' AS rotated_again;
SELECT webhook.alter_profile('rot', secret => 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw');
SELECT count(*) AS retired_now FROM webhook.retired_secret
 WHERE profile_id = (SELECT profile_id FROM webhook.profile WHERE name = 'rot');
SELECT count(*) AS echoed_secret_retired FROM webhook.retired_secret r, webhook.delivery d
 WHERE d.webhook_id = 'rot-1' AND strpos(d.response_body, r.secret) > 0;
SET ROLE rot_reader;
SELECT response_body FROM webhook.deliveries WHERE webhook_id = 'rot-1';
SELECT a.response_headers, a.response_body FROM webhook.attempts a
  JOIN webhook.deliveries d USING (delivery_id) WHERE d.webhook_id = 'rot-1';
SELECT * FROM webhook.retired_secret;
RESET ROLE;
-- the housekeeping keeps them for webhook.retention, no longer
SELECT webhook._tidy_secrets(3600);
SELECT count(*) > 0 AS kept FROM webhook.retired_secret;
UPDATE webhook.retired_secret SET retired_at = now() - interval '2 hours';
SELECT webhook._tidy_secrets(3600);
SELECT count(*) AS forgotten FROM webhook.retired_secret;

DELETE FROM webhook.attempt WHERE delivery_id IN (SELECT delivery_id FROM webhook.delivery WHERE webhook_id = 'rot-1');
DELETE FROM webhook.delivery WHERE webhook_id = 'rot-1';
SELECT webhook.drop_profile('rot');
SELECT webhook.drop_event('rot.created');
DROP OWNED BY rot_reader;
DROP ROLE rot_reader;
