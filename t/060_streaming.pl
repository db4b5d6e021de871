# The workers' pipeline against a remote-like API: a slow answer holds up
# only its own row; kill -9 with hundreds of requests in flight loses
# nothing and applies nothing twice; a seller answered with HTTP 429 slows
# down alone, and backs off as a whole; the caps on requests in flight (over
# all, per tenant) and on the request rate hold, and follow a reload.
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

my $api = SacMock->new(args => ['--access-token', 'tok-1', '--auto-max', '0']);
$api->start;
my $url = $api->url;

my $node = PostgreSQL::Test::Cluster->new('streaming');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'sac_webhook'
restart_after_crash = on
log_statement = none
max_connections = 40
sac_webhook.database = 'postgres'
sac_webhook.workers = 2
sac_webhook.api_base_url = '$url'
sac_webhook.poll_interval = '1s'
sac_webhook.retry_base_delay = '200ms'
sac_webhook.retry_max_delay = '2s'
sac_webhook.request_timeout = '10s'
sac_webhook.max_attempts = 1000
sac_webhook.resync_interval = 0
sac_webhook.onboarding_sync = off
});
$node->start;

sub tenant_id { sprintf('d0000000-0000-4000-8000-%012d', $_[0]) }

$node->safe_psql('postgres', qq{
CREATE EXTENSION sac_webhook;
INSERT INTO sac_webhook.tenants (tenant_id, name, api_base_url, access_token, token_expires_at)
SELECT format('d0000000-0000-4000-8000-%s', lpad(s::text, 12, '0'))::uuid, 's' || s,
       '$url/sellers/s' || s, 'tok-1', now() + interval '1 day'
  FROM generate_series(1, 6) s;
CREATE TABLE apply_log (id uuid);
-- the worker runs with search_path = pg_catalog: triggers name their tables
CREATE FUNCTION log_apply() RETURNS trigger LANGUAGE plpgsql AS \$\$
BEGIN INSERT INTO public.apply_log (id) VALUES (NEW.id); RETURN NEW; END \$\$;
CREATE TRIGGER log_apply AFTER INSERT OR UPDATE ON sac_webhook.tickets
  FOR EACH ROW EXECUTE FUNCTION log_apply();
-- COUNT ticket notifications of seller S, ids in group G (GGGGSSSS-...)
CREATE FUNCTION notify(s int, g int, count int) RETURNS bigint LANGUAGE sql AS \$\$
  SELECT count(sac_webhook.receive(format(
           '{"data": {"status": "CREATION", "params": {"id": "%1\$s"}, "resource": "/v0/tickets/%1\$s"}, "tenant_id": "%2\$s", "topic": "sac_ticket"}',
           format('%s%s-0000-4000-8000-%s', lpad(g::text, 4, '0'), lpad(s::text, 4, '0'), lpad(i::text, 12, '0')),
           format('d0000000-0000-4000-8000-%s', lpad(s::text, 12, '0')))))
    FROM generate_series(1, count) i \$\$;
});

sub ticket { sprintf('%04d%04d-0000-4000-8000-%012d', @_) }
sub stored
{
	my ($group) = @_;
	return $node->safe_psql('postgres',
		sprintf("SELECT count(*) FROM sac_webhook.tickets WHERE id::text LIKE '%04d%%'", $group));
}
sub mock_stats { decode_json($api->get('/_mock/stats')) }
sub config { $api->call('POST', '/_mock/config', $_[0]) }
sub worker_pids
{
	return $node->safe_psql('postgres',
		"SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity WHERE backend_type = 'sac_webhook worker'");
}
sub wait_drained
{
	my ($what) = @_;
	ok($node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM sac_webhook.inbox WHERE state IN ('pending', 'retrying')"), $what);
}
# the most requests the mock held at once while f ran (sampled every 20 ms)
sub peak_in_flight
{
	my ($until) = @_;
	my $peak = 0;
	my $t0 = time();
	while (!$until->() && time() - $t0 < 60)
	{
		my $n = mock_stats()->{suspended};
		$peak = $n if $n > $peak;
		usleep(20_000);
	}
	return $peak;
}

# 1. A slow answer holds up only its own row: the others are applied while
# it is still under way
my $slow = ticket(1, 1, 1);
$api->call('POST', '/_mock/faults', qq{{"path": "/sellers/s1/v0/tickets/$slow", "delay_ms": 6000}});
$node->safe_psql('postgres', 'SELECT notify(1, 1, 1), notify(2, 1, 60)');
my $t0 = time();
ok($node->poll_query_until('postgres',
	sprintf("SELECT count(*) = 60 FROM sac_webhook.tickets WHERE tenant_id = '%s'", tenant_id(2))),
	'the other rows are applied');
cmp_ok(time() - $t0, '<', 5, 'before the slow answer came');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM sac_webhook.inbox WHERE resource = '/v0/tickets/$slow' AND state = 'pending' AND lease_owner IS NOT NULL"),
	'1', 'while the slow one is still under way');
wait_drained('the slow one is applied when its answer comes');
is(stored(1), '61', 'every ticket stored');

# 2. kill -9 with hundreds of requests in flight: nothing lost, nothing
# applied twice
config('{"latency_ms": 400, "jitter_ms": 200}');
$node->safe_psql('postgres', 'TRUNCATE apply_log');
$node->safe_psql('postgres', 'SELECT notify(s, 2, 150) FROM generate_series(1, 4) s');
ok($node->poll_query_until('postgres',
	"SELECT count(*) >= 200 FROM sac_webhook.inbox WHERE state = 'pending' AND lease_owner IS NOT NULL"),
	'hundreds of rows claimed');
my $held = 0;
for (1 .. 100)
{
	$held = mock_stats()->{suspended};
	last if $held >= 150;
	usleep(20_000);
}
cmp_ok($held, '>=', 150, 'hundreds of requests in flight at the API');
my $before = worker_pids();
kill 'KILL', (split /,/, $before)[0];
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'sac_webhook worker' AND pid NOT IN ($before)"),
	'workers restarted after kill -9');
wait_drained('the rows in flight are finished after the restart');
is(stored(2), '600', 'nothing lost');
is($node->safe_psql('postgres', 'SELECT count(*) = count(DISTINCT id) FROM apply_log'), 't',
	'nothing applied twice');
is($node->safe_psql('postgres', "SELECT count(*) FROM sac_webhook.inbox WHERE state = 'dead'"), '0',
	'no row dead');
config('{"latency_ms": 0, "jitter_ms": 0}');

# 3. HTTP 429 for one seller: the others keep their pace, and that seller's
# requests slow down as a whole (its window halves, its other requests wait
# for the Retry-After) instead of each row finding the limit for itself
config('{"latency_ms": 100}');
config('{"rate_limit": {"namespace": "s3", "per_second": 4, "burst": 4}}');
my $limited0 = mock_stats()->{rate_limited};
$node->safe_psql('postgres', 'SELECT notify(3, 3, 40), notify(4, 3, 200)');
$t0 = time();
ok($node->poll_query_until('postgres',
	sprintf("SELECT count(*) = 200 FROM sac_webhook.tickets WHERE tenant_id = '%s' AND id::text LIKE '0003%%'",
		tenant_id(4))),
	'the unlimited seller is done');
cmp_ok(time() - $t0, '<', 5, 'at its own pace');
cmp_ok($node->safe_psql('postgres',
	"SELECT count(*) FROM sac_webhook.inbox WHERE tenant_id = '${\tenant_id(3)}' AND state IN ('pending', 'retrying')"),
	'>', 10, 'while the limited one still has a backlog');
wait_drained('the limited seller is done in the end');
my $limited = mock_stats()->{rate_limited} - $limited0;
note("HTTP 429 answers: $limited for 40 rows");
cmp_ok($limited, '<', 120, 'the limited seller backed off as a whole (few HTTP 429 answers)');
cmp_ok($node->safe_psql('postgres',
	"SELECT count(*) FROM sac_webhook.inbox WHERE tenant_id = '${\tenant_id(3)}' AND attempts > 1"),
	'>', 0, 'the rows that met the limit were tried again');
is(stored(3), '240', 'every ticket stored');
config('{"rate_limit": null, "latency_ms": 0}');

# 4. The caps on requests in flight: per tenant, then over all (each worker
# keeps its share); both follow a reload
config('{"latency_ms": 300}');
$node->append_conf('postgresql.conf', "sac_webhook.max_in_flight_per_tenant = 4\n");
$node->reload;
sleep 2;
$node->safe_psql('postgres', 'SELECT notify(5, 4, 60)');
my $peak = peak_in_flight(sub { stored(4) == 60 });
note("peak in flight for one tenant: $peak");
cmp_ok($peak, '<=', 4, 'at most max_in_flight_per_tenant requests of one tenant');
cmp_ok($peak, '>=', 3, 'and that many are used');

$node->append_conf('postgresql.conf', "sac_webhook.max_in_flight_per_tenant = 64\nsac_webhook.max_in_flight = 6\n");
$node->reload;
sleep 2;
$node->safe_psql('postgres', 'SELECT notify(s, 5, 30) FROM generate_series(1, 4) s');
$peak = peak_in_flight(sub { stored(5) == 120 });
note("peak in flight over all: $peak");
cmp_ok($peak, '<=', 6, 'at most max_in_flight requests over all');
cmp_ok($peak, '>=', 5, 'and that many are used');
$node->append_conf('postgresql.conf', "sac_webhook.max_in_flight = 256\n");
config('{"latency_ms": 0}');

# 5. The request-rate cap: 40 rows at 10 requests/s take about 4 s
$node->append_conf('postgresql.conf', "sac_webhook.max_requests_per_second = 10\n");
$node->reload;
sleep 2;
my $requests0 = mock_stats()->{api_requests};
$node->safe_psql('postgres', 'SELECT notify(6, 6, 40)');
$t0 = time();
ok($node->poll_query_until('postgres', "SELECT count(*) = 40 FROM sac_webhook.tickets WHERE id::text LIKE '0006%'"),
	'the rows drain under the rate cap');
my $took = time() - $t0;
note("40 requests at 10/s took $took s");
cmp_ok($took, '>=', 2.5, 'no faster than the cap allows');
cmp_ok(mock_stats()->{api_requests} - $requests0, '<=', 42, 'one request per row');

$node->stop;
done_testing();
