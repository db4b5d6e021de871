# SacMock: the bundled mock of Magalu's API (test/mock_api) for the TAP
# tests: start it on a free loopback port, drive its control endpoints,
# stop it.
package SacMock;

use strict;
use warnings;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use Time::HiRes qw(usleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;

my $top = abs_path(dirname(__FILE__) . '/..');

# SacMock->new(args => [...]): a mock that start() runs with the given
# extra arguments (tokens, clients); its URL is $mock->url.
sub new
{
	my ($class, %opts) = @_;
	my $port = PostgreSQL::Test::Cluster::get_free_port();
	my $self = {
		bin => $ENV{SAC_WEBHOOK_MOCK_API} // "$top/test/mock_api/sac_webhook_mock_api",
		port => $port,
		url => "http://127.0.0.1:$port",
		args => $opts{args} // [],
		log => "$PostgreSQL::Test::Utils::tmp_check/" . ($opts{name} // 'mock_api') . '.log',
		pid => undef,
	};
	return bless $self, $class;
}

sub url { return $_[0]->{url} }

# Start the mock (with --auto documents) and wait until it answers.
sub start
{
	my ($self) = @_;
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		open(STDOUT, '>>', $self->{log});
		open(STDERR, '>>', $self->{log});
		exec($self->{bin}, '--listen', "127.0.0.1:$self->{port}", '--auto', '--quiet', @{ $self->{args} })
		  or die "exec $self->{bin}: $!";
	}
	$self->{pid} = $pid;
	for (1 .. 100)
	{
		return if system("curl -sf -o /dev/null $self->{url}/_mock/health") == 0;
		usleep(100_000);
	}
	die "mock API did not start";
}

sub stop
{
	my ($self) = @_;
	return unless $self->{pid};
	kill 'TERM', $self->{pid};
	waitpid($self->{pid}, 0);
	$self->{pid} = undef;
}

# $mock->call(METHOD, PATH[, JSON BODY]): a control request that must work.
sub call
{
	my ($self, $method, $path, $body) = @_;
	my @cmd = ('curl', '-sf', '-o', '/dev/null', '-X', $method);
	push @cmd, ('-H', 'Content-Type: application/json', '--data-binary', $body) if defined $body;
	system(@cmd, "$self->{url}$path") == 0 or die "mock $method $path failed";
}

# $mock->get(PATH): the body of a GET.
sub get
{
	my ($self, $path) = @_;
	return `curl -sf '$self->{url}$path'`;
}

sub DESTROY { $_[0]->stop(); }

1;
