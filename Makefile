# Scones Unlimited ML workflow. `make demo` runs the main job in local mode;
# `make test` runs the linters and the tests. Both install what they need first.
# `make test-fast` runs the tests that start no server and train nothing, in under a minute.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV := .venv
PYTHON := $(VENV)/bin/python
LOCAL := .local
AWS_ENV := $(LOCAL)/aws.env
LOCAL_AWS_PORT ?= 4566
BUCKET ?= scones-unlimited-local
DEMO_EPOCHS ?=

.PHONY: help setup test test-fast lint demo local-up local-down clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

setup: $(VENV)/.installed node_modules/.installed debian-packages ## create .venv, node modules, Chromium and jq (no-op when done)

$(VENV)/.installed: requirements.txt requirements-dev.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# Debian's Chromium and chromedriver, for the tests of web pages (tests/browser.py;
# browser builds that tools download for themselves cannot be fetched on these machines),
# and jq, which runs the table-import step docs/operations.md documents.
.PHONY: debian-packages
debian-packages:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null || ! command -v jq >/dev/null; then \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver jq; \
	fi

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

lint: setup ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint ## ruff, mypy, then the whole test suite
	$(PYTHON) -m pytest

# No lint: mypy alone takes longer than the tier. The tests marked `slow` (tests/conftest.py
# marks every test that uses a fixture starting a server or a training) are left out.
test-fast: setup ## the tests that need no local AWS and no training (under a minute; no lint)
	$(PYTHON) -m pytest -m "not slow" -q

local-up: setup ## start the local AWS on 127.0.0.1:$(LOCAL_AWS_PORT), write $(AWS_ENV)
	$(PYTHON) -m local_aws up --port $(LOCAL_AWS_PORT)

local-down: ## stop the local AWS
	@if [ -x $(PYTHON) ]; then $(PYTHON) -m local_aws down; fi

demo: setup ## the main job in local mode (set SCONES_CIFAR_SOURCE offline)
	$(PYTHON) -m training_job.demo --bucket $(BUCKET) --port $(LOCAL_AWS_PORT) $(if $(DEMO_EPOCHS),--epochs $(DEMO_EPOCHS))

clean: local-down ## remove local state and caches (keeps .venv and node_modules)
	rm -rf $(LOCAL) .serverless .cache
