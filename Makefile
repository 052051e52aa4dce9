# Two commands: `make run` and `make test`. Everything else here is what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
# Empty: the gateway's own defaults (database.url, server.listen: sqlite:///var/gateway.db on 127.0.0.1:9500).
DB_URL ?=
LISTEN ?=
DB_OPTION = $(if $(DB_URL),--db '$(DB_URL)')
# make run's TLS listener (tls.listen is empty by default), with the demo PKI below.
TLS_LISTEN ?= tcp:9543:interface=127.0.0.1:backlog=1024
# The demo PKI: a CA, the gateway's certificate and one per demo terminal. Empty: `gateway pki`'s default
# directory, var/pki, where the config's default [tls] files are.
PKI_DIR ?=
PKI_OPTION = $(if $(PKI_DIR),--dir '$(PKI_DIR)')
PYTEST_ARGS ?=
PROTO := proto/ningbo/gateway/v1/gateway.proto
GENERATED_DIR := gateway/protocol/generated
GENERATED := $(GENERATED_DIR)/ningbo/gateway/v1/gateway_pb2.py
# The PC/SC stack: pyscard builds against swig and libpcsclite-dev; pcscd and vsmartcard-vpcd give
# a real reader whose card is one of our simulators. jq reads every line of `gateway serve --log-format json` in
# the log tests, as an operator's tools would. prometheus (with promtool): the tests scrape a gateway with a real
# Prometheus of their own and check docs/operations/ (on a host with systemd the package also starts the system's
# prometheus service on :9090; the tests do not use it).
APT_PACKAGES := swig libpcsclite-dev pcscd vsmartcard-vpcd jq prometheus

.PHONY: run test lint setup system-packages proto db pki bench clean

# Benchmarks print ratios measured in one run (these machines are noisy) and write bench/*.json, the tables in
# BENCHMARKS.md (the last step: issue 15's figures from the files the steps before wrote) and each simulator run's
# page (gateway simulate --report) in bench/reports/RUN/index.html.
BENCH_SETTLEMENTS ?= 2000

run: setup db pki
	$(VENV)/bin/gateway serve $(if $(TLS_LISTEN),--tls-listen '$(TLS_LISTEN)') $(if $(LISTEN),--listen '$(LISTEN)') $(DB_OPTION)

test: setup lint
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check gateway simulators tests benchmarks
	$(VENV)/bin/mypy gateway simulators benchmarks
	$(VENV)/bin/lint-imports

setup: $(INSTALLED) $(GENERATED)

system-packages:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else \
	  echo "warning: Debian packages missing:$$missing (needs root and apt-get); the tests that need them will be skipped"; \
	fi

$(INSTALLED): pyproject.toml | system-packages
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	extras=dev; \
	if [ "$$(dpkg-query -W -f='$${Status}\n' swig libpcsclite-dev 2>/dev/null | grep -c 'install ok installed')" = 2 ]; then extras=dev,pcsc; fi; \
	$(PY) -m pip install -q -e ".[$$extras]"
	touch $@

proto: $(GENERATED)

$(GENERATED): $(PROTO) $(INSTALLED)
	rm -rf $(GENERATED_DIR)
	mkdir -p $(GENERATED_DIR)
	$(PY) -m grpc_tools.protoc -Iproto --python_out=$(GENERATED_DIR) --pyi_out=$(GENERATED_DIR) $(PROTO)
	find $(GENERATED_DIR) -type d -exec touch {}/__init__.py \;

db: setup
	mkdir -p var
	$(VENV)/bin/gateway db upgrade $(DB_OPTION)
	$(VENV)/bin/gateway registry demo $(DB_OPTION)

# Created once; run again it issues only what is missing (a terminal added to the demo registry, say).
pki: setup
	$(VENV)/bin/gateway pki init-ca --skip-existing --name "Ningbo gateway demo CA" $(PKI_OPTION)
	$(VENV)/bin/gateway pki issue-server --skip-existing localhost 127.0.0.1 ::1 $(PKI_OPTION)
	set -o pipefail; $(VENV)/bin/gateway pki issue-terminal --demo --skip-existing $(PKI_OPTION) | tail -1

bench: setup
	$(PY) -m benchmarks.system_bench --json bench/results.json
	$(PY) -m benchmarks.ledger_bench --settlements $(BENCH_SETTLEMENTS) --profile --json bench/ledger.json
	$(PY) -m benchmarks.reconcile_bench --json bench/reconcile.json
	$(PY) -m benchmarks.metrics_bench --json bench/metrics.json
	$(PY) -m benchmarks.processes_bench --json bench/processes.json
	$(PY) -m benchmarks.report_issue15

clean:
	rm -rf $(VENV) $(GENERATED_DIR) var/*.db var/*.db-wal var/*.db-shm .mypy_cache .pytest_cache .ruff_cache
