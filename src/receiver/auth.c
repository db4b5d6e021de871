/*-------------------------------------------------------------------------
 *
 * auth.c
 *	  Who may post: the shared secret (in the path or the X-Webhook-Secret
 *	  header) and, optionally, Standard Webhooks HMAC-SHA256 signatures
 *	  (https://www.standardwebhooks.com) with any of several secrets, so a
 *	  secret can be rotated without downtime.
 *
 * Only a SHA-256 digest of the shared secret is kept in memory; candidates
 * are hashed the same way and the digests compared with CRYPTO_memcmp(),
 * so neither the content nor the length of the secret leaks through
 * timing.
 *
 * src/receiver/auth.c
 *
 *-------------------------------------------------------------------------
 */
#include "receiver.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

/* Standard Webhooks: reject timestamps further than this from our clock. */
#define SIGNATURE_TOLERANCE_S	300

/* Sanity bounds on header sizes we are willing to hash. */
#define MAX_MSG_ID_LEN			256
#define MAX_TIMESTAMP_LEN		20

typedef struct HmacKey
{
	unsigned char *key;
	int			keylen;
} HmacKey;

static unsigned char secret_digest[32];
static bool have_secret = false;

static HmacKey *hmac_keys = NULL;
static int	n_hmac_keys = 0;

/* SHA-256 of data into out[32]; fatal on library failure. */
static void
sha256(const void *data, size_t len, unsigned char out[32])
{
	unsigned int outlen = 0;

	if (!EVP_Digest(data, len, out, &outlen, EVP_sha256(), NULL) || outlen != 32)
		fatal("could not compute SHA-256 digest");
}

void
auth_set_secret(const char *secret)
{
	sha256(secret, strlen(secret), secret_digest);
	have_secret = true;
}

/*
 * Constant-time check of a client-supplied secret (need not be
 * NUL-terminated).
 */
bool
auth_check_secret(const char *candidate, size_t len)
{
	unsigned char digest[32];

	if (!have_secret || candidate == NULL)
		return false;
	sha256(candidate, len, digest);
	return CRYPTO_memcmp(digest, secret_digest, sizeof(digest)) == 0;
}

/*
 * Add a Standard Webhooks secret: "whsec_" followed by base64 of the key
 * (the prefix is optional).  On failure returns false and sets *why.
 */
bool
auth_add_hmac_secret(const char *whsec, const char **why)
{
	const char *b64 = whsec;
	size_t		len;
	size_t		padding = 0;
	unsigned char *key;
	int			n;

	if (strncmp(b64, "whsec_", 6) == 0)
		b64 += 6;
	len = strlen(b64);
	if (len == 0 || len % 4 != 0 || len > 1024)
	{
		*why = "the secret must be \"whsec_\" followed by padded base64";
		return false;
	}
	for (size_t i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) b64[i];

		if (c == '=' && i >= len - 2)
			continue;
		if (!isalnum(c) && c != '+' && c != '/')
		{
			*why = "the secret must be \"whsec_\" followed by padded base64";
			return false;
		}
	}
	if (b64[len - 2] == '=' && b64[len - 1] != '=')
	{
		*why = "the secret must be \"whsec_\" followed by padded base64";
		return false;
	}
	if (b64[len - 1] == '=')
		padding++;
	if (b64[len - 2] == '=')
		padding++;

	key = xmalloc(len / 4 * 3 + 1);
	n = EVP_DecodeBlock(key, (const unsigned char *) b64, (int) len);
	if (n < 0 || (size_t) n < padding)
	{
		OPENSSL_cleanse(key, len / 4 * 3 + 1);
		free(key);
		*why = "the secret is not valid base64";
		return false;
	}
	n -= (int) padding;
	if (n < 16)
	{
		OPENSSL_cleanse(key, len / 4 * 3 + 1);
		free(key);
		*why = "the decoded secret is shorter than 16 bytes";
		return false;
	}
	hmac_keys = xrealloc(hmac_keys, sizeof(HmacKey) * (size_t) (n_hmac_keys + 1));
	hmac_keys[n_hmac_keys].key = key;
	hmac_keys[n_hmac_keys].keylen = n;
	n_hmac_keys++;
	return true;
}

int
auth_hmac_secret_count(void)
{
	return n_hmac_keys;
}

/* Parse a decimal Unix timestamp made of digits only. */
static bool
parse_timestamp(const char *s, long long *result)
{
	long long	v = 0;
	size_t		len = strlen(s);

	if (len == 0 || len > 18)
		return false;
	for (size_t i = 0; i < len; i++)
	{
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*result = v;
	return true;
}

/*
 * Verify a Standard Webhooks signature.
 *
 * The signed content is "<webhook-id>.<webhook-timestamp>.<body>"; the
 * webhook-signature header holds space-separated "v1,<base64>" entries
 * (other versions are ignored).  The request passes when any entry matches
 * the HMAC-SHA256 under any configured secret and the timestamp is within
 * five minutes of now.  Missing headers fail.
 */
bool
auth_verify_signature(const char *msg_id, const char *timestamp,
					  const char *signatures,
					  const char *body, size_t body_len, time_t now)
{
	long long	ts;
	size_t		id_len,
				ts_len,
				content_len;
	unsigned char *content;
	bool		ok = false;

	if (msg_id == NULL || timestamp == NULL || signatures == NULL)
		return false;
	id_len = strlen(msg_id);
	ts_len = strlen(timestamp);
	if (id_len == 0 || id_len > MAX_MSG_ID_LEN || ts_len > MAX_TIMESTAMP_LEN)
		return false;
	if (!parse_timestamp(timestamp, &ts))
		return false;
	if (ts > (long long) now + SIGNATURE_TOLERANCE_S ||
		ts < (long long) now - SIGNATURE_TOLERANCE_S)
		return false;

	content_len = id_len + 1 + ts_len + 1 + body_len;
	content = xmalloc(content_len);
	memcpy(content, msg_id, id_len);
	content[id_len] = '.';
	memcpy(content + id_len + 1, timestamp, ts_len);
	content[id_len + 1 + ts_len] = '.';
	memcpy(content + id_len + ts_len + 2, body, body_len);

	for (int k = 0; k < n_hmac_keys; k++)
	{
		unsigned char mac[EVP_MAX_MD_SIZE];
		unsigned int maclen = 0;
		char		expected[4 * ((EVP_MAX_MD_SIZE + 2) / 3) + 1];
		int			explen;
		const char *p;

		if (HMAC(EVP_sha256(), hmac_keys[k].key, hmac_keys[k].keylen,
				 content, content_len, mac, &maclen) == NULL)
		{
			log_msg(LOG_LEVEL_ERROR, "could not compute HMAC-SHA256");
			break;
		}
		explen = EVP_EncodeBlock((unsigned char *) expected, mac, (int) maclen);

		/* walk the space-separated list of "version,signature" entries */
		p = signatures;
		while (*p)
		{
			const char *end;

			while (*p == ' ')
				p++;
			end = p;
			while (*end && *end != ' ')
				end++;
			if (end - p == 3 + explen && strncmp(p, "v1,", 3) == 0 &&
				CRYPTO_memcmp(p + 3, expected, (size_t) explen) == 0)
				ok = true;
			p = end;
		}
		if (ok)
			break;
	}

	free(content);
	return ok;
}

/* Wipe and free key material at exit. */
void
auth_cleanup(void)
{
	for (int k = 0; k < n_hmac_keys; k++)
	{
		OPENSSL_cleanse(hmac_keys[k].key, (size_t) hmac_keys[k].keylen);
		free(hmac_keys[k].key);
	}
	free(hmac_keys);
	hmac_keys = NULL;
	n_hmac_keys = 0;
	OPENSSL_cleanse(secret_digest, sizeof(secret_digest));
	have_secret = false;
}
