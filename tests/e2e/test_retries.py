"""
Retries only where a retry can help, on real Airflow (see conftest.py): a task whose script the
server does not know fails on its first try, its retries unused; a script that exits non-zero
still gets them; a retry after the task died once its job had succeeded takes that job's result.
These run on every supported release (marker ``reruns``, ``make e2e-on-<version>``).
"""

from __future__ import annotations

import os
import signal

import pytest
from packaging.version import Version

from tests.e2e.deployment import wait_for

pytestmark = pytest.mark.e2e


def test_an_unknown_script_fails_at_once_without_using_the_retries(api, marks):
    tag = marks.new_tag("typo")
    run_id = api.trigger("e2e_retries", {"tag": tag, "script_id": "no-such-script"})
    done = api.wait_state("e2e_retries", run_id, "run", "failed", timeout=60)
    assert done["try_number"] == 1, done
    log = api.task_log("e2e_retries", run_id, "run", 1)
    assert "SCRIPT_NOT_FOUND" in log and "not retried: another try would fail the same way" in log, log[
        -2000:
    ]
    assert marks.runs(tag) == []


def test_a_script_that_exits_non_zero_still_uses_the_retries(api, marks):
    tag = marks.new_tag("exit-3")
    run_id = api.trigger("e2e_retries", {"tag": tag, "first_exit": 3})
    done = api.wait_state("e2e_retries", run_id, "run", "success", timeout=90)
    assert done["try_number"] == 2, done
    assert len(marks.runs(tag)) == 2


def test_a_retry_takes_the_result_of_a_job_that_succeeded_after_its_task_died(api, server_view, marks):
    # The task process is frozen while its job runs (so it cannot see the job end), then killed
    # once the job has succeeded: its retry must not run the script again.
    tag = marks.new_tag("died-after-success")
    run_id = api.trigger("e2e_worker_retry", {"tag": tag, "first_seconds": 6, "later_seconds": 1})
    api.wait_state("e2e_worker_retry", run_id, "run", "running")
    (first_pid,) = marks.wait_runs(tag, 1)
    job_id = api.wait_xcom("e2e_worker_retry", run_id, "run", "job_id")
    ti = api.task_instance("e2e_worker_retry", run_id, "run")
    os.kill(ti["pid"], signal.SIGSTOP)
    try:
        wait_for(f"job {job_id} to succeed", lambda: server_view.job(job_id)["status"] == "succeeded", 60)
    finally:
        os.kill(ti["pid"], signal.SIGKILL)

    done = api.wait_state("e2e_worker_retry", run_id, "run", "success", timeout=150)
    assert done["try_number"] == 2, done
    assert api.xcoms("e2e_worker_retry", run_id, "run")["return_value"]["job_id"] == job_id
    assert marks.runs(tag) == [first_pid]  # the script ran once
    log = api.task_log("e2e_worker_retry", run_id, "run", 2)
    assert f"Job {job_id} of an earlier try already succeeded, but that try did not finish" in log, log[
        -2000:
    ]


@pytest.mark.skipif(
    Version(__import__("airflow").__version__) < Version("3.3"), reason="retry policies are Airflow 3.3+"
)
@pytest.mark.parametrize(("first_exit", "state", "try_number"), [(75, "success", 2), (4, "failed", 1)])
def test_a_retry_policy_retries_only_the_listed_exit_codes(api, marks, first_exit, state, try_number):
    tag = marks.new_tag(f"policy-{first_exit}")
    run_id = api.trigger("e2e_retry_policy", {"tag": tag, "first_exit": first_exit})
    done = api.wait_state("e2e_retry_policy", run_id, "run", state, timeout=90)
    assert done["try_number"] == try_number, done
    assert len(marks.runs(tag)) == try_number
