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
 *	first call (headers)  route, check method/secret/Content-Length
 *	PHASE_BODY			  accumulate the body, bounded by --max-body
 *	final call			  check HMAC, suspend, submit to the pool
 *	PHASE_WAITING		  resumed by the pool: queue the answer
 *	request_completed()	  log line, metrics, free
 *
 * src/receiver/http.c
 *
 *-------------------------------------------------------------------------
 */
#include "receiver.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
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

typedef struct Request
{
	struct MHD_Connection *connection;
	double		started;		/* monotonic seconds */
	Route		route;
	Phase		phase;
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
 * may well have put the secret somewhere else in it.
 */
static void
loggable_path(const char *url, char *out, size_t outsize)
{
	if (strncmp(url, WEBHOOK_PREFIX, strlen(WEBHOOK_PREFIX)) == 0)
		snprintf(out, outsize, "%s***", WEBHOOK_PREFIX);
	else if (strcmp(url, WEBHOOK_PATH) == 0 || strcmp(url, "/healthz") == 0 ||
			 strcmp(url, "/metrics") == 0 || strcmp(url, "/") == 0)
		snprintf(out, outsize, "%s", url);
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
 * can be rejected without reading the body.
 */
static enum MHD_Result
start_request(Request *req, const char *url, const char *method)
{
	struct MHD_Connection *conn = req->connection;
	bool		is_get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 ||
		strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;

	if (strcmp(url, WEBHOOK_PATH) == 0 ||
		strncmp(url, WEBHOOK_PREFIX, strlen(WEBHOOK_PREFIX)) == 0)
	{
		const char *length;

		req->route = ROUTE_WEBHOOK;
		if (strcmp(method, MHD_HTTP_METHOD_POST) != 0)
			return send_json(req, MHD_HTTP_METHOD_NOT_ALLOWED,
							 "{\"error\":\"method not allowed\"}", "POST", false);

		/* the same answer whatever was wrong, so it tells nothing */
		if (url[strlen(WEBHOOK_PATH)] == '/')
		{
			const char *secret = url + strlen(WEBHOOK_PREFIX);

			if (!auth_check_secret(secret, strlen(secret)))
				return send_json(req, MHD_HTTP_NOT_FOUND, "{\"error\":\"not found\"}",
								 NULL, false);
		}
		else
		{
			const char *secret = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
															 SECRET_HEADER);

			if (secret == NULL || !auth_check_secret(secret, strlen(secret)))
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

	if (strcmp(url, "/healthz") == 0)
	{
		req->route = ROUTE_HEALTHZ;
		if (!is_get)
			return send_response(req, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain; charset=utf-8",
								 "method not allowed\n", 19, "GET, HEAD", false);
		req->phase = PHASE_BODY;	/* answered once the request is complete */
		return MHD_YES;
	}

	if (strcmp(url, "/metrics") == 0)
	{
		StrBuf		sb;
		enum MHD_Result ret;

		if (!is_get)
			return send_response(req, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain; charset=utf-8",
								 "method not allowed\n", 19, "GET, HEAD", false);
		sb_init(&sb, 8192, 1024 * 1024);
		metrics_render(&sb);
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

static enum MHD_Result
access_handler(void *cls, struct MHD_Connection *connection,
			   const char *url, const char *method, const char *version,
			   const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	Request    *req = *con_cls;

	(void) cls;
	(void) version;

	if (req == NULL)
	{
		req = xcalloc(1, sizeof(Request));
		req->connection = connection;
		req->started = monotonic_now();
		req->route = ROUTE_OTHER;
		req->phase = PHASE_START;
		loggable_method(method, req->method, sizeof(req->method));
		loggable_path(url, req->path, sizeof(req->path));
		client_address(connection, req->client, sizeof(req->client));
		*con_cls = req;
		metrics_inflight_add(1);
		return start_request(req, url, method);
	}

	switch (req->phase)
	{
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
		case PHASE_START:
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

	(void) cls;
	(void) connection;
	if (req == NULL)
		return;
	*con_cls = NULL;

	if (req->status > 0)
		metrics_count_request(req->status);
	if (req->status == 0 || toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
	{
		AbortReason reason;

		switch (toe)
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

	metrics_inflight_add(-1);
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

	if (config.listen_addr.ss_family == AF_INET6)
	{
		flags |= MHD_USE_IPv6;
		port = ntohs(((struct sockaddr_in6 *) &config.listen_addr)->sin6_port);
	}
	else
		port = ntohs(((struct sockaddr_in *) &config.listen_addr)->sin_port);

	mhd = MHD_start_daemon(flags, port, NULL, NULL, access_handler, NULL,
						   MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, NULL,
						   MHD_OPTION_SOCK_ADDR, (struct sockaddr *) &config.listen_addr,
						   MHD_OPTION_THREAD_POOL_SIZE, (unsigned int) config.http_threads,
						   MHD_OPTION_CONNECTION_LIMIT, (unsigned int) config.max_connections,
						   MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) config.timeout_s,
						   MHD_OPTION_NOTIFY_COMPLETED, request_completed, NULL,
						   MHD_OPTION_END);
	if (mhd == NULL)
		fatal("could not listen on %s", config.listen);
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

/* Close every connection and free the daemon. */
void
http_stop(void)
{
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
