-- The workload of test/valgrind.sh: every payload kind, a batch, failures,
-- retries, an oversized answer, a dangling key, previews, deadline events
-- (a column and an expression, past and soon, moved and deleted), a rate
-- limit, a pause asked for by a 503, and a secret rotation.
CREATE EXTENSION webhook;
ALTER TABLE tickets ADD COLUMN deadline_at timestamptz;
SELECT webhook.define_ticket_events('tickets', 'actions', deadline => 'deadline_at');
SELECT webhook.define_deadline_event('ticket.reply_due', 'tickets', $$new.created_at + interval '2 seconds'$$);
SELECT webhook.create_profile('d', :'url' || '/d', ARRAY['ticket.deadline', 'ticket.reply_due'], envelope => 'halo');
SELECT webhook.create_profile('s', :'url' || '/s', ARRAY['ticket.created','ticket.updated','action.added']);
SELECT webhook.create_profile('f', :'url' || '/f', ARRAY['ticket.created','ticket.updated','action.added'], payload => 'full');
SELECT webhook.create_profile('e', :'url' || '/e', ARRAY['ticket.created','action.added'], payload => 'event_only',
                              max_rate => 100);
-- signed with two secrets while the rotation lasts
SELECT webhook.rotate_secret('s', '1 hour') <> '';
-- a 503 with Retry-After pauses its profile
SELECT webhook.create_profile('paused', :'url' || '/retry-after/1', ARRAY['action.added'], max_attempts => 1);
SELECT webhook.create_profile('c', :'url' || '/c', ARRAY['ticket.created','ticket.updated','action.added'], payload => 'custom', batching => 'any_event', batch_wait => '1 second');
SELECT webhook.set_payload_fields('c', '[{"name":"status","column":"ticket.status_id"},{"name":"agent","column":"ticket.agent_id","display":"email"},{"name":"s","column":"ticket.summary"}]');
-- (500s: 503s in a row would pause the profile up to a minute each, past the drain's wait)
SELECT webhook.create_profile('failing', :'url' || '/status/500', ARRAY['ticket.created'],
                              max_attempts => 2, retry_schedule => '{1 second}');
SELECT webhook.create_profile('oversized', :'url' || '/huge/5', ARRAY['action.added']);
-- each failure of 'failing' said to an alert profile, and a profile disabled by hand
SELECT webhook.create_profile('alerts', :'url' || '/alerts', ARRAY['webhook.delivery_failed', 'webhook.profile_disabled'],
                              envelope => 'halo');
SELECT webhook.create_profile('stopped', :'url' || '/stopped', ARRAY['ticket.deleted']);
SELECT webhook.disable_profile('stopped', 'by hand, under valgrind');
INSERT INTO tickets (summary, status_id, agent_id, team_id, priority_id, client_id)
SELECT 'T ' || g, 1, 1 + g % 2, 1 + g % 2, 1 + g % 4, 1 + g % 2 FROM generate_series(1, 200) g;
INSERT INTO actions (ticket_id, agent_id, note) SELECT ticket_id, 1, 'n' FROM tickets WHERE ticket_id % 3 = 0;
UPDATE tickets SET status_id = 2 WHERE ticket_id % 2 = 0;
UPDATE tickets SET deadline_at = now() + (ticket_id % 3 - 1) * interval '2 seconds' WHERE ticket_id <= 60;
UPDATE tickets SET deadline_at = deadline_at - interval '1 second' WHERE ticket_id <= 20;
DELETE FROM actions WHERE ticket_id IN (58, 59, 60);
DELETE FROM tickets WHERE ticket_id IN (58, 59, 60);
SET session_replication_role = replica;
INSERT INTO tickets (ticket_id, summary, status_id, client_id) VALUES (100000, 'dangling', 1, 77);
RESET session_replication_role;
INSERT INTO tickets (summary, status_id, client_id) VALUES ('after', 1, 2);
SELECT length(webhook.preview('f', 'ticket.created', '1')::text) > 0;
SELECT length(webhook.preview('c', 'action.added', '3')::text) > 0;
