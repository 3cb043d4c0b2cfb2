# A profile's pace, kept by the sender: max_rate spaces its requests
# evenly, and a 429 or 503 pauses the whole profile, for its Retry-After,
# else for a pause that doubles while such answers go on and ends with a
# success; the other profiles are not slowed.  Times are those the
# attempts recorded (lower bounds: a pause or a rate makes requests wait at
# least so long, never less).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use WebhookTest;

my $node = new_webhook_node('pacing');
# four requests of a profile on the wire at most (one, from part 2 on)
$node->append_conf('postgresql.conf', "webhook.max_per_profile = 4\n");
$node->restart;
my $receiver = WebhookTest::Receiver->start;

$node->safe_psql('postgres', qq{
	CREATE EXTENSION webhook;
	CREATE TABLE paced_rows (id serial PRIMARY KEY, n int);
	CREATE TABLE free_rows (id serial PRIMARY KEY, n int);
	CREATE TABLE busy_rows (id serial PRIMARY KEY, n int);
	CREATE TABLE slow_rows (id serial PRIMARY KEY, n int);
	SELECT webhook.define_event(t || '.created', t || '_rows', 'insert') FROM unnest('{paced,free,busy,slow}'::text[]) t;
	SELECT webhook.create_profile('paced', '@{[ $receiver->url('/paced') ]}', ARRAY['paced.created'], max_rate => 20);
	SELECT webhook.create_profile('free', '@{[ $receiver->url('/free') ]}', ARRAY['free.created', 'busy.created']);
	SELECT webhook.create_profile('busy', '@{[ $receiver->url('/retry-after/2') ]}', ARRAY['busy.created'],
	                              max_attempts => 1);
	SELECT webhook.create_profile('slow', '@{[ $receiver->url('/fault/slow') ]}', ARRAY['slow.created'],
	                              max_attempts => 1);
	CREATE TABLE long_rows (id serial PRIMARY KEY, n int);
	SELECT webhook.define_event('long.created', 'long_rows', 'insert');
	SELECT webhook.create_profile('long_pause', '@{[ $receiver->url('/retry-after/60') ]}', ARRAY['long.created'],
	                              max_attempts => 1);
});
is($node->safe_psql('postgres', "SELECT max_rate FROM webhook.profiles WHERE name = 'paced'"), '20',
	'webhook.profiles shows max_rate');

# The started_at gaps between a profile's attempts, in seconds, in order.
sub gaps
{
	my ($profile) = @_;
	return [ split /\n/, $node->safe_psql('postgres', qq{
		SELECT round(extract(epoch FROM started_at - lag(started_at) OVER (ORDER BY started_at))::numeric, 3)
		  FROM webhook.attempts a JOIN webhook.deliveries d USING (delivery_id)
		 WHERE d.profile = '$profile' ORDER BY started_at OFFSET 1}) ];
}

sub delivered_or_failed
{
	my ($profile, $count) = @_;
	return $node->poll_query_until('postgres', qq{
		SELECT count(*) = $count FROM webhook.deliveries
		 WHERE profile = '$profile' AND status IN ('delivered', 'failed')});
}

# 1. max_rate 20: 100 requests, each at least 1/20 s after the one before,
# while another profile's 100 go at once
$node->safe_psql('postgres', q{
	INSERT INTO paced_rows (n) SELECT g FROM generate_series(1, 100) g;
	INSERT INTO free_rows (n) SELECT g FROM generate_series(1, 100) g});
ok(delivered_or_failed('paced', 100), 'the paced profile delivered its 100');
ok(delivered_or_failed('free', 100), 'the free one its 100');
my $span = $node->safe_psql('postgres', q{
	SELECT extract(epoch FROM max(started_at) - min(started_at))
	  FROM webhook.attempts a JOIN webhook.deliveries d USING (delivery_id) WHERE d.profile = 'paced'});
cmp_ok($span, '>=', 4.5, "100 requests at max_rate 20 take at least 4.5 s ($span s)");
my @paced = @{ gaps('paced') };
my ($min) = sort { $a <=> $b } @paced;
cmp_ok($min, '>=', 0.049, "each at least 1/20 s after the one before (the least gap: $min s)");
my $free_done = $node->safe_psql('postgres', q{
	SELECT (SELECT max(started_at) FROM webhook.attempts a JOIN webhook.deliveries d USING (delivery_id)
	         WHERE d.profile = 'free')
	     < (SELECT max(started_at) FROM webhook.attempts a JOIN webhook.deliveries d USING (delivery_id)
	         WHERE d.profile = 'paced')});
is($free_done, 't', 'the other profile was not held to that pace: it was done first');

# a rate-limited profile holds claimed what it sends in two seconds, and
# one more (at max_rate 2: 5), not the whole allowance (8 x 4)
$node->safe_psql('postgres', qq{
	CREATE TABLE trickle_rows (id serial PRIMARY KEY, n int);
	SELECT webhook.define_event('trickle.created', 'trickle_rows', 'insert');
	SELECT webhook.create_profile('trickle', '@{[ $receiver->url('/trickle') ]}', ARRAY['trickle.created'],
	                              max_rate => 2);
	INSERT INTO trickle_rows (n) SELECT g FROM generate_series(1, 30) g;
});
ok($node->poll_query_until('postgres', q{
	SELECT count(*) > 0 FROM webhook.deliveries WHERE profile = 'trickle' AND status = 'delivered'}),
	'the trickle profile delivers');
my $most = 0;
for (1 .. 10)
{
	my $claimed = $node->safe_psql('postgres', q{
		SELECT count(*) FROM webhook.deliveries WHERE profile = 'trickle' AND status = 'sending'});
	$most = $claimed if $claimed > $most;
	usleep(100_000);
}
cmp_ok($most, '<=', 5, "at most 5 of its deliveries claimed at once (seen: $most)");
cmp_ok($node->safe_psql('postgres', q{
	SELECT count(*) FROM webhook.deliveries WHERE profile = 'trickle' AND status = 'pending'}), '>', 0,
	'the others wait in the queue');
$node->safe_psql('postgres', "SELECT webhook.drop_profile('trickle')");

# 2. 503 with Retry-After: 2 pauses the whole profile for 2 s after each
# answer; the others go on meanwhile
$node->append_conf('postgresql.conf', "webhook.max_per_profile = 1\n");
$node->reload;
ok($node->poll_query_until('postgres', "SELECT current_setting('webhook.max_per_profile') = '1'"),
	'one request of a profile on the wire at a time from now on');
$node->safe_psql('postgres', "INSERT INTO busy_rows (n) SELECT g FROM generate_series(1, 3) g");
ok(delivered_or_failed('busy', 3), 'the three requests to the busy receiver were answered');
my @busy = @{ gaps('busy') };
is(scalar @busy, 2, 'three attempts, two gaps');
cmp_ok($_, '>=', 2, "the next request waited the Retry-After ($_ s)") for @busy;
ok(delivered_or_failed('free', 103), 'the free profile delivered the same rows');
is($node->safe_psql('postgres', q{
	SELECT (SELECT max(a.started_at) FROM webhook.attempts a JOIN webhook.deliveries d USING (delivery_id)
	         WHERE d.profile = 'free')
	     < (SELECT max(a.started_at) FROM webhook.attempts a JOIN webhook.deliveries d USING (delivery_id)
	         WHERE d.profile = 'busy')}), 't', 'during the pause: it was not paused');

# what a paused profile has waiting goes back to the queue, due when the
# pause ends: it holds none of the worker's claims meanwhile
$node->safe_psql('postgres', "INSERT INTO long_rows (n) SELECT g FROM generate_series(1, 3) g");
ok($node->poll_query_until('postgres', q{
	SELECT count(*) FILTER (WHERE status = 'failed') = 1
	   AND count(*) FILTER (WHERE status = 'pending' AND next_attempt_at > now() + interval '30 seconds') = 2
	  FROM webhook.deliveries WHERE profile = 'long_pause'}),
	'after a Retry-After of 60 s, the other two wait in the queue until the pause ends, unclaimed');
$node->safe_psql('postgres', "SELECT webhook.drop_profile('long_pause')");

# 3. 503 without Retry-After: a pause of 1 s, then 2 s; a success ends the run
$receiver->set_mode('status 503');
$node->safe_psql('postgres', "INSERT INTO slow_rows (n) SELECT g FROM generate_series(1, 3) g");
ok(delivered_or_failed('slow', 3), 'three 503s');
my @slow = @{ gaps('slow') };
cmp_ok($slow[0], '>=', 1, "a pause of a second after the first ($slow[0] s)");
cmp_ok($slow[1], '>=', 2, "of two after the second ($slow[1] s)");
$receiver->set_mode('ok');
$node->safe_psql('postgres', "INSERT INTO slow_rows (n) VALUES (4)");
ok(delivered_or_failed('slow', 4), 'then a success');
cmp_ok(gaps('slow')->[2], '>=', 4, 'which waited the pause of four seconds after the third 503');
$receiver->set_mode('status 503');
$node->safe_psql('postgres', "INSERT INTO slow_rows (n) SELECT g FROM generate_series(5, 6) g");
ok(delivered_or_failed('slow', 6), 'two more 503s');
my $after = gaps('slow')->[4];
cmp_ok($after, '>=', 1, "the success ended the run: a second's pause again ($after s)");
cmp_ok($after, '<', 8, 'not the eight seconds that would have come next');

$receiver->stop;
$node->stop;
done_testing();
