# NOTIFY webhook_failures: a session that listens hears of each delivery
# whose attempts are exhausted and of each profile disabled (by a 410, by a
# run of failures, by hand), once, with a small JSON payload that says
# nothing of what was sent, and nothing while all goes well.
use strict;
use warnings;

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WebhookTest;

my $node = new_webhook_node('failure_notify');
$node->append_conf('postgresql.conf', "webhook.disable_after_failures = 3\n");
$node->reload;
my $receiver = WebhookTest::Receiver->start;
my ($ok_url, $failing_url, $gone_url) =
  map { $receiver->url($_) } ('/ok', '/status/500', '/status/410');

$node->safe_psql('postgres', sample_schema());
$node->safe_psql('postgres', qq{
	CREATE EXTENSION webhook;
	SELECT webhook.define_ticket_events('tickets', 'actions');
	CREATE ROLE nobody_listens LOGIN;
});

# a role with no privilege at all may listen: what it hears is all there is
my $listener = $node->background_psql('postgres', extra_params => ['-U', 'nobody_listens']);
$listener->query_safe('LISTEN webhook_failures');
my @heard;
sub hear
{
	my ($count) = @_;
	WebhookTest::wait_until(sub {
		my $out = $listener->query_safe('SELECT 1');
		push @heard, map { decode_json($_) } ($out =~ /Asynchronous notification "webhook_failures" with payload "(.*?)" received/g);
		return @heard >= $count;
	}, 60);
	return [@heard];
}

$node->safe_psql('postgres', qq{
	SELECT webhook.create_profile('fine', '$ok_url', ARRAY['ticket.created']);
	SELECT webhook.create_profile('failing', '$failing_url', ARRAY['ticket.created'], max_attempts => 1,
	                              headers => '{"X-Api-Key": "top-secret-token"}');
	INSERT INTO tickets (summary, status_id) VALUES ('one', 1);
});
my $got = hear(1);
is_deeply([ sort keys %{ $got->[0] } ], [qw(delivery_id event events profile response_status)],
	'a failed delivery: its id, profile, events and last status, no more');
is($got->[0]{event}, 'delivery_failed', 'event delivery_failed');
is($got->[0]{profile}, 'failing', 'of the failing profile');
is($got->[0]{response_status}, 500, 'with the last status');
is_deeply($got->[0]{events}, ['ticket.created'], 'and its events');
is($got->[0]{delivery_id}, $node->safe_psql('postgres', q{
	SELECT delivery_id FROM webhook.deliveries WHERE profile = 'failing'}), 'the delivery that failed');
unlike(encode_json($got), qr/top-secret|127\.0\.0\.1|status\/500/, 'nothing of the profile\'s settings');

# three in a row: the run disables it, said once
$node->safe_psql('postgres', q{INSERT INTO tickets (summary, status_id) VALUES ('two', 1), ('three', 1)});
$got = hear(4);
my @disabled = grep { $_->{event} eq 'profile_disabled' } @$got;
is(scalar @disabled, 1, 'the run of failures disables the profile, said once');
is_deeply($disabled[0], { event => 'profile_disabled', profile => 'failing',
	reason => '3 deliveries in a row failed' }, 'which profile, and why');

# a 410, and by hand (again by hand: it was disabled already, nothing)
$node->safe_psql('postgres', qq{
	SELECT webhook.create_profile('gone', '$gone_url', ARRAY['ticket.updated']);
	UPDATE tickets SET details = 'x' WHERE summary = 'one';
});
$got = hear(6);
ok((grep { $_->{event} eq 'profile_disabled' && $_->{profile} eq 'gone'
	  && $_->{reason} eq 'the receiver answered 410 Gone' } @$got), 'a 410 disables, and says so');
ok((grep { $_->{event} eq 'delivery_failed' && $_->{profile} eq 'gone' && $_->{response_status} == 410 } @$got),
	'and its delivery failed');
$node->safe_psql('postgres', q{
	SELECT webhook.disable_profile('fine', 'maintenance');
	SELECT webhook.disable_profile('fine', 'maintenance, again');
});
$got = hear(7);
is_deeply($got->[-1], { event => 'profile_disabled', profile => 'fine', reason => 'maintenance' },
	'disabled by hand: said with the reason given');

# all well again: nothing more
$node->safe_psql('postgres', q{
	SELECT webhook.enable_profile('fine');
	INSERT INTO tickets (summary, status_id) VALUES ('fine again', 1);
});
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 1 FROM webhook.deliveries WHERE profile = 'fine' AND status = 'delivered'
	   AND request_body #>> '{ticket,summary}' = 'fine again'}), 'delivered');
sleep 1;
$got = hear(0);
is(scalar @$got, 7, 'deliveries that succeed, a disabled profile disabled again: nothing heard')
  or diag(explain $got);

$listener->quit;
$receiver->stop;
$node->stop;
done_testing();
