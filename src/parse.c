/*-------------------------------------------------------------------------
 *
 * parse.c
 *		Strict parsing of Magalu SAC webhook notifications.
 *
 * A notification looks like
 *
 *	{"data": {"status": "CREATION", "params": {"id": "<uuid>"},
 *			  "resource": "/v0/tickets/<uuid>"},
 *	 "tenant_id": "<uuid>", "topic": "sac_ticket"}
 *
 * The text is read once with PostgreSQL's own JSON lexer/parser through
 * semantic-action callbacks; no jsonb is built.  Every known key must be
 * present exactly once with the right JSON type; unknown keys (at any depth)
 * are ignored.  The resource must be exactly the path implied by the topic
 * and the ids in params, so a payload can never choose what the worker
 * fetches.  Every rejection is an ERROR in SQLSTATE class 22 whose errdetail
 * names the offending field.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/jsonapi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "parser/scansup.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/uuid.h"

#include "sac_webhook.h"

PG_FUNCTION_INFO_V1(sac_webhook_parse_text);
PG_FUNCTION_INFO_V1(sac_webhook_parse_jsonb);

/* PostgreSQL 16 made the semantic actions return an error code */
#if PG_VERSION_NUM >= 160000
#define SAC_JSON_ACTION JsonParseErrorType
#define SAC_JSON_RETURN return JSON_SUCCESS
#else
#define SAC_JSON_ACTION void
#define SAC_JSON_RETURN return
#endif

/* The known keys, each a field path */
typedef enum SacField
{
	F_NONE = 0,
	F_TOPIC,
	F_TENANT_ID,
	F_DATA,
	F_STATUS,
	F_PARAMS,
	F_RESOURCE,
	F_PARAMS_ID,
	F_PARAMS_TICKET_ID,
	F_COUNT
} SacField;

static const char *const field_path[F_COUNT] = {
	"",
	"topic",
	"tenant_id",
	"data",
	"data.status",
	"data.params",
	"data.resource",
	"data.params.id",
	"data.params.ticket_id",
};

/* Kind of object we are inside of */
typedef enum SacContext
{
	CTX_UNKNOWN,
	CTX_ROOT,
	CTX_DATA,
	CTX_PARAMS
} SacContext;

#define SAC_MAX_TRACKED_DEPTH 64

typedef struct ParseState
{
	int			depth;			/* nesting of objects and arrays */
	SacContext	ctx[SAC_MAX_TRACKED_DEPTH];
	SacField	cur_field;		/* known key whose value comes next */
	bool		seen[F_COUNT];
	char	   *value[F_COUNT]; /* string values of the scalar fields */
} ParseState;

static const char *const change_names[] = {"CREATION", "UPDATE", "DELETION"};

const char *
sac_topic_name(SacTopic topic)
{
	return topic == SAC_TOPIC_TICKET ? "sac_ticket" : "sac_message";
}

const char *
sac_change_name(SacChange change)
{
	return change_names[change];
}

/*
 * Name of a JSON value kind, for "must be a string, not ..." details.
 */
static const char *
token_kind(JsonTokenType type)
{
	switch (type)
	{
		case JSON_TOKEN_STRING:
			return "a string";
		case JSON_TOKEN_NUMBER:
			return "a number";
		case JSON_TOKEN_TRUE:
		case JSON_TOKEN_FALSE:
			return "a boolean";
		case JSON_TOKEN_NULL:
			return "null";
		case JSON_TOKEN_OBJECT_START:
			return "an object";
		case JSON_TOKEN_ARRAY_START:
			return "an array";
		default:
			return "something else";
	}
}

static inline bool
field_is_object(SacField f)
{
	return f == F_DATA || f == F_PARAMS;
}

/*
 * Report a known field holding a value of the wrong JSON type.
 */
static void pg_attribute_noreturn()
wrong_type(SacField f, JsonTokenType got)
{
	ereport(ERROR,
			(errcode(got == JSON_TOKEN_NULL ? ERRCODE_NULL_VALUE_NOT_ALLOWED
					 : ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("webhook payload field has the wrong type"),
			 errdetail("Field \"%s\" must be %s, not %s.", field_path[f],
					   field_is_object(f) ? "an object" : "a string",
					   token_kind(got))));
}

static void pg_attribute_noreturn()
not_an_object(JsonTokenType got)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("webhook payload must be a JSON object"),
			 errdetail("The payload is %s.", token_kind(got))));
}

/*
 * Enter an object or array.  A known object field opens its context; any
 * other known field must not hold a container.
 */
static void
enter(ParseState *st, JsonTokenType kind)
{
	SacContext	ctx = CTX_UNKNOWN;

	if (st->depth == 0)
	{
		if (kind != JSON_TOKEN_OBJECT_START)
			not_an_object(kind);
		ctx = CTX_ROOT;
	}
	else if (st->cur_field != F_NONE)
	{
		if (kind != JSON_TOKEN_OBJECT_START || !field_is_object(st->cur_field))
			wrong_type(st->cur_field, kind);
		ctx = st->cur_field == F_DATA ? CTX_DATA : CTX_PARAMS;
	}
	st->cur_field = F_NONE;
	if (st->depth < SAC_MAX_TRACKED_DEPTH)
		st->ctx[st->depth] = ctx;
	st->depth++;
}

static SAC_JSON_ACTION
on_object_start(void *state)
{
	enter((ParseState *) state, JSON_TOKEN_OBJECT_START);
	SAC_JSON_RETURN;
}

static SAC_JSON_ACTION
on_array_start(void *state)
{
	enter((ParseState *) state, JSON_TOKEN_ARRAY_START);
	SAC_JSON_RETURN;
}

static SAC_JSON_ACTION
on_struct_end(void *state)
{
	ParseState *st = (ParseState *) state;

	st->depth--;
	st->cur_field = F_NONE;
	SAC_JSON_RETURN;
}

/*
 * A key: recognise it when it is known in the current context, and reject
 * a known key given twice.
 */
static SAC_JSON_ACTION
on_field_start(void *state, char *fname, bool isnull)
{
	ParseState *st = (ParseState *) state;
	SacContext	ctx;
	SacField	f = F_NONE;

	(void) isnull;
	ctx = (st->depth - 1 < SAC_MAX_TRACKED_DEPTH) ? st->ctx[st->depth - 1] : CTX_UNKNOWN;
	switch (ctx)
	{
		case CTX_ROOT:
			if (strcmp(fname, "topic") == 0)
				f = F_TOPIC;
			else if (strcmp(fname, "tenant_id") == 0)
				f = F_TENANT_ID;
			else if (strcmp(fname, "data") == 0)
				f = F_DATA;
			break;
		case CTX_DATA:
			if (strcmp(fname, "status") == 0)
				f = F_STATUS;
			else if (strcmp(fname, "params") == 0)
				f = F_PARAMS;
			else if (strcmp(fname, "resource") == 0)
				f = F_RESOURCE;
			break;
		case CTX_PARAMS:
			if (strcmp(fname, "id") == 0)
				f = F_PARAMS_ID;
			else if (strcmp(fname, "ticket_id") == 0)
				f = F_PARAMS_TICKET_ID;
			break;
		case CTX_UNKNOWN:
			break;
	}
	if (f != F_NONE)
	{
		if (st->seen[f])
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("webhook payload has a duplicate field"),
					 errdetail("Field \"%s\" appears more than once.",
							   field_path[f])));
		st->seen[f] = true;
	}
	st->cur_field = f;
	SAC_JSON_RETURN;
}

static SAC_JSON_ACTION
on_scalar(void *state, char *token, JsonTokenType tokentype)
{
	ParseState *st = (ParseState *) state;

	if (st->depth == 0)
		not_an_object(tokentype);
	if (st->cur_field != F_NONE)
	{
		if (tokentype != JSON_TOKEN_STRING || field_is_object(st->cur_field))
			wrong_type(st->cur_field, tokentype);
		st->value[st->cur_field] = token;
		st->cur_field = F_NONE;
	}
	SAC_JSON_RETURN;
}

/*
 * Text of a field value for an error detail: quoted, and cut short so a
 * hostile payload cannot flood the log.
 */
static char *
shown_value(const char *value)
{
	int			len = strlen(value);

	if (len > 100)
		len = pg_mbcliplen(value, len, 100);
	return psprintf("\"%.*s%s\"", len, value, value[len] ? "..." : "");
}

static const char *
required(ParseState *st, SacField f)
{
	if (!st->seen[f])
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("webhook payload is missing a required field"),
				 errdetail("Field \"%s\" is missing.", field_path[f])));
	return st->value[f];
}

/*
 * True if s has the canonical 8-4-4-4-12 hexadecimal UUID shape (any case).
 */
static bool
uuid_shaped(const char *s)
{
	for (int i = 0; i < 36; i++)
	{
		char		c = s[i];

		if (i == 8 || i == 13 || i == 18 || i == 23)
		{
			if (c != '-')
				return false;
		}
		else if (!isxdigit((unsigned char) c))
			return false;
	}
	return s[36] == '\0';
}

/*
 * Read a UUID field: the hyphenated form only, converted by uuid_in.
 */
static void
read_uuid(ParseState *st, SacField f, pg_uuid_t *out)
{
	const char *s = required(st, f);
	pg_uuid_t  *u;

	if (!uuid_shaped(s))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid UUID in webhook payload"),
				 errdetail("Field \"%s\" is %s, not a UUID such as \"3b5cf468-c858-404b-9e53-630e3df9d74a\".",
						   field_path[f], shown_value(s))));
	u = DatumGetUUIDP(DirectFunctionCall1(uuid_in, CStringGetDatum(s)));
	memcpy(out, u, sizeof(pg_uuid_t));
}

/*
 * Write a UUID in canonical lower-case form into buf (37 bytes).
 */
void
sac_uuid_to_cstring(const pg_uuid_t *uuid, char *buf)
{
	static const char hex[] = "0123456789abcdef";
	char	   *p = buf;

	for (int i = 0; i < UUID_LEN; i++)
	{
		if (i == 4 || i == 6 || i == 8 || i == 10)
			*p++ = '-';
		*p++ = hex[uuid->data[i] >> 4];
		*p++ = hex[uuid->data[i] & 0x0F];
	}
	*p = '\0';
}

/*
 * The canonical resource path of a ticket or message.
 */
void
sac_format_resource(char *buf, SacTopic topic, const pg_uuid_t *ticket_id,
					const pg_uuid_t *message_id)
{
	char		t[UUID_LEN * 2 + 5];
	char		m[UUID_LEN * 2 + 5];

	sac_uuid_to_cstring(ticket_id, t);
	if (topic == SAC_TOPIC_TICKET)
		snprintf(buf, SAC_RESOURCE_MAXLEN, "/v0/tickets/%s", t);
	else
	{
		sac_uuid_to_cstring(message_id, m);
		snprintf(buf, SAC_RESOURCE_MAXLEN, "/v0/tickets/%s/messages/%s", t, m);
	}
}

/*
 * Parse and validate one notification.  Raises an ERROR (class 22) for any
 * defect; on return *out is complete.
 */
void
sac_parse_payload(const char *json, int len, SacNotification *out)
{
	ParseState	st;
	JsonSemAction sem;
	JsonParseErrorType err;
	const char *topic;
	const char *status;
	const char *resource;
	char		expected[SAC_RESOURCE_MAXLEN];
	int			i;

	/* Empty or blank input */
	for (i = 0; i < len; i++)
		if (!scanner_isspace(json[i]))
			break;
	if (i == len)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("webhook payload is empty"),
				 errdetail("A webhook payload must be a JSON object.")));

	if (!pg_verify_mbstr(GetDatabaseEncoding(), json, len, true))
		ereport(ERROR,
				(errcode(ERRCODE_CHARACTER_NOT_IN_REPERTOIRE),
				 errmsg("webhook payload is not valid %s",
						GetDatabaseEncodingName()),
				 errdetail("The payload contains an invalid byte sequence.")));

	memset(&st, 0, sizeof(st));
	memset(&sem, 0, sizeof(sem));
	sem.semstate = &st;
	sem.object_start = on_object_start;
	sem.object_end = on_struct_end;
	sem.array_start = on_array_start;
	sem.array_end = on_struct_end;
	sem.object_field_start = on_field_start;
	sem.scalar = on_scalar;

	{
#if PG_VERSION_NUM >= 170000
		JsonLexContext lexbuf;
		JsonLexContext *lex = makeJsonLexContextCstringLen(&lexbuf, (char *) json,
														   len, GetDatabaseEncoding(),
														   true);
#else
		JsonLexContext *lex = makeJsonLexContextCstringLen((char *) json, len,
														   GetDatabaseEncoding(),
														   true);
#endif

		err = pg_parse_json(lex, &sem);
		if (err != JSON_SUCCESS)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
					 errmsg("webhook payload is not valid JSON"),
					 errdetail("%s", json_errdetail(err, lex))));
	}

	/* topic */
	topic = required(&st, F_TOPIC);
	if (strcmp(topic, "sac_ticket") == 0)
		out->topic = SAC_TOPIC_TICKET;
	else if (strcmp(topic, "sac_message") == 0)
		out->topic = SAC_TOPIC_MESSAGE;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown webhook topic"),
				 errdetail("Field \"topic\" is %s; expected \"sac_ticket\" or \"sac_message\".",
						   shown_value(topic))));

	/* tenant */
	read_uuid(&st, F_TENANT_ID, &out->tenant_id);

	/* data and its status */
	required(&st, F_DATA);
	status = required(&st, F_STATUS);
	for (i = 0; i < (int) lengthof(change_names); i++)
		if (strcmp(status, change_names[i]) == 0)
			break;
	if (i == (int) lengthof(change_names))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown webhook status"),
				 errdetail("Field \"data.status\" is %s; expected \"CREATION\", \"UPDATE\" or \"DELETION\".",
						   shown_value(status))));
	out->status = (SacChange) i;

	/* params */
	required(&st, F_PARAMS);
	if (out->topic == SAC_TOPIC_TICKET)
	{
		read_uuid(&st, F_PARAMS_ID, &out->ticket_id);
		memset(&out->message_id, 0, sizeof(pg_uuid_t));
	}
	else
	{
		read_uuid(&st, F_PARAMS_TICKET_ID, &out->ticket_id);
		read_uuid(&st, F_PARAMS_ID, &out->message_id);
	}

	/* resource: exactly the path the topic and ids imply */
	resource = required(&st, F_RESOURCE);
	sac_format_resource(expected, out->topic, &out->ticket_id, &out->message_id);
	if (pg_strcasecmp(resource, expected) != 0 ||
		strncmp(resource, "/v0/tickets/", 12) != 0 ||
		(out->topic == SAC_TOPIC_MESSAGE && strstr(resource, "/messages/") == NULL))
	{
		if (out->topic == SAC_TOPIC_TICKET)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("webhook resource does not match its topic and params"),
					 errdetail("Field \"data.resource\" is %s; it must be \"/v0/tickets/{id}\" with the id of \"data.params.id\".",
							   shown_value(resource))));
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("webhook resource does not match its topic and params"),
					 errdetail("Field \"data.resource\" is %s; it must be \"/v0/tickets/{ticket_id}/messages/{id}\" with the ids of \"data.params\".",
							   shown_value(resource))));
	}
	memcpy(out->resource, expected, SAC_RESOURCE_MAXLEN);
}

/* Per-call-site cache for the SQL-callable parse functions */
typedef struct ParseFnCache
{
	TupleDesc	tupdesc;
	Oid			change_oids[lengthof(change_names)];
} ParseFnCache;

/*
 * Build the sac_webhook.notification row for a parsed notification.
 */
static Datum
notification_datum(FunctionCallInfo fcinfo, const SacNotification *n)
{
	ParseFnCache *cache = (ParseFnCache *) fcinfo->flinfo->fn_extra;
	Datum		values[7];
	bool		nulls[7] = {false};
	JsonbParseState *jstate = NULL;
	JsonbValue	k,
				v;
	JsonbValue *res;
	char		ids[2][UUID_LEN * 2 + 5];

	if (cache == NULL)
	{
		TupleDesc	tupdesc;
		MemoryContext old;
		Oid			enum_type;

		old = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);
		cache = palloc0(sizeof(ParseFnCache));
		if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("function returning record called in context that cannot accept type record")));
		cache->tupdesc = BlessTupleDesc(CreateTupleDescCopy(tupdesc));
		enum_type = TupleDescAttr(cache->tupdesc, 1)->atttypid;
		for (int i = 0; i < (int) lengthof(change_names); i++)
			cache->change_oids[i] =
				DatumGetObjectId(DirectFunctionCall2(enum_in,
													 CStringGetDatum(change_names[i]),
													 ObjectIdGetDatum(enum_type)));
		fcinfo->flinfo->fn_extra = cache;
		MemoryContextSwitchTo(old);
	}

	sac_uuid_to_cstring(&n->ticket_id, ids[0]);
	if (n->topic == SAC_TOPIC_MESSAGE)
		sac_uuid_to_cstring(&n->message_id, ids[1]);

	/* params, rebuilt from the validated ids (keys in jsonb order) */
	pushJsonbValue(&jstate, WJB_BEGIN_OBJECT, NULL);
	k.type = jbvString;
	v.type = jbvString;
	k.val.string.val = "id";
	k.val.string.len = 2;
	v.val.string.val = ids[n->topic == SAC_TOPIC_MESSAGE ? 1 : 0];
	v.val.string.len = 36;
	pushJsonbValue(&jstate, WJB_KEY, &k);
	pushJsonbValue(&jstate, WJB_VALUE, &v);
	if (n->topic == SAC_TOPIC_MESSAGE)
	{
		k.val.string.val = "ticket_id";
		k.val.string.len = 9;
		v.val.string.val = ids[0];
		pushJsonbValue(&jstate, WJB_KEY, &k);
		pushJsonbValue(&jstate, WJB_VALUE, &v);
	}
	res = pushJsonbValue(&jstate, WJB_END_OBJECT, NULL);

	values[0] = CStringGetTextDatum(sac_topic_name(n->topic));
	values[1] = ObjectIdGetDatum(cache->change_oids[n->status]);
	values[2] = UUIDPGetDatum(&n->tenant_id);
	values[3] = CStringGetTextDatum(n->resource);
	values[4] = JsonbPGetDatum(JsonbValueToJsonb(res));
	values[5] = UUIDPGetDatum(&n->ticket_id);
	if (n->topic == SAC_TOPIC_MESSAGE)
		values[6] = UUIDPGetDatum(&n->message_id);
	else
		nulls[6] = true;

	return HeapTupleGetDatum(heap_form_tuple(cache->tupdesc, values, nulls));
}

/*
 * sac_webhook.parse(payload text) RETURNS sac_webhook.notification
 */
Datum
sac_webhook_parse_text(PG_FUNCTION_ARGS)
{
	text	   *payload = PG_GETARG_TEXT_PP(0);
	SacNotification *n = palloc(sizeof(SacNotification));

	sac_parse_payload(VARDATA_ANY(payload), VARSIZE_ANY_EXHDR(payload), n);
	PG_RETURN_DATUM(notification_datum(fcinfo, n));
}

/*
 * sac_webhook.parse(payload jsonb) RETURNS sac_webhook.notification
 *
 * jsonb has already merged duplicate keys, so only the remaining checks can
 * apply; the document is printed and read by the same strict parser.
 */
Datum
sac_webhook_parse_jsonb(PG_FUNCTION_ARGS)
{
	Jsonb	   *jb = PG_GETARG_JSONB_P(0);
	SacNotification *n = palloc(sizeof(SacNotification));
	char	   *s = JsonbToCString(NULL, &jb->root, VARSIZE(jb));

	sac_parse_payload(s, strlen(s), n);
	PG_RETURN_DATUM(notification_datum(fcinfo, n));
}
