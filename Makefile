# The command surface: make demo, make test, make lint, make bench (make setup is run by all).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed

.PHONY: setup system demo test lint bench bench-submit bench-addons bench-fleet bench-chaos up clean \
	images docker-base docker-lock test-containers

setup: system $(STAMP) $(NODE_STAMP)

# System packages, only when missing (a second run costs a few `command -v` and one import).
# wrk and hey are the load generators of bench/submit.py (and its test); docker-compose
# validates docker/compose.yaml in the suite (no Docker engine needed for that).
# Debian's own python3 can only make a venv with python3-venv installed.
system:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v wrk >/dev/null 2>&1 || missing="$$missing wrk"; \
	command -v hey >/dev/null 2>&1 || missing="$$missing hey"; \
	command -v docker-compose >/dev/null 2>&1 || missing="$$missing docker-compose"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	test -x $(PY) || $(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing (apt-get)"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

# eslint for the extension's and the addons' JavaScript (npm: package.json), when it changes.
$(NODE_STAMP): package.json
	npm install --no-audit --no-fund --silent
	@touch $(NODE_STAMP)

# The venv is rebuilt only when pyproject.toml changes.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

demo: setup
	$(VENV)/bin/semantest demo

up: setup
	$(VENV)/bin/semantest up

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	node_modules/.bin/eslint extension_bridge/extension addons

test: lint
	$(VENV)/bin/pytest

bench: setup
	$(PY) bench/e2e.py
	$(PY) bench/submit.py
	$(MAKE) --no-print-directory bench-addons

# Submission speed on this machine: 1,000 clients open loop (hey), 1,000 connections closed
# loop (wrk), batch accept, against RQ and redis-benchmark on the same Redis (about a minute).
bench-submit: setup
	$(PY) bench/submit.py

# Addon serving against nginx serving the same bytes, same wrk run (about 40 s). nginx is
# only needed here: it is installed (nginx-light) when missing.
bench-addons: setup
	@command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx || { \
		echo "installing nginx-light (apt-get), for bench/addons.py only"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq nginx-light; }
	$(PY) bench/addons.py

# Slots scaling, agent memory, cold start, overhead under load (several minutes).
bench-fleet: setup
	$(PY) bench/fleet.py

# 2,000 jobs while agents are SIGKILLed and Redis restarts: lost = 0, duplicated = 0.
bench-chaos: setup
	$(PY) bench/chaos.py --jobs 2000 --agents 3 --slots 2 --kill-every 4 --latency-ms 300

# Container images (docs/deploy.md): the base image (made here with debootstrap when it cannot
# be pulled), then controller, agent and the compose file's Redis; prints their sizes.
IMAGE_TAG ?= latest
DOCKER_BUILD := docker build --network host --build-arg BASE_IMAGE=debian:bookworm-slim

docker-base:
	@command -v docker >/dev/null || { echo "docker is not installed (apt-get install docker.io)"; exit 1; }
	@command -v debootstrap >/dev/null || docker image inspect debian:bookworm-slim >/dev/null 2>&1 || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap; }
	docker/base-image.sh debian:bookworm-slim

images: docker-base docker-lock
	@mkdir -p docker/.build && \
		cp "$$( [ -r /etc/ssl/certs/ca-certificates.crt ] && echo /etc/ssl/certs/ca-certificates.crt || $(PY) -m certifi)" docker/.build/ca-certificates.crt
	$(DOCKER_BUILD) -f docker/Dockerfile.controller -t semantest/controller:$(IMAGE_TAG) .
	$(DOCKER_BUILD) -f docker/Dockerfile.agent -t semantest/agent:$(IMAGE_TAG) .
	$(DOCKER_BUILD) -f docker/Dockerfile.redis -t semantest/redis:$(IMAGE_TAG) docker
	@docker image ls --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' | grep -E '^semantest/.*:$(IMAGE_TAG)\b' | sort

# The images' Python pins, from the venv (a test fails while they are out of date).
docker-lock: setup
	$(PY) docker/lock.py

# Builds the images (cached layers are reused), starts docker/compose.yaml on loopback, runs
# the demo's prompts through it, kills an agent container mid-job, tears it all down. Needs a
# Docker engine; `make test` does not.
test-containers: setup images
	SEMANTEST_TEST_CONTAINERS=1 $(VENV)/bin/pytest -p no:cacheprovider tests/containers -v -x

clean:
	rm -rf data .pytest_cache .mypy_cache .ruff_cache
