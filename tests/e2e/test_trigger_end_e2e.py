"""
``end_in_triggerer`` on real Airflow (see conftest.py), issue 17 section 2: a deferred job that
succeeds, or is skipped by ``skip_on_exit_code``, ends its task in the triggerer (no worker runs
again after the job), with the return value, the log and the job record a worker would leave; a
failure falls back to the worker and its retries. The last test measures both ways side by side
(``make bench`` runs it too: benchmarks/trigger_end.py).
DAGs: dags/e2e_trigger_end_dags.py.

Worker starts are counted in the scheduler's log: the executor reports every workload it ran to
its end as "Received executor event with state ... for task instance [<id> (coordinates=]
TaskInstanceKey(dag_id=..., task_id=..., run_id=..., try_number=...)", once per worker start of
a try (the LocalExecutor's workers run in the scheduler's process tree, so their results come back
there). A task that its trigger ends never goes back to the executor. The try's task log agrees:
the task runner writes "DAG bundles loaded" into it each time a worker starts it; the triggerer
never does.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_scriptrunner.task.ownership import VARIABLE_PREFIX
from tests.e2e.deployment import AirflowApi, AirflowDeployment, wait_for
from tests.e2e.test_deferred_mode_e2e import at

pytestmark = pytest.mark.e2e

ON, OFF = "e2e_trigger_end", "e2e_trigger_end_off"
MEASURE = {False: "e2e_trigger_end_measure_off", True: "e2e_trigger_end_measure_on"}
DAG_IDS = (ON, OFF, *MEASURE.values())
#: What the trigger logs right before it ends the task itself.
ENDS_HERE = "the task ends here, in the triggerer"
#: What the triggerer logs when a trigger yields its event (each supported release).
FIRED = "Trigger fired event"
WORKER_START_MARK = "DAG bundles loaded"
EXECUTOR_EVENT = re.compile(
    r"Received executor event with state \w+ for task instance (?:\S+ \(coordinates=)?TaskInstanceKey\("
    r"dag_id='(?P<dag_id>[^']*)', task_id='(?P<task_id>[^']*)', run_id='(?P<run_id>[^']*)', "
    r"try_number=(?P<try_number>\d+)"
)
SUBMITTED = re.compile(r"Submitted script 'work' with args .* as job (\S+)")
#: Where the measurement's table is written (test-output/ is gitignored).
MEASUREMENT_FILE = Path(__file__).resolve().parents[2] / "test-output" / "trigger-end-measurement.md"
#: Jobs per way in the measurement, and the target: the task ends within this long of the event.
MEASURED_JOBS = 5
#: CPU figures of the measurement: a key of cpu_seconds(), and its row's name.
CPU_ROWS = (
    ("workers", "worker (the scheduler's child processes)"),
    ("scheduler", "scheduler, workers included"),
    ("triggerer", "triggerer"),
    ("dag-processor", "dag-processor (parses the DAG file for a trigger-ended success's callback request)"),
    ("api-server", "api-server (the workers' execution API)"),
    ("all", "all components"),
)
END_AFTER_EVENT_TARGET = 2.0
#: When set, the measurement also writes its figures as JSON to this path (benchmarks/trigger_end.py).
RESULTS_JSON_VAR = "TRIGGER_END_RESULTS_JSON"


@pytest.fixture(scope="module")
def trigger_end_dags(dags_parsed) -> None:
    """This module's DAGs are parsed and unpaused."""
    dags_parsed(DAG_IDS)


@pytest.fixture(scope="module")
def first_end(airflow, api, server_view, marks, trigger_end_dags) -> dict[str, float]:
    """
    One job ended in the triggerer before the scenarios, timed. A triggerer's supervisor answers
    a trigger's reads and writes (task state, XCom, Variable) through an in-process execution API
    that it builds on the first such request, and it handles nothing else meanwhile: no events,
    no log lines of other triggers. Here the triggers make no other request (their connection is
    an environment variable), so the first end in the triggerer after it starts pays for that build.
    """
    tag = marks.new_tag("trigger-end-first")
    dag_id = MEASURE[True]
    run_id = api.trigger(dag_id, {"tag": tag, "first_seconds": 2})
    ti = api.wait_state(dag_id, run_id, "run", "success", timeout=120)
    job = server_view.job(api.xcoms(dag_id, run_id, "run")["job_id"])
    records = trigger_records(airflow, dag_id, run_id, 1)
    last_line, ends_here = logged_at(records, f"run 1 of {tag} done"), logged_at(records, ENDS_HERE)
    assert last_line is not None and ends_here is not None, records[-5:]
    return {
        "job_end_to_ti_end": at(ti["end_date"]) - at(job["endedAt"]),
        "sdk_calls": ends_here - last_line,
    }


# -- what the components say ----------------------------------------------------------------------


def executor_events(
    airflow: AirflowDeployment, dag_id: str, run_id: str, task_id: str = "run"
) -> dict[int, int]:
    """``{try number: workloads the executor ran for that try}``, from the scheduler's log."""
    counts: dict[int, int] = {}
    for match in EXECUTOR_EVENT.finditer(airflow.components["scheduler"].log_text()):
        if (match["dag_id"], match["task_id"], match["run_id"]) == (dag_id, task_id, run_id):
            counts[int(match["try_number"])] = counts.get(int(match["try_number"]), 0) + 1
    return counts


def worker_starts(
    airflow: AirflowDeployment, api: AirflowApi, dag_id: str, run_id: str, tries: int = 1
) -> dict[int, int]:
    """
    ``{try number: worker starts}`` of the run task, once the count has settled (the executor's
    event for a worker that ended the task comes a moment after the task's state); checked
    against the task runner's start marks in each try's log.
    """
    last: list[dict[int, int]] = []

    def settled() -> dict[int, int] | None:
        counts = executor_events(airflow, dag_id, run_id)
        last.append(counts)
        return counts if len(last) >= 12 and all(seen == counts for seen in last[-12:]) else None

    counts = wait_for(f"the worker starts of {dag_id}/{run_id} to settle", settled, timeout=60, interval=0.5)
    marks = {n: api.task_log(dag_id, run_id, "run", n).count(WORKER_START_MARK) for n in range(1, tries + 1)}
    assert marks == counts, f"the task log's worker starts {marks} differ from the executor's {counts}"
    return counts


def trigger_records(
    airflow: AirflowDeployment, dag_id: str, run_id: str, try_number: int
) -> list[dict[str, Any]]:
    """The JSON records of the trigger logs of one try."""
    records = []
    for text in airflow.trigger_logs(dag_id, run_id, "run", try_number).values():
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


def logged_at(records: list[dict[str, Any]], text: str) -> float | None:
    """When the first record whose message contains ``text`` was written."""
    for record in records:
        if text in str(record.get("event", "")):
            return at(record["timestamp"])
    return None


def job_records(api: AirflowApi, run_id: str) -> list[str]:
    """The job-record Variables (see task/ownership.py) of one DAG run."""
    variables = api.request("GET", "/api/v2/variables", params={"limit": 1000})["variables"]
    return [v["key"] for v in variables if v["key"].startswith(VARIABLE_PREFIX) and run_id in v["key"]]


def expected_output(tag: str, pid: int, seconds: int, lines: int, code: int = 0, run: int = 1) -> list[str]:
    """The stdout lines of one run of the work script (see tests/e2e/observe.py)."""
    return [
        f"run {run} of {tag} (pid {pid}): working {seconds} s, then exit {code}",
        *(f"line {k} of {lines} of {tag}" for k in range(1, lines + 1)),
        f"run {run} of {tag} done",
    ]


def assert_logged_once(log: str, stdout: list[str], stderr: list[str]) -> None:
    """Each line of the script's output is in the try's log exactly once, and nothing else is."""
    for stream, lines in (("stdout", stdout), ("stderr", stderr)):
        for line in lines:
            assert log.count(f"[{stream}] {line}") == 1, (stream, line, log[-4000:])
        logged = [entry for entry in log.splitlines() if entry.startswith(f"[{stream}] ")]
        assert len(logged) == len(lines), (stream, logged)


def shape(value: dict[str, Any]) -> dict[str, str]:
    return {key: type(item).__name__ for key, item in value.items()}


def trigger_both(api: AirflowApi, marks: Any, conf: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """The same job through ``e2e_trigger_end`` and ``e2e_trigger_end_off``: ``{dag_id: (tag, run_id)}``."""
    runs = {}
    for dag_id in (ON, OFF):
        tag = marks.new_tag(dag_id.replace("_", "-"))
        runs[dag_id] = (tag, api.trigger(dag_id, {"tag": tag, **conf}))
    return runs


# -- scenarios ------------------------------------------------------------------------------------


def test_a_job_that_succeeds_ends_its_task_in_the_triggerer_with_the_workers_result(
    airflow, api, server_view, marks, first_end
):
    seconds, lines = 6, 4
    runs = trigger_both(api, marks, {"first_seconds": seconds, "lines": lines})
    for dag_id, (_, run_id) in runs.items():
        api.wait_state(dag_id, run_id, "run", "deferred", timeout=90)
        # The job record exists while the job runs (so that its absence later means something).
        assert job_records(api, run_id), (dag_id, "no job record while deferred")

    results: dict[str, dict[str, Any]] = {}
    for dag_id, (tag, run_id) in runs.items():
        ti = api.wait_state(dag_id, run_id, "run", "success", timeout=90)
        assert ti["try_number"] == 1, (dag_id, ti)
        api.wait_run_state(dag_id, run_id, "success", timeout=90)
        (pid,) = marks.runs(tag)
        xcoms = api.xcoms(dag_id, run_id, "run")
        result = xcoms["return_value"]
        job = server_view.job(xcoms["job_id"])
        assert (job["status"], job["code"]) == ("succeeded", 0), job
        stdout = expected_output(tag, pid, seconds, lines)
        stderr = [f"run 1 of {tag}: a line on stderr"]
        # The return value a worker pushes: the job, its whole output, and result None.
        assert result["job_id"] == xcoms["job_id"] and result["status"] == "succeeded", result
        assert (result["exit_code"], result["result"]) == (0, None), result
        assert result["stdout"] == "".join(f"{line}\n" for line in stdout), result
        assert result["stderr"] == "".join(f"{line}\n" for line in stderr), result
        assert at(result["ended_at"]) == at(job["endedAt"]), (result, job)
        # The downstream task got it through XCom, as a dict.
        assert api.xcoms(dag_id, run_id, "consume")["return_value"] == {"type": "dict", "value": result}
        # Each line once in the try's log (the trigger's log is shown with the try).
        assert_logged_once(api.task_log(dag_id, run_id, "run", 1), stdout, stderr)
        assert job_records(api, run_id) == [], dag_id
        results[dag_id] = {"xcoms": xcoms, "starts": worker_starts(airflow, api, dag_id, run_id)}

    on, off = results[ON], results[OFF]
    assert shape(on["xcoms"]["return_value"]) == shape(off["xcoms"]["return_value"])
    assert set(on["xcoms"]) == set(off["xcoms"])  # the same XCom keys either way
    # Who ended the task: the trigger with the flag (once), a second worker without it.
    on_log = "\n".join(airflow.trigger_logs(ON, runs[ON][1], "run", 1).values())
    off_log = "\n".join(airflow.trigger_logs(OFF, runs[OFF][1], "run", 1).values())
    assert on_log.count(ENDS_HERE) == 1 and ENDS_HERE not in off_log, on_log[-3000:]
    assert (on["starts"], off["starts"]) == ({1: 1}, {1: 2})


def test_a_skipped_job_ends_its_task_in_the_triggerer(airflow, api, marks, first_end):
    seconds, lines = 3, 2
    runs = trigger_both(api, marks, {"first_seconds": seconds, "first_exit": 3, "lines": lines})
    starts = {}
    for dag_id, (tag, run_id) in runs.items():
        ti = api.wait_state(dag_id, run_id, "run", "skipped", timeout=90)
        assert ti["try_number"] == 1, (dag_id, ti)
        api.wait_state(dag_id, run_id, "consume", "skipped", timeout=60)
        (pid,) = marks.runs(tag)
        log = api.task_log(dag_id, run_id, "run", 1)
        # The trigger logs the reason; a worker's skip carries it in a field the log text omits.
        reason = f"exited with code 3, which is in skip_on_exit_code: skipping; {ENDS_HERE}"
        assert (reason in log) == (dag_id == ON), log[-3000:]
        stdout = expected_output(tag, pid, seconds, lines, code=3)
        assert_logged_once(log, stdout, [f"run 1 of {tag}: a line on stderr"])
        assert "return_value" not in api.xcoms(dag_id, run_id, "run")
        assert job_records(api, run_id) == [], dag_id
        starts[dag_id] = worker_starts(airflow, api, dag_id, run_id)
    assert starts == {ON: {1: 1}, OFF: {1: 2}}


def test_a_failed_job_falls_back_to_the_worker_and_its_retry(airflow, api, server_view, marks, first_end):
    seconds, lines = 2, 2
    tag = marks.new_tag("trigger-end-fails")
    conf = {"tag": tag, "first_seconds": seconds, "first_exit": 1, "later_seconds": seconds}
    run_id = api.trigger(ON, {**conf, "later_exit": 1, "lines": lines})
    seen: list[str] = []
    ti = api.wait_state(ON, run_id, "run", "failed", seen=seen, timeout=180)
    assert ti["try_number"] == 2, (ti, seen)
    assert "up_for_retry" in seen, seen
    api.wait_run_state(ON, run_id, "failed", timeout=60)
    assert api.task_instance(ON, run_id, "consume")["state"] == "upstream_failed"

    pids = marks.runs(tag)
    assert len(pids) == 2, "one job per try"
    for try_number, pid in enumerate(pids, start=1):
        log = api.task_log(ON, run_id, "run", try_number)
        (job_id,) = SUBMITTED.findall(log)
        job = server_view.job(job_id)
        assert (job["status"], job["code"]) == ("failed", 1), job
        # The worker's failure message, and the output logged once (by the trigger).
        assert f"script 'work' (job {job_id}) failed with exit code 1" in log, log[-3000:]
        stdout = expected_output(tag, pid, seconds, lines, code=1, run=try_number)
        assert_logged_once(log, stdout, [f"run {try_number} of {tag}: a line on stderr"])
        trigger_log = "\n".join(airflow.trigger_logs(ON, run_id, "run", try_number).values())
        assert FIRED in trigger_log and ENDS_HERE not in trigger_log, trigger_log[-3000:]
    assert job_records(api, run_id) == []
    assert worker_starts(airflow, api, ON, run_id, tries=2) == {1: 2, 2: 2}


# -- measurement ----------------------------------------------------------------------------------


def _cpu_ticks(pid: int) -> tuple[int, int]:
    """``(ppid, utime + stime + cutime + cstime)`` of a live process, in clock ticks."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[1]), sum(int(value) for value in fields[11:15])


def cpu_seconds(airflow: AirflowDeployment) -> dict[str, float]:
    """
    CPU seconds used so far by each component's processes, and by the workers alone: the
    scheduler's child processes (the LocalExecutor's workers, each supervising the task processes
    it starts and reaps). A live process's own times plus those of the children it reaped count
    every process of the tree once, dead or alive.
    """
    tick = os.sysconf("SC_CLK_TCK")
    used: dict[str, float] = {}
    for name, component in airflow.components.items():
        total = 0
        for pid in airflow.component_pids(name):
            try:
                ppid, ticks = _cpu_ticks(pid)
            except (OSError, ValueError):
                continue
            total += ticks
            if name == "scheduler" and component.process is not None and ppid == component.process.pid:
                used["workers"] = used.get("workers", 0.0) + ticks / tick
        used[name] = total / tick
    used["all"] = sum(used[name] for name in airflow.components)
    return used


def measure_batch(airflow, api, server_view, marks, end_in_triggerer: bool) -> dict[str, Any]:
    """Run MEASURED_JOBS deferred jobs through one DAG at once (job lengths staggered, so that
    their ends do not queue for the same worker slots); time each from the job's end."""
    dag_id = MEASURE[end_in_triggerer]
    cpu_before = cpu_seconds(airflow)
    runs = []
    for i in range(MEASURED_JOBS):
        tag = marks.new_tag(f"measure-{'on' if end_in_triggerer else 'off'}")
        runs.append((tag, api.trigger(dag_id, {"tag": tag, "first_seconds": 4 + 2 * i, "lines": 3})))
    jobs = []
    for tag, run_id in runs:
        ti = api.wait_state(dag_id, run_id, "run", "success", timeout=180)
        api.wait_run_state(dag_id, run_id, "success", timeout=60)
        job = server_view.job(api.xcoms(dag_id, run_id, "run")["job_id"])
        records = trigger_records(airflow, dag_id, run_id, 1)
        fired, ends_here = logged_at(records, FIRED), logged_at(records, ENDS_HERE)
        last_line = logged_at(records, f"run 1 of {tag} done")
        assert fired is not None and last_line is not None, records[-5:]
        assert (ends_here is not None) == end_in_triggerer, records[-5:]
        job_end, ti_end = at(job["endedAt"]), at(ti["end_date"])
        jobs.append(
            {
                "run_id": run_id,
                "starts": worker_starts(airflow, api, dag_id, run_id)[1],
                "job_end_to_event": fired - job_end,
                "event_to_ti_end": ti_end - fired,
                "ends_here_to_ti_end": None if ends_here is None else ti_end - ends_here,
                "sdk_calls": None if ends_here is None else ends_here - last_line,
                "job_end_to_ti_end": ti_end - job_end,
            }
        )
    cpu_after = cpu_seconds(airflow)
    return {"jobs": jobs, "cpu": {name: cpu_after[name] - cpu_before.get(name, 0.0) for name in cpu_after}}


def _stats(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} / {max(values):.2f}"


def comparison_table(batches: dict[bool, dict[str, Any]]) -> str:
    """The markdown table of both ways side by side: end_in_triggerer False (before) and True (after)."""
    rows = [
        ("worker starts per job", lambda b: " ".join(str(j["starts"]) for j in b["jobs"])),
        *(
            (f"{what} CPU s per job", lambda b, name=name: f"{b['cpu'][name] / len(b['jobs']):.2f}")
            for name, what in CPU_ROWS
        ),
        (
            "job end -> trigger event, s (median / max)",
            lambda b: _stats([j["job_end_to_event"] for j in b["jobs"]]),
        ),
        (
            "trigger event -> task end, s (median / max)",
            lambda b: _stats([j["event_to_ti_end"] for j in b["jobs"]]),
        ),
        (
            "job end -> task end, s (median / max)",
            lambda b: _stats([j["job_end_to_ti_end"] for j in b["jobs"]]),
        ),
    ]
    return "\n".join(
        [
            "| | end_in_triggerer=False (before) | end_in_triggerer=True (after) |",
            "|---|---|---|",
            *(f"| {name} | {cell(batches[False])} | {cell(batches[True])} |" for name, cell in rows),
        ]
    )


def render_table(batches: dict[bool, dict[str, Any]], first: dict[str, float], version: str) -> str:
    lines = [
        f"Airflow {version}, {MEASURED_JOBS} deferred jobs each way (4-12 s, poll_interval=1), LocalExecutor, SQLite",
        "",
        comparison_table(batches),
        "",
        (
            "per job (after): job end -> event / event -> task end / 'ends here' line -> task end /"
            " the end's SDK calls (last output line -> 'ends here'), s"
        ),
        *(
            f"  {j['job_end_to_event']:.2f} / {j['event_to_ti_end']:.2f} / {j['ends_here_to_ti_end']:.2f}"
            f" / {j['sdk_calls']:.2f}"
            for j in batches[True]["jobs"]
        ),
        "",
        (
            f"first end in the triggerer of this module (before the above): job end -> task end "
            f"{first['job_end_to_ti_end']:.2f} s, its SDK calls {first['sdk_calls']:.2f} s"
        ),
    ]
    return "\n".join(lines)


@pytest.mark.skipif(
    not os.environ.get(RESULTS_JSON_VAR),
    reason="a measurement with timing targets: `make bench` runs it (benchmarks/trigger_end.py)",
)
def test_measure_worker_starts_and_end_latency_with_and_without_end_in_triggerer(
    airflow, api, server_view, marks, first_end
):
    import airflow as airflow_package

    batches = {flag: measure_batch(airflow, api, server_view, marks, flag) for flag in (False, True)}
    table = render_table(batches, first_end, airflow_package.__version__)
    print("\n" + table)
    MEASUREMENT_FILE.parent.mkdir(parents=True, exist_ok=True)
    with MEASUREMENT_FILE.open("a", encoding="utf-8") as handle:
        handle.write(f"## {time.strftime('%Y-%m-%d %H:%M:%S')}\n\n{table}\n\n")
    if os.environ.get(RESULTS_JSON_VAR):
        results = {
            "airflow_version": airflow_package.__version__,
            "jobs_per_way": MEASURED_JOBS,
            "end_after_event_target": END_AFTER_EVENT_TARGET,
            "before": batches[False],
            "after": batches[True],
            "first_end": first_end,
            "table": comparison_table(batches),
        }
        Path(os.environ[RESULTS_JSON_VAR]).write_text(json.dumps(results, indent=1), encoding="utf-8")

    # Before: two worker starts per deferred job; after: one.
    assert [j["starts"] for j in batches[False]["jobs"]] == [2] * MEASURED_JOBS, table
    assert [j["starts"] for j in batches[True]["jobs"]] == [1] * MEASURED_JOBS, table
    # After: the task ends within 2 s of the trigger's event.
    assert max(j["event_to_ti_end"] for j in batches[True]["jobs"]) <= END_AFTER_EVENT_TARGET, table
