# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# A development admin key so the README's curl lines work as printed. Set your own outside development.
export LOYALTY_BOOTSTRAP_ADMIN_KEY ?= lk_dev_admin_key_change_me_0000
# The same for the key gift card PINs are hashed with (a secret kept outside the database in production).
export LOYALTY_GIFT_CARD_PIN_KEY ?= dev-gift-card-pin-key-change-me-0000
POSTGRES_TEST_URL ?= postgresql+asyncpg://postgres@127.0.0.1:5432/test

.PHONY: help install lock run test test-postgres lint format openapi clean bench fuzz soak

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

install: $(VENV)/.installed  ## create .venv and install the service with its dev tools (idempotent)

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

lock:  ## re-pin constraints.txt to the newest versions pyproject.toml allows, from a fresh venv (then run .ci/run)
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet --upgrade pip
	.lock-venv/bin/pip install --quiet -e '.[dev]'
	{ sed -n '/^#/p' constraints.txt; .lock-venv/bin/pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf .lock-venv

run: install  ## migrate the embedded SQLite database (loyalty.db) and serve on http://$(HOST):$(PORT) (docs at /docs)
	$(BIN)/loyalty serve --host $(HOST) --port $(PORT)

test: install  ## run the whole test suite (SQLite; LOYALTY_TEST_DATABASE_URL=postgresql+asyncpg://... for PostgreSQL)
	$(BIN)/pytest -q -p no:cacheprovider

test-postgres: install  ## run the whole test suite against the local PostgreSQL
	LOYALTY_TEST_DATABASE_URL=$(POSTGRES_TEST_URL) $(BIN)/pytest -q -p no:cacheprovider

fuzz: install  ## schemathesis: 1,000 valid and 1,000 invalid requests per operation, fresh random seed, printed (LOYALTY_FUZZ_SEED=<seed> replays it; SQLite)
	LOYALTY_FUZZ_EXAMPLES=1000 LOYALTY_FUZZ_NEGATIVE_EXAMPLES=1000 LOYALTY_FUZZ_RANDOM=1 \
		$(BIN)/pytest -q -p no:cacheprovider tests/test_fuzz.py

soak: install  ## crash test: 200 SIGKILLs of the server under commit load (PostgreSQL at POSTGRES_TEST_URL)
	LOYALTY_TEST_DATABASE_URL=$(POSTGRES_TEST_URL) LOYALTY_CRASH_KILLS=200 \
		$(BIN)/pytest -q -p no:cacheprovider tests/test_crash.py

lint: install  ## ruff
	$(BIN)/ruff check service tests migrations benchmarks

format: install
	$(BIN)/ruff check --fix service tests migrations benchmarks

openapi: install  ## write openapi/openapi.json from the app
	$(BIN)/loyalty openapi

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache loyalty.db loyalty.db-wal loyalty.db-shm

bench: install  ## load benchmarks on the local PostgreSQL (wrk, pgbench); writes benchmarks/results/latest.md
	$(BIN)/python benchmarks/bench.py
