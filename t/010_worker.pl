# The background workers (two of them here) drain the inbox with nobody
# calling process() and never apply a row twice between them; they announce
# changes, survive kill -9 and restarts without losing or repeating work,
# follow SIGHUP, ride out an API outage and stop promptly on SIGTERM.
use strict;
use warnings;
use Time::HiRes qw(time usleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib $FindBin::Bin;
use SacMock;

my $tenant = '3b5cf468-c858-404b-9e53-630e3df9d74a';

# --- the mock API ---------------------------------------------------------
my $api = SacMock->new(args => ['--access-token', 'tok-1', '--refresh-token', 'rt-1',
	'--client', 'demo-client:demo-secret']);
my $mock_url = $api->url;
sub start_mock { $api->start }
sub stop_mock { $api->stop }
sub mock { $api->call(@_) }

END { stop_mock(); }

# --- the cluster ----------------------------------------------------------
my $node = PostgreSQL::Test::Cluster->new('worker');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'sac_webhook'
restart_after_crash = on
sac_webhook.database = 'postgres'
sac_webhook.workers = 2
sac_webhook.api_base_url = '$mock_url'
sac_webhook.token_url = '$mock_url/oauth/token'
# long enough that a prompt drain proves the wake-up at commit
sac_webhook.poll_interval = '10s'
sac_webhook.retry_base_delay = '200ms'
sac_webhook.retry_max_delay = '2s'
sac_webhook.request_timeout = '5s'
sac_webhook.connect_timeout = '1s'
sac_webhook.max_attempts = 1000
# SQLSTATEs in the log: a wrapped error keeps its own
log_error_verbosity = verbose
});
start_mock();
$node->start;
$node->safe_psql('postgres', qq{
CREATE EXTENSION sac_webhook;
INSERT INTO sac_webhook.tenants (tenant_id, client_id, client_secret, access_token, refresh_token, token_expires_at)
VALUES ('$tenant', 'demo-client', 'demo-secret', 'tok-1', 'rt-1', now() + interval '1 hour');
CREATE TABLE apply_log (id uuid, at timestamptz DEFAULT clock_timestamp());
-- the worker runs with search_path = pg_catalog: triggers name their tables
CREATE FUNCTION log_apply() RETURNS trigger LANGUAGE plpgsql AS \$\$
BEGIN INSERT INTO public.apply_log (id) VALUES (NEW.id); RETURN NEW; END \$\$;
CREATE TRIGGER log_apply AFTER INSERT OR UPDATE ON sac_webhook.tickets
  FOR EACH ROW EXECUTE FUNCTION log_apply();
});

# what the log says from here on is checked for secrets at the end
my $log_offset = -s $node->logfile;

sub ticket_note
{
	my ($status, $id) = @_;
	return qq{{"data": {"status": "$status", "params": {"id": "$id"}, "resource": "/v0/tickets/$id"}, "tenant_id": "$tenant", "topic": "sac_ticket"}};
}

sub receive_tickets
{
	my ($status, @ids) = @_;
	my $sql = join("\n", map { "SELECT sac_webhook.receive('" . ticket_note($status, $_) . "');" } @ids);
	$node->safe_psql('postgres', "BEGIN;\n$sql\nCOMMIT;");
}

sub uuid_of { sprintf('00000000-0000-4000-8000-%012d', $_[0]) }

sub wait_drained
{
	my ($what) = @_;
	ok($node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM sac_webhook.inbox WHERE state <> 'done'"), $what);
}

sub worker_pid
{
	return $node->safe_psql('postgres',
		"SELECT min(pid) FROM pg_stat_activity WHERE backend_type = 'sac_webhook worker'");
}

# 1. The worker drains what receive() stores, woken at commit
ok($node->poll_query_until('postgres', "SELECT workers_running = 2 FROM sac_webhook.stats"),
	'both workers running');
my $t0 = time();
receive_tickets('CREATION', map { uuid_of($_) } 1 .. 50);
wait_drained('worker drains rows stored by receive()');
cmp_ok(time() - $t0, '<', 5, 'woken at commit, not by the fallback poll');
is($node->safe_psql('postgres', 'SELECT count(*) FROM sac_webhook.tickets'), '50', 'tickets stored');
is($node->safe_psql('postgres', 'SELECT fetches >= 50 AND applied >= 50 FROM sac_webhook.stats'),
	't', 'stats count fetches and applies');

# 2. NOTIFY after each applied change
my ($ret, $stdout, $stderr) = $node->psql('postgres', join("\n",
	'LISTEN sac_webhook;',
	"SELECT sac_webhook.receive('" . ticket_note('UPDATE', uuid_of(1)) . "') > 0;",
	'SELECT pg_sleep(2);',
	'SELECT 1;'));
like($stdout, qr/Asynchronous notification "sac_webhook" with payload "\{"topic":"sac_ticket","status":"UPDATE","action":"upsert","tenant_id":"$tenant","id":"${\uuid_of(1)}"/,
	'NOTIFY payload names topic, status, tenant and id');

# 3. kill -9 of the worker in the middle of a batch: nothing lost, nothing applied twice
$node->safe_psql('postgres', 'TRUNCATE apply_log');
for my $i (101 .. 110)
{
	mock('POST', '/_mock/faults', qq{{"path": "/v0/tickets/${\uuid_of($i)}", "delay_ms": 3000}});
}
receive_tickets('CREATION', map { uuid_of($_) } 101 .. 110);
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 10 FROM sac_webhook.inbox WHERE state = 'pending' AND lease_owner IS NOT NULL"),
	'batch in flight');
my $pid = worker_pid();
kill 'KILL', $pid;
ok($node->poll_query_until('postgres', "SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'sac_webhook worker' AND pid <> $pid"),
	'workers restarted after kill -9');
wait_drained('rows of the killed worker are finished by its successor');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM sac_webhook.tickets WHERE id::text LIKE '00000000-0000-4000-8000-0000000001%'"),
	'10', 'nothing lost');
is($node->safe_psql('postgres', 'SELECT count(*), count(DISTINCT id) FROM apply_log'),
	'10|10', 'nothing applied twice');

# 3b. A bad answer in a batch: the batch's shared transaction is rolled back
# and its rows applied one by one, so the bad row alone is retried
$node->safe_psql('postgres', 'TRUNCATE apply_log');
mock('POST', '/_mock/faults', qq{{"path": "/v0/tickets/${\uuid_of(501)}", "mode": "badjson"}});
receive_tickets('CREATION', map { uuid_of($_) } 501 .. 505);
wait_drained('a batch with one bad answer drains');
is($node->safe_psql('postgres',
	"SELECT string_agg(attempts::text, ',' ORDER BY resource) FROM sac_webhook.inbox WHERE resource LIKE '%0000000005__'"),
	'2,1,1,1,1', 'only the bad row was tried again');
is($node->safe_psql('postgres', 'SELECT count(*), count(DISTINCT id) FROM apply_log'),
	'5|5', 'each row of that batch applied once');

# 3c. A notification for a resource whose fetch is under way: its row takes
# it in, the result of that fetch is applied all the same, and the resource
# is fetched again, so that the change that came in is applied too
$node->safe_psql('postgres', 'TRUNCATE apply_log');
my $id601 = uuid_of(601);
my $path601 = "/v0/tickets/$id601";
mock('PUT', "/_mock$path601",
	qq{{"id": "$id601", "status": "open", "created_at": "2024-08-07T13:42:45", "updated_at": "2024-08-07T13:42:45"}});
mock('POST', '/_mock/faults', qq{{"path": "$path601", "delay_ms": 2000}});
receive_tickets('CREATION', $id601);
ok($node->poll_query_until('postgres',
	"SELECT lease_owner IS NOT NULL FROM sac_webhook.inbox WHERE resource = '$path601'"),
	'fetch under way');
mock('PUT', "/_mock$path601",
	qq{{"id": "$id601", "status": "closed", "created_at": "2024-08-07T13:42:45", "updated_at": "2024-08-09T10:00:00"}});
receive_tickets('UPDATE', $id601);
wait_drained('a row that took in a notification during its fetch drains');
is($node->safe_psql('postgres',
	"SELECT string_agg(state || '/' || status || '/' || notifications || '/' || refetch, ',') FROM sac_webhook.inbox WHERE resource = '$path601'"),
	'done/UPDATE/2/false', 'one row for both notifications');
is(`curl -sf '$mock_url/_mock/count?path=$path601'`, '2', 'fetched again after the notification');
is($node->safe_psql('postgres', "SELECT count(*) FROM apply_log WHERE id = '$id601'"),
	'2', 'both fetches applied');
is($node->safe_psql('postgres', "SELECT status FROM sac_webhook.tickets WHERE id = '$id601'"),
	'closed', 'the change that came in during the fetch is stored');

# 3d. A receipt whose transaction is still open holds the lock of a row in
# flight: the other rows are applied all the same, and that row once the
# receipt commits (then fetched again, for the receipt)
my ($id602, $id603) = (uuid_of(602), uuid_of(603));
mock('POST', '/_mock/faults', qq{{"path": "/v0/tickets/$id602", "delay_ms": 1500}});
receive_tickets('CREATION', $id602, $id603);
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM sac_webhook.inbox WHERE resource = '/v0/tickets/$id602' AND lease_owner IS NOT NULL"),
	'the slow one in flight');
my $bg = $node->background_psql('postgres');
$bg->query_safe('BEGIN');
$bg->query_safe("SELECT sac_webhook.receive('" . ticket_note('UPDATE', $id602) . "')");
ok($node->poll_query_until('postgres', "SELECT count(*) = 1 FROM sac_webhook.tickets WHERE id = '$id603'"),
	'the rest of the batch is applied while a receipt holds one row');
$bg->query_safe('COMMIT');
$bg->quit;
wait_drained('the held row is finished once the receipt commits');
is(`curl -sf '$mock_url/_mock/count?path=/v0/tickets/$id602'`, '2', 'and fetched again for that receipt');
is($node->safe_psql('postgres', "SELECT count(*) FROM sac_webhook.tickets WHERE id = '$id602'"), '1',
	'its ticket stored');

# 3e. A receipt that keeps a row locked past the worker's lock timeout (2 s):
# the worker cannot finish that row and leaves it, still leased to itself,
# and takes it back as soon as the receipt commits, not when the lease runs
# out (minutes)
my ($id604, $id605) = (uuid_of(604), uuid_of(605));
mock('POST', '/_mock/faults', qq{{"path": "/v0/tickets/$id604", "delay_ms": 1500}});
receive_tickets('CREATION', $id604, $id605);
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM sac_webhook.inbox WHERE resource = '/v0/tickets/$id604' AND lease_owner IS NOT NULL"),
	'the slow one in flight');
my $held_offset = -s $node->logfile;
$bg = $node->background_psql('postgres');
$bg->query_safe('BEGIN');
$bg->query_safe("SELECT sac_webhook.receive('" . ticket_note('UPDATE', $id604) . "')");
ok($node->poll_query_until('postgres', "SELECT count(*) = 1 FROM sac_webhook.tickets WHERE id = '$id605'"),
	'the rest of the batch is applied');
ok($node->poll_query_until('postgres',
	"SELECT pg_read_file('" . $node->logfile . "', $held_offset, 100000) ~ 'due to lock time[o]ut'"),
	'the worker gives up waiting for the held row');
like(slurp_file($node->logfile, $held_offset),
	qr/WARNING:  55P03: canceling statement due to lock timeout\n.*CONTEXT:  while finishing inbox row/s,
	'the error keeps its SQLSTATE (55P03), with what was being done as its context');
$bg->query_safe('COMMIT');
$bg->quit;
$t0 = time();
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM sac_webhook.inbox WHERE resource = '/v0/tickets/$id604' AND state <> 'done'"),
	'the held row is finished after the receipt commits');
cmp_ok(time() - $t0, '<', 20, 'taken back at once, not when its lease runs out');
is($node->safe_psql('postgres', "SELECT count(*) FROM sac_webhook.tickets WHERE id = '$id604'"), '1',
	'its ticket stored');

# 4. The API goes away; the server restarts with rows waiting; the API comes back
stop_mock();
receive_tickets('UPDATE', map { uuid_of($_) } 201 .. 205);
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 5 FROM sac_webhook.inbox WHERE state = 'retrying' AND last_error LIKE 'could not fetch%'"),
	'rows wait while the API is down');
$node->restart;
is($node->safe_psql('postgres', "SELECT count(*) FROM sac_webhook.inbox WHERE state IN ('pending', 'retrying')"),
	'5', 'waiting rows survive a restart');
start_mock();
wait_drained('rows drain once the API is back');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM sac_webhook.tickets WHERE id::text LIKE '00000000-0000-4000-8000-0000000002%'"),
	'5', 'every row applied');

# 5. SIGHUP: a new API address is followed without a restart
$node->safe_psql('postgres', "ALTER SYSTEM SET sac_webhook.api_base_url = 'http://127.0.0.1:1'");
$node->reload;
receive_tickets('CREATION', uuid_of(301));
ok($node->poll_query_until('postgres',
	"SELECT state = 'retrying' FROM sac_webhook.inbox WHERE resource LIKE '%${\uuid_of(301)}'"),
	'the bad address is used after SIGHUP');
$node->safe_psql('postgres', 'ALTER SYSTEM RESET sac_webhook.api_base_url');
$node->reload;
wait_drained('the restored address is used after SIGHUP');

# 6. Deletion, through the worker
mock('DELETE', "/_mock/v0/tickets/${\uuid_of(2)}");
receive_tickets('DELETION', uuid_of(2));
wait_drained('deletion applied');
is($node->safe_psql('postgres', "SELECT count(*) FROM sac_webhook.tickets WHERE id = '${\uuid_of(2)}'"),
	'0', 'deleted ticket is gone');

# 7. SIGTERM: a slow fetch does not hold up shutdown, and its row is not lost
mock('POST', '/_mock/faults', qq{{"path": "/v0/tickets/${\uuid_of(401)}", "delay_ms": 4000}});
receive_tickets('CREATION', uuid_of(401));
ok($node->poll_query_until('postgres',
	"SELECT lease_owner IS NOT NULL FROM sac_webhook.inbox WHERE resource LIKE '%${\uuid_of(401)}'"),
	'slow fetch in flight');
$t0 = time();
my $stop_offset = -s $node->logfile;
$node->stop('fast');
cmp_ok(time() - $t0, '<', 3, 'shutdown does not wait for the slow fetch');
like(slurp_file($node->logfile, $stop_offset), qr/sac_webhook worker 0 stopping/, 'worker stopped cleanly');
$node->start;
wait_drained('the interrupted row is finished after the restart');
is($node->safe_psql('postgres', "SELECT count(*) FROM sac_webhook.tickets WHERE id = '${\uuid_of(401)}'"),
	'1', 'interrupted row applied');

# No token, secret or fetched content in the server log
my $log = slurp_file($node->logfile, $log_offset);
unlike($log, qr/tok-1|rt-1|at-\d|demo-secret|SellerName|Bela e a Fera/, 'no secrets or content in the log');

# 8. The extension dropped and created again: the worker waits, then carries on
$node->safe_psql('postgres', 'DROP EXTENSION sac_webhook');
ok($node->poll_query_until('postgres', "SELECT pg_read_file('" . $node->logfile . "') ~ 'waits for the extension'"),
	'worker notices the extension is gone');
$node->safe_psql('postgres', qq{
CREATE EXTENSION sac_webhook;
INSERT INTO sac_webhook.tenants (tenant_id, access_token, token_expires_at)
SELECT '$tenant', access_token, now() + interval '1 hour' FROM (SELECT 'tok-1'::text AS access_token) s;
});
mock('POST', '/_mock/tokens', '{"access_token": "tok-1"}');
receive_tickets('CREATION', uuid_of(601));
wait_drained('worker serves the re-created extension');
is($node->safe_psql('postgres', "SELECT count(*) FROM sac_webhook.tickets WHERE id = '${\uuid_of(601)}'"), '1', 'row applied after re-creation');

$node->stop;
done_testing();
