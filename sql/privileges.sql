-- Who may do what, with the roles the README documents: a role with no
-- grants, a read-only role, and an administration role.
\set SHOW_CONTEXT never

SELECT webhook.create_profile('guarded', 'http://127.0.0.1:9/', ARRAY['ticket.created'],
                              auth => 'bearer', password => 'tok-secret', headers => '{"X-Api-Key": "k-secret"}',
                              enabled => false) > 0 AS created;
CREATE TABLE vault (id int PRIMARY KEY, code text);
INSERT INTO vault VALUES (1, 'hidden');
SELECT webhook.define_event('vault.created', 'vault', 'insert', object => 'vault') > 0 AS defined;
SELECT webhook.add_event('guarded', 'vault.created') > 0 AS bound;

CREATE ROLE priv_reader;
GRANT USAGE ON SCHEMA webhook TO priv_reader;
GRANT SELECT ON webhook.deliveries, webhook.attempts, webhook.events, webhook.profiles TO priv_reader;
CREATE ROLE priv_admin;
GRANT USAGE ON SCHEMA webhook TO priv_admin;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA webhook TO priv_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA webhook TO priv_admin;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA webhook TO priv_admin;
GRANT SELECT ON tickets TO priv_admin;
CREATE ROLE priv_nobody;

-- the read-only role sees profiles without their secrets, and nothing else
SET ROLE priv_reader;
SELECT name, auth, password, headers, secret FROM webhook.profiles WHERE name = 'guarded';
SELECT count(*) >= 0 AS reads_deliveries FROM webhook.deliveries;
SELECT password FROM webhook.profile WHERE name = 'guarded';
SELECT webhook.preview('guarded', 'ticket.created', '1');
SELECT webhook.create_profile('mine', 'http://127.0.0.1:9/', ARRAY['ticket.created']);
SELECT webhook.set_payload_fields('guarded', '[]');
RESET ROLE;

-- a role with no grants sees and does nothing
SET ROLE priv_nobody;
SELECT count(*) FROM webhook.deliveries;
SELECT count(*) FROM webhook.profiles;
SELECT webhook.preview('guarded', 'ticket.created', '1');
SELECT webhook.drop_profile('guarded');
RESET ROLE;

-- the administration role previews rows it can read, not others
INSERT INTO tickets (ticket_id, summary, status_id) VALUES (701, 'Visible', 1);
SET ROLE priv_admin;
SELECT p #>> '{body,ticket,summary}' AS summary, p #>> '{headers,Authorization}' AS authorization,
       p #>> '{headers,X-Api-Key}' AS api_key
  FROM webhook.preview('guarded', 'ticket.created', '701') AS p;
SELECT webhook.preview('guarded', 'vault.created', '1');
-- and cannot define events on tables it has no TRIGGER on
SELECT webhook.define_event('vault.changed', 'vault', 'update', object => 'vault');
SELECT webhook.add_event('guarded', 'ticket.created', condition_sql => 'new.priority_id = 1');
RESET ROLE;

SELECT webhook.drop_profile('guarded');
SELECT webhook.drop_event('vault.created');
DELETE FROM tickets WHERE ticket_id = 701;
DROP TABLE vault;
REVOKE ALL ON ALL TABLES IN SCHEMA webhook FROM priv_reader, priv_admin;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA webhook FROM priv_admin;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA webhook FROM priv_admin;
REVOKE ALL ON SCHEMA webhook FROM priv_reader, priv_admin;
REVOKE ALL ON tickets FROM priv_admin;
DROP ROLE priv_reader, priv_admin, priv_nobody;
