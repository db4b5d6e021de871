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

extern bool sac_in_worker;
extern volatile sig_atomic_t sac_stop_requested;

extern bool sac_run_unit(SacUnitFn fn, void *arg, SacUnitError *error);
extern void sac_report_unit_error(int elevel, const SacUnitError *error,
								  const char *context);
extern void sac_spi_prepare(SPIPlanPtr *plan, const char *sql, int nargs, Oid *types);
extern void sac_spi_prepare_custom(SPIPlanPtr *plan, const char *sql, int nargs, Oid *types);
extern void sac_set_local(const char *name, const char *value);

#endif							/* SAC_UNIT_H */
