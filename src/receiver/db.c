/*-------------------------------------------------------------------------
 *
 * db.c
 *	  The database side of sac_webhook_receiver: a pool of libpq
 *	  connections, each served by its own thread, that takes waiting
 *	  receipts off a shared queue and stores them in groups.
 *
 * Grouping.  HTTP threads append receipts to one FIFO queue and never
 * wait for the database.  A connection thread that is free takes up to
 * --max-group receipts that are already waiting (it never waits to fill
 * a group, so a lone request is stored at once) and stores them all in
 * ONE transaction, sent as a single libpq pipeline -- one network round
 * trip in the common case:
 *
 *		BEGIN
 *		SAVEPOINT r; SELECT sac_webhook.receive($1); RELEASE SAVEPOINT r
 *		... once per receipt ...
 *		COMMIT
 *		Sync
 *
 * When receive() rejects payload k, the server skips everything up to
 * the Sync (our COMMIT included) and the transaction is left aborted.  We
 * then send "ROLLBACK TO SAVEPOINT r; RELEASE SAVEPOINT r", the receipts
 * after k and COMMIT again, so one bad payload costs one extra round trip
 * and never fails its neighbours.  Only after COMMIT succeeded is anyone
 * answered: 200 with the inbox id, or 400 for a payload that can never be
 * stored (see payload_error()); any other per-payload error (say a
 * statement_timeout) is a 503 for that receipt alone.  If COMMIT fails,
 * the connection breaks or the group passes its deadline, every receipt of
 * the group is answered 503.
 *
 * Lock order.  receive() locks the waiting row of its (tenant_id,
 * resource), or waits for the transaction inserting it, until COMMIT.  Two
 * groups holding some of the same rows and taking them in different orders
 * would deadlock, so each group is first sorted by that key (orderkey.c,
 * arrival order among equals, so the latest notification of a resource
 * still comes last): every group then locks in the same global order and
 * no cycle can form between them.  A deadlock with some other session, or
 * a serialization failure (SQLSTATE 40P01, 40001), rolls the whole group
 * back, which releases its locks so that the other side can finish, and
 * the group is run again after a short random pause, up to
 * MAX_CONFLICT_RETRIES times within the group's deadline.  On the last try
 * such a failure is a 503 for that receipt only, as above.
 *
 * Each stored receipt costs a subtransaction; PostgreSQL caches 64 per
 * backend before snapshots everywhere must consult pg_subtrans, hence the
 * ceiling of 64 on --max-group.
 *
 * Under load, receipts pile up while all connections are busy, so group
 * sizes grow with the arrival rate and the commit cost (one WAL flush)
 * is shared -- the same idea as group commit.
 *
 * Failures.  A connection that breaks is dropped and re-established by its
 * own thread with exponential backoff.  When no connection is healthy,
 * pool_submit() refuses at once (HTTP 503, Retry-After) and the queue is
 * emptied with 503s, so a stopped database is answered in milliseconds.
 * If a connection turns out to be broken while a group is in flight, the
 * thread reconnects once immediately and resends the whole group: that is
 * safe even if the lost COMMIT did happen, because receive() coalesces
 * redeliveries of a pending notification (and the sender would redeliver
 * after a 503 anyway).  Every wait on the server is bounded by a
 * client-side deadline (connecting too: PQconnectStartParams and
 * PQconnectPoll instead of the blocking call); a server that stops
 * answering costs the group a 503 and the connection, never a hang.  We do not use PQcancel() for
 * this, because it blocks until the server reacts; instead the session's
 * statement_timeout and client_connection_check_interval make the server
 * abandon the work of a dropped connection.
 *
 * src/receiver/db.c
 *
 *-------------------------------------------------------------------------
 */
#include "receiver.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#define RECONNECT_MIN_MS	100
#define RECONNECT_MAX_MS	2000
#define IDLE_CHECK_MS		1000
#define CONNECT_TIMEOUT_S	5.0		/* for a connection and its setup */
#define DEADLINE_GRACE_MS	500		/* client-side group deadline beyond
									 * statement_timeout */
#define RECEIVE_STMT		"sac_webhook_receive"
#define MAX_ERROR_TEXT		1024
#define TEXTOID				25
#define MAX_CONFLICT_RETRIES 5		/* runs of a group after a deadlock */
#define CONFLICT_PAUSE_MS	10		/* times the retry number, at most */

typedef enum GroupResult
{
	GROUP_OK,
	GROUP_CONN_LOST,			/* the connection broke */
	GROUP_TIMEOUT,				/* --query-timeout passed */
	GROUP_ERROR,				/* unexpected failure; connection unusable */
	GROUP_RETRY					/* deadlock or serialization failure: rolled
								 * back, the connection is fine */
} GroupResult;

typedef struct DbConn
{
	int			id;				/* 1-based, for messages */
	pthread_t	thread;
	PGconn	   *conn;			/* NULL while disconnected */
	bool		ever_connected;
	int			failures;		/* consecutive failed connection attempts */
	unsigned int seed;			/* for backoff jitter */
	char		conflict[6];	/* SQLSTATE of the last GROUP_RETRY */
} DbConn;

static struct
{
	pthread_mutex_t lock;
	pthread_cond_t work;		/* queue became non-empty, or stopping */
	pthread_cond_t stop;		/* stopping (wakes backoff sleeps) */
	Receipt    *head;
	Receipt    *tail;
	int			length;
	int			healthy;		/* connections ready for work */
	bool		stopping;
	DbConn	   *conns;
	int			nconns;
}			pool;

/* ----------------------------------------------------------------
 * Small helpers
 * ----------------------------------------------------------------
 */

/* Absolute CLOCK_MONOTONIC time ms from now, for pthread_cond_timedwait. */
static struct timespec
deadline_in_ms(int ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long) (ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L)
	{
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	return ts;
}

/* Copy at most max bytes of s, not cutting a UTF-8 sequence in two. */
static char *
bounded_strdup(const char *s, size_t max)
{
	size_t		len = strlen(s);
	char	   *copy;

	if (len > max)
	{
		len = max;
		while (len > 0 && ((unsigned char) s[len] & 0xC0) == 0x80)
			len--;
	}
	copy = xmalloc(len + 1);
	memcpy(copy, s, len);
	copy[len] = '\0';
	return copy;
}

/* libpq's error message on one line, for the log. */
static void
one_line(const char *msg, char *buf, size_t bufsize)
{
	size_t		i;

	snprintf(buf, bufsize, "%s", msg ? msg : "");
	for (i = 0; buf[i]; i++)
		if (buf[i] == '\n' || buf[i] == '\r' || buf[i] == '\t')
			buf[i] = ' ';
	while (i > 0 && buf[i - 1] == ' ')
		buf[--i] = '\0';
}

/* Notices from the server (e.g. RAISE NOTICE in receive()) are dropped. */
static void
ignore_notice(void *arg, const char *message)
{
	(void) arg;
	(void) message;
}

static void
receipt_reset(Receipt *r)
{
	r->http_status = 0;
	r->id_is_null = false;
	r->inbox_id = 0;
	r->sqlstate[0] = '\0';
	free(r->errmsg);
	r->errmsg = NULL;
	free(r->errdetail);
	r->errdetail = NULL;
}

/*
 * Hand a finished receipt back to its owner.  The receipt may be freed by
 * another thread as soon as complete() returns, so callers must read
 * r->next first.
 */
static void
complete_receipt(Receipt *r)
{
	if (r->payload != NULL)
		metrics_observe_receive(monotonic_now() - r->enqueued_at);
	r->complete(r);
}

/* Answer every receipt of a linked list with 503. */
static void
fail_list(Receipt *list)
{
	while (list != NULL)
	{
		Receipt    *next = list->next;

		receipt_reset(list);
		list->http_status = 503;
		complete_receipt(list);
		list = next;
	}
}

/* ----------------------------------------------------------------
 * Bounded waiting on a non-blocking libpq connection
 * ----------------------------------------------------------------
 */

/*
 * Wait until the socket is ready for "events" or the deadline passes.
 * Returns 1 when ready, 0 on timeout, -1 on failure.
 */
static int
wait_socket(PGconn *conn, short events, double deadline)
{
	int			fd = PQsocket(conn);

	if (fd < 0)
		return -1;
	for (;;)
	{
		struct pollfd pfd = {.fd = fd,.events = events};
		double		remaining = deadline - monotonic_now();
		int			rc;

		/* poll at least once, so that a deadline of "now" means "peek" */
		rc = poll(&pfd, 1, remaining > 0 ? (int) ceil(remaining * 1000.0) : 0);
		if (rc > 0)
			return 1;
		if (rc < 0 && errno != EINTR)
			return -1;
		if (remaining <= 0)
			return 0;
	}
}

/* Classify a failure: a broken connection, or something else. */
static GroupResult
failure_kind(PGconn *conn)
{
	return PQstatus(conn) == CONNECTION_BAD ? GROUP_CONN_LOST : GROUP_ERROR;
}

/*
 * Does this error end the session?  (A FATAL from the server, e.g. when it
 * shuts down, arrives before libpq notices the connection is gone.)
 */
static bool
error_ends_session(PGconn *conn, const PGresult *res)
{
	const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
	const char *sqlstate = PQresultErrorField(res, PG_DIAG_SQLSTATE);

	return PQstatus(conn) == CONNECTION_BAD ||
		(severity != NULL && (strcmp(severity, "FATAL") == 0 ||
							  strcmp(severity, "PANIC") == 0)) ||
		(sqlstate != NULL && strncmp(sqlstate, "08", 2) == 0);
}

/*
 * Is this a deadlock or serialization failure, which running the whole
 * transaction again can cure?  Records the SQLSTATE for the log.
 */
static bool
is_conflict(DbConn *c, const PGresult *res)
{
	const char *sqlstate = PQresultErrorField(res, PG_DIAG_SQLSTATE);

	if (sqlstate == NULL ||
		(strcmp(sqlstate, "40P01") != 0 && strcmp(sqlstate, "40001") != 0))
		return false;
	snprintf(c->conflict, sizeof(c->conflict), "%s", sqlstate);
	return true;
}

/* Send everything libpq has buffered, reading input meanwhile. */
static GroupResult
flush_bounded(PGconn *conn, double deadline)
{
	for (;;)
	{
		int			rc = PQflush(conn);
		int			ready;

		if (rc == 0)
			return GROUP_OK;
		if (rc < 0)
			return failure_kind(conn);
		ready = wait_socket(conn, POLLIN | POLLOUT, deadline);
		if (ready == 0)
			return GROUP_TIMEOUT;
		if (ready < 0 || !PQconsumeInput(conn))
			return GROUP_CONN_LOST;
	}
}

/* Wait until PQgetResult() will not block. */
static GroupResult
wait_result(PGconn *conn, double deadline)
{
	while (PQisBusy(conn))
	{
		int			ready = wait_socket(conn, POLLIN, deadline);

		if (ready == 0)
			return GROUP_TIMEOUT;
		if (ready < 0 || !PQconsumeInput(conn))
			return GROUP_CONN_LOST;
	}
	return GROUP_OK;
}

/*
 * Return the next statement's result from the pipeline, or NULL with *gr
 * set.  Consumes the NULL that ends each statement's results (the Sync
 * result has none).
 */
static PGresult *
next_result(PGconn *conn, double deadline, GroupResult *gr)
{
	PGresult   *res;
	PGresult   *extra;

	if ((*gr = wait_result(conn, deadline)) != GROUP_OK)
		return NULL;
	res = PQgetResult(conn);
	if (res == NULL)
	{
		*gr = failure_kind(conn);
		return NULL;
	}
	if (PQresultStatus(res) == PGRES_PIPELINE_SYNC)
		return res;
	if ((*gr = wait_result(conn, deadline)) != GROUP_OK)
	{
		PQclear(res);
		return NULL;
	}
	extra = PQgetResult(conn);
	if (extra != NULL)
	{
		/* more than one result for one statement: not what we sent */
		PQclear(extra);
		PQclear(res);
		*gr = GROUP_ERROR;
		return NULL;
	}
	return res;
}

/*
 * Read the result of a utility statement.  With "aborted_ok" the pipeline
 * is known to be aborted and PGRES_PIPELINE_ABORTED is the expected answer;
 * otherwise PGRES_COMMAND_OK is.  "tag", when given, must match the
 * command status (COMMIT answers "ROLLBACK" when the transaction had
 * failed).
 */
static GroupResult
expect_command(DbConn *c, double deadline, bool aborted_ok, const char *tag)
{
	GroupResult gr;
	PGresult   *res = next_result(c->conn, deadline, &gr);
	ExecStatusType st;

	if (res == NULL)
		return gr;
	st = PQresultStatus(res);
	if (aborted_ok ? st == PGRES_PIPELINE_ABORTED :
		(st == PGRES_COMMAND_OK && (tag == NULL || strcmp(PQcmdStatus(res), tag) == 0)))
		gr = GROUP_OK;
	else if (st == PGRES_FATAL_ERROR && error_ends_session(c->conn, res))
		gr = GROUP_CONN_LOST;
	else if (st == PGRES_FATAL_ERROR && is_conflict(c, res))
		gr = GROUP_RETRY;		/* e.g. COMMIT under SERIALIZABLE */
	else
	{
		char		msg[512];

		gr = failure_kind(c->conn);
		one_line(PQresultErrorMessage(res), msg, sizeof(msg));
		if (gr != GROUP_CONN_LOST)
			log_msg(LOG_LEVEL_ERROR, "connection %d: unexpected %s from the server%s%s",
					c->id, PQresStatus(st), msg[0] ? ": " : "", msg);
	}
	PQclear(res);
	return gr;
}

/* Queue a parameterless statement in the pipeline. */
static bool
send_statement(PGconn *conn, const char *sql)
{
	return PQsendQueryParams(conn, sql, 0, NULL, NULL, NULL, NULL, 0) == 1;
}

/* ----------------------------------------------------------------
 * The grouped transaction
 * ----------------------------------------------------------------
 */

/*
 * Is receive()'s error about the payload itself, so that sending the same
 * payload again can never succeed?  Then the answer is 400, because a 503
 * would have the sender retry it for ever.  That covers data exceptions
 * (class 22, which receive() uses for every rejection) and program limits
 * (class 54: 54001, stack depth limit exceeded, for a document nested too
 * deeply for the server; 54000 for one too big to handle).  Everything
 * else -- the server shutting down, timeouts, missing privileges, lock
 * conflicts, resources running short -- may pass and is answered 503.
 */
static bool
payload_error(const char *sqlstate)
{
	return sqlstate != NULL &&
		(strncmp(sqlstate, "22", 2) == 0 || strncmp(sqlstate, "54", 2) == 0);
}

/* Record receive()'s rejection of a payload: 400 or 503, see above. */
static void
record_rejection(DbConn *c, Receipt *r, const PGresult *res)
{
	const char *sqlstate = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	const char *message = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
	const char *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);

	if (payload_error(sqlstate))
	{
		r->http_status = 400;
		snprintf(r->sqlstate, sizeof(r->sqlstate), "%s", sqlstate);
		r->errmsg = bounded_strdup(message ? message : "invalid payload", MAX_ERROR_TEXT);
		r->errdetail = detail ? bounded_strdup(detail, MAX_ERROR_TEXT) : NULL;
	}
	else
	{
		char		msg[512];

		/* not the sender's fault: let it retry; the body is not logged */
		r->http_status = 503;
		one_line(message, msg, sizeof(msg));
		log_msg(LOG_LEVEL_ERROR, "connection %d: sac_webhook.receive() failed with SQLSTATE %s: %s",
				c->id, sqlstate ? sqlstate : "?????", msg);
	}
}

/* Record receive()'s answer: the inbox id. */
static bool
record_id(Receipt *r, const PGresult *res)
{
	if (PQntuples(res) != 1 || PQnfields(res) != 1)
		return false;
	r->http_status = 200;
	if (PQgetisnull(res, 0, 0))
		r->id_is_null = true;
	else
	{
		char	   *end;

		errno = 0;
		r->inbox_id = strtoll(PQgetvalue(res, 0, 0), &end, 10);
		if (errno != 0 || *end != '\0')
			return false;
	}
	return true;
}

/*
 * Read and discard results up to and including the next Sync, after an
 * error made the server skip the rest of the pipeline.
 */
static GroupResult
discard_to_sync(PGconn *conn, double deadline)
{
	bool		after_null = false;

	for (;;)
	{
		GroupResult gr;
		PGresult   *res;
		ExecStatusType st;

		if ((gr = wait_result(conn, deadline)) != GROUP_OK)
			return gr;
		res = PQgetResult(conn);
		if (res == NULL)
		{
			/* two in a row: nothing is left in the pipeline */
			if (after_null)
				return failure_kind(conn);
			after_null = true;
			continue;
		}
		after_null = false;
		st = PQresultStatus(res);
		PQclear(res);
		if (st == PGRES_PIPELINE_SYNC)
			return GROUP_OK;
	}
}

/*
 * A deadlock or serialization failure hit the group: skip what is left of
 * this round, roll the transaction back (releasing every lock it holds)
 * and leave pipeline mode.  Returns GROUP_RETRY when the connection is
 * ready to run the group again.
 */
static GroupResult
roll_back_group(DbConn *c, double deadline)
{
	PGconn	   *conn = c->conn;
	GroupResult gr;
	PGresult   *res;

	if ((gr = discard_to_sync(conn, deadline)) != GROUP_OK)
		return gr;
	/* (after a failed COMMIT there is no transaction left: just a warning) */
	if (!send_statement(conn, "ROLLBACK") || PQpipelineSync(conn) != 1)
		return failure_kind(conn);
	if ((gr = flush_bounded(conn, deadline)) != GROUP_OK ||
		(gr = expect_command(c, deadline, false, "ROLLBACK")) != GROUP_OK)
		return gr == GROUP_RETRY ? GROUP_ERROR : gr;
	res = next_result(conn, deadline, &gr);
	if (res == NULL)
		return gr;
	if (PQresultStatus(res) != PGRES_PIPELINE_SYNC)
		gr = GROUP_ERROR;
	PQclear(res);
	if (gr != GROUP_OK)
		return gr;
	if (PQexitPipelineMode(conn) != 1 || PQtransactionStatus(conn) != PQTRANS_IDLE)
		return failure_kind(conn);
	return GROUP_RETRY;
}

/*
 * Store a group in one transaction, as described at the top of this file.
 * On GROUP_OK every receipt has http_status set (200 or 400, or 503 for an
 * unexpected per-payload error); otherwise the caller answers all 503, or
 * on GROUP_RETRY may run the group again.  With "retry_conflicts" false, a
 * deadlock or serialization failure of one receive() is that receipt's
 * 503 instead of a GROUP_RETRY.
 */
static GroupResult
run_group(DbConn *c, Receipt **items, int n, double deadline, bool retry_conflicts)
{
	PGconn	   *conn = c->conn;
	GroupResult gr;
	int			next = 0;
	bool		first = true;

	for (int i = 0; i < n; i++)
		receipt_reset(items[i]);

	if (PQenterPipelineMode(conn) != 1)
		return failure_kind(conn);

	for (;;)
	{
		int			failed_at = -1;

		/* queue this round's statements */
		if (first ? !send_statement(conn, "BEGIN") :
			(!send_statement(conn, "ROLLBACK TO SAVEPOINT r") ||
			 !send_statement(conn, "RELEASE SAVEPOINT r")))
			return failure_kind(conn);
		for (int i = next; i < n; i++)
		{
			if (items[i]->payload == NULL)
				continue;		/* a health probe: the COMMIT answers it */
			if (!send_statement(conn, "SAVEPOINT r") ||
				PQsendQueryPrepared(conn, RECEIVE_STMT, 1, &items[i]->payload,
									NULL, NULL, 0) != 1 ||
				!send_statement(conn, "RELEASE SAVEPOINT r"))
				return failure_kind(conn);
		}
		if (!send_statement(conn, "COMMIT") || PQpipelineSync(conn) != 1)
			return failure_kind(conn);
		if ((gr = flush_bounded(conn, deadline)) != GROUP_OK)
			return gr;

		/* read the answers in the same order */
		if (first)
		{
			if ((gr = expect_command(c, deadline, false, "BEGIN")) != GROUP_OK)
				goto failed;
		}
		else
		{
			if ((gr = expect_command(c, deadline, false, NULL)) != GROUP_OK ||
				(gr = expect_command(c, deadline, false, NULL)) != GROUP_OK)
				goto failed;
		}
		for (int i = next; i < n; i++)
		{
			PGresult   *res;
			bool		aborted = (failed_at >= 0);

			if (items[i]->payload == NULL)
				continue;
			if ((gr = expect_command(c, deadline, aborted, NULL)) != GROUP_OK)
				goto failed;
			res = next_result(conn, deadline, &gr);
			if (res == NULL)
				return gr;
			switch (PQresultStatus(res))
			{
				case PGRES_TUPLES_OK:
					if (aborted || !record_id(items[i], res))
						gr = GROUP_ERROR;
					break;
				case PGRES_FATAL_ERROR:
					if (error_ends_session(conn, res))
						gr = GROUP_CONN_LOST;
					else if (aborted)
						gr = GROUP_ERROR;
					else if (retry_conflicts && is_conflict(c, res))
						gr = GROUP_RETRY;
					else
					{
						record_rejection(c, items[i], res);
						failed_at = i;
					}
					break;
				case PGRES_PIPELINE_ABORTED:
					if (!aborted)
						gr = GROUP_ERROR;
					break;
				default:
					gr = GROUP_ERROR;
					break;
			}
			PQclear(res);
			if (gr != GROUP_OK)
			{
				if (gr == GROUP_ERROR)
					log_msg(LOG_LEVEL_ERROR, "connection %d: unexpected answer to sac_webhook.receive()",
							c->id);
				goto failed;
			}
			/* RELEASE is skipped by the server when receive() failed */
			if ((gr = expect_command(c, deadline, failed_at >= 0, NULL)) != GROUP_OK)
				goto failed;
		}
		if ((gr = expect_command(c, deadline, failed_at >= 0, "COMMIT")) != GROUP_OK)
			goto failed;

		/* the Sync */
		{
			PGresult   *res = next_result(conn, deadline, &gr);

			if (res == NULL)
				return gr;
			if (PQresultStatus(res) != PGRES_PIPELINE_SYNC)
				gr = GROUP_ERROR;
			PQclear(res);
			if (gr != GROUP_OK)
				return gr;
		}

		if (failed_at < 0)
			break;				/* committed */
		next = failed_at + 1;
		first = false;
	}

	if (PQexitPipelineMode(conn) != 1 || PQtransactionStatus(conn) != PQTRANS_IDLE)
		return failure_kind(conn);

	/* health probes were answered by the COMMIT */
	for (int i = 0; i < n; i++)
		if (items[i]->payload == NULL)
			items[i]->http_status = 200;
	return GROUP_OK;

failed:
	/* a conflict leaves the connection usable; anything else does not */
	return gr == GROUP_RETRY ? roll_back_group(c, deadline) : gr;
}

/*
 * One receipt of a group with its ordering key, for sort_group().
 */
typedef struct OrderedReceipt
{
	Receipt    *receipt;
	int			arrival;		/* position in the queue */
	bool		has_key;
	char		key[ORDER_KEY_SIZE];
} OrderedReceipt;

static int
compare_receipts(const void *a, const void *b)
{
	const OrderedReceipt *x = a;
	const OrderedReceipt *y = b;

	if (x->has_key != y->has_key)
		return x->has_key ? -1 : 1;		/* receipts without a key last */
	if (x->has_key)
	{
		int			cmp = strcmp(x->key, y->key);

		if (cmp != 0)
			return cmp;
	}
	return x->arrival - y->arrival;
}

/*
 * Put a group in lock order: by (tenant_id, resource), and among receipts
 * of the same resource in arrival order.  See "Lock order" at the top of
 * this file.
 */
static void
sort_group(Receipt **items, int n)
{
	OrderedReceipt ord[MAX_GROUP_LIMIT];

	for (int i = 0; i < n; i++)
	{
		ord[i].receipt = items[i];
		ord[i].arrival = i;
		ord[i].has_key = payload_order_key(items[i]->payload, ord[i].key,
										   sizeof(ord[i].key));
	}
	qsort(ord, (size_t) n, sizeof(OrderedReceipt), compare_receipts);
	for (int i = 0; i < n; i++)
		items[i] = ord[i].receipt;
}

/*
 * Pause before running a group again after a conflict: a random 1 to
 * attempt * CONFLICT_PAUSE_MS milliseconds, so that the sessions that
 * collided do not collide again in step.  Returns false, without pausing,
 * when that would leave no time for the group before its deadline.
 */
static bool
conflict_pause(DbConn *c, int attempt, double deadline)
{
	int			ms = 1 + (int) (rand_r(&c->seed) % (unsigned) (attempt * CONFLICT_PAUSE_MS));
	struct timespec pause = {ms / 1000, (long) (ms % 1000) * 1000000L};
	double		left = deadline - monotonic_now();

	/* keep at least half of what is left for the group itself */
	if (ms / 1000.0 > left / 2)
		return false;
	nanosleep(&pause, NULL);
	return true;
}

/* ----------------------------------------------------------------
 * Connection management
 * ----------------------------------------------------------------
 */

/*
 * Run a setup command (or the prepare, when "prepare_sql" is set) on a
 * fresh non-blocking connection, bounded by a deadline.  Returns true when
 * every result was successful; otherwise copies the error to errbuf.
 */
static bool
setup_command(PGconn *conn, const char *sql, const char *prepare_sql,
			  double deadline, char *errbuf, size_t errlen)
{
	Oid			types[1] = {TEXTOID};
	PGresult   *res;
	bool		ok = true;
	int			sent;

	if (prepare_sql != NULL)
		sent = PQsendPrepare(conn, RECEIVE_STMT, prepare_sql, 1, types);
	else
		sent = PQsendQuery(conn, sql);
	if (sent != 1 || flush_bounded(conn, deadline) != GROUP_OK)
	{
		one_line(PQerrorMessage(conn), errbuf, errlen);
		return false;
	}
	for (;;)
	{
		if (wait_result(conn, deadline) != GROUP_OK)
		{
			snprintf(errbuf, errlen, "the server did not answer in time");
			return false;
		}
		res = PQgetResult(conn);
		if (res == NULL)
			break;
		if (PQresultStatus(res) != PGRES_COMMAND_OK && ok)
		{
			one_line(PQresultErrorMessage(res), errbuf, errlen);
			ok = false;
		}
		PQclear(res);
	}
	return ok;
}

/*
 * Open a connection with PQconnectStartParams()/PQconnectPoll(), so that
 * the attempt is bounded by our deadline (libpq's connect_timeout is whole
 * seconds, at least 2, and per host).  Returns NULL with errbuf set on
 * failure.
 */
static PGconn *
connect_bounded(double deadline, char *errbuf, size_t errlen)
{
	/* options before "dbname" may be overridden by --db, those after not */
	static const char *const keywords[] = {
		"application_name", "dbname", "client_encoding", NULL
	};
	const char *values[] = {
		RECEIVER_NAME, config.conninfo, "UTF8", NULL
	};
	PostgresPollingStatusType st = PGRES_POLLING_WRITING;
	PGconn	   *conn;

	conn = PQconnectStartParams(keywords, values, 1);
	if (conn == NULL)
		fatal("out of memory");
	while (PQstatus(conn) != CONNECTION_BAD)
	{
		int			ready;

		if (st == PGRES_POLLING_OK)
			return conn;
		if (st == PGRES_POLLING_FAILED)
			break;
		ready = wait_socket(conn, st == PGRES_POLLING_READING ? POLLIN : POLLOUT, deadline);
		if (ready == 0)
		{
			snprintf(errbuf, errlen, "timeout expired");
			PQfinish(conn);
			return NULL;
		}
		if (ready < 0)
			break;
		st = PQconnectPoll(conn);
	}
	one_line(PQerrorMessage(conn), errbuf, errlen);
	PQfinish(conn);
	return NULL;
}

/*
 * Connect one pool connection and prepare it, all before "deadline".
 * Returns true on success.
 */
static bool
db_connect(DbConn *c, double deadline)
{
	char		sql[160];
	char		err[512];
	PGconn	   *conn;

	conn = connect_bounded(deadline, err, sizeof(err));
	if (conn == NULL)
		goto fail;
	PQsetNoticeProcessor(conn, ignore_notice, NULL);
	if (PQsetnonblocking(conn, 1) != 0)
	{
		one_line(PQerrorMessage(conn), err, sizeof(err));
		goto fail;
	}
	snprintf(sql, sizeof(sql),
			 "SET statement_timeout = %d; SET client_connection_check_interval = 1000",
			 config.query_timeout_ms);
	if (!setup_command(conn, sql, NULL, deadline, err, sizeof(err)) ||
		!setup_command(conn, NULL, "SELECT sac_webhook.receive($1)", deadline,
					   err, sizeof(err)))
		goto fail;

	c->conn = conn;
	if (c->ever_connected)
		metrics_count_reconnect();
	if (c->failures > 0)
		log_msg(LOG_LEVEL_INFO, "connection %d: connected to the database after %d failed attempt%s",
				c->id, c->failures, c->failures == 1 ? "" : "s");
	c->ever_connected = true;
	c->failures = 0;
	return true;

fail:
	metrics_count_connect_failure();
	/* log the first failure of a series, then about once a minute */
	if (c->failures % 30 == 0)
		log_msg(LOG_LEVEL_WARNING, "connection %d: could not connect to the database: %s",
				c->id, err);
	c->failures++;
	PQfinish(conn);				/* NULL-safe */
	return false;
}

static void
mark_healthy(DbConn *c)
{
	int			healthy;

	pthread_mutex_lock(&pool.lock);
	healthy = ++pool.healthy;
	pthread_mutex_unlock(&pool.lock);
	if (healthy == 1)
		log_msg(LOG_LEVEL_INFO, "database available (connection %d ready)", c->id);
}

/*
 * Close a connection that is broken or in an unknown state.  When it was
 * the last healthy one, every queued receipt is answered 503 now instead
 * of waiting for a reconnect.
 */
static void
drop_connection(DbConn *c, const char *why)
{
	Receipt    *orphans = NULL;
	int			healthy;

	if (c->conn == NULL)
		return;
	if (why != NULL)
		log_msg(LOG_LEVEL_WARNING, "connection %d: %s; reconnecting", c->id, why);
	PQfinish(c->conn);
	c->conn = NULL;

	pthread_mutex_lock(&pool.lock);
	healthy = --pool.healthy;
	if (healthy == 0)
	{
		orphans = pool.head;
		pool.head = pool.tail = NULL;
		pool.length = 0;
	}
	pthread_mutex_unlock(&pool.lock);

	if (healthy == 0)
		log_msg(LOG_LEVEL_WARNING, "database unavailable: no working connection, answering 503");
	fail_list(orphans);
}

/* While idle, notice a connection that the server has closed. */
static void
check_idle_connection(DbConn *c)
{
	/*
	 * A server shutting down sends a FATAL message and then closes; both
	 * may need reading, so peek a few times.
	 */
	for (int attempt = 0; attempt < 3 && c->conn != NULL; attempt++)
	{
		int			ready = wait_socket(c->conn, POLLIN, monotonic_now());

		if (ready == 0)
			return;
		if (ready < 0)
		{
			drop_connection(c, "connection lost");
			return;
		}
		if (!PQconsumeInput(c->conn) || PQstatus(c->conn) == CONNECTION_BAD)
		{
			char		msg[512];
			char		why[600];

			one_line(PQerrorMessage(c->conn), msg, sizeof(msg));
			snprintf(why, sizeof(why), "connection closed by the server: %s", msg);
			drop_connection(c, why);
		}
		else
		{
			PGnotify   *notify;

			while ((notify = PQnotifies(c->conn)) != NULL)
				PQfreemem(notify);
		}
	}
}

/* ----------------------------------------------------------------
 * Connection threads
 * ----------------------------------------------------------------
 */

/*
 * Take up to --max-group waiting receipts, waiting up to wait_ms for the
 * first.  Returns the count (0 after an idle wait, or when everything
 * waiting had expired), or -1 when stopping.
 *
 * A receipt that has already waited longer than --query-timeout in the
 * queue (every connection busy with slow groups) is answered 503 instead of
 * being stored late: the sender is probably about to give up on it, and
 * shedding load is better than letting the queue delay grow without bound.
 * So a request is answered within about twice --query-timeout at worst.
 */
static int
take_group(Receipt **group, int wait_ms)
{
	Receipt    *expired = NULL;
	double		too_old = monotonic_now() - config.query_timeout_ms / 1000.0;
	int			n = 0;

	pthread_mutex_lock(&pool.lock);
	if (!pool.stopping && pool.head == NULL)
	{
		struct timespec until = deadline_in_ms(wait_ms);

		pthread_cond_timedwait(&pool.work, &pool.lock, &until);
	}
	if (pool.stopping)
	{
		pthread_mutex_unlock(&pool.lock);
		return -1;
	}
	while (pool.head != NULL && n < config.max_group)
	{
		Receipt    *r = pool.head;

		pool.head = r->next;
		pool.length--;
		if (r->enqueued_at < too_old)
		{
			r->next = expired;
			expired = r;
		}
		else
			group[n++] = r;
	}
	if (pool.head == NULL)
		pool.tail = NULL;
	pthread_mutex_unlock(&pool.lock);

	fail_list(expired);
	return n;
}

/* Sleep for the reconnect backoff; returns false when stopping. */
static bool
backoff_sleep(int ms)
{
	struct timespec until = deadline_in_ms(ms);
	bool		stopping;

	pthread_mutex_lock(&pool.lock);
	if (!pool.stopping)
		pthread_cond_timedwait(&pool.stop, &pool.lock, &until);
	stopping = pool.stopping;
	pthread_mutex_unlock(&pool.lock);
	return !stopping;
}

static bool
is_stopping(void)
{
	bool		stopping;

	pthread_mutex_lock(&pool.lock);
	stopping = pool.stopping;
	pthread_mutex_unlock(&pool.lock);
	return stopping;
}

/* Store a group and answer every receipt in it. */
static void
process_group(DbConn *c, Receipt **items, int n)
{
	/*
	 * The session's statement_timeout equals --query-timeout, so a single
	 * slow receive() is cancelled by the server first: that request gets
	 * 503 and the rest of the group is still stored on a connection that
	 * survives.  Only a group still unfinished after the grace period costs
	 * the connection.
	 */
	double		deadline = monotonic_now() +
		(config.query_timeout_ms + DEADLINE_GRACE_MS) / 1000.0;
	GroupResult gr;
	int			payloads = 0;
	int			conflicts = 0;
	bool		resent = false;

	sort_group(items, n);
	for (;;)
	{
		gr = run_group(c, items, n, deadline, conflicts < MAX_CONFLICT_RETRIES);
		if (gr == GROUP_CONN_LOST && !resent && monotonic_now() < deadline)
		{
			/*
			 * Typically the server restarted since we last used this
			 * connection.  Try once more on a fresh one; see the file
			 * header for why resending is safe.
			 */
			resent = true;
			drop_connection(c, "connection lost during a transaction");
			if (!db_connect(c, deadline))
				break;
			mark_healthy(c);
			continue;
		}
		if (gr != GROUP_RETRY || conflicts >= MAX_CONFLICT_RETRIES)
			break;
		conflicts++;
		metrics_count_conflict_retry();
		if (!conflict_pause(c, conflicts, deadline))
			break;
	}

	switch (gr)
	{
		case GROUP_OK:
			break;
		case GROUP_RETRY:
			log_msg(LOG_LEVEL_WARNING,
					"connection %d: a group of %d failed with SQLSTATE %s %d time%s; answering 503",
					c->id, n, c->conflict, conflicts + 1, conflicts == 0 ? "" : "s");
			break;
		case GROUP_CONN_LOST:
			drop_connection(c, c->conn ? "connection lost during a transaction" : NULL);
			break;
		case GROUP_TIMEOUT:
			{
				char		why[128];

				snprintf(why, sizeof(why), "a group of %d took longer than %d ms", n,
						 config.query_timeout_ms + DEADLINE_GRACE_MS);
				drop_connection(c, why);
				break;
			}
		case GROUP_ERROR:
			drop_connection(c, "unexpected failure during a transaction");
			break;
	}

	for (int i = 0; i < n; i++)
	{
		if (items[i]->payload != NULL)
			payloads++;
		if (gr != GROUP_OK)
		{
			receipt_reset(items[i]);
			items[i]->http_status = 503;
		}
	}
	if (gr == GROUP_OK && payloads > 0)
		metrics_observe_group(payloads);

	for (int i = 0; i < n; i++)
		complete_receipt(items[i]);
}

static void *
db_thread_main(void *arg)
{
	DbConn	   *c = arg;
	Receipt    *group[MAX_GROUP_LIMIT];
	int			backoff_ms = 0;

	while (!is_stopping())
	{
		int			n;

		if (c->conn == NULL)
		{
			if (!db_connect(c, monotonic_now() + CONNECT_TIMEOUT_S))
			{
				int			jittered;

				backoff_ms = backoff_ms == 0 ? RECONNECT_MIN_MS :
					(backoff_ms * 2 > RECONNECT_MAX_MS ? RECONNECT_MAX_MS : backoff_ms * 2);
				/* +-20% so that the pool does not reconnect in lockstep */
				jittered = backoff_ms * 4 / 5 + (int) (rand_r(&c->seed) % (unsigned) (backoff_ms * 2 / 5 + 1));
				backoff_sleep(jittered);
				continue;
			}
			backoff_ms = 0;
			mark_healthy(c);
		}

		n = take_group(group, IDLE_CHECK_MS);
		if (n < 0)
			break;
		if (n == 0)
			check_idle_connection(c);	/* also after expiring receipts: harmless */
		else
			process_group(c, group, n);
	}

	if (c->conn != NULL)
	{
		PQfinish(c->conn);
		c->conn = NULL;
	}
	return NULL;
}

/* ----------------------------------------------------------------
 * Public interface
 * ----------------------------------------------------------------
 */

/* Create the queue and start one thread per pool connection. */
void
pool_start(void)
{
	pthread_condattr_t attr;
	int			rc;

	if ((rc = pthread_mutex_init(&pool.lock, NULL)) != 0 ||
		(rc = pthread_condattr_init(&attr)) != 0 ||
		(rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)) != 0 ||
		(rc = pthread_cond_init(&pool.work, &attr)) != 0 ||
		(rc = pthread_cond_init(&pool.stop, &attr)) != 0)
		fatal("could not initialize the connection pool: %s", strerror(rc));
	pthread_condattr_destroy(&attr);

	pool.nconns = config.db_connections;
	pool.conns = xcalloc((size_t) pool.nconns, sizeof(DbConn));
	for (int i = 0; i < pool.nconns; i++)
	{
		DbConn	   *c = &pool.conns[i];

		c->id = i + 1;
		c->seed = (unsigned int) (time(NULL) ^ (i * 7919));
		if ((rc = pthread_create(&c->thread, NULL, db_thread_main, c)) != 0)
			fatal("could not start database thread: %s", strerror(rc));
	}
}

/* Is there at least one working connection (and are we not stopping)? */
bool
pool_available(void)
{
	bool		ok;

	pthread_mutex_lock(&pool.lock);
	ok = !pool.stopping && pool.healthy > 0;
	pthread_mutex_unlock(&pool.lock);
	return ok;
}

/*
 * Queue a receipt.  Returns false, without queueing, when no connection is
 * healthy or the pool is stopping; the caller answers 503 itself.
 */
bool
pool_submit(Receipt *receipt)
{
	pthread_mutex_lock(&pool.lock);
	if (pool.stopping || pool.healthy == 0)
	{
		pthread_mutex_unlock(&pool.lock);
		return false;
	}
	receipt->next = NULL;
	receipt->enqueued_at = monotonic_now();
	if (pool.tail != NULL)
		pool.tail->next = receipt;
	else
		pool.head = receipt;
	pool.tail = receipt;
	pool.length++;
	pthread_cond_signal(&pool.work);
	pthread_mutex_unlock(&pool.lock);
	return true;
}

/*
 * Stop the connection threads (each finishes the group it is storing),
 * answer whatever is still queued with 503 and close the connections.
 */
void
pool_stop(void)
{
	Receipt    *orphans;

	pthread_mutex_lock(&pool.lock);
	pool.stopping = true;
	pthread_cond_broadcast(&pool.work);
	pthread_cond_broadcast(&pool.stop);
	pthread_mutex_unlock(&pool.lock);

	for (int i = 0; i < pool.nconns; i++)
		pthread_join(pool.conns[i].thread, NULL);

	pthread_mutex_lock(&pool.lock);
	orphans = pool.head;
	pool.head = pool.tail = NULL;
	pool.length = 0;
	pool.healthy = 0;
	pthread_mutex_unlock(&pool.lock);
	fail_list(orphans);

	free(pool.conns);
	pool.conns = NULL;
	pool.nconns = 0;
}

int
pool_healthy_connections(void)
{
	int			n;

	pthread_mutex_lock(&pool.lock);
	n = pool.healthy;
	pthread_mutex_unlock(&pool.lock);
	return n;
}

int
pool_queue_length(void)
{
	int			n;

	pthread_mutex_lock(&pool.lock);
	n = pool.length;
	pthread_mutex_unlock(&pool.lock);
	return n;
}
