# mqtt-cluster — entry points. `make up` deploys (local Docker by default), `make test` proves.
SHELL := /bin/bash
STACK ?= local
VENV ?= venv
PY := $(VENV)/bin/python
PYTHON ?= python3
# Debian packages the tests run for real (nginx -t, haproxy -c, mosquitto data plane, shellcheck, cloud-init schema,
# jq for the workflow scripts, promtool from prometheus for the rendered scrape configs).
APT_PACKAGES := nginx libnginx-mod-stream haproxy mosquitto mosquitto-clients shellcheck cloud-init openssl jq prometheus
# A local file backend unless the operator points elsewhere; no Pulumi Cloud account needed.
BACKEND = $${PULUMI_BACKEND_URL:-file://$(CURDIR)/.pulumi-state}

# The Pulumi CLI: the one on PATH, else a project-local copy matching the SDK (tools/pulumi_cli.py).
CLI_ROOT ?= $(CURDIR)/.pulumi-cli
# make bench writes here; BENCH_SAVE=1 replaces the committed figures in bench/results/.
BENCH_OUT = $(if $(BENCH_SAVE),bench/results/lb.json,build/bench/lb.json)
BENCH_FAULTS_OUT = $(if $(BENCH_SAVE),bench/results/faults.json,build/bench/faults.json)

.PHONY: test lint deps sysdeps runtime plan bench bench-faults preview up down output pulumi docker-check clean help

help:
	@echo "make up [STACK=local]      deploy a stack (local Docker by default)"
	@echo "make down [STACK=local]    destroy it"
	@echo "make output [NAME=ca_file] [SHOW_SECRETS=1]   the stack's outputs (pulumi stack output)"
	@echo "make pulumi ARGS='config set …'   any pulumi command on the same backend and stack"
	@echo "make preview STACK=dev [POLICY=1]   pulumi preview (with the policy pack)"
	@echo "make plan STACK=dev        offline plan (no CLI, no cloud)"
	@echo "make test                  install everything, lint, run all tests"
	@echo "make bench [BENCH_SAVE=1]  proxy load benchmark (build/bench/lb.json; BENCH_SAVE=1: bench/results/lb.json)"
	@echo "make bench-faults [BENCH_SAVE=1]  hung/vanished broker, lost proxy, reconnect storm (build/bench/faults.json)"

# What the program needs to run (make up/preview/down/output): no test tooling.
$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

runtime: $(VENV)/.runtime

# Everything make test needs (requirements-dev.txt includes requirements.txt).
$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $(VENV)/.runtime $@

sysdeps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

deps: $(VENV)/.installed sysdeps

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/yamllint -s -c .yamllint stacks Pulumi.yaml .github
	$(VENV)/bin/actionlint .github/workflows/*.yml
	$(VENV)/bin/hadolint docker/*/Dockerfile
	shellcheck .ci/run

test: deps lint
	$(PY) -m pytest -q -W error::pytest.PytestReturnNotNoneWarning tests

# The offline plan needs only the program's requirements (as in plan-diff.yml).
plan: $(VENV)/.runtime
	$(PY) -m tools.plan $(STACK)

bench: deps
	$(PY) -m bench.lb --out $(BENCH_OUT)

bench-faults: deps
	$(PY) -m bench.faults --out $(BENCH_FAULTS_OUT)

docker-check:
	@command -v docker >/dev/null 2>&1 || { echo "the local stack needs Docker (no docker command on PATH)" >&2; exit 1; }
	@docker info >/dev/null 2>&1 || { echo "the local stack needs a running Docker daemon (docker info failed)" >&2; exit 1; }

# Order matters and is kept inside the recipe (not as prerequisites, which make -j may reorder):
# Docker first (local stack), then the runtime venv, then the CLI (installed if missing). Every
# pulumi command runs with the same backend (a file backend unless PULUMI_BACKEND_URL says
# otherwise) and, for the local stack, the empty passphrase. Progress goes to stderr, so
# `$(make -s output NAME=ca_file)` is the value alone.
preview up down output pulumi:
	@if [ "$(STACK)" = local ] && { [ "$@" = up ] || [ "$@" = preview ]; }; then \
	  $(MAKE) -s --no-print-directory docker-check; fi
	@$(MAKE) -s --no-print-directory $(VENV)/.runtime >&2
	@pulumi=$$($(PY) -m tools.pulumi_cli --root "$(CLI_ROOT)") || exit 1; \
	export PATH="$$(dirname "$$pulumi"):$$PATH"; \
	export PULUMI_BACKEND_URL="$(BACKEND)"; \
	if [ "$(STACK)" = local ]; then export PULUMI_CONFIG_PASSPHRASE="$${PULUMI_CONFIG_PASSPHRASE-}"; fi; \
	case "$$PULUMI_BACKEND_URL" in file://*) mkdir -p "$${PULUMI_BACKEND_URL#file://}";; esac; \
	case "$@" in \
	  output) exec "$$pulumi" stack output --stack "$(STACK)" $(if $(SHOW_SECRETS),--show-secrets) $(NAME) ;; \
	  pulumi) "$$pulumi" stack select --create "$(STACK)" >&2 && exec "$$pulumi" $(ARGS) ;; \
	esac; \
	"$$pulumi" stack select --create "$(STACK)" >&2 && \
	case "$@" in \
	  preview) \
	    policy=(); if [ -n "$(POLICY)" ]; then \
	      [ -x policy/venv/bin/python ] || { $(PYTHON) -m venv policy/venv && policy/venv/bin/pip install -q -r policy/requirements.txt; } >&2; \
	      policy=(--policy-pack policy); fi; \
	    "$$pulumi" preview --diff "$${policy[@]}" ;; \
	  up) "$$pulumi" up --yes && "$$pulumi" stack output && \
	      if [ "$(STACK)" = local ]; then \
	        echo; echo "every device authenticates; connect as the generated demo device:"; \
	        echo "try: CA=\$$(make -s output NAME=ca_file); PW=\$$(make -s output NAME=demo_password SHOW_SECRETS=1)"; \
	        echo "     mosquitto_sub --cafile \"\$$CA\" -h localhost -p 8883 -u demo -P \"\$$PW\" -t 'devices/demo/#' -v"; \
	        echo "     mosquitto_pub --cafile \"\$$CA\" -h localhost -p 8883 -u demo -P \"\$$PW\" -t devices/demo/hello -m hi"; \
	        echo "dashboard password: make -s output NAME=dashboard_password SHOW_SECRETS=1"; \
	        echo "grafana: $$("$$pulumi" stack output grafana_url 2>/dev/null) (user admin; password: make -s output NAME=grafana_password SHOW_SECRETS=1)"; \
	      fi ;; \
	  down) "$$pulumi" destroy --yes ;; \
	esac

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
