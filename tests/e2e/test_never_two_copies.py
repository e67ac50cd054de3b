"""
Reruns on real Airflow (see conftest.py) never run a task's script twice at once: clearing a
deferred task while its job runs, and a retry after the task process was SIGKILLed mid-job.
The script's live runs are sampled all along (and the script itself records any start while an
earlier run of it is alive). These run on every supported release (marker ``reruns``, ``make e2e-on-<version>``).
"""

from __future__ import annotations

import os
import signal

import pytest

from airflow_provider_scriptrunner.testing.harness import process_alive
from airflow_provider_scriptrunner.testing.server import TERMINAL_STATUSES
from tests.e2e.deployment import wait_for
from tests.e2e.observe import LiveSampler

pytestmark = pytest.mark.e2e


def test_clearing_a_deferred_task_while_its_job_runs_never_runs_two_copies(airflow, api, server_view, marks):
    tag = marks.new_tag("clear-deferred")
    run_id = api.trigger("e2e_deferrable", {"tag": tag, "first_seconds": 30, "later_seconds": 3})
    airflow.wait_trigger_running(api, "e2e_deferrable", run_id)
    first_job = api.wait_xcom("e2e_deferrable", run_id, "run", "job_id")
    marks.wait_runs(tag, 1)

    with LiveSampler(marks, [tag]) as sampler:
        api.clear("e2e_deferrable", run_id, ["run"])
        done = api.wait_state("e2e_deferrable", run_id, "run", "success", timeout=150)
        wait_for(f"every run of {tag} to exit", lambda: not marks.live(tag), timeout=30)

    assert sampler.samples > 50, sampler.samples
    assert sampler.max_live.get(tag, 0) <= 1, f"two copies alive at once: {sampler.crowded[:5]}"
    assert marks.overlaps(tag) == [], (
        f"(new pid, live pid) of runs started beside a live one: {marks.overlaps(tag)}"
    )
    assert done["try_number"] == 2, done
    result = api.xcoms("e2e_deferrable", run_id, "run")["return_value"]
    last = server_view.job(result["job_id"])
    assert (last["status"], last["code"]) == ("succeeded", 0), last
    assert server_view.job(first_job)["status"] in TERMINAL_STATUSES


def test_a_task_process_killed_mid_job_is_retried_without_a_second_live_copy(
    airflow, api, server_view, marks
):
    tag = marks.new_tag("killed-task")
    run_id = api.trigger("e2e_worker_retry", {"tag": tag, "first_seconds": 30, "later_seconds": 3})
    api.wait_state("e2e_worker_retry", run_id, "run", "running")
    (first_pid,) = marks.wait_runs(tag, 1)
    job_id = api.wait_xcom("e2e_worker_retry", run_id, "run", "job_id")
    ti = api.task_instance("e2e_worker_retry", run_id, "run")
    with open(f"/proc/{ti['pid']}/cmdline", "rb") as handle:  # the task process, as Airflow recorded it
        assert f"airflow worker -- {ti['id']}".encode() in handle.read().replace(b"\0", b" "), ti

    with LiveSampler(marks, [tag]) as sampler:
        os.kill(ti["pid"], signal.SIGKILL)  # on_kill never runs: nothing cancels the job
        done = api.wait_state("e2e_worker_retry", run_id, "run", "success", timeout=150)
        wait_for(f"every run of {tag} to exit", lambda: not marks.live(tag), timeout=30)

    assert sampler.samples > 50, sampler.samples
    assert sampler.max_live.get(tag, 0) <= 1, f"two copies alive at once: {sampler.crowded[:5]}"
    assert marks.overlaps(tag) == [], (
        f"(new pid, live pid) of runs started beside a live one: {marks.overlaps(tag)}"
    )
    assert done["try_number"] == 2, done
    result = api.xcoms("e2e_worker_retry", run_id, "run")["return_value"]
    assert server_view.job(result["job_id"])["status"] == "succeeded"
    assert not process_alive(first_pid)
    # The retry follows the first try's job (its record, an Airflow Variable), or takes its result
    # should it have succeeded meanwhile: never a second run of the script.
    assert result["job_id"] == job_id and marks.runs(tag) == [first_pid], (result["job_id"], marks.runs(tag))
