# Reconciliation carried out by the background workers: a seller with
# history is onboarded by itself, through kill -9 of a worker in the middle
# of the walk; another seller's notifications are not held up meanwhile;
# notifications lost at random are repaired by resync(), which leaves the
# tables equal to the API's state; periodic syncs start by themselves.
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

my $api = SacMock->new(args => ['--access-token', 'tok-1']);
$api->start;
my $url = $api->url;
my ($ta, $tb) = ('a1000000-0000-4000-8000-00000000000a', 'b1000000-0000-4000-8000-00000000000b');

my $node = PostgreSQL::Test::Cluster->new('resync');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'sac_webhook'
restart_after_crash = on
log_statement = none
sac_webhook.database = 'postgres'
sac_webhook.workers = 2
sac_webhook.poll_interval = '1s'
sac_webhook.retry_base_delay = '200ms'
sac_webhook.retry_max_delay = '1s'
sac_webhook.request_timeout = '5s'
sac_webhook.max_attempts = 1000
sac_webhook.not_found_retries = 1
sac_webhook.not_found_retry_delay = '100ms'
sac_webhook.resync_interval = 0
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION sac_webhook');

sub ticket_id { sprintf('%s-0000-4000-8000-%012d', $_[0], $_[1]) }
sub message_id { sprintf('%s%07d-0000-4000-8000-%012d', $_[0], $_[1], $_[2]) }

sub put_ticket
{
	my ($ns, $id, $status, $updated) = @_;
	$api->call('PUT', "/_mock/sellers/$ns/v0/tickets/$id",
		qq{{"id": "$id", "status": "$status", "created_at": "2024-08-07T13:42:45", "updated_at": "$updated"}});
}

sub put_message
{
	my ($ns, $ticket, $id, $text) = @_;
	$api->call('PUT', "/_mock/sellers/$ns/v0/tickets/$ticket/messages/$id",
		qq{{"id": "$id", "message": "$text", "ticket": {"id": "$ticket"}, "created_at": "2024-08-09T13:30:38Z"}});
}

sub notif
{
	my ($tenant, $status, $id) = @_;
	return qq{{"data": {"status": "$status", "params": {"id": "$id"}, "resource": "/v0/tickets/$id"}, "tenant_id": "$tenant", "topic": "sac_ticket"}};
}

# every ticket a namespace of the mock serves, as "id status" lines
sub mock_tickets
{
	my ($ns) = @_;
	$api->call('POST', '/_mock/config', '{"max_limit": 1000}');
	my $page = decode_json(`curl -sf -H 'Authorization: Bearer tok-1' '$url/sellers/$ns/v0/tickets?_limit=1000'`);
	$api->call('POST', '/_mock/config', '{"max_limit": 10}');
	return join("\n", sort map { "$_->{id} $_->{status}" } @{ $page->{results} });
}

# seller A: 120 tickets with 2 messages each; seller B: 3 tickets
for my $i (1 .. 120)
{
	my $t = ticket_id('a0000000', $i);
	put_ticket('a', $t, 'open', sprintf('2024-08-07T13:%02d:%02d', $i / 60, $i % 60));
	put_message('a', $t, message_id('7', $i, $_), "message $_") for 1 .. 2;
}
put_ticket('b', ticket_id('b0000000', $_), 'open', '2024-08-07T13:42:46') for 1 .. 3;

# seller B first, then seller A, whose history takes a while to read
$node->safe_psql('postgres', qq{
INSERT INTO sac_webhook.tenants (tenant_id, api_base_url, access_token, token_expires_at)
VALUES ('$tb', '$url/sellers/b', 'tok-1', now() + interval '1 hour');
});
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM sac_webhook.syncs WHERE tenant_id = '$tb' AND state = 'done'"),
	'a seller registered: its onboarding sync is done by itself');
is($node->safe_psql('postgres', "SELECT count(*) FROM sac_webhook.tickets WHERE tenant_id = '$tb'"),
	'3', 'and its history is stored');

$api->call('POST', '/_mock/config', '{"latency_ms": 150, "jitter_ms": 50}');
$node->safe_psql('postgres', qq{
INSERT INTO sac_webhook.tenants (tenant_id, api_base_url, access_token, token_expires_at)
VALUES ('$ta', '$url/sellers/a', 'tok-1', now() + interval '1 hour');
});
ok($node->poll_query_until('postgres',
	"SELECT pages >= 3 FROM sac_webhook.syncs WHERE tenant_id = '$ta'"),
	'the onboarding walk of a seller with history is under way');

# kill -9 of a worker in the middle of the walk
is($node->safe_psql('postgres', "SELECT state FROM sac_webhook.syncs WHERE tenant_id = '$ta'"),
	'walking', 'still walking');
my $pid = $node->safe_psql('postgres',
	"SELECT min(pid) FROM pg_stat_activity WHERE backend_type = 'sac_webhook worker'");
kill 'KILL', $pid;
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'sac_webhook worker' AND pid <> $pid"),
	'workers restarted after kill -9 mid-walk');
# a notification of seller B while A's history is read: not held up
my $tb4 = ticket_id('b0000000', 4);
put_ticket('b', $tb4, 'open', '2024-08-08T10:00:00');
$node->safe_psql('postgres', "SELECT sac_webhook.receive('" . notif($tb, 'CREATION', $tb4) . "')");
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM sac_webhook.tickets WHERE id = '$tb4'"),
	"another seller's notification is applied during the backfill");
is($node->safe_psql('postgres', "SELECT finished_at IS NULL FROM sac_webhook.syncs WHERE tenant_id = '$ta'"),
	't', 'before the backfill is over');

ok($node->poll_query_until('postgres',
	"SELECT state = 'done' FROM sac_webhook.syncs WHERE tenant_id = '$ta'"),
	'the walk resumes and the onboarding sync is done');
$api->call('POST', '/_mock/config', '{"latency_ms": 0, "jitter_ms": 0}');
is($node->safe_psql('postgres', qq{
SELECT (SELECT count(*) FROM sac_webhook.tickets WHERE tenant_id = '$ta') || '/' ||
       (SELECT count(*) FROM sac_webhook.messages WHERE tenant_id = '$ta')}),
	'120/240', 'every ticket and message of the history is stored');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM sac_webhook.inbox WHERE state = 'dead'"), '0', 'nothing dead');

# notifications lost at random: 40 tickets change, 6 go, 2 new ones come;
# only some of it is notified
srand(42);
my (@changed, @gone, @notified);
for my $i (1 .. 120)
{
	my $t = ticket_id('a0000000', $i);
	if ($i % 20 == 0)
	{
		$api->call('DELETE', "/_mock/sellers/a/v0/tickets/$t");
		push @gone, $t;
		push @notified, notif($ta, 'DELETION', $t) if rand() < 0.5;
	}
	elsif ($i % 3 == 0)
	{
		put_ticket('a', $t, 'closed', '2024-09-01T10:00:00');
		push @changed, $t;
		push @notified, notif($ta, 'UPDATE', $t) if rand() < 0.5;
	}
}
for my $i (121 .. 122)
{
	my $t = ticket_id('a0000000', $i);
	put_ticket('a', $t, 'open', '2024-09-02T10:00:00');
	put_message('a', $t, message_id('7', $i, 1), 'new');
}
$node->safe_psql('postgres', join("\n", map { "SELECT sac_webhook.receive('$_');" } @notified));
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM sac_webhook.inbox WHERE state IN ('pending', 'retrying')"),
	'the notifications that came are applied');
isnt($node->safe_psql('postgres',
	"SELECT id || ' ' || status FROM sac_webhook.tickets WHERE tenant_id = '$ta' ORDER BY 1"),
	mock_tickets('a'), 'with notifications lost, the copy differs from the API');

is($node->safe_psql('postgres', "SELECT sac_webhook.resync('$ta')"), '1', 'resync() queues a sync');
ok($node->poll_query_until('postgres',
	"SELECT state = 'done' FROM sac_webhook.syncs WHERE tenant_id = '$ta' AND kind = 'manual'"),
	'the manual sync is done');
is($node->safe_psql('postgres',
	"SELECT id || ' ' || status FROM sac_webhook.tickets WHERE tenant_id = '$ta' ORDER BY 1"),
	mock_tickets('a'), 'after resync() the tickets are those of the API');
is($node->safe_psql('postgres', qq{
SELECT count(*) FROM sac_webhook.messages m
 WHERE m.tenant_id = '$ta' AND NOT EXISTS (SELECT 1 FROM sac_webhook.tickets t
                                            WHERE t.tenant_id = m.tenant_id AND t.id = m.ticket_id)}),
	'0', 'no message is left of a deleted ticket');
is($node->safe_psql('postgres', "SELECT count(*) FROM sac_webhook.messages WHERE tenant_id = '$ta'"),
	2 * (120 - @gone) + 2, 'and every message of the others is stored');
is($node->safe_psql('postgres',
	"SELECT tickets_deleted >= " . (@gone - grep(/DELETION/, @notified)) . " FROM sac_webhook.syncs WHERE tenant_id = '$ta' AND kind = 'manual'"),
	't', 'the sync counts the tickets it found gone');

# periodic syncs start by themselves
$node->safe_psql('postgres', "ALTER SYSTEM SET sac_webhook.resync_interval = '2s'");
$node->reload;
ok($node->poll_query_until('postgres', qq{
SELECT count(*) >= 1 FROM sac_webhook.syncs
 WHERE tenant_id = '$ta' AND kind = 'periodic' AND state = 'done' AND since IS NOT NULL}),
	'a periodic sync runs, incremental');
is($node->safe_psql('postgres', qq{
SELECT p.since = (SELECT max(s.walk_started_at) FROM sac_webhook.syncs s
                   WHERE s.tenant_id = '$ta' AND s.id < p.id AND s.walk_finished_at IS NOT NULL)
  FROM sac_webhook.syncs p WHERE p.tenant_id = '$ta' AND p.kind = 'periodic' ORDER BY p.id LIMIT 1}),
	't', 'from when the previous complete walk began');

$node->stop;
$api->stop;
done_testing();
