/*-------------------------------------------------------------------------
 *
 * config.c
 *	  Command-line options of sac_webhook_receiver, their environment
 *	  variable fallbacks, validation and the --help text.
 *
 * Precedence: a command-line option wins over its environment variable,
 * which wins over the built-in default.  Secrets given on the command line
 * are overwritten in argv once copied, so they disappear from ps(1) and
 * /proc/PID/cmdline (though they were briefly visible); --secret-file or
 * the environment keeps them out of there entirely.
 *
 * src/receiver/config.c
 *
 *-------------------------------------------------------------------------
 */
#include "receiver.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#define DEFAULT_LISTEN			"127.0.0.1:8080"
#define DEFAULT_MAX_BODY		65536
#define DEFAULT_DB_CONNECTIONS	4
#define DEFAULT_MAX_GROUP		32
#define DEFAULT_QUERY_TIMEOUT	2000
#define DEFAULT_MAX_CONNECTIONS 256
#define DEFAULT_TIMEOUT			10
#define DEFAULT_HTTP_THREADS	2
#define DEFAULT_SHUTDOWN		10

#define MAX_SECRET_LEN			1024

ReceiverConfig config = {
	.log_format = LOG_FORMAT_TEXT,
};

enum
{
	OPT_LISTEN = 256,
	OPT_DB,
	OPT_SECRET,
	OPT_SECRET_FILE,
	OPT_HMAC_SECRET,
	OPT_HMAC_SECRET_FILE,
	OPT_MAX_BODY,
	OPT_DB_CONNECTIONS,
	OPT_MAX_GROUP,
	OPT_QUERY_TIMEOUT,
	OPT_MAX_CONNECTIONS,
	OPT_TIMEOUT,
	OPT_HTTP_THREADS,
	OPT_SHUTDOWN_TIMEOUT,
	OPT_LOG_FORMAT,
	OPT_QUIET,
	OPT_HELP,
	OPT_VERSION
};

static const struct option long_options[] = {
	{"listen", required_argument, NULL, OPT_LISTEN},
	{"db", required_argument, NULL, OPT_DB},
	{"secret", required_argument, NULL, OPT_SECRET},
	{"secret-file", required_argument, NULL, OPT_SECRET_FILE},
	{"hmac-secret", required_argument, NULL, OPT_HMAC_SECRET},
	{"hmac-secret-file", required_argument, NULL, OPT_HMAC_SECRET_FILE},
	{"max-body", required_argument, NULL, OPT_MAX_BODY},
	{"db-connections", required_argument, NULL, OPT_DB_CONNECTIONS},
	{"max-group", required_argument, NULL, OPT_MAX_GROUP},
	{"query-timeout", required_argument, NULL, OPT_QUERY_TIMEOUT},
	{"max-connections", required_argument, NULL, OPT_MAX_CONNECTIONS},
	{"timeout", required_argument, NULL, OPT_TIMEOUT},
	{"http-threads", required_argument, NULL, OPT_HTTP_THREADS},
	{"shutdown-timeout", required_argument, NULL, OPT_SHUTDOWN_TIMEOUT},
	{"log-format", required_argument, NULL, OPT_LOG_FORMAT},
	{"quiet", no_argument, NULL, OPT_QUIET},
	{"help", no_argument, NULL, OPT_HELP},
	{"version", no_argument, NULL, OPT_VERSION},
	{NULL, 0, NULL, 0}
};

static void
usage(void)
{
	printf(
		   "NAME\n"
		   "    " RECEIVER_NAME " - receive Magalu SAC webhooks into PostgreSQL\n"
		   "\n"
		   "SYNOPSIS\n"
		   "    " RECEIVER_NAME " --listen HOST:PORT --db CONNINFO --secret SECRET [OPTION]...\n"
		   "\n"
		   "DESCRIPTION\n"
		   "    Accepts webhook notifications over HTTP and stores each one by calling\n"
		   "    sac_webhook.receive(payload) in PostgreSQL.  The database decides whether a\n"
		   "    payload is valid.  A request is answered 200 only after the transaction that\n"
		   "    stored it has committed, so a 2xx answer means the notification is durable.\n"
		   "\n"
		   "    Requests that arrive while all database connections are busy are stored\n"
		   "    together in one transaction (up to --max-group), each in its own savepoint so\n"
		   "    that one rejected payload does not affect the others.  Each transaction\n"
		   "    takes its rows in one global order (by tenant and resource), so concurrent\n"
		   "    ones cannot deadlock each other; one that still hits a deadlock or a\n"
		   "    serialization failure is rolled back and run again, a few times at most.\n"
		   "\n"
		   "    Each option may also be set by the environment variable shown with it; the\n"
		   "    command line wins.  Durations are whole numbers.\n"
		   "\n"
		   "OPTIONS\n"
		   "    --listen HOST:PORT    [SAC_WEBHOOK_LISTEN]\n"
		   "        Address and TCP port to listen on.  HOST may be a name, an IPv4 address,\n"
		   "        or an IPv6 address in brackets ([::1]:8080); \"*\" or an empty HOST means\n"
		   "        all IPv4 interfaces.  Default: " DEFAULT_LISTEN ".  Put a TLS-terminating\n"
		   "        proxy in front when listening beyond the local host.\n"
		   "\n"
		   "    --db CONNINFO         [SAC_WEBHOOK_DB]\n"
		   "        libpq connection string or URI, e.g. \"host=/run/postgresql dbname=app\n"
		   "        user=sac_receiver\".  Unset parts come from the usual PG* environment\n"
		   "        variables; keep passwords in ~/.pgpass or PGPASSFILE.  The login role\n"
		   "        should be a member of sac_webhook_receiver, which may only execute\n"
		   "        sac_webhook.receive().  Default: libpq's defaults.\n"
		   "\n"
		   "    --secret SECRET       [SAC_WEBHOOK_SECRET]\n"
		   "    --secret-file PATH    [SAC_WEBHOOK_SECRET_FILE]\n"
		   "        The shared secret (required).  Senders post to /webhooks/SECRET, or to\n"
		   "        /webhooks with the header \"X-Webhook-Secret: SECRET\".  Use at least 16\n"
		   "        URL-safe characters, e.g. the output of \"openssl rand -hex 32\".  The file\n"
		   "        form reads the first line and keeps the secret out of ps(1); a secret\n"
		   "        given with --secret is blanked out of the process title once read.\n"
		   "\n"
		   "    --hmac-secret SECRET  [SAC_WEBHOOK_HMAC_SECRETS, comma-separated]\n"
		   "    --hmac-secret-file PATH  [SAC_WEBHOOK_HMAC_SECRETS_FILE]\n"
		   "        Also require a Standard Webhooks signature made with this secret\n"
		   "        (\"whsec_\" followed by base64).  Repeat the option, or list one secret\n"
		   "        per line in the file, to accept several while rotating.  A request must\n"
		   "        carry webhook-id, webhook-timestamp and webhook-signature headers; the\n"
		   "        signature is HMAC-SHA256 over \"ID.TIMESTAMP.BODY\", sent as one or more\n"
		   "        space-separated \"v1,BASE64\" entries, and the timestamp must be within\n"
		   "        five minutes of this host's clock.  Otherwise the answer is 401.\n"
		   "        Default: no signature required.\n"
		   "\n"
		   "    --max-body BYTES      [SAC_WEBHOOK_MAX_BODY]\n"
		   "        Largest request body accepted.  A larger Content-Length is answered 413\n"
		   "        before the body is read; a chunked body is cut off (connection closed)\n"
		   "        as soon as it passes the limit.  Default: %d.\n"
		   "\n"
		   "    --db-connections N    [SAC_WEBHOOK_DB_CONNECTIONS]\n"
		   "        Size of the database connection pool; each connection stores one group\n"
		   "        at a time.  Broken connections are re-established in the background\n"
		   "        with exponential backoff (0.1 s doubling to 2 s).  Default: %d.\n"
		   "\n"
		   "    --max-group N         [SAC_WEBHOOK_MAX_GROUP]\n"
		   "        Most requests stored in one transaction.  Groups form only from requests\n"
		   "        that are already waiting; nothing is delayed to fill a group.  At most\n"
		   "        %d: every stored request uses a subtransaction, and PostgreSQL caches\n"
		   "        only 64 per session before snapshots slow down for the whole cluster.\n"
		   "        Default: %d.\n"
		   "\n"
		   "    --query-timeout MS    [SAC_WEBHOOK_QUERY_TIMEOUT]\n"
		   "        Bounds the database's time.  It is the session's statement_timeout: a\n"
		   "        slower receive() is cancelled and its request answered 503, while the\n"
		   "        rest of its group is stored.  A group still unfinished 0.5 s after it\n"
		   "        costs the connection (dropped; the server rolls back) and every\n"
		   "        request of the group is answered 503.  It is also the longest a request\n"
		   "        may wait in the queue for a free connection before it is answered 503.\n"
		   "        Default: %d.\n"
		   "\n"
		   "    --max-connections N   [SAC_WEBHOOK_MAX_CONNECTIONS]\n"
		   "        Most simultaneous HTTP connections; more wait to be accepted.  When\n"
		   "        fewer than a quarter are left, connections that have spent more than\n"
		   "        a second on their request (or idle) are closed to make room.\n"
		   "        Default: %d.\n"
		   "\n"
		   "    --timeout SECONDS     [SAC_WEBHOOK_TIMEOUT]\n"
		   "        The longest a connection may take to deliver a whole request, headers\n"
		   "        and body, counted from the connection's start or from the end of its\n"
		   "        previous answer; also the longest it may stay idle.  However slowly a\n"
		   "        client trickles data, it is closed then.  Time spent waiting for the\n"
		   "        database does not count (see --query-timeout).  Default: %d.\n"
		   "\n"
		   "    --http-threads N      [SAC_WEBHOOK_HTTP_THREADS]\n"
		   "        Threads running the HTTP event loop.  They never wait for the database,\n"
		   "        so a few are enough.  Default: %d.\n"
		   "\n"
		   "    --shutdown-timeout SECONDS  [SAC_WEBHOOK_SHUTDOWN_TIMEOUT]\n"
		   "        On SIGTERM or SIGINT, how long to wait for requests in flight before\n"
		   "        answering what is left with 503.  Default: %d.\n"
		   "\n"
		   "    --log-format text|json  [SAC_WEBHOOK_LOG_FORMAT]\n"
		   "        Format of the lines written to standard error.  Default: text.\n"
		   "\n"
		   "    --quiet               [SAC_WEBHOOK_QUIET=1]\n"
		   "        Do not log one line per request; warnings and errors are still logged.\n"
		   "\n"
		   "    --help     Show this help and exit.\n"
		   "    --version  Show the version and exit.\n"
		   "\n"
		   "ENDPOINTS\n"
		   "    POST /webhooks/SECRET      store a notification (the URL given to Magalu)\n"
		   "    POST /webhooks             the same, with the X-Webhook-Secret header\n"
		   "    GET  /healthz              200 \"ok\" when a database connection answers, else 503\n"
		   "    GET  /metrics              Prometheus text format\n"
		   "\n"
		   "RESPONSES TO POST\n"
		   "    200  stored and committed; body {\"id\": INBOX_ID}\n"
		   "    400  the database rejected the payload (SQLSTATE class 22) or could not\n"
		   "         process it (class 54, e.g. nested too deeply), or it holds a NUL\n"
		   "         byte; body {\"error\":\"invalid payload\",\"message\":ERRMSG,\n"
		   "         \"detail\":ERRDETAIL} (detail null when there is none)\n"
		   "    401  bad or missing X-Webhook-Secret header, or bad HMAC signature\n"
		   "    404  bad secret in the path (compared as sent: percent-encoding in it is\n"
		   "         never decoded)\n"
		   "    405  method other than POST (Allow: POST)\n"
		   "    413  body larger than --max-body\n"
		   "    503  database unavailable or too slow; Retry-After: 5.  The sender should\n"
		   "         retry; that is safe, as receive() coalesces redeliveries.\n"
		   "\n"
		   "    When no database connection is working, 503 is answered at once; broken\n"
		   "    connections are detected within about a second even while idle.\n"
		   "\n"
		   "METRICS (prefix sac_webhook_receiver_)\n"
		   "    requests_total{status}          answered requests by HTTP status\n"
		   "    requests_aborted_total{reason}  requests that ended without an answer\n"
		   "    requests_in_flight              requests received and not yet answered\n"
		   "    receive_seconds                 histogram: complete request to database answer\n"
		   "    group_size                      histogram: requests stored per transaction\n"
		   "    db_conflict_retries_total       transactions run again after a deadlock\n"
		   "                                    or serialization failure\n"
		   "    db_reconnects_total, db_connect_failures_total,\n"
		   "    db_connections_healthy, db_connections, queue_length\n"
		   "\n"
		   "LOGGING\n"
		   "    One line per request on standard error: method, path with the secret\n"
		   "    replaced by ***, status, latency and inbox id.  Bodies and secrets are\n"
		   "    never logged.\n"
		   "\n"
		   "SIGNALS\n"
		   "    SIGTERM, SIGINT  stop accepting connections, finish the requests in flight\n"
		   "                     (up to --shutdown-timeout), then exit 0.\n"
		   "\n"
		   "EXIT STATUS\n"
		   "    0 after a clean shutdown, 1 on a start-up failure, 2 on a usage error.\n"
		   "\n"
		   "EXAMPLE\n"
		   "    SAC_WEBHOOK_SECRET=$(cat /etc/sac_webhook/secret) " RECEIVER_NAME " \\\n"
		   "        --listen 127.0.0.1:8080 --db 'dbname=app user=sac_receiver'\n",
		   DEFAULT_MAX_BODY, DEFAULT_DB_CONNECTIONS, MAX_GROUP_LIMIT,
		   DEFAULT_MAX_GROUP, DEFAULT_QUERY_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
		   DEFAULT_TIMEOUT, DEFAULT_HTTP_THREADS, DEFAULT_SHUTDOWN);
}

static void pg_attribute_noreturn()
usage_error(const char *fmt,...) pg_attribute_printf(1, 2);

/* Report a usage error and exit 2. */
static void
usage_error(const char *fmt,...)
{
	va_list		ap;

	fprintf(stderr, "%s: ", RECEIVER_NAME);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry \"%s --help\" for more information.\n", RECEIVER_NAME);
	exit(2);
}

/* Parse a whole decimal number within [min, max] or exit with a usage error. */
static int
parse_int(const char *name, const char *value, long min, long max)
{
	char	   *end;
	long		v;

	errno = 0;
	v = strtol(value, &end, 10);
	if (errno != 0 || end == value || *end != '\0' || v < min || v > max)
		usage_error("invalid value \"%s\" for %s: expected a whole number from %ld to %ld",
					value, name, min, max);
	return (int) v;
}

/*
 * Resolve HOST:PORT into config.listen_addr.  An IPv6 address goes in
 * brackets; "*" or an empty host means every IPv4 interface.
 */
static void
parse_listen(const char *value)
{
	char	   *copy = xstrdup(value);
	char	   *host;
	char	   *port;
	struct addrinfo hints;
	struct addrinfo *res = NULL;
	int			rc;

	if (copy[0] == '[')
	{
		char	   *close = strchr(copy, ']');

		if (close == NULL || close[1] != ':')
			usage_error("invalid --listen \"%s\": expected [IPV6]:PORT", value);
		*close = '\0';
		host = copy + 1;
		port = close + 2;
	}
	else
	{
		char	   *colon = strrchr(copy, ':');

		if (colon == NULL)
			usage_error("invalid --listen \"%s\": expected HOST:PORT", value);
		*colon = '\0';
		host = copy;
		port = colon + 1;
	}
	parse_int("--listen port", port, 0, 65535);
	if (host[0] == '\0' || strcmp(host, "*") == 0)
		host = "0.0.0.0";

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	rc = getaddrinfo(host, port, &hints, &res);
	if (rc != 0)
		usage_error("could not resolve --listen \"%s\": %s", value, gai_strerror(rc));
	if (res->ai_addrlen > sizeof(config.listen_addr))
		usage_error("unsupported address family in --listen \"%s\"", value);
	memcpy(&config.listen_addr, res->ai_addr, res->ai_addrlen);
	config.listen_addrlen = res->ai_addrlen;
	freeaddrinfo(res);
	free(copy);
}

/*
 * Read a secret from the first line of a file, without the line end.  The
 * file should be readable by the service only; warn when it is not.
 */
static char *
read_secret_file(const char *path, const char *what)
{
	char		buf[MAX_SECRET_LEN + 2];
	struct stat st;
	FILE	   *f;
	size_t		len;

	f = fopen(path, "r");
	if (f == NULL)
		usage_error("could not open %s file \"%s\": %s", what, path, strerror(errno));
	if (fstat(fileno(f), &st) == 0 && (st.st_mode & S_IROTH))
		log_msg(LOG_LEVEL_WARNING, "%s file \"%s\" is readable by other users",
				what, path);
	if (fgets(buf, sizeof(buf), f) == NULL)
		buf[0] = '\0';
	fclose(f);
	len = strcspn(buf, "\r\n");
	if (len > MAX_SECRET_LEN)
		usage_error("%s in \"%s\" is longer than %d bytes", what, path, MAX_SECRET_LEN);
	buf[len] = '\0';
	{
		char	   *result = xstrdup(buf);

		OPENSSL_cleanse(buf, sizeof(buf));
		return result;
	}
}

/* Overwrite a secret in argv so it no longer shows in the process title. */
static void
blank_argument(char *arg)
{
	memset(arg, 'x', strlen(arg));
}

static void
add_hmac_secret(const char *value, const char *source)
{
	const char *why = NULL;

	if (!auth_add_hmac_secret(value, &why))
		usage_error("invalid HMAC secret from %s: %s", source, why);
}

/* Add each non-empty, non-comment line of a file as an HMAC secret. */
static void
add_hmac_secret_file(const char *path)
{
	FILE	   *f;
	char		line[MAX_SECRET_LEN + 2];
	struct stat st;
	int			lineno = 0;

	f = fopen(path, "r");
	if (f == NULL)
		usage_error("could not open HMAC secret file \"%s\": %s", path, strerror(errno));
	if (fstat(fileno(f), &st) == 0 && (st.st_mode & S_IROTH))
		log_msg(LOG_LEVEL_WARNING, "HMAC secret file \"%s\" is readable by other users",
				path);
	while (fgets(line, sizeof(line), f) != NULL)
	{
		char	   *p = line;
		size_t		len;
		char		where[64];

		lineno++;
		while (*p == ' ' || *p == '\t')
			p++;
		len = strcspn(p, " \t\r\n");
		p[len] = '\0';
		if (*p == '\0' || *p == '#')
			continue;
		snprintf(where, sizeof(where), "line %d of the file", lineno);
		add_hmac_secret(p, where);
	}
	OPENSSL_cleanse(line, sizeof(line));
	fclose(f);
}

/* Add the comma-separated secrets of SAC_WEBHOOK_HMAC_SECRETS. */
static void
add_hmac_secret_list(const char *list)
{
	char	   *copy = xstrdup(list);
	char	   *save = NULL;

	for (char *tok = strtok_r(copy, ", ", &save); tok != NULL;
		 tok = strtok_r(NULL, ", ", &save))
		add_hmac_secret(tok, "SAC_WEBHOOK_HMAC_SECRETS");
	OPENSSL_cleanse(copy, strlen(list));
	free(copy);
}

static const char *
env_or(const char *name, const char *fallback)
{
	const char *v = getenv(name);

	return (v != NULL && v[0] != '\0') ? v : fallback;
}

/* Parse the command line and environment into "config"; exits on error. */
void
config_parse(int argc, char **argv)
{
	const char *listen = NULL;
	const char *db = NULL;
	const char *secret_file = NULL;
	const char *hmac_file = NULL;
	const char *max_body = NULL;
	const char *db_connections = NULL;
	const char *max_group = NULL;
	const char *query_timeout = NULL;
	const char *max_connections = NULL;
	const char *timeout = NULL;
	const char *http_threads = NULL;
	const char *shutdown_timeout = NULL;
	const char *log_format = NULL;
	char	   *secret = NULL;
	bool		quiet = false;
	bool		hmac_on_command_line = false;
	int			c;

	while ((c = getopt_long(argc, argv, "", long_options, NULL)) != -1)
	{
		switch (c)
		{
			case OPT_LISTEN:
				listen = optarg;
				break;
			case OPT_DB:
				db = optarg;
				break;
			case OPT_SECRET:
				free(secret);
				secret = xstrdup(optarg);
				blank_argument(optarg);
				break;
			case OPT_SECRET_FILE:
				secret_file = optarg;
				break;
			case OPT_HMAC_SECRET:
				add_hmac_secret(optarg, "--hmac-secret");
				blank_argument(optarg);
				hmac_on_command_line = true;
				break;
			case OPT_HMAC_SECRET_FILE:
				hmac_file = optarg;
				break;
			case OPT_MAX_BODY:
				max_body = optarg;
				break;
			case OPT_DB_CONNECTIONS:
				db_connections = optarg;
				break;
			case OPT_MAX_GROUP:
				max_group = optarg;
				break;
			case OPT_QUERY_TIMEOUT:
				query_timeout = optarg;
				break;
			case OPT_MAX_CONNECTIONS:
				max_connections = optarg;
				break;
			case OPT_TIMEOUT:
				timeout = optarg;
				break;
			case OPT_HTTP_THREADS:
				http_threads = optarg;
				break;
			case OPT_SHUTDOWN_TIMEOUT:
				shutdown_timeout = optarg;
				break;
			case OPT_LOG_FORMAT:
				log_format = optarg;
				break;
			case OPT_QUIET:
				quiet = true;
				break;
			case OPT_HELP:
				usage();
				exit(0);
			case OPT_VERSION:
				printf("%s %s\n", RECEIVER_NAME, RECEIVER_VERSION);
				exit(0);
			default:
				fprintf(stderr, "Try \"%s --help\" for more information.\n", RECEIVER_NAME);
				exit(2);
		}
	}
	if (optind < argc)
		usage_error("unexpected argument \"%s\"", argv[optind]);

	/* log format first, so that later messages use it */
	log_format = log_format ? log_format : env_or("SAC_WEBHOOK_LOG_FORMAT", "text");
	if (strcmp(log_format, "text") == 0)
		config.log_format = LOG_FORMAT_TEXT;
	else if (strcmp(log_format, "json") == 0)
		config.log_format = LOG_FORMAT_JSON;
	else
		usage_error("invalid --log-format \"%s\": expected text or json", log_format);
	if (!quiet)
	{
		const char *q = getenv("SAC_WEBHOOK_QUIET");

		quiet = (q != NULL && q[0] != '\0' && strcmp(q, "0") != 0);
	}
	config.quiet = quiet;

	config.listen = xstrdup(listen ? listen : env_or("SAC_WEBHOOK_LISTEN", DEFAULT_LISTEN));
	parse_listen(config.listen);
	config.conninfo = xstrdup(db ? db : env_or("SAC_WEBHOOK_DB", ""));

#define INT_OPTION(field, value, env, name, dflt, min, max) \
	do { \
		const char *v_ = (value) ? (value) : getenv(env); \
		config.field = (v_ && v_[0]) ? parse_int(name, v_, min, max) : (dflt); \
	} while (0)

	INT_OPTION(max_body, max_body, "SAC_WEBHOOK_MAX_BODY", "--max-body",
			   DEFAULT_MAX_BODY, 64, 16 * 1024 * 1024);
	INT_OPTION(db_connections, db_connections, "SAC_WEBHOOK_DB_CONNECTIONS",
			   "--db-connections", DEFAULT_DB_CONNECTIONS, 1, 64);
	INT_OPTION(max_group, max_group, "SAC_WEBHOOK_MAX_GROUP", "--max-group",
			   DEFAULT_MAX_GROUP, 1, MAX_GROUP_LIMIT);
	INT_OPTION(query_timeout_ms, query_timeout, "SAC_WEBHOOK_QUERY_TIMEOUT",
			   "--query-timeout", DEFAULT_QUERY_TIMEOUT, 100, 600000);
	INT_OPTION(max_connections, max_connections, "SAC_WEBHOOK_MAX_CONNECTIONS",
			   "--max-connections", DEFAULT_MAX_CONNECTIONS, 1, 65535);
	INT_OPTION(timeout_s, timeout, "SAC_WEBHOOK_TIMEOUT", "--timeout",
			   DEFAULT_TIMEOUT, 1, 3600);
	INT_OPTION(http_threads, http_threads, "SAC_WEBHOOK_HTTP_THREADS",
			   "--http-threads", DEFAULT_HTTP_THREADS, 1, 64);
	INT_OPTION(shutdown_timeout_s, shutdown_timeout, "SAC_WEBHOOK_SHUTDOWN_TIMEOUT",
			   "--shutdown-timeout", DEFAULT_SHUTDOWN, 0, 3600);
#undef INT_OPTION
	if (config.max_connections < config.http_threads)
		usage_error("--max-connections (%d) must be at least --http-threads (%d)",
					config.max_connections, config.http_threads);

	/* the shared secret: required */
	if (secret != NULL && secret_file != NULL)
		usage_error("--secret and --secret-file cannot be used together");
	if (secret == NULL && secret_file != NULL)
		secret = read_secret_file(secret_file, "secret");
	if (secret == NULL && getenv("SAC_WEBHOOK_SECRET") != NULL)
		secret = xstrdup(getenv("SAC_WEBHOOK_SECRET"));
	if (secret == NULL && getenv("SAC_WEBHOOK_SECRET_FILE") != NULL)
		secret = read_secret_file(getenv("SAC_WEBHOOK_SECRET_FILE"), "secret");
	if (secret == NULL || secret[0] == '\0')
		usage_error("a secret is required: use --secret, --secret-file, "
					"SAC_WEBHOOK_SECRET or SAC_WEBHOOK_SECRET_FILE");
	if (strlen(secret) > MAX_SECRET_LEN)
		usage_error("the secret is longer than %d bytes", MAX_SECRET_LEN);
	for (const char *p = secret; *p; p++)
		if ((unsigned char) *p <= 0x20 || *p == 0x7f || *p == '/' || *p == '?' || *p == '#' || *p == '%')
			usage_error("the secret must consist of printable characters other than "
						"space, \"/\", \"?\", \"#\" and \"%%\"");
	if (strlen(secret) < 16)
		log_msg(LOG_LEVEL_WARNING, "the secret is shorter than 16 characters");
	auth_set_secret(secret);
	OPENSSL_cleanse(secret, strlen(secret));
	free(secret);

	/* HMAC secrets: the command line replaces the environment */
	if (hmac_file != NULL)
		add_hmac_secret_file(hmac_file);
	else if (!hmac_on_command_line)
	{
		if (getenv("SAC_WEBHOOK_HMAC_SECRETS") != NULL)
			add_hmac_secret_list(getenv("SAC_WEBHOOK_HMAC_SECRETS"));
		if (getenv("SAC_WEBHOOK_HMAC_SECRETS_FILE") != NULL)
			add_hmac_secret_file(getenv("SAC_WEBHOOK_HMAC_SECRETS_FILE"));
	}
}
