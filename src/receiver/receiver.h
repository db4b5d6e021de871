/*-------------------------------------------------------------------------
 *
 * receiver.h
 *	  Declarations shared by the modules of sac_webhook_receiver, the HTTP
 *	  program that hands Magalu webhook notifications to
 *	  sac_webhook.receive() in PostgreSQL.
 *
 * The program is split by concern:
 *
 *	main.c		start-up, signal handling and orderly shutdown
 *	config.c	command-line options, environment fallbacks, --help
 *	auth.c		shared-secret check and Standard Webhooks HMAC signatures
 *	http.c		libmicrohttpd request handling, routing, responses, access log
 *	db.c		libpq connection pool, receipt queue and grouped transactions
 *	orderkey.c	the key that orders a group's receipts (no deadlocks)
 *	metrics.c	counters and histograms exported as Prometheus text
 *	util.c		logging, memory helpers, bounded string buffers, clocks
 *
 * src/receiver/receiver.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef SAC_WEBHOOK_RECEIVER_H
#define SAC_WEBHOOK_RECEIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

#define RECEIVER_NAME		"sac_webhook_receiver"
#define RECEIVER_VERSION	"0.1.0"

/* Upper bound of --max-group; see the comment in config.c. */
#define MAX_GROUP_LIMIT		64

#if defined(__GNUC__)
#define pg_attribute_printf(f, a) __attribute__((format(printf, f, a)))
#define pg_attribute_noreturn() __attribute__((noreturn))
#else
#define pg_attribute_printf(f, a)
#define pg_attribute_noreturn()
#endif

/* ----------------------------------------------------------------
 * Configuration (config.c)
 * ----------------------------------------------------------------
 */
typedef enum LogFormat
{
	LOG_FORMAT_TEXT,
	LOG_FORMAT_JSON
} LogFormat;

typedef struct ReceiverConfig
{
	char	   *listen;			/* HOST:PORT as given, for messages */
	struct sockaddr_storage listen_addr;
	socklen_t	listen_addrlen;
	char	   *conninfo;		/* libpq connection string; "" = defaults */
	size_t		max_body;		/* largest accepted request body, bytes */
	int			db_connections; /* size of the libpq pool */
	int			max_group;		/* most receipts stored per transaction */
	int			query_timeout_ms;	/* client-side bound for one group */
	int			max_connections;	/* concurrent HTTP connections */
	int			timeout_s;		/* idle/slow HTTP client timeout */
	int			http_threads;	/* libmicrohttpd worker threads */
	int			shutdown_timeout_s; /* grace period on SIGTERM */
	LogFormat	log_format;
	bool		quiet;			/* no per-request log lines */
} ReceiverConfig;

extern ReceiverConfig config;

extern void config_parse(int argc, char **argv);

/* ----------------------------------------------------------------
 * Authentication (auth.c)
 * ----------------------------------------------------------------
 */
extern void auth_set_secret(const char *secret);
extern bool auth_check_secret(const char *candidate, size_t len);
extern bool auth_add_hmac_secret(const char *whsec, const char **why);
extern int	auth_hmac_secret_count(void);
extern bool auth_verify_signature(const char *msg_id, const char *timestamp,
								  const char *signatures,
								  const char *body, size_t body_len,
								  time_t now);
extern void auth_cleanup(void);

/* ----------------------------------------------------------------
 * Database pool (db.c)
 *
 * A Receipt is one request waiting for the database.  The HTTP side owns
 * the memory; the pool only links it into its queue and fills in the
 * outcome.  Exactly one party completes a receipt: whoever removed it from
 * the queue.  After "complete" has been called the pool never touches the
 * receipt again.
 * ----------------------------------------------------------------
 */
typedef struct Receipt Receipt;

struct Receipt
{
	/* set by the submitter */
	const char *payload;		/* NUL-terminated body; NULL = health probe */
	double		enqueued_at;	/* monotonic seconds */
	void		(*complete) (Receipt *receipt);
	void	   *owner;			/* the submitter's context */

	/* outcome, set by the pool before complete() is called */
	int			http_status;	/* 200, 400 or 503 */
	bool		id_is_null;		/* receive() returned NULL */
	long long	inbox_id;		/* when http_status == 200 */
	char		sqlstate[6];	/* of the rejection, when 400 */
	char	   *errmsg;			/* malloc'd; when 400 */
	char	   *errdetail;		/* malloc'd or NULL; when 400 */

	/* private to the pool */
	Receipt    *next;
};

extern void pool_start(void);
extern bool pool_available(void);
extern bool pool_submit(Receipt *receipt);
extern void pool_stop(void);
extern int	pool_healthy_connections(void);
extern int	pool_queue_length(void);

/* ----------------------------------------------------------------
 * Lock-ordering key of a payload (orderkey.c)
 * ----------------------------------------------------------------
 */
#define ORDER_KEY_SIZE		168 /* "TENANT_ID RESOURCE" and a NUL */

extern bool payload_order_key(const char *payload, char *key, size_t keysize);

/* ----------------------------------------------------------------
 * HTTP server (http.c)
 * ----------------------------------------------------------------
 */
extern void http_start(void);
extern unsigned int http_bound_port(void);
extern void http_quiesce(void);
extern void http_stop(void);

/* ----------------------------------------------------------------
 * Metrics (metrics.c)
 * ----------------------------------------------------------------
 */
typedef struct StrBuf StrBuf;

typedef enum AbortReason
{
	ABORT_TIMEOUT,				/* the client was too slow */
	ABORT_CLOSED,				/* the client went away or broke the protocol */
	ABORT_SHUTDOWN,				/* the daemon stopped first */
	ABORT_NREASONS
} AbortReason;

extern void metrics_count_request(int http_status);
extern void metrics_count_aborted(AbortReason reason);
extern void metrics_observe_receive(double seconds);
extern void metrics_observe_group(int size);
extern void metrics_count_reconnect(void);
extern void metrics_count_conflict_retry(void);
extern void metrics_count_connect_failure(void);
extern void metrics_inflight_add(int delta);
extern long metrics_inflight(void);
/* The gauges /metrics shows that other modules own (metrics.c reads none) */
typedef struct MetricsGauges
{
	int			db_connections_healthy;
	int			db_connections;
	int			queue_length;
} MetricsGauges;

extern void metrics_render(StrBuf *out, const MetricsGauges *gauges);

/* ----------------------------------------------------------------
 * Utilities (util.c)
 * ----------------------------------------------------------------
 */
typedef enum LogLevel
{
	LOG_LEVEL_INFO,
	LOG_LEVEL_WARNING,
	LOG_LEVEL_ERROR
} LogLevel;

extern void log_msg(LogLevel level, const char *fmt,...) pg_attribute_printf(2, 3);
extern void log_write_line(const char *line, size_t len);
extern void fatal(const char *fmt,...) pg_attribute_printf(1, 2) pg_attribute_noreturn();

extern void *xmalloc(size_t size);
extern void *xcalloc(size_t n, size_t size);
extern void *xrealloc(void *ptr, size_t size);
extern char *xstrdup(const char *s);

extern double monotonic_now(void);
extern void format_utc_timestamp(char *buf, size_t bufsize);

/*
 * A growable string buffer with a hard upper bound, so that nothing a
 * client or the database sends can make it grow without limit.  Appends
 * that would pass the bound are dropped and set "truncated".
 */
struct StrBuf
{
	char	   *data;
	size_t		len;
	size_t		cap;
	size_t		max;
	bool		truncated;
};

extern void sb_init(StrBuf *sb, size_t initial, size_t max);
extern void sb_append(StrBuf *sb, const char *s, size_t n);
extern void sb_appends(StrBuf *sb, const char *s);
extern void sb_appendf(StrBuf *sb, const char *fmt,...) pg_attribute_printf(2, 3);
extern void sb_append_json_string(StrBuf *sb, const char *s);
extern void sb_free(StrBuf *sb);

#endif							/* SAC_WEBHOOK_RECEIVER_H */
