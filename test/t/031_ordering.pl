# ordering => 'per_object': a profile's deliveries of one ticket (its own
# changes and its actions') go out one at a time, in commit order, the next
# only once the one before got a 2xx or failed; a retrying ticket holds
# only its own.  Checked on what the receiver got, in the order it got it,
# from a receiver that fails requests at random; a profile that does not
# order, fed the same changes, shows that the check can tell.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WebhookTest;

my $node = new_webhook_node('ordering');
my $receiver = WebhookTest::Receiver->start;

$node->safe_psql('postgres', WebhookTest::sample_schema());
$node->safe_psql('postgres', qq{
	CREATE EXTENSION webhook;
	SELECT webhook.define_ticket_events('tickets', 'actions');
	CREATE SEQUENCE seq;
	SELECT webhook.create_profile('ordered', '@{[ $receiver->url('/flaky/30/ordered') ]}',
	                              ARRAY['ticket.created', 'ticket.updated', 'action.added'],
	                              ordering => 'per_object', max_attempts => 100,
	                              retry_schedule => '{50 ms}');
	SELECT webhook.create_profile('unordered', '@{[ $receiver->url('/flaky/30/unordered') ]}',
	                              ARRAY['ticket.created', 'ticket.updated', 'action.added'],
	                              max_attempts => 100, retry_schedule => '{50 ms}');
	SELECT webhook.create_profile('batched', '@{[ $receiver->url('/flaky/30/batched') ]}',
	                              ARRAY['ticket.created', 'ticket.updated', 'action.added'],
	                              ordering => 'per_object', batching => 'any_event',
	                              batch_max_items => 7, batch_wait => '200 ms',
	                              max_attempts => 100, retry_schedule => '{50 ms}');
});
is($node->safe_psql('postgres', "SELECT string_agg(name || '=' || ordering, ',' ORDER BY name) FROM webhook.profiles"),
	'batched=per_object,ordered=per_object,unordered=none', 'webhook.profiles shows ordering');

# The ticket and the change number (seq N) an item is about.
sub item_seq
{
	my ($item) = @_;
	if ($item->{action})
	{
		return ($item->{action}{ticket_id}, $item->{action}{note} =~ /seq (\d+)/);
	}
	return ($item->{ticket}{ticket_id}, $item->{ticket}{details} =~ /seq (\d+)/);
}

# Walks the requests of a path prefix in the order they arrived: per
# ticket, a change is sent for the first time only after every earlier
# change of its ticket got a 200.  Returns the violations, and the changes
# delivered per ticket.
sub order_violations
{
	my ($prefix, $requests) = @_;
	my (%head, %head_ok, %delivered);
	my $violations = 0;
	for my $r (@$requests)
	{
		next unless index($r->{path}, $prefix) == 0 && $r->{json};
		my ($ticket, $seq) = item_seq($r->{json});
		if (!exists $head{$ticket} || $seq != $head{$ticket})
		{
			$violations++ if exists $head{$ticket} && (!$head_ok{$ticket} || $seq < $head{$ticket});
			$head{$ticket} = $seq;
		}
		$head_ok{$ticket} = $r->{answer} eq '200';
		push @{ $delivered{$ticket} }, $seq if $head_ok{$ticket};
	}
	return ($violations, \%delivered);
}

sub all_done
{
	my ($profile, $count) = @_;
	return $node->poll_query_until('postgres', qq{
		SELECT count(*) >= $count AND bool_and(status = 'delivered') FROM webhook.deliveries
		 WHERE profile = '$profile'});
}

# 1. 12 tickets, each created, updated 6 times and given 2 actions, the
# tickets' changes interleaved, each its own transaction
my $tickets = 12;
my $sql = '';
for my $t (1 .. $tickets)
{
	$sql .= "INSERT INTO tickets (ticket_id, summary, details, status_id) VALUES ($t, 'T$t', 'seq ' || nextval('seq'), 1);\n";
}
for my $round (1 .. 8)
{
	for my $t (1 .. $tickets)
	{
		$sql .= $round % 4 == 0
		  ? "INSERT INTO actions (ticket_id, note) VALUES ($t, 'seq ' || nextval('seq'));\n"
		  : "UPDATE tickets SET details = 'seq ' || nextval('seq') WHERE ticket_id = $t;\n";
	}
}
$node->safe_psql('postgres', $sql);
my $per_ticket = 9;
ok(all_done('ordered', $tickets * $per_ticket), 'the ordered profile delivered every change');
ok(all_done('unordered', $tickets * $per_ticket), 'the unordered one too');
ok($node->poll_query_until('postgres', q{
	SELECT count(*) > 0 AND bool_and(status = 'delivered') FROM webhook.deliveries WHERE profile = 'batched'}),
	'the batching one too');

my $requests = $receiver->requests;
my ($violations, $delivered) = order_violations('/flaky/30/ordered', $requests);
is($violations, 0, 'ordered: no change went out before the one before it had a 200');
my $in_order = grep { my @s = @{ $delivered->{$_} }; @s == $per_ticket && join(',', @s) eq join(',', sort { $a <=> $b } @s) }
  keys %$delivered;
is($in_order, $tickets, "ordered: each ticket's $per_ticket changes arrived once each, in commit order");
my $failures = grep { index($_->{path}, '/flaky/30/ordered') == 0 && $_->{answer} ne '200' } @$requests;
cmp_ok($failures, '>', 10, "the receiver failed $failures of them on the way");
my ($unordered_violations) = order_violations('/flaky/30/unordered', $requests);
cmp_ok($unordered_violations, '>', 0,
	"unordered: the same changes went out of order ($unordered_violations times): the check can tell");

# batches: one at a time (a new batch only after the last one had a 200),
# and each ticket's items in commit order inside and across them
my ($batch_head, $batch_ok, $batch_violations, %batch_items) = ('', 1, 0);
for my $r (grep { index($_->{path}, '/flaky/30/batched') == 0 } @$requests)
{
	my $id = $r->{headers}{'webhook-id'};
	if ($id ne $batch_head)
	{
		$batch_violations++ unless $batch_ok;
		$batch_head = $id;
	}
	$batch_ok = $r->{answer} eq '200';
	next unless $batch_ok;
	for my $item (@{ $r->{json} })
	{
		my ($ticket, $seq) = item_seq($item);
		push @{ $batch_items{$ticket} }, $seq;
	}
}
is($batch_violations, 0, 'batched: no batch went out before the one before it had a 200');
my $batches_in_order = grep { my @s = @{ $batch_items{$_} }; @s == $per_ticket && join(',', @s) eq join(',', sort { $a <=> $b } @s) }
  keys %batch_items;
is($batches_in_order, $tickets, "batched: each ticket's changes in commit order inside and across batches");

# 2. replay resends in order: each ticket's again one at a time, in order
my $before = scalar @$requests;
is($node->safe_psql('postgres', q{SELECT webhook.replay('ordered', now() - interval '1 hour', 'delivered')}),
	$tickets * $per_ticket, 'replay resends every delivered change');
ok($node->poll_query_until('postgres', qq{
	SELECT count(*) = 2 * $tickets * $per_ticket AND bool_and(status = 'delivered') FROM webhook.deliveries
	 WHERE profile = 'ordered'}), 'and they are delivered');
$requests = $receiver->requests;
my @replayed = @$requests[ $before .. $#$requests ];
($violations, $delivered) = order_violations('/flaky/30/ordered', \@replayed);
is($violations, 0, 'replayed: none went out before the one before it had a 200');
$in_order = grep { my @s = @{ $delivered->{$_} }; join(',', @s) eq join(',', sort { $a <=> $b } @s) } keys %$delivered;
is($in_order, $tickets, "replayed: each ticket's changes in commit order");

# 3. a ticket whose change keeps failing holds its own changes only (the
# receiver fails the change that sets HOLD, not those after it, whose
# changes show HOLD as the old value)
$node->safe_psql('postgres', qq{
	SELECT webhook.create_profile('held', '@{[ $receiver->url('/fault/held') ]}',
	                              ARRAY['ticket.updated'], ordering => 'per_object',
	                              max_attempts => 100, retry_schedule => '{100 ms}');
});
$receiver->set_mode('fail-if "new" : "HOLD');
$node->safe_psql('postgres', q{
	UPDATE tickets SET details = 'HOLD seq ' || nextval('seq') WHERE ticket_id = 1;
	UPDATE tickets SET details = 'seq ' || nextval('seq') WHERE ticket_id = 1;
	UPDATE tickets SET details = 'seq ' || nextval('seq') WHERE ticket_id = 1;
	UPDATE tickets SET details = 'seq ' || nextval('seq') WHERE ticket_id IN (2, 3);
	UPDATE tickets SET details = 'seq ' || nextval('seq') WHERE ticket_id IN (2, 3);
});
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 4 FROM webhook.deliveries WHERE profile = 'held' AND status = 'delivered'}),
	'the other tickets flow while one retries');
ok($node->poll_query_until('postgres', q{
	SELECT count(*) FILTER (WHERE status = 'waiting') = 2
	   AND count(*) FILTER (WHERE status = 'retrying' AND attempts >= 2) = 1
	  FROM webhook.deliveries WHERE profile = 'held' AND order_key = 'ticket:1'}),
	'the retrying ticket\'s later changes wait');
is($node->safe_psql('postgres', q{
	SELECT count(*) FILTER (WHERE next_attempt_at IS NULL) FROM webhook.deliveries
	 WHERE profile = 'held' AND status = 'waiting'}), '2', 'a waiting delivery shows no due time');
is($node->safe_psql('postgres', "SELECT waiting FROM webhook.stats WHERE profile = 'held'"), '2',
	'webhook.stats counts them');

# redeliver is out of order: it goes at once, the ticket's head retrying or not
my $redelivered = $node->safe_psql('postgres', q{
	SELECT webhook.redeliver(min(delivery_id)) FROM webhook.deliveries
	 WHERE profile = 'ordered' AND order_key = 'ticket:1'});
ok($node->poll_query_until('postgres', qq{
	SELECT status = 'delivered' AND order_key IS NULL FROM webhook.deliveries WHERE delivery_id = $redelivered}),
	'a redelivery goes at once, in no order');

$receiver->set_mode('ok');
ok($node->poll_query_until('postgres', q{
	SELECT bool_and(status = 'delivered') FROM webhook.deliveries WHERE profile = 'held'}),
	'once the head is delivered, its ticket\'s changes follow');
my @held = map { (item_seq($_->{json}))[1] }
  grep { $_->{path} eq '/fault/held' && $_->{answer} eq '200' && $_->{json}{ticket}{ticket_id} == 1 }
  @{ $receiver->requests };
is(join(',', @held), join(',', sort { $a <=> $b } @held), 'in commit order');

# 4. a profile that stops ordering sends what waited at once
$receiver->set_mode('fail-if "new" : "HOLD');
$node->safe_psql('postgres', q{
	UPDATE tickets SET details = 'HOLD seq ' || nextval('seq') WHERE ticket_id = 4;
	UPDATE tickets SET details = 'seq ' || nextval('seq') WHERE ticket_id = 4;
	UPDATE tickets SET details = 'seq ' || nextval('seq') WHERE ticket_id = 4;
});
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 2 FROM webhook.deliveries WHERE profile = 'held' AND status = 'waiting'}),
	'two wait behind a failing head');
$node->safe_psql('postgres', q{SELECT webhook.alter_profile('held', ordering => 'none')});
ok($node->poll_query_until('postgres', q{
	SELECT string_agg(status, ',' ORDER BY delivery_id) = 'retrying,delivered,delivered'
	  FROM (SELECT * FROM webhook.deliveries WHERE profile = 'held' ORDER BY delivery_id DESC LIMIT 3) AS last}),
	'after alter_profile(ordering => none) they go at once, the head still retrying');
$receiver->set_mode('ok');
ok($node->poll_query_until('postgres', q{
	SELECT bool_and(status = 'delivered') FROM webhook.deliveries WHERE profile = 'held'}),
	'and the head after it');

$receiver->stop;
$node->stop;
done_testing();
