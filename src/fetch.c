/*-------------------------------------------------------------------------
 *
 * fetch.c
 *		HTTP requests with libcurl's multi socket interface.
 *
 * An engine (SacHttpEngine) is a multi handle with the transfers under way
 * on it.  It is driven by events: libcurl tells which sockets it waits on
 * (kept in an epoll set) and when it wants a timer, and sac_http_wait()
 * sleeps on the process latch and that epoll set together, then hands
 * libcurl only the sockets that are ready.  So a thousand transfers in
 * flight cost no more per event than ten.  Engines live as long as the
 * process, so connections to the API are kept alive and reused; where the
 * server offers HTTP/2, requests share one connection (multiplexing).
 *
 * Only http and https are allowed, redirects are never followed, every
 * transfer has a connect and a total timeout, and a response body larger
 * than sac_webhook.max_response_size is cut off and reported.  Bodies are
 * JSON to be read into jsonb, which cannot hold the character U+0000: each
 * \u0000 escape is handed over as \ufffd, the replacement character.
 *
 * Callers must not hold a transaction open in the background worker while
 * this runs; process() has no choice, as it runs inside its caller's.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/epoll.h>
#include <unistd.h>

#include <curl/curl.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "sac_webhook.h"
#include "fetch.h"

/* Transfers under way on one multi handle */
struct SacHttpEngine
{
	CURLM	   *multi;
	int			epfd;			/* the sockets libcurl waits on */
	WaitEventSet *wes;			/* latch, postmaster death, epfd */
	SacHttpRequest **running;	/* transfers under way */
	int			nrunning;
	int			running_cap;
	bool		timer_set;		/* libcurl wants to be called at timer_at */
	TimestampTz timer_at;
	SacHttpRequest *done_head;	/* finished, not yet taken */
	SacHttpRequest *done_tail;
};

static bool curl_ready = false;

/* The engine of sac_http_perform(), made on first use */
static SacHttpEngine *blocking_engine = NULL;

/*
 * Easy handles of finished transfers, kept for the next ones: a reset handle
 * costs less than a new one.
 */
#define IDLE_HANDLES 1024
static CURL *idle_handles[IDLE_HANDLES];
static int	n_idle_handles = 0;

/*
 * Initialise libcurl once per process.
 */
static void
http_init(void)
{
	if (curl_ready)
		return;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not initialize libcurl")));
	curl_ready = true;
}

/*
 * Body callback: append to a malloc'd buffer, refusing to grow past the
 * configured cap (returning less than given aborts the transfer).
 */
static size_t
on_body(char *data, size_t size, size_t nmemb, void *arg)
{
	SacHttpRequest *req = (SacHttpRequest *) arg;
	size_t		n = size * nmemb;

	if (req->buf_len + n > (size_t) sac_max_response_bytes)
	{
		req->too_large = true;
		return 0;
	}
	if (req->buf_len + n + 1 > req->buf_cap)
	{
		size_t		cap = Max(req->buf_cap * 2, req->buf_len + n + 1);
		char	   *nbuf;

		cap = Max(cap, 4096);
		nbuf = realloc(req->buf, cap);
		if (nbuf == NULL)
			return 0;
		req->buf = nbuf;
		req->buf_cap = cap;
	}
	memcpy(req->buf + req->buf_len, data, n);
	req->buf_len += n;
	req->buf[req->buf_len] = '\0';
	return n;
}

/*
 * Header callback: keep Retry-After and X-Request-ID.
 */
static size_t
on_header(char *data, size_t size, size_t nmemb, void *arg)
{
	SacHttpRequest *req = (SacHttpRequest *) arg;
	size_t		n = size * nmemb;
	char		line[256];
	size_t		len = Min(n, sizeof(line) - 1);
	char	   *value;

	memcpy(line, data, len);
	line[len] = '\0';
	while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == '\n'))
		line[--len] = '\0';

	/* a new response (e.g. after 100 Continue) starts afresh */
	if (strncmp(line, "HTTP/", 5) == 0)
	{
		req->retry_after_s = -1;
		req->request_id[0] = '\0';
		return n;
	}
	value = strchr(line, ':');
	if (value == NULL)
		return n;
	*value++ = '\0';
	while (*value == ' ' || *value == '\t')
		value++;

	if (pg_strcasecmp(line, "Retry-After") == 0)
	{
		char	   *end;
		long		secs = strtol(value, &end, 10);

		if (end != value && *end == '\0' && secs >= 0)
			req->retry_after_s = (int) Min(secs, 86400);
		else
		{
			time_t		when = curl_getdate(value, NULL);

			if (when != -1)
				req->retry_after_s = (int) Min(Max(when - time(NULL), 0), 86400);
		}
	}
	else if (pg_strcasecmp(line, "X-Request-ID") == 0)
	{
		/* keep it printable: it ends up in last_error */
		int			i;

		for (i = 0; i < (int) sizeof(req->request_id) - 1 && value[i]; i++)
			req->request_id[i] = (value[i] >= 0x21 && value[i] <= 0x7e) ? value[i] : '?';
		req->request_id[i] = '\0';
	}
	return n;
}

/*
 * Make an easy handle for one request.
 */
static CURL *
make_handle(SacHttpRequest *req, struct curl_slist **headers)
{
	CURL	   *h;
	struct curl_slist *hl = NULL;

	if (n_idle_handles > 0)
	{
		h = idle_handles[--n_idle_handles];
		curl_easy_reset(h);
	}
	else
		h = curl_easy_init();

	if (h == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create a libcurl handle")));

	hl = curl_slist_append(hl, "Accept: application/json");
	if (req->bearer)
	{
		char	   *auth = psprintf("Authorization: Bearer %s", req->bearer);

		hl = curl_slist_append(hl, auth);
		explicit_bzero(auth, strlen(auth));
		pfree(auth);
	}
	*headers = hl;

	curl_easy_setopt(h, CURLOPT_URL, req->url);
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
	curl_easy_setopt(h, CURLOPT_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS));
	curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long) sac_connect_timeout_ms);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long) sac_request_timeout_ms);
	curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t) sac_max_response_bytes);
	curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "sac_webhook/" SAC_EXTENSION_VERSION);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, req);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, req);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, req->error);
	curl_easy_setopt(h, CURLOPT_PRIVATE, req);
	/*
	 * Over TLS, where the server says at the handshake whether it speaks
	 * HTTP/2, wait for a connection that can multiplex rather than open
	 * another.  (Over cleartext HTTP/1.1 that would wait for whole answers.)
	 */
	if (pg_strncasecmp(req->url, "https://", 8) == 0)
	{
		curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_2TLS);
		curl_easy_setopt(h, CURLOPT_PIPEWAIT, 1L);
	}
	if (sac_ca_file != NULL && sac_ca_file[0] != '\0')
		curl_easy_setopt(h, CURLOPT_CAINFO, sac_ca_file);
	if (req->form)
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, req->form);
	return h;
}

/*
 * Take a transfer's handle off its multi handle and keep it for reuse.
 */
static void
release_handle(SacHttpEngine *e, SacHttpRequest *req)
{
	CURL	   *h = (CURL *) req->handle;

	curl_multi_remove_handle(e->multi, h);
	if (n_idle_handles < IDLE_HANDLES)
		idle_handles[n_idle_handles++] = h;
	else
		curl_easy_cleanup(h);
	curl_slist_free_all((struct curl_slist *) req->headers);
	req->handle = NULL;
	req->headers = NULL;

	/* off the running list */
	Assert(e->running[req->slot] == req);
	e->running[req->slot] = e->running[--e->nrunning];
	e->running[req->slot]->slot = req->slot;
}

/*
 * Rewrite each \u0000 escape of a JSON text as \ufffd, in place.  Every
 * backslash of valid JSON starts an escape inside a string, so pairs are
 * skipped as a whole and an escaped backslash followed by "u0000" is left
 * alone.
 */
static void
replace_nul_escapes(char *json, size_t len)
{
	for (size_t i = 0; i + 1 < len; i++)
	{
		if (json[i] != '\\')
			continue;
		if (json[i + 1] == 'u' && i + 5 < len && memcmp(json + i + 2, "0000", 4) == 0)
			memcpy(json + i + 2, "fffd", 4);
		i++;
	}
}

/*
 * Hand a finished transfer's result to its request, release the handle and
 * queue the request for sac_http_next_done().
 */
static void
finish(SacHttpEngine *e, SacHttpRequest *req, CURLcode code)
{
	CURL	   *h = (CURL *) req->handle;

	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &req->status);
	req->curl_code = (int) code;
	if (code == CURLE_FILESIZE_EXCEEDED)
		req->too_large = true;
	if (code != CURLE_OK && req->error[0] == '\0')
		strlcpy(req->error, curl_easy_strerror(code), sizeof(req->error));
	if (code != CURLE_OK && !req->too_large)
		req->status = 0;

	req->body = MemoryContextAlloc(req->cxt ? req->cxt : CurrentMemoryContext,
								   req->buf_len + 1);
	if (req->buf_len > 0)
		memcpy(req->body, req->buf, req->buf_len);
	req->body[req->buf_len] = '\0';
	req->body_len = req->buf_len;
	replace_nul_escapes(req->body, req->body_len);
	free(req->buf);
	req->buf = NULL;
	release_handle(e, req);

	req->next_done = NULL;
	if (e->done_tail)
		e->done_tail->next_done = req;
	else
		e->done_head = req;
	e->done_tail = req;
}

/*
 * libcurl's socket callback: keep the epoll set in step with the sockets
 * libcurl waits on.  socketp is non-NULL once the socket is in the set.
 */
static int
on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	SacHttpEngine *e = (SacHttpEngine *) userp;
	struct epoll_event ev;

	(void) easy;
	if (what == CURL_POLL_REMOVE)
	{
		/* a socket already closed has left the set by itself */
		(void) epoll_ctl(e->epfd, EPOLL_CTL_DEL, s, NULL);
		curl_multi_assign(e->multi, s, NULL);
		return 0;
	}
	memset(&ev, 0, sizeof(ev));
	ev.data.fd = s;
	ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0) | ((what & CURL_POLL_OUT) ? EPOLLOUT : 0);
	if (epoll_ctl(e->epfd, socketp ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, s, &ev) != 0)
	{
		/* the descriptor number was reused, or left the set on close */
		if (errno == EEXIST)
			(void) epoll_ctl(e->epfd, EPOLL_CTL_MOD, s, &ev);
		else if (errno == ENOENT)
			(void) epoll_ctl(e->epfd, EPOLL_CTL_ADD, s, &ev);
	}
	if (socketp == NULL)
		curl_multi_assign(e->multi, s, e);
	return 0;
}

/*
 * libcurl's timer callback: when to call it back (-1: no timer).
 */
static int
on_timer(CURLM *multi, long timeout_ms, void *userp)
{
	SacHttpEngine *e = (SacHttpEngine *) userp;

	(void) multi;
	if (timeout_ms < 0)
		e->timer_set = false;
	else
	{
		e->timer_set = true;
		e->timer_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	}
	return 0;
}

/*
 * Hand libcurl's finished transfers to their requests.
 */
static void
collect(SacHttpEngine *e)
{
	CURLMsg    *msg;
	int			left;

	while ((msg = curl_multi_info_read(e->multi, &left)) != NULL)
	{
		SacHttpRequest *req = NULL;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &req);
		finish(e, req, msg->data.result);
	}
}

/*
 * Make an engine that keeps at most max_connections connections (0: no
 * limit of its own).  It lives as long as the process.
 */
SacHttpEngine *
sac_http_engine_create(int max_connections)
{
	SacHttpEngine *e;

	http_init();
	e = MemoryContextAllocZero(TopMemoryContext, sizeof(SacHttpEngine));
	e->running_cap = 64;
	e->running = MemoryContextAlloc(TopMemoryContext, sizeof(SacHttpRequest *) * e->running_cap);
	e->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (e->epfd < 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not create an epoll set: %m")));
	e->multi = curl_multi_init();
	if (e->multi == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create a libcurl multi handle")));
	curl_multi_setopt(e->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
	curl_multi_setopt(e->multi, CURLMOPT_SOCKETDATA, e);
	curl_multi_setopt(e->multi, CURLMOPT_TIMERFUNCTION, on_timer);
	curl_multi_setopt(e->multi, CURLMOPT_TIMERDATA, e);
	curl_multi_setopt(e->multi, CURLMOPT_PIPELINING, (long) CURLPIPE_MULTIPLEX);
	if (max_connections > 0)
	{
		curl_multi_setopt(e->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long) max_connections);
		curl_multi_setopt(e->multi, CURLMOPT_MAXCONNECTS, (long) max_connections);
	}

#if PG_VERSION_NUM >= 170000
	e->wes = CreateWaitEventSet(NULL, 3);
#else
	e->wes = CreateWaitEventSet(TopMemoryContext, 3);
#endif
	AddWaitEventToSet(e->wes, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(e->wes, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(e->wes, WL_SOCKET_READABLE, e->epfd, NULL, NULL);
	return e;
}

/*
 * Drop an engine and whatever it still has under way.
 */
void
sac_http_engine_destroy(SacHttpEngine *e)
{
	sac_http_abandon(e);
	curl_multi_cleanup(e->multi);
	FreeWaitEventSet(e->wes);
	close(e->epfd);
	pfree(e->running);
	pfree(e);
}

/*
 * Start a request.  Its outcome is filled in when it finishes, and it is
 * then returned by sac_http_next_done().
 */
void
sac_http_start(SacHttpEngine *e, SacHttpRequest *req)
{
	struct curl_slist *headers = NULL;
	CURL	   *h;

	req->status = 0;
	req->curl_code = 0;
	req->error[0] = '\0';
	req->too_large = false;
	req->interrupted = false;
	req->body = NULL;
	req->body_len = 0;
	req->retry_after_s = -1;
	req->request_id[0] = '\0';
	req->buf = NULL;
	req->buf_len = req->buf_cap = 0;
	req->next_done = NULL;

	if (e->nrunning == e->running_cap)
	{
		e->running_cap *= 2;
		e->running = repalloc(e->running, sizeof(SacHttpRequest *) * e->running_cap);
	}
	h = make_handle(req, &headers);
	req->handle = h;
	req->headers = headers;
	req->slot = e->nrunning;
	e->running[e->nrunning++] = req;
	if (curl_multi_add_handle(e->multi, h) != CURLM_OK)
	{
		release_handle(e, req);
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not start an HTTP request")));
	}
}

/*
 * Hand libcurl the sockets that are ready.
 */
static void
socket_events(SacHttpEngine *e)
{
	struct epoll_event evs[64];
	int			n;
	int			still;

	do
	{
		n = epoll_wait(e->epfd, evs, lengthof(evs), 0);
		for (int i = 0; i < n; i++)
		{
			int			flags = 0;

			if (evs[i].events & EPOLLIN)
				flags |= CURL_CSELECT_IN;
			if (evs[i].events & EPOLLOUT)
				flags |= CURL_CSELECT_OUT;
			if (evs[i].events & (EPOLLERR | EPOLLHUP))
				flags |= CURL_CSELECT_ERR;
			curl_multi_socket_action(e->multi, evs[i].data.fd, flags, &still);
		}
	} while (n == lengthof(evs));
}

/*
 * Wait at most timeout_ms for something to happen: a socket ready, the
 * timer libcurl asked for, or the latch (reset here, and reported: the
 * caller checks what it was set for).  Transfers that finished are then
 * ready for sac_http_next_done().
 */
void
sac_http_wait(SacHttpEngine *e, long timeout_ms, SacHttpWake *wake)
{
	WaitEvent	events[3];
	int			n;
	long		wait_ms = Max(timeout_ms, 0);
	int			still;

	memset(wake, 0, sizeof(*wake));
	if (e->timer_set)
	{
		long		secs;
		int			usecs;

		TimestampDifference(GetCurrentTimestamp(), e->timer_at, &secs, &usecs);
		wait_ms = Min(wait_ms, secs * 1000 + (usecs + 999) / 1000);
	}

	n = WaitEventSetWait(e->wes, wait_ms, events, lengthof(events), PG_WAIT_EXTENSION);
	for (int i = 0; i < n; i++)
	{
		if (events[i].events & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			wake->latch = true;
		}
		if (events[i].events & WL_SOCKET_READABLE)
			socket_events(e);
	}
	if (e->timer_set && GetCurrentTimestamp() >= e->timer_at)
	{
		e->timer_set = false;
		curl_multi_socket_action(e->multi, CURL_SOCKET_TIMEOUT, 0, &still);
	}
	collect(e);
}

/*
 * The next finished request, or NULL.
 */
SacHttpRequest *
sac_http_next_done(SacHttpEngine *e)
{
	SacHttpRequest *req = e->done_head;

	if (req != NULL)
	{
		e->done_head = req->next_done;
		if (e->done_head == NULL)
			e->done_tail = NULL;
		req->next_done = NULL;
	}
	return req;
}

/*
 * Drop every transfer under way (and every finished one not yet taken):
 * each is marked interrupted.
 */
void
sac_http_abandon(SacHttpEngine *e)
{
	while (e->nrunning > 0)
	{
		SacHttpRequest *req = e->running[e->nrunning - 1];

		free(req->buf);
		req->buf = NULL;
		release_handle(e, req);
		req->interrupted = true;
		req->status = 0;
		req->curl_code = CURLE_ABORTED_BY_CALLBACK;
		strlcpy(req->error, "interrupted by shutdown", sizeof(req->error));
	}
	e->done_head = e->done_tail = NULL;
	e->timer_set = false;
}

/*
 * Perform all requests and return when every one has an outcome (on an
 * engine of its own, so that transfers of other engines are left alone).
 * With check_interrupts, a query cancel or termination aborts the
 * transfers and raises as usual.  When *stop becomes true (the worker got
 * SIGTERM), transfers still under way are marked interrupted and the call
 * returns at once.  A latch set while it waits is set again on return, for
 * the caller's own wait.
 */
void
sac_http_perform(SacHttpRequest **reqs, int nreqs, bool check_interrupts,
				 volatile sig_atomic_t *stop)
{
	SacHttpEngine *e;
	volatile int done = 0;
	volatile bool latch = false;

	if (nreqs == 0)
		return;
	if (blocking_engine == NULL)
		blocking_engine = sac_http_engine_create(0);
	e = blocking_engine;

	PG_TRY();
	{
		for (int i = 0; i < nreqs; i++)
			sac_http_start(e, reqs[i]);
		while (done < nreqs)
		{
			SacHttpWake wake;

			sac_http_wait(e, 1000, &wake);
			if (wake.latch)
				latch = true;
			while (sac_http_next_done(e) != NULL)
				done++;
			if (check_interrupts)
				CHECK_FOR_INTERRUPTS();
			if (stop != NULL && *stop)
			{
				sac_http_abandon(e);
				break;
			}
		}
	}
	PG_CATCH();
	{
		sac_http_abandon(e);
		PG_RE_THROW();
	}
	PG_END_TRY();
	if (latch)
		SetLatch(MyLatch);
}

/*
 * URL-encode a form value (palloc'd result).
 */
char *
sac_http_escape(const char *s)
{
	char	   *e;
	char	   *res;

	http_init();
	e = curl_easy_escape(NULL, s, 0);
	if (e == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	res = pstrdup(e);
	explicit_bzero(e, strlen(e));
	curl_free(e);
	return res;
}
