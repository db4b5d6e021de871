/*-------------------------------------------------------------------------
 *
 * oauth.h
 *		Access tokens of tenants, refreshed with their OAuth credentials
 *		(oauth.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SAC_OAUTH_H
#define SAC_OAUTH_H

#include "job.h"
#include "unit.h"

extern void sac_oauth_refresh(const SacEnv *env, SacTenant *tenant, const char *stale_token);

#endif							/* SAC_OAUTH_H */
