/*-------------------------------------------------------------------------
 *
 * metrics.c
 *	  Counters, gauges and histograms of sac_webhook_receiver, rendered in
 *	  the Prometheus text exposition format for GET /metrics.
 *
 * Updates happen a few times per request, so a single mutex is plenty;
 * it is never held while doing I/O.  A leaf: the gauges other modules own
 * (the connection pool's) are handed to metrics_render().
 *
 * src/receiver/metrics.c
 *
 *-------------------------------------------------------------------------
 */
#include "receiver.h"

#include <pthread.h>
#include <string.h>

#define PREFIX "sac_webhook_receiver_"

/* status codes that are always exported, even at zero */
static const int common_statuses[] = {200, 400, 401, 404, 405, 413, 503};

static const double receive_bounds[] = {
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10
};
#define N_RECEIVE_BOUNDS (sizeof(receive_bounds) / sizeof(receive_bounds[0]))

static const double group_bounds[] = {1, 2, 4, 8, 16, 32, 64};
#define N_GROUP_BOUNDS (sizeof(group_bounds) / sizeof(group_bounds[0]))

static const char *const abort_reason_names[ABORT_NREASONS] = {
	[ABORT_TIMEOUT] = "timeout",
	[ABORT_CLOSED] = "closed",
	[ABORT_SHUTDOWN] = "shutdown",
};

typedef struct Histogram
{
	unsigned long long buckets[16]; /* non-cumulative; last is +Inf */
	unsigned long long count;
	double		sum;
} Histogram;

static struct
{
	pthread_mutex_t lock;
	unsigned long long requests[600];	/* by HTTP status, 100..599 */
	unsigned long long aborted[ABORT_NREASONS];
	unsigned long long reconnects;
	unsigned long long conflict_retries;
	unsigned long long connect_failures;
	long		inflight;
	Histogram	receive;
	Histogram	group;
}			m = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
};

void
metrics_count_request(int http_status)
{
	if (http_status < 100 || http_status > 599)
		return;
	pthread_mutex_lock(&m.lock);
	m.requests[http_status]++;
	pthread_mutex_unlock(&m.lock);
}

void
metrics_count_aborted(AbortReason reason)
{
	pthread_mutex_lock(&m.lock);
	m.aborted[reason]++;
	pthread_mutex_unlock(&m.lock);
}

static void
observe(Histogram *h, const double *bounds, size_t nbounds, double value)
{
	size_t		i;

	for (i = 0; i < nbounds; i++)
		if (value <= bounds[i])
			break;
	pthread_mutex_lock(&m.lock);
	h->buckets[i]++;
	h->count++;
	h->sum += value;
	pthread_mutex_unlock(&m.lock);
}

void
metrics_observe_receive(double seconds)
{
	observe(&m.receive, receive_bounds, N_RECEIVE_BOUNDS, seconds);
}

void
metrics_observe_group(int size)
{
	observe(&m.group, group_bounds, N_GROUP_BOUNDS, (double) size);
}

void
metrics_count_reconnect(void)
{
	pthread_mutex_lock(&m.lock);
	m.reconnects++;
	pthread_mutex_unlock(&m.lock);
}

void
metrics_count_conflict_retry(void)
{
	pthread_mutex_lock(&m.lock);
	m.conflict_retries++;
	pthread_mutex_unlock(&m.lock);
}

void
metrics_count_connect_failure(void)
{
	pthread_mutex_lock(&m.lock);
	m.connect_failures++;
	pthread_mutex_unlock(&m.lock);
}

void
metrics_inflight_add(int delta)
{
	pthread_mutex_lock(&m.lock);
	m.inflight += delta;
	pthread_mutex_unlock(&m.lock);
}

long
metrics_inflight(void)
{
	long		v;

	pthread_mutex_lock(&m.lock);
	v = m.inflight;
	pthread_mutex_unlock(&m.lock);
	return v;
}

static void
render_histogram(StrBuf *out, const char *name, const char *help,
				 const Histogram *h, const double *bounds, size_t nbounds)
{
	unsigned long long cumulative = 0;

	sb_appendf(out, "# HELP " PREFIX "%s %s\n", name, help);
	sb_appendf(out, "# TYPE " PREFIX "%s histogram\n", name);
	for (size_t i = 0; i < nbounds; i++)
	{
		cumulative += h->buckets[i];
		sb_appendf(out, PREFIX "%s_bucket{le=\"%g\"} %llu\n", name, bounds[i], cumulative);
	}
	cumulative += h->buckets[nbounds];
	sb_appendf(out, PREFIX "%s_bucket{le=\"+Inf\"} %llu\n", name, cumulative);
	sb_appendf(out, PREFIX "%s_sum %.6f\n", name, h->sum);
	sb_appendf(out, PREFIX "%s_count %llu\n", name, h->count);
}

/* Render everything in the Prometheus text format (version 0.0.4). */
void
metrics_render(StrBuf *out, const MetricsGauges *gauges)
{
	int			healthy = gauges->db_connections_healthy;
	int			queued = gauges->queue_length;
	unsigned long long requests[600];
	unsigned long long aborted[ABORT_NREASONS];
	unsigned long long reconnects,
				conflict_retries,
				connect_failures;
	long		inflight;
	Histogram	receive,
				group;

	/* take a consistent snapshot, then format without the lock */
	pthread_mutex_lock(&m.lock);
	memcpy(requests, m.requests, sizeof(requests));
	memcpy(aborted, m.aborted, sizeof(aborted));
	reconnects = m.reconnects;
	conflict_retries = m.conflict_retries;
	connect_failures = m.connect_failures;
	inflight = m.inflight;
	receive = m.receive;
	group = m.group;
	pthread_mutex_unlock(&m.lock);

	sb_appends(out, "# HELP " PREFIX "requests_total HTTP requests answered, by status code.\n");
	sb_appends(out, "# TYPE " PREFIX "requests_total counter\n");
	for (int status = 100; status < 600; status++)
	{
		bool		common = false;

		for (size_t i = 0; i < sizeof(common_statuses) / sizeof(common_statuses[0]); i++)
			common |= (common_statuses[i] == status);
		if (common || requests[status] > 0)
			sb_appendf(out, PREFIX "requests_total{status=\"%d\"} %llu\n",
					   status, requests[status]);
	}

	sb_appends(out, "# HELP " PREFIX "requests_aborted_total Requests that ended without an answer.\n");
	sb_appends(out, "# TYPE " PREFIX "requests_aborted_total counter\n");
	for (int r = 0; r < ABORT_NREASONS; r++)
		sb_appendf(out, PREFIX "requests_aborted_total{reason=\"%s\"} %llu\n",
				   abort_reason_names[r], aborted[r]);

	sb_appends(out, "# HELP " PREFIX "requests_in_flight Requests received and not yet answered.\n");
	sb_appends(out, "# TYPE " PREFIX "requests_in_flight gauge\n");
	sb_appendf(out, PREFIX "requests_in_flight %ld\n", inflight);

	render_histogram(out, "receive_seconds",
					 "Time from a complete request to its answer from the database (queue wait included).",
					 &receive, receive_bounds, N_RECEIVE_BOUNDS);
	render_histogram(out, "group_size",
					 "Notifications stored per database transaction.",
					 &group, group_bounds, N_GROUP_BOUNDS);

	sb_appends(out, "# HELP " PREFIX "db_reconnects_total Database connections re-established after a loss.\n");
	sb_appends(out, "# TYPE " PREFIX "db_reconnects_total counter\n");
	sb_appendf(out, PREFIX "db_reconnects_total %llu\n", reconnects);

	sb_appends(out, "# HELP " PREFIX "db_conflict_retries_total Transactions retried after a deadlock or serialization failure.\n");
	sb_appends(out, "# TYPE " PREFIX "db_conflict_retries_total counter\n");
	sb_appendf(out, PREFIX "db_conflict_retries_total %llu\n", conflict_retries);

	sb_appends(out, "# HELP " PREFIX "db_connect_failures_total Failed attempts to connect to the database.\n");
	sb_appends(out, "# TYPE " PREFIX "db_connect_failures_total counter\n");
	sb_appendf(out, PREFIX "db_connect_failures_total %llu\n", connect_failures);

	sb_appends(out, "# HELP " PREFIX "db_connections_healthy Pool connections that are connected and ready.\n");
	sb_appends(out, "# TYPE " PREFIX "db_connections_healthy gauge\n");
	sb_appendf(out, PREFIX "db_connections_healthy %d\n", healthy);

	sb_appends(out, "# HELP " PREFIX "db_connections Configured size of the connection pool.\n");
	sb_appends(out, "# TYPE " PREFIX "db_connections gauge\n");
	sb_appendf(out, PREFIX "db_connections %d\n", gauges->db_connections);

	sb_appends(out, "# HELP " PREFIX "queue_length Requests waiting for a database connection.\n");
	sb_appends(out, "# TYPE " PREFIX "queue_length gauge\n");
	sb_appendf(out, PREFIX "queue_length %d\n", queued);
}
