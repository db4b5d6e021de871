/*-------------------------------------------------------------------------
 *
 * resolve.c
 *		What a claimed job's HTTP answers mean, and which request it needs
 *		next.
 *
 * A job starts with the request for its resource (sac_job_start) and, after
 * each answer, is advanced (sac_job_advance): either it is
 * decided (an action and a delay for apply.c) or it has prepared its next
 * request.  No database access here, only the answers in hand and what the
 * pipeline knows of the tenant.
 *
 * Tickets: GET /v0/tickets/{id}.
 *
 * Messages: the single resource GET /v0/tickets/{t}/messages/{m} is not
 * documented, so it may not exist.  It is asked first, unless the tenant's
 * API base is known not to serve it; a 404 from it proves nothing alone.
 * Then the ticket's message list is read, every page of it:
 * GET /v0/tickets/{t}/messages?_offset=N&_limit=L, the first page with the
 * API's default limit, the next ones with the meta.page.max_limit it
 * reports; a short or empty page ends the walk, and a page that is not the
 * documented shape is an error for the job, never a deletion.  The
 * complete list is stored (every message of the ticket brought up to date);
 * the message is gone when the list lacks it and the single resource said
 * 404 too (or is not served).  The base is learnt as not serving the single
 * resource when that said 404 for a message the list holds, or 405 or 501;
 * as serving it when it answered 200.  A list that answers 404 means the
 * ticket may be gone: GET /v0/tickets/{t} decides.
 *
 * A ticket's message list queued by a sync (topic sac_ticket_messages) is
 * read the same way, with no message of its own.
 *
 * Syncs: a claimed sync reads up to SYNC_PAGES_PER_BATCH pages of
 * GET /v0/tickets?_offset=N&_sort=updated_at:asc[&updated_at_gte=...]:
 * oldest changes first, so tickets changed during the walk move behind it
 * and are read again, and each page goes back SYNC_PAGE_OVERLAP entries to
 * catch what shifted forward.  Whether the server honours the filter and
 * the sort does not matter for correctness: duplicates are dropped, and a
 * walk that stops advancing fails.
 *
 * Deletions: a resource is taken as gone only while the tenant's API is
 * demonstrably answering: a 200 for that tenant since the job began, or within
 * sac_webhook.api_alive_window, or else a probe of GET /v0/tickets?_limit=1
 * answering 200 (sac_tenant_prepare_probe, sac_job_confirm_gone).  Pointed
 * at a wrong base URL, or through a proxy answering 404 to everything,
 * nothing is deleted.
 *
 *	200			the document (or the list) is stored; after a DELETION, kept
 *				and checked again later (deletion_rechecks)
 *	404, 410	after a CREATION or UPDATE, first counted (not_found_retries);
 *				then gone, as above
 *	401			(after one token refresh, pipeline.c) retry
 *	408, 429, 5xx, transport errors
 *				retry with exponential backoff and jitter, honouring
 *				Retry-After; dead after sac_webhook.max_attempts
 *	other		dead, with the status
 *
 * Error texts never quote a fetched document.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#if PG_VERSION_NUM >= 150000
#include "common/pg_prng.h"
#endif
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/uuid.h"

#include "resolve.h"

/* The most pages of one ticket's message list read in one job */
#define MAX_LIST_PAGES 500

/* Pages of a tenant's ticket list a sync reads each time it is claimed */
#define SYNC_PAGES_PER_BATCH 3

/* Entries of the previous page each page of a sync's walk reads again */
#define SYNC_PAGE_OVERLAP 2

/*
 * Backoff before the next attempt: base * 2^(attempts-1), capped, with
 * jitter over the upper half.
 */
int64
sac_backoff_ms(int attempts)
{
	int64		cap = (int64) sac_retry_max_delay_s * 1000;
	int64		delay = sac_retry_base_delay_ms;

	for (int i = 1; i < attempts && delay < cap; i++)
		delay *= 2;
	delay = Min(delay, cap);
#if PG_VERSION_NUM >= 150000
	return delay / 2 + (int64) (pg_prng_double(&pg_global_prng_state) * (delay / 2 + 1));
#else
	return delay / 2 + (int64) ((double) random() / ((double) MAX_RANDOM_VALUE + 1) * (delay / 2 + 1));
#endif
}

/*
 * Decide that a job goes back to the queue (or, its attempts used up, dies).
 * delay_ms < 0 means the usual backoff; count_attempt false gives the
 * attempt back (nothing was really tried).
 */
void
sac_job_defer(SacJob *job, const char *why, int64 delay_ms, bool count_attempt)
{
	job->decided = true;
	job->recheck = false;
	job->was_not_found = false;
	job->count_attempt = count_attempt;
	job->delay_ms = delay_ms >= 0 ? delay_ms : sac_backoff_ms(job->attempts);
	/* the text must outlive units of work: keep it with the job */
	if (count_attempt && job->attempts >= sac_max_attempts)
	{
		job->action = SAC_ACT_DEAD;
		job->error = why ? MemoryContextStrdup(job->cxt, psprintf("%s; gave up after %d attempts",
																  why, job->attempts)) : NULL;
	}
	else
	{
		job->action = SAC_ACT_RETRY;
		job->error = why ? MemoryContextStrdup(job->cxt, why) : NULL;
	}
}

static void
decide_dead(SacJob *job, char *why)
{
	job->decided = true;
	job->action = SAC_ACT_DEAD;
	job->count_attempt = true;
	job->delay_ms = 0;
	job->error = why;
}

/* " (request id ...)" for an error text, or "" */
static const char *
request_id_of(const SacHttpRequest *req)
{
	return req->request_id[0] ? psprintf(" (request id %s)", req->request_id) : "";
}

/*
 * Prepare a GET of path (under the tenant's base URL) with its token.
 */
static void
prepare_get(SacHttpRequest *req, const SacTenant *tenant, const char *path)
{
	req->url = psprintf("%s%s", tenant->base_url, path);
	req->bearer = tenant->access_token;
	req->form = NULL;
}

/* Prepare the request for the next page of the message's ticket's list */
static void
prepare_list_page(SacJob *job)
{
	char		ticket[40];

	sac_uuid_to_cstring(&job->ticket_id, ticket);
	job->step = SAC_STEP_LIST;
	if (job->list_limit > 0)
		prepare_get(&job->req, job->tenant,
					psprintf("/v0/tickets/%s/messages?_offset=%d&_limit=%d", ticket,
							 job->list_offset, job->list_limit));
	else
		prepare_get(&job->req, job->tenant,
					psprintf("/v0/tickets/%s/messages?_offset=%d", ticket, job->list_offset));
}

/* Prepare the request for the next page of a sync's walk */
static void
prepare_sync_page(SacJob *job)
{
	StringInfoData path;

	initStringInfo(&path);
	appendStringInfo(&path, "/v0/tickets?_offset=%d&_sort=updated_at:asc", job->list_offset);
	if (job->list_limit > 0)
		appendStringInfo(&path, "&_limit=%d", job->list_limit);
	if (job->sync_since != NULL)
		appendStringInfo(&path, "&updated_at_gte=%s", job->sync_since);
	job->step = SAC_STEP_SYNC_PAGE;
	prepare_get(&job->req, job->tenant, path.data);
}

/*
 * The first request of a job: its resource, or straight away its ticket's
 * message list when the API base does not serve single messages (or when
 * the list is the job); for a sync, the next page of its walk.
 */
void
sac_job_start(SacJob *job)
{
	job->step = SAC_STEP_RESOURCE;
	if (!job->is_sync)
	{
		job->list_offset = 0;
		job->list_limit = 0;
	}
	job->pages = 0;
	job->nlisted = 0;
	if (job->is_sync)
		prepare_sync_page(job);
	else if (job->topic == SAC_TOPIC_TICKET_MESSAGES ||
			 (job->topic == SAC_TOPIC_MESSAGE &&
			  job->tenant->single_message == SAC_SINGLE_UNSERVED))
		prepare_list_page(job);
	else
		prepare_get(&job->req, job->tenant, job->resource);
}

/*
 * Record what the tenant's API base showed about single messages: served
 * (a 200), not served (405, 501: taken at once), or a sign that it is not
 * (a 404 for a message the list holds: three such make it not served, see
 * api_base_sql in apply.c).
 */
static void
learn_single(SacTenant *tenant, SacSingleMessage what, bool sure, const char *evidence)
{
	if (tenant->single_message == what)
		return;
	if (sure)
		tenant->single_message = what;
	tenant->single_learned = true;
	tenant->single_learnt = sure ? what : SAC_SINGLE_UNKNOWN;
	tenant->single_evidence = evidence;
}

/*
 * Answers that end a job whatever it asked for: transport errors, oversized
 * answers, and statuses other than 200, 404, 405, 410 and 501.  Returns
 * true when the job is decided.
 */
static bool
decide_failure(SacJob *job)
{
	SacHttpRequest *req = &job->req;
	const char *rid = request_id_of(req);

	job->http_status = (int) req->status;
	if (req->too_large)
		decide_dead(job, psprintf("the API response is larger than sac_webhook.max_response_size (%d bytes)",
								  sac_max_response_bytes));
	else if (req->curl_code != 0)
		sac_job_defer(job, psprintf("could not fetch %s: %s", job->resource, req->error), -1, true);
	else if (req->status == 200 || req->status == 404 || req->status == 410 ||
			 req->status == 405 || req->status == 501)
		return false;
	else if (req->status == 401 || req->status == 408 || req->status == 429 ||
			 (req->status >= 500 && req->status <= 599))
		sac_job_defer(job, psprintf("HTTP %ld from the API%s%s", req->status,
									req->status == 401 ? " after a token refresh" : "", rid),
					  req->retry_after_s >= 0 ? (int64) req->retry_after_s * 1000 : -1, true);
	else
		decide_dead(job, psprintf("HTTP %ld from the API%s", req->status, rid));
	return true;
}

/*
 * The resource answered 200: store it.  A DELETION the API does not
 * confirm (yet) keeps the document, and is checked again a few times,
 * further apart each time, since personal data may be removed upstream a
 * moment later.
 */
static void
decide_upsert(SacJob *job)
{
	job->decided = true;
	job->action = SAC_ACT_UPSERT;
	job->rid = request_id_of(&job->req);
	job->http_status = 200;
	if (job->status == SAC_CHANGE_DELETION && job->rechecks < sac_deletion_rechecks)
	{
		int64		delay = sac_deletion_recheck_delay_ms;

		for (int i = 0; i < job->rechecks && delay < INT64CONST(86400000); i++)
			delay *= 4;
		job->recheck = true;
		job->delay_ms = delay;
		job->error = psprintf("DELETION not confirmed: the API still serves the resource; checking again (%d of %d)%s",
							  job->rechecks + 1, sac_deletion_rechecks, job->rid);
	}
}

/*
 * The resource is not found.  After a CREATION or UPDATE that may be the
 * API lagging: it takes not_found_retries more 404s (whatever else came in
 * between) to take it as gone.  Returns true when the job was deferred.
 */
static bool
defer_if_lagging(SacJob *job, long status)
{
	if (job->status == SAC_CHANGE_DELETION || job->not_found >= sac_not_found_retries)
		return false;
	sac_job_defer(job, psprintf("HTTP %ld: not found yet, checking again%s", status,
								request_id_of(&job->req)),
				  sac_not_found_delay_ms, true);
	job->was_not_found = true;
	job->http_status = (int) status;
	return true;
}

/* The job's resource is gone, once the tenant's API is shown to answer */
static void
mark_gone(SacJob *job, bool whole_ticket)
{
	job->gone = true;
	job->delete_ticket = whole_ticket;
	job->http_status = (int) job->req.status;
	job->rid = request_id_of(&job->req);
}

/* Keep a listed message, once per id (pages may overlap as they shift) */
static void
add_listed(SacJob *job, const pg_uuid_t *id, Jsonb *doc)
{
	for (int i = 0; i < job->nlisted; i++)
		if (memcmp(&job->listed[i].id, id, UUID_LEN) == 0)
		{
			job->listed[i].doc = doc;
			return;
		}
	if (job->nlisted == job->listed_cap)
	{
		job->listed_cap = Max(16, job->listed_cap * 2);
		job->listed = job->listed == NULL ?
			MemoryContextAlloc(job->cxt, sizeof(SacListedDoc) * job->listed_cap) :
			repalloc(job->listed, sizeof(SacListedDoc) * job->listed_cap);
	}
	memcpy(&job->listed[job->nlisted].id, id, UUID_LEN);
	job->listed[job->nlisted].doc = doc;
	job->nlisted++;
}

/* The value of key in a JSON object container, or NULL */
static JsonbValue *
member(JsonbContainer *obj, const char *key)
{
	JsonbValue	k;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	return findJsonbValueFromContainer(obj, JB_FOBJECT, &k);
}

/* A non-negative integer JSON value, or -1 */
static int
json_count(JsonbValue *v)
{
	Datum		d;

	if (v == NULL || v->type != jbvNumeric)
		return -1;
	d = DirectFunctionCall1(numeric_int4, NumericGetDatum(v->val.numeric));
	return Max(DatumGetInt32(d), -1);
}

/* A page of a message list being read (see read_page_unit) */
typedef struct PageRead
{
	SacJob	   *job;
	const char *what;			/* "message list", "ticket list" */
	const char *why;			/* not the documented shape: why */
	int			count;			/* results on the page */
	int			limit;			/* the page's size: meta.page.limit, or
								 * max_limit when smaller */
	int			max_limit;		/* meta.page.max_limit, or -1 */
} PageRead;

/*
 * Unit: read a page of a ticket's message list into the job's list.  The
 * documented shape is {"meta": {"page": {"limit", "offset", "count",
 * "max_limit"}}, "results": [message, ...]}, each message an object whose
 * "id" is a UUID.  (A unit, since reading JSON may raise.)
 */
static void
read_page_unit(void *arg)
{
	PageRead   *p = (PageRead *) arg;
	SacJob	   *job = p->job;
	MemoryContext old;
	Jsonb	   *page;
	JsonbValue *meta;
	JsonbValue *pg;
	JsonbValue *results;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;

	old = MemoryContextSwitchTo(job->cxt);
	page = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(job->req.body)));
	if (!JB_ROOT_IS_OBJECT(page) ||
		(meta = member(&page->root, "meta")) == NULL || meta->type != jbvBinary ||
		!JsonContainerIsObject(meta->val.binary.data) ||
		(pg = member(meta->val.binary.data, "page")) == NULL || pg->type != jbvBinary ||
		!JsonContainerIsObject(pg->val.binary.data) ||
		(results = member(&page->root, "results")) == NULL || results->type != jbvBinary ||
		!JsonContainerIsArray(results->val.binary.data))
	{
		p->why = psprintf("the API answered a %s that is not the documented shape (meta.page, results)",
						  p->what);
		MemoryContextSwitchTo(old);
		return;
	}
	p->limit = json_count(member(pg->val.binary.data, "limit"));
	p->max_limit = json_count(member(pg->val.binary.data, "max_limit"));
	if (p->limit <= 0)
	{
		p->why = psprintf("the API answered a %s without a positive meta.page.limit", p->what);
		MemoryContextSwitchTo(old);
		return;
	}
	/* a page is full at the smaller of the limit and the most the API serves */
	if (p->max_limit > 0 && p->max_limit < p->limit)
		p->limit = p->max_limit;
	/* a page of another offset than the one asked for is not this list's */
	{
		int			offset = json_count(member(pg->val.binary.data, "offset"));

		if (offset >= 0 && offset != job->list_offset)
		{
			p->why = psprintf("the API answered a %s page at offset %d for offset %d (does it ignore _offset?)",
							  p->what, offset, job->list_offset);
			MemoryContextSwitchTo(old);
			return;
		}
	}

	it = JsonbIteratorInit(results->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		JsonbValue *id;
		pg_uuid_t  *uuid;
		char	   *text;

		if (tok != WJB_ELEM)
			continue;
		if (v.type != jbvBinary || !JsonContainerIsObject(v.val.binary.data) ||
			(id = member(v.val.binary.data, "id")) == NULL || id->type != jbvString ||
			id->val.string.len != 36)
		{
			p->why = psprintf("the API answered a %s with an entry that is not an object with an \"id\"",
							  p->what);
			break;
		}
		text = pnstrdup(id->val.string.val, id->val.string.len);
		uuid = DatumGetUUIDP(DirectFunctionCall1(uuid_in, CStringGetDatum(text)));
		add_listed(job, uuid, JsonbValueToJsonb(&v));
		p->count++;
	}
	MemoryContextSwitchTo(old);
}

/* Whether the job's ticket's list holds its message */
static bool
list_holds_message(const SacJob *job)
{
	for (int i = 0; i < job->nlisted; i++)
		if (memcmp(&job->listed[i].id, &job->message_id, UUID_LEN) == 0)
			return true;
	return false;
}

/*
 * Read the page of a list (of what: for error texts) that answered 200 into
 * the job's list.  Returns false, the job deferred with the reason, when it
 * is not valid JSON of the documented shape.
 */
static bool
read_page(const SacEnv *env, SacJob *job, const char *what, PageRead *p)
{
	SacUnitError error;

	memset(p, 0, sizeof(*p));
	p->job = job;
	p->what = what;
	job->tenant->ok_now = true;
	if (!sac_run_unit(env, read_page_unit, p, &error))
	{
		sac_job_defer(job, psprintf("the API answered a %s that is not valid JSON or holds an invalid id (SQLSTATE %s)%s",
									what, unpack_sql_state(error.sqlerrcode), request_id_of(&job->req)),
					  -1, true);
		return false;
	}
	if (p->why != NULL)
	{
		sac_job_defer(job, psprintf("%s%s", p->why, request_id_of(&job->req)), -1, true);
		return false;
	}
	return true;
}

/*
 * A page of the message list answered 200: keep its messages, and ask for
 * the next page unless this one ended the list.  Returns true when another
 * request was prepared.
 */
static bool
advance_list(const SacEnv *env, SacJob *job)
{
	PageRead	p;

	if (!read_page(env, job, "message list", &p))
		return false;
	job->pages++;
	if (p.count > 0 && p.count >= p.limit)
	{
		if (job->pages >= MAX_LIST_PAGES)
		{
			sac_job_defer(job, psprintf("the ticket's message list has more than %d pages",
										MAX_LIST_PAGES), -1, true);
			return false;
		}
		job->list_offset += p.count;
		job->list_limit = p.max_limit > 0 ? p.max_limit : p.limit;
		prepare_list_page(job);
		return true;
	}

	/* the complete list */
	job->http_status = 200;
	job->rid = request_id_of(&job->req);
	if (job->topic == SAC_TOPIC_TICKET_MESSAGES)
	{
		job->decided = true;
		job->action = SAC_ACT_LIST;
		return false;
	}
	job->self_listed = list_holds_message(job);
	/*
	 * 404 from the single resource for a message the list holds: evidence
	 * that the base does not serve it (a DELETION's, or a lagging
	 * resource's, would be the same picture: several are needed, see
	 * apply.c).
	 */
	if (job->self_listed && job->single_not_found && job->status != SAC_CHANGE_DELETION)
		learn_single(job->tenant, SAC_SINGLE_UNSERVED, false,
					 "the single message resource answered 404 for messages their ticket's list holds");
	if (!job->self_listed && defer_if_lagging(job, 404))
		return false;
	job->decided = true;
	job->action = SAC_ACT_LIST;
	if (job->self_listed && job->status == SAC_CHANGE_DELETION &&
		job->rechecks < sac_deletion_rechecks)
	{
		decide_upsert(job);
		job->action = SAC_ACT_LIST;
	}
	return false;
}

/*
 * A page of a sync's walk answered 200: keep its tickets, and read on up to
 * SYNC_PAGES_PER_BATCH pages; a short or empty page ends the walk.
 * Returns true when another request was prepared.
 */
static bool
advance_sync(const SacEnv *env, SacJob *job)
{
	PageRead	p;

	job->http_status = 200;
	if (!read_page(env, job, "ticket list", &p))
		return false;
	job->pages++;
	job->list_limit = p.max_limit > 0 ? p.max_limit : p.limit;
	job->walk_complete = p.count == 0 || p.count < p.limit;
	job->list_offset += p.count > SYNC_PAGE_OVERLAP ? p.count - SYNC_PAGE_OVERLAP : p.count;
	job->walk_next_offset = job->list_offset;
	if (!job->walk_complete && job->pages < SYNC_PAGES_PER_BATCH)
	{
		prepare_sync_page(job);
		return true;
	}
	job->decided = true;
	job->action = SAC_ACT_SYNC;
	job->rid = request_id_of(&job->req);
	return false;
}

/*
 * Interpret the answer to the job's current request: decide the job, or
 * prepare its next request (returning true).  A job resolved as gone is
 * left undecided for sac_job_confirm_gone().
 */
bool
sac_job_advance(const SacEnv *env, SacJob *job)
{
	long		status = job->req.status;

	if (job->decided)
		return false;
	if (decide_failure(job))
	{
		/* a walk keeps the pages it read before the failure, and goes on */
		if (job->is_sync && job->pages > 0)
		{
			job->action = SAC_ACT_SYNC;
			job->walk_complete = false;
		}
		return false;
	}

	switch (job->step)
	{
		case SAC_STEP_SYNC_PAGE:
			if (status == 200)
				return advance_sync(env, job);
			/* 404, 405, 410, 501: the API lists no tickets here */
			decide_dead(job, psprintf("GET /v0/tickets answered HTTP %ld: the API does not list this tenant's tickets%s",
									  status, request_id_of(&job->req)));
			return false;

		case SAC_STEP_RESOURCE:
			if (status == 200)
			{
				job->tenant->ok_now = true;
				if (job->topic == SAC_TOPIC_MESSAGE)
					learn_single(job->tenant, SAC_SINGLE_SERVED, true,
								 "the single message resource answered 200");
				decide_upsert(job);
				return false;
			}
			if (job->topic == SAC_TOPIC_MESSAGE)
			{
				/* not proof of anything alone: read the ticket's list */
				if (status == 405 || status == 501)
					learn_single(job->tenant, SAC_SINGLE_UNSERVED, true,
								 psprintf("the single message resource answered HTTP %ld", status));
				else
					job->single_not_found = true;
				prepare_list_page(job);
				return true;
			}
			if (status == 405 || status == 501)
			{
				decide_dead(job, psprintf("HTTP %ld from the API%s", status, request_id_of(&job->req)));
				return false;
			}
			if (!defer_if_lagging(job, status))
				mark_gone(job, false);
			return false;

		case SAC_STEP_LIST:
			if (status == 200)
				return advance_list(env, job);
			if (status == 405 || status == 501)
			{
				decide_dead(job, psprintf("HTTP %ld from the ticket's message list%s", status,
										  request_id_of(&job->req)));
				return false;
			}
			/* the list is not there: is the ticket? */
			job->step = SAC_STEP_TICKET;
			{
				char		ticket[40];

				sac_uuid_to_cstring(&job->ticket_id, ticket);
				prepare_get(&job->req, job->tenant, psprintf("/v0/tickets/%s", ticket));
			}
			return true;

		case SAC_STEP_TICKET:
			if (status == 200)
			{
				job->tenant->ok_now = true;
				sac_job_defer(job, psprintf("the ticket's message list answered HTTP 404 while the ticket is served%s",
											request_id_of(&job->req)), -1, true);
				return false;
			}
			if (status == 405 || status == 501)
			{
				decide_dead(job, psprintf("HTTP %ld from the API for the message's ticket%s", status,
										  request_id_of(&job->req)));
				return false;
			}
			if (!defer_if_lagging(job, status))
				mark_gone(job, true);
			return false;
	}
	return false;
}

/*
 * Prepare the request that shows whether the tenant's API answers at all:
 * the first entry of its ticket list.
 */
void
sac_tenant_prepare_probe(SacTenant *tenant, SacHttpRequest *probe)
{
	memset(probe, 0, sizeof(*probe));
	prepare_get(probe, tenant, "/v0/tickets?_limit=1");
}

/*
 * Decide a job resolved as gone: a deletion when the tenant's API has shown
 * that it answers (alive: a 200 for the tenant since the job's first
 * request, or within sac_webhook.api_alive_window; else the probe, when
 * one was made), else a retry saying why nothing was deleted.
 */
void
sac_job_confirm_gone(SacJob *job, bool alive, const SacHttpRequest *probe)
{
	if (!job->gone || job->decided)
		return;
	if (alive || (probe && probe->curl_code == 0 && probe->status == 200))
	{
		job->decided = true;
		job->action = SAC_ACT_DELETE;
		return;
	}
	if (probe && probe->curl_code != 0)
		sac_job_defer(job, psprintf("HTTP %d for %s, but the API shows no sign of answering for this tenant (GET /v0/tickets: %s): nothing deleted",
									job->http_status, job->resource, probe->error), -1, true);
	else
		sac_job_defer(job, psprintf("HTTP %d for %s, but the API shows no sign of answering for this tenant (no 200 within sac_webhook.api_alive_window; GET /v0/tickets answered HTTP %ld): nothing deleted",
									job->http_status, job->resource, probe ? probe->status : 0L), -1, true);
}
