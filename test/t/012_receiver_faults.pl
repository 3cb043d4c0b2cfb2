# Receiver faults while deliveries flow: errors for a while, hangs past the
# timeout, connection resets, slow answers with every connection slot
# taken, 410, 50 MB answers, a receiver that is down.  Each case commits
# 2,000 tickets (half before the fault, half during it) and a rolled-back
# transaction; see FaultCase for what is checked.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep);
use WebhookTest;
use FaultCase;

my ($node, $receiver) = fault_setup('receiver_faults', timeout => '1 second');

# Half the tickets go out normally, then the fault starts and the other
# half is committed during it; it lasts $seconds.
sub run_case
{
	my ($label, $fault, $seconds, $start, $stop) = @_;
	note("$label: $fault");
	$receiver->set_mode('ok');
	my $case_start = $node->safe_psql('postgres', 'SELECT clock_timestamp()');
	my $before = $receiver->count;
	commit_tickets($node, $label, 1, 1000);
	ok(wait_until(sub { $receiver->count > $before }, 30), "$label: deliveries flow");
	$start->();
	commit_tickets($node, $label, 1001, 2000);
	sleep $seconds;
	$stop->();
	check_case($node, $receiver, $label);

	# the fault was met: attempts that did not get a plain 2xx, or slow ones
	my ($hit, $slowest, $outcomes) = split /\|/, $node->safe_psql('postgres', qq{
		SELECT count(*) FILTER (WHERE outcome <> 'response' OR response_status NOT BETWEEN 200 AND 299),
		       round(max(duration_ms)),
		       string_agg(DISTINCT outcome || coalesce(' ' || response_status, ''), ', ')
		  FROM webhook.attempt WHERE started_at >= '$case_start'});
	if ($label eq 'slow')
	{
		cmp_ok($slowest, '>=', 20, "$label: answers took 20 ms or more");
	}
	else
	{
		cmp_ok($hit, '>', 0, "$label: attempts met the fault");
	}
	diag("fault | $label | $fault | $hit attempts met it | outcomes: $outcomes");
}

sub mode
{
	my ($mode) = @_;
	return sub { $receiver->set_mode($mode) };
}

run_case('errors', '500 for 3 s', 3, mode('status 500'), mode('ok'));
run_case('hangs', 'no answer past the 1 s timeout, for 3 s', 3, mode('hang'), mode('ok'));
run_case('resets', 'connections reset for 3 s', 3, mode('reset'), mode('ok'));
run_case('huge', '50 MB answers for 3 s', 3, mode('huge 50'), mode('ok'));
run_case('down', 'the receiver down (connection refused) for 3 s', 3,
	sub { $receiver->stop }, sub { $receiver->restart });

# slow answers with every connection slot taken: 4 slots, 20 ms each
$node->safe_psql('postgres', q{ALTER SYSTEM SET webhook.max_concurrency = 4; SELECT pg_reload_conf()});
run_case('slow', 'answers of 20 ms through 4 connection slots', 0, mode('slow 20'), mode('ok'));
$node->safe_psql('postgres', q{ALTER SYSTEM RESET webhook.max_concurrency; SELECT pg_reload_conf()});

# 410: the profile is disabled at the first one and what waits is held;
# the deliveries that got it failed.  The operator enables the profiles
# and replays what failed: everything arrives, under its first webhook-id.
my $gone_start = $node->safe_psql('postgres', 'SELECT now()');
run_case('gone', '410', 1, mode('status 410'), sub {
	ok($node->poll_query_until('postgres', q{
		SELECT count(*) = 2 FROM webhook.profiles WHERE NOT enabled AND disabled_reason LIKE '%410%'}),
		'gone: 410 disables both profiles');
	$receiver->set_mode('ok');
	$node->safe_psql('postgres', qq{
		SELECT webhook.enable_profile('plain'), webhook.enable_profile('batched');
		SELECT webhook.replay('plain', '$gone_start'), webhook.replay('batched', '$gone_start');
	});
});

$receiver->stop;
$node->stop;
done_testing();
