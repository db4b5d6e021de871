/*-------------------------------------------------------------------------
 *
 * pipeline.h
 *		The claim -> fetch -> resolve -> apply pipeline (pipeline.c), as the
 *		worker and process() run it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SAC_PIPELINE_H
#define SAC_PIPELINE_H

#include "unit.h"

/* The pipeline of one process (pipeline.c) */
typedef struct SacPipeline SacPipeline;

/* What a run of the pipeline did */
typedef struct SacRunResult
{
	int			claimed;		/* rows claimed; -1: a claim failed */
	int			finished;		/* rows done or dead */
	bool		idle;			/* nothing claimed is left in the pipeline */
	int64		next_due_ms;	/* idle: until the next row is due (-1: none
								 * waiting, or not known) */
} SacRunResult;

extern SacPipeline *sac_pipeline_create(const SacEnv *env, MemoryContext parent);
extern void sac_pipeline_run(SacPipeline *p, int max_claims, long budget_ms,
							 bool housekeeping, SacRunResult *result);
extern void sac_pipeline_drain(SacPipeline *p);
extern void sac_pipeline_destroy(SacPipeline *p);
extern char *sac_installed_version(void);

#endif							/* SAC_PIPELINE_H */
