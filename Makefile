# arbflow — `make demo` and `make test` set up everything they need on a fresh
# Debian/Ubuntu machine (as root or with sudo): uv, the venv from uv.lock, redis-server,
# openssh-server and rsync (Ray's cluster launcher; the `ray up` test).
SHELL := /bin/bash
.DEFAULT_GOAL := help

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
TOOLS := $(CURDIR)/.tools
UV := $(shell command -v uv 2>/dev/null || echo $(TOOLS)/bin/uv)
RUN := $(UV) run --frozen
export UV_PYTHON_DOWNLOADS := never
export RAY_ENABLE_UV_RUN_RUNTIME_ENV := 0
export RAY_USAGE_STATS_ENABLED := 0
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help setup uv venv redis ssh browser demo test lint typecheck i18n-check unit integration bench clean cluster-configs cluster-source

help:
	@echo "make demo   set up everything, then run the demo on embedded defaults"
	@echo "make test   set up everything, then lint, type-check and run all tests"
	@echo "make bench  run every benchmark (--quick) and print each one's JSON line"
	@echo "make i18n-check  every text of the code translated in every language (notify/locales)"

setup: uv venv redis ssh browser

uv:
	@if [ ! -x "$(UV)" ]; then \
	  echo "installing uv into $(TOOLS)"; \
	  if ! python3 -m venv "$(TOOLS)" >/dev/null 2>&1; then \
	    $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq python3-venv python3-pip >/dev/null; \
	    rm -rf "$(TOOLS)"; python3 -m venv "$(TOOLS)"; \
	  fi; \
	  "$(TOOLS)/bin/pip" install -q uv; \
	fi

venv: uv
	@# bytecode compiled once here: every Ray worker imports ray, polars and aiogram, and
	@# without .pyc files (PYTHONDONTWRITEBYTECODE below) each import compiles them anew
	@# VENV_GROUPS: more dependency groups, e.g. `make venv VENV_GROUPS="--group ops"` (a head
	@# node of cluster.yaml: its autoscaler launches EC2 workers with boto3)
	@$(UV) sync --frozen --quiet --compile-bytecode $(VENV_GROUPS)

redis:
	@if ! command -v redis-server >/dev/null 2>&1; then \
	  echo "installing redis-server (apt)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq redis-server >/dev/null; \
	  $(SUDO) systemctl disable --now redis-server >/dev/null 2>&1 || true; \
	fi
	@if ! command -v haproxy >/dev/null 2>&1 && [ ! -x /usr/sbin/haproxy ]; then \
	  echo "installing haproxy (apt; Ray Serve's high-throughput proxy mode)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq haproxy >/dev/null; \
	  $(SUDO) systemctl disable --now haproxy >/dev/null 2>&1 || true; \
	fi

# Ray's cluster launcher speaks SSH and rsync; tests/integration/test_cluster_launch.py runs
# `ray up cluster.local.yaml` through an sshd of its own (on a free port, never the service).
ssh:
	@if [ ! -x /usr/sbin/sshd ] || ! command -v ssh-keygen >/dev/null 2>&1 || ! command -v rsync >/dev/null 2>&1; then \
	  echo "installing openssh-server and rsync (apt)"; \
	  had_sshd=$$([ -x /usr/sbin/sshd ] && echo yes); \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq openssh-server openssh-client rsync >/dev/null; \
	  [ -n "$$had_sshd" ] || $(SUDO) systemctl disable --now ssh >/dev/null 2>&1 || true; \
	fi

browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  echo "installing chromium (apt)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium >/dev/null; \
	fi

demo: setup
	$(RUN) arbflow demo $(DEMO_ARGS)

lint: venv
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) lint-imports

typecheck: venv
	$(RUN) mypy

i18n-check: venv
	$(RUN) python -m bot.catalogue_check

unit: venv
	$(RUN) pytest tests/unit -q

integration: setup
	$(RUN) pytest tests/integration -q

# Two workers: the suite mostly waits (whole systems starting in subprocesses, delays, actors
# starting), so two halve its time on 2 cores; each worker has its own Ray and Redis, a file
# stays on one worker (tests/conftest.py). `make test TEST_WORKERS=0` runs it in one process.
TEST_WORKERS ?= 2
test: setup lint typecheck
	$(RUN) pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadgroup)

bench: setup
	@mkdir -p var
	@failed=""; for b in ingest detect session webhook eligibility deliver live startup footprint chain; do \
	  echo "== bench/$$b.py --quick"; \
	  $(RUN) python bench/$$b.py --quick > var/bench-$$b.log 2>&1; rc=$$?; tail -1 var/bench-$$b.log; \
	  [ $$rc -eq 0 ] || failed="$$failed $$b"; \
	done; \
	if [ -n "$$failed" ]; then echo "benchmarks that missed their target:$$failed (logs: var/bench-*.log)"; exit 1; fi

# cluster.yaml and cluster.local.yaml from their one source, cluster/ (serve/cluster_config.py)
cluster-configs: venv
	$(RUN) python -m serve.cluster_config

# What `ray up` copies to the nodes: the files git tracks (and new ones it does not ignore),
# as they are in the working tree, without .venv/, var/, .env or caches.
CLUSTER_SOURCE ?= var/cluster-source
cluster-source:
	@rm -rf "$(CLUSTER_SOURCE)" && mkdir -p "$(CLUSTER_SOURCE)"
	@git ls-files -z --cached --others --exclude-standard \
	  | rsync -a --from0 --ignore-missing-args --files-from=- . "$(CLUSTER_SOURCE)/"
	@echo "$(CLUSTER_SOURCE): $$(find "$(CLUSTER_SOURCE)" -type f | wc -l) files for ray up"

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
