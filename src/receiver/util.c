/*-------------------------------------------------------------------------
 *
 * util.c
 *	  Small helpers used by every module of sac_webhook_receiver: logging to
 *	  stderr (text or JSON lines), allocation that exits on out-of-memory
 *	  like PostgreSQL's frontend pg_malloc(), clocks, and a bounded string
 *	  buffer with JSON string escaping.
 *
 * src/receiver/util.c
 *
 *-------------------------------------------------------------------------
 */
#include "receiver.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

static const char *
level_name(LogLevel level)
{
	switch (level)
	{
		case LOG_LEVEL_INFO:
			return "info";
		case LOG_LEVEL_WARNING:
			return "warning";
		case LOG_LEVEL_ERROR:
			return "error";
	}
	return "unknown";
}

/*
 * Write one complete log line to stderr.  A single write() keeps lines
 * from different threads from interleaving (stderr is unbuffered, and a
 * write of a few hundred bytes to a pipe or file is not split).
 */
void
log_write_line(const char *line, size_t len)
{
	while (len > 0)
	{
		ssize_t		n = write(STDERR_FILENO, line, len);

		if (n < 0)
			return;				/* nowhere left to complain to */
		line += n;
		len -= (size_t) n;
	}
}

static void
log_vmsg(LogLevel level, const char *fmt, va_list ap)
{
	char		message[1024];
	char		ts[40];
	StrBuf		sb;

	vsnprintf(message, sizeof(message), fmt, ap);
	format_utc_timestamp(ts, sizeof(ts));

	sb_init(&sb, 256, 4096);
	if (config.log_format == LOG_FORMAT_JSON)
	{
		sb_appends(&sb, "{\"ts\":\"");
		sb_appends(&sb, ts);
		sb_appendf(&sb, "\",\"level\":\"%s\",\"msg\":", level_name(level));
		sb_append_json_string(&sb, message);
		sb_appends(&sb, "}\n");
	}
	else
		sb_appendf(&sb, "%s %s: %s\n", ts, level_name(level), message);
	log_write_line(sb.data, sb.len);
	sb_free(&sb);
}

/* Log an operator message (never request bodies or secrets). */
void
log_msg(LogLevel level, const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	log_vmsg(level, fmt, ap);
	va_end(ap);
}

/* Log an error and exit(1); for start-up failures and out-of-memory. */
void
fatal(const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	log_vmsg(LOG_LEVEL_ERROR, fmt, ap);
	va_end(ap);
	exit(1);
}

void *
xmalloc(size_t size)
{
	void	   *p = malloc(size == 0 ? 1 : size);

	if (p == NULL)
		fatal("out of memory");
	return p;
}

void *
xcalloc(size_t n, size_t size)
{
	void	   *p = calloc(n == 0 ? 1 : n, size == 0 ? 1 : size);

	if (p == NULL)
		fatal("out of memory");
	return p;
}

void *
xrealloc(void *ptr, size_t size)
{
	void	   *p = realloc(ptr, size == 0 ? 1 : size);

	if (p == NULL)
		fatal("out of memory");
	return p;
}

char *
xstrdup(const char *s)
{
	char	   *p = strdup(s);

	if (p == NULL)
		fatal("out of memory");
	return p;
}

double
monotonic_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* ISO 8601 UTC with milliseconds, e.g. 2024-08-07T13:42:45.123Z */
void
format_utc_timestamp(char *buf, size_t bufsize)
{
	struct timespec ts;
	struct tm	tm;
	char		base[32];

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf, bufsize, "%s.%03ldZ", base, ts.tv_nsec / 1000000L);
}

/* ----------------------------------------------------------------
 * Bounded string buffer
 * ----------------------------------------------------------------
 */
void
sb_init(StrBuf *sb, size_t initial, size_t max)
{
	if (initial < 16)
		initial = 16;
	if (initial > max)
		initial = max;
	sb->data = xmalloc(initial);
	sb->data[0] = '\0';
	sb->len = 0;
	sb->cap = initial;
	sb->max = max;
	sb->truncated = false;
}

/* Make room for "extra" more bytes plus the terminator; false if over max. */
static bool
sb_reserve(StrBuf *sb, size_t extra)
{
	size_t		need;

	if (extra > sb->max || sb->len + 1 > sb->max - extra)
	{
		sb->truncated = true;
		return false;
	}
	need = sb->len + extra + 1;
	if (need > sb->cap)
	{
		size_t		newcap = sb->cap;

		while (newcap < need)
			newcap = (newcap > sb->max / 2) ? sb->max : newcap * 2;
		sb->data = xrealloc(sb->data, newcap);
		sb->cap = newcap;
	}
	return true;
}

void
sb_append(StrBuf *sb, const char *s, size_t n)
{
	if (!sb_reserve(sb, n))
		return;
	memcpy(sb->data + sb->len, s, n);
	sb->len += n;
	sb->data[sb->len] = '\0';
}

void
sb_appends(StrBuf *sb, const char *s)
{
	sb_append(sb, s, strlen(s));
}

void
sb_appendf(StrBuf *sb, const char *fmt,...)
{
	char		small[512];
	va_list		ap;
	int			n;

	va_start(ap, fmt);
	n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t) n < sizeof(small))
	{
		sb_append(sb, small, (size_t) n);
		return;
	}
	/* rare: a long line; format directly into the buffer */
	if (!sb_reserve(sb, (size_t) n))
		return;
	va_start(ap, fmt);
	vsnprintf(sb->data + sb->len, (size_t) n + 1, fmt, ap);
	va_end(ap);
	sb->len += (size_t) n;
}

/*
 * Append s as a JSON string literal, quotes included.  Control characters
 * are escaped; other bytes pass through (the database speaks UTF-8 to us).
 */
void
sb_append_json_string(StrBuf *sb, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p;

	sb_append(sb, "\"", 1);
	for (p = (const unsigned char *) s; *p; p++)
	{
		switch (*p)
		{
			case '"':
				sb_append(sb, "\\\"", 2);
				break;
			case '\\':
				sb_append(sb, "\\\\", 2);
				break;
			case '\n':
				sb_append(sb, "\\n", 2);
				break;
			case '\r':
				sb_append(sb, "\\r", 2);
				break;
			case '\t':
				sb_append(sb, "\\t", 2);
				break;
			default:
				if (*p < 0x20 || *p == 0x7f)
				{
					char		esc[6] = {'\\', 'u', '0', '0',
					hex[*p >> 4], hex[*p & 0xf]};

					sb_append(sb, esc, sizeof(esc));
				}
				else
					sb_append(sb, (const char *) p, 1);
				break;
		}
	}
	sb_append(sb, "\"", 1);
}

void
sb_free(StrBuf *sb)
{
	free(sb->data);
	sb->data = NULL;
	sb->len = sb->cap = 0;
}
