# What a receiver gets from a profile's options: the method, Basic and
# Bearer authentication, extra headers, a Standard Webhooks signature that
# the official library verifies, a per-profile timeout and retry schedule,
# and recorded request headers without the credentials.
use strict;
use warnings;

use MIME::Base64 qw(encode_base64);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WebhookTest;

my $node = new_webhook_node('signing');
my $receiver = WebhookTest::Receiver->start;
my $secret = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';

$node->safe_psql('postgres', sample_schema());
my ($put, $patch, $hang, $flaky) =
  map { $receiver->url($_) } ('/put', '/patch', '/hang', '/status/503');
$node->safe_psql('postgres', qq{
	CREATE EXTENSION webhook;
	SELECT webhook.define_ticket_events('tickets', 'actions');
	SELECT webhook.create_profile('put_basic', '$put', ARRAY['ticket.created'],
	    method => 'PUT', auth => 'basic', username => 'desk', password => 's3cret',
	    headers => '{"X-Team": "service-desk", "X-Api-Key": "k-123"}', secret => '$secret');
	SELECT webhook.create_profile('patch_bearer', '$patch', ARRAY['ticket.created'],
	    method => 'PATCH', auth => 'bearer', password => 'tok-456');
});

$node->safe_psql('postgres', q{
	INSERT INTO tickets (summary, status_id) VALUES ('Ünïcödé printer', 1), ('VPN down', 1)});
my $got = $receiver->wait_for(4, sub { $_[0]{path} =~ m{^/(put|patch)$} });
is(scalar @$got, 4, 'two tickets, two profiles: four requests');
my @put = grep { $_->{path} eq '/put' } @$got;
my @patch = grep { $_->{path} eq '/patch' } @$got;
is($put[0]{method}, 'PUT', 'the PUT profile sends PUT');
is($patch[0]{method}, 'PATCH', 'the PATCH profile sends PATCH');
is($put[0]{headers}{authorization}, 'Basic ' . encode_base64('desk:s3cret', ''), 'Basic authentication');
is($patch[0]{headers}{authorization}, 'Bearer tok-456', 'Bearer authentication');
is($put[0]{headers}{'x-team'}, 'service-desk', 'extra headers are sent');
like($put[0]{headers}{'webhook-signature'}, qr{^v1,[A-Za-z0-9+/]{43}=$}, 'a v1 signature');

# the official library verifies every request of the profile with its secret
my $signed = PostgreSQL::Test::Utils::tempdir() . '/put.jsonl';
open my $fh, '>', $signed or die;
for my $r (@put) { print $fh JSON::PP::encode_json({ body => $r->{body}, headers => $r->{headers} }) . "\n"; }
close $fh;
my ($out, $err);
IPC::Run::run([ 'node', "$WebhookTest::test_dir/verify_signature.mjs", $secret, $signed ],
	'>', \$out, '2>', \$err);
is($out =~ tr/\n//, 2, 'the verifier looked at both requests') or diag($err);
like($out, qr/\Aok \S+\nok \S+\n\z/, 'standardwebhooks verifies both signatures') or diag($out, $err);

# and refuses a body that was changed, or another secret
my $tampered = PostgreSQL::Test::Utils::tempdir() . '/tampered.jsonl';
open $fh, '>', $tampered or die;
my $body = $put[0]{body};
$body =~ s/"summary"/"summarx"/ or die "nothing to tamper with";
print $fh JSON::PP::encode_json({ body => $body, headers => $put[0]{headers} }) . "\n";
close $fh;
IPC::Run::run([ 'node', "$WebhookTest::test_dir/verify_signature.mjs", $secret, $tampered ],
	'>', \$out, '2>', \$err);
like($out, qr/^fail/, 'a changed body does not verify');
IPC::Run::run([ 'node', "$WebhookTest::test_dir/verify_signature.mjs",
	'whsec_' . encode_base64('another secret of 24 bytes!', ''), $signed ], '>', \$out, '2>', \$err);
like($out, qr/^fail/, 'nor does another secret');

# recorded request headers keep everything but the credentials
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 4 FROM webhook.deliveries WHERE status = 'delivered'}), 'all delivered');
is($node->safe_psql('postgres', q{
	SELECT DISTINCT concat_ws('|', a.request_headers->>'Authorization', a.request_headers->>'X-Api-Key',
	                          a.request_headers->>'X-Team', a.request_headers ? 'webhook-signature')
	  FROM webhook.attempts a JOIN webhook.deliveries d USING (delivery_id) WHERE d.profile = 'put_basic'}),
	'[redacted]|[redacted]|service-desk|t', 'credentials are redacted in the recorded headers');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM webhook.attempts WHERE request_headers::text LIKE '%s3cret%'
	    OR request_headers::text LIKE '%tok-456%' OR request_headers::text LIKE '%k-123%'}),
	'0', 'no attempt shows a password, token or secret header');

# a profile's own timeout and retry schedule; the webhook-id stays the same
$node->safe_psql('postgres', qq{
	SELECT webhook.create_profile('hanging', '$hang', ARRAY['action.added'], timeout => '1 second',
	                              max_attempts => 1);
	SELECT webhook.create_profile('flaky', '$flaky', ARRAY['action.added'], max_attempts => 3,
	                              retry_schedule => '{1 second}');
	INSERT INTO actions (ticket_id, note) SELECT min(ticket_id), 'Looked at it' FROM tickets;
});
ok($node->poll_query_until('postgres', q{
	SELECT status = 'failed' AND attempts = 1 FROM webhook.deliveries WHERE profile = 'hanging'}),
	'a profile with max_attempts 1 fails after one attempt');
is($node->safe_psql('postgres', q{
	SELECT concat_ws('|', a.outcome, a.duration_ms BETWEEN 900 AND 5000)
	  FROM webhook.attempts a JOIN webhook.deliveries d USING (delivery_id) WHERE d.profile = 'hanging'}),
	'timeout|t', 'its 1 second timeout applies, not webhook.request_timeout');
ok($node->poll_query_until('postgres', q{
	SELECT status = 'failed' AND attempts = 3 FROM webhook.deliveries WHERE profile = 'flaky'}),
	'a 503 is retried on the profile schedule, then failed after max_attempts');
my @retries = grep { $_->{path} eq '/status/503' } @{ $receiver->requests };
is(scalar @retries, 3, 'three attempts reached the receiver');
my %ids = map { $_->{headers}{'webhook-id'} => 1 } @retries;
is(scalar keys %ids, 1, 'all with the same webhook-id');
is($node->safe_psql('postgres', q{
	SELECT bool_and(next.started_at - prev.started_at BETWEEN interval '0.7 seconds' AND interval '30 seconds')
	  FROM webhook.attempts prev JOIN webhook.attempts next
	    ON next.delivery_id = prev.delivery_id AND next.attempt = prev.attempt + 1
	  JOIN webhook.deliveries d ON d.delivery_id = prev.delivery_id WHERE d.profile = 'flaky'}),
	't', 'about one second apart, with jitter');

$receiver->stop;
$node->stop;
done_testing();
