# The README's commands. `make run` starts the dashboard on the built-in
# EnergyCAP sandbox; `make test` runs the whole test suite (on SQLite and on
# PostgreSQL + Redis, side by side) and the deploy checks.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Where `make run` serves the dashboard: `make run DASHBOARD_PORT=8001`.
DASHBOARD_HOST ?= 127.0.0.1
DASHBOARD_PORT ?= 8000
# The built-in EnergyCAP sandbox's port, for `make run` (which starts it) and `make sandbox`
# (which runs it alone); settings.py reads it as ENERGYCAP_SANDBOX_PORT.
SANDBOX_PORT ?= $(or $(ENERGYCAP_SANDBOX_PORT),8765)
POSTGRES_URL ?= postgres://postgres@127.0.0.1:5432/test
REDIS_TEST_URL ?= redis://127.0.0.1:6379/15
# Production-like values for `check --deploy` (never real secrets).
DEPLOY_ENV := DEBUG=false SECRET_KEY=deploy-check-$$(date +%s)-a-long-random-looking-value-0123456789abcdef \
	ENERGYCAP_BASE_URL=https://app.energycap.com ENERGYCAP_API_KEY=deploy-check \
	ALLOWED_HOSTS=kickouts.example.com

.PHONY: run sandbox next-reimport test test-sqlite test-postgres lint deploy-check install browser bench clean

run: install
	DEBUG=true ENERGYCAP_SANDBOX_PORT=$(SANDBOX_PORT) $(BIN)/python manage.py rundashboard \
		--addrport $(DASHBOARD_HOST):$(DASHBOARD_PORT)

sandbox: install
	DEBUG=true $(BIN)/python manage.py sandbox --port $(SANDBOX_PORT)

# While `make run` runs: spoil the answer to the next re-import, e.g.
# `make next-reimport ANSWER=502` (or timeout, lost, refused; add --before-acting).
next-reimport: install
	DEBUG=true ENERGYCAP_SANDBOX_PORT=$(SANDBOX_PORT) $(BIN)/python manage.py sandbox_next_reimport $(ANSWER)

# The two passes wait on the sandbox and real workers more than they compute: run side by side,
# each one's output printed whole when it ends.
test: install browser lint
	$(MAKE) --no-print-directory -j2 --output-sync=target test-sqlite test-postgres
	$(MAKE) --no-print-directory deploy-check

test-sqlite: install
	$(BIN)/pytest

test-postgres: install
	DATABASE_URL=$(POSTGRES_URL) REDIS_URL=$(REDIS_TEST_URL) $(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/djlint templates --check
	$(BIN)/djlint templates --lint
	@# django-stubs loads the settings: with DEBUG on they need no secrets.
	DEBUG=true $(BIN)/mypy

deploy-check: install
	$(DEPLOY_ENV) $(BIN)/python manage.py check --deploy --fail-level WARNING

# What clerks feel with EnergyCAP 200 ms away (PostgreSQL + Redis + gunicorn gthread, see
# the README's Benchmarks); e.g. `make bench BENCH_ARGS=--quick` for a smoke run.
bench: install
	$(BIN)/python -m bench $(BENCH_ARGS)

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# Browser tests drive Debian's Chromium (Playwright never downloads one here).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "Installing Chromium for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .ruff_cache
