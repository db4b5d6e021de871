# HTTP/2 multiplexing: behind an HTTPS gateway that offers HTTP/2 (nghttpx
# in front of the mock API, with a certificate of a private CA given in
# sac_webhook.ca_file), the workers keep dozens of requests in flight on a
# few connections, instead of a connection per request.
use strict;
use warnings;
use JSON::PP;
use Time::HiRes qw(time usleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib $FindBin::Bin;
use SacMock;

my $nghttpx = `sh -c 'command -v nghttpx'`;
chomp $nghttpx;
plan skip_all => 'nghttpx is not installed (Debian package nghttp2-proxy)' unless $nghttpx;

my $api = SacMock->new(args => ['--access-token', 'tok-1', '--auto-max', '0']);
$api->start;
my $mock_port = $api->{port};

# the gateway: TLS (HTTP/2 by ALPN) in front, HTTP/1.1 to the mock
my $port = PostgreSQL::Test::Cluster::get_free_port();
my $dir = $PostgreSQL::Test::Utils::tmp_check;
my $gw_log = "$dir/nghttpx.log";
system('openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1',
	'-keyout', "$dir/gw.key", '-out', "$dir/gw.crt", '-subj', '/CN=127.0.0.1',
	'-addext', 'subjectAltName=IP:127.0.0.1') == 0
  or die "openssl req failed";
my $gw = fork();
die "fork: $!" unless defined $gw;
if ($gw == 0)
{
	open(STDOUT, '>>', $gw_log);
	open(STDERR, '>>', $gw_log);
	exec($nghttpx, '--conf=/dev/null', "--frontend=127.0.0.1,$port",
		"--backend=127.0.0.1,$mock_port", '--workers=1', '--log-level=WARN',
		"--errorlog-file=$gw_log", '--accesslog-file=/dev/null', "$dir/gw.key", "$dir/gw.crt")
	  or die "exec nghttpx: $!";
}
END { kill 'TERM', $gw if $gw; }
my $up = 0;
for (1 .. 100)
{
	$up = system("curl -sf -o /dev/null --http2 --cacert $dir/gw.crt https://127.0.0.1:$port/_mock/health") == 0;
	last if $up;
	usleep(100_000);
}
ok($up, 'the gateway answers HTTP/2');

my $node = PostgreSQL::Test::Cluster->new('http2');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'sac_webhook'
log_statement = none
sac_webhook.database = 'postgres'
sac_webhook.workers = 2
sac_webhook.api_base_url = 'https://127.0.0.1:$port'
sac_webhook.ca_file = '$dir/gw.crt'
sac_webhook.poll_interval = '1s'
sac_webhook.resync_interval = 0
sac_webhook.onboarding_sync = off
});
$node->start;
my $tenant = 'e0000000-0000-4000-8000-000000000001';
$node->safe_psql('postgres', qq{
CREATE EXTENSION sac_webhook;
INSERT INTO sac_webhook.tenants (tenant_id, access_token, token_expires_at)
VALUES ('$tenant', 'tok-1', now() + interval '1 day');
});

# connections to the gateway in the ESTABLISHED state, from /proc/net/tcp
sub connections
{
	my $n = 0;
	my $hex = sprintf('%04X', $port);
	for my $f ('/proc/net/tcp', '/proc/net/tcp6')
	{
		open(my $fh, '<', $f) or next;
		while (<$fh>)
		{
			my @c = split ' ';
			$n++ if defined $c[2] && $c[2] =~ /:$hex$/ && $c[3] eq '01';
		}
		close $fh;
	}
	return $n;
}

$api->call('POST', '/_mock/config', '{"latency_ms": 300}');
$node->safe_psql('postgres', qq{
SELECT count(sac_webhook.receive(format(
  '{"data": {"status": "CREATION", "params": {"id": "%1\$s"}, "resource": "/v0/tickets/%1\$s"}, "tenant_id": "$tenant", "topic": "sac_ticket"}',
  format('f0000000-0000-4000-8000-%s', lpad(i::text, 12, '0')))))
  FROM generate_series(1, 100) i});
my ($peak_conn, $peak_flight) = (0, 0);
my $t0 = time();
while (time() - $t0 < 60)
{
	my $c = connections();
	my $f = decode_json($api->get('/_mock/stats'))->{suspended};
	$peak_conn = $c if $c > $peak_conn;
	$peak_flight = $f if $f > $peak_flight;
	last if $node->safe_psql('postgres', 'SELECT count(*) FROM sac_webhook.tickets') eq '100';
	usleep(20_000);
}
is($node->safe_psql('postgres', 'SELECT count(*) FROM sac_webhook.tickets'), '100', 'every ticket stored through the gateway');
note("peak: $peak_flight requests in flight at the API over $peak_conn connections to the gateway");
cmp_ok($peak_flight, '>=', 20, 'dozens of requests in flight');
cmp_ok($peak_conn, '<=', 8, 'on a few connections (a connection per request without multiplexing)');

$node->stop;
done_testing();
