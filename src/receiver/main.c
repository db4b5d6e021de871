/*-------------------------------------------------------------------------
 *
 * main.c
 *	  Entry point of sac_webhook_receiver: parse the configuration, start
 *	  the database pool and the HTTP server, wait for a signal, and shut
 *	  down in order so that no accepted request goes unanswered.
 *
 * Signals are blocked in every thread and taken synchronously by the main
 * thread with sigtimedwait(), so no code runs in signal-handler context.
 *
 * src/receiver/main.c
 *
 *-------------------------------------------------------------------------
 */
#include "receiver.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Wait until no request is in flight or "seconds" have passed. */
static bool
wait_for_idle(double seconds)
{
	double		until = monotonic_now() + seconds;

	while (metrics_inflight() > 0)
	{
		struct timespec pause = {0, 20 * 1000 * 1000};

		if (monotonic_now() >= until)
			return false;
		nanosleep(&pause, NULL);
	}
	return true;
}

/*
 * Orderly shutdown:
 *	1. stop accepting connections;
 *	2. let requests in flight finish, up to --shutdown-timeout;
 *	3. stop the pool: each connection finishes its current group, what is
 *	   still queued is answered 503;
 *	4. give those answers a moment to be sent, then stop the HTTP server
 *	   (libmicrohttpd must have no suspended connection at that point, and
 *	   cannot: nothing is queued once the pool has stopped).
 */
static void
shutdown_receiver(int signo)
{
	long		left;

	log_msg(LOG_LEVEL_INFO, "received %s, shutting down", strsignal(signo));
	http_quiesce();
	if (!wait_for_idle(config.shutdown_timeout_s))
		log_msg(LOG_LEVEL_WARNING, "%ld request(s) still in flight after %d s",
				metrics_inflight(), config.shutdown_timeout_s);
	pool_stop();
	wait_for_idle(2.0);
	left = metrics_inflight();
	http_stop();
	auth_cleanup();
	if (left > 0)
		log_msg(LOG_LEVEL_WARNING, "closed %ld unfinished request(s)", left);
	log_msg(LOG_LEVEL_INFO, "shutdown complete");
}

int
main(int argc, char **argv)
{
	sigset_t	sigs;
	int			signo;
	int			rc;

	config_parse(argc, argv);

	/* block the signals we wait for before any thread exists */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	if ((rc = pthread_sigmask(SIG_BLOCK, &sigs, NULL)) != 0)
		fatal("could not block signals: %s", strerror(rc));
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
		fatal("could not ignore SIGPIPE: %s", strerror(errno));

	pool_start();
	http_start();
	log_msg(LOG_LEVEL_INFO,
			"%s %s listening on %s, port %u (%d database connection%s, max group %d%s)",
			RECEIVER_NAME, RECEIVER_VERSION, config.listen, http_bound_port(),
			config.db_connections,
			config.db_connections == 1 ? "" : "s", config.max_group,
			auth_hmac_secret_count() > 0 ? ", HMAC signatures required" : "");

	for (;;)
	{
		signo = sigwaitinfo(&sigs, NULL);
		if (signo < 0)
		{
			if (errno == EINTR)
				continue;
			fatal("sigwaitinfo failed: %s", strerror(errno));
		}
		if (signo == SIGHUP)
		{
			log_msg(LOG_LEVEL_INFO, "SIGHUP ignored: restart to change the configuration");
			continue;
		}
		break;
	}

	shutdown_receiver(signo);
	free(config.listen);
	free(config.conninfo);
	return 0;
}
