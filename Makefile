# mqtt-cluster — entry points. `make up` deploys (local Docker by default), `make test` proves.
SHELL := /bin/bash
STACK ?= local
VENV ?= venv
PY := $(VENV)/bin/python
PYTHON ?= python3
# Debian packages the tests run for real (nginx -t, haproxy -c, mosquitto data plane, shellcheck, cloud-init schema).
APT_PACKAGES := nginx libnginx-mod-stream haproxy mosquitto mosquitto-clients shellcheck cloud-init openssl
# A local file backend unless the operator points elsewhere; no Pulumi Cloud account needed.
BACKEND = $${PULUMI_BACKEND_URL:-file://$(CURDIR)/.pulumi-state}

.PHONY: test lint deps sysdeps plan bench preview up down clean help

help:
	@echo "make up [STACK=local]      deploy a stack (local Docker by default)"
	@echo "make down [STACK=local]    destroy it"
	@echo "make preview STACK=dev     pulumi preview"
	@echo "make plan STACK=dev        offline plan (no CLI, no cloud)"
	@echo "make test                  install everything, lint, run all tests"
	@echo "make bench                 load benchmark of the proxies (writes bench/results/lb.json)"

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

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

plan: $(VENV)/.installed
	$(PY) -m tools.plan $(STACK)

bench: deps
	$(PY) -m bench.lb

preview up down: $(VENV)/.installed
	@command -v pulumi >/dev/null || { echo "this needs the Pulumi CLI (https://www.pulumi.com/docs/install/)"; exit 1; }
	@if [ "$(STACK)" = local ] && [ "$@" != down ]; then \
	  docker info >/dev/null 2>&1 || { echo "the local stack needs a running Docker daemon (docker info failed)"; exit 1; }; fi
	@export PULUMI_BACKEND_URL="$(BACKEND)"; \
	if [ "$(STACK)" = local ]; then export PULUMI_CONFIG_PASSPHRASE="$${PULUMI_CONFIG_PASSPHRASE-}"; fi; \
	case "$$PULUMI_BACKEND_URL" in file://*) mkdir -p "$${PULUMI_BACKEND_URL#file://}";; esac; \
	pulumi stack select --create "$(STACK)" && \
	case "$@" in \
	  preview) pulumi preview --diff ;; \
	  up) pulumi up --yes && pulumi stack output && \
	      if [ "$(STACK)" = local ]; then \
	        echo; echo "every device authenticates; the generated demo device is $$(pulumi stack output demo_username):"; \
	        echo '  PW=$$(pulumi stack output demo_password --show-secrets)'; \
	        echo "  mosquitto_sub --cafile $$(pulumi stack output ca_file) -h localhost -p 8883 -u demo -P \"\$$PW\" -t 'devices/demo/#' -v"; \
	        echo "  mosquitto_pub --cafile $$(pulumi stack output ca_file) -h localhost -p 8883 -u demo -P \"\$$PW\" -t devices/demo/hello -m hi"; \
	        echo "dashboard password: pulumi stack output dashboard_password --show-secrets"; \
	      fi ;; \
	  down) pulumi destroy --yes ;; \
	esac

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
