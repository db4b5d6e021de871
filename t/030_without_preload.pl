# Loaded on demand, without shared_preload_libraries: everything but the
# background worker works (parse, receive, process, stats); and pg_dump keeps
# the extension's data.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('no_preload');
$node->init;
$node->start;

my $tenant = '3b5cf468-c858-404b-9e53-630e3df9d74a';
my $ticket = 'debde69a-2dbb-427b-b478-6cffd7930ecf';
my $note = qq{{"data": {"status": "DELETION", "params": {"id": "$ticket"}, "resource": "/v0/tickets/$ticket"}, "tenant_id": "$tenant", "topic": "sac_ticket"}};

$node->safe_psql('postgres', 'CREATE EXTENSION sac_webhook');
is($node->safe_psql('postgres', "SELECT topic FROM sac_webhook.parse('$note')"), 'sac_ticket', 'parse works');
is($node->safe_psql('postgres', "SELECT sac_webhook.receive('$note')"), '1', 'receive works');
is($node->safe_psql('postgres', 'SELECT pending, workers_running, fetches FROM sac_webhook.stats'),
	'1|0|0', 'stats work, with no worker and no counters');
$node->safe_psql('postgres', qq{
INSERT INTO sac_webhook.tenants (tenant_id, access_token, token_expires_at)
VALUES ('$tenant', 'unused', now() + interval '1 hour');
INSERT INTO sac_webhook.tickets (tenant_id, id, data) VALUES ('$tenant', '$ticket', '{}');
});
is($node->safe_psql('postgres', 'SET sac_webhook.confirm_deletions = off; SELECT sac_webhook.process()'),
	'1', 'process works');
is($node->safe_psql('postgres', 'SELECT count(*) FROM sac_webhook.tickets'), '0', 'deletion applied');
my ($ret, $out, $err) = $node->psql('postgres', 'SHOW sac_webhook.workers');
like($err, qr/unrecognized configuration parameter/, 'worker settings exist only when preloaded');

# pg_dump keeps the extension's data: tenants, inbox (and its sequence), data tables
$node->safe_psql('postgres', qq{
SELECT sac_webhook.receive('$note');
INSERT INTO sac_webhook.tickets (tenant_id, id, status, data) VALUES ('$tenant', '$ticket', 'open', '{"id": "$ticket"}');
});
my $dump = "$PostgreSQL::Test::Utils::tmp_check/sac.dump";
$node->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $node->connstr('postgres') ], 'pg_dump');
$node->safe_psql('postgres', 'CREATE DATABASE restored');
$node->command_ok([ 'pg_restore', '-d', $node->connstr('restored'), $dump ], 'pg_restore');
is($node->safe_psql('restored', qq{
SELECT (SELECT count(*) FROM sac_webhook.tenants) || '|' || (SELECT count(*) FROM sac_webhook.tickets)
    || '|' || (SELECT count(*) FROM sac_webhook.inbox)}), '1|1|2', 'data restored');
my $before = $node->safe_psql('postgres', 'SELECT max(id) FROM sac_webhook.inbox');
cmp_ok($node->safe_psql('restored', "SELECT sac_webhook.receive(replace('$note', '$ticket', '00000000-0000-4000-8000-000000000001'))"),
	'>', $before, 'inbox ids carry on after a restore');

$node->stop;
done_testing();
