"""The OpenLineage run facet of the run operator (the OpenLineage provider is installed here)."""

from __future__ import annotations

import builtins
import importlib
import json
import sys

import attrs
import pytest
from airflow.providers.openlineage.extractors.base import DefaultExtractor
from openlineage.client.serde import Serde

from airflow_provider_scriptrunner.client.errors import ScriptRunnerJobError
from airflow_provider_scriptrunner.client.models import ScriptRunnerJob
from airflow_provider_scriptrunner.operators._lineage_facet import SCHEMA_URL
from airflow_provider_scriptrunner.task.outcome import EventKind, JobEvent
from tests.conftest import BASE_URL, TOKEN, job_body
from tests.operators import test_scriptrunner_operators as operator_tests
from tests.operators.test_scriptrunner_operators import (
    JOB,
    JOB_URL,
    make_context,
    mock_run,
    run_op,
)

#: The operator tests' fixtures: fake Variables (the job record), and polls that do not sleep.
variables = operator_tests.variables
no_sleep = operator_tests.no_sleep

# -- OpenLineage ------------------------------------------------------------------------------


@pytest.fixture
def secret_conn(set_connection):
    """A connection with credentials in its password and in its host URL."""
    set_connection(host="http://bob:hunter2@sr.test", port=8080, login="alice", password=TOKEN)
    return BASE_URL


def facet_of(lineage):
    assert set(lineage.run_facets) == {"scriptrunner_job"}
    return lineage.run_facets["scriptrunner_job"]


def fields(facet):
    """The facet's own fields (without OpenLineage's _producer and _schemaURL)."""
    return attrs.asdict(facet, filter=lambda field, _: not field.name.startswith("_"))


@pytest.fixture(params=["worker", "deferred"])
def run_to_the_end(request):
    """Run an operator until its job ended: in the worker, or in a try resumed after its trigger fired."""

    def run(op):
        if request.param == "worker":
            return op.execute(make_context())
        ended = ScriptRunnerJob.from_api(job_body(JOB, "succeeded"))
        return op.execute_complete(make_context(), JobEvent(EventKind.ENDED, "ended", JOB, ended).to_dict())

    return run


def test_the_start_facet_names_the_script_and_no_job():
    facet = facet_of(DefaultExtractor(run_op()).extract())
    assert fields(facet) == {
        "scriptId": "quick-echo",
        "jobId": None,
        "jobUrl": None,
        "status": None,
        "exitCode": None,
        "durationMs": None,
    }


def test_the_complete_facet_carries_the_job_and_no_credential(secret_conn, requests_mock, run_to_the_end):
    mock_run(requests_mock, [{"status": "succeeded"}])
    op = run_op()
    run_to_the_end(op)
    facet = facet_of(DefaultExtractor(op).extract_on_complete(None))
    assert fields(facet) == {
        "scriptId": "quick-echo",
        "jobId": JOB,
        "jobUrl": JOB_URL,
        "status": "succeeded",
        "exitCode": 0,
        "durationMs": 990,
    }
    serialized = Serde.to_json(facet)  # as the OpenLineage client sends it
    assert {"jobUrl": JOB_URL, "_schemaURL": SCHEMA_URL}.items() <= json.loads(serialized).items()
    assert TOKEN not in serialized and "hunter2" not in serialized


def test_the_failure_facet_carries_the_failed_job(secret_conn, requests_mock, run_to_the_end):
    mock_run(requests_mock, [{"status": "failed", "code": 4}], stderr=b"boom\n")
    op = run_op()
    with pytest.raises(ScriptRunnerJobError):
        run_to_the_end(op)
    # Called directly: without it, OpenLineage's extractor would fall back to the complete facet.
    facet = facet_of(op.get_openlineage_facets_on_failure(None))
    assert fields(facet) == {
        "scriptId": "quick-echo",
        "jobId": JOB,
        "jobUrl": JOB_URL,
        "status": "failed",
        "exitCode": 4,
        "durationMs": 990,
    }
    assert TOKEN not in Serde.to_json(facet)


OPENLINEAGE = ("openlineage", "airflow.providers.openlineage")


@pytest.fixture
def without_openlineage(monkeypatch):
    """
    The provider imported afresh where OpenLineage cannot be imported, as when it is not installed;
    yields the names of the OpenLineage modules anything tried to import meanwhile.
    """
    before = set(sys.modules)
    for name in list(sys.modules):
        if name.startswith("airflow_provider_scriptrunner"):
            monkeypatch.delitem(sys.modules, name)  # restored afterwards
        elif any(name == root or name.startswith(root + ".") for root in OPENLINEAGE):
            monkeypatch.setitem(sys.modules, name, None)
    for root in OPENLINEAGE:
        monkeypatch.setitem(sys.modules, root, None)
    tried: list[str] = []
    real_import = builtins.__import__

    def recording_import(name, *args, **kwargs):
        if any(name == root or name.startswith(root + ".") for root in OPENLINEAGE):
            tried.append(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", recording_import)
    yield tried
    for name in set(sys.modules) - before:  # first imported here: later tests import them anew
        if name.startswith("airflow_provider_scriptrunner"):
            del sys.modules[name]


def test_without_openlineage_the_operator_imports_and_runs(without_openlineage, conn, requests_mock):
    with pytest.raises(ImportError):
        importlib.import_module("openlineage.client")
    module = importlib.import_module("airflow_provider_scriptrunner.operators.scriptrunner")
    importlib.import_module("airflow_provider_scriptrunner.decorators.scriptrunner")
    mock_run(requests_mock, [{"status": "succeeded"}], stdout=b"done\n")
    op = module.ScriptRunnerRunScriptOperator(task_id="run", script_id="quick-echo", deferrable=False)
    assert op.execute(make_context())["stdout"] == "done\n"
    assert without_openlineage == []
