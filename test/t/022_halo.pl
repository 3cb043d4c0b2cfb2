# The halo envelope end to end, read as receivers written for Halo's own
# webhooks read it, and changes tagged with webhook.origin passed over by
# the profiles that ignore that origin (the loop guard).
use strict;
use warnings;

use JSON::PP;
use MIME::Base64;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WebhookTest;

my $node = new_webhook_node('halo');
my $receiver = WebhookTest::Receiver->start;

$node->safe_psql('postgres', sample_schema());
$node->safe_psql('postgres', q{
	CREATE EXTENSION webhook;
	SELECT webhook.define_ticket_events('tickets', 'actions', closed_statuses => '{9}');
});
my $events = q{ARRAY['ticket.created', 'ticket.status_changed', 'action.added']};
for my $name (qw(object_first ticket_id_only))
{
	my $url = $receiver->url("/$name");
	$node->safe_psql('postgres',
		qq{SELECT webhook.create_profile('$name', '$url', $events, envelope => 'halo')});
}
my $basic_url = $receiver->url('/basic');
my $batch_url = $receiver->url('/batch');
my $standard_url = $receiver->url('/standard');
my $guarded_url = $receiver->url('/guarded');
$node->safe_psql('postgres', qq{
	SELECT webhook.create_profile('basic', '$basic_url', $events, envelope => 'halo',
	                              auth => 'basic', username => 'halo', password => 'pa:ss:word');
	SELECT webhook.create_profile('batch', '$batch_url', $events, envelope => 'halo',
	                              batching => 'any_event', batch_wait => '1 hour', batch_max_items => 3);
	SELECT webhook.create_profile('standard', '$standard_url', $events);
	SELECT webhook.create_profile('guarded', '$guarded_url', ARRAY['ticket.status_changed'],
	                              ignore_origins => '{crm-sync}');
	-- a condition of the writer's own SQL: the change goes through the capture query
	SELECT webhook.add_event('guarded', 'ticket.status_changed', condition_sql => 'new.summary <> ''''');
});

# a ticket, its status change, an action: 3 changes for each of the halo
# profiles; the batch goes out when it holds all three
my $ticket = $node->safe_psql('postgres', q{
	INSERT INTO tickets (ticket_id, summary, status_id, agent_id) VALUES (4242, 'Printer on fire', 1, 2)
	RETURNING ticket_id});
$node->safe_psql('postgres', q{UPDATE tickets SET status_id = 2 WHERE ticket_id = 4242});
$node->safe_psql('postgres', q{INSERT INTO actions (ticket_id, agent_id, note) VALUES (4242, 1, 'Called')});

my $got = $receiver->wait_for(3, sub { $_[0]{path} eq '/object_first' });
is(scalar @$got, 3, 'the halo profile got its three deliveries');
$receiver->wait_for(3, sub { $_[0]{path} eq '/ticket_id_only' });
$receiver->wait_for(3, sub { $_[0]{path} eq '/basic' });
$receiver->wait_for(1, sub { $_[0]{path} eq '/batch' });
# guarded: the status change (its two bindings make one delivery)
$receiver->wait_for(1, sub { $_[0]{path} eq '/guarded' });

my %guid = map { split /\|/ } split /\n/,
  $node->safe_psql('postgres', q{SELECT name || '|' || guid FROM webhook.profiles});
my %binding = map { my ($p, $e, $b) = split /\|/; ("$p/$e" => $b) } split /\n/,
  $node->safe_psql('postgres', q{
	SELECT p.name || '|' || e.name || '|' || min(b.binding_id) FROM webhook.binding b
	  JOIN webhook.profile p USING (profile_id) JOIN webhook.event e USING (event_id)
	 GROUP BY p.name, e.name});

my %title = ('ticket.created' => 'new ticket logged', 'ticket.status_changed' => 'ticket status changed',
	'action.added' => 'action added');
my %message = (
	'new ticket logged' => 'A new ticket has been logged with Ticket ID: 0004242.',
	'ticket status changed' => 'The status has been changed for Ticket ID: 0004242.',
	'action added' => 'An action has been added to Ticket ID: 0004242.');
my %event_of = reverse %title;

# a receiver written for Halo: object_id first, ticket.id when it is missing
sub ticket_of_object_first { my ($b) = @_; return $b->{object_id} // $b->{ticket}{id} }
# another reads only ticket.id
sub ticket_of_ticket_id { my ($b) = @_; return $b->{ticket}{id} }

my %escmsg;
for my $r (@{ $receiver->requests })
{
	next unless $r->{path} =~ m{^/(object_first|ticket_id_only|basic)$};
	my $profile = $1;
	my $b = $r->{json};
	my $event = $event_of{ $b->{event} // '' } // 'unknown';
	my @keys = sort keys %$b;
	my @want = sort(qw(id webhook_id notification_id escmsg_id event message object_id agent_id timestamp ticket),
		$event eq 'action.added' ? ('action') : ());
	is_deeply(\@keys, \@want, "$profile $event: Halo's keys and no others");
	is($b->{id}, $r->{headers}{'webhook-id'}, "$profile $event: id is the webhook-id");
	is($b->{webhook_id}, $guid{$profile}, "$profile $event: webhook_id is the profile's guid");
	is($b->{notification_id}, $binding{"$profile/$event"}, "$profile $event: notification_id is the binding");
	isnt($b->{escmsg_id}, $b->{id}, "$profile $event: escmsg_id is another id");
	push @{ $escmsg{$event} }, $b->{escmsg_id};
	is($b->{message}, $message{ $b->{event} }, "$profile $event: Halo's message");
	like($b->{timestamp}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$/, "$profile $event: seven digits and Z");
	is($b->{agent_id}, 2, "$profile $event: the ticket's agent, also for its action");
	is(ticket_of_object_first($b), 4242, "$profile $event: a receiver reading object_id finds the ticket");
	is(ticket_of_ticket_id($b), 4242, "$profile $event: a receiver reading ticket.id finds the ticket");
	is($b->{ticket}{ticket_id}, 4242, "$profile $event: the ticket's own columns stay");
	if ($event eq 'action.added')
	{
		is($b->{action}{note}, 'Called', "$profile $event: the action");
		is($b->{action}{id}, $b->{action}{action_id}, "$profile $event: the action's id");
		is($b->{action}{agent_id}, 1, "$profile $event: the action's own agent stays in the action");
	}
	if ($profile eq 'basic')
	{
		my ($scheme, $credentials) = split / /, $r->{headers}{authorization} // '';
		is($scheme, 'Basic', "basic $event: Basic authentication");
		is(decode_base64($credentials // ''), 'halo:pa:ss:word', "basic $event: a password with colons");
	}
}
for my $event (sort keys %escmsg)
{
	my %distinct = map { $_ => 1 } @{ $escmsg{$event} };
	is(scalar keys %distinct, 1, "$event: one escmsg_id for the change, whichever profile gets it");
}

my ($batch) = @{ $receiver->wait_for(1, sub { $_[0]{path} eq '/batch' }) };
is(ref $batch->{json}, 'ARRAY', 'a halo batch is a JSON array');
is_deeply([ map { $_->{event} } @{ $batch->{json} } ],
	[ 'new ticket logged', 'ticket status changed', 'action added' ], 'of halo envelopes, in order');
is_deeply([ map { $_->{object_id} } @{ $batch->{json} } ], [ 4242, 4242, 4242 ], 'each with its object_id');

my ($standard) = @{ $receiver->wait_for(1, sub { $_[0]{path} eq '/standard' }) };
ok(exists $standard->{json}{profile} && !exists $standard->{json}{webhook_id},
	'the standard envelope is unchanged');

# a writer's json that cannot be text (\u0000) in a message is written as
# it is: the change goes out, to every profile
$node->safe_psql('postgres', qq{
	CREATE TABLE raw_doc (ref int PRIMARY KEY, doc json);
	SELECT webhook.define_event('raw.created', 'raw_doc', 'insert', message => 'Doc {doc}');
	SELECT webhook.create_profile('raw_halo', '@{[ $receiver->url('/raw_halo') ]}', ARRAY['raw.created'],
	                              envelope => 'halo');
	SELECT webhook.create_profile('raw_standard', '@{[ $receiver->url('/raw_standard') ]}', ARRAY['raw.created']);
	INSERT INTO raw_doc VALUES (1, '"nul \\u0000 here"');
});
my ($raw) = @{ $receiver->wait_for(1, sub { $_[0]{path} eq '/raw_halo' }) };
is($raw->{json}{message}, 'Doc nul \u0000 here', 'a value that cannot be text is written in the message as it is');
is(scalar @{ $receiver->wait_for(1, sub { $_[0]{path} eq '/raw_standard' }) }, 1, 'and the change goes to every profile');

# the loop guard: a change tagged crm-sync is not sent to the profile that
# ignores it, and is sent to every other
$node->safe_psql('postgres', q{
	SET webhook.origin = 'crm-sync';
	UPDATE tickets SET status_id = 3 WHERE ticket_id = 4242;
});
$node->safe_psql('postgres', q{
	BEGIN;
	SET LOCAL webhook.origin = 'crm-sync';
	UPDATE tickets SET status_id = 2, summary = 'Printer still on fire' WHERE ticket_id = 4242;
	COMMIT;
});
$receiver->wait_for(5, sub { $_[0]{path} eq '/standard' });
# an untagged change after them: when it arrives, the tagged ones were expanded
$node->safe_psql('postgres', q{UPDATE tickets SET status_id = 9 WHERE ticket_id = 4242});
my $guarded = $receiver->wait_for(2, sub { $_[0]{path} eq '/guarded' });
$receiver->wait_for(6, sub { $_[0]{path} eq '/standard' });
is_deeply([ map { $_->{json}{changes}{status_id}{new} } @$guarded ], [ 2, 9 ],
	'the profile that ignores crm-sync got only the untagged changes');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM webhook.deliveries d WHERE d.profile = 'guarded'}), 2,
	'and has no delivery of the tagged ones');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM webhook.deliveries d WHERE d.profile = 'standard' AND 'ticket.status_changed' = ANY (d.events)}), 4,
	'every other profile sent them');
my ($err) = ($node->psql('postgres', q{SET webhook.origin = 'crm-sync-with-a-name-that-goes-on-and-on-for-more-than-sixty-four-chars'}))[2];
like($err, qr/invalid value for parameter "webhook.origin".*at most 64 characters/s, 'an origin too long is refused');

$receiver->stop;
$node->stop;
done_testing();
