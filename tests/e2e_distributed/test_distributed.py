"""
The provider's promises where they are hardest: CeleryExecutor, PostgreSQL, two triggerers and
two Celery workers (see conftest.py). Every test drives a DAG run through the REST API and
checks Airflow's view (task instance states, try numbers, which triggerer job and which worker)
and the script-runner's view (job statuses, the script's runs and live processes).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from airflow_provider_scriptrunner.testing.harness import process_alive
from airflow_provider_scriptrunner.testing.server import TERMINAL_STATUSES
from tests.e2e.deployment import DeploymentError, listening_sockets, wait_for
from tests.e2e.observe import LiveSampler, Marks, ScriptRunnerView
from tests.e2e_distributed.shape import (
    ON_KILL_TIMEOUT,
    TASK_HEARTBEAT_TIMEOUT,
    TRIGGERER_HEALTH_CHECK_THRESHOLD,
    TRIGGERERS,
    WORKERS,
)

pytestmark = [pytest.mark.e2e, pytest.mark.distributed]

#: Seconds between the job's end as the server saw it and the deadline that should have ended it:
#: a poll interval (1 s), the cancel request, the script's exit on SIGTERM.
CANCEL_SLACK = 10


def _epoch(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def _logged_at(log: str, needle: str) -> float:
    """Wall-clock time of the first line of a (JSON lines) task or trigger log that contains ``needle``."""
    for line in log.splitlines():
        if needle in line:
            return _epoch(json.loads(line)["timestamp"])
    raise AssertionError(f"no {needle!r} in the log:\n{log[-2000:]}")


def _other(names: tuple[str, ...], name: str) -> str:
    (other,) = [n for n in names if n != name]
    return other


@pytest.fixture
def stop_leftover_jobs(server_view: ScriptRunnerView) -> Iterator[list[str]]:
    """Jobs a test registers here are canceled after it if still running (a failed test must not
    leave a script occupying the server for the tests after it)."""
    jobs: list[str] = []
    yield jobs
    for job_id in jobs:
        if server_view.job(job_id)["status"] not in TERMINAL_STATUSES:
            server_view.cancel(job_id)
            server_view.wait_job(job_id, TERMINAL_STATUSES, timeout=30)


def _single_run(marks: Marks, tag: str, pid: int) -> None:
    wait_for(f"the script of {tag} to exit", lambda: not marks.live(tag), 15)
    assert marks.runs(tag) == [pid], f"the script ran {len(marks.runs(tag))} times: {marks.runs(tag)}"
    assert marks.overlaps(tag) == []


# ------------------------------------------------------------------------------------------------


def test_every_process_listens_on_loopback_only(distributed, finding):
    airflow = distributed.airflow
    sockets = airflow.listening_sockets()
    services = listening_sockets(
        [*distributed.postgres.leftovers(), *distributed.redis.leftovers(), distributed.scriptrunner.pid]
    )
    everything = {(address, port) for _, address, port in [*sockets, *services]}
    for port in (
        airflow.api_port,
        distributed.postgres.port,
        distributed.redis.port,
        distributed.scriptrunner.port,
    ):
        assert ("127.0.0.1", port) in everything, (port, everything)
    assert all(address == "127.0.0.1" for address, _ in everything), everything
    for worker in WORKERS:
        ports = sorted({port for pid, _, port in sockets if pid in airflow.component_pids(worker)})
        finding(f"{worker} listens on {ports or 'no port'} (log server skipped; Celery talks to Redis only)")


def test_deferrable_run_succeeds_on_one_of_the_triggerers(airflow, api, server_view, marks, finding):
    tag = marks.new_tag("dist-ok")
    run_id = api.trigger("dist_deferrable", {"tag": tag, "first_seconds": 6})
    ti = airflow.wait_trigger_running(api, "dist_deferrable", run_id)
    job_id = api.wait_xcom("dist_deferrable", run_id, "run", "job_id")
    triggerer = ti["triggerer_job"]
    assert triggerer["job_type"] == "TriggererJob" and triggerer["hostname"] in TRIGGERERS, triggerer
    (pid,) = marks.wait_runs(tag, 1)
    assert server_view.job(job_id)["status"] == "running" and process_alive(pid)

    done = api.wait_state("dist_deferrable", run_id, "run", "success", timeout=90)

    assert done["try_number"] == 1 and done["hostname"] in WORKERS, done
    job = server_view.job(job_id)
    assert (job["status"], job["code"]) == ("succeeded", 0), job
    _single_run(marks, tag, pid)
    assert api.xcoms("dist_deferrable", run_id, "run")["return_value"]["job_id"] == job_id
    finding(
        f"trigger ran on {triggerer['hostname']} (triggerer job {triggerer['id']}); "
        f"task resumed on {done['hostname']}"
    )


def test_killing_the_triggerer_of_a_live_trigger_hands_it_to_the_other(
    airflow, api, server_view, marks, stop_leftover_jobs, finding
):
    tag = marks.new_tag("dist-triggerer-kill")
    run_id = api.trigger("dist_deferrable", {"tag": tag, "first_seconds": 30})
    before = airflow.wait_trigger_running(api, "dist_deferrable", run_id)
    job_id = api.wait_xcom("dist_deferrable", run_id, "run", "job_id")
    stop_leftover_jobs.append(job_id)
    (pid,) = marks.wait_runs(tag, 1)
    holder = before["triggerer_job"]["hostname"]
    other = _other(TRIGGERERS, holder)

    killed_at = time.monotonic()
    airflow.kill_component(holder)
    assert server_view.job(job_id)["status"] == "running" and process_alive(pid)

    after = airflow.wait_trigger_running(
        api,
        "dist_deferrable",
        run_id,
        not_on=before["triggerer_job"]["id"],
        timeout=TRIGGERER_HEALTH_CHECK_THRESHOLD + 40,
    )
    took = time.monotonic() - killed_at
    # Airflow's view: the same try, deferred, now on the other triggerer, which started it only once
    # the dead one's last heartbeat was older than the health threshold.
    assert after["triggerer_job"]["hostname"] == other, after["triggerer_job"]
    assert after["try_number"] == 1
    (dead,) = [job for job in api.jobs("TriggererJob") if job["id"] == before["triggerer_job"]["id"]]
    log = airflow.trigger_logs("dist_deferrable", run_id, "run", 1)[
        f"attempt=1.log.trigger.{after['triggerer_job']['id']}.log"
    ]
    silent = _logged_at(log, " starting") - _epoch(dead["latest_heartbeat"])
    assert silent >= TRIGGERER_HEALTH_CHECK_THRESHOLD, f"taken over {silent:.1f} s after the last heartbeat"
    # The script-runner's view: the job was never canceled and its one script runs on.
    assert server_view.job(job_id)["status"] == "running" and process_alive(pid)

    done = api.wait_state("dist_deferrable", run_id, "run", "success", timeout=90)
    assert done["try_number"] == 1
    job = server_view.job(job_id)
    assert (job["status"], job["code"]) == ("succeeded", 0), job
    _single_run(marks, tag, pid)
    finding(
        f"SIGKILL of {holder}: {other} ran the trigger {took:.0f} s later, {silent:.1f} s after the last "
        f"heartbeat (threshold {TRIGGERER_HEALTH_CHECK_THRESHOLD} s)"
    )


def test_a_triggerer_stopped_past_the_threshold_then_continued_does_not_cancel(
    airflow, api, server_view, marks, stop_leftover_jobs, finding
):
    tag = marks.new_tag("dist-triggerer-stop")
    run_id = api.trigger("dist_deferrable", {"tag": tag, "first_seconds": 55})
    before = airflow.wait_trigger_running(api, "dist_deferrable", run_id)
    job_id = api.wait_xcom("dist_deferrable", run_id, "run", "job_id")
    stop_leftover_jobs.append(job_id)
    (pid,) = marks.wait_runs(tag, 1)
    holder, holder_job = before["triggerer_job"]["hostname"], before["triggerer_job"]["id"]
    other = _other(TRIGGERERS, holder)

    airflow.pause_component(holder)
    try:
        after = airflow.wait_trigger_running(
            api, "dist_deferrable", run_id, not_on=holder_job, timeout=TRIGGERER_HEALTH_CHECK_THRESHOLD + 40
        )
        assert after["triggerer_job"]["hostname"] == other, after["triggerer_job"]
    finally:
        airflow.resume_component(holder)

    # The continued triggerer finds the trigger no longer assigned to it and stops its own copy;
    # Airflow 3.3 treats that as a user action and calls the trigger's on_kill (apache/airflow#73454).
    holder_log = f"attempt=1.log.trigger.{holder_job}.log"

    def holder_let_go() -> str | None:
        text = airflow.trigger_logs("dist_deferrable", run_id, "run", 1).get(holder_log, "")
        return text if "trigger completed" in text or "on_kill" in text else None

    try:
        let_go = wait_for(f"{holder} to stop its copy of the trigger", holder_let_go, timeout=30)
    except DeploymentError:  # its last lines can be lost when its log file is closed first
        let_go = ""
    assert server_view.job(job_id)["status"] == "running", (
        "the job ended before the continued triggerer let go"
    )
    # Give an on_kill that decided to cancel the time to do it (its state query can take ~20 s).
    deadline = time.monotonic() + 25
    while time.monotonic() < deadline and (status := server_view.job(job_id)["status"]) == "running":
        time.sleep(1)
    assert status in ("running", "succeeded"), (
        f"the job was {status} after {holder} continued; it must run on"
    )

    done = api.wait_state("dist_deferrable", run_id, "run", "success", timeout=90)
    assert done["try_number"] == 1
    job = server_view.job(job_id)
    assert (job["status"], job["code"]) == ("succeeded", 0), job
    _single_run(marks, tag, pid)
    on_kill = "invoking on_kill" in let_go
    finding(
        f"SIGSTOP of {holder}: {other} took over; after SIGCONT {holder} stopped its copy "
        f"({'on_kill called, did not cancel' if on_kill else 'without on_kill'}); job kept running"
    )


def test_a_dead_worker_host_is_retried_on_the_other_worker_and_reattaches(
    airflow, api, server_view, marks, stop_leftover_jobs, finding
):
    tag = marks.new_tag("dist-worker-dies")
    run_id = api.trigger("dist_worker_retry", {"tag": tag, "first_seconds": 45, "later_seconds": 1})
    api.wait_state("dist_worker_retry", run_id, "run", "running")
    (pid,) = marks.wait_runs(tag, 1)
    job_id = api.wait_xcom("dist_worker_retry", run_id, "run", "job_id")
    stop_leftover_jobs.append(job_id)
    first = api.task_instance("dist_worker_retry", run_id, "run")
    worker = first["hostname"]
    assert worker in WORKERS and first["try_number"] == 1, first
    other = _other(WORKERS, worker)

    killed_at = time.monotonic()
    killed = airflow.kill_component(worker)  # the worker, its pool and the task process: a host gone
    assert first["pid"] in killed, (first["pid"], killed)
    assert server_view.job(job_id)["status"] == "running" and process_alive(pid)

    def retry_running() -> dict[str, Any] | None:
        ti = api.task_instance("dist_worker_retry", run_id, "run")
        return ti if ti["try_number"] == 2 and ti["state"] in ("running", "success") else None

    retry = wait_for("the retry to run", retry_running, timeout=TASK_HEARTBEAT_TIMEOUT + 60)
    took = time.monotonic() - killed_at
    assert retry["hostname"] == other, retry
    done = api.wait_state("dist_worker_retry", run_id, "run", "success", timeout=120)

    assert (done["try_number"], done["hostname"]) == (2, other), done
    # The retry reattached to the first try's job (the Variable record): same job, one run of the script.
    assert api.xcoms("dist_worker_retry", run_id, "run")["return_value"]["job_id"] == job_id
    job = server_view.job(job_id)
    assert (job["status"], job["code"]) == ("succeeded", 0), job
    _single_run(marks, tag, pid)
    assert f"Reattaching to job {job_id}" in api.task_log("dist_worker_retry", run_id, "run", 2)
    finding(f"{worker} killed; try 2 ran on {other} {took:.0f} s later and reattached to {job_id}")


def test_marking_a_deferred_task_failed_cancels_its_job_within_on_kill_timeout(
    airflow, api, server_view, marks, stop_leftover_jobs, finding
):
    tag = marks.new_tag("dist-mark-failed")
    run_id = api.trigger("dist_deferrable", {"tag": tag, "first_seconds": 120})
    ti = airflow.wait_trigger_running(api, "dist_deferrable", run_id)
    job_id = api.wait_xcom("dist_deferrable", run_id, "run", "job_id")
    stop_leftover_jobs.append(job_id)
    (pid,) = marks.wait_runs(tag, 1)

    marked_at = time.monotonic()
    api.set_state("dist_deferrable", run_id, "run", "failed")
    job = server_view.wait_job(job_id, TERMINAL_STATUSES, timeout=ON_KILL_TIMEOUT)
    wait_for(
        f"script {pid} to exit",
        lambda: not process_alive(pid),
        timeout=max(1.0, ON_KILL_TIMEOUT - (time.monotonic() - marked_at)),
    )
    took = time.monotonic() - marked_at

    assert (job["status"], job["code"]) == ("canceled", -1), job
    assert took < ON_KILL_TIMEOUT
    assert api.task_instance("dist_deferrable", run_id, "run")["state"] == "failed"
    _single_run(marks, tag, pid)
    finding(
        f"job canceled and script gone {took:.1f} s after the mark (on_kill_timeout {ON_KILL_TIMEOUT} s), "
        f"by {ti['triggerer_job']['hostname']}"
    )


def test_marking_a_deferred_task_failed_before_any_triggerer_ran_its_trigger_cancels_its_job(
    airflow, api, server_view, marks, stop_leftover_jobs, finding
):
    tag = marks.new_tag("dist-mark-before-trigger")
    for name in TRIGGERERS:  # no triggerer can start the trigger
        airflow.pause_component(name)
    try:
        run_id = api.trigger("dist_deferrable", {"tag": tag, "first_seconds": 120})
        ti = api.wait_state("dist_deferrable", run_id, "run", "deferred")
        job_id = api.wait_xcom("dist_deferrable", run_id, "run", "job_id")
        stop_leftover_jobs.append(job_id)
        (pid,) = marks.wait_runs(tag, 1)
        assert ti["triggerer_job"] is None, ti["triggerer_job"]
        assert ti["trigger"] is not None
        api.set_state("dist_deferrable", run_id, "run", "failed")
    finally:
        for name in TRIGGERERS:
            airflow.resume_component(name)
    marked_at = time.monotonic()
    try:
        job = server_view.wait_job(job_id, TERMINAL_STATUSES, timeout=ON_KILL_TIMEOUT + 10)
    finally:
        logs = airflow.trigger_logs("dist_deferrable", run_id, "run", 1)
        status = server_view.job(job_id)["status"]
        finding(
            f"after the mark and SIGCONT: job {status} after {time.monotonic() - marked_at:.0f} s; "
            f"trigger started by a triggerer: {'yes ' + str(sorted(logs)) if logs else 'never'}"
        )
    assert (job["status"], job["code"]) == ("canceled", -1), job
    wait_for(f"script {pid} to exit", lambda: not process_alive(pid), timeout=15)
    assert api.task_instance("dist_deferrable", run_id, "run")["state"] == "failed"
    _single_run(marks, tag, pid)


def test_clearing_a_deferred_task_never_runs_two_copies_and_succeeds(
    airflow, api, server_view, marks, stop_leftover_jobs, finding
):
    tag = marks.new_tag("dist-clear")
    run_id = api.trigger("dist_deferrable", {"tag": tag, "first_seconds": 30, "later_seconds": 5})
    airflow.wait_trigger_running(api, "dist_deferrable", run_id)
    first_job = api.wait_xcom("dist_deferrable", run_id, "run", "job_id")
    stop_leftover_jobs.append(first_job)
    marks.wait_runs(tag, 1)

    with LiveSampler(marks, [tag]) as sampler:
        api.clear("dist_deferrable", run_id, ["run"])
        done = api.wait_state("dist_deferrable", run_id, "run", "success", timeout=150)
        wait_for(f"every run of {tag} to exit", lambda: not marks.live(tag), timeout=30)

    assert sampler.samples > 50, sampler.samples
    assert sampler.max_live.get(tag, 0) <= 1, f"two copies alive at once: {sampler.crowded[:5]}"
    assert marks.overlaps(tag) == [], marks.overlaps(tag)
    assert done["try_number"] == 2, done
    result = api.xcoms("dist_deferrable", run_id, "run")["return_value"]
    stop_leftover_jobs.append(result["job_id"])
    last = server_view.job(result["job_id"])
    assert (last["status"], last["code"]) == ("succeeded", 0), last
    first = server_view.job(first_job)
    assert first["status"] in TERMINAL_STATUSES, first
    finding(
        f"{len(marks.runs(tag))} run(s); first job {first['status']}, "
        f"{'reattached' if result['job_id'] == first_job else 'new job ' + result['job_id']} for try 2"
    )


def test_execution_timeout_of_a_deferred_task_cancels_its_job_on_time(
    airflow, api, server_view, marks, stop_leftover_jobs, finding
):
    task = api.request("GET", "/api/v2/dags/dist_deferrable_timeout/tasks/run")
    timeout = task["execution_timeout"]
    seconds = timeout["days"] * 86400 + timeout["seconds"] + timeout["microseconds"] / 1e6
    tag = marks.new_tag("dist-exec-timeout")
    run_id = api.trigger("dist_deferrable_timeout", {"tag": tag, "first_seconds": 120})
    ti = airflow.wait_trigger_running(api, "dist_deferrable_timeout", run_id)
    job_id = api.wait_xcom("dist_deferrable_timeout", run_id, "run", "job_id")
    stop_leftover_jobs.append(job_id)
    (pid,) = marks.wait_runs(tag, 1)

    started = _epoch(ti["start_date"])
    try:
        job = server_view.wait_job(
            job_id, TERMINAL_STATUSES, timeout=max(5.0, started + seconds + CANCEL_SLACK - time.time())
        )
    finally:
        status = server_view.job(job_id)["status"]
        finding(
            f"execution_timeout {seconds:g} s: job {status} "
            f"{time.time() - started:.0f} s after the task started"
        )
    assert (job["status"], job["code"]) == ("canceled", -1), job
    assert _epoch(job["endedAt"]) - started <= seconds + CANCEL_SLACK
    wait_for(f"script {pid} to exit", lambda: not process_alive(pid), timeout=15)
    assert api.wait_state("dist_deferrable_timeout", run_id, "run", "failed", timeout=60)["state"] == "failed"
    _single_run(marks, tag, pid)


def test_twenty_mapped_deferrable_tasks_use_both_triggerers_and_workers(
    airflow, api, server_view, marks, finding
):
    count = 20
    tag = marks.new_tag("dist-mapped")
    run_id = api.trigger("dist_mapped", {"tag": tag, "count": count, "seconds": 25})
    triggerer_of: dict[int, str] = {}
    most_deferred = 0

    def probe() -> list[dict[str, Any]] | None:
        nonlocal most_deferred
        tis = api.mapped_task_instances("dist_mapped", run_id, "run")
        for ti in tis:
            if ti["triggerer_job"]:
                triggerer_of[ti["map_index"]] = ti["triggerer_job"]["hostname"]
            if ti["state"] in ("failed", "upstream_failed", "skipped", "removed"):
                raise AssertionError(f"map index {ti['map_index']} ended {ti['state']}")
        most_deferred = max(most_deferred, sum(ti["state"] == "deferred" for ti in tis))
        return tis if len(tis) == count and all(ti["state"] == "success" for ti in tis) else None

    tis = wait_for(f"{count} mapped tasks to succeed", probe, timeout=420, interval=1)

    # Airflow's view: every instance succeeded in its first try; both workers and triggerers worked.
    assert [ti["try_number"] for ti in tis] == [1] * count
    workers = {ti["hostname"] for ti in tis}
    assert workers == set(WORKERS), workers
    names = {job["id"]: job["hostname"] for job in api.jobs("TriggererJob")}
    for i in range(count):  # the trigger logs name the triggerer job that ran each trigger
        for log_name in airflow.trigger_logs("dist_mapped", run_id, "run", 1, map_index=i):
            triggerer_of.setdefault(i, names[int(log_name.rsplit(".", 2)[-2])])
    assert set(triggerer_of.values()) == set(TRIGGERERS), triggerer_of
    # The script-runner's view: exactly one run per task, all succeeded, none canceled.
    job_ids = [
        api.xcoms("dist_mapped", run_id, "run", map_index=i)["return_value"]["job_id"] for i in range(count)
    ]
    assert len(set(job_ids)) == count
    statuses = [server_view.job(job_id)["status"] for job_id in job_ids]
    assert statuses == ["succeeded"] * count, statuses
    runs = {i: marks.runs(f"{tag}-{i}") for i in range(count)}
    assert all(len(pids) == 1 for pids in runs.values()), runs
    assert not [pid for pids in runs.values() for pid in pids if process_alive(pid)]
    per_triggerer = {name: sum(1 for t in triggerer_of.values() if t == name) for name in TRIGGERERS}
    finding(
        f"{count} tasks, {count} runs, all succeeded; up to {most_deferred} deferred at once; "
        f"triggers per triggerer {per_triggerer}; workers {sorted(workers)}"
    )
