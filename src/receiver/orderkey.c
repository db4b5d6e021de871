/*-------------------------------------------------------------------------
 *
 * orderkey.c
 *	  The lock-ordering key of a webhook payload: its tenant_id and
 *	  data.resource, read with a small JSON scanner.
 *
 * receive() stores a notification with INSERT ... ON CONFLICT on the
 * unique index of waiting rows over (tenant_id, resource), which locks
 * that row (or waits for whoever is inserting it) until the transaction
 * ends.  The pool stores several receipts per transaction, so two
 * transactions taking the same rows in different orders could deadlock.
 * Sorting every group by this key makes all of them take their locks in
 * one global order, and then no two of them can wait for each other in a
 * cycle.
 *
 * The key only orders work; the database still decides what is valid.  It
 * must, however, be the same for every spelling of the same row, so it
 * follows what receive() accepts: the keys are compared after JSON
 * unescaping, the UUID and the resource path in lower case (receive()
 * compares them without regard to case and stores them in lower case).
 * A payload whose key cannot be found (not an object, no such fields,
 * malformed JSON, or fields that receive() would reject) gets none; such
 * payloads normally lock nothing.
 *
 * The scanner never recurses, so deep nesting costs it nothing; it reads
 * the members of the top-level object and of its "data" object, and skips
 * every other value by counting brackets.
 *
 * src/receiver/orderkey.c
 *
 *-------------------------------------------------------------------------
 */
#include "receiver.h"

#include <stdio.h>
#include <string.h>

#define UUID_TEXT_LEN		36
#define MAX_FIELD_LEN		128 /* longer than any resource receive() takes */

typedef struct Scanner
{
	const char *p;
	bool		ok;				/* false once the text is found malformed */
} Scanner;

static void
skip_space(Scanner *s)
{
	while (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r')
		s->p++;
}

static int
hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Read a JSON string at s->p (which must be at its opening quote) and
 * decode it into out, lower-cased when "fold" is set.  *fits is cleared
 * when the value does not fit in outsize - 1 bytes or holds a character
 * outside ASCII (neither can be part of a key we use); the string is
 * still consumed.  Returns false on malformed input.
 */
static bool
read_string(Scanner *s, char *out, size_t outsize, bool fold, bool *fits)
{
	size_t		len = 0;

	*fits = true;
	if (*s->p != '"')
		return s->ok = false;
	s->p++;
	for (;;)
	{
		unsigned char c = (unsigned char) *s->p;
		int			ch;

		if (c == '\0' || c < 0x20)
			return s->ok = false;
		s->p++;
		if (c == '"')
			break;
		if (c == '\\')
		{
			char		e = *s->p++;

			switch (e)
			{
				case '"':
				case '\\':
				case '/':
					ch = e;
					break;
				case 'b':
					ch = '\b';
					break;
				case 'f':
					ch = '\f';
					break;
				case 'n':
					ch = '\n';
					break;
				case 'r':
					ch = '\r';
					break;
				case 't':
					ch = '\t';
					break;
				case 'u':
					ch = 0;
					for (int i = 0; i < 4; i++)
					{
						int			h = hex_value(s->p[i]);

						if (h < 0)
							return s->ok = false;
						ch = ch * 16 + h;
					}
					s->p += 4;
					break;
				default:
					return s->ok = false;
			}
		}
		else
			ch = c;
		if (ch == 0 || ch >= 0x80 || len + 1 >= outsize)
		{
			*fits = false;
			continue;
		}
		if (fold && ch >= 'A' && ch <= 'Z')
			ch += 'a' - 'A';
		out[len++] = (char) ch;
	}
	out[len] = '\0';
	return true;
}

/* Skip a string without decoding it. */
static bool
skip_string(Scanner *s)
{
	if (*s->p != '"')
		return s->ok = false;
	for (s->p++; *s->p != '"'; s->p++)
	{
		if (*s->p == '\0')
			return s->ok = false;
		if (*s->p == '\\' && *++s->p == '\0')
			return s->ok = false;
	}
	s->p++;
	return true;
}

/*
 * Skip one JSON value of any kind.  Nested objects and arrays are skipped
 * by counting brackets, without recursion; their inner syntax is only
 * checked loosely, which is enough for a key the database double-checks.
 */
static bool
skip_value(Scanner *s)
{
	long		depth = 0;

	skip_space(s);
	do
	{
		char		c = *s->p;

		if (c == '\0')
			return s->ok = false;
		if (c == '"')
		{
			if (!skip_string(s))
				return false;
			continue;
		}
		if (c == '{' || c == '[')
			depth++;
		else if (c == '}' || c == ']')
		{
			if (depth == 0)
				return s->ok = false;
			depth--;
		}
		else if (depth == 0 && (c == ',' || c == ':'))
			return s->ok = false;
		s->p++;
		/* a scalar at the top ends where the next delimiter starts */
		if (depth == 0 && c != '}' && c != ']')
		{
			while (*s->p != '\0' && strchr(",}] \t\r\n", *s->p) == NULL)
				s->p++;
		}
	} while (depth > 0);
	return true;
}

/*
 * Walk the members of the object at s->p.  For each member, "member" is
 * called with the decoded name; it consumes the value (or returns false
 * to have it skipped).  Returns false on malformed input.
 */
typedef bool (*MemberFunc) (Scanner *s, const char *name, void *arg);

static bool
scan_object(Scanner *s, MemberFunc member, void *arg)
{
	skip_space(s);
	if (*s->p != '{')
		return s->ok = false;
	s->p++;
	skip_space(s);
	if (*s->p == '}')
	{
		s->p++;
		return true;
	}
	for (;;)
	{
		char		name[16];
		bool		fits;

		skip_space(s);
		if (!read_string(s, name, sizeof(name), false, &fits))
			return false;
		skip_space(s);
		if (*s->p != ':')
			return s->ok = false;
		s->p++;
		skip_space(s);
		if (!(fits && member(s, name, arg)))
		{
			if (!s->ok || !skip_value(s))
				return false;
		}
		skip_space(s);
		if (*s->p == ',')
		{
			s->p++;
			continue;
		}
		if (*s->p == '}')
		{
			s->p++;
			return true;
		}
		return s->ok = false;
	}
}

typedef struct Fields
{
	char		tenant[MAX_FIELD_LEN];
	char		resource[MAX_FIELD_LEN];
	int			n_tenant;		/* how often each was seen */
	int			n_data;
	int			n_resource;
	bool		usable;			/* every value seen was a fitting string */
} Fields;

/* Members of "data": only "resource" matters. */
static bool
data_member(Scanner *s, const char *name, void *arg)
{
	Fields	   *f = arg;
	bool		fits;

	if (strcmp(name, "resource") != 0)
		return false;
	f->n_resource++;
	if (*s->p != '"')
	{
		f->usable = false;
		return false;
	}
	if (!read_string(s, f->resource, sizeof(f->resource), true, &fits))
		return false;
	if (!fits)
		f->usable = false;
	return true;
}

/* Members of the top-level object: "tenant_id" and "data". */
static bool
top_member(Scanner *s, const char *name, void *arg)
{
	Fields	   *f = arg;
	bool		fits;

	if (strcmp(name, "tenant_id") == 0)
	{
		f->n_tenant++;
		if (*s->p != '"')
		{
			f->usable = false;
			return false;
		}
		if (!read_string(s, f->tenant, sizeof(f->tenant), true, &fits))
			return false;
		if (!fits || strlen(f->tenant) != UUID_TEXT_LEN)
			f->usable = false;
		return true;
	}
	if (strcmp(name, "data") == 0)
	{
		f->n_data++;
		if (*s->p != '{')
		{
			f->usable = false;
			return false;
		}
		/* a malformed "data" leaves s->ok false, which ends the scan */
		scan_object(s, data_member, f);
		return s->ok;
	}
	return false;
}

/*
 * Compute the ordering key of a payload into key (ORDER_KEY_SIZE bytes
 * suffice): "TENANT_ID RESOURCE" in lower case.  Returns false, with key
 * set to "", when the payload has no usable key.
 */
bool
payload_order_key(const char *payload, char *key, size_t keysize)
{
	Scanner		s = {.p = payload,.ok = true};
	Fields		f;

	key[0] = '\0';
	if (payload == NULL)
		return false;
	memset(&f, 0, sizeof(f));
	f.usable = true;
	if (!scan_object(&s, top_member, &f))
		return false;
	skip_space(&s);
	if (*s.p != '\0' || !f.usable ||
		f.n_tenant != 1 || f.n_data != 1 || f.n_resource != 1)
		return false;
	if (strlen(f.tenant) + 1 + strlen(f.resource) + 1 > keysize)
		return false;
	snprintf(key, keysize, "%s %s", f.tenant, f.resource);
	return true;
}
