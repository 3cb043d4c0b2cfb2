# webhook.rotate_secret on the wire: while a rotation lasts every request
# carries two signatures, and the official Standard Webhooks library
# verifies it with the old secret and with the new one; when keep_old has
# passed only the new secret signs, and the worker drops the old one from
# the profile; a secret set with alter_profile ends a rotation at once.
use strict;
use warnings;

use IPC::Run;
use JSON::PP;
use MIME::Base64 qw(encode_base64);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WebhookTest;

my $node = new_webhook_node('secret_rotation');
my $receiver = WebhookTest::Receiver->start;
my $first = 'whsec_' . encode_base64('the first secret, 32 bytes long!', '');
my $given = 'whsec_' . encode_base64('a secret the desk chose, 32 byte', '');
my $other = 'whsec_' . encode_base64('nobody has this secret, 32 bytes', '');

$node->safe_psql('postgres', sample_schema());
my $url = $receiver->url('/rotation');
$node->safe_psql('postgres', qq{
	CREATE EXTENSION webhook;
	SELECT webhook.define_ticket_events('tickets', 'actions');
	SELECT webhook.create_profile('desk', '$url', ARRAY['ticket.created'], secret => '$first');
});

my $sent = 0;
# A new ticket; its request, once received.
sub send_one
{
	my ($summary) = @_;
	$node->safe_psql('postgres', "INSERT INTO tickets (summary, status_id) VALUES ('$summary', 1)");
	$sent++;
	my $got = $receiver->wait_for($sent, sub { $_[0]{path} eq '/rotation' });
	is(scalar @$got, $sent, "the request of '$summary' arrived");
	return $got->[-1];
}

# What the official library says of a request, verified with a secret.
sub verify
{
	my ($request, $secret) = @_;
	my $file = PostgreSQL::Test::Utils::tempdir() . '/request.jsonl';
	open my $fh, '>', $file or die $!;
	print $fh encode_json({ body => $request->{body}, headers => $request->{headers} }) . "\n";
	close $fh;
	my ($out, $err);
	IPC::Run::run([ 'node', "$WebhookTest::test_dir/verify_signature.mjs", $secret, $file ],
		'>', \$out, '2>', \$err);
	diag($err) if $err;
	return $out =~ /^ok / ? 'ok' : 'fail';
}

my $r = send_one('Before any rotation');
like($r->{headers}{'webhook-signature'}, qr{^v1,[A-Za-z0-9+/]{43}=$}, 'one signature before a rotation');
is(verify($r, $first), 'ok', 'verified with the first secret');

# a made secret, the first one kept a day
my $made = $node->safe_psql('postgres', "SELECT webhook.rotate_secret('desk')");
like($made, qr{^whsec_[A-Za-z0-9+/]{43}=$}, 'rotate_secret returns the new secret');
$r = send_one('During the first rotation');
like($r->{headers}{'webhook-signature'}, qr{^v1,\S+ v1,\S+$}, 'two signatures during the rotation');
is(verify($r, $made), 'ok', 'the library verifies it with the new secret');
is(verify($r, $first), 'ok', 'and with the old one');
is(verify($r, $other), 'fail', 'not with another');
is($node->safe_psql('postgres', q{
	SELECT concat_ws('|', secret, previous_secret_until - now() > '23 hours')
	  FROM webhook.profiles WHERE name = 'desk'}), '[redacted]|t',
	'webhook.profiles says until when, not the secrets');

# a given secret, the made one kept two seconds: then it signs no more
$node->safe_psql('postgres', "SELECT webhook.rotate_secret('desk', '2 seconds', new_secret => '$given')");
$r = send_one('During the short rotation');
is(verify($r, $given), 'ok', 'a given secret signs');
is(verify($r, $made), 'ok', 'the secret it replaced signs too');
is(verify($r, $first), 'fail', 'the secret of the rotation before signs no more');
ok($node->poll_query_until('postgres', q{
	SELECT previous_secret_until IS NULL FROM webhook.profiles WHERE name = 'desk'}),
	'the rotation ends after keep_old');
$r = send_one('After the short rotation');
like($r->{headers}{'webhook-signature'}, qr{^v1,[A-Za-z0-9+/]{43}=$}, 'one signature once it ended');
is(verify($r, $given), 'ok', 'verified with the new secret');
is(verify($r, $made), 'fail', 'no longer with the old one');

# the worker drops the ended rotation's secret from the profile (at its
# housekeeping, which a fresh start does first)
$node->restart;
ok($node->poll_query_until('postgres', q{
	SELECT previous_secret IS NULL AND previous_secret_until IS NULL FROM webhook.profile WHERE name = 'desk'}),
	'the worker dropped the old secret');

# alter_profile(secret => ...) ends a rotation at once
$node->safe_psql('postgres', "SELECT webhook.rotate_secret('desk', '1 hour')");
$node->safe_psql('postgres', "SELECT webhook.alter_profile('desk', secret => '$first')");
$r = send_one('After alter_profile');
like($r->{headers}{'webhook-signature'}, qr{^v1,[A-Za-z0-9+/]{43}=$}, 'one signature after alter_profile');
is(verify($r, $first), 'ok', 'the secret alter_profile set signs');

# the recorded request headers show both signatures, never a secret
is($node->safe_psql('postgres', qq{
	SELECT count(*) FROM webhook.attempts
	 WHERE request_headers->>'webhook-signature' LIKE 'v1,% v1,%'}), '2',
	'the two requests of rotations recorded with both signatures');
is($node->safe_psql('postgres', qq{
	SELECT count(*) FROM webhook.attempts a
	 WHERE a.request_headers::text LIKE '%whsec_%' OR a.request_headers::text LIKE '%' || substr('$made', 7) || '%'}),
	'0', 'no recorded header holds a secret');

$receiver->stop;
$node->stop;
done_testing();
