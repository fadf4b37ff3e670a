# The README's two commands are `make run` and `make test`; both set up .venv first.
# `make run` installs only what running needs (requirements.txt); test and lint add requirements-dev.txt.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed
PIP_INSTALL := $(BIN)/pip install --quiet --disable-pip-version-check

.PHONY: install run test lint build clean bench plots
.PHONY: debug debug_webserver debug_enrolment_worker debug_test docker_build docker_migrate docker_run docker_debug docker_test

# An existing .venv is kept as it is (it may be a link to a shared one); only what is missing is installed.
$(RUN_STAMP): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -r requirements.txt
	touch $(RUN_STAMP)

# requirements-dev.txt includes requirements.txt, so it stands for both.
$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -r requirements-dev.txt
	touch $(STAMP) $(RUN_STAMP)

install: $(STAMP)

run: $(RUN_STAMP)
	$(BIN)/python directory_api.py dev

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# ruff and mypy, configured in pyproject.toml; .ci/run runs this before the tests.
lint: $(STAMP)
	$(BIN)/ruff check directory_api tests scripts directory_api.py
	$(BIN)/mypy

# build.sh makes its own build environment: no .venv needed.
build:
	./build.sh

# The 2016 service's target names, kept for the people used to them.
debug: $(RUN_STAMP)
	$(BIN)/python directory_api.py dev

debug_webserver: $(RUN_STAMP)
	$(BIN)/python directory_api.py serve --debug

debug_enrolment_worker: $(RUN_STAMP)
	$(BIN)/python directory_api.py work --debug

debug_test: $(STAMP)
	$(BIN)/python -m pytest -x -vv --showlocals $(PYTEST_ARGS)

DOCKER_IMAGE ?= directory-api
ENV_FILE ?= .env

docker_build:
	docker build -t $(DOCKER_IMAGE) .

# migrate first: serve refuses a schema older than its code (MIGRATE_ENV_FILE: the schema owner's DATABASE_URL).
MIGRATE_ENV_FILE ?= $(ENV_FILE)

docker_migrate: docker_build
	docker run --rm --env-file $(ENV_FILE) --env-file $(MIGRATE_ENV_FILE) $(DOCKER_IMAGE) migrate

docker_run: docker_migrate
	docker run --rm --env-file $(ENV_FILE) -p 8000:8000 $(DOCKER_IMAGE)

docker_debug: docker_build
	docker run --rm -p 8000:8000 $(DOCKER_IMAGE) dev --host 0.0.0.0

docker_test: docker_build
	docker run --rm $(DOCKER_IMAGE) --help
	docker run --rm $(DOCKER_IMAGE) migrate --debug

# Benchmarks (scripts/bench_*.py): results appended to bench-results/; the latest run of each becomes
# docs/performance.jsonl, from which docs/performance.md's tables and docs/bench.png are drawn.
# BENCH_ARGS=--quick for a short run. `make plots` redraws both from docs/performance.jsonl alone.
BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP) requirements-bench.txt
	$(PIP_INSTALL) -r requirements-bench.txt
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	@if [ ! -f dist/directory-api.pyz ] || [ -n "$$(find directory_api requirements.txt requirements-build.txt build.sh -newer dist/directory-api.pyz -print -quit)" ]; then ./build.sh; fi
	$(BIN)/python scripts/bench_serve.py $(BENCH_ARGS)
	$(BIN)/python scripts/bench_work.py $(BENCH_ARGS)
	$(BIN)/python scripts/bench_startup.py $(BENCH_ARGS)
	$(BIN)/python scripts/bench_console.py $(BENCH_ARGS)
	$(BIN)/python scripts/plot_bench.py --collect

plots: $(BENCH_STAMP)
	$(BIN)/python scripts/plot_bench.py

clean:
	rm -rf $(VENV) build dist .pytest_cache
