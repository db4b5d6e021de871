/*-------------------------------------------------------------------------
 *
 * http.c
 *	  The HTTP side of sac_webhook_receiver, on libmicrohttpd: routing,
 *	  authentication, body limits, responses and the access log.
 *
 * Threading model.  libmicrohttpd runs its own event loop in a small pool
 * of threads (--http-threads, epoll) and calls access_handler() for each
 * request.  Those threads must never wait for the database, or one slow
 * transaction would stall every connection they serve.  So once a request
 * body is complete, the handler suspends the connection
 * (MHD_suspend_connection, which needs MHD_ALLOW_SUSPEND_RESUME), hands a
 * Receipt to the database pool and returns at once.  The pool thread that
 * stores it calls MHD_resume_connection() after COMMIT; libmicrohttpd then
 * calls the handler again, which queues the answer.  Compared with a
 * thread per connection this keeps thousands of idle keep-alive
 * connections cheap and lets the pool, not the HTTP layer, decide how
 * much work reaches PostgreSQL at once.
 *
 * The connection is suspended *before* the receipt is queued, so a fast
 * database can never resume a connection that is not yet suspended.
 * Suspended connections do not time out in libmicrohttpd; the pool's own
 * deadlines (--query-timeout, immediate 503 when no connection is healthy)
 * bound how long one stays suspended.
 *
 * Request life cycle (the handler's "phase"):
 *	uri_logger()		  request line read: keep the path exactly as sent
 *	first call (headers)  route, check method/secret/Content-Length
 *	PHASE_BODY			  accumulate the body, bounded by --max-body
 *	final call			  check HMAC, suspend, submit to the pool
 *	PHASE_WAITING		  resumed by the pool: queue the answer
 *	request_completed()	  log line, metrics, free
 *
 * Routing and the secret use the path as the client sent it, before
 * libmicrohttpd percent-decodes it: "/webhooks%2fSECRET" or
 * "/webhooks/SECRET%00junk" must not pass for "/webhooks/SECRET".
 *
 * Slow clients.  libmicrohttpd's connection timeout only measures
 * inactivity, so a client sending one byte now and then could keep a
 * connection, and with enough of them every allowed connection, for ever.
 * Each connection is therefore tracked from its start (NOTIFY_CONNECTION),
 * and a sweeper thread closes any that has not delivered a complete
 * request within --timeout of the connection's start or of the end of its
 * previous answer.  Connections waiting for the database are exempt: the
 * pool bounds those.  When fewer than a quarter of --max-connections are
 * left, connections that have spent more than EVICT_AFTER_S on a request
 * (or idle) are closed too, so that a crowd of slow clients cannot keep
 * prompt ones out.  libmicrohttpd offers no way to close a connection
 * from another thread, so the sweeper shuts the socket down; the event
 * loop then sees the connection end and cleans up as usual.  The socket
 * is touched only under conns.lock, and a connection leaves the list (in
 * NOTIFY_CONNECTION's "closed" call) before libmicrohttpd closes its
 * descriptor, so a descriptor reused by a newer connection is never hit.
 *
 * src/receiver/http.c
 *
 *-------------------------------------------------------------------------
 */
#include "receiver.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <microhttpd.h>

#define WEBHOOK_PATH		"/webhooks"
#define WEBHOOK_PREFIX		"/webhooks/"
#define SECRET_HEADER		"X-Webhook-Secret"
#define RETRY_AFTER_S		"5"
#define MAX_RESPONSE		8192
#define SWEEP_INTERVAL_MS	200		/* how often deadlines are checked */
#define EVICT_AFTER_S		1.0		/* slowest request kept when short of
									 * connections */

typedef enum Route
{
	ROUTE_WEBHOOK,
	ROUTE_HEALTHZ,
	ROUTE_OTHER
} Route;

typedef enum Phase
{
	PHASE_START,
	PHASE_BODY,					/* reading the request body */
	PHASE_WAITING,				/* suspended, waiting for the pool */
	PHASE_ANSWERED				/* a response is queued */
} Phase;

/*
 * One TCP connection, as the sweeper sees it.  Every field is protected by
 * conns.lock.
 */
typedef struct Conn
{
	struct Conn *prev;
	struct Conn *next;
	MHD_socket	fd;
	double		since;			/* connection start or end of the last
								 * answer: the current request's clock */
	bool		busy;			/* handed to the pool, until answered */
	const char *cut;			/* why the sweeper closed it, or NULL */
} Conn;

typedef struct Request
{
	struct MHD_Connection *connection;
	Conn	   *conn;			/* NULL if untracked */
	double		started;		/* monotonic seconds */
	Route		route;
	Phase		phase;
	bool		in_flight;		/* counted in metrics_inflight() */
	char	   *raw_path;		/* as sent: before '?', not decoded */
	char		method[16];		/* for the log */
	char		path[32];		/* for the log, secret replaced by *** */
	char		client[64];		/* peer address, for the log */
	int			status;			/* HTTP status sent, 0 = none */
	const char *note;			/* extra word for the log, or NULL */

	char	   *body;
	size_t		body_len;
	size_t		body_cap;

	Receipt		receipt;
} Request;

static struct MHD_Daemon *mhd = NULL;
static MHD_socket listen_fd = MHD_INVALID_SOCKET;	/* ours once quiesced */
static bool shutting_down = false;	/* read with __atomic builtins */

/* the open connections and the sweeper thread that bounds them */
static struct
{
	pthread_mutex_t lock;
	pthread_cond_t wake;		/* stop the sweeper */
	Conn	   *head;
	int			count;
	bool		stop;
	bool		running;
	pthread_t	thread;
}			conns = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
};

/* ----------------------------------------------------------------
 * Responses
 * ----------------------------------------------------------------
 */

/*
 * Queue a response.  Every response says Cache-Control: no-store; during
 * shutdown it also asks the client to close the connection.
 */
static enum MHD_Result
send_response(Request *req, unsigned int status, const char *content_type,
			  const char *body, size_t len, const char *allow, bool retry_after)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;

	resp = MHD_create_response_from_buffer(len, (void *) body, MHD_RESPMEM_MUST_COPY);
	if (resp == NULL)
		return MHD_NO;
	if (MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type) != MHD_YES ||
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store") != MHD_YES ||
		(allow != NULL &&
		 MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow) != MHD_YES) ||
		(retry_after &&
		 MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, RETRY_AFTER_S) != MHD_YES) ||
		(__atomic_load_n(&shutting_down, __ATOMIC_RELAXED) &&
		 MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close") != MHD_YES))
	{
		MHD_destroy_response(resp);
		return MHD_NO;
	}
	ret = MHD_queue_response(req->connection, status, resp);
	MHD_destroy_response(resp);
	if (ret == MHD_YES)
	{
		req->status = (int) status;
		req->phase = PHASE_ANSWERED;
	}
	return ret;
}

static enum MHD_Result
send_json(Request *req, unsigned int status, const char *json, const char *allow,
		  bool retry_after)
{
	return send_response(req, status, "application/json", json, strlen(json),
						 allow, retry_after);
}

static enum MHD_Result
send_unavailable(Request *req)
{
	if (req->route == ROUTE_HEALTHZ)
		return send_response(req, MHD_HTTP_SERVICE_UNAVAILABLE,
							 "text/plain; charset=utf-8", "unavailable\n", 12, NULL, true);
	return send_json(req, MHD_HTTP_SERVICE_UNAVAILABLE,
					 "{\"error\":\"database unavailable\"}", NULL, true);
}

/* 400 with the database's (or our) explanation. */
static enum MHD_Result
send_invalid(Request *req, const char *message, const char *detail)
{
	StrBuf		sb;
	enum MHD_Result ret;

	sb_init(&sb, 256, MAX_RESPONSE);
	sb_appends(&sb, "{\"error\":\"invalid payload\",\"message\":");
	sb_append_json_string(&sb, message);
	sb_appends(&sb, ",\"detail\":");
	if (detail != NULL)
		sb_append_json_string(&sb, detail);
	else
		sb_appends(&sb, "null");
	sb_appends(&sb, "}");
	if (sb.truncated)			/* cannot happen: both texts are bounded */
		ret = send_json(req, MHD_HTTP_BAD_REQUEST, "{\"error\":\"invalid payload\"}", NULL, false);
	else
		ret = send_json(req, MHD_HTTP_BAD_REQUEST, sb.data, NULL, false);
	sb_free(&sb);
	return ret;
}

/* Answer a request the pool has finished with. */
static enum MHD_Result
answer_receipt(Request *req)
{
	Receipt    *r = &req->receipt;
	char		json[64];

	if (r->http_status == 200)
	{
		if (req->route == ROUTE_HEALTHZ)
			return send_response(req, MHD_HTTP_OK, "text/plain; charset=utf-8", "ok\n", 3,
								 NULL, false);
		if (r->id_is_null)
			snprintf(json, sizeof(json), "{\"id\":null}");
		else
			snprintf(json, sizeof(json), "{\"id\":%lld}", r->inbox_id);
		return send_json(req, MHD_HTTP_OK, json, NULL, false);
	}
	if (r->http_status == 400)
		return send_invalid(req, r->errmsg ? r->errmsg : "invalid payload", r->errdetail);
	return send_unavailable(req);
}

/* ----------------------------------------------------------------
 * Connection deadlines
 * ----------------------------------------------------------------
 */

/*
 * libmicrohttpd's connection notifications: track a connection from the
 * moment it is accepted until just before its socket is closed.
 */
static void
connection_notify(void *cls, struct MHD_Connection *connection,
				  void **socket_context, enum MHD_ConnectionNotificationCode code)
{
	Conn	   *c;

	(void) cls;
	if (code == MHD_CONNECTION_NOTIFY_STARTED)
	{
		const union MHD_ConnectionInfo *info;

		c = xcalloc(1, sizeof(Conn));
		info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
		c->fd = info != NULL ? info->connect_fd : MHD_INVALID_SOCKET;
		c->since = monotonic_now();
		pthread_mutex_lock(&conns.lock);
		c->next = conns.head;
		if (conns.head != NULL)
			conns.head->prev = c;
		conns.head = c;
		conns.count++;
		pthread_mutex_unlock(&conns.lock);
		*socket_context = c;
	}
	else if (code == MHD_CONNECTION_NOTIFY_CLOSED && *socket_context != NULL)
	{
		c = *socket_context;
		pthread_mutex_lock(&conns.lock);
		if (c->prev != NULL)
			c->prev->next = c->next;
		else
			conns.head = c->next;
		if (c->next != NULL)
			c->next->prev = c->prev;
		conns.count--;
		pthread_mutex_unlock(&conns.lock);
		free(c);
		*socket_context = NULL;
	}
}

/* The request is complete and goes to the pool: its deadline stops. */
static void
conn_set_busy(Conn *c)
{
	if (c == NULL)
		return;
	pthread_mutex_lock(&conns.lock);
	c->busy = true;
	pthread_mutex_unlock(&conns.lock);
}

/*
 * A request has ended: the next one's clock starts now.  Returns why the
 * sweeper closed the connection, or NULL.
 */
static const char *
conn_request_done(Conn *c)
{
	const char *cut;

	if (c == NULL)
		return NULL;
	pthread_mutex_lock(&conns.lock);
	c->busy = false;
	c->since = monotonic_now();
	cut = c->cut;
	pthread_mutex_unlock(&conns.lock);
	return cut;
}

/*
 * The sweeper: every SWEEP_INTERVAL_MS, shut down the sockets of
 * connections past their deadline (see the file header).
 */
static void *
sweeper_main(void *arg)
{
	int			crowded = config.max_connections - config.max_connections / 4;

	(void) arg;
	pthread_mutex_lock(&conns.lock);
	while (!conns.stop)
	{
		struct timespec until;
		double		now;
		bool		evict;

		clock_gettime(CLOCK_MONOTONIC, &until);
		until.tv_nsec += SWEEP_INTERVAL_MS * 1000000L;
		if (until.tv_nsec >= 1000000000L)
		{
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&conns.wake, &conns.lock, &until);
		if (conns.stop)
			break;

		now = monotonic_now();
		evict = conns.count >= crowded;
		for (Conn *c = conns.head; c != NULL; c = c->next)
		{
			double		age = now - c->since;

			if (c->busy || c->cut != NULL || c->fd == MHD_INVALID_SOCKET)
				continue;
			if (age >= config.timeout_s)
				c->cut = "slow-request";
			else if (evict && age >= EVICT_AFTER_S)
				c->cut = "evicted";
			else
				continue;
			/* ENOTCONN: the peer is gone already, which is as good */
			if (shutdown(c->fd, SHUT_RDWR) != 0 && errno != ENOTCONN)
				log_msg(LOG_LEVEL_WARNING, "could not shut down a slow connection: %s",
						strerror(errno));
		}
	}
	pthread_mutex_unlock(&conns.lock);
	return NULL;
}

/* ----------------------------------------------------------------
 * Handing requests to the database pool
 * ----------------------------------------------------------------
 */

/* Called by a pool thread when the receipt has its outcome. */
static void
receipt_done(Receipt *receipt)
{
	Request    *req = receipt->owner;

	MHD_resume_connection(req->connection);
}

/*
 * Suspend the connection and queue the receipt; the answer is sent when
 * the pool resumes us.  With no healthy database connection, answer 503
 * at once.
 */
static enum MHD_Result
submit_receipt(Request *req, const char *payload)
{
	req->receipt.payload = payload;
	req->receipt.complete = receipt_done;
	req->receipt.owner = req;

	if (!pool_available())
		return send_unavailable(req);

	conn_set_busy(req->conn);
	MHD_suspend_connection(req->connection);
	req->phase = PHASE_WAITING;
	if (!pool_submit(&req->receipt))
	{
		/* the last connection broke in between: answer 503 after resuming */
		req->receipt.http_status = 503;
		MHD_resume_connection(req->connection);
	}
	return MHD_YES;
}

/* ----------------------------------------------------------------
 * Request handling
 * ----------------------------------------------------------------
 */

/*
 * The path as it may appear in the log: never the secret.  Paths other
 * than ours are replaced entirely, since a sender that got the URL wrong
 * may well have put the secret somewhere else in it (perhaps encoded).
 */
static void
loggable_path(const char *path, char *out, size_t outsize)
{
	if (strncmp(path, WEBHOOK_PREFIX, strlen(WEBHOOK_PREFIX)) == 0)
		snprintf(out, outsize, "%s***", WEBHOOK_PREFIX);
	else if (strcmp(path, WEBHOOK_PATH) == 0 || strcmp(path, "/healthz") == 0 ||
			 strcmp(path, "/metrics") == 0 || strcmp(path, "/") == 0)
		snprintf(out, outsize, "%s", path);
	else
		snprintf(out, outsize, "/***");
}

static void
loggable_method(const char *method, char *out, size_t outsize)
{
	size_t		i;

	for (i = 0; i + 1 < outsize && method[i]; i++)
		out[i] = (method[i] >= 'A' && method[i] <= 'Z') ? method[i] : '?';
	out[i] = '\0';
}

static void
client_address(struct MHD_Connection *connection, char *out, size_t outsize)
{
	const union MHD_ConnectionInfo *info;
	socklen_t	len;

	snprintf(out, outsize, "-");
	info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	if (info == NULL || info->client_addr == NULL)
		return;
	len = info->client_addr->sa_family == AF_INET6 ?
		sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
	if (getnameinfo(info->client_addr, len, out, (socklen_t) outsize, NULL, 0,
					NI_NUMERICHOST) != 0)
		snprintf(out, outsize, "-");
}

/*
 * First call for a request: the headers are in.  Route it and reject what
 * can be rejected without reading the body.  Routing uses the path exactly
 * as sent (req->raw_path), so an encoded character never matches.
 */
static enum MHD_Result
start_request(Request *req, const char *method)
{
	struct MHD_Connection *conn = req->connection;
	const char *path = req->raw_path;
	bool		is_get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 ||
		strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;

	if (strcmp(path, WEBHOOK_PATH) == 0 ||
		strncmp(path, WEBHOOK_PREFIX, strlen(WEBHOOK_PREFIX)) == 0)
	{
		const char *length;

		req->route = ROUTE_WEBHOOK;
		if (strcmp(method, MHD_HTTP_METHOD_POST) != 0)
			return send_json(req, MHD_HTTP_METHOD_NOT_ALLOWED,
							 "{\"error\":\"method not allowed\"}", "POST", false);

		/* the same answer whatever was wrong, so it tells nothing */
		if (path[strlen(WEBHOOK_PATH)] == '/')
		{
			const char *secret = path + strlen(WEBHOOK_PREFIX);

			if (!auth_check_secret(secret, strlen(secret)))
				return send_json(req, MHD_HTTP_NOT_FOUND, "{\"error\":\"not found\"}",
								 NULL, false);
		}
		else
		{
			const char *secret = NULL;
			size_t		secret_len = 0;

			/* with its length as received: a NUL in it must not cut it short */
			if (MHD_lookup_connection_value_n(conn, MHD_HEADER_KIND,
											  SECRET_HEADER, strlen(SECRET_HEADER),
											  &secret, &secret_len) != MHD_YES ||
				!auth_check_secret(secret, secret_len))
				return send_json(req, MHD_HTTP_UNAUTHORIZED, "{\"error\":\"unauthorized\"}",
								 NULL, false);
		}

		/* refuse an announced oversize body before reading any of it */
		length = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
											 MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (length != NULL)
		{
			char	   *end;
			unsigned long long n;

			errno = 0;
			n = strtoull(length, &end, 10);
			if (errno != 0 || end == length || *end != '\0' || n > config.max_body)
			{
				req->note = "content-length";
				return send_json(req, MHD_HTTP_CONTENT_TOO_LARGE,
								 "{\"error\":\"payload too large\"}", NULL, false);
			}
			req->body_cap = (size_t) n + 1;
		}
		else
			req->body_cap = 4096 < config.max_body + 1 ? 4096 : config.max_body + 1;
		req->body = xmalloc(req->body_cap);
		req->phase = PHASE_BODY;
		return MHD_YES;
	}

	if (strcmp(path, "/healthz") == 0)
	{
		req->route = ROUTE_HEALTHZ;
		if (!is_get)
			return send_response(req, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain; charset=utf-8",
								 "method not allowed\n", 19, "GET, HEAD", false);
		req->phase = PHASE_BODY;	/* answered once the request is complete */
		return MHD_YES;
	}

	if (strcmp(path, "/metrics") == 0)
	{
		StrBuf		sb;
		enum MHD_Result ret;
		MetricsGauges gauges;

		if (!is_get)
			return send_response(req, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain; charset=utf-8",
								 "method not allowed\n", 19, "GET, HEAD", false);
		gauges.db_connections_healthy = pool_healthy_connections();
		gauges.db_connections = config.db_connections;
		gauges.queue_length = pool_queue_length();
		sb_init(&sb, 8192, 1024 * 1024);
		metrics_render(&sb, &gauges);
		ret = send_response(req, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8",
							sb.data, sb.len, NULL, false);
		sb_free(&sb);
		return ret;
	}

	return send_json(req, MHD_HTTP_NOT_FOUND, "{\"error\":\"not found\"}", NULL, false);
}

/*
 * Append a piece of the body.  Returns false to have libmicrohttpd close
 * the connection: it cannot queue a response in the middle of an upload,
 * and reading an unbounded chunked body to the end just to answer 413
 * would hand the sender our bandwidth.
 */
static bool
append_body(Request *req, const char *data, size_t len)
{
	if (req->route != ROUTE_WEBHOOK)
	{
		/* a body sent to /healthz is ignored, but still bounded */
		req->body_len += len;
		if (req->body_len > config.max_body)
		{
			req->note = "body-too-large";
			return false;
		}
		return true;
	}
	if (len > config.max_body - req->body_len)
	{
		req->note = "body-too-large";
		return false;
	}
	if (monotonic_now() - req->started > config.timeout_s)
	{
		req->note = "slow-body";
		return false;
	}
	if (req->body_len + len + 1 > req->body_cap)
	{
		size_t		cap = req->body_cap;

		while (cap < req->body_len + len + 1)
			cap *= 2;
		if (cap > config.max_body + 1)
			cap = config.max_body + 1;
		req->body = xrealloc(req->body, cap);
		req->body_cap = cap;
	}
	memcpy(req->body + req->body_len, data, len);
	req->body_len += len;
	return true;
}

/* Final call: the whole request is in.  Validate and hand it over. */
static enum MHD_Result
finish_request(Request *req)
{
	if (req->route == ROUTE_HEALTHZ)
		return submit_receipt(req, NULL);

	req->body[req->body_len] = '\0';
	if (memchr(req->body, '\0', req->body_len) != NULL)
		return send_invalid(req, "payload contains a NUL byte", NULL);

	if (auth_hmac_secret_count() > 0)
	{
		struct MHD_Connection *conn = req->connection;

		if (!auth_verify_signature(MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "webhook-id"),
								   MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "webhook-timestamp"),
								   MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "webhook-signature"),
								   req->body, req->body_len, time(NULL)))
		{
			req->note = "signature";
			return send_json(req, MHD_HTTP_UNAUTHORIZED, "{\"error\":\"unauthorized\"}",
							 NULL, false);
		}
	}
	return submit_receipt(req, req->body);
}

/*
 * libmicrohttpd's URI log callback, called once the request line is in and
 * before the path is decoded.  The Request starts here, so that the path
 * can be kept exactly as sent; libmicrohttpd hands the return value to
 * access_handler() and request_completed() as *con_cls.
 */
static void *
uri_logger(void *cls, const char *uri, struct MHD_Connection *connection)
{
	Request    *req = xcalloc(1, sizeof(Request));
	const union MHD_ConnectionInfo *info;
	size_t		len = strcspn(uri, "?");

	(void) cls;
	req->connection = connection;
	req->started = monotonic_now();
	req->route = ROUTE_OTHER;
	req->phase = PHASE_START;
	req->raw_path = xmalloc(len + 1);
	memcpy(req->raw_path, uri, len);
	req->raw_path[len] = '\0';
	info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	req->conn = info != NULL ? info->socket_context : NULL;
	snprintf(req->method, sizeof(req->method), "-");
	loggable_path(req->raw_path, req->path, sizeof(req->path));
	client_address(connection, req->client, sizeof(req->client));
	return req;
}

static enum MHD_Result
access_handler(void *cls, struct MHD_Connection *connection,
			   const char *url, const char *method, const char *version,
			   const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	Request    *req = *con_cls;

	(void) cls;
	(void) connection;
	(void) url;					/* decoded: req->raw_path is used instead */
	(void) version;

	if (req == NULL)
	{
		/* uri_logger() runs for every request; this cannot happen */
		log_msg(LOG_LEVEL_ERROR, "request without a request record");
		return MHD_NO;
	}

	switch (req->phase)
	{
		case PHASE_START:
			loggable_method(method, req->method, sizeof(req->method));
			req->in_flight = true;
			metrics_inflight_add(1);
			return start_request(req, method);
		case PHASE_BODY:
			if (*upload_data_size > 0)
			{
				if (!append_body(req, upload_data, *upload_data_size))
					return MHD_NO;
				*upload_data_size = 0;
				return MHD_YES;
			}
			return finish_request(req);
		case PHASE_WAITING:
			return answer_receipt(req);
		case PHASE_ANSWERED:
			break;
	}
	return MHD_NO;
}

/* ----------------------------------------------------------------
 * Completion: access log, metrics, cleanup
 * ----------------------------------------------------------------
 */

static void
log_request(const Request *req, const char *aborted)
{
	char		ts[40];
	char		status[12];
	char		id[32];
	double		ms = (monotonic_now() - req->started) * 1000.0;
	StrBuf		sb;
	bool		has_id = (req->status == 200 && req->route == ROUTE_WEBHOOK &&
						  !req->receipt.id_is_null);

	format_utc_timestamp(ts, sizeof(ts));
	if (req->status > 0)
		snprintf(status, sizeof(status), "%d", req->status);
	else
		snprintf(status, sizeof(status), "-");
	if (has_id)
		snprintf(id, sizeof(id), "%lld", req->receipt.inbox_id);
	else
		snprintf(id, sizeof(id), "-");

	sb_init(&sb, 256, 2048);
	if (config.log_format == LOG_FORMAT_JSON)
	{
		sb_appendf(&sb, "{\"ts\":\"%s\",\"level\":\"info\",\"msg\":\"request\","
				   "\"method\":\"%s\",\"path\":\"%s\",\"status\":%s,\"ms\":%.1f,"
				   "\"id\":%s,\"client\":\"%s\"",
				   ts, req->method, req->path,
				   req->status > 0 ? status : "null", ms,
				   has_id ? id : "null", req->client);
		if (req->receipt.sqlstate[0])
			sb_appendf(&sb, ",\"sqlstate\":\"%s\"", req->receipt.sqlstate);
		if (req->note)
			sb_appendf(&sb, ",\"note\":\"%s\"", req->note);
		if (aborted)
			sb_appendf(&sb, ",\"aborted\":\"%s\"", aborted);
		sb_appends(&sb, "}\n");
	}
	else
	{
		sb_appendf(&sb, "%s %s %s %s %.1fms id=%s client=%s",
				   ts, req->method, req->path, status, ms, id, req->client);
		if (req->receipt.sqlstate[0])
			sb_appendf(&sb, " sqlstate=%s", req->receipt.sqlstate);
		if (req->note)
			sb_appendf(&sb, " note=%s", req->note);
		if (aborted)
			sb_appendf(&sb, " aborted=%s", aborted);
		sb_appends(&sb, "\n");
	}
	log_write_line(sb.data, sb.len);
	sb_free(&sb);
}

static void
request_completed(void *cls, struct MHD_Connection *connection,
				  void **con_cls, enum MHD_RequestTerminationCode toe)
{
	Request    *req = *con_cls;
	const char *aborted = NULL;
	const char *cut;

	(void) cls;
	(void) connection;
	if (req == NULL)
		return;
	*con_cls = NULL;

	cut = conn_request_done(req->conn);
	if (cut != NULL && req->note == NULL)
		req->note = cut;
	if (req->status > 0)
		metrics_count_request(req->status);
	if (req->status == 0 || toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
	{
		AbortReason reason;

		switch (cut != NULL ? MHD_REQUEST_TERMINATED_TIMEOUT_REACHED : toe)
		{
			case MHD_REQUEST_TERMINATED_TIMEOUT_REACHED:
				reason = ABORT_TIMEOUT;
				aborted = "timeout";
				break;
			case MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN:
				reason = ABORT_SHUTDOWN;
				aborted = "shutdown";
				break;
			default:
				reason = ABORT_CLOSED;
				aborted = "closed";
				break;
		}
		if (req->status == 0)
			metrics_count_aborted(reason);
	}
	if (!config.quiet)
		log_request(req, aborted);

	if (req->in_flight)
		metrics_inflight_add(-1);
	free(req->raw_path);
	free(req->body);
	free(req->receipt.errmsg);
	free(req->receipt.errdetail);
	free(req);
}

/*
 * libmicrohttpd's own messages.  Some quote the request URL, so anything
 * after "/webhooks/" is masked before the message is logged.
 */
static void
mhd_logger(void *cls, const char *fmt, va_list ap)
{
	char		msg[1024];
	char	   *p;
	size_t		len;

	(void) cls;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	p = msg;
	while ((p = strstr(p, WEBHOOK_PREFIX)) != NULL)
	{
		char	   *start = p + strlen(WEBHOOK_PREFIX);
		char	   *end = start + strcspn(start, " '\"`\r\n");

		if (end - start >= 3)
		{
			memcpy(start, "***", 3);
			memmove(start + 3, end, strlen(end) + 1);
		}
		else
			memset(start, '*', (size_t) (end - start));
		p = start;
	}
	len = strlen(msg);
	while (len > 0 && (msg[len - 1] == '\n' || msg[len - 1] == ' '))
		msg[--len] = '\0';

	/*
	 * This one follows our own decision to cut off an oversize or too slow
	 * body (append_body()), which the request's log line already records.
	 */
	if (strncmp(msg, "Application reported internal error", 35) == 0)
		return;
	log_msg(LOG_LEVEL_WARNING, "libmicrohttpd: %s", msg);
}

/* ----------------------------------------------------------------
 * Daemon control
 * ----------------------------------------------------------------
 */

/* Start listening; exits on failure. */
void
http_start(void)
{
	unsigned int flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME |
		MHD_USE_ERROR_LOG;
	uint16_t	port;
	pthread_condattr_t attr;
	int			rc;

	if (config.listen_addr.ss_family == AF_INET6)
	{
		flags |= MHD_USE_IPv6;
		port = ntohs(((struct sockaddr_in6 *) &config.listen_addr)->sin6_port);
	}
	else
		port = ntohs(((struct sockaddr_in *) &config.listen_addr)->sin_port);

	if ((rc = pthread_condattr_init(&attr)) != 0 ||
		(rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)) != 0 ||
		(rc = pthread_cond_init(&conns.wake, &attr)) != 0)
		fatal("could not initialize the connection sweeper: %s", strerror(rc));
	pthread_condattr_destroy(&attr);

	/*
	 * CONNECTION_TIMEOUT closes idle connections; the sweeper bounds the
	 * rest (see the file header).
	 */
	mhd = MHD_start_daemon(flags, port, NULL, NULL, access_handler, NULL,
						   MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, NULL,
						   MHD_OPTION_SOCK_ADDR, (struct sockaddr *) &config.listen_addr,
						   MHD_OPTION_THREAD_POOL_SIZE, (unsigned int) config.http_threads,
						   MHD_OPTION_CONNECTION_LIMIT, (unsigned int) config.max_connections,
						   MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) config.timeout_s,
						   MHD_OPTION_URI_LOG_CALLBACK, uri_logger, NULL,
						   MHD_OPTION_NOTIFY_CONNECTION, connection_notify, NULL,
						   MHD_OPTION_NOTIFY_COMPLETED, request_completed, NULL,
						   MHD_OPTION_END);
	if (mhd == NULL)
		fatal("could not listen on %s", config.listen);

	if ((rc = pthread_create(&conns.thread, NULL, sweeper_main, NULL)) != 0)
		fatal("could not start the connection sweeper: %s", strerror(rc));
	conns.running = true;
}

/* The TCP port actually bound (differs from --listen when that said 0). */
unsigned int
http_bound_port(void)
{
	const union MHD_DaemonInfo *info;

	if (mhd == NULL)
		return 0;
	info = MHD_get_daemon_info(mhd, MHD_DAEMON_INFO_BIND_PORT);
	return info != NULL ? info->port : 0;
}

/*
 * Stop accepting connections.  Connections already open are served until
 * http_stop(); their responses now carry "Connection: close".
 */
void
http_quiesce(void)
{
	MHD_socket	fd;

	__atomic_store_n(&shutting_down, true, __ATOMIC_RELAXED);
	if (mhd == NULL)
		return;
	fd = MHD_quiesce_daemon(mhd);
	if (fd != MHD_INVALID_SOCKET)
	{
		listen_fd = fd;
		/*
		 * libmicrohttpd's threads may still hold the descriptor, so it is
		 * closed only after MHD_stop_daemon(); shutting it down now makes
		 * new connection attempts fail at once instead of queueing.
		 */
		if (shutdown(fd, SHUT_RDWR) != 0 && errno != ENOTCONN)
			log_msg(LOG_LEVEL_WARNING, "could not shut down the listening socket: %s",
					strerror(errno));
	}
}

/* Stop the sweeper, close every connection and free the daemon. */
void
http_stop(void)
{
	if (conns.running)
	{
		pthread_mutex_lock(&conns.lock);
		conns.stop = true;
		pthread_cond_signal(&conns.wake);
		pthread_mutex_unlock(&conns.lock);
		pthread_join(conns.thread, NULL);
		conns.running = false;
	}
	if (mhd == NULL)
		return;
	MHD_stop_daemon(mhd);
	mhd = NULL;
	if (listen_fd != MHD_INVALID_SOCKET)
	{
		close(listen_fd);
		listen_fd = MHD_INVALID_SOCKET;
	}
}
