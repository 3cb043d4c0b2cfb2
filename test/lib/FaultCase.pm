# FaultCase: ticket changes committed while a fault is injected, checked
# against the receiver's record and the queue.
#
# Two profiles send ticket.created to the receiver's /fault/ paths (whose
# answers the test changes with set_mode): "plain", one request per change,
# and "batched", batches of up to 50.  Both retry every second.
package FaultCase;

use strict;
use warnings;

use Exporter 'import';
use PostgreSQL::Test::Utils;
use Test::More;
use WebhookTest;

our @EXPORT = qw(fault_setup commit_tickets wait_drained check_case);

# A started node with the sample schema, the extension, the ticket events
# and the two profiles, and a receiver.  Options: init (for the node),
# timeout (of the profiles' requests), max_concurrency.
sub fault_setup
{
	my ($name, %opt) = @_;
	my $node = new_webhook_node($name, %{ $opt{init} // {} });
	my $receiver = WebhookTest::Receiver->start;
	my $timeout = $opt{timeout} // '2 seconds';
	my %url = map { $_ => $receiver->url("/fault/$_") } qw(plain batched);
	$node->safe_psql('postgres', sample_schema());
	$node->safe_psql('postgres', q{
		CREATE EXTENSION webhook;
		SELECT webhook.define_ticket_events('tickets');
	});
	$node->safe_psql('postgres', qq{
		ALTER SYSTEM SET webhook.max_concurrency = $opt{max_concurrency};
		SELECT pg_reload_conf();
	}) if $opt{max_concurrency};
	$node->safe_psql('postgres', qq{
		SELECT webhook.create_profile('plain', '$url{plain}', ARRAY['ticket.created'],
		    retry_schedule => '{1 second}', max_attempts => 100, timeout => '$timeout');
		SELECT webhook.create_profile('batched', '$url{batched}', ARRAY['ticket.created'],
		    batching => 'any_event', batch_wait => '200 milliseconds', batch_max_items => 50,
		    retry_schedule => '{1 second}', max_attempts => 100, timeout => '$timeout');
	});
	return ($node, $receiver);
}

# Tickets "$label $from" .. "$label $to", 100 to a transaction, and one
# transaction of 50 that rolls back.
sub commit_tickets
{
	my ($node, $label, $from, $to) = @_;
	my $sql = "BEGIN; INSERT INTO tickets (summary, status_id)"
	  . " SELECT '$label rolled back ' || g, 1 FROM generate_series($from, $from + 49) g; ROLLBACK;\n";
	for (my $i = $from; $i <= $to; $i += 100)
	{
		my $last = $i + 99 > $to ? $to : $i + 99;
		$sql .= "INSERT INTO tickets (summary, status_id)"
		  . " SELECT '$label ' || g, 1 FROM generate_series($i, $last) g;\n";
	}
	$node->safe_psql('postgres', $sql);
}

# Until nothing waits: no queued change, no delivery waiting or on the wire
# (failed ones, which only a 410 makes here, are replayed by the test).
sub wait_drained
{
	my ($node, $timeout) = @_;
	local $PostgreSQL::Test::Utils::timeout_default = $timeout // 180;
	return $node->poll_query_until('postgres', q{
		SELECT (SELECT count(*) FROM webhook.occurrence) = 0
		   AND (SELECT count(*) FROM webhook.delivery
		         WHERE status IN ('pending', 'sending', 'retrying', 'held')) = 0});
}

# The checks of one case, per profile, and its line of the reliability
# table: committed, delivered, duplicated (extra 2xx receipts), lost.
# With no_duplicates => 1, a change received twice is a failure too.
sub check_case
{
	my ($node, $receiver, $label, %opts) = @_;
	ok(wait_drained($node), "$label: the queue drains");
	my @committed = split /\n/, $node->safe_psql('postgres',
		"SELECT ticket_id FROM tickets WHERE summary LIKE '$label %' ORDER BY 1");
	my $requests = $receiver->requests;
	my @lines;
	for my $profile (qw(plain batched))
	{
		my (%received, %ids_of_change, %bodies_of_id);
		my $rolled_back = 0;
		for my $r (@$requests)
		{
			next unless $r->{path} eq "/fault/$profile" && defined $r->{json};
			my @all = ref $r->{json} eq 'ARRAY' ? @{ $r->{json} } : ($r->{json});
			my @mine = grep { ($_->{ticket}{summary} // '') =~ /^\Q$label\E / } @all;
			next unless @mine;
			my $webhook_id = $r->{headers}{'webhook-id'};
			$bodies_of_id{$webhook_id}{ join ',', map { $_->{id} } @all } = 1;
			for my $e (@mine)
			{
				$rolled_back++ if $e->{ticket}{summary} =~ /rolled back/;
				$ids_of_change{ $e->{id} }{$webhook_id} = 1;
				$received{ $e->{ticket}{ticket_id} }++ if $r->{answer} =~ /^2\d\d$/;
			}
		}
		my $delivered = grep { $received{$_} } @committed;
		my $duplicated = 0;
		$duplicated += $_ - 1 for values %received;
		my $lost = @committed - $delivered;
		is($lost, 0, "$label, $profile: every committed change delivered");
		is($rolled_back, 0, "$label, $profile: no rolled-back change sent");
		is($duplicated, 0, "$label, $profile: nothing that was answered was sent again")
		  if $opts{no_duplicates};
		is(scalar(grep { keys %$_ > 1 } values %ids_of_change), 0,
			"$label, $profile: a change that went out twice went under one webhook-id");
		is(scalar(grep { keys %$_ > 1 } values %bodies_of_id), 0,
			"$label, $profile: every request of a webhook-id carried the same changes");
		push @lines, sprintf('reliability | %s | %s | %d | %d | %d | %d',
			$label, $profile, scalar @committed, $delivered, $duplicated, $lost);
	}
	is($node->safe_psql('postgres', q{
		SELECT (SELECT count(*) FROM webhook.batch_item) + (SELECT count(*) FROM webhook.occurrence)}),
		'0', "$label: nothing stuck");
	diag($_) for @lines;
	return @committed;
}

1;
