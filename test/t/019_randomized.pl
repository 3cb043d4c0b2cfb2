# Operators at random while tickets are written: bursts of writers (single
# rows and 1,000-row statements, inserts and updates) while a driver picks,
# at random, among disable, enable, alter (url, batching, payload),
# add_event, remove_event, redeliver, replay, send_test and stopping the
# worker or the sender; between bursts, sometimes, pg_ctl restart -m fast.
# Then an oracle: every committed change of every profile arrived under
# exactly one webhook-id, nothing is stuck, and no operator call failed.
#
# WEBHOOK_SEED=<n> replays the driver's choices of a run (its timing is the
# machine's); WEBHOOK_DURATION=<seconds> sets how long the driver runs
# (test/bench/soak.sh runs it for ten minutes).
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use WebhookTest;

my $seed = $ENV{WEBHOOK_SEED} || int(rand(2**31));
my $duration = $ENV{WEBHOOK_DURATION} || 8;
srand($seed);
diag("seed $seed, $duration s (replay: WEBHOOK_SEED=$seed)");

my $node = new_webhook_node('randomized');
my $receiver = WebhookTest::Receiver->start;
$node->safe_psql('postgres', sample_schema());
$node->safe_psql('postgres', q{CREATE INDEX ON tickets (summary)});
my @profiles = qw(plain batched shaped steady);
$node->safe_psql('postgres', join "\n", q{
	CREATE EXTENSION webhook;
	SELECT webhook.define_ticket_events('tickets');},
	map { qq{SELECT webhook.create_profile('$_', '@{[ $receiver->url("/$_/0") ]}',
	                                       ARRAY['ticket.created', 'ticket.status_changed']);} } @profiles, 'churned');

my $dir = PostgreSQL::Test::Utils::tempdir();
open my $fh, '>', "$dir/single.sql" or die;
print $fh q{\set priority random(1, 4)
BEGIN;
INSERT INTO tickets (summary, status_id, priority_id) VALUES ('single', 1, 1) RETURNING ticket_id \gset
UPDATE tickets SET status_id = 2 WHERE ticket_id = :ticket_id;
UPDATE tickets SET priority_id = :priority WHERE ticket_id = :ticket_id;
END;
};
close $fh;
open $fh, '>', "$dir/bulk.sql" or die;
print $fh q{\set tag random(1, 2000000000)
BEGIN;
INSERT INTO tickets (summary, status_id, priority_id) SELECT 'bulk :tag', 1, 3 FROM generate_series(1, 1000);
UPDATE tickets SET status_id = 2 WHERE summary = 'bulk :tag';
END;
};
close $fh;

my (@operator_errors, @writer_errors);
my %enabled = map { $_ => 1 } @profiles;
my %state = (batched => 'none', shaped => 'small');
my @churn_bindings;
my %count;

sub operator
{
	my ($sql) = @_;
	my ($rc, $out, $err) = $node->psql('postgres', $sql);
	push @operator_errors, "$sql: $err" if $rc != 0;
	return $out;
}

sub stop_process
{
	my ($name) = @_;
	my ($postmaster) = split /\n/, slurp_file($node->data_dir . '/postmaster.pid');
	my ($pid) = `pgrep -P $postmaster -f '$name *\$'` =~ /(\d+)/;
	kill 'TERM', $pid if $pid;
}

my @actions = (
	disable => sub {
		my $p = $profiles[ rand 3 ];
		operator(qq{SELECT webhook.disable_profile('$p', 'randomized')});
		$enabled{$p} = 0;
	},
	enable => sub {
		my $p = $profiles[ rand 3 ];
		operator(qq{SELECT webhook.enable_profile('$p')});
		$enabled{$p} = 1;
	},
	url => sub {
		my $p = $profiles[ rand 3 ];
		my $url = $receiver->url("/$p/" . int(rand 1000));
		operator(qq{SELECT webhook.alter_profile('$p', url => '$url')});
	},
	batching => sub {
		$state{batched} = $state{batched} eq 'none' ? 'any_event' : 'none';
		operator(qq{SELECT webhook.alter_profile('batched', batching => '$state{batched}',
		                                         batch_wait => '50 milliseconds',
		                                         batch_max_items => @{[ 10 + int(rand 90) ]})});
	},
	payload => sub {
		$state{shaped} = (qw(small full event_only))[ rand 3 ];
		operator(qq{SELECT webhook.alter_profile('shaped', payload => '$state{shaped}')});
	},
	add_event => sub {
		my $id = operator(q{SELECT webhook.add_event('churned', 'ticket.priority_changed')});
		push @churn_bindings, $id if $id;
	},
	remove_event => sub {
		my $id = shift @churn_bindings or return;
		operator(qq{SELECT webhook.remove_event($id)});
	},
	redeliver => sub {
		operator(q{SELECT webhook.redeliver(delivery_id) FROM webhook.delivery
		            WHERE status = 'delivered' ORDER BY delivery_id DESC LIMIT 1});
	},
	replay => sub {
		my $p = $profiles[ rand 3 ];
		operator(qq{SELECT webhook.replay('$p', now() - interval '200 milliseconds', 'delivered')});
	},
	send_test => sub {
		my ($p) = grep { $enabled{$_} } @profiles;
		operator(qq{SELECT webhook.send_test('$p')}) if $p;
	},
	stop_worker => sub { stop_process('webhook worker') },
	stop_sender => sub { stop_process('webhook sender') },
);
my %action = @actions;
# a stopped worker is started again five seconds later: stop one rarely
my @names = map { /^stop_/ ? ($_) : (($_) x 20) } grep { !ref } @actions;

my $end = time + $duration;
my ($bursts, $restarts, $tx) = (0, 0, 0);
while (time < $end)
{
	my ($out, $err) = ('', '');
	my $writers = IPC::Run::start(
		[ 'pgbench', '-n', '-c', '3', '-j', '2', '-T', '3', '-R', '8',
		  '-f', "$dir/single.sql\@29", '-f', "$dir/bulk.sql\@1", $node->connstr('postgres') ],
		'>', \$out, '2>', \$err);
	while ($writers->pumpable)
	{
		my $name = $names[ rand @names ];
		$action{$name}->();
		$count{$name}++;
		$writers->pump_nb;
		usleep(10_000 + int(rand 40_000));
	}
	$writers->finish;
	$bursts++;
	push @writer_errors, $err unless $out =~ /number of failed transactions: 0 /;
	$tx += $1 if $out =~ /number of transactions actually processed: (\d+)/;
	if (rand() < 0.3)
	{
		$node->restart;
		$restarts++;
	}
}
diag(sprintf '%d bursts, %d transactions, %d restarts; %s', $bursts, $tx, $restarts,
	join ', ', map { "$_ $count{$_}" } sort keys %count);

# the end: every profile enabled, at its last URL
operator(qq{SELECT webhook.enable_profile('$_')}) for @profiles;
is(scalar @operator_errors, 0, 'no operator call failed') or diag(join "\n", @operator_errors[ 0 .. 9 ]);
is(scalar @writer_errors, 0, 'no writer saw an error') or diag(join "\n", @writer_errors[ 0 .. 2 ]);
ok($node->poll_query_until('postgres', q{
	SELECT (SELECT count(*) FROM webhook.occurrence) = 0
	   AND (SELECT count(*) FROM webhook.delivery WHERE status <> 'delivered') = 0}),
	'nothing is stuck: every delivery is delivered')
  or diag($node->safe_psql('postgres', q{SELECT profile, status, count(*) FROM webhook.deliveries GROUP BY 1, 2}));

# what arrived, with a 2xx: the webhook-ids of each change of each profile
my %ids_of;      # "profile event ticket" => { webhook-id => 1 }
my %received;    # webhook-id => requests answered 200
for my $r (@{ $receiver->requests })
{
	next unless $r->{answer} eq '200' && defined $r->{json};
	my $id = $r->{headers}{'webhook-id'};
	$received{$id}++;
	for my $e (ref $r->{json} eq 'ARRAY' ? @{ $r->{json} } : ($r->{json}))
	{
		next if $e->{event} eq 'ping';
		$ids_of{"$e->{profile} $e->{event} $e->{object_id}"}{$id} = 1;
	}
}
my @tickets = split /\n/, $node->safe_psql('postgres', q{SELECT ticket_id FROM tickets ORDER BY 1});
for my $p (@profiles)
{
	for my $event ('ticket.created', 'ticket.status_changed')
	{
		my ($missing, $split) = (0, 0);
		for my $t (@tickets)
		{
			my $ids = $ids_of{"$p $event $t"};
			$missing++ unless $ids;
			$split++ if $ids && keys %$ids > 1;
		}
		is("$missing/$split", '0/0',
			"$p $event: each of " . scalar(@tickets) . ' committed tickets arrived, under one webhook-id');
	}
}
my $split_churn = grep { /^churned / && keys %{ $ids_of{$_} } > 1 } keys %ids_of;
is($split_churn, 0, 'churned: no change arrived under two webhook-ids');

# sent again on purpose: redelivered and replayed; else, a request that was
# on the wire when its worker or sender was stopped, or the server restarted
my %resent = map { $_ => 1 } split /\n/, $node->safe_psql('postgres', q{
	SELECT webhook_id FROM webhook.delivery GROUP BY 1 HAVING count(*) > 1});
my $again = grep { !$resent{$_} && $received{$_} > 1 } keys %received;
diag(sprintf 'reliability | randomized (seed %d, %d s) | %d tickets | %d webhook-ids | %d received again',
	$seed, $duration, scalar @tickets, scalar keys %received, $again);

$receiver->stop;
$node->stop;
done_testing();
