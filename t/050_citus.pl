# Citus: sac_webhook.tickets and sac_webhook.messages distributed by
# tenant_id (co-located) over a coordinator that holds shards and two worker
# nodes, three clusters on this machine's loopback interface; the inbox,
# tenants and sync state stay local tables on the coordinator.  The
# coordinator's background workers drain notifications of several tenants
# into shards on every node; updates and deletions (a ticket with its
# messages, single messages) are applied; kill -9 of a worker process in the
# middle of a drain and a worker node restarted in the middle of a drain
# lose nothing (rows retry, then succeed); in the end the tables hold exactly
# the mock API's documents.  NOTIFY reaches listeners on the coordinator.
# ALTER EXTENSION UPDATE on the distributed install reaches every node, and
# pg_dump of the coordinator keeps every row (restored as plain tables).
#
# Skipped when Citus is not installed for this PostgreSQL
# (scripts/install-citus.sh builds and installs it).
use strict;
use warnings;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use Time::HiRes qw(time usleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $pkglibdir = `pg_config --pkglibdir`;
chomp $pkglibdir;
my $sharedir = `pg_config --sharedir`;
chomp $sharedir;
if (!-f "$pkglibdir/citus.so" || !-f "$sharedir/extension/citus.control")
{
	plan skip_all => "Citus is not installed for this PostgreSQL ($pkglibdir/citus.so); "
	  . "scripts/install-citus.sh builds and installs it";
}

my $top = abs_path(dirname(__FILE__) . '/..');
my $mock_bin = $ENV{SAC_WEBHOOK_MOCK_API} // "$top/test/mock_api/sac_webhook_mock_api";
# how long a drain may take before the test gives up on it
my $drain_timeout = 60;

# --- the mock API ---------------------------------------------------------
my $mock_port = PostgreSQL::Test::Cluster::get_free_port();
my $mock_pid;
my $mock_url = "http://127.0.0.1:$mock_port";

sub start_mock
{
	my $log = "$PostgreSQL::Test::Utils::tmp_check/mock_api_citus.log";
	$mock_pid = fork();
	die "fork: $!" unless defined $mock_pid;
	if ($mock_pid == 0)
	{
		open(STDOUT, '>>', $log);
		open(STDERR, '>>', $log);
		exec($mock_bin, '--listen', "127.0.0.1:$mock_port", '--auto', '--quiet',
			'--access-token', 'tok-1', '--refresh-token', 'rt-1',
			'--client', 'demo-client:demo-secret')
		  or die "exec $mock_bin: $!";
	}
	for (1 .. 100)
	{
		return if system("curl -sf -o /dev/null $mock_url/_mock/health") == 0;
		usleep(100_000);
	}
	die "mock API did not start";
}

sub stop_mock
{
	return unless $mock_pid;
	kill 'TERM', $mock_pid;
	waitpid($mock_pid, 0);
	$mock_pid = undef;
}

sub mock
{
	my ($method, $path, $body) = @_;
	my @cmd = ('curl', '-sf', '-o', '/dev/null', '-X', $method);
	push @cmd, ('-H', 'Content-Type: application/json', '--data-binary', $body) if defined $body;
	system(@cmd, "$mock_url$path") == 0 or die "mock $method $path failed";
}

END { stop_mock(); }

# --- three clusters: the coordinator and two worker nodes ---------------------
# Citus connects between the nodes over TCP on 127.0.0.1 (trust, as initdb
# -A trust sets it up); Unix sockets stay for the test's own connections.
# (Citus commits writes through its connections with two-phase commit; it
# raises max_prepared_transactions by itself when it is 0.)
my $coord = PostgreSQL::Test::Cluster->new('citus_coordinator');
my $w1 = PostgreSQL::Test::Cluster->new('citus_worker1');
my $w2 = PostgreSQL::Test::Cluster->new('citus_worker2');
my %node_name = ($coord->port => 'coordinator', $w1->port => 'worker1', $w2->port => 'worker2');

for my $n ($coord, $w1, $w2)
{
	$n->init;
	$n->append_conf('postgresql.conf', qq{
listen_addresses = '127.0.0.1'
log_statement = none
});
}
$w1->append_conf('postgresql.conf', "shared_preload_libraries = 'citus'");
$w2->append_conf('postgresql.conf', "shared_preload_libraries = 'citus'");
$coord->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'citus, sac_webhook'
restart_after_crash = on
# prepared transactions left by a crash are resolved within a second
citus.recover_2pc_interval = '1s'
sac_webhook.database = 'postgres'
sac_webhook.workers = 2
sac_webhook.api_base_url = '$mock_url'
sac_webhook.token_url = '$mock_url/oauth/token'
sac_webhook.poll_interval = '1s'
sac_webhook.retry_base_delay = '200ms'
sac_webhook.retry_max_delay = '1s'
sac_webhook.request_timeout = '5s'
sac_webhook.connect_timeout = '1s'
sac_webhook.max_attempts = 1000
# the tenants share one mock API, which lists every ticket to each of them:
# no reconciliation here (t/040_resync.pl has it)
sac_webhook.onboarding_sync = off
sac_webhook.resync_interval = 0
});
start_mock();
$_->start for ($coord, $w1, $w2);
$_->safe_psql('postgres', 'CREATE EXTENSION citus') for ($coord, $w1, $w2);
my $cport = $coord->port;
$coord->safe_psql('postgres', qq{
SELECT citus_set_coordinator_host('127.0.0.1', $cport);
SELECT citus_set_node_property('127.0.0.1', $cport, 'shouldhaveshards', true);
SELECT citus_add_node('127.0.0.1', ${\$w1->port});
SELECT citus_add_node('127.0.0.1', ${\$w2->port});
});
is($coord->safe_psql('postgres', 'SELECT count(*) FROM pg_dist_node WHERE shouldhaveshards'),
	'3', 'three nodes hold shards');

# --- the extension, distributed --------------------------------------------------
$coord->safe_psql('postgres', 'CREATE EXTENSION sac_webhook');

# rows stored before the tables are distributed
$coord->safe_psql('postgres', q{
INSERT INTO sac_webhook.tickets (tenant_id, id, data)
SELECT gen_random_uuid(), gen_random_uuid(), '{"before": "distribution"}' FROM generate_series(1, 10);
INSERT INTO sac_webhook.messages (tenant_id, id, ticket_id, data)
SELECT tenant_id, gen_random_uuid(), id, '{"before": "distribution"}' FROM sac_webhook.tickets;
});

# distributed the documented way: sac_webhook.distribute_tables(shard_count)
$coord->safe_psql('postgres', 'SELECT sac_webhook.distribute_tables(8)');
# twice is harmless
$coord->safe_psql('postgres', 'SELECT sac_webhook.distribute_tables(8)');
pass('sac_webhook.distribute_tables(8), twice');
is($coord->safe_psql('postgres', q{
SELECT (SELECT count(*) FROM sac_webhook.tickets WHERE data = '{"before": "distribution"}')
    || ',' || (SELECT count(*) FROM sac_webhook.messages WHERE data = '{"before": "distribution"}')}),
	'10,10', 'rows stored before distributing are kept');
is($coord->safe_psql('postgres',
	"SELECT pg_relation_size('sac_webhook.tickets') + pg_relation_size('sac_webhook.messages')"),
	'0', 'and no local copy of them is left behind on the coordinator');
$coord->safe_psql('postgres', q{
DELETE FROM sac_webhook.messages WHERE data = '{"before": "distribution"}';
DELETE FROM sac_webhook.tickets WHERE data = '{"before": "distribution"}';
});
is($coord->safe_psql('postgres',
	"SELECT count(*) FROM pg_dist_shard WHERE logicalrelid = 'sac_webhook.tickets'::regclass"),
	'8', 'shard_count shards');
is($coord->safe_psql('postgres', q{
SELECT string_agg(logicalrelid::text || ':' || column_to_column_name(logicalrelid, partkey), ',' ORDER BY logicalrelid::text)
  FROM pg_dist_partition WHERE logicalrelid::text LIKE 'sac_webhook.%'}),
	'sac_webhook.messages:tenant_id,sac_webhook.tickets:tenant_id',
	'tickets and messages distributed by tenant_id; inbox and tenants stay local');
is($coord->safe_psql('postgres', q{
SELECT count(DISTINCT colocationid) FROM pg_dist_partition
 WHERE logicalrelid IN ('sac_webhook.tickets'::regclass, 'sac_webhook.messages'::regclass)}),
	'1', 'tickets and messages are co-located');
is($coord->safe_psql('postgres', q{
SELECT count(DISTINCT p.groupid) FROM pg_dist_shard s JOIN pg_dist_placement p USING (shardid)
 WHERE s.logicalrelid = 'sac_webhook.tickets'::regclass}),
	'3', 'the shards are spread over the three nodes');

# --- ALTER EXTENSION UPDATE on a distributed install -------------------------------
# In a database of its own on the three nodes: the oldest version that
# updates to the default one, its tables distributed with
# create_distributed_table, rows stored, then ALTER EXTENSION sac_webhook
# UPDATE on the coordinator.  Citus runs the update on every node.
my $default_version = $coord->safe_psql('postgres',
	"SELECT default_version FROM pg_available_extensions WHERE name = 'sac_webhook'");
my $old_version = $coord->safe_psql('postgres', qq{
SELECT source FROM pg_extension_update_paths('sac_webhook')
 WHERE target = '$default_version' AND path IS NOT NULL
 ORDER BY string_to_array(source, '.')::int[] LIMIT 1});
SKIP:
{
	skip "no update path to $default_version", 5 if $old_version eq '';
	for my $n ($coord, $w1, $w2)
	{
		$n->safe_psql('postgres', 'CREATE DATABASE upgrade');
		$n->safe_psql('upgrade', 'CREATE EXTENSION citus');
	}
	$coord->safe_psql('upgrade', qq{
SELECT citus_set_coordinator_host('127.0.0.1', $cport);
SELECT citus_set_node_property('127.0.0.1', $cport, 'shouldhaveshards', true);
SELECT citus_add_node('127.0.0.1', ${\$w1->port});
SELECT citus_add_node('127.0.0.1', ${\$w2->port});
CREATE EXTENSION sac_webhook VERSION '$old_version';
SELECT create_distributed_table('sac_webhook.tickets', 'tenant_id', shard_count => 8);
SELECT create_distributed_table('sac_webhook.messages', 'tenant_id', colocate_with => 'sac_webhook.tickets');
INSERT INTO sac_webhook.tickets (tenant_id, id, data)
SELECT gen_random_uuid(), gen_random_uuid(), '{"before": "update"}' FROM generate_series(1, 20);
INSERT INTO sac_webhook.messages (tenant_id, id, ticket_id, data)
SELECT tenant_id, gen_random_uuid(), id, '{"before": "update"}' FROM sac_webhook.tickets;
});
	my ($ret, $out, $err) = $coord->psql('upgrade', 'ALTER EXTENSION sac_webhook UPDATE');
	is($ret, 0, "ALTER EXTENSION sac_webhook UPDATE from $old_version on the distributed install")
	  or diag($err);
	is($coord->safe_psql('upgrade', "SELECT string_agg(result, ',') FROM run_command_on_all_nodes("
		  . "\$\$SELECT extversion FROM pg_extension WHERE extname = 'sac_webhook'\$\$)"),
		join(',', ($default_version) x 3), "every node is at $default_version");
	is($coord->safe_psql('upgrade', q{
SELECT (SELECT count(*) FROM sac_webhook.tickets) || ',' || (SELECT count(*) FROM sac_webhook.messages)}),
		'20,20', 'the rows stored before the update are still there');
	# the documented function on tables distributed with create_distributed_table
	($ret, $out, $err) = $coord->psql('upgrade', 'SELECT sac_webhook.distribute_tables()');
	is($ret, 0, 'sac_webhook.distribute_tables() on tables distributed by hand') or diag($err);
	is($coord->safe_psql('upgrade', q{
SELECT count(*) || ' ' || count(DISTINCT colocationid) FROM pg_dist_partition
 WHERE logicalrelid IN ('sac_webhook.tickets'::regclass, 'sac_webhook.messages'::regclass)}),
		'2 1', 'still distributed and co-located');
}

# --- tenants on every node ------------------------------------------------------
sub tenant_candidate { sprintf('%08d-7e57-4000-8000-00000000c17a', $_[0]) }

sub node_of_tenant
{
	my ($tenant) = @_;
	return $coord->safe_psql('postgres', qq{
SELECT n.nodeport FROM pg_dist_placement p JOIN pg_dist_node n USING (groupid)
 WHERE p.shardid = get_shard_id_for_distribution_column('sac_webhook.tickets', '$tenant'::uuid)});
}

# two tenants on each node
my (@tenants, %tenant_node, %per_node);
for my $k (1 .. 200)
{
	my $t = tenant_candidate($k);
	my $port = node_of_tenant($t);
	next if ($per_node{$port} // 0) >= 2;
	$per_node{$port}++;
	push @tenants, $t;
	$tenant_node{$t} = $port;
	last if @tenants == 6;
}
is(scalar(@tenants), 6, 'two tenants whose shards are on each node');
my @w1_tenants = grep { $tenant_node{$_} == $w1->port } @tenants;
$coord->safe_psql('postgres',
	'INSERT INTO sac_webhook.tenants (tenant_id, client_id, client_secret, access_token, refresh_token, token_expires_at) VALUES '
	  . join(', ', map { "('$_', 'demo-client', 'demo-secret', 'tok-1', 'rt-1', now() + interval '1 hour')" } @tenants));

# --- notifications --------------------------------------------------------------
sub ticket_note
{
	my ($tenant, $status, $id) = @_;
	return qq{{"data": {"status": "$status", "params": {"id": "$id"}, "resource": "/v0/tickets/$id"}, "tenant_id": "$tenant", "topic": "sac_ticket"}};
}

sub message_note
{
	my ($tenant, $status, $tid, $mid) = @_;
	return qq{{"data": {"status": "$status", "params": {"ticket_id": "$tid", "id": "$mid"}, "resource": "/v0/tickets/$tid/messages/$mid"}, "tenant_id": "$tenant", "topic": "sac_message"}};
}

# receive the payloads in one transaction
sub receive
{
	my $sql = join("\n", map { "SELECT sac_webhook.receive('$_');" } @_);
	$coord->safe_psql('postgres', "BEGIN;\n$sql\nCOMMIT;");
}

# Wait until no inbox row waits; fails after $drain_timeout seconds, showing
# what the waiting rows last ran into.  Then no row may be dead.
sub wait_drained
{
	my ($what) = @_;
	my $deadline = time() + $drain_timeout;
	my $waiting;
	while (1)
	{
		$waiting = $coord->safe_psql('postgres',
			"SELECT count(*) FROM sac_webhook.inbox WHERE state IN ('pending', 'retrying')");
		last if $waiting eq '0' || time() > $deadline;
		usleep(200_000);
	}
	if (!ok($waiting eq '0', $what))
	{
		diag('the mock API does not answer any more')
		  if system("curl -sf -o /dev/null $mock_url/_mock/health") != 0;
		diag("$waiting inbox rows still waiting; their last errors:\n"
			  . $coord->safe_psql('postgres', q{
SELECT count(*) || ' x ' || e FROM (
  SELECT coalesce(regexp_replace(last_error, '^could not apply \S+: ', 'could not apply ...: '), '(no error yet)') AS e
    FROM sac_webhook.inbox WHERE state IN ('pending', 'retrying')) x
 GROUP BY e ORDER BY count(*) DESC LIMIT 5}));
		return 0;
	}
	is($coord->safe_psql('postgres', "SELECT count(*) FROM sac_webhook.inbox WHERE state = 'dead'"),
		'0', "$what: no row is dead")
	  or diag($coord->safe_psql('postgres',
		"SELECT last_error FROM sac_webhook.inbox WHERE state = 'dead' LIMIT 3"));
	return 1;
}

# every ticket and message id used, per tenant: what the mock is asked about in the end
my (%tickets_of, %messages_of);

sub ticket_id { my ($ti, $k) = @_; sprintf('%08d-0000-4000-8000-%012d', $ti + 1, $k) }
sub message_id { my ($ti, $k, $m) = @_; sprintf('%08d-%04d-4000-8000-%012d', $ti + 1, $m, $k) }

sub worker_pids
{
	return split /\n/, $coord->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'sac_webhook worker' ORDER BY pid");
}

ok($coord->poll_query_until('postgres',
	"SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'sac_webhook worker'"),
	'two workers running on the coordinator');

# 1. Several tenants: tickets with two messages each, into shards on every node
my @notes;
for my $ti (0 .. $#tenants)
{
	my $t = $tenants[$ti];
	for my $k (1 .. 20)
	{
		my $tid = ticket_id($ti, $k);
		push @{ $tickets_of{$t} }, $tid;
		push @notes, ticket_note($t, 'CREATION', $tid);
		for my $m (1 .. 2)
		{
			my $mid = message_id($ti, $k, $m);
			push @{ $messages_of{$t} }, [ $tid, $mid ];
			push @notes, message_note($t, 'CREATION', $tid, $mid);
		}
	}
}
receive(@notes);
if (!wait_drained('the worker drains 360 notifications of 6 tenants'))
{
	done_testing();
	exit;
}
is($coord->safe_psql('postgres', 'SELECT count(*) FROM sac_webhook.tickets'), '120', 'tickets stored');
is($coord->safe_psql('postgres', 'SELECT count(*) FROM sac_webhook.messages'), '240', 'messages stored');

# rows per node, read from the shards themselves
sub rows_per_node
{
	my ($table) = @_;
	my %rows;
	for my $line (split /\n/, $coord->safe_psql('postgres', qq{
SELECT n.nodeport, sum(r.result::bigint)
  FROM run_command_on_shards('$table', \$\$SELECT count(*) FROM %s\$\$) r
  JOIN pg_dist_placement p ON p.shardid = r.shardid JOIN pg_dist_node n USING (groupid)
 GROUP BY 1}))
	{
		my ($port, $n) = split /\|/, $line;
		$rows{ $node_name{$port} } = $n;
	}
	return join(',', map { "$_=" . ($rows{$_} // 0) } qw(coordinator worker1 worker2));
}
is(rows_per_node('sac_webhook.tickets'), 'coordinator=40,worker1=40,worker2=40',
	'tickets are in shards on the coordinator and on both worker nodes');
is(rows_per_node('sac_webhook.messages'), 'coordinator=80,worker1=80,worker2=80',
	'messages are in the shards of their tickets');

# 2. NOTIFY on the coordinator, for tenants whose rows are on worker nodes
{
	my @w2_tenants = grep { $tenant_node{$_} == $w2->port } @tenants;
	my ($ret, $stdout, $stderr) = $coord->psql('postgres', join("\n",
		'LISTEN sac_webhook;',
		"SELECT sac_webhook.receive('" . ticket_note($w1_tenants[0], 'UPDATE', $tickets_of{ $w1_tenants[0] }[0]) . "') > 0;",
		"SELECT sac_webhook.receive('" . ticket_note($w2_tenants[0], 'UPDATE', $tickets_of{ $w2_tenants[0] }[0]) . "') > 0;",
		'SELECT pg_sleep(2);',
		'SELECT 1;'));
	like($stdout, qr/"tenant_id":"$w1_tenants[0]"/, 'NOTIFY for a change stored on worker1');
	like($stdout, qr/"tenant_id":"$w2_tenants[0]"/, 'NOTIFY for a change stored on worker2');
	wait_drained('the notified changes are done');
}

# 3. Updates, and deletions: a ticket with its messages, single messages
@notes = ();
my (%deleted_ticket, %deleted_message);
for my $ti (0 .. $#tenants)
{
	my $t = $tenants[$ti];
	# tickets 1-3 change
	for my $k (1 .. 3)
	{
		my $tid = ticket_id($ti, $k);
		mock('PUT', "/_mock/v0/tickets/$tid",
			qq{{"id": "$tid", "status": "closed", "closed": true, "code": "upd-$k", "created_at": "2024-08-07T13:42:45", "updated_at": "2024-09-0${k}T10:00:00"}});
		push @notes, ticket_note($t, 'UPDATE', $tid);
	}
	# message 1 of ticket 4 changes
	{
		my ($tid, $mid) = (ticket_id($ti, 4), message_id($ti, 4, 1));
		mock('PUT', "/_mock/v0/tickets/$tid/messages/$mid",
			qq{{"id": "$mid", "message": "edited", "ticket": {"id": "$tid"}, "sender": {"type": "seller"}, "moderation": {"status": "approved", "updated_at": "2024-09-01T10:00:00"}, "attachments": [], "created_at": "2024-08-09T13:30:38Z"}});
		push @notes, message_note($t, 'UPDATE', $tid, $mid);
	}
	# ticket 5 goes away, with its two messages
	{
		my $tid = ticket_id($ti, 5);
		mock('DELETE', "/_mock/v0/tickets/$tid");
		$deleted_ticket{$tid} = 1;
		push @notes, ticket_note($t, 'DELETION', $tid);
	}
	# message 2 of ticket 6 goes away
	{
		my ($tid, $mid) = (ticket_id($ti, 6), message_id($ti, 6, 2));
		mock('DELETE', "/_mock/v0/tickets/$tid/messages/$mid");
		$deleted_message{$mid} = 1;
		push @notes, message_note($t, 'DELETION', $tid, $mid);
	}
}
receive(@notes);
wait_drained('updates and deletions drain');
is($coord->safe_psql('postgres', "SELECT count(*) FROM sac_webhook.tickets WHERE status = 'closed' AND closed"),
	'18', 'updated tickets stored');
is($coord->safe_psql('postgres', "SELECT count(*) FROM sac_webhook.messages WHERE message = 'edited'"),
	'6', 'updated messages stored');
is($coord->safe_psql('postgres', 'SELECT count(*) FROM sac_webhook.tickets'), '114', 'deleted tickets are gone');
is($coord->safe_psql('postgres', 'SELECT count(*) FROM sac_webhook.messages'), '222',
	'their messages went with them, and the deleted messages are gone');

# 4. kill -9 of a worker process in the middle of a drain: the coordinator
# restarts; nothing is lost
@notes = ();
my @slow;
for my $ti (0 .. $#tenants)
{
	my $t = $tenants[$ti];
	for my $k (101 .. 140)
	{
		my $tid = ticket_id($ti, $k);
		push @{ $tickets_of{$t} }, $tid;
		push @notes, ticket_note($t, 'CREATION', $tid);
		push @slow, $tid if $k <= 102;
	}
}
mock('POST', '/_mock/faults', qq{{"path": "/v0/tickets/$_", "delay_ms": 2000}}) for @slow;
receive(@notes);
ok($coord->poll_query_until('postgres', qq{
SELECT count(*) > 0 FROM sac_webhook.inbox
 WHERE state IN ('pending', 'retrying') AND lease_owner IS NOT NULL
   AND resource IN (${\ join(', ', map { "'/v0/tickets/$_'" } @slow)})}),
	'a batch is in flight');
my @pids = worker_pids();
kill 'KILL', $pids[0];
ok($coord->poll_query_until('postgres',
	"SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'sac_webhook worker' AND pid <> $pids[0]"),
	'the coordinator restarted its workers after kill -9');
wait_drained('the rows of the killed worker are finished by its successors');
is($coord->safe_psql('postgres',
	'SELECT count(*) FROM sac_webhook.tickets WHERE right(id::text, 12)::int BETWEEN 101 AND 140'),
	'240', 'nothing lost');

# 5. A worker node restarted in the middle of a drain: its tenants' rows
# whose fetch is under way when it stops fail to apply and retry, the other
# tenants' rows go through meanwhile, and once the node is back every row
# succeeds
@notes = ();
my @w1_new;
for my $ti (0 .. $#tenants)
{
	my $t = $tenants[$ti];
	for my $k (201 .. 220)
	{
		my $tid = ticket_id($ti, $k);
		push @{ $tickets_of{$t} }, $tid;
		push @notes, ticket_note($t, 'CREATION', $tid);
		push @w1_new, $tid if $tenant_node{$t} == $w1->port;
	}
}
mock('POST', '/_mock/faults', qq{{"path": "/v0/tickets/$_", "delay_ms": 1500}}) for @w1_new;
my $w1_list = join(', ', map { "'/v0/tickets/$_'" } @w1_new);
receive(@notes);
ok($coord->poll_query_until('postgres', qq{
SELECT count(*) > 0 FROM sac_webhook.inbox
 WHERE resource IN ($w1_list) AND state = 'pending' AND lease_owner IS NOT NULL}),
	"fetches for worker1's tenants under way");
$w1->stop('fast');
ok($coord->poll_query_until('postgres', qq{
SELECT count(*) = ${\ scalar(@w1_new)} FROM sac_webhook.inbox
 WHERE resource IN ($w1_list) AND state = 'retrying' AND last_error IS NOT NULL}),
	"worker1's tenants' rows retry while it is down");
diag('their last error: ' . $coord->safe_psql('postgres', qq{
SELECT last_error FROM sac_webhook.inbox WHERE resource IN ($w1_list) ORDER BY id LIMIT 1}));
ok($coord->poll_query_until('postgres', qq{
SELECT count(*) = ${\ (120 - scalar(@w1_new))} FROM sac_webhook.inbox
 WHERE right(resource, 12)::int BETWEEN 201 AND 220 AND resource NOT IN ($w1_list) AND state = 'done'}),
	'the rows of the tenants on the other nodes are done meanwhile');
$w1->start;
wait_drained('once worker1 is back, its rows succeed');
is($coord->safe_psql('postgres',
	'SELECT count(*) FROM sac_webhook.tickets WHERE right(id::text, 12)::int BETWEEN 201 AND 220'),
	'120', 'nothing lost while the node was down');
cmp_ok($coord->safe_psql('postgres', qq{
SELECT min(attempts) FROM sac_webhook.inbox WHERE resource IN ($w1_list)}), '>', 1,
	'those rows were tried again');

# --- the tables hold exactly the mock's documents --------------------------------
# Every resource ever used, asked of the mock in one curl run; 404: it must
# not be stored.
my @resources;
for my $t (@tenants)
{
	push @resources, map { [ 'ticket', $t, $_, "/v0/tickets/$_" ] } @{ $tickets_of{$t} };
	push @resources, map { [ 'message', $t, $_->[1], "/v0/tickets/$_->[0]/messages/$_->[1]" ] } @{ $messages_of{$t} };
}
my $out = `curl -s -H 'Authorization: Bearer tok-1' -w '\\t%{http_code}\\n' ${\ join(' ', map { "'$mock_url$_->[3]'" } @resources)}`;
my @answers = split /\n/, $out;
is(scalar(@answers), scalar(@resources), 'the mock answered for every resource');
my (@expected_tickets, @expected_messages);
for my $i (0 .. $#resources)
{
	my ($body, $status) = $answers[$i] =~ /^(.*)\t(\d+)$/;
	my ($kind, $t, $id) = @{ $resources[$i] };
	next if $status eq '404';
	die "mock answered $status for $resources[$i][3]" unless $status eq '200';
	$body =~ s/'/''/g;
	push @{ $kind eq 'ticket' ? \@expected_tickets : \@expected_messages }, "('$t', '$id', '$body')";
}
$coord->safe_psql('postgres', qq{
CREATE TABLE expected_tickets (tenant_id uuid, id uuid, doc jsonb);
CREATE TABLE expected_messages (tenant_id uuid, id uuid, doc jsonb);
INSERT INTO expected_tickets VALUES ${\ join(",\n", @expected_tickets)};
INSERT INTO expected_messages VALUES ${\ join(",\n", @expected_messages)};
});
is($coord->safe_psql('postgres', 'SELECT count(*) FROM expected_tickets'), '474',
	'the mock serves 474 of the 480 tickets (6 deleted)');
is($coord->safe_psql('postgres', 'SELECT count(*) FROM expected_messages'), '222',
	'and 222 of the 240 messages');
is($coord->safe_psql('postgres',
	"SELECT string_agg(tenant_id || ' ' || id || ' ' || data::text, E'\\n' ORDER BY tenant_id, id) FROM sac_webhook.tickets"),
	$coord->safe_psql('postgres',
	"SELECT string_agg(tenant_id || ' ' || id || ' ' || doc::text, E'\\n' ORDER BY tenant_id, id) FROM expected_tickets"),
	'sac_webhook.tickets holds exactly the documents the mock serves');
is($coord->safe_psql('postgres',
	"SELECT string_agg(tenant_id || ' ' || id || ' ' || data::text, E'\\n' ORDER BY tenant_id, id) FROM sac_webhook.messages"),
	$coord->safe_psql('postgres',
	"SELECT string_agg(tenant_id || ' ' || id || ' ' || doc::text, E'\\n' ORDER BY tenant_id, id) FROM expected_messages"),
	'sac_webhook.messages holds exactly the documents the mock serves');
is($coord->safe_psql('postgres', q{
SELECT count(*) FROM sac_webhook.tickets
 WHERE status IS DISTINCT FROM data->>'status' OR updated_at IS DISTINCT FROM sac_webhook.api_timestamp(data->>'updated_at')}),
	'0', 'typed columns agree with the documents');
is($coord->safe_psql('postgres', q{
SELECT count(*) FROM pg_dist_partition
 WHERE logicalrelid IN ('sac_webhook.inbox'::regclass, 'sac_webhook.tenants'::regclass)}),
	'0', 'inbox and tenants are still local tables');

# --- reconciliation into distributed tables --------------------------------------
# A seller with its own store in the mock: a full resync() walks its ticket
# list into the shards, reads each ticket's messages, and deletes the stored
# ticket the API no longer has (checked through the distributed tables).
my $tz = 'c1000000-0000-4000-8000-00000000000c';
for my $i (1 .. 3)
{
	my $t = sprintf('c0000000-0000-4000-8000-%012d', $i);
	my $m = sprintf('d0000000-0000-4000-8000-%012d', $i);
	mock('PUT', "/_mock/sellers/z/v0/tickets/$t",
		qq{{"id": "$t", "status": "open", "created_at": "2024-08-07T13:42:45", "updated_at": "2024-08-07T13:42:46"}});
	mock('PUT', "/_mock/sellers/z/v0/tickets/$t/messages/$m",
		qq{{"id": "$m", "message": "m", "ticket": {"id": "$t"}, "created_at": "2024-08-09T13:30:38Z"}});
}
# (the mock makes up any ticket asked for: this one it has deleted)
mock('DELETE', "/_mock/sellers/z/v0/tickets/c0000000-0000-4000-8000-000000000009");
$coord->safe_psql('postgres', qq{
INSERT INTO sac_webhook.tenants (tenant_id, api_base_url, access_token, token_expires_at)
VALUES ('$tz', '$mock_url/sellers/z', 'tok-1', now() + interval '1 hour');
INSERT INTO sac_webhook.tickets (tenant_id, id, status, data)
VALUES ('$tz', 'c0000000-0000-4000-8000-000000000009', 'open', '{}');
});
is($coord->safe_psql('postgres', "SELECT sac_webhook.resync('$tz')"), '1', 'resync() of a seller');
ok($coord->poll_query_until('postgres', "SELECT state = 'done' FROM sac_webhook.syncs WHERE tenant_id = '$tz'"),
	'its sync is done on distributed tables')
  or diag($coord->safe_psql('postgres', "SELECT state, last_error FROM sac_webhook.syncs WHERE tenant_id = '$tz'"));
is($coord->safe_psql('postgres', qq{
SELECT (SELECT string_agg(id::text, ',' ORDER BY id) FROM sac_webhook.tickets WHERE tenant_id = '$tz')
    || ' ' || (SELECT count(*) FROM sac_webhook.messages WHERE tenant_id = '$tz')}),
	'c0000000-0000-4000-8000-000000000001,c0000000-0000-4000-8000-000000000002,c0000000-0000-4000-8000-000000000003 3',
	'the listed tickets and their messages are stored, the one the API lacks is gone');

# --- pg_dump of the distributed install -------------------------------------------
# It reads tickets and messages through Citus, from every node, and dumps no
# shard; the dump restores as plain tables holding every row.
my $dump = "$PostgreSQL::Test::Utils::tmp_check/citus.sql";
$coord->command_ok([ 'pg_dump', '-f', $dump, '-d', $coord->connstr('postgres') ],
	'pg_dump of the coordinator');
my $dumped = slurp_file($dump);
unlike($dumped, qr/CREATE TABLE sac_webhook\.\w+_\d+ /, 'no shard is dumped as a table');
my $digest = q{
SELECT (SELECT md5(string_agg(tenant_id::text || id::text || data::text, ',' ORDER BY tenant_id, id)) FROM sac_webhook.tickets)
    || ' ' || (SELECT md5(string_agg(tenant_id::text || id::text || data::text, ',' ORDER BY tenant_id, id)) FROM sac_webhook.messages)};
$coord->safe_psql('postgres', 'CREATE DATABASE restored');
$coord->command_ok([ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-f', $dump, '-d', $coord->connstr('restored') ],
	'the dump restores');
is($coord->safe_psql('restored', $digest), $coord->safe_psql('postgres', $digest),
	'the restored tables hold the same rows');
is($coord->safe_psql('restored', 'SELECT count(*) FROM pg_dist_partition'), '0',
	'restored as plain tables (distribute them again after restoring)');

$coord->stop;
$w1->stop;
$w2->stop;
done_testing();
