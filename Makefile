# webhook: PGXS build.  `make && make install`, then `make installcheck` (pg_regress).
# The whole suite (pg_regress, TAP, end to end) runs from test/run.sh.

MODULE_big = webhook
OBJS = \
	src/init.o \
	src/shmem.o \
	src/launcher.o \
	src/worker.o \
	src/sender.o \
	src/channel.o \
	src/queue.o \
	src/expand.o \
	src/dispatch.o \
	src/claims.o \
	src/http.o \
	src/capture.o \
	src/deadline.o \
	src/conditions.o \
	src/envelope.o \
	src/rowjson.o \
	src/rowwrite.o \
	src/linked.o \
	src/sign.o \
	src/network.o \
	src/trust.o \
	src/api.o

EXTENSION = webhook
DATA = sql/webhook--0.1.sql sql/webhook--0.1--0.2.sql sql/webhook--0.2--0.3.sql \
       sql/webhook--0.3--0.4.sql sql/webhook--0.4--0.5.sql \
       sql/webhook--0.5--0.6.sql sql/webhook--0.6--0.7.sql \
       sql/webhook--0.7--0.8.sql sql/webhook--0.8--0.9.sql \
       sql/webhook--0.9--0.10.sql sql/webhook--0.10--0.11.sql \
       sql/webhook--0.11--0.12.sql sql/webhook--0.12--0.13.sql

REGRESS = setup api capture conditions catalogue profiles batching payloads operations bad_input privileges security row_json condition_paths halo deadlines failures rotation pacing tls ordering
REGRESS_OPTS = --temp-instance=tmp_regress --temp-config=test/regress.conf

PG_CONFIG ?= pg_config
PG_CPPFLAGS = -Isrc
# PostgreSQL headers and libcurl callback signatures leave parameters unused
PG_CFLAGS = -Wall -Wextra -Wno-unused-parameter
SHLIB_LINK = -lcurl

EXTRA_CLEAN = tmp_regress results regression.diffs regression.out

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)
