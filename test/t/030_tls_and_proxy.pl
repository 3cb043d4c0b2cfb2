# Client certificates, a private CA and an explicit proxy, against real
# receivers: an HTTPS receiver that requires a client certificate of its CA
# (openssl makes the CA and the certificates here) gets the profile's
# certificate, alone or with Basic authentication; without the CA, or
# without a certificate, the request fails and says why.  Through
# webhook.proxy every request goes to the proxy, which passes it on; a URL
# whose host is an address of webhook.blocked_networks is refused before
# it reaches the proxy.
use strict;
use warnings;

use IPC::Run;
use MIME::Base64 qw(encode_base64);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WebhookTest;

my $dir = PostgreSQL::Test::Utils::tempdir();
sub openssl
{
	my ($out, $err);
	IPC::Run::run([ 'openssl', @_ ], '>', \$out, '2>', \$err) or die "openssl @_: $err";
}
openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', "$dir/ca.key", '-out', "$dir/ca.pem",
	'-days', '2', '-subj', '/CN=webhook test CA');
openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', "$dir/other_ca.key",
	'-out', "$dir/other_ca.pem", '-days', '2', '-subj', '/CN=another CA');
# A certificate of NAME signed by CA, with extensions EXT.
sub certificate
{
	my ($name, $cn, $ca, $ext) = @_;
	open my $fh, '>', "$dir/$name.ext" or die $!;
	print $fh "$ext\n";
	close $fh;
	openssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', "$dir/$name.key", '-out', "$dir/$name.csr",
		'-subj', "/CN=$cn");
	openssl('x509', '-req', '-in', "$dir/$name.csr", '-CA', "$dir/$ca.pem", '-CAkey', "$dir/$ca.key",
		'-CAcreateserial', '-out', "$dir/$name.pem", '-days', '2', '-extfile', "$dir/$name.ext");
}
certificate('server', '127.0.0.1', 'ca', 'subjectAltName = IP:127.0.0.1');
certificate('client', 'desk-client', 'ca', 'extendedKeyUsage = clientAuth');
certificate('stranger', 'stranger', 'other_ca', 'extendedKeyUsage = clientAuth');
my %pem = map { $_ => PostgreSQL::Test::Utils::slurp_file("$dir/$_") }
  qw(ca.pem client.pem client.key stranger.pem stranger.key);

my $node = new_webhook_node('tls');
my $tls = WebhookTest::Receiver->start(
	tls => { cert => "$dir/server.pem", key => "$dir/server.key", client_ca => "$dir/ca.pem" });
my $plain = WebhookTest::Receiver->start;
my $proxy = WebhookTest::Receiver->start(proxy => 1);

$node->safe_psql('postgres', sample_schema());
$node->safe_psql('postgres', 'CREATE EXTENSION webhook');
$node->safe_psql('postgres', "SELECT webhook.define_ticket_events('tickets', 'actions')");
# profiles, with the PEM texts passed as parameters
sub make_profile
{
	my ($name, $url, $auth, $cert, $key, $ca) = @_;
	my @args = map { defined $_ ? "'" . ($_ =~ s/'/''/gr) . "'" : 'NULL' } ($cert, $key, $ca);
	my $credentials = $auth eq 'basic' ? "username => 'desk', password => 'pw-1'," : '';
	$node->safe_psql('postgres', qq{
		SELECT webhook.create_profile('$name', '$url', ARRAY['ticket.created'], max_attempts => 1,
		                              auth => '$auth', $credentials
		                              client_cert => $args[0], client_key => $args[1], ca_cert => $args[2])});
}
make_profile('mtls', $tls->url('/mtls'), 'none', $pem{'client.pem'}, $pem{'client.key'}, $pem{'ca.pem'});
make_profile('mtls_basic', $tls->url('/mtls_basic'), 'basic', $pem{'client.pem'}, $pem{'client.key'}, $pem{'ca.pem'});
make_profile('no_ca', $tls->url('/no_ca'), 'none', $pem{'client.pem'}, $pem{'client.key'}, undef);
make_profile('no_cert', $tls->url('/no_cert'), 'none', undef, undef, $pem{'ca.pem'});
make_profile('stranger', $tls->url('/stranger'), 'none', $pem{'stranger.pem'}, $pem{'stranger.key'}, $pem{'ca.pem'});

is($node->safe_psql('postgres', q{
	SELECT concat_ws('|', client_cert LIKE '-----BEGIN CERTIFICATE-----%', client_key, ca_cert LIKE '-----BEGIN CERTIFICATE-----%')
	  FROM webhook.profiles WHERE name = 'mtls'}), 't|[redacted]|t',
	'webhook.profiles shows the certificates and redacts the key');

$node->safe_psql('postgres', "INSERT INTO tickets (summary, status_id) VALUES ('Over mutual TLS', 1)");
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 5 FROM webhook.deliveries WHERE status IN ('delivered', 'failed')}),
	'every profile got an answer or an error');
my %status = split /[|\n]/, $node->safe_psql('postgres', 'SELECT profile, status FROM webhook.deliveries');
is($status{mtls}, 'delivered', 'a client certificate of the receiver\'s CA, trusted through ca_cert: delivered');
is($status{mtls_basic}, 'delivered', 'with Basic authentication too');
my @got = @{ $tls->requests };
is(scalar(grep { $_->{path} eq '/mtls' && ($_->{client_cn} // '') eq 'desk-client' } @got), 1,
	'the receiver saw the profile\'s client certificate');
my ($basic) = grep { $_->{path} eq '/mtls_basic' } @got;
is($basic->{headers}{authorization}, 'Basic ' . encode_base64('desk:pw-1', ''), 'and the Basic credentials');
my %error = split /[|\n]/, $node->safe_psql('postgres', q{
	SELECT d.profile, a.outcome || ': ' || a.error FROM webhook.attempts a JOIN webhook.deliveries d USING (delivery_id)
	 WHERE d.status = 'failed'});
is($status{no_ca}, 'failed', 'without ca_cert the private CA is not trusted');
like($error{no_ca}, qr/certificate/i, "and the error says so ($error{no_ca})");
is($status{no_cert}, 'failed', 'without a client certificate the receiver refuses');
is($status{stranger}, 'failed', 'so it does one of another CA');
ok(!grep({ $_->{path} =~ m{^/(no_ca|no_cert|stranger)$} } @got), 'none of those reached the receiver');

# webhook.proxy: every request goes through it
$node->append_conf('postgresql.conf', "webhook.proxy = '" . $proxy->url('') . "'\n"
	  . "webhook.blocked_networks = '169.254.0.0/16, fe80::/10, 0.0.0.0/8, ::/128, 127.0.0.2/32'\n");
$node->reload;
is($node->safe_psql('postgres', 'SHOW webhook.proxy'), $proxy->url(''), 'webhook.proxy is set');
$node->safe_psql('postgres', qq{
	SELECT webhook.create_profile('via_proxy', '@{[ $plain->url('/via') ]}', ARRAY['ticket.created']);
	SELECT webhook.create_profile('blocked', 'http://127.0.0.2:9/blocked', ARRAY['ticket.created'], max_attempts => 1);
	-- the same address written otherwise: a number, IPv4 in IPv6, a trailing dot, a zone
	SELECT webhook.create_profile('blocked_' || n, u, ARRAY['ticket.created'], max_attempts => 1)
	  FROM (VALUES (1, 'http://2130706434:9/blocked'), (2, 'http://[::ffff:127.0.0.2]:9/blocked'),
	               (3, 'http://127.0.0.2.:9/blocked'), (4, 'http://[fe80::1%25eth0]:9/blocked')) AS v(n, u);
	SELECT webhook.disable_profile(name) FROM webhook.profiles WHERE name <> 'via_proxy' AND name NOT LIKE 'blocked%';
	INSERT INTO tickets (summary, status_id) VALUES ('Through the proxy', 1);
});
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 6 FROM webhook.deliveries WHERE (profile IN ('via_proxy', 'blocked') OR profile LIKE 'blocked\_%')
	                                               AND status IN ('delivered', 'failed')}),
	'all answered');
is($node->safe_psql('postgres', "SELECT status FROM webhook.deliveries WHERE profile = 'via_proxy'"), 'delivered',
	'delivered through the proxy');
my @proxied = @{ $proxy->requests };
is(scalar(grep { $_->{path} eq $plain->url('/via') } @proxied), 1, 'the proxy was asked for the receiver\'s URL');
is(scalar(grep { $_->{path} eq '/via' } @{ $plain->requests }), 1, 'and the receiver got it from there');
is($node->safe_psql('postgres', q{
	SELECT a.outcome || ': ' || a.error FROM webhook.attempts a JOIN webhook.deliveries d USING (delivery_id)
	 WHERE d.profile = 'blocked'}), 'blocked: connecting to 127.0.0.2 is refused by webhook.blocked_networks',
	'an address of blocked_networks is refused, proxy or not');
is($node->safe_psql('postgres', q{
	SELECT string_agg(d.profile || ' ' || a.outcome, ', ' ORDER BY d.profile)
	  FROM webhook.attempts a JOIN webhook.deliveries d USING (delivery_id) WHERE d.profile LIKE 'blocked\_%'}),
	'blocked_1 blocked, blocked_2 blocked, blocked_3 blocked, blocked_4 blocked',
	'so is the same address as a number, in IPv6, with a trailing dot, and an address with a zone');
is(scalar(grep { $_->{path} =~ /blocked/ } @{ $proxy->requests }), 0, 'none of them reached the proxy');
# a plain role does not see where the proxy is
$node->safe_psql('postgres', 'CREATE ROLE tls_nobody LOGIN');
my ($ret, $out, $err) = $node->psql('postgres', "SET ROLE tls_nobody; SELECT current_setting('webhook.proxy')");
like($err, qr/must be superuser or have privileges of pg_read_all_settings/,
	'a role without privileges cannot read webhook.proxy (it may hold credentials)');
is($out, '', 'and is shown nothing of it');

$_->stop for $tls, $plain, $proxy;
$node->stop;
done_testing();
