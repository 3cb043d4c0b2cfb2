-- Client certificates and a private CA: what create_profile and
-- alter_profile take, what webhook.profiles shows, every bad value refused
-- (mutual TLS and the proxy on the wire: TAP 030_tls_and_proxy).
\set SHOW_CONTEXT never
\set VERBOSITY default

\set cert '-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ2VydGlmaWNhdGUgb2YgdGhlIGRlc2sw\n-----END CERTIFICATE-----\n'
\set key '-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n'
SELECT webhook.define_event('tls.created', 'tickets', 'insert', object => 'ticket') > 0 AS defined;
SELECT webhook.create_profile('tls', 'https://127.0.0.1:9/tls', ARRAY['tls.created'], enabled => false,
                              client_cert => E:'cert', client_key => E:'key', ca_cert => E:'cert') > 0 AS created;
SELECT client_cert = E:'cert' AS cert_shown, client_key, ca_cert = E:'cert' AS ca_shown
  FROM webhook.profiles WHERE name = 'tls';

-- NULL leaves them, '' removes them
SELECT webhook.alter_profile('tls', timeout => '5 seconds');
SELECT client_cert IS NOT NULL AS kept, client_key FROM webhook.profiles WHERE name = 'tls';
SELECT webhook.alter_profile('tls', ca_cert => '');
SELECT ca_cert IS NULL AS ca_removed FROM webhook.profiles WHERE name = 'tls';
SELECT webhook.alter_profile('tls', client_cert => '', client_key => '');
SELECT client_cert IS NULL AS cert_removed, client_key IS NULL AS key_removed FROM webhook.profiles WHERE name = 'tls';

-- bad values, refused with nothing changed
SELECT webhook.alter_profile('tls', client_cert => E:'cert');
SELECT webhook.alter_profile('tls', client_key => E:'key');
SELECT webhook.alter_profile('tls', client_cert => 'not a certificate', client_key => E:'key');
SELECT webhook.alter_profile('tls', client_cert => E:'cert', client_key => 'hunter2');
SELECT webhook.alter_profile('tls', client_cert => E:'cert',
                             client_key => E'-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIGH\n-----END ENCRYPTED PRIVATE KEY-----\n');
SELECT webhook.alter_profile('tls', ca_cert => E:'key');
SELECT webhook.alter_profile('tls', ca_cert => repeat('x', 70000));
SELECT webhook.alter_profile('tls', url => 'http://127.0.0.1:9/tls', ca_cert => E:'cert');
SELECT webhook.create_profile('tls2', 'http://127.0.0.1:9/tls', ARRAY['tls.created'],
                              client_cert => E:'cert', client_key => E:'key');
SELECT client_cert, client_key, ca_cert FROM webhook.profiles WHERE name = 'tls';
SELECT count(*) AS not_made FROM webhook.profiles WHERE name = 'tls2';

-- a role that may only read sees the certificate, never the key
SELECT webhook.alter_profile('tls', client_cert => E:'cert', client_key => E:'key');
CREATE ROLE tls_reader;
GRANT USAGE ON SCHEMA webhook TO tls_reader;
GRANT SELECT ON webhook.profiles TO tls_reader;
SET ROLE tls_reader;
SELECT client_cert IS NOT NULL AS cert_shown, client_key FROM webhook.profiles WHERE name = 'tls';
SELECT client_key FROM webhook.profile;
RESET ROLE;

-- webhook.proxy: set in the server's configuration only, hidden from others
SET webhook.proxy = 'http://proxy.example.com:3128';
SELECT name, setting, context FROM pg_settings WHERE name = 'webhook.proxy';

SELECT webhook.drop_profile('tls');
SELECT webhook.drop_event('tls.created');
DROP OWNED BY tls_reader;
DROP ROLE tls_reader;
