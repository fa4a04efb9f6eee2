# sensorflow -- build, test and run the whole pipeline.
#
#   make            build the three services into build/bin/
#   make test       unit tests (cmocka) + integration tests against real servers
#   make run        run the whole stack locally (state under .run/), Ctrl-C stops it
#   make logs       follow the logs of `make run` (SERVICE=ingestion for one service)
#   make psql       psql on the stack's database
#   make fuzz       run each libFuzzer target (clang) for FUZZ_SECONDS (60)
#   make bench      the benchmark: every scenario and the targets (README: Performance)
#   make compose-test  the compose stack on the local Docker engine (tests/compose)
#   make compose-config  render compose/haproxy.cfg from haproxy/haproxy.cfg.in
#
# Switches: WERROR=1 (CI), SANITIZE=address,undefined, CC=clang, MALLOC=libc,
# SKIP_DEPS=1 (no package check: compose/Dockerfile installs its own).
# Missing Debian packages are installed first (scripts/deps.sh, sudo when not root).

CC       ?= cc
BUILD    ?= build
# Where this build goes: sanitized objects never mix with plain ones.
OUT       = $(BUILD)$(if $(SANITIZE),/san)
SANITIZE ?=
WERROR   ?=

WARN   = -Wall -Wextra -Wshadow -Wpointer-arith -Wcast-align -Wwrite-strings \
         -Wstrict-prototypes -Wmissing-prototypes -Wold-style-definition \
         -Wformat=2 -Wno-format-zero-length -Wundef -Wvla -Wimplicit-fallthrough
ifeq ($(WERROR),1)
WARN  += -Werror
endif
OPT    = -O2 -g
CSTD   = -std=c11 -D_GNU_SOURCE
PKGS   = libevent libevent_pthreads jansson libpq libmosquitto
# Asked of pkg-config when a recipe first needs them, not when make reads this
# file: on a fresh machine pkg-config and the -dev packages arrive with `deps`,
# which every compile and link waits for (order-only), so a flag read at parse
# time would be empty and the first link would fail. Asked once per run.
PKG_CFLAGS = $(eval PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null))$(PKG_CFLAGS)
PKG_LIBS   = $(eval PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null))$(PKG_LIBS)
CFLAGS_ALL = $(CSTD) $(OPT) $(WARN) $(PKG_CFLAGS) -Icommon -MMD -MP $(CFLAGS)
LDLIBS_ALL = $(PKG_LIBS) -lpaho-mqtt3a -lpthread -lm $(LDLIBS)

ifneq ($(SANITIZE),)
CFLAGS_ALL += -fsanitize=$(SANITIZE) -fno-sanitize-recover=all -fno-omit-frame-pointer
LDFLAGS    += -fsanitize=$(SANITIZE)
endif

# ingestion and storage allocate and free for every request and message
# (evhttp's requests and buffers, jansson's trees, paho's packets); glibc's
# malloc cost them a tenth of their CPU, jemalloc much less (bench/NOTES.md;
# README: Performance). MALLOC=libc links glibc's. A sanitizer brings its own
# allocator, so sanitized builds keep glibc's too. sensor-sim, the load
# generator, stays on glibc: it is half of what the benchmark's ceiling
# measures.
# common/malloc_conf.c holds jemalloc's settings.
MALLOC ?= jemalloc
ifeq ($(filter $(MALLOC),jemalloc libc),)
$(error MALLOC=$(MALLOC): expected jemalloc or libc)
endif
ifeq ($(MALLOC)$(SANITIZE),jemalloc)
SVC_MALLOC_OBJ = $(OBJ)/common/malloc_conf.o
SVC_MALLOC_LIB = -ljemalloc
endif

BIN = $(OUT)/bin
OBJ = $(OUT)/obj

COMMON_SRC    = $(filter-out common/malloc_conf.c,$(wildcard common/*.c))
INGESTION_SRC = $(wildcard ingestion/*.c)
STORAGE_SRC   = $(wildcard storage/*.c)
SIM_SRC       = $(wildcard sensor-sim/*.c)
UNIT_SRC      = $(wildcard tests/unit/test_*.c)

objs = $(patsubst %.c,$(OBJ)/%.o,$(1))
COMMON_OBJ = $(call objs,$(COMMON_SRC))
# Each service's main.c is left out of its unit-test link.
svc_lib = $(call objs,$(filter-out $(1)/main.c,$(wildcard $(1)/*.c)))

SERVICES   = $(BIN)/ingestion $(BIN)/storage $(BIN)/sensor-sim
UNIT_TESTS = $(patsubst tests/unit/%.c,$(BIN)/%,$(UNIT_SRC))

.PHONY: all deps test unit integration fuzz run logs psql clean compose-test compose-config bench
# Keep objects of pattern rules (unit tests) between runs.
.SECONDARY:
all: deps $(SERVICES)

# Installs what is missing (fast no-op when all is there). SKIP_DEPS=1 skips it.
deps:
	@[ "$(SKIP_DEPS)" = 1 ] || scripts/deps.sh

$(OBJ)/%.o: %.c | deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c $< -o $@

$(OUT)/libcommon.a: $(COMMON_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BIN)/ingestion: $(call objs,$(INGESTION_SRC)) $(OUT)/libcommon.a $(SVC_MALLOC_OBJ)
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS_ALL) $(SVC_MALLOC_LIB)
# The SQL migrations are compiled into storage, so the binary is all it needs.
GEN_MIGRATIONS = $(OUT)/gen/migrations.c
$(GEN_MIGRATIONS): $(sort $(wildcard storage/migrations/*.sql)) scripts/embed-migrations.sh
	@mkdir -p $(dir $@)
	scripts/embed-migrations.sh storage/migrations > $@.tmp && mv $@.tmp $@
MIGRATIONS_OBJ = $(OBJ)/$(GEN_MIGRATIONS:.c=.o)

$(BIN)/storage: $(call objs,$(STORAGE_SRC)) $(MIGRATIONS_OBJ) $(OUT)/libcommon.a $(SVC_MALLOC_OBJ)
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS_ALL) $(SVC_MALLOC_LIB)
$(BIN)/sensor-sim: $(call objs,$(SIM_SRC)) $(OUT)/libcommon.a
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS_ALL)

# The benchmark's do-nothing backend (bench/null_server.c).
$(BIN)/bench-null-server: $(OBJ)/bench/null_server.o
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS_ALL)

# Unit tests: tests/unit/test_<area>_*.c links common/ plus that area's code
# (all of it but main.c) and cmocka.
$(BIN)/test_common_%: $(OBJ)/tests/unit/test_common_%.o $(OUT)/libcommon.a
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS_ALL) -lcmocka
$(BIN)/test_ingestion_%: $(OBJ)/tests/unit/test_ingestion_%.o $(call svc_lib,ingestion) $(OUT)/libcommon.a
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS_ALL) -lcmocka
$(BIN)/test_storage_%: $(OBJ)/tests/unit/test_storage_%.o $(call svc_lib,storage) $(MIGRATIONS_OBJ) $(OUT)/libcommon.a
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS_ALL) -lcmocka
$(BIN)/test_sim_%: $(OBJ)/tests/unit/test_sim_%.o $(call svc_lib,sensor-sim) $(OUT)/libcommon.a
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS_ALL) -lcmocka

test: deps $(SERVICES) $(UNIT_TESTS)
	@scripts/run-tests.sh $(BIN) $(UNIT_TESTS)

unit: deps $(UNIT_TESTS)
	@scripts/run-tests.sh --unit-only $(BIN) $(UNIT_TESTS)

integration: deps $(SERVICES)
	@scripts/run-tests.sh $(BIN)

# Fuzzing: fuzz/fuzz_<name>.c is a libFuzzer target for one parser of
# untrusted bytes. It links fuzz/oracle.c and common/, all compiled by clang
# with the fuzzer's instrumentation into $(BUILD)/fuzz/ (never the gcc
# objects). fuzz/run.sh runs each for FUZZ_SECONDS from a scratch copy of
# fuzz/corpus/<name>/ and ends with "N passed, N failed"; `make fuzz-<name>`
# runs one.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_OUT      = $(BUILD)/fuzz
FUZZ_SAN      = -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
FUZZ_CFLAGS   = $(CSTD) -O1 -g $(WARN) $(FUZZ_SAN) -fno-omit-frame-pointer \
                $(shell pkg-config --cflags jansson 2>/dev/null) -Icommon -MMD -MP $(CFLAGS)
FUZZ_LIBS     = $(shell pkg-config --libs jansson 2>/dev/null) -levent -lm
FUZZ_NAMES    = $(patsubst fuzz/fuzz_%.c,%,$(wildcard fuzz/fuzz_*.c))
FUZZ_LIB_OBJ  = $(patsubst %.c,$(FUZZ_OUT)/obj/%.o,$(COMMON_SRC) fuzz/oracle.c)

$(FUZZ_OUT)/obj/%.o: %.c | deps
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -c $< -o $@
$(FUZZ_OUT)/fuzz_%: $(FUZZ_OUT)/obj/fuzz/fuzz_%.o $(FUZZ_LIB_OBJ)
	$(FUZZ_CC) $(FUZZ_SAN) -o $@ $^ $(FUZZ_LIBS)

fuzz: deps $(patsubst %,$(FUZZ_OUT)/fuzz_%,$(FUZZ_NAMES))
	@fuzz/run.sh $(FUZZ_OUT) $(FUZZ_SECONDS) $(FUZZ_NAMES)
fuzz-%: deps $(FUZZ_OUT)/fuzz_%
	@fuzz/run.sh $(FUZZ_OUT) $(FUZZ_SECONDS) $*

run: deps $(SERVICES)
	@/usr/bin/python3 scripts/stack.py run --bin $(BIN)

logs:
	@/usr/bin/python3 scripts/stack.py logs $(SERVICE)

psql:
	@/usr/bin/python3 scripts/stack.py psql

# Builds the images (and, without a registry, the base and stand-in images)
# and tests `docker compose up --scale` against the database.
compose-test: deps
	@scripts/run-tests.sh --compose

# Measures on this machine (a few minutes); results under bench/results/.
bench: deps $(SERVICES) $(BIN)/bench-null-server
	@/usr/bin/python3 bench/bench.py --bin $(BIN)

compose-config:
	@/usr/bin/python3 scripts/stack.py compose-config

clean:
	rm -rf build

-include $(shell find $(OUT) -name '*.d' 2>/dev/null)
-include $(shell find $(FUZZ_OUT) -name '*.d' 2>/dev/null)
