# Two entry points for a fresh clone (see README): `make demo` and `make test`.
# Each bootstraps its own virtualenv(s) from PyPI; nothing else needs to be installed by hand.

PYTHON ?= python3
AIRFLOW_VERSION ?= 3.3.2
AIRFLOW31_VERSION ?= 3.1.8
VENV ?= .venv
VENV31 ?= .venv31
PIP_FLAGS ?= -q --disable-pip-version-check
PYTEST_FLAGS ?= -p no:cacheprovider -q -rs

.PHONY: demo test test-33 test-31 lint unit e2e e2e-31 e2e-distributed browser fault-table bench airflow screenshots venv venv31 clean

# Airflow's celery and postgres extras (CeleryExecutor, psycopg2, asyncpg) for tests/e2e_distributed.
# celery 5.7 dropped celery.backends.database.retry, which apache-airflow-providers-celery 3.26 imports.
$(VENV)/.installed-$(AIRFLOW_VERSION): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_FLAGS) --upgrade pip
	$(VENV)/bin/pip install $(PIP_FLAGS) "apache-airflow[celery,postgres]==$(AIRFLOW_VERSION)" "celery[redis]<5.7" -e ".[test,lint]"
	touch $@

$(VENV31)/.installed-$(AIRFLOW31_VERSION): pyproject.toml
	$(PYTHON) -m venv $(VENV31)
	$(VENV31)/bin/pip install $(PIP_FLAGS) --upgrade pip
	$(VENV31)/bin/pip install $(PIP_FLAGS) "apache-airflow==$(AIRFLOW31_VERSION)" -e ".[test]"
	touch $@

venv: $(VENV)/.installed-$(AIRFLOW_VERSION)
venv31: $(VENV31)/.installed-$(AIRFLOW31_VERSION)

## The example DAG, end to end, on the bundled script-runner server.
demo: venv
	$(VENV)/bin/python dev/demo.py

## The whole test suite: everything on Airflow $(AIRFLOW_VERSION) (the distributed deployment
## too), then the version-dependent unit tests, the examples and the rerun e2e scenarios on
## Airflow $(AIRFLOW31_VERSION).
test: test-33 test-31 e2e-31

# Branch coverage of the package, printed; the run fails under [tool.coverage.report] fail_under.
test-33: venv
	$(VENV)/bin/python -m pytest $(PYTEST_FLAGS) --cov --cov-report=term tests

# On 3.1: unit, integration and example tests (the e2e, fault, server-contract and benchmark smoke
# suites run on 3.3).
test-31: venv31
	$(VENV31)/bin/python -m pytest $(PYTEST_FLAGS) tests --ignore=tests/e2e --ignore=tests/e2e_distributed --ignore=tests/faults --ignore=tests/testing --ignore=tests/bench_smoke

## The static gates, in seconds: ruff (lint + format), mypy and the layering contracts (import-linter,
## [tool.importlinter] in pyproject.toml) over the package. CI runs it first.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

## Fast feedback while developing: unit tests only (no servers).
unit: venv
	$(VENV)/bin/python -m pytest $(PYTEST_FLAGS) tests/hooks tests/operators tests/sensors tests/triggers tests/task tests/test_*.py

## Real Airflow (scheduler, dag-processor, triggerer, api-server on SQLite) + the bundled server,
## and the UI in headless Chromium; one shared deployment, a few minutes. `browser`: the UI test only.
e2e: venv
	$(VENV)/bin/python -m pytest $(PYTEST_FLAGS) tests/e2e

browser: venv
	$(VENV)/bin/python -m pytest $(PYTEST_FLAGS) tests/e2e -m browser

## The e2e scenarios of reruns and kills (marker airflow31: mark failed while deferred, triggerer
## restart, clear while deferred, task process killed then retried) on Airflow $(AIRFLOW31_VERSION).
e2e-31: venv31
	$(VENV31)/bin/python -m pytest $(PYTEST_FLAGS) tests/e2e -m airflow31

## CeleryExecutor + PostgreSQL + Redis, two triggerers, two workers (needs Debian's postgresql and
## redis-server; .ci/run installs them). One shared deployment, several minutes.
e2e-distributed: venv
	$(VENV)/bin/python -m pytest $(PYTEST_FLAGS) tests/e2e_distributed

## Rewrite the committed fault table (tests/faults/RESULTS.md); a plain test run writes test-output/.
fault-table: venv
	FAULTS_RESULTS_FILE=$(CURDIR)/tests/faults/RESULTS.md $(VENV)/bin/python -m pytest $(PYTEST_FLAGS) tests/faults

bench: venv
	$(VENV)/bin/python -m benchmarks

## Optional: the Airflow UI (http://127.0.0.1:8080) with the example DAGs, the connection and the
## bundled script-runner, until Ctrl-C. State in .airflow/airflow-ui/. AIRFLOW_UI_ARGS="--port N".
airflow: venv
	$(VENV)/bin/python dev/airflow_ui.py $(AIRFLOW_UI_ARGS)

## Explicit, not part of `make test`: retake docs/images/*.png in headless Chromium (/usr/bin/chromium).
screenshots: venv
	$(VENV)/bin/python dev/screenshots.py

clean:
	rm -rf $(VENV) $(VENV31) .demo .airflow build test-output *.egg-info
