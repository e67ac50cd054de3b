# Two entry points for a fresh clone (see README): `make demo` and `make test`.
# Each bootstraps its own virtualenv(s) from PyPI; nothing else needs to be installed by hand.

PYTHON ?= python3
#: The release the whole suite runs on (lint, coverage, the full e2e, browser, fault and distributed suites).
AIRFLOW_VERSION ?= 3.3.2
#: The other releases: unit, integration and example tests, and the rerun/kill e2e scenarios.
AIRFLOW_OTHERS ?= 3.1.8 3.2.2
#: The newest 3.4 the registry offers (a pre-release until 3.4.0 is there): the same legs, so that
#: a break on the next release shows before users meet it.
AIRFLOW_NEXT ?= 3.4.0b2
VENV ?= .venv
PIP_FLAGS ?= -q --disable-pip-version-check
PYTEST_FLAGS ?= -p no:cacheprovider -q -rs
#: Pins that a plain `pip install apache-airflow==X` needs on release X (docs/installing.md says why).
PINS_3.2.2 := "fastapi==0.136.3" "starlette==1.10.0"
#: What the version legs leave out: the suites that run on $(AIRFLOW_VERSION) only.
FULL_ONLY := --ignore=tests/e2e --ignore=tests/e2e_distributed --ignore=tests/faults --ignore=tests/testing --ignore=tests/bench_smoke --ignore=tests/openlineage

.PHONY: demo test test-full lint docs unit e2e e2e-distributed browser fault-table bench airflow screenshots venv clean

# Airflow's celery and postgres extras (CeleryExecutor, psycopg2, asyncpg) for tests/e2e_distributed.
# celery 5.7 dropped celery.backends.database.retry, which apache-airflow-providers-celery 3.26 imports.
$(VENV)/.installed-$(AIRFLOW_VERSION): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_FLAGS) --upgrade pip
	$(VENV)/bin/pip install $(PIP_FLAGS) "apache-airflow[celery,postgres]==$(AIRFLOW_VERSION)" "celery[redis]<5.7" -e ".[test,lint,openlineage,docs]"
	touch $@

# One venv per other release: .venv-3.1.8, .venv-3.2.2, .venv-3.4.0b2, ... (kept between runs).
.PRECIOUS: .venv-%/.installed
.venv-%/.installed: pyproject.toml
	$(PYTHON) -m venv .venv-$*
	.venv-$*/bin/pip install $(PIP_FLAGS) --upgrade pip
	.venv-$*/bin/pip install $(PIP_FLAGS) "apache-airflow==$*" $(PINS_$*) -e ".[test]"
	touch $@

venv: $(VENV)/.installed-$(AIRFLOW_VERSION)

## The example DAG, end to end, on the bundled script-runner server.
demo: venv
	$(VENV)/bin/python dev/demo.py

## The whole test suite. The cheap legs first, so that a break shows early: the unit, integration
## and example tests on every other release; then everything on Airflow $(AIRFLOW_VERSION); then
## the rerun/kill e2e scenarios on every other release.
VERSIONS := $(AIRFLOW_OTHERS) $(AIRFLOW_NEXT)
test: $(addprefix test-on-,$(VERSIONS)) test-full $(addprefix e2e-on-,$(VERSIONS))

## Unit, integration and example tests on one release: `make test-on-3.2.2`.
test-on-%: .venv-%/.installed
	.venv-$*/bin/python -m pytest $(PYTEST_FLAGS) tests $(FULL_ONLY)

## The e2e scenarios of reruns and kills (marker `reruns`: mark failed while deferred, triggerer
## restart, clear while deferred, task process killed then retried, retries) on one release:
## `make e2e-on-3.1.8`.
e2e-on-%: .venv-%/.installed
	.venv-$*/bin/python -m pytest $(PYTEST_FLAGS) tests/e2e -m reruns

# Branch coverage of the package, printed; the run fails under [tool.coverage.report] fail_under.
test-full: venv
	$(VENV)/bin/python -m pytest $(PYTEST_FLAGS) --cov --cov-report=term tests

## The static gates, in seconds: ruff (lint + format), mypy and the layering contracts (import-linter,
## [tool.importlinter] in pyproject.toml) over the package. CI runs it first.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

## The documentation site (docs/ in MyST Markdown, and the API reference from the docstrings) into
## build/docs; open build/docs/index.html. Any warning fails it, unresolved references too (-n).
## A fresh build each time, so that a page left unchanged still shows its warnings. Airflow, which
## autodoc imports, gets a home under build/, and no bytecode is written into the source tree.
docs: venv
	rm -rf build/docs build/docs-airflow-home
	AIRFLOW_HOME=$(CURDIR)/build/docs-airflow-home PYTHONDONTWRITEBYTECODE=1 \
		$(VENV)/bin/sphinx-build -b html -W --keep-going -n -q docs build/docs

## Fast feedback while developing: unit tests only (no servers).
unit: venv
	$(VENV)/bin/python -m pytest $(PYTEST_FLAGS) tests/hooks tests/operators tests/sensors tests/triggers tests/task tests/test_*.py

## Real Airflow (scheduler, dag-processor, triggerer, api-server on SQLite) + the bundled server,
## and the UI in headless Chromium; one shared deployment, a few minutes. `browser`: the UI test only.
e2e: venv
	$(VENV)/bin/python -m pytest $(PYTEST_FLAGS) tests/e2e

browser: venv
	$(VENV)/bin/python -m pytest $(PYTEST_FLAGS) tests/e2e -m browser

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
	rm -rf $(VENV) .venv-* .demo .airflow build test-output *.egg-info
