# Two commands for a fresh machine: `make run` and `make test`.  Both install what they need.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)
STAMP := .venv/.installed-stamp
ARGS ?=

.PHONY: help install run demo check fmt test test-fast bench clean

help:
	@echo "make run    install and run the whole broker (misbroker up) on ./.misbroker"
	@echo "make demo   the same, with a demo school, partner and consent"
	@echo "make test   install and run ruff, mypy (strict) and every test"
	@echo "make check  ruff and mypy only"
	@echo "make bench  run the benchmarks in bench/"

FRONTEND := broker/console/frontend
FRONTEND_STAMP := $(FRONTEND)/node_modules/.installed-stamp

$(STAMP): pyproject.toml uv.lock
	@scripts/ensure-uv
	$(UV) sync --frozen --all-extras --quiet
	@touch $(STAMP)

# The console's GOV.UK Frontend assets (and axe-core for its tests), pinned by the lock file
# and served by the broker itself: no CDN.
$(FRONTEND_STAMP): $(FRONTEND)/package.json $(FRONTEND)/package-lock.json
	@scripts/ensure-node
	npm ci --prefix $(FRONTEND) --no-audit --no-fund --silent
	@touch $(FRONTEND_STAMP)

install: $(STAMP) $(FRONTEND_STAMP)

run: install
	$(UV) run --frozen misbroker up $(ARGS)

demo: install
	$(UV) run --frozen misbroker up --demo $(ARGS)

check: install
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy

fmt: install
	$(UV) run --frozen ruff check --fix .
	$(UV) run --frozen ruff format .

test: check
	@scripts/ensure-postgres
	@scripts/ensure-chromium
	$(UV) run --frozen pytest $(ARGS)

test-fast: install
	$(UV) run --frozen pytest -m "not slow" $(ARGS)

bench: install
	@scripts/ensure-wrk || echo "no wrk: bench/read.py uses its Python load generator" >&2
	@for b in bench/[!_]*.py; do echo "== $$b"; $(UV) run --frozen python $$b || exit 1; done
	@echo "== bench/read.py --minimised"; $(UV) run --frozen python bench/read.py --minimised

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache
