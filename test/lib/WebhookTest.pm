# WebhookTest: helpers for the webhook TAP tests.
#
# A node with the library preloaded, the sample schema, and a receiver
# (test/receiver.py on 127.0.0.1) that records what it gets.
package WebhookTest;

use strict;
use warnings;

use Exporter 'import';
use File::Basename qw(dirname);
use File::Spec;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

our @EXPORT = qw(new_webhook_node sample_schema worker_pid wait_until);

our $test_dir = File::Spec->rel2abs(dirname(__FILE__) . '/..');

# A started node that preloads webhook and restarts after a crash.  Its
# workers stay while idle (021_databases tests leaving when idle): a test
# that checks a worker's pid must not see it leave for want of work.
sub new_webhook_node
{
	my ($name, %init) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(%init);
	$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'webhook'
restart_after_crash = on
log_statement = none
log_min_messages = info
webhook.worker_idle_timeout = 1h
});
	$node->start;
	return $node;
}

sub sample_schema
{
	return PostgreSQL::Test::Utils::slurp_file("$test_dir/sql/sample_schema.sql");
}

# The pid of the webhook worker of a database, or '' when none runs.
sub worker_pid
{
	my ($node, $dbname) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT coalesce(string_agg(pid::text, ','), '') FROM pg_stat_activity
		 WHERE backend_type = 'webhook worker' AND datname = '$dbname'});
}

# Calls $check until it returns true or $timeout seconds pass.
sub wait_until
{
	my ($check, $timeout) = @_;
	$timeout //= 30;
	my $deadline = time + $timeout;
	while (time < $deadline)
	{
		return 1 if $check->();
		usleep(50_000);
	}
	return 0;
}

package WebhookTest::Receiver;

use strict;
use warnings;

use JSON::PP;
use Time::HiRes qw(time usleep);

# Starts test/receiver.py on 127.0.0.1 with a free port.  Options:
# tls => { cert => FILE, key => FILE, client_ca => FILE } for HTTPS (and
# client certificates), proxy => 1 for a forward proxy.
sub start
{
	my ($class, %options) = @_;
	my $dir = PostgreSQL::Test::Utils::tempdir();
	my $self = bless {
		log => "$dir/requests.jsonl",
		port_file => "$dir/port",
		mode_file => "$dir/mode",
		options => [
			$options{tls} ? ('--tls-cert', $options{tls}{cert}, '--tls-key', $options{tls}{key}) : (),
			$options{tls} && $options{tls}{client_ca} ? ('--client-ca', $options{tls}{client_ca}) : (),
			$options{proxy} ? ('--proxy') : ()
		],
		scheme => $options{tls} ? 'https' : 'http',
	}, $class;
	$self->launch;
	$self->{port} = PostgreSQL::Test::Utils::slurp_file($self->{port_file});
	return $self;
}

sub launch
{
	my ($self) = @_;
	my @port = $self->{port} ? ('--port', $self->{port}) : ();
	unlink $self->{port_file};
	my $pid = fork();
	die "fork failed: $!" unless defined $pid;
	if ($pid == 0)
	{
		exec('python3', "$WebhookTest::test_dir/receiver.py", @port,
			'--port-file', $self->{port_file}, '--log', $self->{log},
			'--mode-file', $self->{mode_file}, @{ $self->{options} })
		  or die "could not start the receiver: $!";
	}
	$self->{pid} = $pid;
	WebhookTest::wait_until(sub { -s $self->{port_file} }, 10)
	  or die "the receiver did not start";
}

# Starts it again on the same port, after stop (a receiver that was down).
sub restart
{
	my ($self) = @_;
	$self->stop;
	$self->launch;
}

# How /fault/... answers from now on: "ok", "status 500", "hang", ...
sub set_mode
{
	my ($self, $mode) = @_;
	open my $fh, '>', "$self->{mode_file}.tmp" or die $!;
	print $fh $mode;
	close $fh;
	rename "$self->{mode_file}.tmp", $self->{mode_file} or die $!;
}

sub url
{
	my ($self, $path) = @_;
	return "$self->{scheme}://127.0.0.1:$self->{port}" . ($path // '/hooks');
}

# How many requests were recorded so far (cheap: no JSON parsing).
sub count
{
	my ($self) = @_;
	open my $fh, '<', $self->{log} or return 0;
	my $n = 0;
	$n++ while <$fh>;
	close $fh;
	return $n;
}

# Every request received so far, oldest first, with the body decoded when
# it is JSON (as ->{json}).
sub requests
{
	my ($self) = @_;
	my @requests;
	open my $fh, '<', $self->{log} or return [];
	while (my $line = <$fh>)
	{
		next unless $line =~ /\n$/;    # a line still being written
		my $r = decode_json($line);
		$r->{json} = eval { decode_json($r->{body}) };
		push @requests, $r;
	}
	close $fh;
	return \@requests;
}

# Waits until $count requests (matching $filter, when given) have arrived.
sub wait_for
{
	my ($self, $count, $filter, $timeout) = @_;
	my $matching = [];
	WebhookTest::wait_until(
		sub {
			$matching = [ grep { !$filter || $filter->($_) } @{ $self->requests } ];
			return @$matching >= $count;
		},
		$timeout);
	return $matching;
}

sub stop
{
	my ($self) = @_;
	return unless $self->{pid};
	kill 'TERM', $self->{pid};
	waitpid($self->{pid}, 0);
	delete $self->{pid};
}

sub DESTROY { $_[0]->stop }

1;
