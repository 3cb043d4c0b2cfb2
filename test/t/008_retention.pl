# webhook.retention: delivered and failed deliveries older than it go, with
# their attempts; what is still to be sent stays, however old.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WebhookTest;

my $node = new_webhook_node('retention');
my $receiver = WebhookTest::Receiver->start;
my ($ok, $error) = map { $receiver->url($_) } ('/ok', '/status/500');

$node->safe_psql('postgres', sample_schema());
$node->safe_psql('postgres', qq{
	CREATE EXTENSION webhook;
	SELECT webhook.define_ticket_events('tickets');
	SELECT webhook.create_profile('kept', '$ok', ARRAY['ticket.created']);
	ALTER SYSTEM SET webhook.disable_after_failures = 0;
	SELECT pg_reload_conf();
	SELECT webhook.create_profile('error', '$error', ARRAY['ticket.created'], max_attempts => 1);
	SELECT webhook.create_profile('held', '$ok', ARRAY['ticket.created']);
	SELECT webhook.disable_profile('held');
	INSERT INTO tickets (summary, status_id) SELECT 'old ' || g, 1 FROM generate_series(1, 1000) g;
});
ok($node->poll_query_until('postgres', q{
	SELECT count(*) FILTER (WHERE profile = 'kept' AND status = 'delivered') = 1000
	   AND count(*) FILTER (WHERE profile = 'error' AND status = 'failed') = 1000
	   AND count(*) FILTER (WHERE profile = 'held' AND status = 'held') = 1000
	  FROM webhook.deliveries}),
	'1000 delivered, 1000 failed, 1000 held');

# age them, then make the retention shorter than their age
$node->safe_psql('postgres', q{
	UPDATE webhook.delivery SET created_at = created_at - interval '2 days';
	ALTER SYSTEM SET webhook.retention = '1d';
	SELECT pg_reload_conf();
});
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 0 FROM webhook.delivery WHERE status IN ('delivered', 'failed')}),
	'delivered and failed deliveries past the retention are purged');
is($node->safe_psql('postgres', q{SELECT count(*) FROM webhook.attempt}), '0',
	'with their attempts');
is($node->safe_psql('postgres', q{SELECT count(*) FROM webhook.deliveries WHERE status = 'held'}),
	'1000', 'held deliveries are kept, however old');

# newer than the retention: kept (made young before they are sent, or the
# purge, which may be running its next step, could take them once sent)
$node->safe_psql('postgres', q{
	UPDATE webhook.delivery SET created_at = now()
	 WHERE profile_id = (SELECT profile_id FROM webhook.profile WHERE name = 'held');
	SELECT webhook.enable_profile('held');
});
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 1000 FROM webhook.delivery WHERE status = 'delivered'}),
	'the held ones are sent once enabled');
$node->reload;
sleep 2;
is($node->safe_psql('postgres', q{SELECT count(*) FROM webhook.delivery}), '1000',
	'deliveries younger than the retention stay');

$receiver->stop;
$node->stop;
done_testing();
