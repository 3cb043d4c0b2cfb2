# Batching end to end: which occurrences go out together in each mode, in
# what order, cut at batch_max_items; the wait; a restart while a batch
# waits; retries of a batch; settings changed while batches wait.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WebhookTest;

my $node = new_webhook_node('batching');
my $receiver = WebhookTest::Receiver->start;

$node->safe_psql('postgres', sample_schema());
$node->safe_psql('postgres', q{
	CREATE EXTENSION webhook;
	SELECT webhook.define_ticket_events('tickets', 'actions');
});

# What a batch request carries: [event, ticket summary, binding] per item.
sub items_of
{
	my ($request) = @_;
	return [ map { "$_->{event} $_->{ticket}{summary} b$_->{binding_id}" } @{ $request->{json} } ];
}

sub on_path
{
	my ($path) = @_;
	return sub { $_[0]->{path} eq $path };
}

# The wait of every profile is long enough for the changes below to be
# committed well within it; each change is a transaction of its own.
my %url = map { $_ => $receiver->url("/$_") } qw(binding event any);
$node->safe_psql('postgres', qq{
	SELECT webhook.create_profile('binding', '$url{binding}', ARRAY['ticket.updated'],
	                              batching => 'same_event', batch_wait => '4 seconds');
	SELECT webhook.create_profile('event', '$url{event}', ARRAY['ticket.updated'],
	                              batching => 'same_event_type', batch_wait => '4 seconds');
	SELECT webhook.create_profile('any', '$url{any}', ARRAY['ticket.updated'],
	                              batching => 'any_event', batch_wait => '4 seconds',
	                              batch_max_items => 3);
});
# two bindings of ticket.created on each: tickets that are not urgent, and
# urgent ones (a change matching both would be one item, of the first)
my (%created, %urgent);
for my $p (qw(binding event any))
{
	$created{$p} = $node->safe_psql('postgres', qq{
		SELECT webhook.add_event('$p', 'ticket.created', '[{"field": "priority_id", "op": "ne", "value": 1}]')});
	$urgent{$p} = $node->safe_psql('postgres', qq{
		SELECT webhook.add_event('$p', 'ticket.created', '[{"field": "priority_id", "op": "eq", "value": 1}]')});
}
my %updated = map {
	$_ => $node->safe_psql('postgres', qq{
		SELECT binding_id FROM webhook.bindings WHERE profile = '$_' AND event = 'ticket.updated'})
} qw(binding event any);

$node->safe_psql('postgres', q{
	INSERT INTO tickets (summary, status_id, priority_id) VALUES ('one', 1, 1);
	INSERT INTO tickets (summary, status_id, priority_id) VALUES ('two', 1, 2);
	INSERT INTO tickets (summary, status_id, priority_id) VALUES ('three', 1, 1);
	UPDATE tickets SET summary = 'one again' WHERE summary = 'one';
});
my $first_captured = $node->safe_psql('postgres',
	q{SELECT extract(epoch FROM min(captured_at)) FROM webhook.delivery});

my $same_event = $receiver->wait_for(3, on_path('/binding'), 30);
my %by_first = map { $_->{json}[0]{binding_id} => items_of($_) } @$same_event;
is_deeply(
	\%by_first,
	{
		$created{binding} => ["ticket.created two b$created{binding}"],
		$urgent{binding} => [
			"ticket.created one b$urgent{binding}",
			"ticket.created three b$urgent{binding}"
		],
		$updated{binding} => ["ticket.updated one again b$updated{binding}"],
	},
	'same_event: one batch per binding, in commit order');

my $same_type = $receiver->wait_for(2, on_path('/event'), 30);
my %by_event = map { $_->{json}[0]{event} => items_of($_) } @$same_type;
is_deeply(
	\%by_event,
	{
		'ticket.created' => [
			"ticket.created one b$urgent{event}",
			"ticket.created two b$created{event}",
			"ticket.created three b$urgent{event}"
		],
		'ticket.updated' => ["ticket.updated one again b$updated{event}"],
	},
	'same_event_type: one batch per event, across bindings, in commit order');

my $any = $receiver->wait_for(2, on_path('/any'), 30);
is_deeply(
	[ map { items_of($_) } @$any ],
	[
		[
			"ticket.created one b$urgent{any}",
			"ticket.created two b$created{any}",
			"ticket.created three b$urgent{any}"
		],
		["ticket.updated one again b$updated{any}"]
	],
	'any_event: every event in one batch, cut at batch_max_items');
ok($any->[0]{received_at} < $first_captured + 4,
	'a batch that reaches batch_max_items goes out before the wait is over');
cmp_ok($any->[1]{received_at}, '>=', $first_captured + 4, 'the rest wait for the wait to end');

my @all = (@$same_event, @$same_type, @$any);
is(scalar(grep { ref $_->{json} ne 'ARRAY' } @all), 0, 'every batch is a JSON array');
my %item_ids;
$item_ids{ $_->{id} }++ for map { @{ $_->{json} } } @all;
is(scalar(keys %item_ids), 4 + 4 + 4, 'each item keeps an id of its own');
my %batch_ids = map { $_->{headers}{'webhook-id'} => 1 } @all;
is(scalar(keys %batch_ids), scalar(@all), 'each batch has a webhook-id of its own');
ok(!grep({ $item_ids{ $_->{headers}{'webhook-id'} } } @all), 'which is none of its items\' ids');
# (the outcomes are recorded a moment after the receiver has read them)
ok($node->poll_query_until('postgres', q{
	SELECT string_agg(p.name || ':' || d.items || ':' || d.status, ' ' ORDER BY p.name, d.items)
	  FROM webhook.delivery d JOIN webhook.profile p USING (profile_id)},
	'any:1:delivered any:3:delivered binding:1:delivered binding:1:delivered binding:2:delivered '
	  . 'event:1:delivered event:3:delivered'),
	'the deliveries count their items');

# A backlog: the changes of one statement fill many batches at once.
$node->safe_psql('postgres', qq{
	SELECT webhook.create_profile('backlog', '${\ $receiver->url('/backlog')}', ARRAY['action.added'],
	                              batching => 'any_event', batch_wait => '2 seconds', batch_max_items => 10);
	INSERT INTO actions (ticket_id, note) SELECT 1, 'bulk ' || g FROM generate_series(1, 95) g;
});
my $backlog = $receiver->wait_for(10, on_path('/backlog'), 30);
is_deeply([ sort { $a <=> $b } map { scalar @{ $_->{json} } } @$backlog ], [ 5, (10) x 9 ],
	'95 changes of one statement: nine batches of ten and one of five');
is_deeply([ map { $_->{action}{note} } map { @{ $_->{json} } }
			sort { $a->{json}[0]{action}{action_id} <=> $b->{json}[0]{action}{action_id} } @$backlog ],
	[ map { "bulk $_" } 1 .. 95 ], 'each change once, in order');

# The wait: not early, and on time (the worker sleeps until the batch is
# due; nothing else would wake it for a minute).
$node->safe_psql('postgres', qq{
	SELECT webhook.create_profile('waits', '${\ $receiver->url('/waits')}', ARRAY['action.added'],
	                              batching => 'any_event', batch_wait => '3 seconds');
	INSERT INTO actions (ticket_id, note) VALUES (1, 'first');
	INSERT INTO actions (ticket_id, note) VALUES (1, 'second');
});
my ($due, $webhook_id) = split /\|/, $node->safe_psql('postgres', q{
	SELECT extract(epoch FROM min(next_attempt_at)), min(webhook_id) FROM webhook.delivery
	 WHERE profile_id = (SELECT profile_id FROM webhook.profile WHERE name = 'waits')});
my $waits = $receiver->wait_for(1, on_path('/waits'), 30);
is(scalar(@{ $waits->[0]{json} }), 2, 'the batch holds both actions');
cmp_ok($waits->[0]{received_at}, '>=', $due, 'the batch is not sent before it is due');
cmp_ok($waits->[0]{received_at}, '<', $due + 5, 'and is sent when it is due');
is($waits->[0]{headers}{'webhook-id'}, $webhook_id, 'under the webhook-id of its delivery');

# A restart while a batch waits: it keeps its items, takes more after the
# restart, and goes out once, whole.  An immediate stop may lose the
# worker's last commits (they do not wait for the disk): the batch is then
# made again from the queue, under the same webhook-id.
$node->safe_psql('postgres', qq{
	SELECT webhook.create_profile('restart', '${\ $receiver->url('/restart')}', ARRAY['action.added'],
	                              batching => 'any_event', batch_wait => '12 seconds');
	INSERT INTO actions (ticket_id, note) VALUES (2, 'before 1');
	INSERT INTO actions (ticket_id, note) VALUES (2, 'before 2');
});
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 1 FROM webhook.deliveries WHERE profile = 'restart' AND items = 2}),
	'a batch of two waits');
my $restart_id = $node->safe_psql('postgres',
	q{SELECT webhook_id FROM webhook.deliveries WHERE profile = 'restart'});
$node->stop('immediate');
$node->start;
$node->safe_psql('postgres', q{INSERT INTO actions (ticket_id, note) VALUES (2, 'after')});
my $restarted = $receiver->wait_for(1, on_path('/restart'), 60);
is_deeply([ map { $_->{action}{note} } @{ $restarted->[0]{json} } ],
	[ 'before 1', 'before 2', 'after' ], 'the batch survives the restart and takes more');
is($restarted->[0]{headers}{'webhook-id'}, $restart_id, 'under the webhook-id it had before');
sleep 1;
is(scalar(grep { $_->{path} eq '/restart' } @{ $receiver->requests }), 1, 'and is sent once');

# A batch already due when the server starts again goes out at once.
$node->safe_psql('postgres', qq{
	SELECT webhook.create_profile('overdue', '${\ $receiver->url('/overdue')}', ARRAY['action.added'],
	                              batching => 'any_event', batch_wait => '2 seconds');
	INSERT INTO actions (ticket_id, note) VALUES (3, 'overdue');
});
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 1 FROM webhook.deliveries WHERE profile = 'overdue' AND status = 'pending'}),
	'the batch waits');
$node->stop('fast');
sleep 3;
$node->start;
my $overdue = $receiver->wait_for(1, on_path('/overdue'), 30);
is(scalar(@$overdue), 1, 'a batch overdue at start is sent');

# Retries: a batch is one delivery; each attempt sends the same body under
# the same webhook-id.
$node->safe_psql('postgres', qq{
	SELECT webhook.create_profile('failing', '${\ $receiver->url('/status/500')}', ARRAY['action.added'],
	                              batching => 'any_event', batch_wait => '1 second',
	                              max_attempts => 3, retry_schedule => '{1 second}');
	INSERT INTO actions (ticket_id, note) VALUES (3, 'retried 1');
	INSERT INTO actions (ticket_id, note) VALUES (3, 'retried 2');
});
my $retried = $receiver->wait_for(3, on_path('/status/500'), 60);
is(scalar(@$retried), 3, 'the batch is tried max_attempts times');
is(scalar(keys %{ { map { $_->{headers}{'webhook-id'} => 1 } @$retried } }), 1, 'under one webhook-id');
is(scalar(keys %{ { map { $_->{body} => 1 } @$retried } }), 1, 'with one body');
ok($node->poll_query_until('postgres', q{
	SELECT status = 'failed' AND attempts = 3 AND items = 2
	       AND (SELECT count(*) FROM webhook.attempts a WHERE a.delivery_id = d.delivery_id) = 3
	  FROM webhook.deliveries d WHERE profile = 'failing'}),
	'one delivery, failed after three attempts, each recorded');

# Settings changed while batches wait.  A lower batch_max_items cuts a
# waiting batch in order; a new mode sends the open batch as it is; a
# shorter wait moves the due time.
$node->safe_psql('postgres', qq{
	SELECT webhook.create_profile('altered', '${\ $receiver->url('/altered')}', ARRAY['action.added'],
	                              batching => 'any_event', batch_wait => '1 hour', enabled => false);
	INSERT INTO actions (ticket_id, note) SELECT 3, 'cut ' || g FROM generate_series(1, 25) g;
});
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 1 FROM webhook.deliveries WHERE profile = 'altered' AND items = 25 AND status = 'held'}),
	'a held batch of 25 waits');
is($node->safe_psql('postgres', q{
	SELECT jsonb_array_length(d.request_body) || ' ' || s.queued || ' ' || s.held
	  FROM webhook.deliveries d JOIN webhook.stats s USING (profile) WHERE d.profile = 'altered'}),
	'25 25 1', 'deliveries shows its items so far, stats counts them as queued');
my $waiting = $node->safe_psql('postgres',
	q{SELECT delivery_id FROM webhook.deliveries WHERE profile = 'altered'});
my (undef, undef, $refused) = $node->psql('postgres', "SELECT webhook.redeliver($waiting)");
like($refused, qr/delivery $waiting is a batch that has not been sent yet/,
	'a batch not sent yet cannot be redelivered');
$node->safe_psql('postgres', q{SELECT webhook.alter_profile('altered', batch_max_items => 10)});
is($node->safe_psql('postgres', q{
	SELECT string_agg(items::text, ',' ORDER BY delivery_id) FROM webhook.deliveries WHERE profile = 'altered'}),
	'10,10,5', 'a lower batch_max_items cuts it into batches of that size');
$node->safe_psql('postgres', q{SELECT webhook.enable_profile('altered')});
my $cut = $receiver->wait_for(3, on_path('/altered'), 30);
is_deeply(
	[ sort { $a->[0] cmp $b->[0] } map { [ map { $_->{action}{note} } @{ $_->{json} } ] } @$cut ],
	[
		[ map { "cut $_" } 1 .. 10 ],
		[ map { "cut $_" } 11 .. 20 ],
		[ map { "cut $_" } 21 .. 25 ]
	],
	'in order, each item once');

# A change waits in an open batch of an hour; the new setting sends it.
sub open_batch_then
{
	my ($note, $setting, $requests, $name) = @_;
	$node->safe_psql('postgres', qq{INSERT INTO actions (ticket_id, note) VALUES (3, '$note')});
	ok($node->poll_query_until('postgres', q{
		SELECT count(*) = 1 FROM webhook.deliveries WHERE profile = 'altered' AND status = 'pending'}),
		"a batch with '$note' waits for an hour");
	$node->safe_psql('postgres', "SELECT webhook.alter_profile('altered', $setting)");
	ok(@{ $receiver->wait_for($requests, on_path('/altered'), 30) } == $requests, $name);
}
open_batch_then('open', "batching => 'same_event_type'", 4, 'a new mode sends it at once');
open_batch_then('shorter', "batch_wait => '1 second'", 5, 'a shorter wait sends it when it ends');

$node->safe_psql('postgres', q{SELECT webhook.alter_profile('altered', batching => 'none')});
$node->safe_psql('postgres', q{INSERT INTO actions (ticket_id, note) VALUES (3, 'single')});
my $single = $receiver->wait_for(6, on_path('/altered'), 30);
is(ref $single->[5]{json}, 'HASH', 'batching none: a change is sent as an object again');

# (the other profiles bound to action.added got those changes as well)
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 0 FROM webhook.delivery WHERE status NOT IN ('delivered', 'failed')}),
	'nothing left waiting');
is($node->safe_psql('postgres', q{SELECT count(*) FROM webhook.batch_item}), '0',
	'no item left behind');

$receiver->stop;
$node->stop;
done_testing();
