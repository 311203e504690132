# The two commands a newcomer types: `make run` and `make test`.
# Everything they need (virtual environment, Python and npm packages, the
# sandbox's JavaScript runtime, the dashboard's assets and the collected static
# files) is installed by the `setup` target first.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
RUNTIME := execution/sandbox/js/dist/runtime.js
NATIVE_RUNNER := execution/sandbox/native/build/lightfast-runner
DASHBOARD_ASSETS := dashboard/static/dashboard/dist/.built
# Where collectstatic writes (settings.STATIC_ROOT; the same for every data dir).
STATIC_ROOT := $(or $(LIGHTFAST_STATIC_ROOT),var/static)
STATIC_MANIFEST := $(STATIC_ROOT)/staticfiles.json

.PHONY: setup bytecode run test lint bench clean

setup: $(VENV)/.installed node_modules/.installed $(RUNTIME) $(NATIVE_RUNNER) $(STATIC_MANIFEST) bytecode

# The project's modules compiled ahead (only what changed): a machine with PYTHONDONTWRITEBYTECODE set
# would otherwise compile them in every web, worker and test process it starts (~0.1-0.15 s each).
bytecode: $(VENV)/.installed
	$(PY) -m compileall -q -j 0 agents dashboard execution lightfast_cloud organizations > /dev/null

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(RUNTIME): node_modules/.installed $(wildcard execution/sandbox/js/*.mjs execution/sandbox/js/src/*)
	npm run --silent build:runtime

# The sandbox's native runner: gcc + the QuickJS-NG sources of the installed wheel's version.
$(NATIVE_RUNNER): $(VENV)/.installed execution/sandbox/native/runner.c execution/sandbox/native/Makefile
	$(MAKE) -C execution/sandbox/native PYTHON=$(CURDIR)/$(PY)

# The dashboard's JavaScript and CSS: esbuild bundles them with htmx and uPlot from node_modules.
$(DASHBOARD_ASSETS): node_modules/.installed $(wildcard dashboard/assets/*)
	npm run --silent build:dashboard

# Static files (the dashboard's, the admin's, Swagger UI's and ReDoc's) with hashed names and gzip
# copies, which WhiteNoise serves; again whenever the assets or the installed packages change.
$(STATIC_MANIFEST): $(VENV)/.installed $(DASHBOARD_ASSETS) $(shell find dashboard/static -type f -not -path '*/dist/*' 2>/dev/null)
	$(PY) manage.py collectstatic --noinput --clear --verbosity 0

run: setup
	$(PY) manage.py lightfast up

# The suite on every core, at most 4 (pytest-xdist; tests/xdist_worker.py gives each worker its own data
# dir, so its own SQLite database and private redis, or its own database on PostgreSQL and redis). Each
# test file stays on one worker, whose Celery worker and web process its tests hand on to each other.
# `make test TEST_WORKERS=0` runs it in this one process.
TEST_WORKERS ?= auto

test: setup
	LIGHTFAST_DATA_DIR=$${LIGHTFAST_DATA_DIR:-$(CURDIR)/var/test} $(PY) -m pytest \
	  -n $(TEST_WORKERS) --maxprocesses 4 --dist loadfile $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy .

bench: setup
	$(PY) benchmarks/sandbox.py

clean:
	rm -rf $(VENV) node_modules execution/sandbox/js/dist execution/sandbox/native/build var .pytest_cache \
		dashboard/static/dashboard/dist
