# Payload kinds end to end: what each profile's receiver gets equals what
# webhook.preview says it gets (apart from the id, the timestamp and the
# signature, made at send time); the preview's own signature verifies;
# snapshots are taken when the change is made, linked rows when the
# delivery is made.
use strict;
use warnings;

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WebhookTest;

my $node = new_webhook_node('payloads');
my $receiver = WebhookTest::Receiver->start;
my $secret = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';

$node->safe_psql('postgres', sample_schema());
$node->safe_psql('postgres', q{
	CREATE TABLE site (site_code text PRIMARY KEY, label text NOT NULL);
	INSERT INTO site VALUES ('LON', 'London');
	CREATE TABLE typed (
	    id int PRIMARY KEY, stamp timestamptz, local_time timestamp, day date,
	    amount numeric(12, 2), ratio float8, flag boolean, counts int[], tags text[],
	    doc jsonb, raw bytea, stamps timestamptz[], site_code text REFERENCES site, note text);
	CREATE EXTENSION webhook;
	SELECT webhook.define_ticket_events('tickets', 'actions');
	SELECT webhook.define_event('typed.created', 'typed', 'insert', object => 'typed');
});

my @events = ('ticket.created', 'ticket.status_changed', 'action.added');
my %profiles = (
	small => q{},
	full => q{, payload => 'full'},
	bare => q{, payload => 'event_only'},
	chosen => q{, payload => 'custom'},
	batched => q{, payload => 'custom', batching => 'any_event', batch_wait => '0', batch_max_items => 1},
);
for my $name (sort keys %profiles)
{
	my $url = $receiver->url("/$name");
	$node->safe_psql('postgres', qq{
		SELECT webhook.create_profile('$name', '$url', ARRAY['ticket.created', 'ticket.status_changed', 'action.added'],
		                              secret => '$secret', headers => '{"X-Desk": "$name"}' $profiles{$name});
		SELECT webhook.add_event('$name', 'typed.created') WHERE '$name' NOT IN ('chosen', 'batched');
	});
}
my $fields = q{[{"name": "status", "column": "ticket.status_id"},
                {"name": "status_id", "column": "ticket.status_id", "send_id": true},
                {"name": "agent", "column": "ticket.agent_id", "display": "email"},
                {"name": "summary", "column": "ticket.summary"}]};
$node->safe_psql('postgres', qq{
	SELECT webhook.set_payload_fields('chosen', '$fields');
	SELECT webhook.set_payload_fields('batched', '$fields');
});

# one ticket with every link, its action, a row of every column type
my $ticket = $node->safe_psql('postgres', q{
	INSERT INTO tickets (summary, status_id, agent_id, team_id, priority_id, client_id)
	VALUES ('Printer on fire', 1, 1, 2, 1, 2) RETURNING ticket_id});
my $action = $node->safe_psql('postgres', qq{
	INSERT INTO actions (ticket_id, agent_id, note) VALUES ($ticket, 2, 'Called') RETURNING action_id});
$node->safe_psql('postgres', q{
	INSERT INTO typed VALUES (1, '2026-11-28 19:06:39.123456+01', '2026-11-28 18:06:39', '2026-11-28',
	    1234.50, 0.25, true, '{1,2,3}', '{"a","b c"}', '{"k": [1, {"n": null}]}', '\x00ff10',
	    '{"2026-01-01 00:00:00+00"}', 'LON', 'quote " and \ backslash')});
# 5 profiles x (ticket.created + action.added) + 3 x typed.created
my $got = $receiver->wait_for(13);
is(scalar @$got, 13, 'every profile got its deliveries');

sub without_volatile
{
	my ($envelope) = @_;
	my %copy = %$envelope;
	delete @copy{qw(id timestamp)};
	return \%copy;
}

sub received
{
	my ($profile, $event) = @_;
	my @r = grep {
		my $body = ref $_->{json} eq 'ARRAY' ? $_->{json}[0] : $_->{json};
		$_->{path} eq "/$profile" && $body->{event} eq $event
	} @{ $receiver->requests };
	return $r[-1];
}

sub preview
{
	my ($profile, $event, $pk) = @_;
	return decode_json($node->safe_psql('postgres',
			qq{SELECT webhook.preview('$profile', '$event', '$pk')}));
}

for my $case (
	[ 'small', 'ticket.created', $ticket ], [ 'small', 'action.added', $action ],
	[ 'small', 'typed.created', 1 ], [ 'full', 'ticket.created', $ticket ],
	[ 'full', 'action.added', $action ], [ 'full', 'typed.created', 1 ],
	[ 'bare', 'ticket.created', $ticket ], [ 'bare', 'action.added', $action ],
	[ 'bare', 'typed.created', 1 ], [ 'chosen', 'ticket.created', $ticket ],
	[ 'chosen', 'action.added', $action ], [ 'batched', 'ticket.created', $ticket ])
{
	my ($profile, $event, $pk) = @$case;
	my $request = received($profile, $event);
	my $preview = preview($profile, $event, $pk);
	if ($profile eq 'batched')
	{
		is(ref $request->{json}, 'ARRAY', "$profile $event: the delivery is an array");
		is_deeply([ map { without_volatile($_) } @{ $request->{json} } ],
			[ map { without_volatile($_) } @{ $preview->{body} } ],
			"$profile $event: the delivered body equals the preview");
	}
	else
	{
		is_deeply(without_volatile($request->{json}), without_volatile($preview->{body}),
			"$profile $event: the delivered body equals the preview");
	}
	my %sent = %{ $request->{headers} };
	my %shown = map { lc($_) => $preview->{headers}{$_} } keys %{ $preview->{headers} };
	delete @sent{qw(webhook-id webhook-timestamp webhook-signature content-length host accept)};
	delete @shown{qw(webhook-id webhook-timestamp webhook-signature)};
	is_deeply(\%sent, \%shown, "$profile $event: the same headers") if $event eq 'ticket.created';
	is($preview->{method}, $request->{method}, "$profile $event: the same method")
	  if $event eq 'ticket.created';
}

# what the types look like on arrival
my $typed = received('small', 'typed.created')->{json}{typed};
is($typed->{stamp}, '2026-11-28T18:06:39.123456Z', 'timestamptz in UTC with Z');
is($typed->{raw}, 'AP8Q', 'bytea as base64');
is_deeply($typed->{doc}, { k => [ 1, { n => undef } ] }, 'jsonb embedded');
is($typed->{amount}, '1234.5', 'numeric as a number');
ok(JSON::PP::is_bool($typed->{flag}) && $typed->{flag}, 'boolean as true');
is(received('full', 'typed.created')->{json}{typed}{site_code_object}{label}, 'London',
	'full: a key column without _id links under <column>_object');

# the preview's own signature verifies with the official library
my $preview = preview('small', 'ticket.created', $ticket);
my $file = PostgreSQL::Test::Utils::tempdir() . '/preview.jsonl';
open my $fh, '>', $file or die;
print $fh encode_json({ body => $preview->{body_text},
		headers => { map { lc($_) => $preview->{headers}{$_} } keys %{ $preview->{headers} } } }) . "\n";
close $fh;
my ($out, $err);
IPC::Run::run([ 'node', "$WebhookTest::test_dir/verify_signature.mjs", $secret, $file ],
	'>', \$out, '2>', \$err);
like($out, qr/^ok/m, 'standardwebhooks verifies the preview signature') or diag($out, $err);
is_deeply(decode_json($preview->{body_text}), $preview->{body}, 'body_text is the body');

# snapshots: two changes of one ticket in one transaction each send their
# own values, although both are expanded after the second; the linked
# status row is read when the delivery is made, after the commit
my $before = $receiver->count;
$node->safe_psql('postgres', qq{
	BEGIN;
	UPDATE tickets SET status_id = 2, summary = 'Printer smoking' WHERE ticket_id = $ticket;
	UPDATE tickets SET status_id = 3, summary = 'Printer out' WHERE ticket_id = $ticket;
	UPDATE status SET name = 'Waiting (renamed)' WHERE status_id = 3;
	COMMIT;
});
# the two requests of a profile may arrive in either order: sorted by the new status
sub by_new_status { [ sort { $a->{json}{changes}{status_id}{new} <=> $b->{json}{changes}{status_id}{new} } @{ $_[0] } ] }
$got = by_new_status($receiver->wait_for(2, sub { $_[0]{path} eq '/small' && $_[0]{json}{event} eq 'ticket.status_changed' }));
is_deeply([ map { [ $_->{json}{ticket}{summary}, $_->{json}{changes}{status_id}{old}, $_->{json}{changes}{status_id}{new} ] } @$got ],
	[ [ 'Printer smoking', 1, 2 ], [ 'Printer out', 2, 3 ] ],
	'small: each event sends the row as of its change');
$got = [ sort { $a->{json}{ticket}{status_id} <=> $b->{json}{ticket}{status_id} }
		@{ $receiver->wait_for(2, sub { $_[0]{path} eq '/full' && $_[0]{json}{event} eq 'ticket.status_changed' }) } ];
is_deeply([ map { [ $_->{json}{ticket}{status_id}, $_->{json}{ticket}{status}{name} ] } @$got ],
	[ [ 2, 'In Progress' ], [ 3, 'Waiting (renamed)' ] ],
	'full: linked rows as they are when the delivery is made');
$got = by_new_status($receiver->wait_for(2, sub { $_[0]{path} eq '/chosen' && $_[0]{json}{event} eq 'ticket.status_changed' }));
is_deeply([ map { $_->{json}{changes} } @$got ],
	[ { status => { old => 'New', new => 'In Progress' }, status_id => { old => 1, new => 2 },
		summary => { old => 'Printer on fire', new => 'Printer smoking' } },
	  { status => { old => 'In Progress', new => 'Waiting (renamed)' }, status_id => { old => 2, new => 3 },
		summary => { old => 'Printer smoking', new => 'Printer out' } } ],
	'custom: changes of the chosen fields, by display value');
$got = $receiver->wait_for(2, sub { $_[0]{path} eq '/bare' && $_[0]{json}{event} eq 'ticket.status_changed' });
is_deeply([ map { [ sort keys %{ $_->{json} } ] } @$got ],
	[ ([qw(binding_id event id object_id profile timestamp title)]) x 2 ],
	'event_only: the envelope and the object id, no changes');

# a profile whose event author cannot read a linked table gets null there
$node->safe_psql('postgres', q{
	CREATE ROLE desk_admin;
	GRANT USAGE ON SCHEMA webhook TO desk_admin;
	GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA webhook TO desk_admin;
	GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA webhook TO desk_admin;
	GRANT USAGE ON ALL SEQUENCES IN SCHEMA webhook TO desk_admin;
	GRANT SELECT, TRIGGER ON tickets TO desk_admin;
	GRANT SELECT ON status TO desk_admin;
	SET ROLE desk_admin;
	SELECT webhook.define_event('ticket.logged', 'tickets', 'insert', object => 'ticket');
	RESET ROLE;
});
my $url = $receiver->url('/limited');
$node->safe_psql('postgres', qq{
	SELECT webhook.create_profile('limited', '$url', ARRAY['ticket.logged'], payload => 'full');
	INSERT INTO tickets (summary, status_id, agent_id, client_id) VALUES ('Limited', 1, 1, 1);
});
$got = $receiver->wait_for(1, sub { $_[0]{path} eq '/limited' });
is($got->[0]{json}{ticket}{status}{name}, 'New', 'a table the event author can read is linked');
is($got->[0]{json}{ticket}{client}, undef, 'a table it cannot read is null');
ok(exists $got->[0]{json}{ticket}{client}, '... and still there as a key');

ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 0 FROM webhook.delivery WHERE status <> 'delivered'}), 'nothing left in the queue');

$receiver->stop;
$node->stop;
done_testing();
