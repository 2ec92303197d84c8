# pycontainerd — `make help` lists the targets.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# prometheus (promtool, a server to scrape us) and golang-go (go tool pprof) are for the ops tests
APT_PACKAGES := containerd runc busybox-static docker-registry containernetworking-plugins iproute2 tmux pigz zstd util-linux procps strace \
  prometheus golang-go
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help install deps demo test unit integration lint proto check-proto bench bench-publish fuzz chaos clean-test install-service

help: ## show this help
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

deps: ## install Debian packages (runc, containerd for ctr, busybox-static, docker-registry, CNI, prometheus, go)
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; apt-get update -q && apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@# the packaged containerd must not run as the node's daemon: we only want its ctr (and it for comparisons)
	@-systemctl disable --now containerd >/dev/null 2>&1 || true
	@# nor its docker-registry service (its default config wants an htpasswd file): contrib/registry.yml replaces it
	@-systemctl disable --now docker-registry >/dev/null 2>&1 || true
	@# nor Debian's Prometheus: the tests start their own on 127.0.0.1
	@-systemctl disable --now prometheus >/dev/null 2>&1 || true

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: deps $(STAMP) ## install everything (apt packages, .venv, editable pycontainerd); idempotent

install-service: install ## link the commands into /usr/local/bin, install the systemd unit and a default config
	for b in pycontainerd pycontainerd-shim-runc-v2 pyctr pycrictl; do ln -sf $(CURDIR)/$(BIN)/$$b /usr/local/bin/$$b; done
	install -D -m 0644 contrib/pycontainerd.service /etc/systemd/system/pycontainerd.service
	@[ -f /etc/pycontainerd/config.toml ] || { mkdir -p /etc/pycontainerd && $(BIN)/pycontainerd config default > /etc/pycontainerd/config.toml; }
	-systemctl daemon-reload 2>/dev/null

proto: $(STAMP) ## regenerate src/pycontainerd/api from proto/
	$(BIN)/python tools/genproto.py

check-proto: $(STAMP) ## fail when the generated code is stale
	$(BIN)/python tools/genproto.py --check

lint: $(STAMP) ## ruff + mypy --strict + import rules
	$(BIN)/ruff check src tests bench tools
	$(BIN)/mypy
	$(BIN)/lint-imports

# root-marked tests fail without root (they must not vanish as skips): non-root `make unit` leaves
# the few root-marked unit tests (chown, device nodes) out on purpose
UNIT_MARKS := $(if $(filter 0,$(shell id -u)),,-m "not root")

unit: $(STAMP) ## fast tests of pure logic (as non-root: without the few root-marked ones)
	$(BIN)/pytest -q tests/unit $(UNIT_MARKS) $(PYTEST_ARGS)

integration: install ## tests with the real daemon, ctr, runc, overlayfs, registry (root)
	$(BIN)/pytest -q tests/integration $(PYTEST_ARGS)

test: install ## install, lint, and run every test
	$(MAKE) --no-print-directory check-proto lint
	$(BIN)/pytest -q -p no:cacheprovider tests $(PYTEST_ARGS)

demo: install ## install, start the daemon, run a container from a locally built busybox image
	$(BIN)/python -m contrib.demo

BENCH_ARGS ?=
bench: install ## side-by-side benchmarks against containerd: JSON with every sample in bench/results/ (BENCH_ARGS="--runs 3")
	@# W9 times pyctr as an installed package runs: with its bytecode compiled (under
	@# PYTHONDONTWRITEBYTECODE an editable install would compile every module at every start)
	$(BIN)/python -m compileall -q src >/dev/null
	$(BIN)/python -m bench $(BENCH_ARGS)

bench-publish: $(STAMP) ## commit-ready: copy bench/results/latest.json to bench/published/, regenerate README's table from it
	$(BIN)/python -m bench.report --publish $(if $(NOTE),--note "$(NOTE)")

fuzz: install ## long property-based fuzzing of the tar applier and every parser (FUZZ_EXAMPLES=20000 per target)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest -q -p no:cacheprovider tests/fuzz --hypothesis-show-statistics $(PYTEST_ARGS)

chaos: install ## long chaos run: kill -9 of the daemon and shims at random moments (CHAOS_ITERATIONS=60)
	CHAOS_ITERATIONS=$${CHAOS_ITERATIONS:-60} CHAOS_SEED=$${CHAOS_SEED:-$$(date +%s)} $(BIN)/pytest -q -p no:cacheprovider -s tests/chaos --timeout 3600 $(PYTEST_ARGS)

clean-test: ## remove leftovers of interrupted test runs (mounts and temp dirs under /tmp/pycd-*)
	-@grep -oE ' /tmp/pycd-[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l
	-@rm -rf /tmp/pycd-*
