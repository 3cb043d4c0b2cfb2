# Failover while deliveries flow: a streaming standby runs no worker; the
# primary is stopped (immediate) with deliveries on the wire and the
# standby promoted; the worker starts there and every change committed on
# the old primary (and replicated) or on the new one is delivered.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WebhookTest;
use FaultCase;

my ($primary, $receiver) = fault_setup('primary', init => { allows_streaming => 1 }, max_concurrency => 8);
$receiver->set_mode('slow 20');

$primary->backup('backup');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'backup', has_streaming => 1);
$standby->start;

commit_tickets($primary, 'failover', 1, 2000);
$primary->wait_for_catchup($standby);
ok(wait_until(sub { $receiver->count >= 200 }, 60), 'deliveries flow from the primary');
is($standby->safe_psql('postgres', q{
	SELECT count(*) FROM pg_stat_activity WHERE backend_type IN ('webhook launcher', 'webhook worker')}),
	'0', 'no launcher or worker on the standby');
my $waiting = $primary->safe_psql('postgres', q{
	SELECT count(*) FROM webhook.delivery WHERE status IN ('pending', 'sending', 'retrying')});

$primary->stop('immediate');
$standby->promote;
ok(wait_until(sub { worker_pid($standby, 'postgres') ne '' }, 60), 'a worker starts on the promoted standby');
commit_tickets($standby, 'failover', 2001, 3000);
check_case($standby, $receiver, 'failover');
diag("fault | failover | primary stopped (immediate), standby promoted | $waiting deliveries waiting or on the wire when it struck");

$receiver->stop;
$standby->stop;
done_testing();
