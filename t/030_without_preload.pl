# Loaded on demand, without shared_preload_libraries: everything but the
# background worker works (parse, receive, process, stats).
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

$node->stop;
done_testing();
