-- bench/pgbench/latency.sql: one new ticket notification per transaction,
-- for the end-to-end latency run of worker.sh.  The inbox id and the ticket
-- id go to bench.sent in the same transaction, so that the commit time of
-- the receipt is pg_xact_commit_timestamp(bench.sent.xmin).
INSERT INTO bench.sent (inbox_id, ticket_id)
SELECT sac_webhook.receive(bench.ticket_payload(t)), t FROM (SELECT gen_random_uuid() AS t) x;
