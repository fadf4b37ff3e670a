# The README's two commands are `make run` and `make test`; both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint build clean bench
.PHONY: debug debug_webserver debug_enrolment_worker debug_test docker_build docker_migrate docker_run docker_debug docker_test

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
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
debug: $(STAMP)
	$(BIN)/python directory_api.py dev

debug_webserver: $(STAMP)
	$(BIN)/python directory_api.py serve --debug

debug_enrolment_worker: $(STAMP)
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

# Benchmarks (scripts/bench_*.py): results appended to bench-results/, the latest
# table and plot written to docs/bench.md and docs/bench.png. BENCH_ARGS=--quick for a short run.
BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP) requirements-bench.txt
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-bench.txt
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	@if [ ! -f dist/directory-api.pyz ] || [ -n "$$(find directory_api requirements.txt requirements-build.txt build.sh -newer dist/directory-api.pyz -print -quit)" ]; then ./build.sh; fi
	$(BIN)/python scripts/bench_serve.py $(BENCH_ARGS)
	$(BIN)/python scripts/bench_work.py $(BENCH_ARGS)
	$(BIN)/python scripts/bench_startup.py $(BENCH_ARGS)
	$(BIN)/python scripts/plot_bench.py

clean:
	rm -rf $(VENV) build dist .pytest_cache
