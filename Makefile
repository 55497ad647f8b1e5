# Makefile: build, run and test the wallet service.
#
#   make deps      install the Debian packages the build, the stack and the tests need
#   make build     swift build (debug)
#   make release   swift build -c release
#   make run       build, then run the whole stack in the foreground (Ctrl-C stops it)
#   make test      build, then run every test suite, with a summary
#   make bench     run scripts/bench.sh (if present)
#   make install   install the release binaries and the nginx site
#   make clean     remove build products and the development run dir
#
# Settings for `make run` come from the environment (WALLET_HTTP_PORT,
# WALLET_DB, WALLET_BANK_MODE, ...; see docs/INTERFACES.md, defaults as in
# API.md), e.g.  WALLET_HTTP_PORT=9000 make run

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
# Extra flags for the release build. Static Swift runtime: the deployed
# binaries then need only Debian's system libraries (PLATFORM.md pitfall 5).
SWIFT_RELEASE_FLAGS ?= --static-swift-stdlib
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
BUILD_PKGS := libfcgi-dev libsqlite3-dev libcurl4-openssl-dev
# Run and test: fcgiwrap for the mock bank, curl (stack.sh's health checks),
# sqlite3 (inspecting the database), procps (ps, used to stop fcgiwrap's
# children by pid).
RUN_PKGS := fcgiwrap curl sqlite3 procps

# The test suites, in the order `make test` runs them; each is also a
# target of its own (make test-swift, make test-bank, ...).
TEST_SUITES := swift bank systemd integration

.PHONY: all deps deps-bench build release run test $(addprefix test-,$(TEST_SUITES)) \
        bench install clean distclean help

# Plain `make` builds.
all: build

help:
	@sed -n '3,10s/^# \{0,1\}//p' $(firstword $(MAKEFILE_LIST))

# Installs only what is missing, so that an up-to-date machine never touches
# apt (and needs no network). `apt-get update` runs only when something is
# missing: fresh machines have empty package lists.
deps:
	@missing=(); \
	for p in $(BUILD_PKGS) $(RUN_PKGS); do \
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

build:
	$(SWIFT) build $(SWIFT_BUILD_FLAGS)

release:
	$(SWIFT) build -c release $(SWIFT_RELEASE_FLAGS) $(SWIFT_BUILD_FLAGS)

# `exec` replaces make's shell with stack.sh, so Ctrl-C and SIGTERM reach it
# directly and it stops everything it started. WALLET_BIN_DIR is where this
# build put the binaries (unless already set).
run: deps build
	@export WALLET_BIN_DIR="$${WALLET_BIN_DIR:-$$($(SWIFT) build $(SWIFT_BUILD_FLAGS) --show-bin-path)}"; \
	exec bash scripts/stack.sh

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

# The Swift unit tests (Tests/WalletCoreTests).
test-swift:
	$(SWIFT) test $(SWIFT_BUILD_FLAGS)

# The mock bank CGI on its own.
test-bank:
	$(call require,Tests/bank/test_bank_cgi.sh)
	bash Tests/bank/test_bank_cgi.sh

# systemd-analyze checks of the units.
test-systemd:
	$(call require,Tests/systemd/check_units.sh)
	bash Tests/systemd/check_units.sh

# End-to-end tests through nginx (each test starts its own stack with
# scripts/stack.sh; see Tests/integration/conftest.py).
test-integration:
	$(call require,Tests/integration/conftest.py)
	@export WALLET_BIN_DIR="$${WALLET_BIN_DIR:-$$($(SWIFT) build $(SWIFT_BUILD_FLAGS) --show-bin-path)}"; \
	echo "$(PYTHON) -m pytest Tests/integration (binaries: $$WALLET_BIN_DIR)"; \
	$(PYTHON) -m pytest -q -ra -p no:cacheprovider Tests/integration $(PYTEST_ARGS)

# The benchmarks choose their own build and settings.
bench: deps deps-bench
	@if [ -f scripts/bench.sh ]; then exec bash scripts/bench.sh; \
	else echo "no scripts/bench.sh yet: nothing to run"; fi

# Release binaries to $(PREFIX)/bin; the nginx site and its shared snippet
# where nginx/wallet.conf expects them. The systemd units (systemd/) and
# /etc/wallet/wallet.env are installed by the operator (see their headers).
install: release
	@bindir="$$($(SWIFT) build -c release $(SWIFT_RELEASE_FLAGS) $(SWIFT_BUILD_FLAGS) --show-bin-path)"; \
	for exe in wallet-fcgi wallet-processor walletctl; do \
	  install -D -m 0755 "$$bindir/$$exe" "$(DESTDIR)$(PREFIX)/bin/$$exe"; \
	done
	install -D -m 0644 nginx/wallet.conf $(DESTDIR)/etc/nginx/sites-available/wallet.conf
	install -D -m 0644 nginx/wallet-locations.conf $(DESTDIR)/etc/nginx/snippets/wallet-locations.conf

# Build products and the development run dir (sockets, logs). The
# development database var/wallet.db is kept: `make distclean` removes it.
clean:
	rm -rf .build var/run
	find Tests -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf var
