--
-- Roles and privileges: nothing for PUBLIC, the receiver may only receive
--
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS sac_webhook;
RESET client_min_messages;
CREATE ROLE regress_sac_rcv LOGIN IN ROLE sac_webhook_receiver;
CREATE ROLE regress_sac_reader LOGIN IN ROLE sac_webhook_reader;
CREATE ROLE regress_sac_nobody LOGIN;

-- SECURITY DEFINER functions pin search_path; nothing is executable by PUBLIC
SELECT p.oid::regprocedure, p.prosecdef, p.proconfig
  FROM pg_proc p WHERE p.pronamespace = 'sac_webhook'::regnamespace ORDER BY p.oid::regprocedure::text;
SELECT count(*) AS public_function_grants
  FROM pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
 WHERE p.pronamespace = 'sac_webhook'::regnamespace AND a.grantee = 0;
SELECT count(*) AS public_table_grants
  FROM pg_class c, aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
 WHERE c.relnamespace = 'sac_webhook'::regnamespace AND a.grantee = 0;
-- (array types and tables' row types follow their element type and table)
SELECT t.typname, count(a.grantee) FILTER (WHERE a.grantee = 0) AS public_grants
  FROM pg_type t, aclexplode(coalesce(t.typacl, acldefault('T', t.typowner))) a
 WHERE t.typnamespace = 'sac_webhook'::regnamespace AND t.typelem = 0
   AND (t.typrelid = 0 OR (SELECT c.relkind FROM pg_class c WHERE c.oid = t.typrelid) = 'c')
 GROUP BY 1 ORDER BY 1;
SELECT has_schema_privilege('regress_sac_nobody', 'sac_webhook', 'USAGE') AS nobody_usage;

-- What each role may do
SELECT r.role, o.obj, has_table_privilege(r.role, o.obj, 'SELECT') AS can_select,
       has_table_privilege(r.role, o.obj, 'INSERT, UPDATE, DELETE, TRUNCATE') AS can_write
  FROM (VALUES ('regress_sac_rcv'), ('regress_sac_reader'), ('regress_sac_nobody')) r(role),
       (VALUES ('sac_webhook.tenants'), ('sac_webhook.inbox'), ('sac_webhook.tickets'),
               ('sac_webhook.messages'), ('sac_webhook.stats')) o(obj)
 ORDER BY 1, 2;
SELECT r.role, f.fn, has_function_privilege(r.role, f.fn, 'EXECUTE') AS can_execute
  FROM (VALUES ('regress_sac_rcv'), ('regress_sac_reader'), ('regress_sac_nobody')) r(role),
       (VALUES ('sac_webhook.receive(text)'), ('sac_webhook.parse(text)'),
               ('sac_webhook.process(integer)'), ('sac_webhook.requeue_dead(uuid,text)')) f(fn)
 ORDER BY 1, 2;

-- The receiver stores through receive() and sees nothing
SET ROLE regress_sac_rcv;
SELECT sac_webhook.receive('{"data": {"status": "CREATION", "params": {"id": "debde69a-2dbb-427b-b478-6cffd7930ecf"}, "resource": "/v0/tickets/debde69a-2dbb-427b-b478-6cffd7930ecf"}, "tenant_id": "3b5cf468-c858-404b-9e53-630e3df9d74a", "topic": "sac_ticket"}') > 0 AS stored;
SELECT count(*) FROM sac_webhook.inbox;
SELECT count(*) FROM sac_webhook.tenants;
SELECT count(*) FROM sac_webhook.tickets;
INSERT INTO sac_webhook.inbox (tenant_id, topic, status, resource, ticket_id)
  VALUES ('3b5cf468-c858-404b-9e53-630e3df9d74a', 'sac_ticket', 'CREATION', '/x', '3b5cf468-c858-404b-9e53-630e3df9d74a');
SELECT sac_webhook.process(1);
-- a search_path trap cannot take over receive()
CREATE TEMP TABLE inbox (id int);
SET search_path = pg_temp, public;
SELECT sac_webhook.receive('{"data": {"status": "UPDATE", "params": {"id": "debde69a-2dbb-427b-b478-6cffd7930ecf"}, "resource": "/v0/tickets/debde69a-2dbb-427b-b478-6cffd7930ecf"}, "tenant_id": "3b5cf468-c858-404b-9e53-630e3df9d74a", "topic": "sac_ticket"}') > 0 AS stored;
RESET search_path;
RESET ROLE;
SELECT notifications FROM sac_webhook.inbox;

-- The reader reads the data tables and stats, nothing else
SET ROLE regress_sac_reader;
SELECT count(*) FROM sac_webhook.tickets;
SELECT count(*) FROM sac_webhook.messages;
SELECT pending FROM sac_webhook.stats;
SELECT count(*) FROM sac_webhook.tenants;
SELECT count(*) FROM sac_webhook.inbox;
SELECT sac_webhook.receive('{}');
RESET ROLE;

-- Anybody else: nothing at all
SET ROLE regress_sac_nobody;
SELECT sac_webhook.receive('{}');
SELECT sac_webhook.parse('{}');
SELECT count(*) FROM sac_webhook.tickets;
RESET ROLE;

TRUNCATE sac_webhook.inbox;
DROP OWNED BY regress_sac_rcv;
DROP ROLE regress_sac_rcv, regress_sac_reader, regress_sac_nobody;
