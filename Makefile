# Makefile for the sac_webhook extension (PGXS), its HTTP receiver and the
# mock API used by the tests and the demo.

EXTENSION = sac_webhook
MODULE_big = sac_webhook
OBJS = src/sac_webhook.o src/parse.o src/inbox.o src/unit.o src/fetch.o src/queue.o src/oauth.o \
	src/resolve.o src/apply.o src/pipeline.o src/worker.o
DATA = sql/sac_webhook--0.1.0.sql sql/sac_webhook--0.1.0--0.2.0.sql \
       sql/sac_webhook--0.2.0--0.3.0.sql
PGFILEDESC = "sac_webhook - live copy of Magalu SAC tickets fed by webhooks"

# the server headers are system headers: -Wextra has no say on them
PG_CPPFLAGS = -I$(srcdir)/src -isystem $(includedir_server) $(shell curl-config --cflags)
SHLIB_LINK = $(shell curl-config --libs)

REGRESS = parse parse_limits receive grants process tokens search_path api_timestamp deletions resync upgrade
REGRESS_OPTS = --temp-instance=./tmp_check_regress --temp-config=$(srcdir)/test/regress.conf
ISOLATION = receive_coalesce process_claim token_refresh_busy
ISOLATION_OPTS = --temp-instance=./tmp_check_iso --temp-config=$(srcdir)/test/regress.conf
TAP_TESTS = 1

EXTRA_CLEAN = tmp_check_regress tmp_check_iso output_iso

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# the sources share their headers: a changed header rebuilds them all
$(OBJS): $(wildcard $(srcdir)/src/*.h)

# The receiver and the mock API are separate programs with their own
# makefiles; they build and install along with the extension.
.PHONY: programs install-programs clean-programs
all: programs
PROGRAM_CFLAGS = -O2 -g -Wall -Wextra $(COPT)
programs:
	$(MAKE) -C src/receiver PG_CONFIG='$(PG_CONFIG)' CFLAGS='$(PROGRAM_CFLAGS)'
	$(MAKE) -C test/mock_api CFLAGS='$(PROGRAM_CFLAGS)'
install: install-programs
install-programs: programs
	$(MAKE) -C src/receiver install PG_CONFIG='$(PG_CONFIG)' CFLAGS='$(PROGRAM_CFLAGS)' DESTDIR='$(DESTDIR)' bindir='$(bindir)'
	$(INSTALL_PROGRAM) test/mock_api/sac_webhook_mock_api '$(DESTDIR)$(bindir)/sac_webhook_mock_api'
clean: clean-programs
clean-programs:
	-$(MAKE) -C src/receiver clean
	-$(MAKE) -C test/mock_api clean
