/*-------------------------------------------------------------------------
 *
 * resolve.h
 *		What the API's answers mean for a job: the policy (resolve.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SAC_RESOLVE_H
#define SAC_RESOLVE_H

#include "job.h"
#include "unit.h"

extern void sac_job_start(SacJob *job);
extern bool sac_job_advance(const SacEnv *env, SacJob *job);
extern void sac_job_confirm_gone(SacJob *job, bool alive, const SacHttpRequest *probe);
extern void sac_tenant_prepare_probe(SacTenant *tenant, SacHttpRequest *probe);
extern void sac_job_defer(SacJob *job, const char *why, int64 delay_ms, bool count_attempt);
extern int64 sac_backoff_ms(int attempts);

#endif							/* SAC_RESOLVE_H */
