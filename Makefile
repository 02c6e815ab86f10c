# minipostfix: the two commands a newcomer needs are `make run` and `make test`.
# Both do all set-up on a fresh Debian 12 machine (see README.md).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := python3-venv python3-dev gcc libdb5.3-dev
# What the tests run for real: Postfix (the comparison oracle), postmap's db tools,
# haproxy (the load balancer in front of two smtpd), redis-server, and systemd for
# `systemd-analyze verify` of the rendered unit.  Installed, never started: the tests
# start their own servers on loopback or unix sockets.  systemd's package is safe in a
# container: it does not replace init (systemd-sysv does), its maintainer scripts talk
# to a running manager only when /run/systemd/system exists, and the policy-rc.d below
# keeps what it recommends (dbus, timesyncd) from starting.
TEST_APT_PACKAGES := postfix db5.3-util haproxy redis-server systemd
UID := $(shell id -u)

# Where `make run` puts its instance: as root, Postfix's layout (mail_owner must reach its
# files, and a checkout under a 0700 home is out of its reach); else under the checkout.
ifeq ($(UID),0)
RUN_CONF ?= /etc/minipostfix
RUN_QUEUE ?= /var/spool/minipostfix
RUN_DATA ?= /var/lib/minipostfix
RUN_LOG ?= /var/log/minipostfix.log
else
RUN_CONF ?= $(CURDIR)/run/etc
RUN_QUEUE ?= $(CURDIR)/run/queue
RUN_DATA ?= $(CURDIR)/run/data
RUN_LOG ?= $(CURDIR)/run/maillog
endif

.PHONY: all setup deps test-deps mail-owner run start stop status test lint docs wheel-test bench clean

all: setup

# System packages: installed as root, otherwise the command to run is printed.
deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$(UID)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	  else \
	    echo "missing Debian packages:$$missing"; \
	    echo "run as root:  apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi

# The test suite's servers, as root.  A Debian server package starts its service at
# install time (invoke-rc.d); a policy-rc.d that answers 101 ("action forbidden")
# for the length of the install keeps anything from being left running.  Postfix is
# told not to configure a mail system.  As an ordinary user: the tests that need a
# missing package are skipped, and the command to run is printed.
test-deps:
	@missing=""; for p in $(TEST_APT_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$(UID)" = 0 ]; then \
	    echo "installing (not started):$$missing"; \
	    policy=/usr/sbin/policy-rc.d; \
	    if [ ! -e $$policy ]; then \
	      trap "rm -f $$policy" EXIT; \
	      printf '#!/bin/sh\nexit 101\n' >$$policy && chmod 755 $$policy; \
	    fi; \
	    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	  else \
	    echo "missing Debian packages for some tests (skipped):$$missing"; \
	    echo "run as root:  apt-get install -y$$missing"; \
	  fi; \
	fi

# mail_owner: Postfix's default account, created as a system user when missing.
mail-owner:
	@if ! getent passwd postfix >/dev/null; then \
	  if [ "$(UID)" = 0 ]; then \
	    echo "creating system user postfix"; \
	    getent group postfix >/dev/null || groupadd --system postfix; \
	    useradd --system --gid postfix --no-create-home --home-dir /nonexistent \
	      --shell /usr/sbin/nologin postfix; \
	  else \
	    echo "warning: mail_owner account postfix does not exist (create it as root)"; \
	  fi; \
	fi

$(VENV)/.installed: setup.cfg setup.py pyproject.toml
	$(MAKE) deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q -e '.[test,dev]'
	touch $@

# tests/support is the package `support` that the tests and bench/ share: a .pth file puts
# tests/ on the venv's import path, so that bench scripts and the programs tests start import
# it as the test suite does (pytest itself finds it through setup.cfg's pythonpath).
$(VENV)/.support: $(VENV)/.installed
	echo "$(CURDIR)/tests" > "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/minipostfix-tests.pth"
	touch $@

setup: $(VENV)/.installed $(VENV)/.support mail-owner

# The runtime configuration, rendered from the embedded default; rendered again
# when the embedded files or create-instance (control.py) change.  create-instance
# adds the log's folder to maillog_file_prefixes (run/ for an ordinary user).
$(RUN_CONF)/main.cf: etc/main.cf etc/master.cf etc/minipostfix.service master/control.py $(VENV)/.installed
	$(BIN)/minipostfix -c $(RUN_CONF) create-instance \
	  queue_directory=$(RUN_QUEUE) data_directory=$(RUN_DATA) \
	  daemon_directory=$(CURDIR)/$(BIN) maillog_file=$(RUN_LOG)
	$(BIN)/python -I -m tlsmgr.clients.mkcert $(RUN_CONF)

run: setup $(RUN_CONF)/main.cf
	@echo "minipostfix: configuration $(RUN_CONF), log $(RUN_LOG); Ctrl-C or 'make stop' ends it"
	exec $(BIN)/minipostfix -c $(RUN_CONF) start-fg

start: setup $(RUN_CONF)/main.cf
	$(BIN)/minipostfix -c $(RUN_CONF) start

stop:
	$(BIN)/minipostfix -c $(RUN_CONF) stop

status:
	$(BIN)/minipostfix -c $(RUN_CONF) status -v

test: setup test-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The sections of docs/ that mirror code: the parameter tables of docs/configuration.md (from
# the Param rows) and the layering rules of docs/design.md (from tests/unit/test_layering.py).
# tests/unit/test_repository.py fails while a committed section is stale.
docs: setup
	$(BIN)/python -m support.docgen

# Build a wheel, install it into a fresh venv, run the console scripts from it.
wheel-test: setup
	rm -rf build/wheel-test && mkdir -p build/wheel-test
	$(BIN)/pip wheel -q --no-deps -w build/wheel-test .
	$(PYTHON) -m venv build/wheel-test/venv
	build/wheel-test/venv/bin/pip install -q build/wheel-test/*.whl
	cd build && ../tests/wheel_smoke.sh wheel-test/venv

# Figures, never assertions (docs/performance.md); as root, about 3 minutes.
bench: setup
	$(BIN)/python bench/tlsmgr_bench.py $(BENCH_ARGS)

clean:
	rm -rf build dist *.egg-info run .pytest_cache
