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
 * The lexer does not de-escape strings: the callbacks see the raw tokens,
 * de-escape the keys of the known objects and the values of the known
 * fields themselves, and only check the escapes of everything else.  So
 * \u0000, which cannot be converted to text, is an error in a known field
 * and is ignored in an unknown one.  Objects and arrays may be nested at
 * most SAC_MAX_DEPTH levels deep, which keeps the recursive parser far from
 * the stack depth limit.
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

/*
 * Deepest nesting of objects and arrays accepted, the payload itself being
 * level 1.  A notification needs 3 levels (the payload, data, params).
 */
#define SAC_MAX_DEPTH 64

typedef struct ParseState
{
	JsonLexContext *lex;		/* the lexer, positioned by the parser */
	int			depth;			/* nesting of objects and arrays */
	SacContext	ctx[SAC_MAX_DEPTH];
	SacField	cur_field;		/* known key whose value comes next */
	bool		seen[F_COUNT];
	char	   *value[F_COUNT]; /* string values of the scalar fields */
	/* the last unknown key of a known object, raw, for error details */
	SacContext	open_ctx;
	const char *open_key;
	int			open_key_len;
} ParseState;

static const char *const change_names[] = {"CREATION", "UPDATE", "DELETION"};

static char *shown_value(const char *value);

const char *
sac_topic_name(SacTopic topic)
{
	return topic == SAC_TOPIC_TICKET ? "sac_ticket" :
		topic == SAC_TOPIC_MESSAGE ? "sac_message" : "sac_ticket_messages";
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
 * Report a syntax error found by the lexer or by check_escapes().
 */
static void pg_attribute_noreturn()
invalid_json(JsonParseErrorType err, JsonLexContext *lex)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
			 errmsg("webhook payload is not valid JSON"),
			 errdetail("%s", json_errdetail(err, lex))));
}

/*
 * Report nesting deeper than SAC_MAX_DEPTH, naming the unknown key of a known
 * object under which it happens (only an unknown key can hold a container
 * inside a known field).
 */
static void pg_attribute_noreturn()
too_deep(ParseState *st)
{
	const char *parent;
	char	   *where;

	parent = st->open_ctx == CTX_DATA ? field_path[F_DATA] :
		st->open_ctx == CTX_PARAMS ? field_path[F_PARAMS] : "";
	where = psprintf("%s%s%.*s", parent, parent[0] ? "." : "",
					 st->open_key_len, st->open_key);
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("webhook payload is nested too deeply"),
			 errdetail("The payload nests objects and arrays more than %d levels deep in field %s.",
					   SAC_MAX_DEPTH, shown_value(where))));
}

/*
 * Enter an object or array.  A known object field opens its context; any
 * other known field must not hold a container.
 */
static void
enter(ParseState *st, JsonTokenType kind)
{
	SacContext	ctx = CTX_UNKNOWN;

	if (st->depth == SAC_MAX_DEPTH)
		too_deep(st);
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
	st->ctx[st->depth++] = ctx;
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
 * Value of the hexadecimal digits of a \uXXXX escape.
 */
static inline int
unicode_escape_value(const char *s)
{
	int			ch = 0;

	for (int i = 0; i < 4; i++)
	{
		char		c = s[i];

		ch = ch * 16 + (c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
	}
	return ch;
}

/*
 * Check the escapes of the raw string contents from s to end, which the lexer
 * has already found well-formed, for what de-escaping would reject: a UTF-16
 * surrogate escape without its other half.  \u0000 is accepted; *has_nul says
 * whether there was one.
 */
static void
check_escapes(ParseState *st, const char *s, const char *end, bool *has_nul)
{
	bool		high = false;	/* a high surrogate awaits its low one */

	*has_nul = false;
	while ((s = memchr(s, '\\', end - s)) != NULL)
	{
		int			ch;

		if (s[1] != 'u')
		{
			if (high)
				break;
			s += 2;
			continue;
		}
		ch = unicode_escape_value(s + 2);
		if (is_utf16_surrogate_first(ch))
		{
			if (high)
				invalid_json(JSON_UNICODE_HIGH_SURROGATE, st->lex);
			high = true;
		}
		else if (is_utf16_surrogate_second(ch))
		{
			if (!high)
				break;
			high = false;
		}
		else if (high)
			break;
		else if (ch == 0)
			*has_nul = true;
		s += 6;
		/* anything but another escape ends a surrogate pair too soon */
		if (high && s < end && *s != '\\')
			break;
	}
	if (high || s != NULL)
		invalid_json(JSON_UNICODE_LOW_SURROGATE, st->lex);
}

/*
 * Check the escapes of the string token the lexer is on, a value that is
 * not kept.
 */
static inline void
check_string(ParseState *st)
{
	const char *s = st->lex->token_start + 1;
	const char *end = st->lex->token_terminator - 1;
	bool		has_nul;

	if (memchr(s, '\\', end - s) != NULL)
		check_escapes(st, s, end, &has_nul);
}

/*
 * De-escape the string token of len bytes at tok (quotes included) with a
 * lexer of its own that asks for it, as the payload's lexer would have done.
 * f is the known field that the token is the value of, if any.
 */
static char *
unescape_string(ParseState *st, const char *tok, int len, SacField f)
{
	JsonParseErrorType err;

#if PG_VERSION_NUM >= 170000
	JsonLexContext *lex = makeJsonLexContextCstringLen(NULL, (char *) tok, len,
													   st->lex->input_encoding,
													   true);
#else
	JsonLexContext *lex = makeJsonLexContextCstringLen((char *) tok, len,
													   st->lex->input_encoding,
													   true);
#endif

	err = json_lex(lex);
	if (err == JSON_UNICODE_CODE_POINT_ZERO && f != F_NONE)
		ereport(ERROR,
				(errcode(ERRCODE_UNTRANSLATABLE_CHARACTER),
				 errmsg("unsupported Unicode escape sequence in webhook payload"),
				 errdetail("Field \"%s\" contains \\u0000, which cannot be converted to text.",
						   field_path[f])));
	if (err != JSON_SUCCESS)
		invalid_json(err, lex);
	return lex->strval->data;
}

/*
 * The string value of known field f: the token the lexer is on, de-escaped.
 */
static char *
string_value(ParseState *st, SacField f)
{
	const char *tok = st->lex->token_start;
	int			len = st->lex->token_terminator - tok;

	if (memchr(tok + 1, '\\', len - 2) == NULL)
		return pnstrdup(tok + 1, len - 2);
	return unescape_string(st, tok, len, f);
}

/*
 * The known field named by the len bytes of key in context ctx, if any.
 */
static SacField
known_field(SacContext ctx, const char *key, int len)
{
#define KEY_IS(name) (len == sizeof(name) - 1 && memcmp(key, name, len) == 0)
	switch (ctx)
	{
		case CTX_ROOT:
			if (KEY_IS("topic"))
				return F_TOPIC;
			if (KEY_IS("tenant_id"))
				return F_TENANT_ID;
			if (KEY_IS("data"))
				return F_DATA;
			break;
		case CTX_DATA:
			if (KEY_IS("status"))
				return F_STATUS;
			if (KEY_IS("params"))
				return F_PARAMS;
			if (KEY_IS("resource"))
				return F_RESOURCE;
			break;
		case CTX_PARAMS:
			if (KEY_IS("id"))
				return F_PARAMS_ID;
			if (KEY_IS("ticket_id"))
				return F_PARAMS_TICKET_ID;
			break;
		case CTX_UNKNOWN:
			break;
	}
#undef KEY_IS
	return F_NONE;
}

/*
 * A key, whose value the lexer is on: recognise it when it is known in the
 * current context, and reject a known key given twice.  The value of a known
 * string field is kept; the escapes of any other string are checked.
 *
 * The parser passes no key name, since the lexer does not de-escape: the raw
 * key is found back from the value, behind the colon and the whitespace
 * around it.  Inside the key a quote can only be escaped, that is preceded by
 * an odd number of backslashes.
 */
static SAC_JSON_ACTION
on_field_start(void *state, char *fname, bool isnull)
{
	ParseState *st = (ParseState *) state;
	JsonLexContext *lex = st->lex;
	SacContext	ctx = st->ctx[st->depth - 1];
	SacField	f = F_NONE;
	const char *key;
	const char *key_end;
	const char *p;
	bool		escaped;
	bool		has_nul = false;

	(void) fname;
	(void) isnull;

	/* the input ends after the colon: the parser reports that */
	if (lex->token_type == JSON_TOKEN_END)
		SAC_JSON_RETURN;

	p = lex->token_start - 1;
	while (*p != ':')
		p--;
	do
		p--;
	while (*p != '"');
	key_end = p;
	for (;;)
	{
		const char *q;

		do
			p--;
		while (*p != '"');
		for (q = p; q[-1] == '\\'; q--)
			;
		if ((p - q) % 2 == 0)
			break;
	}
	key = p + 1;

	escaped = memchr(key, '\\', key_end - key) != NULL;
	if (escaped)
		check_escapes(st, key, key_end, &has_nul);
	if (ctx != CTX_UNKNOWN)
	{
		if (!escaped)
			f = known_field(ctx, key, key_end - key);
		else if (!has_nul)
		{
			/* no known key has a \u0000 */
			char	   *name = unescape_string(st, key - 1, key_end - key + 2,
											   F_NONE);

			f = known_field(ctx, name, strlen(name));
		}
		if (f == F_NONE)
		{
			st->open_ctx = ctx;
			st->open_key = key;
			st->open_key_len = key_end - key;
		}
	}

	if (lex->token_type == JSON_TOKEN_STRING)
	{
		if (f != F_NONE && !field_is_object(f))
			st->value[f] = string_value(st, f);
		else
			check_string(st);
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

/*
 * An array element, which the lexer is on.  Arrays are only found where
 * nothing is kept, so a string element just has its escapes checked.
 */
static SAC_JSON_ACTION
on_array_element_start(void *state, bool isnull)
{
	ParseState *st = (ParseState *) state;

	(void) isnull;
	if (st->lex->token_type == JSON_TOKEN_STRING)
		check_string(st);
	SAC_JSON_RETURN;
}

/*
 * A scalar, which the lexer has already passed.  The value of a known field,
 * which on_field_start() kept, must be a string.
 */
static SAC_JSON_ACTION
on_scalar(void *state, char *token, JsonTokenType tokentype)
{
	ParseState *st = (ParseState *) state;

	(void) token;
	if (st->depth == 0)
		not_an_object(tokentype);
	if (st->cur_field != F_NONE)
	{
		if (tokentype != JSON_TOKEN_STRING || field_is_object(st->cur_field))
			wrong_type(st->cur_field, tokentype);
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
	else if (topic == SAC_TOPIC_TICKET_MESSAGES)
		snprintf(buf, SAC_RESOURCE_MAXLEN, "/v0/tickets/%s/messages", t);
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
	sem.array_element_start = on_array_element_start;
	sem.scalar = on_scalar;

	{
		/* no de-escaping: the callbacks do it for the known fields */
#if PG_VERSION_NUM >= 170000
		JsonLexContext lexbuf;
		JsonLexContext *lex = makeJsonLexContextCstringLen(&lexbuf, (char *) json,
														   len, GetDatabaseEncoding(),
														   false);
#else
		JsonLexContext *lex = makeJsonLexContextCstringLen((char *) json, len,
														   GetDatabaseEncoding(),
														   false);
#endif

		st.lex = lex;
		err = pg_parse_json(lex, &sem);
		if (err != JSON_SUCCESS)
			invalid_json(err, lex);
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
