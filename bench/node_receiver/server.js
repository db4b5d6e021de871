'use strict';
// bench/node_receiver/server.js -- the baseline of bench/receiver.sh: the
// webhook receiver one would write in a few lines of Node.js (fastify + pg).
//
// POST /webhooks/:secret stores the raw body with
// SELECT sac_webhook.receive($1) (a named, hence prepared, statement) on a pg
// Pool, one notification per transaction (autocommit), and answers
// 200 {"id": INBOX_ID} once the query -- and so the commit -- is done; a
// payload that receive() rejects (SQLSTATE class 22) is a 400, anything else
// a 503 with Retry-After, like sac_webhook_receiver.
//
// Configuration from the environment:
//   LISTEN     HOST:PORT to listen on (default 127.0.0.1:8081)
//   SECRET     the path secret (required)
//   POOL_SIZE  connections in the pg Pool (default 4)
//   PGHOST, PGPORT, PGUSER, PGDATABASE, ...  the usual libpq variables (pg reads them)

const crypto = require('node:crypto');
const { Pool } = require('pg');
const Fastify = require('fastify');

const [host, port] = (process.env.LISTEN || '127.0.0.1:8081').split(/:(?=[^:]*$)/);
const secret = Buffer.from(process.env.SECRET || '');
const poolSize = Number(process.env.POOL_SIZE || 4);
if (secret.length === 0) {
  console.error('SECRET is required');
  process.exit(2);
}

const pool = new Pool({ max: poolSize });
pool.on('error', (err) => console.error('idle client error:', err.message));

const app = Fastify({ logger: false, bodyLimit: 65536 });

// receive() validates the payload: hand it the body as text, unparsed.
app.removeAllContentTypeParsers();
app.addContentTypeParser('*', { parseAs: 'string' }, (req, body, done) => done(null, body));

function secretMatches(given) {
  const g = Buffer.from(given || '');
  return g.length === secret.length && crypto.timingSafeEqual(g, secret);
}

const receive = { name: 'sac_webhook_receive', text: 'SELECT sac_webhook.receive($1) AS id' };

app.post('/webhooks/:secret', async (req, reply) => {
  if (!secretMatches(req.params.secret)) {
    return reply.code(404).send({ error: 'not found' });
  }
  try {
    const res = await pool.query({ ...receive, values: [req.body] });
    return { id: Number(res.rows[0].id) };
  } catch (err) {
    if (typeof err.code === 'string' && err.code.startsWith('22')) {
      return reply.code(400).send({ error: 'invalid payload', message: err.message, detail: err.detail ?? null });
    }
    reply.header('Retry-After', '5');
    return reply.code(503).send({ error: 'database unavailable' });
  }
});

app.get('/healthz', async () => 'ok');

async function stop() {
  await app.close();
  await pool.end();
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

app.listen({ host, port: Number(port) }).catch((err) => {
  console.error(err.message);
  process.exit(1);
});
