# Makefile: build, run and test the wallet service.
#
#   make deps      install the Debian packages the build, the stack and the tests need
#   make build     swift build (debug)
#   make release   swift build -c release
#   make run       build, then run the whole stack in the foreground (Ctrl-C stops it)
#   make test      build, then run every test suite, with a summary
#   make lint      swift format lint and shellcheck (make format rewrites)
#   make bench     the benchmark table (scripts/bench.sh, then scripts/bench-postgres.sh)
#   make bench-postgres  the same service on SQLite and on PostgreSQL (both of its write
#                  modes for deposits spread over many wallets), one table
#   make verify    check the payout rules' model exhaustively with spin
#   make fuzz      each libFuzzer target for FUZZ_SECONDS (60) seconds
#   make chaos     the seeded fault-injection run (SEED=N DURATION=SECONDS)
#   make install   install the release binaries, systemd units, nginx site and
#                  example /etc/wallet/wallet.env and processor.env (DESTDIR, PREFIX honoured)
#   make uninstall remove what install put, never the data
#   make deb       the Debian package wallet_<version>_<arch>.deb (docs/PACKAGING.md)
#   make clean     remove build products and the development run dir
#
# Settings for `make run` come from the environment (WALLET_HTTP_PORT,
# WALLET_DB, WALLET_BANK_MODE, ...; see docs/INTERFACES.md, defaults in the
# README, "Configuration"), e.g.  WALLET_HTTP_PORT=9000 make run

# Recipes use bash features (arrays, pipefail); every recipe line fails on
# the first error.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
# Recipes print their own progress lines; no "Entering directory" noise.
MAKEFLAGS += --no-print-directory

# Where `make install` puts the binaries (the systemd units run
# /usr/local/bin/wallet-fcgi and /usr/local/bin/wallet-processor).
PREFIX ?= /usr/local
# Staging root for packaging (`make install DESTDIR=/tmp/pkg`).
DESTDIR ?=
# The Swift toolchain.
SWIFT ?= swift
# Extra flags for every swift build/test (e.g. -j 2, --scratch-path .build-x).
SWIFT_BUILD_FLAGS ?=
# A module that imports one it does not declare as a dependency is an error, not a
# build that happens to work: the module graph is the architecture (README).
override SWIFT_BUILD_FLAGS += --explicit-target-dependency-import-check=error
# Extra flags for the release build. Static Swift runtime: the deployed
# binaries then need only Debian's system libraries (the toolchain's runtime is not installed there).
# No $ORIGIN run path either: no library is ever installed beside the
# binaries, and a package's binaries must not search their own directory
# (lintian's custom-library-search-path).
SWIFT_RELEASE_FLAGS ?= --static-swift-stdlib --disable-local-rpath
# The Python that runs pytest: python3 from PATH if it has pytest, else
# Debian's /usr/bin/python3 (with python3-pytest, which `make deps` installs).
# Evaluated when a recipe uses it, i.e. after `deps` has run.
PYTHON ?= $(shell python3 -m pytest --version >/dev/null 2>&1 && echo python3 || echo /usr/bin/python3)
# Extra pytest arguments, e.g. PYTEST_ARGS='-k idempotency -x'.
PYTEST_ARGS ?=

# Root runs apt-get directly; anyone else through sudo.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

# Debian packages whose presence `dpkg` can tell (libraries, tools).
# Build: the C libraries the Swift system-library targets link, and
# pkg-config to find them.
BUILD_PKGS := libfcgi-dev libsqlite3-dev libcurl4-openssl-dev libssl-dev libpq-dev
# Run and test: fcgiwrap for the mock bank, curl (stack.sh's health checks),
# sqlite3 (inspecting the database), procps (ps, used to stop fcgiwrap's
# children by pid), jq (the mock bank reads its request body with it);
# strace and shellcheck for the mock bank's tests (that it flushes its
# ledger before answering; that its scripts are clean); openssl (the TLS
# test makes its CA and certificate, and probes protocol versions with
# s_client) and ssl-cert (the snakeoil pair the installed site's
# nginx/wallet-tls.conf names by default).
RUN_PKGS := fcgiwrap curl sqlite3 procps jq strace shellcheck openssl ssl-cert
# Test: the PostgreSQL server (and its client, psql) the postgres suite starts
# a throwaway instance of (scripts/postgres.sh); Patroni and etcd, which the
# failover suite makes a three-node cluster of (Tests/integration/patroni.py),
# and nftables (nft), with which it drops a node's packets to make its
# machine look dead; faketime, whose libfaketime shifts a processor's clock
# against the database's (Tests/integration/test_database_clock.py).
TEST_PKGS := postgresql-15 patroni etcd-server etcd-client nftables faketime

# The test suites, in the order `make test` runs them; each is also a
# target of its own (make test-swift, make test-bank, ...).
TEST_SUITES := lint swift bank systemd openapi integration chaos schemathesis verify
# The store on PostgreSQL: its unit tests and the integration tests of the
# money paths against a throwaway server.
TEST_SUITES += postgres
# The stack on a three-node Patroni cluster, its leader killed under load.
TEST_SUITES += failover
# The unit tests under ThreadSanitizer and AddressSanitizer, and each fuzz
# target for FUZZ_TEST_SECONDS (docs/FUZZING.md).
TEST_SUITES += sanitizers fuzz
# The Prometheus alerting rules (packaging/prometheus/): promtool's syntax
# check and its rule unit tests.
TEST_SUITES += alerts
# The Debian package (make deb): lintian, then install, remove and purge in a
# throwaway overlay of this machine's root. After integration, whose install
# test already made the release build this one reuses.
TEST_SUITES += deb

.PHONY: all deps deps-alerts deps-bench deps-deb deps-schemathesis deps-verify verify deb build release run test $(addprefix test-,$(TEST_SUITES)) \
        bench bench-postgres chaos fuzz lint format install clean distclean help

# Plain `make` builds.
all: build

# The usage block at the top of this file, up to its first empty comment line.
help:
	@sed -n '3,/^#$$/{/^#$$/!s/^# \{0,1\}//p}' $(firstword $(MAKEFILE_LIST))

# Installs only what is missing, so that an up-to-date machine never touches
# apt (and needs no network). `apt-get update` runs only when something is
# missing: fresh machines have empty package lists.
deps:
	@missing=(); \
	for p in $(BUILD_PKGS) $(RUN_PKGS) $(TEST_PKGS); do \
	  dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$$p"); \
	done; \
	command -v pkg-config >/dev/null || missing+=(pkg-config); \
	command -v nginx >/dev/null || test -x /usr/sbin/nginx || missing+=(nginx); \
	command -v systemd-analyze >/dev/null || missing+=(systemd); \
	if ! python3 -m pytest --version >/dev/null 2>&1 && \
	   ! /usr/bin/python3 -m pytest --version >/dev/null 2>&1; then \
	  missing+=(python3 python3-pytest); \
	fi; \
	if (( $${#missing[@]} )); then \
	  echo "==> installing: $${missing[*]}"; \
	  $(SUDO) apt-get update -q; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -q --no-install-recommends "$${missing[@]}"; \
	fi

# wrk, the load generator, is only needed by the benchmarks.
deps-bench:
	@command -v wrk >/dev/null || { \
	  echo "==> installing: wrk"; \
	  $(SUDO) apt-get update -q; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends wrk; }

# spin, and a C compiler for the verifier it generates, only for `make verify`.
deps-verify:
	@missing=(); \
	command -v spin >/dev/null || missing+=(spin); \
	command -v gcc >/dev/null || missing+=(gcc libc6-dev); \
	if (( $${#missing[@]} )); then \
	  echo "==> installing: $${missing[*]}"; \
	  $(SUDO) apt-get update -q; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -q --no-install-recommends "$${missing[@]}"; \
	fi

build:
	$(SWIFT) build $(SWIFT_BUILD_FLAGS)

release:
	$(SWIFT) build -c release $(SWIFT_RELEASE_FLAGS) $(SWIFT_BUILD_FLAGS)

# `exec` replaces make's shell with stack.sh, so Ctrl-C and SIGTERM reach it
# directly and it stops everything it started. WALLET_BIN_DIR is where this
# build put the binaries (unless already set).
run: deps build
	@export WALLET_BIN_DIR="$${WALLET_BIN_DIR:-$$($(SWIFT) build $(SWIFT_BUILD_FLAGS) --show-bin-path)}"; \
	exec bash scripts/stack.sh --follow

# Runs every suite even when one fails, then prints a summary and fails if
# any suite failed. A missing suite counts as a failure.
test: deps build
	@failed=(); summary=(); \
	for suite in $(TEST_SUITES); do \
	  printf '\n==> test-%s\n' "$$suite"; \
	  start=$$SECONDS; \
	  if $(MAKE) test-$$suite; then result=ok; else result=FAILED; failed+=("$$suite"); fi; \
	  summary+=("$$(printf '  %-12s %-7s %4ds' "$$suite" "$$result" $$((SECONDS - start)))"); \
	done; \
	printf '\n==> summary\n'; printf '%s\n' "$${summary[@]}"; \
	if (( $${#failed[@]} )); then echo "==> FAILED: $${failed[*]}"; exit 1; fi; \
	echo "==> all test suites passed"

# A suite file that does not exist is an error, not a silent skip.
define require
@test -e $(1) || { echo "missing $(1)"; exit 1; }
endef

# The Swift sources as the toolchain's formatter writes them (the checked-in
# .swift-format), and every shell script clean under shellcheck.
SWIFT_FORMAT_PATHS := Package.swift Sources Tests/WalletCoreTests Tests/fuzz
SHELL_SCRIPTS = $(shell git ls-files '*.sh' .ci/run bank/bank.cgi $(addprefix packaging/deb/,$(DEB_SCRIPTS)) 2>/dev/null)
lint:
	$(SWIFT) format lint --strict --recursive $(SWIFT_FORMAT_PATHS)
	shellcheck $(SHELL_SCRIPTS)
	@echo "lint: swift format and shellcheck clean"

test-lint: lint

# Rewrites the Swift sources as the formatter wants them.
format:
	$(SWIFT) format format --in-place --recursive $(SWIFT_FORMAT_PATHS)

# The Swift unit tests (Tests/WalletCoreTests).
test-swift:
	$(SWIFT) test $(SWIFT_BUILD_FLAGS)

# The mock bank CGI on its own.
test-bank:
	$(call require,Tests/bank/test_bank_cgi.sh)
	shellcheck bank/bank.cgi Tests/bank/test_bank_cgi.sh
	bash Tests/bank/test_bank_cgi.sh

# systemd-analyze checks of the units.
test-systemd:
	$(call require,Tests/systemd/check_units.sh)
	bash Tests/systemd/check_units.sh

# openapi.yaml: valid OpenAPI, and naming every route and error code the code has.
test-openapi:
	$(call require,Tests/openapi/check_openapi.sh)
	bash Tests/openapi/check_openapi.sh

# End-to-end tests through nginx (each test starts its own stack with
# scripts/stack.sh; see Tests/integration/conftest.py).
test-integration:
	$(call require,Tests/integration/conftest.py)
	@export WALLET_BIN_DIR="$${WALLET_BIN_DIR:-$$($(SWIFT) build $(SWIFT_BUILD_FLAGS) --show-bin-path)}"; \
	echo "$(PYTHON) -m pytest Tests/integration (binaries: $$WALLET_BIN_DIR)"; \
	$(PYTHON) -m pytest -q -ra -p no:cacheprovider Tests/integration $(PYTEST_ARGS)

# The store on PostgreSQL (WALLET_DB as a conninfo): a throwaway server in a
# fresh directory under /tmp (scripts/postgres.sh), the store-level unit tests
# with WALLET_TEST_POSTGRES (a fresh database per test), then the integration
# tests of the money paths with every stack on a fresh database of that server
# (WALLET_TEST_DB=postgres), and the responder through a server restart. The
# server is stopped (pg_ctl signals the pid in its postmaster.pid) and its
# directory removed on every exit, failures included. Prints its times.
POSTGRES_UNIT_TESTS ?= CopyTests|PostgresTests|PostgresOfflineTests|StoreTests|SchemaTests|EventsTests|AuthenticationTests|ProcessorPassTests|WalletAPITests|AuditTests|ReconcilerTests|AdminTrailTests|LedgerCheckpointTests|BalanceAtTests
POSTGRES_INTEGRATION_TESTS ?= test_postgres.py test_migrate.py test_tcp_responders.py test_api.py test_concurrency.py test_processor.py test_processor_concurrency.py test_durability.py test_database_clock.py test_events.py
test-postgres:
	$(call require,scripts/postgres.sh)
	@start=$$SECONDS; dir=$$(mktemp -d /tmp/wallet-postgres.XXXXXX); chmod 755 "$$dir"; \
	trap 'bash scripts/postgres.sh stop "$$dir/server" || true; rm -rf "$$dir"' EXIT; \
	conninfo=$$(bash scripts/postgres.sh start "$$dir/server"); \
	echo "==> PostgreSQL $$conninfo: started in $$((SECONDS - start)) s"; \
	WALLET_TEST_POSTGRES="$$conninfo" $(SWIFT) test $(SWIFT_BUILD_FLAGS) --filter '$(POSTGRES_UNIT_TESTS)'; \
	echo "==> unit tests on PostgreSQL: passed at $$((SECONDS - start)) s"; \
	export WALLET_BIN_DIR="$${WALLET_BIN_DIR:-$$($(SWIFT) build $(SWIFT_BUILD_FLAGS) --show-bin-path)}"; \
	WALLET_TEST_DB=postgres WALLET_TEST_POSTGRES="$$conninfo" WALLET_TEST_POSTGRES_DIR="$$dir/server" \
	  $(PYTHON) -m pytest -q -ra -p no:cacheprovider $(addprefix Tests/integration/,$(POSTGRES_INTEGRATION_TESTS)) $(PYTEST_ARGS); \
	echo "==> PostgreSQL suite: passed in $$((SECONDS - start)) s"

# The stack on a three-node PostgreSQL cluster (Patroni, synchronous and
# strict, one etcd; Tests/integration/patroni.py) on loopback: the leader is
# killed (-9) under load, and every acknowledged write must be there, no key
# may have had two effects, no payout may have been made twice, and the audit
# must pass. It prints how long writes were refused. Everything it starts is
# stopped by PID, failures included.
test-failover:
	@start=$$SECONDS; \
	export WALLET_BIN_DIR="$${WALLET_BIN_DIR:-$$($(SWIFT) build $(SWIFT_BUILD_FLAGS) --show-bin-path)}"; \
	WALLET_TEST_FAILOVER=1 $(PYTHON) -m pytest -q -ra -p no:cacheprovider Tests/integration/test_failover.py $(PYTEST_ARGS); \
	echo "==> failover suite: passed in $$((SECONDS - start)) s"

# The fault-injection run (docs/CHAOS.md). `make test` runs it for
# CHAOS_TEST_DURATION seconds with the fixed seed CHAOS_TEST_SEED; `make
# chaos` with SEED (default: a random one, printed with the replay command)
# and DURATION.
CHAOS_TEST_SEED ?= 1
CHAOS_TEST_DURATION ?= 60
SEED ?=
DURATION ?= 60

test-chaos:
	$(call require,Tests/chaos/chaos.py)
	@export WALLET_BIN_DIR="$${WALLET_BIN_DIR:-$$($(SWIFT) build $(SWIFT_BUILD_FLAGS) --show-bin-path)}"; \
	exec $(PYTHON) -m Tests.chaos.chaos --seed $(CHAOS_TEST_SEED) --duration $(CHAOS_TEST_DURATION)

chaos: deps build
	@export WALLET_BIN_DIR="$${WALLET_BIN_DIR:-$$($(SWIFT) build $(SWIFT_BUILD_FLAGS) --show-bin-path)}"; \
	exec $(PYTHON) -m Tests.chaos.chaos $(if $(SEED),--seed $(SEED)) --duration $(DURATION)

# Schemathesis against openapi.yaml and a live stack through nginx (the
# script installs its pinned Schemathesis into .build-venv/ with pip; this
# makes sure the Python can make a virtualenv).
test-schemathesis: deps-schemathesis
	$(call require,Tests/schemathesis/run.sh)
	@export WALLET_BIN_DIR="$${WALLET_BIN_DIR:-$$($(SWIFT) build $(SWIFT_BUILD_FLAGS) --show-bin-path)}"; \
	PYTHON=$(PYTHON) bash Tests/schemathesis/run.sh

# Debian's python3 makes virtualenvs only with python3-venv (ensurepip).
deps-schemathesis:
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || { \
	  echo "==> installing: python3-venv"; \
	  $(SUDO) apt-get update -q; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-venv; }

# packaging/prometheus/wallet-alerts.yml: valid rules (promtool check rules),
# and each alert firing, or not, on the series of
# packaging/prometheus/wallet-alerts.test.yml (promtool test rules).
test-alerts: deps-alerts
	$(call require,packaging/prometheus/wallet-alerts.test.yml)
	promtool check rules packaging/prometheus/wallet-alerts.yml
	cd packaging/prometheus && promtool test rules wallet-alerts.test.yml

# promtool comes with Debian's prometheus package (about 100 MB), needed only
# by test-alerts, so it is not among the build dependencies.
deps-alerts:
	@command -v promtool >/dev/null || { \
	  echo "==> installing: prometheus (for promtool)"; \
	  $(SUDO) apt-get update -q; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus; }

# The model of the withdrawal protocol (verify/wallet.pml), checked
# exhaustively by spin against verify/payout-rules.tsv and
# verify/bank-answers.tsv, and its mutants (docs/VERIFY.md).
verify: deps-verify
	$(call require,verify/check.sh)
	bash verify/check.sh

test-verify: verify

# The unit tests under the sanitizers, each build in its own scratch path so
# that it never invalidates the plain one. TSan: the tests of the code that
# runs on several threads; ASan (with LeakSanitizer): all of them. Any report
# fails the run. Only the test bundle is built (SwiftPM names it after the
# package): the executables and swift-argument-parser would be built for
# nothing. Swift's backtracer is off: it reads memory the sanitizers guard and
# would turn a report into a crash of its own. lld: gold prints a warning per
# ASan symbol. Tests/sanitizers/lsan.supp says why each suppressed leak
# report is none. Each prints its time.
SANITIZER_TESTS_THREAD ?= GroupCommitWriterTests|SignalPipeTests|ProcessorPassTests|JitterTests
SANITIZER_FLAGS := -Xswiftc -use-ld=lld
SANITIZER_TEST_PRODUCT := walletPackageTests
test-sanitizers:
	$(call require,Tests/sanitizers/lsan.supp)
	@start=$$SECONDS; echo "==> ThreadSanitizer: $(SANITIZER_TESTS_THREAD)"; \
	flags=($(SWIFT_BUILD_FLAGS) $(SANITIZER_FLAGS) --sanitize=thread --scratch-path .build-tsan); \
	$(SWIFT) build "$${flags[@]}" --product $(SANITIZER_TEST_PRODUCT); \
	SWIFT_BACKTRACE=enable=no $(SWIFT) test "$${flags[@]}" --skip-build --filter '$(SANITIZER_TESTS_THREAD)'; \
	echo "==> ThreadSanitizer: passed in $$((SECONDS - start)) s"
	@start=$$SECONDS; echo "==> AddressSanitizer: every unit test"; \
	flags=($(SWIFT_BUILD_FLAGS) $(SANITIZER_FLAGS) --sanitize=address --scratch-path .build-asan); \
	$(SWIFT) build "$${flags[@]}" --product $(SANITIZER_TEST_PRODUCT); \
	SWIFT_BACKTRACE=enable=no LSAN_OPTIONS=suppressions=$(CURDIR)/Tests/sanitizers/lsan.supp \
	  $(SWIFT) test "$${flags[@]}" --skip-build; \
	echo "==> AddressSanitizer: passed in $$((SECONDS - start)) s"

# Seconds per fuzz target: `make fuzz` and the `fuzz` suite of `make test`.
FUZZ_SECONDS ?= 60
FUZZ_TEST_SECONDS ?= 15

fuzz: deps
	bash scripts/fuzz.sh run $(FUZZ_SECONDS)

test-fuzz:
	$(call require,scripts/fuzz.sh)
	bash scripts/fuzz.sh run $(FUZZ_TEST_SECONDS)

# The benchmarks choose their own build and settings. After scripts/bench.sh,
# the same service on SQLite and on PostgreSQL (scripts/bench-postgres.sh),
# whose table is appended to bench.sh's in var/bench/latest.md.
bench: deps deps-bench
	@if [ -f scripts/bench.sh ]; then bash scripts/bench.sh; \
	else echo "no scripts/bench.sh yet: nothing to run"; fi
	@bash scripts/bench-postgres.sh
	@mkdir -p var/bench; { echo; cat var/bench/postgres.md; } >>var/bench/latest.md

# SQLite and PostgreSQL side by side, one table (var/bench/postgres.md); for
# deposits spread over many wallets, PostgreSQL with each of its write modes.
bench-postgres: deps deps-bench
	bash scripts/bench-postgres.sh

# --- install / uninstall -------------------------------------------------------
#
#   make install [PREFIX=/usr/local] [DESTDIR=] [INSTALL_MOCK_BANK=0]
#   make uninstall [PREFIX=...] [DESTDIR=...]
#
# Installs (all under $(DESTDIR)):
#   $(PREFIX)/bin/{wallet-fcgi,wallet-processor,wallet-notifier,walletctl} 0755
#   $(SYSTEMD_UNIT_DIR)/wallet-fcgi.{socket,service},
#     wallet-processor.{service,timer}                          0644
#     wallet-notifier.{service,timer}                           0644
#   /etc/nginx/sites-available/wallet.conf,
#   /etc/nginx/snippets/wallet-locations.conf,
#   /etc/nginx/snippets/wallet-tls.conf.example                 0644
#   /etc/nginx/snippets/wallet-tls.conf  0644, only if there is none yet
#   /etc/wallet/{wallet,processor}.env.example                  0644
#   /etc/wallet/{wallet,processor}.env   0640, only if there is none yet
#   $(PREFIX)/share/wallet/bank.cgi  0755, only with INSTALL_MOCK_BANK=1
#   /var/lib/wallet               0700 (owned by `wallet`, see below)
# and, when DESTDIR is empty and make runs as root, the system user and
# group `wallet` if missing, and Debian's snakeoil certificate (which
# wallet-tls.conf names until the operator puts a real one there) if
# missing. The nginx and /etc/wallet paths are fixed:
# nginx/wallet.conf and the units name them.
#
# Enabling is left to the operator (install prints the commands): a package
# build must not start services, and `make install` on a live host should
# not restart them behind the operator's back.

# Where the units go: /etc/systemd/system for a local install; a
# distribution package would use /usr/lib/systemd/system.
SYSTEMD_UNIT_DIR ?= /etc/systemd/system
# 1: also install the mock bank CGI (a test or staging host, never a real
# deployment: it "pays" everything).
INSTALL_MOCK_BANK ?= 0
# Install these already-built release binaries instead of running `make
# release` (e.g. a tree built as a normal user, installed with sudo, so that
# root never writes into .build/; the tests use it to build only once).
RELEASE_BIN_DIR ?=

WALLET_EXECUTABLES := wallet-fcgi wallet-processor wallet-notifier walletctl
WALLET_ENV_FILES := wallet.env processor.env
WALLET_UNITS := wallet-fcgi.socket wallet-fcgi.service wallet-processor.service wallet-processor.timer \
               wallet-notifier.service wallet-notifier.timer

.PHONY: uninstall

install: $(if $(RELEASE_BIN_DIR),,release)
# The binaries come from the build the `release` prerequisite just made (the
# same swift flags give the same bin path), or from RELEASE_BIN_DIR.
	@bindir="$(RELEASE_BIN_DIR)"; \
	if [ -z "$$bindir" ]; then \
	  bindir="$$($(SWIFT) build -c release $(SWIFT_RELEASE_FLAGS) $(SWIFT_BUILD_FLAGS) --show-bin-path)"; \
	fi; \
	for exe in $(WALLET_EXECUTABLES); do \
	  echo "install -D -m 0755 $$bindir/$$exe $(DESTDIR)$(PREFIX)/bin/$$exe"; \
	  install -D -m 0755 "$$bindir/$$exe" "$(DESTDIR)$(PREFIX)/bin/$$exe"; \
	done
	install -d -m 0755 "$(DESTDIR)$(SYSTEMD_UNIT_DIR)"
	for unit in $(WALLET_UNITS); do \
	  install -m 0644 "systemd/$$unit" "$(DESTDIR)$(SYSTEMD_UNIT_DIR)/$$unit"; \
	done
# The units say ExecStart=/usr/local/bin/...: point them at $(PREFIX)/bin when
# installing elsewhere. (sed -i keeps the file's 0644.)
	if [ "$(PREFIX)" != /usr/local ]; then \
	  for unit in $(WALLET_UNITS); do \
	    sed -i -E 's#^(Exec[A-Za-z]*=[-+!@:]*)/usr/local/bin/#\1$(PREFIX)/bin/#' "$(DESTDIR)$(SYSTEMD_UNIT_DIR)/$$unit"; \
	  done; \
	fi
	install -D -m 0644 nginx/wallet.conf "$(DESTDIR)/etc/nginx/sites-available/wallet.conf"
	install -D -m 0644 nginx/wallet-locations.conf "$(DESTDIR)/etc/nginx/snippets/wallet-locations.conf"
# wallet-tls.conf names the certificate: the operator's once it exists, like
# the .env files below; the example beside it shows the current TLS policy.
	install -m 0644 nginx/wallet-tls.conf "$(DESTDIR)/etc/nginx/snippets/wallet-tls.conf.example"
	@tls="$(DESTDIR)/etc/nginx/snippets/wallet-tls.conf"; \
	if [ -e "$$tls" ] || [ -L "$$tls" ]; then \
	  echo "keeping the existing $$tls (compare it with wallet-tls.conf.example)"; \
	else \
	  echo "install -m 0644 nginx/wallet-tls.conf $$tls"; \
	  install -m 0644 nginx/wallet-tls.conf "$$tls"; \
	fi
# The snakeoil pair wallet-tls.conf names by default, so that nginx starts
# at once: ssl-cert's postinst makes it, but not always (containers, images
# built without it). Only on the real system, as root.
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ] && \
	    { [ ! -e /etc/ssl/certs/ssl-cert-snakeoil.pem ] || [ ! -e /etc/ssl/private/ssl-cert-snakeoil.key ]; }; then \
	  if command -v make-ssl-cert >/dev/null; then \
	    echo "make-ssl-cert generate-default-snakeoil"; make-ssl-cert generate-default-snakeoil; \
	  else \
	    echo "warning: no snakeoil certificate and no make-ssl-cert: apt-get install ssl-cert, or name a certificate in /etc/nginx/snippets/wallet-tls.conf"; \
	  fi; \
	fi
# The mock bank only on request: installed by accident it would "pay" anything.
	if [ "$(INSTALL_MOCK_BANK)" = 1 ]; then \
	  install -D -m 0755 bank/bank.cgi "$(DESTDIR)$(PREFIX)/share/wallet/bank.cgi"; \
	fi
# wallet.env is every program's (the database, logging); processor.env the
# processor's alone (the bank). The examples are always refreshed, so an
# upgrade shows what is new (diff them against the .env files). They hold
# no secret: world-readable.
	for name in $(WALLET_ENV_FILES); do \
	  install -D -m 0644 "packaging/$$name.example" "$(DESTDIR)/etc/wallet/$$name.example"; \
	done
# The .env files are the operator's: never overwritten once they exist (even
# as a dangling symlink). 0640: systemd reads them as root, so root:root is
# enough, and the bank's settings are nobody else's business. (The bank
# token is not in them: see LoadCredential= in wallet-processor.service.)
	@for name in $(WALLET_ENV_FILES); do \
	  env="$(DESTDIR)/etc/wallet/$$name"; \
	  if [ -e "$$env" ] || [ -L "$$env" ]; then \
	    echo "keeping the existing $$env (compare it with $$name.example)"; \
	  else \
	    echo "install -m 0640 packaging/$$name.example $$env"; \
	    install -m 0640 "packaging/$$name.example" "$$env"; \
	  fi; \
	done
# The service account, only on the real system (DESTDIR empty) and as root:
# a package build has no business with the build host's /etc/passwd (a
# package creates it in its postinst instead). adduser is Debian's way;
# useradd where it is missing. An existing `wallet` group is reused.
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ] && ! getent passwd wallet >/dev/null; then \
	  if command -v adduser >/dev/null; then \
	    if getent group wallet >/dev/null; then group="--ingroup wallet"; else group="--group"; fi; \
	    echo "adduser --system $$group --home /var/lib/wallet --no-create-home wallet"; \
	    adduser --system $$group --home /var/lib/wallet --no-create-home wallet; \
	  else \
	    if getent group wallet >/dev/null; then group="--gid wallet"; else group="--user-group"; fi; \
	    echo "useradd --system $$group --home-dir /var/lib/wallet --no-create-home --shell /usr/sbin/nologin wallet"; \
	    useradd --system $$group --home-dir /var/lib/wallet --no-create-home --shell /usr/sbin/nologin wallet; \
	  fi; \
	fi
# The data directory: 0700, the ledger is the wallet user's alone (systemd's
# StateDirectory= would create it too, but walletctl may run first). Only
# the directory itself is chowned, never an existing database in it.
	install -d -m 0700 "$(DESTDIR)/var/lib/wallet"
	@if [ -z "$(DESTDIR)" ] && getent passwd wallet >/dev/null; then \
	  echo "chown wallet:wallet /var/lib/wallet"; chown wallet:wallet /var/lib/wallet; \
	fi
	@if [ -z "$(DESTDIR)" ]; then \
	  echo; echo "installed. Next steps:"; \
	  echo "  edit /etc/wallet/processor.env (WALLET_BANK_URL must be set)"; \
	  echo "  if the bank wants a token: install -m 0600 /dev/stdin /etc/wallet/bank-token"; \
	  echo "  systemctl daemon-reload"; \
	  echo "  systemctl enable --now wallet-fcgi.socket wallet-processor.timer wallet-notifier.timer"; \
	  echo "  put the real certificate in /etc/nginx/snippets/wallet-tls.conf (README: Deployment, TLS)"; \
	  echo "  ln -s ../sites-available/wallet.conf /etc/nginx/sites-enabled/wallet.conf"; \
	  echo "  nginx -t && systemctl reload nginx"; \
	fi

# Removes exactly what install put, with the same PREFIX, DESTDIR and
# SYSTEMD_UNIT_DIR. Never the data (/var/lib/wallet), never the `wallet` user
# (files may still belong to it), never an .env file the operator edited,
# never the bank token (the operator's, and a secret).
uninstall:
	for exe in $(WALLET_EXECUTABLES); do rm -f "$(DESTDIR)$(PREFIX)/bin/$$exe"; done
	for unit in $(WALLET_UNITS); do rm -f "$(DESTDIR)$(SYSTEMD_UNIT_DIR)/$$unit"; done
	rm -f "$(DESTDIR)/etc/nginx/sites-available/wallet.conf" "$(DESTDIR)/etc/nginx/snippets/wallet-locations.conf"
# wallet-tls.conf goes only if it is still the example (otherwise it names
# the operator's certificate), as for the .env files below.
	@tls="$(DESTDIR)/etc/nginx/snippets/wallet-tls.conf"; example="$$tls.example"; \
	[ -f "$$example" ] || example="nginx/wallet-tls.conf"; \
	if [ -f "$$tls" ] && [ ! -L "$$tls" ] && cmp -s "$$tls" "$$example"; then \
	  echo "rm -f $$tls"; rm -f "$$tls"; \
	elif [ -e "$$tls" ] || [ -L "$$tls" ]; then \
	  echo "keeping $$tls: it differs from the example (the operator's certificate)"; \
	fi; \
	rm -f "$$tls.example"
# Removed whatever INSTALL_MOCK_BANK says now: it may have been set at install.
	rm -f "$(DESTDIR)$(PREFIX)/share/wallet/bank.cgi"
# An .env file goes only if it is still the example as installed (or, with
# that gone, as in this tree); anything else is the operator's.
	@for name in $(WALLET_ENV_FILES); do \
	  env="$(DESTDIR)/etc/wallet/$$name"; example="$(DESTDIR)/etc/wallet/$$name.example"; \
	  [ -f "$$example" ] || example="packaging/$$name.example"; \
	  if [ -f "$$env" ] && [ ! -L "$$env" ] && cmp -s "$$env" "$$example"; then \
	    echo "rm -f $$env"; rm -f "$$env"; \
	  elif [ -e "$$env" ] || [ -L "$$env" ]; then \
	    echo "keeping $$env: it differs from the example (the operator's settings)"; \
	  fi; \
	  rm -f "$(DESTDIR)/etc/wallet/$$name.example"; \
	done
# Our own directories go if nothing else is left in them; shared ones
# (bin, /etc/nginx/..., the unit dir) stay. /var/lib/wallet always stays.
	@for dir in "$(DESTDIR)$(PREFIX)/share/wallet" "$(DESTDIR)/etc/wallet"; do \
	  if [ -d "$$dir" ]; then rmdir --ignore-fail-on-non-empty "$$dir"; fi; \
	done
# What install did not create but now points at removed files: the
# operator's links. Named, not removed (they are not ours).
	@for link in "$(DESTDIR)/etc/nginx/sites-enabled/wallet.conf" \
	    $$(find "$(DESTDIR)/etc/systemd/system" -path '*.wants/wallet-*' -type l 2>/dev/null); do \
	  if [ -L "$$link" ]; then echo "warning: $$link still exists and now points at a removed file; remove it (systemctl disable ..., rm)"; fi; \
	done

# --- the Debian package -------------------------------------------------------
#
#   make deb        wallet_$(DEB_VERSION)_$(DEB_ARCH).deb in the repository root
#   make test-deb   lintian, then install, remove and purge it in a throwaway
#                   overlay of this machine's root (Tests/deb/check_deb.sh)
#
# Built with dpkg-deb alone (no debhelper, no debian/ source tree) from what
# `make install DESTDIR=... PREFIX=/usr SYSTEMD_UNIT_DIR=/usr/lib/systemd/system`
# lays out, so the package and a local install never drift apart: the same
# files, the same modes, and the units generated from systemd/ by the same
# ExecStart= prefix substitution. packaging/deb/ holds the rest (control
# template, maintainer scripts, copyright); docs/PACKAGING.md explains them.

# The version, set in one place: the VERSION file (the upstream version).
# DEB_REVISION counts packagings of one upstream version; reset it to 1
# whenever VERSION changes.
WALLET_VERSION := $(strip $(file < VERSION))
DEB_REVISION ?= 1
DEB_VERSION := $(WALLET_VERSION)-$(DEB_REVISION)
DEB_ARCH := $(shell dpkg --print-architecture 2>/dev/null || echo amd64)
DEB_FILE := wallet_$(DEB_VERSION)_$(DEB_ARCH).deb
# The staging tree (root/ becomes the package, root/DEBIAN its control part).
DEB_BUILD := .build-deb
DEB_SCRIPTS := postinst prerm postrm
# What the units and maintainer scripts need besides the shared libraries
# (which dpkg-shlibdeps computes from the binaries): adduser (postinst),
# nginx (the front end; its www-data group owns the socket), ca-certificates
# (the processor's https calls to the bank), and a systemd recent enough for
# every directive of the units (PrivateIPC= is the newest, from 248).
DEB_DEPENDS := adduser, ca-certificates, nginx, ssl-cert, systemd (>= 248)

# dpkg-shlibdeps (dpkg-dev) computes the Depends: line, lintian checks the
# package (both only for the package, so not among the build dependencies).
deps-deb:
	@missing=(); \
	command -v dpkg-shlibdeps >/dev/null || missing+=(dpkg-dev); \
	command -v lintian >/dev/null || missing+=(lintian); \
	if (( $${#missing[@]} )); then \
	  echo "==> installing: $${missing[*]}"; \
	  $(SUDO) apt-get update -q; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -q --no-install-recommends "$${missing[@]}"; \
	fi

deb: deps-deb release
	@test -n "$(WALLET_VERSION)" || { echo "VERSION is empty"; exit 1; }
	@umask 022; build="$(CURDIR)/$(DEB_BUILD)"; root="$$build/root"; \
	rm -rf "$$build" "$(DEB_FILE)"; mkdir -p "$$build"; \
	bindir="$$($(SWIFT) build -c release $(SWIFT_RELEASE_FLAGS) $(SWIFT_BUILD_FLAGS) --show-bin-path)"; \
	echo "==> staging $(DEB_FILE) in $(DEB_BUILD)/root (make install DESTDIR=...)"; \
	$(MAKE) install DESTDIR="$$root" PREFIX=/usr SYSTEMD_UNIT_DIR=/usr/lib/systemd/system \
	  INSTALL_MOCK_BANK=0 RELEASE_BIN_DIR="$$bindir" >"$$build/install.log" || { cat "$$build/install.log"; exit 1; }; \
	: "The data directory belongs to the postinst, which gives it to the wallet"; \
	: "user, and never to dpkg, which would try to remove it on purge."; \
	rmdir "$$root/var/lib/wallet" "$$root/var/lib" "$$root/var"; \
	: "Stripped as dh_strip would (the symbols stay in the unstripped build)."; \
	strip --remove-section=.comment --remove-section=.note $(addprefix "$$root/usr/bin/",$(WALLET_EXECUTABLES)); \
	doc="$$root/usr/share/doc/wallet"; \
	install -D -m 0644 packaging/deb/copyright "$$doc/copyright"; \
	: "changelog.Debian: one entry for this version, dated by the last commit"; \
	: "(the same tree gives the same package)."; \
	when=$$(git log -1 --format=%ct 2>/dev/null || date +%s); \
	commit=$$(git rev-parse --short HEAD 2>/dev/null || echo unknown); \
	{ printf 'wallet (%s) unstable; urgency=medium\n\n' "$(DEB_VERSION)"; \
	  printf '  * wallet %s, built by make deb from commit %s.\n\n' "$(WALLET_VERSION)" "$$commit"; \
	  printf ' -- %s  %s\n' "$$(sed -n 's/^Maintainer: //p' packaging/deb/control.in)" "$$(LC_ALL=C date -u -R -d "@$$when")"; \
	} | gzip -9n >"$$doc/changelog.Debian.gz"; \
	chmod 0644 "$$doc/changelog.Debian.gz"; \
	install -d -m 0755 "$$root/DEBIAN"; \
	for script in $(DEB_SCRIPTS); do install -m 0755 "packaging/deb/$$script" "$$root/DEBIAN/$$script"; done; \
	: "Every file under /etc is a conffile: dpkg keeps the operator's edits."; \
	(cd "$$root" && find etc -type f | LC_ALL=C sort | sed 's#^#/#') >"$$root/DEBIAN/conffiles"; \
	: "md5sums of everything else (dpkg keeps the conffiles' own sums)."; \
	(cd "$$root" && find . -path ./DEBIAN -prune -o -type f -print | sed 's#^\./##' | LC_ALL=C sort | \
	  grep -vxF -f <(sed 's#^/##' DEBIAN/conffiles) | xargs md5sum) >"$$root/DEBIAN/md5sums"; \
	: "dpkg-shlibdeps wants a debian/control beside the tree it reads."; \
	mkdir "$$build/debian"; printf 'Source: wallet\n\nPackage: wallet\nArchitecture: any\n' >"$$build/debian/control"; \
	shlibs=$$(cd "$$build" && dpkg-shlibdeps -O $(addprefix -eroot/usr/bin/,$(WALLET_EXECUTABLES)) | sed -n 's/^shlibs:Depends=//p'); \
	test -n "$$shlibs" || { echo "dpkg-shlibdeps found no libraries"; exit 1; }; \
	size=$$(du -sk --exclude=DEBIAN "$$root" | cut -f1); \
	sed -e 's/@VERSION@/$(DEB_VERSION)/' -e 's/@ARCH@/$(DEB_ARCH)/' -e "s/@INSTALLED_SIZE@/$$size/" \
	    -e "s/@DEPENDS@/$$shlibs, $(DEB_DEPENDS)/" packaging/deb/control.in >"$$root/DEBIAN/control"; \
	chmod 0644 "$$root/DEBIAN/control" "$$root/DEBIAN/conffiles" "$$root/DEBIAN/md5sums"; \
	dpkg-deb --root-owner-group -Zxz --build "$$root" "$(DEB_FILE)" >/dev/null; \
	echo "==> $(DEB_FILE): Depends: $$shlibs, $(DEB_DEPENDS)"

# Its time includes building the package (a few seconds once the release
# build is warm, as after test-integration).
test-deb: deps-deb
	$(call require,Tests/deb/check_deb.sh)
	@start=$$SECONDS; \
	$(MAKE) deb; \
	$(SUDO) bash Tests/deb/check_deb.sh "$(DEB_FILE)"; \
	echo "==> deb: passed in $$((SECONDS - start)) s"

# Build products and the development run dir (sockets, logs). The
# development database var/wallet.db is kept: `make distclean` removes it.
clean:
	rm -rf .build var/run verify/build

	rm -rf .build .build-fuzz .build-tsan .build-asan .build-deb var/run wallet_*.deb
	find Tests -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf var .build-venv
