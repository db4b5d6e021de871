-- bench/pgbench/receive.sql: one notification of the benchmark mix per
-- transaction, stored with sac_webhook.receive() -- the baseline of
-- receiver.sh (the mix is bench.payload's, the same as bench/lua/post.lua's).
\set k random(0, 99)
SELECT sac_webhook.receive(bench.payload(:k, gen_random_uuid(), gen_random_uuid()));
