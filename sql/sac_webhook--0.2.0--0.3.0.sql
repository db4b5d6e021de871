/* sac_webhook--0.2.0--0.3.0.sql: notifications claimed tenant by tenant */

\echo Use "ALTER EXTENSION sac_webhook UPDATE TO '0.3.0'" to load this file. \quit

--
-- The workers claim each tenant's due notifications up to what that tenant
-- has room for (its share of sac_webhook.max_in_flight_per_tenant, less
-- after the API answered HTTP 429), so that a tenant the API slows down
-- keeps its backlog in the inbox and the other tenants' rows go by it.
-- The index of due notifications is now by tenant, then due time.
--
DROP INDEX @extschema@.inbox_due;
CREATE INDEX inbox_due ON @extschema@.inbox (tenant_id, next_attempt_at)
	WHERE state IN ('pending', 'retrying') AND priority = 0;
