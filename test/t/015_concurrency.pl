# Eight writers commit ticket changes (pgbench) while profiles are altered,
# disabled and enabled, and events bound and unbound: no writer sees an
# error, nothing is lost for the profiles, and what a disabled profile held
# goes out once it is enabled.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WebhookTest;

my $node = new_webhook_node('concurrency');
my $receiver = WebhookTest::Receiver->start;
$node->safe_psql('postgres', sample_schema());
my %url = map { $_ => $receiver->url("/$_") } qw(steady toggled churned);
$node->safe_psql('postgres', qq{
	CREATE EXTENSION webhook;
	SELECT webhook.define_ticket_events('tickets');
	SELECT webhook.create_profile('steady', '$url{steady}', ARRAY['ticket.created', 'ticket.status_changed']);
	SELECT webhook.create_profile('toggled', '$url{toggled}', ARRAY['ticket.created']);
	SELECT webhook.create_profile('churned', '$url{churned}', ARRAY['ticket.created'],
	                              batching => 'any_event', batch_wait => '100 milliseconds');
});

my $script = PostgreSQL::Test::Utils::tempdir() . '/writers.sql';
open my $fh, '>', $script or die;
print $fh q{BEGIN;
INSERT INTO tickets (summary, status_id, priority_id) VALUES ('writer ' || :client_id, 1, 1 + :client_id % 4) RETURNING ticket_id \gset
UPDATE tickets SET status_id = 2 WHERE ticket_id = :ticket_id;
END;
};
close $fh;
my ($out, $err) = ('', '');
my $writers = IPC::Run::start(
	[ 'pgbench', '-n', '-c', '8', '-j', '2', '-T', '5', '-f', $script, $node->connstr('postgres') ],
	'>', \$out, '2>', \$err);

# meanwhile: alter, disable and enable one profile; bind and unbind an
# event of another; each change its own transaction
my $turns = 0;
while ($writers->pumpable)
{
	$node->safe_psql('postgres', q{SELECT webhook.disable_profile('toggled', 'test')});
	$node->safe_psql('postgres', qq{SELECT webhook.alter_profile('toggled', timeout => '@{[ 2 + $turns % 3 ]} seconds',
	                                                             headers => '{"X-Turn": "$turns"}')});
	my $binding = $node->safe_psql('postgres', q{SELECT webhook.add_event('churned', 'ticket.status_changed')});
	$node->safe_psql('postgres', q{SELECT webhook.enable_profile('toggled')});
	$node->safe_psql('postgres', qq{SELECT webhook.remove_event($binding)});
	$node->safe_psql('postgres', qq{SELECT webhook.alter_profile('churned', batch_max_items => @{[ 10 + ($turns % 5) * 10 ]})});
	$turns++;
	$writers->pump_nb;
	select(undef, undef, undef, 0.05);
}
$writers->finish;
is($?, 0, 'pgbench ended normally') or diag($err);
like($out, qr/number of failed transactions: 0 /, 'no writer saw an error') or diag($out, $err);
my ($tx) = $out =~ /number of transactions actually processed: (\d+)/;
cmp_ok($tx // 0, '>', 100, "the writers committed ($tx transactions, $turns turns of changes)");

ok($node->poll_query_until('postgres', q{
	SELECT (SELECT count(*) FROM webhook.occurrence) = 0
	   AND (SELECT count(*) FROM webhook.delivery d JOIN webhook.profile p USING (profile_id)
	         WHERE d.status <> 'delivered' AND p.name <> 'toggled') = 0}),
	'every delivery of the steady and churned profiles is delivered');
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 0 FROM webhook.delivery WHERE status <> 'delivered'}),
	'every delivery of the toggled profile is delivered, held ones included')
  or diag($node->safe_psql('postgres', q{SELECT profile, status, count(*) FROM webhook.deliveries GROUP BY 1, 2}));

my @tickets = split /\n/, $node->safe_psql('postgres', q{SELECT ticket_id FROM tickets ORDER BY 1});
my %got;
for my $r (@{ $receiver->requests })
{
	next unless $r->{answer} eq '200' && defined $r->{json};
	for my $e (ref $r->{json} eq 'ARRAY' ? @{ $r->{json} } : ($r->{json}))
	{
		$got{"$r->{path} $e->{event}"}{ $e->{ticket}{ticket_id} }++;
	}
}
for my $want ('/steady ticket.created', '/steady ticket.status_changed', '/toggled ticket.created',
	'/churned ticket.created')
{
	my $missing = grep { !$got{$want}{$_} } @tickets;
	my $duplicated = 0;
	$duplicated += $_ - 1 for values %{ $got{$want} };
	is($missing, 0, "$want: every one of the " . scalar(@tickets) . " committed tickets");
	diag(sprintf 'reliability | concurrency | %s | %d | %d | %d | %d', $want, scalar @tickets,
		scalar(@tickets) - $missing, $duplicated, $missing);
}

$receiver->stop;
$node->stop;
done_testing();
