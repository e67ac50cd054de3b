"""
A deferred task that ends in the triggerer (issue 17, section 2): worker starts per deferred job,
how soon the task ends, and CPU per job, with ``end_in_triggerer`` False (before) and True (after).

The figures come from real Airflow: this module runs the e2e measurement
``tests/e2e/test_trigger_end_e2e.py::test_measure_worker_starts_and_end_latency_with_and_without_end_in_triggerer``
in a child pytest process (its own process group, stopped with its group on a timeout or Ctrl-C).
That test starts the e2e deployment (tests/e2e/conftest.py: scheduler with the LocalExecutor,
dag-processor, triggerer and api-server on SQLite, the bundled script-runner), ends one job in the
triggerer to warm it up, then runs a batch of deferred jobs each way and writes its figures as JSON
to the path in ``TRIGGER_END_RESULTS_JSON``; worker starts are counted from the scheduler's
executor events, times come from the task instances, the jobs and the trigger logs, CPU from
``/proc`` for every process of each component (see the test module's docstring).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks._common import PACKAGE_ROOT, Row, log, stop_group

NAME = "Trigger-side end"
TEST = (
    "tests/e2e/test_trigger_end_e2e.py::"
    "test_measure_worker_starts_and_end_latency_with_and_without_end_in_triggerer"
)
#: The test writes its figures as JSON to this path when the variable is set (RESULTS_JSON_VAR there).
RESULTS_JSON_VAR = "TRIGGER_END_RESULTS_JSON"
#: The deployment's start, the warm-up, both batches and the teardown; about 3 minutes on 2 cores.
TEST_TIMEOUT = 900.0
#: How long the test may take to tear its deployment down once told to stop (see conftest.py).
STOP_GRACE = 120.0
#: pytest -q's last line when the one test failed, with no error in a fixture.
ONE_FAILURE = re.compile(r"^1 failed(?:, \d+ warnings?)? in ")


def _run_test(workdir: Path, results: Path, output: Path) -> int:
    """Run the measurement test in its own process group; its exit status."""
    env = dict(os.environ)
    env[RESULTS_JSON_VAR] = str(results)
    env["AIRFLOW_HOME"] = str(workdir / "trigger-end-airflow-home")  # the pytest process's own
    command = [
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-s",
        f"--basetemp={workdir / 'trigger-end-pytest'}", TEST,
    ]  # fmt: skip
    with output.open("wb") as sink:
        process = subprocess.Popen(
            command,
            cwd=PACKAGE_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            return process.wait(TEST_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise RuntimeError(
                f"{TEST} did not finish within {TEST_TIMEOUT:g} s; its output ends:\n{_tail(output)}"
            ) from None
        finally:
            stop_group(process, STOP_GRACE)


def _tail(output: Path, lines: int = 60) -> str:
    return "\n".join(output.read_text(encoding="utf-8", errors="replace").rstrip().splitlines()[-lines:])


def _p50_max(jobs: list[dict[str, Any]], key: str) -> str:
    values = [job[key] for job in jobs]
    return f"{statistics.median(values):.2f} s / {max(values):.2f} s"


def _cpu(batch: dict[str, Any], component: str) -> float:
    return batch["cpu"][component] / len(batch["jobs"])


def rows_from(results: dict[str, Any]) -> list[Row]:
    """The result rows of one measurement (the test's JSON)."""
    before, after = results["before"], results["after"]
    n, target = results["jobs_per_way"], results["end_after_event_target"]
    starts_before, starts_after = ([job["starts"] for job in batch["jobs"]] for batch in (before, after))
    on, off = "end_in_triggerer=True", "end_in_triggerer=False (before)"
    where = f"{n} deferred jobs, real Airflow {results['airflow_version']} (e2e deployment)"
    return [
        Row(NAME, f"worker starts per deferred job, {on}, {where}", " ".join(map(str, starts_after)),
            "1 per job", all(count == 1 for count in starts_after)),
        Row(NAME, f"worker starts per deferred job, {off}", " ".join(map(str, starts_before)), "(reference)"),
        Row(NAME, f"trigger event -> task end, p50 / max, {on}", _p50_max(after["jobs"], "event_to_ti_end"),
            f"max <= {target:g} s", max(job["event_to_ti_end"] for job in after["jobs"]) <= target),
        Row(NAME, f"job end -> task end, p50 / max, {on}", _p50_max(after["jobs"], "job_end_to_ti_end"),
            "(reference)"),
        Row(NAME, f"job end -> task end, p50 / max, {off}", _p50_max(before["jobs"], "job_end_to_ti_end"),
            "(reference)"),
        Row(NAME, f"worker CPU s per deferred job (the scheduler's child processes), {on}",
            f"{_cpu(after, 'workers'):.2f}", "(reference)"),
        Row(NAME, f"worker CPU s per deferred job (the scheduler's child processes), {off}",
            f"{_cpu(before, 'workers'):.2f}", "(reference)"),
        Row(NAME, f"CPU s per deferred job of all components, {on}", f"{_cpu(after, 'all'):.2f}",
            "(reference)", note=f"dag-processor {_cpu(after, 'dag-processor'):.2f}"),
        Row(NAME, f"CPU s per deferred job of all components, {off}", f"{_cpu(before, 'all'):.2f}",
            "(reference)", note=f"dag-processor {_cpu(before, 'dag-processor'):.2f}"),
    ]  # fmt: skip


def run(workdir: Path) -> tuple[list[Row], dict[str, Any]]:
    """
    Run the measurement once; ``(rows, the test's figures)``.

    A failed test raises, with the end of its output, unless the only failure is a target the
    figures show as missed (the test asserts the targets after writing them): the rows then say
    MISSED, as every benchmark's do.
    """
    results_path, output = workdir / "trigger_end.json", workdir / "trigger_end_pytest.out"
    results_path.unlink(missing_ok=True)
    log(f"trigger-side end: running {TEST} (about 3 minutes)")
    status = _run_test(workdir, results_path, output)
    if not results_path.exists():
        why = f"failed (exit status {status})" if status else f"wrote no figures to {results_path}"
        raise RuntimeError(f"{TEST} {why}; its output ends:\n{_tail(output)}")
    results = json.loads(results_path.read_text(encoding="utf-8"))
    rows = rows_from(results)
    if status != 0:
        missed = any(row.met is False for row in rows)
        if not (missed and ONE_FAILURE.match(_tail(output, 1))):
            raise RuntimeError(f"{TEST} failed (exit status {status}); its output ends:\n{_tail(output)}")
        log(f"trigger-side end: a target was missed; the test's output ends:\n{_tail(output)}")
    return rows, results


def section(details: dict[str, Any]) -> str:
    """The before/after table of one measurement, and what its figures mean."""
    before, after, first = details["before"], details["after"], details["first_end"]
    gaps = [f"{gap:.2f}" for gap in sorted(job["event_to_ti_end"] for job in after["jobs"])]
    gap = gaps[0] if gaps[0] == gaps[-1] else f"{gaps[0]} to {gaps[-1]}"
    total_before, total_after = _cpu(before, "all"), _cpu(after, "all")
    total = (
        f"the total stays about the same ({total_before:.2f} s before, {total_after:.2f} s after)"
        if abs(total_after - total_before) <= 0.15 * total_before
        else f"the total goes from {total_before:.2f} s to {total_after:.2f} s"
    )
    return (
        f"Airflow {details['airflow_version']}, the e2e deployment of tests/e2e (scheduler with the "
        "LocalExecutor, dag-processor, triggerer, api-server; SQLite; the bundled script-runner), "
        f"{details['jobs_per_way']} deferred jobs of 4 to 12 s each way, `poll_interval=1`, measured by "
        f"`{TEST}`. CPU s are per job, of every process of each component during the batch.\n\n"
        f"{details['table']}\n\n"
        "With `end_in_triggerer=True` the trigger ends the task itself (a `TaskSuccessEvent`), so no "
        "second worker starts to run `execute_complete`. The "
        f"{gap} s between the trigger's event and the task's end is the "
        "trigger runner's loop: the event waits for the runner's next iteration, which hands it to the "
        "triggerer's supervisor to write, and each iteration ends with a wait of up to 1 s "
        "(`anyio.move_on_after(1)` in Airflow's `jobs/triggerer_job_runner.py`). CPU moves from the "
        f"workers ({_cpu(before, 'workers'):.2f} -> {_cpu(after, 'workers'):.2f} s per job) to the "
        f"dag-processor ({_cpu(before, 'dag-processor'):.2f} -> {_cpu(after, 'dag-processor'):.2f} s): "
        "for a task ended by a `TaskSuccessEvent` the triggerer sends a success `TaskCallbackRequest`, "
        'and the dag-processor parses the DAG file for it, then drops it ("Task callback requested '
        f'but is not a failure callback"); {total}. The first trigger-side end after a triggerer '
        "starts waits for the triggerer's in-process execution API to start, so the measurement ends "
        "one job in the triggerer first (the test's `first_end` fixture); in this run that first end "
        f"took {first['job_end_to_ti_end']:.2f} s from the job's end to the task's end, "
        f"{first['sdk_calls']:.2f} s of it in the end's calls to Airflow."
    )
