/*-------------------------------------------------------------------------
 *
 * apply.h
 *		Jobs' results written to the data tables and the inbox (apply.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SAC_APPLY_H
#define SAC_APPLY_H

#include "job.h"
#include "unit.h"

extern int	sac_apply_jobs(const SacEnv *env, SacJob **jobs, int njobs);
extern void sac_apply_sync_progress(const SacEnv *env, SacJob **jobs, int njobs);
extern void sac_apply_tenant_facts(const SacEnv *env, SacTenant **tenants, int ntenants);

#endif							/* SAC_APPLY_H */
