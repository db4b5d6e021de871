/*-------------------------------------------------------------------------
 *
 * unit.h
 *		The unit-of-work runner (unit.c): the bottom of the pipeline.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SAC_UNIT_H
#define SAC_UNIT_H

#include <signal.h>

#include "executor/spi.h"

/*
 * Unit of work: a transaction in the background worker, a subtransaction
 * of the caller's transaction in process().
 */
typedef void (*SacUnitFn) (void *arg);

/* Why a unit of work failed: its SQLSTATE and primary message */
typedef struct SacUnitError
{
	int			sqlerrcode;
	char	   *message;
} SacUnitError;

/*
 * How units of work run and when to stop, handed down by the caller (the
 * worker or process()) to every module that runs units.
 */
typedef struct SacEnv
{
	bool		own_transactions;	/* each unit is a transaction of its own
									 * (the background worker); else a
									 * subtransaction of the caller's */
	volatile sig_atomic_t *stop;	/* becomes true when the process must
									 * stop (the worker's SIGTERM), or NULL */
} SacEnv;

/* Whether the process was asked to stop */
#define sac_env_stopping(env) ((env)->stop != NULL && *(env)->stop)

extern bool sac_run_unit(const SacEnv *env, SacUnitFn fn, void *arg, SacUnitError *error);
extern void sac_report_unit_error(int elevel, const SacUnitError *error,
								  const char *context);
extern void sac_spi_prepare(SPIPlanPtr *plan, const char *sql, int nargs, Oid *types);
extern void sac_spi_prepare_custom(SPIPlanPtr *plan, const char *sql, int nargs, Oid *types);
extern void sac_set_local(const char *name, const char *value);

#endif							/* SAC_UNIT_H */
