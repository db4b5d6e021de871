/*-------------------------------------------------------------------------
 *
 * fetch.c
 *		HTTP requests with the libcurl multi interface.
 *
 * A batch of requests runs concurrently, at most sac_webhook.max_in_flight
 * at a time, on one multi handle that lives as long as the process, so
 * connections to the API are kept alive and reused from batch to batch.
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

#include <curl/curl.h>

#include "miscadmin.h"

#include "sac_webhook.h"
#include "fetch.h"

static CURLM *multi = NULL;
static bool curl_ready = false;

/*
 * Easy handles of finished transfers, kept for the next ones: a reset handle
 * costs less than a new one.
 */
#define IDLE_HANDLES 64
static CURL *idle_handles[IDLE_HANDLES];
static int	n_idle_handles = 0;

/*
 * Initialise libcurl and the shared multi handle once per process.
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
	multi = curl_multi_init();
	if (multi == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create a libcurl multi handle")));
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
	if (req->form)
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, req->form);
	return h;
}

/*
 * Take a transfer's handle off the multi handle and keep it for reuse.
 */
static void
release_handle(CURL *h)
{
	curl_multi_remove_handle(multi, h);
	if (n_idle_handles < IDLE_HANDLES)
		idle_handles[n_idle_handles++] = h;
	else
		curl_easy_cleanup(h);
}

/* A transfer under way */
typedef struct Running
{
	CURL	   *handle;
	struct curl_slist *headers;
} Running;

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
 * Hand a finished transfer's result to its request and release the handle.
 */
static void
finish(Running *run, CURLcode code)
{
	SacHttpRequest *req = NULL;

	curl_easy_getinfo(run->handle, CURLINFO_PRIVATE, (char **) &req);
	curl_easy_getinfo(run->handle, CURLINFO_RESPONSE_CODE, &req->status);
	req->curl_code = (int) code;
	if (code == CURLE_FILESIZE_EXCEEDED)
		req->too_large = true;
	if (code != CURLE_OK && req->error[0] == '\0')
		strlcpy(req->error, curl_easy_strerror(code), sizeof(req->error));
	if (code != CURLE_OK && !req->too_large)
		req->status = 0;

	req->body = palloc(req->buf_len + 1);
	if (req->buf_len > 0)
		memcpy(req->body, req->buf, req->buf_len);
	req->body[req->buf_len] = '\0';
	req->body_len = req->buf_len;
	replace_nul_escapes(req->body, req->body_len);
	free(req->buf);
	req->buf = NULL;

	release_handle(run->handle);
	curl_slist_free_all(run->headers);
	run->handle = NULL;
	run->headers = NULL;
}

/*
 * Drop the transfers still under way.
 */
static void
abandon(Running *running, int nslots)
{
	for (int s = 0; s < nslots; s++)
	{
		if (running[s].handle != NULL)
		{
			SacHttpRequest *req = NULL;

			curl_easy_getinfo(running[s].handle, CURLINFO_PRIVATE, (char **) &req);
			free(req->buf);
			req->buf = NULL;
			release_handle(running[s].handle);
			curl_slist_free_all(running[s].headers);
			running[s].handle = NULL;
		}
	}
}

/*
 * Perform all requests, at most sac_webhook.max_in_flight at once, and
 * return when every one has an outcome.  With check_interrupts, a query
 * cancel or termination aborts the transfers and raises as usual.  When
 * *stop becomes true (the worker got SIGTERM), transfers still under way
 * or not started are marked interrupted and the call returns at once.
 */
void
sac_http_perform(SacHttpRequest **reqs, int nreqs, bool check_interrupts,
				 volatile sig_atomic_t *stop)
{
	int			limit = Min(sac_max_in_flight, nreqs);
	Running    *running;
	volatile int next = 0;
	volatile int done = 0;

	if (nreqs == 0)
		return;
	http_init();
	curl_multi_setopt(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long) sac_max_in_flight);

	running = palloc0(sizeof(Running) * limit);
	for (int i = 0; i < nreqs; i++)
	{
		reqs[i]->status = 0;
		reqs[i]->curl_code = 0;
		reqs[i]->error[0] = '\0';
		reqs[i]->too_large = false;
		reqs[i]->interrupted = false;
		reqs[i]->body = NULL;
		reqs[i]->body_len = 0;
		reqs[i]->retry_after_s = -1;
		reqs[i]->request_id[0] = '\0';
		reqs[i]->buf = NULL;
		reqs[i]->buf_len = reqs[i]->buf_cap = 0;
	}

	PG_TRY();
	{
		while (done < nreqs)
		{
			int			still;
			int			msgs;
			CURLMsg    *msg;

			/* start transfers up to the in-flight limit */
			for (int s = 0; s < limit && next < nreqs; s++)
			{
				if (running[s].handle != NULL)
					continue;
				running[s].handle = make_handle(reqs[next], &running[s].headers);
				curl_multi_add_handle(multi, running[s].handle);
				next++;
			}

			curl_multi_perform(multi, &still);
			while ((msg = curl_multi_info_read(multi, &msgs)) != NULL)
			{
				if (msg->msg != CURLMSG_DONE)
					continue;
				for (int s = 0; s < limit; s++)
				{
					if (running[s].handle == msg->easy_handle)
					{
						finish(&running[s], msg->data.result);
						done++;
						break;
					}
				}
			}
			if (done < nreqs && still > 0)
				curl_multi_poll(multi, NULL, 0, 100, NULL);
			if (check_interrupts)
				CHECK_FOR_INTERRUPTS();
			if (stop != NULL && *stop)
			{
				abandon(running, limit);
				for (int i = 0; i < nreqs; i++)
				{
					if (reqs[i]->body == NULL)
					{
						reqs[i]->interrupted = true;
						reqs[i]->status = 0;
						reqs[i]->curl_code = CURLE_ABORTED_BY_CALLBACK;
						strlcpy(reqs[i]->error, "interrupted by shutdown", sizeof(reqs[i]->error));
					}
				}
				break;
			}
		}
	}
	PG_CATCH();
	{
		abandon(running, limit);
		PG_RE_THROW();
	}
	PG_END_TRY();
	pfree(running);
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
