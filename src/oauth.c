/*-------------------------------------------------------------------------
 *
 * oauth.c
 *		Per-tenant OAuth access tokens: refresh at the token endpoint.
 *
 * Magalu's refresh tokens rotate on use, so two concurrent refreshes for one
 * tenant would lose it: the second would present a refresh token the first
 * just spent.  A refresh therefore runs under a session-level advisory lock
 * on the tenant (try-lock: a tenant being refreshed elsewhere is skipped
 * for this batch, its rows saying so), re-reads the tenant under the lock
 * (someone may have refreshed it meanwhile), calls the endpoint outside any
 * transaction, and stores the new access and refresh tokens in one
 * statement.  The lock is released on every way out, errors and query
 * cancels included.
 *
 * Nothing the endpoint sends is trusted as well-formed: the answer is read
 * with PostgreSQL's JSON parser; an access token must be an RFC 6750 bearer
 * token (it becomes a request header); expires_in may be any JSON number
 * (or a numeric string) and is clamped.  A rotated refresh token is stored
 * whatever else the answer holds, since the provider has already revoked
 * the one it replaces.
 *
 * A refresh that fails puts the tenant in back-off (token_retry_at, doubling
 * with each failure in a row): its rows are not claimed until then, so a
 * failing endpoint sees one request per tenant per period, not one per
 * notification.
 *
 * Tokens and client secrets never appear in logs, errors or tables other
 * than sac_webhook.tenants; their copies in memory are wiped after use.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

#include "oauth.h"

/* First key of our advisory locks: "SAC" */
#define SAC_LOCK_CLASS 0x534143

/* Bounds of an access token's lifetime as the endpoint states it (seconds) */
#define EXPIRES_IN_DEFAULT 3600
#define EXPIRES_IN_MIN 60
#define EXPIRES_IN_MAX 86400

/* The longest access token accepted */
#define MAX_TOKEN_LEN 16384

static SPIPlanPtr read_plan = NULL;
static SPIPlanPtr store_plan = NULL;
static SPIPlanPtr fail_plan = NULL;
static SPIPlanPtr recovery_plan = NULL;

static const char *const read_sql =
"SELECT t.client_id, t.client_secret, t.refresh_token, t.access_token,"
"       (t.access_token IS NULL OR"
"        coalesce(t.token_expires_at < pg_catalog.now() + pg_catalog.make_interval(secs => $2), false))"
"  FROM sac_webhook.tenants t WHERE t.tenant_id = $1";

/*
 * The back-off of a tenant whose refresh failed: the retry base delay
 * doubled for each failure in a row, up to the maximum delay ($3, $4: ms).
 */
#define TOKEN_RETRY_AT \
"pg_catalog.now() + pg_catalog.make_interval(secs => least(" \
"    $3::float8 * pg_catalog.power(2::float8, least(t.token_failure_streak, 30)::float8)," \
"    $4::float8) / 1000.0)"

/*
 * Store the endpoint's answer ($5: the access token, NULL when the answer
 * had none fit to use, $6 the refresh token, $7 the lifetime in seconds, $2
 * the error, NULL on success; what is NULL keeps its current value).
 */
static const char *const store_sql =
"UPDATE sac_webhook.tenants t"
"   SET access_token = coalesce($5, t.access_token),"
"       refresh_token = coalesce($6, t.refresh_token),"
"       token_expires_at = CASE WHEN $5 IS NOT NULL"
"                               THEN pg_catalog.now() + pg_catalog.make_interval(secs => $7)"
"                               ELSE t.token_expires_at END,"
"       token_refreshed_at = CASE WHEN $5 IS NOT NULL THEN pg_catalog.now()"
"                                 ELSE t.token_refreshed_at END,"
"       last_token_error = $2,"
"       token_failure_streak = CASE WHEN $5 IS NOT NULL THEN 0 ELSE t.token_failure_streak + 1 END,"
"       token_retry_at = CASE WHEN $5 IS NULL THEN " TOKEN_RETRY_AT " END,"
"       token_failing_since = CASE WHEN $5 IS NULL"
"                                  THEN coalesce(t.token_failing_since, pg_catalog.now()) END"
"  FROM (SELECT o.token_failing_since AS failing_since FROM sac_webhook.tenants o"
"         WHERE o.tenant_id = $1) o"
" WHERE t.tenant_id = $1"
" RETURNING t.token_failure_streak, o.failing_since";

/*
 * A tenant whose token recovers from failing refreshes is reconciled from
 * when the failures began: notifications of that time may be lost.
 */
static const char *const recovery_sql =
"SELECT sac_webhook.queue_sync($1, $2, 'recovery')";

static const char *const fail_sql =
"UPDATE sac_webhook.tenants t"
"   SET last_token_error = $2, token_failure_streak = t.token_failure_streak + 1,"
"       token_failing_since = coalesce(t.token_failing_since, pg_catalog.now()),"
"       token_retry_at = " TOKEN_RETRY_AT
" WHERE t.tenant_id = $1 RETURNING t.token_failure_streak";

typedef struct RefreshArgs
{
	const SacEnv *env;
	SacTenant  *tenant;
	const char *stale_token;
	MemoryContext cxt;
	LOCKTAG		lock;			/* the tenant's refresh lock */
	/* read under the lock */
	bool		locked;
	bool		already_fresh;
	char	   *client_id;
	char	   *client_secret;
	char	   *refresh_token;
	/* answer */
	const char *body;
	char	   *error;			/* why the tenant has no usable token */
	bool		recorded;		/* the failure is stored with the answer */
	bool		recovered;		/* refreshes had been failing since ... */
	TimestampTz failing_since;
} RefreshArgs;

/*
 * The tenant's refresh lock: the advisory lock that
 * pg_advisory_lock(5456195, uuid_hash(tenant_id)) takes.
 */
static void
tenant_lock_tag(LOCKTAG *tag, const pg_uuid_t *id)
{
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, (uint32) SAC_LOCK_CLASS,
						 (uint32) hash_bytes(id->data, UUID_LEN), 2);
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
 * Unit: take the tenant's refresh lock (held beyond the unit, by the
 * session) and read its credentials.
 */
static void
lock_unit(void *arg)
{
	RefreshArgs *r = (RefreshArgs *) arg;
	Oid			types[2] = {UUIDOID, INT4OID};
	Datum		values[2];
	HeapTuple	tup;
	TupleDesc	td;
	bool		isnull;
	char	   *current;

	sac_spi_prepare(&read_plan, read_sql, 2, types);
	values[0] = UUIDPGetDatum(&r->tenant->id);
	values[1] = Int32GetDatum(sac_token_refresh_margin_s);
	/* not read-only: in process(), tokens stored by earlier units must show */
	if (SPI_execute_plan(read_plan, values, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "tenant look-up failed");
	if (SPI_processed != 1)
	{
		r->error = MemoryContextStrdup(r->cxt, "the tenant is no longer registered");
		return;
	}
	tup = SPI_tuptable->vals[0];
	td = SPI_tuptable->tupdesc;

	r->locked = LockAcquire(&r->lock, ExclusiveLock, true, true) != LOCKACQUIRE_NOT_AVAIL;
	if (!r->locked)
		return;

	current = copy_text(tup, td, 4, r->cxt);
	if (!DatumGetBool(SPI_getbinval(tup, td, 5, &isnull)) && current != NULL &&
		(r->stale_token == NULL || strcmp(current, r->stale_token) != 0))
	{
		/* refreshed by someone else since we read it */
		r->already_fresh = true;
		r->tenant->access_token = current;
		return;
	}
	r->client_id = copy_text(tup, td, 1, r->cxt);
	r->client_secret = copy_text(tup, td, 2, r->cxt);
	r->refresh_token = copy_text(tup, td, 3, r->cxt);
}

/*
 * Is s a bearer token as RFC 6750 defines it (b64token: letters, digits and
 * "-._~+/", then any "=")?  Anything else could end the Authorization
 * header line and add headers of its own.
 */
static bool
valid_bearer_token(const char *s, int len)
{
	int			i = 0;

	if (len <= 0 || len > MAX_TOKEN_LEN)
		return false;
	while (i < len && s[i] != '\0' &&
		   (isalnum((unsigned char) s[i]) || strchr("-._~+/", s[i]) != NULL))
		i++;
	if (i == 0)
		return false;
	while (i < len && s[i] == '=')
		i++;
	return i == len;
}

/* The value of a top-level key of a JSON object, or NULL */
static JsonbValue *
json_member(Jsonb *doc, const char *key)
{
	JsonbValue	k;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	return findJsonbValueFromContainer(&doc->root, JB_FOBJECT, &k);
}

/*
 * expires_in as the endpoint sent it: any JSON number, or a string holding
 * one, clamped to [EXPIRES_IN_MIN, EXPIRES_IN_MAX]; the default when it is
 * missing or not a number.
 */
static double
read_expires_in(JsonbValue *v)
{
	char	   *text;
	char	   *end;
	double		secs;

	if (v == NULL)
		return EXPIRES_IN_DEFAULT;
	if (v->type == jbvNumeric)
		text = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));
	else if (v->type == jbvString)
		text = pnstrdup(v->val.string.val, v->val.string.len);
	else
		return EXPIRES_IN_DEFAULT;
	secs = strtod(text, &end);
	if (end == text || *end != '\0' || isnan(secs))
		return EXPIRES_IN_DEFAULT;
	/* an overflow reads as an infinity: clamped like any large value */
	return Max(Min(secs, (double) EXPIRES_IN_MAX), (double) EXPIRES_IN_MIN);
}

/*
 * Unit: read the endpoint's answer and store what it holds: the rotated
 * refresh token always, the access token when it is fit to use.
 */
static void
store_unit(void *arg)
{
	RefreshArgs *r = (RefreshArgs *) arg;
	Oid			types[7] = {UUIDOID, TEXTOID, INT4OID, INT4OID, TEXTOID, TEXTOID, FLOAT8OID};
	Datum		values[7];
	char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};
	Jsonb	   *doc;
	JsonbValue *access;
	JsonbValue *refresh;
	char	   *access_token = NULL;
	char	   *refresh_token = NULL;
	const char *why = NULL;
	bool		isnull;

	/*
	 * A rotated refresh token replaces one the provider has now revoked: it
	 * must survive a crash, though the worker commits asynchronously.
	 */
	sac_set_local("synchronous_commit", "on");

	doc = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(r->body)));
	if (!JB_ROOT_IS_OBJECT(doc))
	{
		r->error = MemoryContextStrdup(r->cxt, "token refresh failed: the token endpoint answered with JSON that is not an object");
		return;
	}
	access = json_member(doc, "access_token");
	refresh = json_member(doc, "refresh_token");
	/* a refresh token that is not a non-empty string counts as none */
	if (refresh != NULL && refresh->type == jbvString && refresh->val.string.len > 0)
		refresh_token = pnstrdup(refresh->val.string.val, refresh->val.string.len);

	if (access == NULL || access->type == jbvNull)
		why = "token refresh failed: the token endpoint answered without an access_token";
	else if (access->type != jbvString ||
			 !valid_bearer_token(access->val.string.val, access->val.string.len))
		why = "token refresh failed: the token endpoint answered with an access_token that is not a valid bearer token";
	else
		access_token = pnstrdup(access->val.string.val, access->val.string.len);

	sac_spi_prepare(&store_plan, store_sql, 7, types);
	values[0] = UUIDPGetDatum(&r->tenant->id);
	values[1] = why ? CStringGetTextDatum(why) : (Datum) 0;
	nulls[1] = why ? ' ' : 'n';
	values[2] = Int32GetDatum(sac_retry_base_delay_ms);
	values[3] = Int32GetDatum(sac_retry_max_delay_s * 1000);
	values[4] = access_token ? CStringGetTextDatum(access_token) : (Datum) 0;
	nulls[4] = access_token ? ' ' : 'n';
	values[5] = refresh_token ? CStringGetTextDatum(refresh_token) : (Datum) 0;
	nulls[5] = refresh_token ? ' ' : 'n';
	values[6] = Float8GetDatum(read_expires_in(json_member(doc, "expires_in")));
	if (SPI_execute_plan(store_plan, values, nulls, false, 1) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "token update failed");
	wipe(refresh_token);
	if (SPI_processed != 1)
	{
		wipe(access_token);
		r->error = MemoryContextStrdup(r->cxt, "the tenant is no longer registered");
		return;
	}
	if (why != NULL)
	{
		r->error = MemoryContextStrdup(r->cxt, why);
		r->recorded = true;
		r->tenant->failures = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
														  SPI_tuptable->tupdesc, 1, &isnull));
		r->tenant->backing_off = true;
		return;
	}
	r->tenant->access_token = MemoryContextStrdup(r->cxt, access_token);
	wipe(access_token);

	/* recovered from failing refreshes: reconcile since they began (later) */
	{
		Datum		since = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);

		if (!isnull)
		{
			r->failing_since = DatumGetTimestampTz(since);
			r->recovered = true;
		}
	}
}

/*
 * Unit: queue the recovery sync of a tenant whose token works again (a unit
 * of its own: its failure must not undo the stored tokens).
 */
static void
recovery_unit(void *arg)
{
	RefreshArgs *r = (RefreshArgs *) arg;
	Oid			types[2] = {UUIDOID, TIMESTAMPTZOID};
	Datum		values[2];

	values[0] = UUIDPGetDatum(&r->tenant->id);
	values[1] = TimestampTzGetDatum(r->failing_since);
	sac_spi_prepare(&recovery_plan, recovery_sql, 2, types);
	if (SPI_execute_plan(recovery_plan, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "sync queue failed");
}

/*
 * Unit: record why the refresh failed, and how many times in a row it has;
 * the tenant waits longer each time.
 */
static void
fail_unit(void *arg)
{
	RefreshArgs *r = (RefreshArgs *) arg;
	Oid			types[4] = {UUIDOID, TEXTOID, INT4OID, INT4OID};
	Datum		values[4];

	sac_spi_prepare(&fail_plan, fail_sql, 4, types);
	values[0] = UUIDPGetDatum(&r->tenant->id);
	values[1] = CStringGetTextDatum(r->error);
	values[2] = Int32GetDatum(sac_retry_base_delay_ms);
	values[3] = Int32GetDatum(sac_retry_max_delay_s * 1000);
	if (SPI_execute_plan(fail_plan, values, NULL, false, 1) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "tenant update failed");
	if (SPI_processed == 1)
	{
		bool		isnull;

		r->tenant->failures = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
														  SPI_tuptable->tupdesc, 1, &isnull));
		r->tenant->backing_off = true;
	}
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
 * Call the token endpoint with the tenant's credentials and store what it
 * answers; sets r->error when the tenant has no usable token afterwards.
 * The caller holds the tenant's refresh lock.
 */
static void
refresh_locked(RefreshArgs *r)
{
	SacHttpRequest req;
	SacHttpRequest *reqs[1];
	SacUnitError error;
	char	   *cid;
	char	   *csec;
	char	   *rt;
	char	   *form;

	if (r->client_id == NULL || r->client_secret == NULL || r->refresh_token == NULL)
	{
		r->error = psprintf("cannot refresh the access token: the tenant has no %s",
							r->refresh_token == NULL ? "refresh_token" :
							r->client_id == NULL ? "client_id" : "client_secret");
		return;
	}

	cid = sac_http_escape(r->client_id);
	csec = sac_http_escape(r->client_secret);
	rt = sac_http_escape(r->refresh_token);
	form = psprintf("grant_type=refresh_token&client_id=%s&client_secret=%s&refresh_token=%s",
					cid, csec, rt);
	memset(&req, 0, sizeof(req));
	req.url = sac_token_url;
	req.form = form;
	reqs[0] = &req;
	PG_TRY();
	{
		sac_http_perform(reqs, 1, !r->env->own_transactions, r->env->stop);
	}
	PG_FINALLY();
	{
		wipe(form);
		wipe(csec);
		wipe(rt);
		wipe(r->client_secret);
		wipe(r->refresh_token);
	}
	PG_END_TRY();

	if (req.interrupted)
	{
		/* the worker is stopping: nothing was learnt about the tenant */
		r->tenant->busy = true;
		return;
	}
	if (req.curl_code != 0 && !req.too_large)
		r->error = psprintf("token refresh failed: %s", req.error);
	else if (req.status != 200 || req.too_large)
	{
		const char *code = oauth_error_code(req.body);

		r->error = psprintf("token refresh failed: HTTP %ld%s%s%s", req.status,
							code ? " (" : "", code ? code : "", code ? ")" : "");
	}
	else
	{
		r->body = req.body;
		if (!sac_run_unit(r->env, store_unit, r, &error))
			r->error = psprintf("token refresh failed: the answer could not be stored: %s",
								error.message);
		else if (r->recovered && !sac_run_unit(r->env, recovery_unit, r, &error))
			sac_report_unit_error(WARNING, &error, "while queueing the recovery sync of a tenant");
	}
	if (req.body)
		wipe(req.body);
}

/*
 * Refresh a tenant's access token.  stale_token is the token the API just
 * refused (NULL when it is merely expiring).  On return the tenant has a
 * fresh access_token and refreshed = true, or unavailable = true with the
 * reason in error (busy: another session is refreshing it right now, or
 * the worker is stopping; backing_off: the failure was recorded and the
 * tenant's rows wait for its token_retry_at).
 */
void
sac_oauth_refresh(const SacEnv *env, SacTenant *tenant, const char *stale_token)
{
	RefreshArgs r;
	SacUnitError error;

	memset(&r, 0, sizeof(r));
	r.env = env;
	r.tenant = tenant;
	r.stale_token = stale_token;
	r.cxt = CurrentMemoryContext;
	tenant_lock_tag(&r.lock, &tenant->id);
	tenant->refreshed = true;

	if (!sac_run_unit(env, lock_unit, &r, &error))
	{
		if (r.locked)
			LockRelease(&r.lock, ExclusiveLock, true);
		tenant->unavailable = true;
		tenant->error = psprintf("could not read the tenant's credentials: %s", error.message);
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
		tenant->error = "waiting for another session to refresh the tenant's access token";
		return;
	}

	PG_TRY();
	{
		if (!r.already_fresh)
			refresh_locked(&r);
	}
	PG_FINALLY();
	{
		LockRelease(&r.lock, ExclusiveLock, true);
	}
	PG_END_TRY();

	if (tenant->busy)
		tenant->unavailable = true;
	else if (r.error)
	{
		tenant->unavailable = true;
		tenant->error = r.error;
		if (!r.recorded)
			sac_run_unit(env, fail_unit, &r, NULL);
		if (sac_shared)
			pg_atomic_fetch_add_u64(&sac_shared->token_failures, 1);
	}
	else if (!r.already_fresh && sac_shared)
		pg_atomic_fetch_add_u64(&sac_shared->token_refreshes, 1);
}
