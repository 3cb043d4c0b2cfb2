# Deadline events against a real receiver: each row and due time fires once,
# on time (within a second), with the row as it is then; moved earlier it
# fires at the new time only, moved later after firing it fires again;
# deleted, cleared or with its condition false it never fires; a due time
# already past fires at once; bindings' conditions, the halo envelope and
# batching apply; a deadline passed while the server was down fires once
# when it is back, and one due across a crash of the worker fires once.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use WebhookTest;

my $node = new_webhook_node('deadlines');
my $receiver = WebhookTest::Receiver->start;
my $desk_url = $receiver->url('/desk');
my $halo_url = $receiver->url('/halo');
my $batch_url = $receiver->url('/batch');
my $p1_url = $receiver->url('/p1');

$node->safe_psql('postgres', sample_schema());
$node->safe_psql('postgres', qq{
	ALTER TABLE tickets ADD COLUMN deadline_at timestamptz;
	CREATE EXTENSION webhook;
	SELECT webhook.define_ticket_events('tickets', 'actions', closed_statuses => '{9}', deadline => 'deadline_at');
	SELECT webhook.define_deadline_event('ticket.sla_warning', 'tickets', 'deadline_at', before => '2 seconds',
	                                     title => '1st SLA Warning', object => 'ticket',
	                                     condition => 'new.status_id <> 9',
	                                     message => 'Ticket {object_id:07} is due in two seconds.');
	SELECT webhook.create_profile('desk', '$desk_url', ARRAY['ticket.deadline', 'ticket.sla_warning']);
	SELECT webhook.create_profile('halo', '$halo_url', ARRAY['ticket.deadline'], envelope => 'halo');
	SELECT webhook.create_profile('batched', '$batch_url', ARRAY['ticket.deadline'], batching => 'any_event',
	                              batch_wait => '1 second');
	SELECT webhook.create_profile('p1', '$p1_url', ARRAY['ticket.created']);
	SELECT webhook.add_event('p1', 'ticket.deadline', '[{"field": "priority_id", "op": "eq", "value": 1}]');
});
is($node->safe_psql('postgres', q{
	SELECT string_agg(event || ':' || operation || ':' || due || ':' || before, ',' ORDER BY event)
	  FROM webhook.events WHERE operation = 'deadline'}),
	'ticket.deadline:deadline:deadline_at:00:00:00,ticket.sla_warning:deadline:deadline_at:00:00:02',
	'define_ticket_events defined ticket.deadline on the column named');

# what the receiver got for a ticket and path, with the times they came
sub got
{
	my ($path, $ticket) = @_;
	return [ grep { $_->{path} eq $path && ($_->{json}{ticket}{ticket_id} // -1) == $ticket }
		  @{ $receiver->requests } ];
}

# when the worker queued a ticket's event for the desk (the change's capture
# time, the envelope's timestamp), as the server's clock says
sub fired_at
{
	my ($ticket, $event, $nth) = @_;
	$nth //= 1;
	return $node->safe_psql('postgres', qq{
		SELECT extract(epoch FROM captured_at) FROM webhook.deliveries
		 WHERE profile = 'desk' AND events = ARRAY['$event'] AND (request_body #>> '{ticket,ticket_id}')::int = $ticket
		 ORDER BY captured_at OFFSET $nth - 1 LIMIT 1});
}

# a ticket due in $secs seconds (negative: past): its id, due time and insert time (the server's clock)
sub ticket_due
{
	my ($summary, $secs, %col) = @_;
	my $extra_cols = join('', map { ", $_" } sort keys %col);
	my $extra_vals = join('', map { ", $col{$_}" } sort keys %col);
	return split /\|/, $node->safe_psql('postgres', qq{
		INSERT INTO tickets (summary, status_id, deadline_at$extra_cols)
		VALUES ('$summary', 1, clock_timestamp() + interval '$secs seconds'$extra_vals)
		RETURNING ticket_id, extract(epoch FROM deadline_at), extract(epoch FROM created_at)});
}

my ($on_time, $on_time_due) = ticket_due('on time', 4);
my ($past, undef, $past_inserted) = ticket_due('already past', -3600);
my ($moved_earlier) = ticket_due('moved earlier', 30);
my ($closed) = ticket_due('closed before due', 3);
my ($deleted) = ticket_due('deleted before due', 3);
my ($cleared) = ticket_due('cleared before due', 3);
my ($p1_a) = ticket_due('p1 ticket', 3, priority_id => 1);
my ($p3_a) = ticket_due('p3 ticket', 3, priority_id => 3);
my $moved_due = $node->safe_psql('postgres', qq{
	UPDATE tickets SET deadline_at = clock_timestamp() + interval '2 seconds' WHERE ticket_id = $moved_earlier
	RETURNING extract(epoch FROM deadline_at)});
$node->safe_psql('postgres', qq{
	UPDATE tickets SET status_id = 9 WHERE ticket_id = $closed;
	DELETE FROM tickets WHERE ticket_id = $deleted;
	UPDATE tickets SET deadline_at = NULL WHERE ticket_id = $cleared;
	UPDATE tickets SET summary = 'on time, edited' WHERE ticket_id = $on_time;
});

my $past_got = $receiver->wait_for(1, sub {
	$_[0]{path} eq '/desk' && ($_[0]{json}{ticket}{ticket_id} // 0) == $past && $_[0]{json}{event} eq 'ticket.deadline' });
is(scalar @$past_got, 1, 'a due time already past when written fires at once');
ok(fired_at($past, 'ticket.deadline') - $past_inserted < 1, 'at once: within a second of the insert')
  or diag(fired_at($past, 'ticket.deadline') - $past_inserted);

my $on_time_got = $receiver->wait_for(1, sub {
	$_[0]{path} eq '/desk' && ($_[0]{json}{ticket}{ticket_id} // 0) == $on_time
	  && $_[0]{json}{event} eq 'ticket.deadline' });
is(scalar @$on_time_got, 1, 'the deadline fired');
my $late = fired_at($on_time, 'ticket.deadline') - $on_time_due;
ok($late >= 0 && $late < 1, 'at its due time, within a second') or diag("late by $late s");
is($on_time_got->[0]{json}{ticket}{summary}, 'on time, edited', 'with the row as it is when due');
is($on_time_got->[0]{json}{title}, 'Ticket Deadline', 'titled as Halo titles it');
my $warning = [ grep { $_->{json}{event} eq 'ticket.sla_warning' } @{ got('/desk', $on_time) } ];
is(scalar @$warning, 1, 'the warning fired once');
my $early = $on_time_due - fired_at($on_time, 'ticket.sla_warning');
ok($early > 1 && $early <= 2, 'two seconds before the due time (before => 2 seconds)') or diag("early by $early s");

my $moved_got = $receiver->wait_for(1, sub {
	$_[0]{path} eq '/desk' && ($_[0]{json}{ticket}{ticket_id} // 0) == $moved_earlier
	  && $_[0]{json}{event} eq 'ticket.deadline' });
$late = fired_at($moved_earlier, 'ticket.deadline') - $moved_due;
ok($late >= 0 && $late < 1, 'a due time moved earlier fires at the new time') or diag("late by $late s");

# the halo envelope and batching apply as to any event
my $halo = $receiver->wait_for(1, sub { $_[0]{path} eq '/halo' && ($_[0]{json}{object_id} // 0) == $on_time });
is($halo->[0]{json}{event}, 'ticket deadline', 'halo: the title in lower case');
is($halo->[0]{json}{message}, sprintf('The deadline has been reached for Ticket ID: %07d.', $on_time),
	'halo: the message');
is($halo->[0]{json}{ticket}{id}, $on_time, 'halo: ticket.id');
my $p1 = $receiver->wait_for(1, sub { $_[0]{path} eq '/p1' && $_[0]{json}{event} eq 'ticket.deadline' });
is(join(',', map { $_->{json}{ticket}{ticket_id} } @$p1), $p1_a, 'a binding\'s conditions apply when due');

# let everything due so far (and the one-second batch) arrive, then count
sleep 3;
my %count;
for my $r (@{ $receiver->requests })
{
	my @items = ref $r->{json} eq 'ARRAY' ? @{ $r->{json} } : ref $r->{json} eq 'HASH' && ref $r->{json}{items} eq 'ARRAY' ? @{ $r->{json}{items} } : ($r->{json});
	for my $item (@items)
	{
		my $id = $item->{ticket}{ticket_id} // $item->{object_id} // next;
		$count{"$r->{path}:" . ($item->{event} // '') . ":$id"}++;
	}
}
is($count{"/desk:ticket.deadline:$on_time"}, 1, 'on time: once');
is($count{"/desk:ticket.deadline:$moved_earlier"}, 1, 'moved earlier: once, at the new time only');
is($count{"/desk:ticket.deadline:$past"}, 1, 'already past: once');
ok(!exists $count{"/desk:ticket.deadline:$closed"}, 'a condition false when due: never')
  or diag(explain \%count);
ok(!exists $count{"/desk:ticket.sla_warning:$closed"} || $count{"/desk:ticket.sla_warning:$closed"} == 1,
	'(its warning came before it was closed, or not at all)');
ok(!exists $count{"/desk:ticket.deadline:$deleted"}, 'deleted before due: never');
ok(!exists $count{"/desk:ticket.deadline:$cleared"}, 'due time cleared: never');
my @batches = grep { $_->{path} eq '/batch' } @{ $receiver->requests };
my $batched = 0;
$batched += ref $_->{json} eq 'ARRAY' ? scalar @{ $_->{json} } : scalar @{ $_->{json}{items} // [] } for @batches;
ok(@batches >= 1 && @batches < $batched, "batched: $batched deadlines in " . scalar(@batches) . ' requests');
is($node->safe_psql('postgres', q{SELECT count(*) FROM webhook.deadlines WHERE fire_at < now()}), '0',
	'nothing due is left on the schedule');

# moved later after firing: it fires again, for the new due time; an edit
# that leaves the due time alone does not
my $again_due = $node->safe_psql('postgres', qq{
	UPDATE tickets SET deadline_at = clock_timestamp() + interval '2 seconds' WHERE ticket_id = $on_time
	RETURNING extract(epoch FROM deadline_at)});
$node->safe_psql('postgres', qq{UPDATE tickets SET summary = 'edited again' WHERE ticket_id = $on_time});
my $again = $receiver->wait_for(2, sub {
	$_[0]{path} eq '/desk' && ($_[0]{json}{ticket}{ticket_id} // 0) == $on_time
	  && $_[0]{json}{event} eq 'ticket.deadline' });
is(scalar @$again, 2, 'moved later after firing: fires again');
$late = fired_at($on_time, 'ticket.deadline', 2) - $again_due;
ok($late >= 0 && $late < 1, 'at the new due time') or diag("late by $late s");
sleep 1;
is(scalar(grep { $_->{json}{event} eq 'ticket.deadline' } @{ got('/desk', $on_time) }), 2, 'and only once more');

# the server down across a due time: it fires once when it is back
my ($down) = ticket_due('due while down', 2);
$node->stop('fast');
sleep 3;
my $restarted = time;
$node->start;
my $down_got = $receiver->wait_for(1, sub {
	$_[0]{path} eq '/desk' && ($_[0]{json}{ticket}{ticket_id} // 0) == $down && $_[0]{json}{event} eq 'ticket.deadline' });
is(scalar @$down_got, 1, 'a deadline passed while the server was down fires when it is back');
ok($down_got->[0]{received_at} - $restarted < 5, 'soon after the start') or diag($down_got->[0]{received_at} - $restarted);

# the worker killed around a due time: the server restarts, and it fires once
my ($crashed, $crashed_due) = ticket_due('due across a crash', 1);
my $pid = WebhookTest::worker_pid($node, 'postgres');
ok($pid, 'a worker runs');
kill 'KILL', $pid;
ok(WebhookTest::wait_until(sub { my $p = eval { WebhookTest::worker_pid($node, 'postgres') }; $p && $p ne $pid }, 60),
	'a new worker runs after the crash restart');
my $crash_got = $receiver->wait_for(1, sub {
	$_[0]{path} eq '/desk' && ($_[0]{json}{ticket}{ticket_id} // 0) == $crashed && $_[0]{json}{event} eq 'ticket.deadline' });
is(scalar @$crash_got, 1, 'a deadline due across a crash fires');
sleep 2;
is(scalar(grep { $_->{json}{event} eq 'ticket.deadline' } @{ got('/desk', $down) }), 1, 'the one due while down: once');
is(scalar(grep { $_->{json}{event} eq 'ticket.deadline' } @{ got('/desk', $crashed) }), 1, 'the one due across the crash: once');

# every delivery of a deadline is recorded like any other
is($node->safe_psql('postgres', q{
	SELECT count(*) FILTER (WHERE status <> 'delivered') FROM webhook.deliveries}), '0',
	'every delivery delivered');

$receiver->stop;
$node->stop;
done_testing();
