/*-------------------------------------------------------------------------
 *
 * oauth.c
 *		Per-tenant OAuth access tokens: refresh at the token endpoint.
 *
 * Magalu's refresh tokens rotate on use, so two concurrent refreshes for one
 * tenant would lose it: the second would present a refresh token the first
 * just spent.  A refresh therefore runs under a session-level advisory lock
 * on the tenant (try-lock: a tenant being refreshed elsewhere is skipped
 * for this batch), re-reads the tenant under the lock (someone may have
 * refreshed it meanwhile), calls the endpoint outside any transaction, and
 * stores the new access and refresh tokens in one statement.
 *
 * Tokens and client secrets never appear in logs, errors or tables other
 * than sac_webhook.tenants; their copies in memory are wiped after use.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "utils/builtins.h"

#include "pipeline.h"

/* First key of our advisory locks: "SAC" */
#define SAC_LOCK_CLASS 0x534143

static SPIPlanPtr lock_plan = NULL;
static SPIPlanPtr unlock_plan = NULL;
static SPIPlanPtr store_plan = NULL;
static SPIPlanPtr fail_plan = NULL;

static const char *const lock_sql =
"SELECT pg_catalog.pg_try_advisory_lock($2, $3),"
"       t.client_id, t.client_secret, t.refresh_token, t.access_token,"
"       (t.access_token IS NULL OR coalesce(t.token_expires_at < now() + make_interval(secs => $4), false))"
"  FROM sac_webhook.tenants t WHERE t.tenant_id = $1";

static const char *const unlock_sql =
"SELECT pg_catalog.pg_advisory_unlock($1, $2)";

static const char *const store_sql =
"UPDATE sac_webhook.tenants t"
"   SET access_token = d->>'access_token',"
"       refresh_token = coalesce(d->>'refresh_token', t.refresh_token),"
"       token_expires_at = now() + make_interval(secs => coalesce((d->>'expires_in')::integer, 3600)),"
"       token_refreshed_at = now(), last_token_error = NULL, token_failure_streak = 0"
"  FROM (SELECT $2::jsonb AS d) s"
" WHERE t.tenant_id = $1 AND jsonb_typeof(d->'access_token') = 'string'"
" RETURNING t.access_token";

static const char *const fail_sql =
"UPDATE sac_webhook.tenants"
"   SET last_token_error = $2, token_failure_streak = token_failure_streak + 1"
" WHERE tenant_id = $1 RETURNING token_failure_streak";

typedef struct RefreshArgs
{
	SacTenant  *tenant;
	const char *stale_token;
	MemoryContext cxt;
	/* read under the lock */
	bool		locked;
	bool		already_fresh;
	char	   *client_id;
	char	   *client_secret;
	char	   *refresh_token;
	/* answer */
	const char *body;
	char	   *error;
} RefreshArgs;

static int32
tenant_lock_key(const pg_uuid_t *id)
{
	return (int32) hash_bytes(id->data, UUID_LEN);
}

static char *
copy_text(HeapTuple tup, TupleDesc td, int col, MemoryContext cxt)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, td, col, &isnull);
	MemoryContext old;
	char	   *s;

	if (isnull)
		return NULL;
	old = MemoryContextSwitchTo(cxt);
	s = TextDatumGetCString(d);
	MemoryContextSwitchTo(old);
	return s;
}

static void
wipe(char *s)
{
	if (s)
		explicit_bzero(s, strlen(s));
}

/*
 * Unit: take the tenant's refresh lock and read its credentials.
 */
static void
lock_unit(void *arg)
{
	RefreshArgs *r = (RefreshArgs *) arg;
	Oid			types[4] = {UUIDOID, INT4OID, INT4OID, INT4OID};
	Datum		values[4];
	HeapTuple	tup;
	TupleDesc	td;
	bool		isnull;
	char	   *current;

	sac_spi_prepare(&lock_plan, lock_sql, 4, types);
	values[0] = UUIDPGetDatum(&r->tenant->id);
	values[1] = Int32GetDatum(SAC_LOCK_CLASS);
	values[2] = Int32GetDatum(tenant_lock_key(&r->tenant->id));
	values[3] = Int32GetDatum(sac_token_refresh_margin_s);
	if (SPI_execute_plan(lock_plan, values, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "tenant look-up failed");
	if (SPI_processed != 1)
	{
		r->error = MemoryContextStrdup(r->cxt, "the tenant is no longer registered");
		return;
	}
	tup = SPI_tuptable->vals[0];
	td = SPI_tuptable->tupdesc;
	r->locked = DatumGetBool(SPI_getbinval(tup, td, 1, &isnull));
	if (!r->locked)
		return;

	current = copy_text(tup, td, 5, r->cxt);
	if (!DatumGetBool(SPI_getbinval(tup, td, 6, &isnull)) && current != NULL &&
		(r->stale_token == NULL || strcmp(current, r->stale_token) != 0))
	{
		/* refreshed by someone else since we read it */
		r->already_fresh = true;
		r->tenant->access_token = current;
		return;
	}
	r->client_id = copy_text(tup, td, 2, r->cxt);
	r->client_secret = copy_text(tup, td, 3, r->cxt);
	r->refresh_token = copy_text(tup, td, 4, r->cxt);
}

/*
 * Unit: store the endpoint's answer.
 */
static void
store_unit(void *arg)
{
	RefreshArgs *r = (RefreshArgs *) arg;
	Oid			types[2] = {UUIDOID, TEXTOID};
	Datum		values[2];

	/*
	 * A rotated refresh token replaces one the provider has now revoked: it
	 * must survive a crash, though the worker commits asynchronously.
	 */
	sac_set_local("synchronous_commit", "on");

	sac_spi_prepare(&store_plan, store_sql, 2, types);
	values[0] = UUIDPGetDatum(&r->tenant->id);
	values[1] = CStringGetTextDatum(r->body);
	if (SPI_execute_plan(store_plan, values, NULL, false, 1) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "token update failed");
	if (SPI_processed != 1)
	{
		r->error = MemoryContextStrdup(r->cxt, "the token endpoint answered without an access_token");
		return;
	}
	r->tenant->access_token = copy_text(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, r->cxt);
}

/*
 * Unit: record why the refresh failed, and how many times in a row it has;
 * the tenant's rows wait longer each time.
 */
static void
fail_unit(void *arg)
{
	RefreshArgs *r = (RefreshArgs *) arg;
	Oid			types[2] = {UUIDOID, TEXTOID};
	Datum		values[2];

	sac_spi_prepare(&fail_plan, fail_sql, 2, types);
	values[0] = UUIDPGetDatum(&r->tenant->id);
	values[1] = CStringGetTextDatum(r->error);
	if (SPI_execute_plan(fail_plan, values, NULL, false, 1) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "tenant update failed");
	if (SPI_processed == 1)
	{
		bool		isnull;

		r->tenant->failures = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
														  SPI_tuptable->tupdesc, 1, &isnull));
	}
}

/*
 * Unit: release the refresh lock.
 */
static void
unlock_unit(void *arg)
{
	RefreshArgs *r = (RefreshArgs *) arg;
	Oid			types[2] = {INT4OID, INT4OID};
	Datum		values[2];

	sac_spi_prepare(&unlock_plan, unlock_sql, 2, types);
	values[0] = Int32GetDatum(SAC_LOCK_CLASS);
	values[1] = Int32GetDatum(tenant_lock_key(&r->tenant->id));
	if (SPI_execute_plan(unlock_plan, values, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "advisory unlock failed");
}

/*
 * The "error" member of an OAuth error answer, when it is a plain code.
 */
static const char *
oauth_error_code(const char *body)
{
	const char *p = body ? strstr(body, "\"error\"") : NULL;
	static char code[48];
	int			n = 0;

	if (p == NULL)
		return NULL;
	p += 7;
	while (*p == ' ' || *p == ':')
		p++;
	if (*p++ != '"')
		return NULL;
	while (n < (int) sizeof(code) - 1 && (isalnum((unsigned char) p[n]) || p[n] == '_'))
	{
		code[n] = p[n];
		n++;
	}
	if (p[n] != '"' || n == 0)
		return NULL;
	code[n] = '\0';
	return code;
}

/*
 * Refresh a tenant's access token.  stale_token is the token the API just
 * refused (NULL when it is merely expiring).  On return the tenant has a
 * fresh access_token and refreshed = true, or unavailable = true with the
 * reason in error (busy: another session is refreshing it right now).
 */
void
sac_oauth_refresh(SacTenant *tenant, const char *stale_token)
{
	RefreshArgs r;
	SacHttpRequest req;
	SacHttpRequest *reqs[1];
	char	   *error = NULL;

	memset(&r, 0, sizeof(r));
	r.tenant = tenant;
	r.stale_token = stale_token;
	r.cxt = CurrentMemoryContext;
	tenant->refreshed = true;

	if (!sac_run_unit(lock_unit, &r, &error))
	{
		tenant->unavailable = true;
		tenant->error = psprintf("could not read the tenant's credentials: %s", error);
		return;
	}
	if (r.error)
	{
		tenant->unavailable = true;
		tenant->error = r.error;
		return;
	}
	if (!r.locked)
	{
		tenant->unavailable = true;
		tenant->busy = true;
		tenant->error = "the tenant's token is being refreshed by another session";
		return;
	}
	if (r.already_fresh)
	{
		sac_run_unit(unlock_unit, &r, NULL);
		return;
	}

	if (r.client_id == NULL || r.client_secret == NULL || r.refresh_token == NULL)
		r.error = psprintf("cannot refresh the access token: the tenant has no %s",
						   r.refresh_token == NULL ? "refresh_token" :
						   r.client_id == NULL ? "client_id" : "client_secret");
	else
	{
		char	   *cid = sac_http_escape(r.client_id);
		char	   *csec = sac_http_escape(r.client_secret);
		char	   *rt = sac_http_escape(r.refresh_token);
		char	   *form = psprintf("grant_type=refresh_token&client_id=%s&client_secret=%s&refresh_token=%s",
									cid, csec, rt);

		memset(&req, 0, sizeof(req));
		req.url = sac_token_url;
		req.form = form;
		reqs[0] = &req;
		PG_TRY();
		{
			sac_http_perform(reqs, 1, !sac_in_worker, NULL);
		}
		PG_CATCH();
		{
			wipe(form);
			wipe(csec);
			wipe(rt);
			wipe(r.client_secret);
			wipe(r.refresh_token);
			PG_RE_THROW();
		}
		PG_END_TRY();
		wipe(form);
		wipe(csec);
		wipe(rt);
		wipe(r.client_secret);
		wipe(r.refresh_token);

		if (req.curl_code != 0 && !req.too_large)
			r.error = psprintf("token refresh failed: %s", req.error);
		else if (req.status != 200 || req.too_large)
		{
			const char *code = oauth_error_code(req.body);

			r.error = psprintf("token refresh failed: HTTP %ld%s%s%s", req.status,
							   code ? " (" : "", code ? code : "", code ? ")" : "");
		}
		else
		{
			r.body = req.body;
			if (!sac_run_unit(store_unit, &r, &error))
				r.error = psprintf("token refresh failed: the answer could not be stored: %s", error);
		}
		if (req.body)
			wipe(req.body);
	}

	if (r.error)
	{
		tenant->unavailable = true;
		tenant->error = r.error;
		sac_run_unit(fail_unit, &r, NULL);
		if (sac_shared)
			pg_atomic_fetch_add_u64(&sac_shared->token_failures, 1);
	}
	else if (sac_shared)
		pg_atomic_fetch_add_u64(&sac_shared->token_refreshes, 1);
	sac_run_unit(unlock_unit, &r, NULL);
}
