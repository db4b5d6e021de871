/*-------------------------------------------------------------------------
 *
 * fetch.h
 *		HTTP requests to the seller API and the token endpoint (libcurl).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SAC_FETCH_H
#define SAC_FETCH_H

#include <signal.h>

#include "utils/palloc.h"

/* One HTTP request and, once performed, its outcome */
typedef struct SacHttpRequest
{
	/* input */
	const char *url;
	const char *bearer;			/* access token, or NULL */
	const char *form;			/* x-www-form-urlencoded POST body, or NULL
								 * for a GET */
	MemoryContext cxt;			/* where the body goes; NULL: the current
								 * context when the request completes */
	void	   *owner;			/* the caller's, untouched */

	/* output */
	long		status;			/* HTTP status; 0 when there was no answer */
	int			curl_code;		/* CURLcode; 0 when the transfer worked */
	char		error[256];		/* transport error text, when curl_code != 0 */
	char	   *body;			/* response body (palloc'd, NUL-terminated) */
	size_t		body_len;
	bool		interrupted;	/* not performed: the process is stopping */
	bool		too_large;		/* body exceeded sac_webhook.max_response_size */
	int			retry_after_s;	/* Retry-After in seconds, or -1 */
	char		request_id[65]; /* X-Request-ID, or empty */

	/* private to fetch.c */
	char	   *buf;
	size_t		buf_len;
	size_t		buf_cap;
	void	   *handle;
	void	   *headers;
	int			slot;			/* in the engine's running list */
	struct SacHttpRequest *next_done;
} SacHttpRequest;

/* Transfers under way, driven by libcurl's socket interface (fetch.c) */
typedef struct SacHttpEngine SacHttpEngine;

/* What woke sac_http_wait() */
typedef struct SacHttpWake
{
	bool		latch;			/* the process latch was set */
} SacHttpWake;

extern SacHttpEngine *sac_http_engine_create(int max_connections);
extern void sac_http_engine_destroy(SacHttpEngine *engine);
extern void sac_http_start(SacHttpEngine *engine, SacHttpRequest *req);
extern void sac_http_wait(SacHttpEngine *engine, long timeout_ms, SacHttpWake *wake);
extern SacHttpRequest *sac_http_next_done(SacHttpEngine *engine);
extern void sac_http_abandon(SacHttpEngine *engine);

extern void sac_http_perform(SacHttpRequest **reqs, int nreqs,
							 bool check_interrupts, volatile sig_atomic_t *stop);
extern char *sac_http_escape(const char *s);

#endif							/* SAC_FETCH_H */
