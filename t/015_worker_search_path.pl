# The worker runs as a superuser in a database that someone else may own.
# Whatever that owner creates or puts on the database's search_path (look-
# alikes of the functions and operators the pipeline uses, found by an exact
# type match or by coming first), the worker never calls it.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib $FindBin::Bin;
use SacMock;

my $tenant = '3b5cf468-c858-404b-9e53-630e3df9d74a';
my $api = SacMock->new(args => ['--access-token', 'tok-1', '--refresh-token', 'rt-1',
	'--client', 'demo-client:demo-secret']);
$api->start;
my $url = $api->url;

my $node = PostgreSQL::Test::Cluster->new('search_path');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'sac_webhook'
sac_webhook.database = 'owned'
sac_webhook.workers = 1
sac_webhook.api_base_url = '$url'
sac_webhook.token_url = '$url/oauth/token'
sac_webhook.poll_interval = '1s'
sac_webhook.not_found_retries = 0
});
$node->start;

# a database owned by an ordinary role, which plants look-alikes
$node->safe_psql('postgres', q{
CREATE ROLE owner LOGIN;
CREATE DATABASE owned OWNER owner;
});
$node->safe_psql('owned', qq{
CREATE EXTENSION sac_webhook;
INSERT INTO sac_webhook.tenants (tenant_id, client_id, client_secret, access_token, refresh_token, token_expires_at)
VALUES ('$tenant', 'demo-client', 'demo-secret', 'tok-1', 'rt-1', now());
});
# each look-alike records who called it, then does what the real one does
$node->safe_psql('owned', q{
SET ROLE owner;
CREATE SCHEMA evil;
CREATE TABLE public.hijacked (fn text, backend_type text, superuser boolean);
CREATE FUNCTION public.spy(fn text) RETURNS void LANGUAGE sql AS $$
  INSERT INTO public.hijacked
  SELECT fn, a.backend_type, pg_catalog.current_setting('is_superuser')::boolean
    FROM pg_catalog.pg_stat_activity a WHERE a.pid = pg_catalog.pg_backend_pid() $$;
CREATE FUNCTION public.make_interval(secs integer) RETURNS interval LANGUAGE sql
  AS $$ SELECT public.spy('public.make_interval'); SELECT pg_catalog.make_interval(secs => secs) $$;
CREATE FUNCTION public.jsonb_typeof(jsonb) RETURNS text LANGUAGE sql
  AS $$ SELECT public.spy('public.jsonb_typeof'); SELECT pg_catalog.jsonb_typeof($1) $$;
CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE sql
  AS $$ SELECT public.spy('evil.now'); SELECT pg_catalog.now() $$;
CREATE FUNCTION evil.uuid_eq(uuid, uuid) RETURNS boolean LANGUAGE sql
  AS $$ SELECT public.spy('evil.='); SELECT pg_catalog.uuid_eq($1, $2) $$;
CREATE OPERATOR evil.= (leftarg = uuid, rightarg = uuid, function = evil.uuid_eq);
CREATE FUNCTION evil.jsonb_object_field_text(jsonb, text) RETURNS text LANGUAGE sql
  AS $$ SELECT public.spy('evil.->>'); SELECT pg_catalog.jsonb_object_field_text($1, $2) $$;
CREATE OPERATOR evil.->> (leftarg = jsonb, rightarg = text, function = evil.jsonb_object_field_text);
GRANT INSERT ON public.hijacked TO PUBLIC;
ALTER DATABASE owned SET search_path = evil, public, pg_catalog;
});
# the worker's next connection sees the database's settings
$node->restart;

sub note_for
{
	my ($status, $id, $msg) = @_;
	return defined $msg
	  ? qq{{"data": {"status": "$status", "params": {"ticket_id": "$id", "id": "$msg"}, "resource": "/v0/tickets/$id/messages/$msg"}, "tenant_id": "$tenant", "topic": "sac_message"}}
	  : qq{{"data": {"status": "$status", "params": {"id": "$id"}, "resource": "/v0/tickets/$id"}, "tenant_id": "$tenant", "topic": "sac_ticket"}};
}
my @t = map { sprintf('10000000-0000-4000-8000-%012d', $_) } 1 .. 3;
my $m = '20000000-0000-4000-8000-000000000001';
$api->call('DELETE', "/_mock/v0/tickets/$t[2]");
$node->safe_psql('owned', join("\n",
	"SELECT sac_webhook.receive('" . note_for('CREATION', $t[0]) . "');",
	"SELECT sac_webhook.receive('" . note_for('UPDATE', $t[1]) . "');",
	"SELECT sac_webhook.receive('" . note_for('CREATION', $t[0], $m) . "');",
	"SELECT sac_webhook.receive('" . note_for('DELETION', $t[2]) . "');"));
ok($node->poll_query_until('owned',
	"SELECT count(*) = 0 FROM sac_webhook.inbox WHERE state <> 'done'"),
	'the worker drains with the look-alikes in place');
is($node->safe_psql('owned',
	"SELECT (SELECT count(*) FROM sac_webhook.tickets) || '/' || (SELECT count(*) FROM sac_webhook.messages)"),
	'2/1', 'tickets and messages stored');
is($node->safe_psql('owned', "SELECT token_refreshed_at IS NOT NULL FROM sac_webhook.tenants"),
	't', 'the token was refreshed on the way');
is($node->safe_psql('owned', "SELECT count(*) FROM public.hijacked WHERE backend_type = 'sac_webhook worker'"),
	'0', 'the worker called none of the look-alikes');
is($node->safe_psql('owned', "SELECT count(*) FROM public.hijacked WHERE superuser"),
	'0', 'nothing of the owner ran as a superuser');
# the spies do work: an ordinary session with that search_path calls them
$node->safe_psql('owned', "SELECT now()");
is($node->safe_psql('owned', "SELECT count(*) > 0 FROM public.hijacked WHERE fn = 'evil.now'"),
	't', 'the look-alikes are found by an ordinary session');

$node->stop;
$api->stop;
done_testing();
