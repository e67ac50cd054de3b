"""
Triggerer capacity: N deferred task instances in one real ``airflow triggerer`` process (its
supervisor and its trigger-runner subprocess), on SQLite, with no scheduler and no worker.

The metadata database (one per run, in a scratch ``AIRFLOW_HOME``) holds one DAG per kind of
trigger, parsed from a scratch DAG file: an upstream task and the kind's task mapped over its
result. Each trial (one kind, one N) has one DAG run of it, created through Airflow's own models
(``SerializedDAG.create_dagrun``), whose mapped task is expanded into N + 1 task instances as the
scheduler does it (``TaskMap.expand_mapped_task``). A child process defers them the way a worker
does: it asks the task's operator to defer (the run operator's ``_defer``, the sensors'
``execute``), catches the ``TaskDeferred``, writes a ``Trigger`` row built from the trigger's
``serialize()`` and sets the task instance DEFERRED with the deferral's method, kwargs and timeout.

The kinds, on the same jobs:

* ``ScriptRunnerJobTrigger`` as the run operator defers it (``stream_logs=True``, the default):
  jobs of :mod:`benchmarks.mock_jobs_server` that write a line to stdout every
  :attr:`Timing.line_every` seconds and end at known moments; and, for reference, as it defers it
  with ``stream_logs=False``;
* Airflow's ``DateTimeTrigger`` (what ``DateTimeSensorAsync`` defers with), firing at the same
  moments: the floor, a trigger that only sleeps;
* ``HttpSensorTrigger`` (what ``HttpSensor(deferrable=True)`` defers with) on the same job URLs,
  answered 404 until the job ends.

Per trial, with a fresh triggerer: one warm-up task instance (the last map index) defers on a job
that ends 3 s later, so that the trigger's code is imported and has run once; then the triggerer's
idle CPU, RSS and open file descriptors are read, and the N others defer at once. Their jobs start
then and end evenly spread over :attr:`Timing.end_spread` seconds. Every trigger writes its
per-task trigger log file when it starts, which is how the benchmark sees it running; the live
window runs from then (or, when the triggerer cannot start them all in time, for the planned
:attr:`Timing.window` seconds) to :attr:`Timing.pre_end` seconds before the first job's end. In it
the whole triggerer's CPU (supervisor and runner, from psutil), its RSS and its open file
descriptors are sampled every second, and with ``SCRIPTRUNNER_BENCH_PYSPY`` naming a py-spy binary
both processes are profiled. After it the benchmark waits until every task instance has left
DEFERRED, or :attr:`Timing.drain` seconds after the last job's end and a poll. Detection latency is
the moment Airflow wrote the event into the database (``task_instance.scheduled_dttm``, set by
``Trigger.submit_event``) minus the job's end; it is split into the trigger's own detection (the
"Trigger fired event" line of the task's trigger log) and Airflow's delivery of the event to the
database. For the run operator's trigger, every ``[stdout]`` line in each task's trigger log file
is checked against the lines its job wrote (none lost, none doubled, none from another job); a
line missing there is looked for in the triggerer's own log. Task instances a trial leaves
deferred are failed and their triggers deleted before the next trial.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import random
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._common import CONN_ENV, HOST, PACKAGE_ROOT, Row, log, percentile, stop_group

SCRIPTRUNNER = "ScriptRunnerJobTrigger"
#: The same trigger as the run operator defers it with ``stream_logs=False`` (no live output).
SCRIPTRUNNER_QUIET = "ScriptRunnerJobTrigger-quiet"
DATETIME = "DateTimeTrigger"
HTTP_SENSOR = "HttpSensorTrigger"
KINDS = (SCRIPTRUNNER, SCRIPTRUNNER_QUIET, DATETIME, HTTP_SENSOR)
OURS = (SCRIPTRUNNER, SCRIPTRUNNER_QUIET)
LABELS = {
    SCRIPTRUNNER: "ScriptRunnerJobTrigger",
    SCRIPTRUNNER_QUIET: "ScriptRunnerJobTrigger, stream_logs=False",
    DATETIME: "DateTimeTrigger",
    HTTP_SENSOR: "HttpSensorTrigger",
}
#: The task each kind's DAG maps, and the operator that defers it.
TASK_IDS = {
    SCRIPTRUNNER: "run_script",
    SCRIPTRUNNER_QUIET: "run_script",
    DATETIME: "wait_until",
    HTTP_SENSOR: "http_sensor",
}
#: The task whose result (one value per task instance) each kind's task is mapped over.
UPSTREAM_TASK_ID = "jobs"
#: (kind, N), in the order they run: the kinds side by side at the default capacity (ours without
#: live output for reference), then ours and the floor at 5,000 (``[triggerer] capacity`` raised).
TRIALS = (
    (SCRIPTRUNNER, 1000),
    (SCRIPTRUNNER_QUIET, 1000),
    (DATETIME, 1000),
    (HTTP_SENSOR, 1000),
    (SCRIPTRUNNER, 5000),
    (DATETIME, 5000),
)
DEFAULT_CAPACITY = 1000
TARGET_COUNT = 1000
LARGE_COUNT = 5000
FLOOR_RATIO_TARGET = 2.0
HTTP_RATIO_TARGET = 0.5
LATENCY_SLACK = 2.0
LARGE_LATENCY_SLACK = 5.0
SR_CONN_ID = "bench_triggerer"
HTTP_CONN_ID = "bench_triggerer_http"
SCRIPT_ID = "bench-live"
#: The page the run operator's trigger reads, ``[stdout] <line>`` in the task's trigger log.
STDOUT_PREFIX = "[stdout] "
FIRED_EVENT = "Trigger fired event"
TRIGGERER_STOP_GRACE = 30.0
#: Starts the lines the deferring child prints for the benchmark (Airflow may log to its stdout).
MARKER = "@@triggerer-capacity@@ "
#: The warm-up task's job ends this long after its deferral; its event must come within the timeout.
WARMUP_SECONDS = 3.0
WARMUP_TIMEOUT = 180.0


@dataclass(frozen=True)
class Timing:
    """The clock of a trial, in seconds."""

    poll: float = 10.0
    #: A job writes a line at its start and every ``line_every`` seconds until it ends.
    line_every: float = 5.0
    #: The live window, with every trigger running: at least this long.
    window: float = 20.0
    #: The live window ends this long before the first job's end: in its last 20 s a
    #: DateTimeTrigger sleeps 1 s at a time, and logs each one.
    pre_end: float = 21.0
    #: Jobs end evenly spread over this many seconds.
    end_spread: float = 10.0
    #: The idle triggerer (warm-up done, nothing deferred) is measured this long.
    idle: float = 5.0
    #: The triggerer picks up at most ``[triggerer] max_trigger_to_select_per_loop`` (50) new
    #: triggers per loop: time allowed per 50 before the window is cut short.
    ramp_per_50: float = 0.5
    ramp_base: float = 10.0
    #: After the last job's end: how long the benchmark waits for the last event.
    drain: float = 30.0

    def ramp_allowance(self, count: int) -> float:
        return self.ramp_base + self.ramp_per_50 * count / 50


# --------------------------------------------------------------------------------------------
# The benchmark's DAGs (parsed in the setup child from a scratch DAG file that calls this)


def dag_id(kind: str) -> str:
    return f"triggerer_capacity__{kind}"


def run_name(count: int) -> str:
    """The DAG run of the trial at ``count``."""
    return f"capacity_{count}"


def run_script_args(kind: str, poll: float) -> dict[str, Any]:
    """The run operator's arguments in the benchmark DAG, and when the benchmark defers it."""
    return {
        "script_id": SCRIPT_ID,
        "scriptrunner_conn_id": SR_CONN_ID,
        "deferrable": True,
        "poll_interval": poll,
        # The default (True) unless the kind says otherwise.
        **({"stream_logs": False} if kind == SCRIPTRUNNER_QUIET else {}),
    }


def http_sensor_args(poll: float) -> dict[str, Any]:
    return {
        "http_conn_id": HTTP_CONN_ID,
        "method": "GET",
        "headers": {"X-Absent-While-Running": "1"},
        "deferrable": True,
        "poke_interval": poll,
    }


def benchmark_dags(kinds: list[str], poll: float) -> dict[str, Any]:
    """
    One DAG per kind: an upstream task whose result the kind's task is mapped over (dynamic task
    mapping: the serialized DAG stays small whatever N is, as in a real fan-out).
    """
    from airflow.sdk import DAG, task

    dags = {}
    for kind in kinds:
        with DAG(
            dag_id(kind),
            schedule=None,
            start_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc),
            catchup=False,
        ) as dag:

            @task(task_id=UPSTREAM_TASK_ID)
            def jobs() -> list[Any]:
                raise NotImplementedError("the benchmark records this task's result itself")

            if kind in OURS:
                from airflow_provider_scriptrunner.operators.scriptrunner import (
                    ScriptRunnerRunScriptOperator,
                )

                ScriptRunnerRunScriptOperator.partial(
                    task_id=TASK_IDS[kind], **run_script_args(kind, poll)
                ).expand(args=jobs())
            elif kind == DATETIME:
                from airflow.providers.standard.sensors.date_time import DateTimeSensorAsync

                DateTimeSensorAsync.partial(task_id=TASK_IDS[kind]).expand(target_time=jobs())
            else:
                from airflow.providers.http.sensors.http import HttpSensor

                HttpSensor.partial(task_id=TASK_IDS[kind], **http_sensor_args(poll)).expand(endpoint=jobs())
        dags[dag.dag_id] = dag
    return dags


DAG_FILE = """\
# The triggerer-capacity benchmark's DAGs (benchmarks/triggerer_capacity.py); airflow DAG file.
import json
import os

from benchmarks.triggerer_capacity import benchmark_dags

globals().update(benchmark_dags(json.loads(os.environ["{var}"]), float(os.environ["{poll_var}"])))
"""
KINDS_VAR = "SCRIPTRUNNER_BENCH_KINDS"
POLL_VAR = "SCRIPTRUNNER_BENCH_POLL"


# --------------------------------------------------------------------------------------------
# Jobs


@dataclass(frozen=True)
class Job:
    """One measured task instance's job: its id (what the mock server serves) and its end."""

    map_index: int
    job_id: str
    end: float


def plan_jobs(count: int, start: float, first_end: float, timing: Timing, seed: int) -> list[Job]:
    """Jobs that start at ``start`` and end evenly spread from ``first_end``, in shuffled order."""
    ends = [first_end + timing.end_spread * i / max(1, count - 1) for i in range(count)]
    random.Random(seed).shuffle(ends)
    every = round(timing.line_every * 1000)
    return [
        Job(i, f"live_{round(start * 1000)}_{round(end * 1000)}_{every}_{i}", round(end * 1000) / 1000)
        for i, end in enumerate(ends)
    ]


def job_lines(job: Job) -> list[str]:
    """The lines ``job`` writes, as the mock server writes them."""
    from benchmarks.mock_jobs_server import LivePlan

    plan = LivePlan.parse(job.job_id)
    assert plan is not None
    return [plan.line(n).rstrip("\n") for n in range(plan.total_lines)]


# --------------------------------------------------------------------------------------------
# Children: database setup and deferral (Airflow's models, in the scratch AIRFLOW_HOME)


def _child_setup(options: argparse.Namespace) -> None:
    """Parse the DAG file into the database, and create each trial's DAG run and mapped tasks."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.taskmap import TaskMap
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, TaskInstanceState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType

    with create_session() as session:
        DagBundlesManager().sync_bundles_to_db(session=session)
    bag = DagBag(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    if bag.import_errors:
        raise RuntimeError(f"benchmark DAG file failed to import: {bag.import_errors}")
    sync_bag_to_db(bag, "dags-folder", None)
    for kind, count in json.loads(options.trials):
        dag = SerializedDagModel.get_dag(dag_id(kind))
        assert dag is not None
        with create_session() as session:
            run = dag.create_dagrun(
                run_id=run_name(count),
                run_after=datetime.datetime.now(datetime.timezone.utc),
                run_type=DagRunType.MANUAL,
                triggered_by=DagRunTriggeredByType.TEST,
                state=DagRunState.RUNNING,
                session=session,
            )
            # What the scheduler does once the upstream task has pushed N + 1 values: record the
            # map's length, then expand the mapped task into N + 1 task instances.
            upstream = run.get_task_instance(UPSTREAM_TASK_ID, session=session)
            assert isinstance(upstream, TaskInstance)
            upstream.state = TaskInstanceState.SUCCESS
            session.add(TaskMap.from_task_instance_xcom(upstream, range(count + 1)))
            session.flush()
            TaskMap.expand_mapped_task(dag.get_task(TASK_IDS[kind]), run.run_id, session=session)
    print(json.dumps({"dags": sorted(bag.dags)}), flush=True)


class _DeferringTI:
    """The task instance a deferring operator sees: its ids, its try and an XCom push."""

    def __init__(self, dag: str, run_id: str, task_id: str, map_index: int) -> None:
        self.dag_id, self.run_id, self.task_id, self.map_index = dag, run_id, task_id, map_index
        self.try_number = 1
        self.max_tries = 0
        self.start_date = None
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


def _deferral(kind: str, poll: float, ti: _DeferringTI, job_id: str, end: float) -> Any:
    """The ``TaskDeferred`` the kind's operator raises for ``job_id`` (ending at ``end``)."""
    from airflow.sdk.exceptions import TaskDeferred

    context: dict[str, Any] = {"ti": ti}
    try:
        if kind in OURS:
            from airflow_provider_scriptrunner.operators.scriptrunner import (
                ScriptRunnerRunScriptOperator,
            )
            from airflow_provider_scriptrunner.task.limits import IdleWatch

            # The run operator after its submit: it follows the job from the triggerer.
            op = ScriptRunnerRunScriptOperator(task_id=ti.task_id, **run_script_args(kind, poll))
            op._defer(context, job_id, op._deadline(context), IdleWatch(op.idle_timeout))
        elif kind == DATETIME:
            from airflow.providers.standard.sensors.date_time import DateTimeSensorAsync

            moment = datetime.datetime.fromtimestamp(end, datetime.timezone.utc)
            DateTimeSensorAsync(task_id=ti.task_id, target_time=moment).execute(context)
        else:
            from airflow.providers.http.sensors.http import HttpSensor

            # Its first poke happens here, in the "worker", as in a real task: 404 while running.
            HttpSensor(task_id=ti.task_id, endpoint=f"jobs/{job_id}", **http_sensor_args(poll)).execute(
                context
            )
    except TaskDeferred as deferred:
        return deferred
    raise RuntimeError(f"{kind}'s operator did not defer for job {job_id}")


def _defer(options: argparse.Namespace, jobs: list[Job]) -> None:
    """Set the task instances of ``jobs`` DEFERRED, each with its Trigger row, in one transaction."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.trigger import Trigger
    from airflow.sdk.serde import serialize
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    dag, run = dag_id(options.kind), run_name(options.count)
    task_id = TASK_IDS[options.kind]
    deferrals = {
        job.map_index: _deferral(
            options.kind,
            options.poll,
            _DeferringTI(dag, run, task_id, job.map_index),
            job.job_id,
            job.end,
        )
        for job in jobs
    }
    now = datetime.datetime.now(datetime.timezone.utc)
    with create_session() as session:
        tis = session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == dag,
                TaskInstance.run_id == run,
                TaskInstance.task_id == task_id,
                TaskInstance.map_index.in_(list(deferrals)),
            )
        ).all()
        if len(tis) != len(deferrals):
            raise RuntimeError(f"found {len(tis)} of {len(deferrals)} task instances of {dag}")
        triggers = {}
        for ti in tis:
            classpath, kwargs = deferrals[ti.map_index].trigger.serialize()
            triggers[ti.map_index] = Trigger(classpath=classpath, kwargs=kwargs, created_date=now)
        session.add_all(triggers.values())
        session.flush()
        for ti in tis:
            deferred = deferrals[ti.map_index]
            ti.try_number = 1
            ti.start_date = now
            ti.state = TaskInstanceState.DEFERRED
            ti.trigger_id = triggers[ti.map_index].id
            ti.next_method = deferred.method_name
            ti.next_kwargs = serialize(deferred.kwargs or {})
            ti.trigger_timeout = None if deferred.timeout is None else now + deferred.timeout


def _child_defer(options: argparse.Namespace) -> None:
    """Defer the warm-up task instance now; the N others when the parent sends their jobs' file."""
    now = time.time()
    every = round(options.line_every * 1000)
    end = now + options.warmup_seconds
    warmup = Job(options.count, f"live_{round(now * 1000)}_{round(end * 1000)}_{every}_{options.count}", end)
    _defer(options, [warmup])
    print(f"{MARKER}{json.dumps({'deferred_at': time.time()})}", flush=True)
    line = sys.stdin.readline().strip()
    if not line:
        return
    jobs = [Job(**job) for job in json.loads(Path(line).read_text(encoding="utf-8"))]
    _defer(options, jobs)
    print(f"{MARKER}{json.dumps({'deferred_at': time.time()})}", flush=True)
    if sys.stdin.readline().strip() == "clear":
        print(f"{MARKER}{json.dumps({'cleared': _clear(options)})}", flush=True)


def _clear(options: argparse.Namespace) -> int:
    """
    Fail the trial's task instances still deferred (the triggerer is stopped) and delete their
    triggers, so that the next trial's triggerer does not take them over.
    """
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.trigger import Trigger
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    with create_session() as session:
        left = session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == dag_id(options.kind),
                TaskInstance.run_id == run_name(options.count),
                TaskInstance.state == TaskInstanceState.DEFERRED,
            )
        ).all()
        for ti in left:
            ti.state = TaskInstanceState.FAILED
            ti.trigger_id = None
        session.flush()
        Trigger.clean_unused(session=session)
    return len(left)


def _read_marker(child: subprocess.Popen[str], what: str) -> dict[str, Any]:
    """The next marked line of the deferring child (Airflow may log to its stdout before it)."""
    assert child.stdout is not None
    for line in child.stdout:
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER) :])
    raise RuntimeError(f"{what} failed (status {child.wait()}); see its stderr in the scratch home")


# --------------------------------------------------------------------------------------------
# The parent: processes


def airflow_env(home: Path, port: int, capacity: int | None = None) -> dict[str, str]:
    """Environment of every Airflow process of the benchmark: its own home, DAGs and connections."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
        PYTHONPATH=os.pathsep.join(filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")])),
    )
    for conn_id, conn_type in ((SR_CONN_ID, "scriptrunner"), (HTTP_CONN_ID, "http")):
        value = {"conn_type": conn_type, "host": HOST, "port": port, "schema": "http"}
        env[CONN_ENV.format(conn_id.upper())] = json.dumps(value)
    if capacity is not None:
        env["AIRFLOW__TRIGGERER__CAPACITY"] = str(capacity)
    return env


def _child_command(mode: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.triggerer_capacity", "--child", mode, *args]


def setup_database(home: Path, port: int, trials: list[tuple[str, int]], timing: Timing) -> None:
    """Create the scratch metadata database, the benchmark's DAGs and one DAG run of each."""
    from airflow_provider_scriptrunner.testing.dag_runner import migrate

    (home / "dags").mkdir(parents=True, exist_ok=True)
    (home / "dags" / "triggerer_capacity_dags.py").write_text(
        DAG_FILE.format(var=KINDS_VAR, poll_var=POLL_VAR), encoding="utf-8"
    )
    env = airflow_env(home, port)
    migrate(env, timeout=300)
    env[KINDS_VAR] = json.dumps(sorted({kind for kind, _ in trials}))
    env[POLL_VAR] = str(timing.poll)
    done = subprocess.run(
        _child_command("setup", "--trials", json.dumps(trials)),
        cwd=PACKAGE_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        start_new_session=True,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"setting up the benchmark DAGs failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )


@contextlib.contextmanager
def triggerer(home: Path, env: dict[str, str], name: str) -> Iterator[subprocess.Popen[Any]]:
    """``airflow triggerer`` (no log server) in its own process group; always stopped."""
    output = (home / f"{name}.out").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "airflow", "triggerer", "--skip-serve-logs"],
        cwd=home,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        stop_group(process, TRIGGERER_STOP_GRACE)
        output.close()


# --------------------------------------------------------------------------------------------
# The parent: measurements


@dataclass
class Sample:
    at: float
    cpu: float  # CPU seconds of the whole triggerer (every process of its group)
    cpu_supervisor: float
    rss: int  # bytes, summed over the group
    fds: dict[str, int]  # open file descriptors: supervisor, runner
    server_cpu: float


class Sampler:
    """Samples the triggerer's process group every ``interval`` seconds in a thread."""

    def __init__(self, pid: int, server_pid: int, interval: float = 1.0) -> None:
        import psutil

        self.main = psutil.Process(pid)
        self.server_pid = server_pid
        self.interval = interval
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="triggerer-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def take(self) -> Sample:
        import psutil

        from benchmarks.fan_in import process_cpu

        procs = [self.main, *self.main.children(recursive=True)]
        cpu = rss = 0.0
        supervisor = 0.0
        fds = {"supervisor": 0, "runner": 0}
        for proc in procs:
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    used = times.user + times.system
                    cpu += used
                    rss += proc.memory_info().rss
                    role = "supervisor" if proc.pid == self.main.pid else "runner"
                    fds[role] = max(fds[role], proc.num_fds())
                    if role == "supervisor":
                        supervisor = used
            except psutil.NoSuchProcess:
                continue
        return Sample(time.time(), cpu, supervisor, int(rss), fds, process_cpu(self.server_pid))

    def _loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                self.samples.append(self.take())
            self._stop.wait(self.interval)


#: Path of a py-spy binary: each trial then profiles the supervisor and the runner over its live
#: window (``py-spy record``, sampling 50 times a second), and the summary joins the details.
PYSPY_VAR = "SCRIPTRUNNER_BENCH_PYSPY"
PROFILE_RATE = 50


@contextlib.contextmanager
def profiling(prefix: Path, pid: int, seconds: float) -> Iterator[dict[str, Any]]:
    """Profile the triggerer's processes for ``seconds`` when :data:`PYSPY_VAR` names py-spy."""
    import psutil

    profile: dict[str, Any] = {}
    pyspy = os.environ.get(PYSPY_VAR)
    if not pyspy or seconds < 1:
        yield profile
        return
    main = psutil.Process(pid)
    targets = {"supervisor": pid}
    for child in main.children():
        targets["runner"] = child.pid
    recorders = {
        role: subprocess.Popen(
            [pyspy, "record", "--pid", str(target), "--duration", str(int(seconds)), "--rate",
             str(PROFILE_RATE), "--format", "raw", "--nonblocking", "--output", f"{prefix}-{role}.txt"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        for role, target in targets.items()
    }  # fmt: skip
    try:
        yield profile
    finally:
        for role, recorder in recorders.items():
            try:
                recorder.wait(30)
            except subprocess.TimeoutExpired:
                stop_group(recorder, 5)
            output = Path(f"{prefix}-{role}.txt")
            if output.exists():
                profile[role] = summarize_profile(output.read_text(), int(seconds) * PROFILE_RATE)


def summarize_profile(collapsed: str, possible: int, top: int = 12) -> dict[str, Any]:
    """
    The busiest frames of a py-spy ``raw`` profile (one ``frame;frame;...;frame count`` line per
    stack): the share of the window the process was on CPU, and the frames with the most samples,
    where they ran (self) and below them (inclusive).
    """
    own: dict[str, int] = {}
    below: dict[str, int] = {}
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = stack.split(";")
        own[frames[-1]] = own.get(frames[-1], 0) + samples
        for frame in set(frames):
            below[frame] = below.get(frame, 0) + samples

    def busiest(counts: dict[str, int], skip: tuple[str, ...] = ()) -> list[tuple[str, float]]:
        shares = [(frame, n / total) for frame, n in counts.items() if not any(s in frame for s in skip)]
        return sorted(shares, key=lambda item: -item[1])[:top]

    return {
        "busy": total / possible if possible else 0.0,
        "self": busiest(own) if total else [],
        # Whose code the time is spent under: not the libraries' plumbing, nor the entry points.
        "inclusive": busiest(below, skip=_PLUMBING) if total else [],
    }


#: Frames left out of a profile's inclusive list: in most samples, and they say nothing.
_PLUMBING = (
    "sqlalchemy/", "asyncio/", "<frozen", "threading.py", "concurrent/", "greenback/", "outcome/",
    "airflow/__main__.py", "airflow/cli/", "airflow/utils/", "airflow/jobs/job.py",
    "TriggererJobRunner._execute", "TriggerRunnerSupervisor.run ", "TriggerRunnerSupervisor.start",
    "TriggerRunner.arun", "TriggerRunner.run ", "supervisor.py", "run_in_process",
)  # fmt: skip


def fd_limit(pid: int) -> int:
    """The soft limit of open files of a process (``ulimit -n`` as it started with)."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    return 0


def trigger_logs(home: Path, dag: str, run_id: str, task_id: str) -> dict[int, Path]:
    """The per-task trigger log files of a DAG run's mapped task: {map_index: path}."""
    base = home / "logs" / f"dag_id={dag}" / f"run_id={run_id}" / f"task_id={task_id}"
    found = {}
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(base):
            if entry.name.startswith("map_index="):
                for name in os.listdir(entry.path):
                    if ".log.trigger." in name:
                        found[int(entry.name.split("=", 1)[1])] = Path(entry.path) / name
    return found


def _db(home: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{home / 'airflow.db'}?mode=ro", uri=True, timeout=30)


def ti_states(home: Path, dag: str, run_id: str, task_id: str) -> dict[int, tuple[str | None, float | None]]:
    """{map_index: (state, scheduled_dttm as epoch seconds)} of the mapped task's instances."""
    with contextlib.closing(_db(home)) as db:
        rows = db.execute(
            "SELECT map_index, state, scheduled_dttm FROM task_instance WHERE dag_id = ? AND run_id = ? "
            "AND task_id = ?",
            (dag, run_id, task_id),
        ).fetchall()
    return {index: (state, _epoch(stamp)) for index, state, stamp in rows}


def _epoch(stamp: str | None) -> float | None:
    if not stamp:
        return None
    moment = datetime.datetime.fromisoformat(stamp)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def _until(
    probe: Any, deadline: float, process: subprocess.Popen[Any] | None = None, interval: float = 1.0
) -> float | None:
    """
    The moment ``probe()`` was first true, checked every ``interval`` s; None at ``deadline``, or
    as soon as ``process`` (the triggerer) has exited.
    """
    while True:
        if probe():
            return time.time()
        if time.time() >= deadline or (process is not None and process.poll() is not None):
            return None
        time.sleep(interval)


@dataclass
class LogCheck:
    """What the per-task trigger logs hold: output lines against the jobs' lines, and the events."""

    written: int = 0
    logged: int = 0
    lost: int = 0
    doubled: int = 0
    foreign: int = 0
    #: Of the lost lines, those found in the triggerer's own log instead of the task's.
    in_triggerer_log: int = 0
    fired_at: dict[int, float] = field(default_factory=dict)


#: A script's line as the triggerer's own (console) log shows it.
_TRIGGERER_LOG_LINE = re.compile(r"\[stdout\] (live_\S+ line \d+)")


def read_trigger_logs(
    files: dict[int, Path], jobs: list[Job], check_lines: bool, triggerer_log: str = ""
) -> LogCheck:
    """Check each task's trigger log; lines missing there are looked for in ``triggerer_log``."""
    result = LogCheck()
    elsewhere = set(_TRIGGERER_LOG_LINE.findall(triggerer_log)) if check_lines else set()
    for job in jobs:
        path = files.get(job.map_index)
        seen: list[str] = []
        if path is not None:
            with path.open("rb") as handle:
                for raw in handle:
                    try:
                        record = json.loads(raw)
                    except ValueError:
                        continue
                    event = str(record.get("event", ""))
                    if event.startswith(STDOUT_PREFIX):
                        seen.append(event[len(STDOUT_PREFIX) :])
                    elif event == FIRED_EVENT and job.map_index not in result.fired_at:
                        result.fired_at[job.map_index] = _epoch(record["timestamp"]) or 0.0
        if not check_lines:
            continue
        expected = job_lines(job)
        result.written += len(expected)
        result.logged += len(seen)
        missing = set(expected) - set(seen)
        result.lost += len(missing)
        result.in_triggerer_log += len(missing & elsewhere)
        result.doubled += len(seen) - len(set(seen))
        result.foreign += len(set(seen) - set(expected))
    return result


def _server_json(port: int, path: str) -> dict[str, Any]:
    import urllib.request

    with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=30) as response:
        return json.load(response)


# --------------------------------------------------------------------------------------------
# One trial


def run_trial(
    home: Path,
    server: Any,
    kind: str,
    count: int,
    timing: Timing,
    seed: int = 0,
) -> dict[str, Any]:
    """One kind at one N in a fresh triggerer; returns the trial's measurements (JSON-able)."""
    capacity = None if count <= DEFAULT_CAPACITY else count
    env = airflow_env(home, server.port, capacity)
    dag, run_id, task_id = dag_id(kind), run_name(count), TASK_IDS[kind]
    name = f"{kind}-{count}"
    child_errors = (home / f"{name}-defer.err").open("wb")
    child = subprocess.Popen(
        _child_command(
            "defer", "--kind", kind, "--count", str(count), "--poll", str(timing.poll),
            "--line-every", str(timing.line_every), "--warmup-seconds", str(WARMUP_SECONDS),
        ),
        cwd=PACKAGE_ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=child_errors,
        text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        with triggerer(home, env, name) as process:
            _read_marker(child, f"{name}: deferring the warm-up task")
            warmed_up = _until(
                lambda: ti_states(home, dag, run_id, task_id).get(count, ("deferred", None))[0] != "deferred",
                deadline=time.time() + WARMUP_TIMEOUT,
                process=process,
                interval=0.5,
            )
            if warmed_up is None:
                raise RuntimeError(f"{name}: no event from the warm-up trigger (see {name}.out)")

            with Sampler(process.pid, server.pid) as sampler:
                time.sleep(1.0)
                idle_from = time.time()
                time.sleep(timing.idle)
                idle_to = time.time()
                go = time.time()
                first_end = go + timing.ramp_allowance(count) + timing.window + timing.pre_end
                jobs = plan_jobs(count, go, first_end, timing, seed)
                plan_file = home / f"{name}-jobs.json"
                plan_file.write_text(json.dumps([asdict(job) for job in jobs]), encoding="utf-8")
                child.stdin.write(f"{plan_file}\n")  # type: ignore[union-attr]
                child.stdin.flush()  # type: ignore[union-attr]
                deferred_at = _read_marker(child, f"{name}: deferring the task instances")["deferred_at"]
                window_to = first_end - timing.pre_end
                running_at = _until(
                    lambda: len(trigger_logs(home, dag, run_id, task_id)) > count,
                    deadline=window_to - timing.poll,
                    process=process,
                )
                running_by_window = len(trigger_logs(home, dag, run_id, task_id)) - 1
                # Saturated (not every trigger running in time): the window is the planned one.
                window_from = running_at + 1.0 if running_at is not None else window_to - timing.window
                time.sleep(max(0.0, window_from - time.time()))
                stats_from = _server_json(server.port, "/__stats")
                with profiling(home / name, process.pid, window_to - time.time()) as profile:
                    time.sleep(max(0.0, window_to - time.time()))
                stats_to = _server_json(server.port, "/__stats")
                last_end = max(job.end for job in jobs)
                events_done = (
                    _until(
                        lambda: (
                            not any(
                                state == "deferred"
                                for state, _ in ti_states(home, dag, run_id, task_id).values()
                            )
                        ),
                        deadline=last_end + timing.poll + timing.drain,
                        process=process,
                    )
                    or time.time()
                )
                time.sleep(1.0)
            fd_soft_limit = fd_limit(process.pid) if process.poll() is None else 0
            exited = process.poll()
        states = ti_states(home, dag, run_id, task_id)
        output = home / f"{name}.out"
        logs = read_trigger_logs(
            trigger_logs(home, dag, run_id, task_id),
            jobs,
            check_lines=kind == SCRIPTRUNNER,
            triggerer_log=output.read_text(errors="replace") if output.exists() else "",
        )
        served = _server_json(server.port, "/__jobs")["jobs"] if kind == SCRIPTRUNNER else {}
    finally:
        if child.poll() is None and child.stdin is not None:
            with contextlib.suppress(OSError, RuntimeError):
                child.stdin.write("clear\n")
                child.stdin.flush()
                _read_marker(child, f"{name}: clearing what is left of the trial")
        if child.poll() is None:
            stop_group(child, 5)
        if child.stdout is not None:
            child.stdout.close()
        if child.stdin is not None:
            with contextlib.suppress(OSError):
                child.stdin.close()
        child_errors.close()

    return summarize_trial(
        kind=kind,
        count=count,
        capacity=capacity or DEFAULT_CAPACITY,
        timing=timing,
        jobs=jobs,
        states=states,
        logs=logs,
        served=served,
        samples=sampler.samples,
        marks={
            "idle_from": idle_from,
            "idle_to": idle_to,
            "deferred_at": deferred_at,
            "running_at": running_at if running_at is not None else float("nan"),
            "window_from": window_from,
            "window_to": window_to,
            "first_end": first_end,
            "events_done": events_done,
        },
        requests={key: stats_to[key] - stats_from[key] for key in ("jobRequests", "logRequests")},
        running_by_window=running_by_window,
        profile=profile,
        fd_soft_limit=fd_soft_limit,
        triggerer_errors=_errors(home / f"{name}.out")
        + ([] if exited is None else [f"the triggerer exited with status {exited} before the trial ended"]),
    )


def _errors(path: Path) -> list[str]:
    """The error lines of a triggerer's own log (its output), without their timestamps."""
    with contextlib.suppress(OSError):
        return [
            line.split("]", 1)[-1].strip()
            for line in path.read_text(errors="replace").splitlines()
            if "[error" in line
        ]
    return []


def _delta(samples: list[Sample], attr: str) -> tuple[float, float]:
    """(change of ``attr``, seconds) between the first and last sample."""
    if len(samples) < 2:
        return 0.0, 0.0
    return getattr(samples[-1], attr) - getattr(samples[0], attr), samples[-1].at - samples[0].at


def summarize_trial(
    *,
    kind: str,
    count: int,
    capacity: int,
    timing: Timing,
    jobs: list[Job],
    states: dict[int, tuple[str | None, float | None]],
    logs: LogCheck,
    served: dict[str, Any],
    samples: list[Sample],
    marks: dict[str, float],
    requests: dict[str, int],
    running_by_window: int,
    profile: dict[str, Any],
    fd_soft_limit: int,
    triggerer_errors: list[str],
) -> dict[str, Any]:
    def window(start: float, end: float) -> list[Sample]:
        return [s for s in samples if start <= s.at <= end]

    idle = window(marks["idle_from"], marks["idle_to"])
    live = window(marks["window_from"], marks["window_to"])
    ends = window(marks["first_end"], marks["events_done"])
    idle_cpu, idle_wall = _delta(idle, "cpu")
    live_cpu, live_wall = _delta(live, "cpu")
    live_sup, _ = _delta(live, "cpu_supervisor")
    pre_cpu, pre_wall = _delta(window(marks["window_to"], marks["first_end"]), "cpu")
    ends_cpu, ends_wall = _delta(ends, "cpu")
    server_cpu, _ = _delta(live, "server_cpu")
    latencies, detection, delivery = [], [], []
    missing = 0
    for job in jobs:
        state, at = states.get(job.map_index, (None, None))
        if state == "deferred" or at is None:
            missing += 1
            continue
        latencies.append(at - job.end)
        fired = logs.fired_at.get(job.map_index)
        if fired is not None:
            detection.append(fired - job.end)
            delivery.append(at - fired)
    baseline_rss = idle[-1].rss if idle else 0
    live_rss = max((s.rss for s in live), default=float("nan"))
    polls_per_trigger = live_wall / timing.poll if live_wall else 0.0
    return {
        "kind": kind,
        "count": count,
        "capacity": capacity,
        "window_s": live_wall,
        "cpu_per_wall": live_cpu / live_wall if live_wall else float("nan"),
        "supervisor_share": live_sup / live_cpu if live_cpu else float("nan"),
        "cpu_ms_per_trigger_poll": live_cpu / polls_per_trigger / count * 1000
        if polls_per_trigger
        else float("nan"),
        "runner_ms_per_trigger_poll": (live_cpu - live_sup) / polls_per_trigger / count * 1000
        if polls_per_trigger
        else float("nan"),
        "pre_end_cpu_per_wall": pre_cpu / pre_wall if pre_wall else float("nan"),
        "idle_cpu_per_wall": idle_cpu / idle_wall if idle_wall else float("nan"),
        "ends_cpu_per_wall": ends_cpu / ends_wall if ends_wall else float("nan"),
        "events_s": marks["events_done"] - marks["first_end"],
        "rss_idle_mib": baseline_rss / 2**20,
        "rss_live_mib": live_rss / 2**20,
        "kib_per_trigger": (live_rss - baseline_rss) / 1024 / count,
        "fds_idle": idle[-1].fds if idle else {},
        "fds_live": {role: max((s.fds[role] for s in live), default=0) for role in ("supervisor", "runner")},
        "fd_soft_limit": fd_soft_limit,
        "ramp_s": marks["running_at"] - marks["deferred_at"],
        "running_by_window": running_by_window,
        "profile": profile,
        "poll": timing.poll,
        "polls_per_s": requests["jobRequests"] / live_wall if live_wall else 0.0,
        "log_requests_per_s": requests["logRequests"] / live_wall if live_wall else 0.0,
        "server_cpu_per_wall": server_cpu / live_wall if live_wall else 0.0,
        "events": len(latencies),
        "missing": missing,
        "p50": percentile(latencies, 50) if latencies else float("nan"),
        "p99": percentile(latencies, 99) if latencies else float("nan"),
        "max": max(latencies, default=float("nan")),
        "detect_p99": percentile(detection, 99) if detection else float("nan"),
        "deliver_p50": percentile(delivery, 50) if delivery else float("nan"),
        "deliver_p99": percentile(delivery, 99) if delivery else float("nan"),
        "lines_written": logs.written,
        "lines_logged": logs.logged,
        "lines_lost": logs.lost,
        "lines_doubled": logs.doubled,
        "lines_foreign": logs.foreign,
        "lines_in_triggerer_log": logs.in_triggerer_log,
        "lines_served": sum(job["linesServed"] for job in served.values()),
        "bytes_served_twice": sum(job["bytesServedTwice"] for job in served.values()),
        "triggerer_errors": len(triggerer_errors),
        # A few distinct messages, shortened: what went wrong, for the table's notes.
        "triggerer_error_samples": sorted({error[:110] for error in triggerer_errors})[:3],
    }


# --------------------------------------------------------------------------------------------
# The section


def run(
    workdir: Path, trials: tuple[tuple[str, int], ...] = TRIALS, timing: Timing | None = None
) -> tuple[list[Row], dict[str, Any]]:
    from benchmarks.fan_in import MockServer, ensure_http_provider

    timing = timing or Timing()
    if any(kind == HTTP_SENSOR for kind, _ in trials):
        ensure_http_provider()
    home = workdir / "triggerer-capacity"
    results: dict[tuple[str, int], dict[str, Any]] = {}
    failed: dict[tuple[str, int], str] = {}
    with MockServer(max_seconds=3600) as server:
        log("triggerer capacity: metadata database and DAGs ...")
        setup_database(home, server.port, list(trials), timing)
        for seed, (kind, count) in enumerate(trials):
            log(f"triggerer capacity: {count:,} x {LABELS[kind]} in one airflow triggerer ...")
            try:
                results[(kind, count)] = run_trial(home, server, kind, count, timing, seed)
            except RuntimeError as err:  # the others still run; the table says what failed
                log(f"triggerer capacity: {err}")
                failed[(kind, count)] = str(err)
    return rows(results, timing, failed), {"trials": results, "failed": failed}


def rows(
    results: dict[tuple[str, int], dict[str, Any]],
    timing: Timing,
    failed: dict[tuple[str, int], str] | None = None,
) -> list[Row]:
    name = "Triggerer capacity"
    out: list[Row] = [
        Row(name, f"{count:,} x {LABELS[kind]}: the trial", "failed", "runs", False, why)
        for (kind, count), why in (failed or {}).items()
    ]
    ours = results.get((SCRIPTRUNNER, TARGET_COUNT))
    if ours is not None:
        for other, target in ((DATETIME, FLOOR_RATIO_TARGET), (HTTP_SENSOR, HTTP_RATIO_TARGET)):
            theirs = results.get((other, TARGET_COUNT))
            if theirs is None:
                continue
            ratio = ours["cpu_ms_per_trigger_poll"] / theirs["cpu_ms_per_trigger_poll"]
            runner = ours["runner_ms_per_trigger_poll"] / theirs["runner_ms_per_trigger_poll"]
            label = (
                "DateTimeTrigger (the floor: it only sleeps)"
                if other == DATETIME
                else "HttpSensorTrigger (same endpoints)"
            )
            out.append(
                Row(name, f"CPU per trigger per poll interval of the whole triggerer, {TARGET_COUNT:,} deferred run-script tasks vs {TARGET_COUNT:,} {label}",
                    f"{ratio:.2f}x", f"<= {target:g}x", ratio <= target,
                    f"{ours['cpu_ms_per_trigger_poll']:.3f} ms vs {theirs['cpu_ms_per_trigger_poll']:.3f} ms per {timing.poll:g} s, "
                    f"supervisor {ours['supervisor_share']:.0%} vs {theirs['supervisor_share']:.0%} of it; "
                    f"the trigger-runner process alone: {runner:.2f}x")
            )  # fmt: skip
        quiet, floor = results.get((SCRIPTRUNNER_QUIET, TARGET_COUNT)), results.get((DATETIME, TARGET_COUNT))
        if quiet is not None and floor is not None:
            out.append(
                Row(name, f"the same without live output (stream_logs=False), {TARGET_COUNT:,} deferred run-script tasks, vs the floor",
                    f"{quiet['cpu_ms_per_trigger_poll'] / floor['cpu_ms_per_trigger_poll']:.2f}x", "(reference)", None,
                    f"{quiet['cpu_ms_per_trigger_poll']:.3f} ms per trigger per {timing.poll:g} s, CPU/wall {quiet['cpu_per_wall']:.2f}; "
                    f"job end -> event p99 {quiet['p99']:.2f} s")
            )  # fmt: skip
        out.append(_latency_row(name, ours, timing.poll + LATENCY_SLACK))
        out.append(_lines_row(name, ours))
    large = results.get((SCRIPTRUNNER, LARGE_COUNT))
    if large is not None:
        all_running = large["running_by_window"] >= large["count"]
        keeps_up = large["cpu_per_wall"] < 1 and large["ends_cpu_per_wall"] < 1 and all_running
        out.append(
            Row(name, f"CPU s / wall s of the whole triggerer, {LARGE_COUNT:,} deferred run-script tasks ([triggerer] capacity {large['capacity']:,})",
                f"{large['cpu_per_wall']:.2f} live, {large['ends_cpu_per_wall']:.2f} while the jobs end", "< 1, every trigger running", keeps_up,
                f"{large['running_by_window']:,} of {large['count']:,} triggers running in the live window; supervisor {large['supervisor_share']:.0%} of the CPU; "
                f"{_errors_note(large)}")
        )  # fmt: skip
        out.append(_latency_row(name, large, timing.poll + LARGE_LATENCY_SLACK))
        out.append(_lines_row(name, large))
    floor = results.get((DATETIME, LARGE_COUNT))
    if floor is not None:
        out.append(
            Row(name, f"the floor at {LARGE_COUNT:,}: {LARGE_COUNT:,} DateTimeTriggers, CPU s / wall s and job end -> event p99",
                f"{floor['cpu_per_wall']:.2f} live, {floor['ends_cpu_per_wall']:.2f} while they fire; p99 {floor['p99']:.2f} s", "(reference)", None,
                f"supervisor {floor['supervisor_share']:.0%} of the CPU; {_errors_note(floor)}")
        )  # fmt: skip
    for key in ((SCRIPTRUNNER, TARGET_COUNT), (SCRIPTRUNNER, LARGE_COUNT)):
        s = results.get(key)
        if s is None:
            continue
        out.append(
            Row(name, f"memory and open files of the whole triggerer, {s['count']:,} deferred run-script tasks",
                f"{s['kib_per_trigger']:.1f} KiB RSS per trigger; {s['fds_live']['supervisor']:,} fds in the supervisor, {s['fds_live']['runner']:,} in the runner",
                "(reference)", None,
                f"RSS {s['rss_idle_mib']:.0f} -> {s['rss_live_mib']:.0f} MiB; fds idle {s['fds_idle'].get('supervisor', 0)} / {s['fds_idle'].get('runner', 0)}; soft limit {s['fd_soft_limit']:,}")
        )  # fmt: skip
    return out


def _errors_note(s: dict[str, Any]) -> str:
    if not s["triggerer_errors"]:
        return "no error in the triggerer's log"
    return f"{s['triggerer_errors']} error(s) in the triggerer's log: " + "; ".join(
        s["triggerer_error_samples"]
    )


def _latency_row(name: str, s: dict[str, Any], target: float) -> Row:
    return Row(
        name,
        f"job end -> event in the database, p50 / p99, {s['count']:,} deferred run-script tasks (poll {s['poll']:g} s)",
        f"{s['p50']:.2f} s / {s['p99']:.2f} s" if s["events"] else "no event reached the database",
        f"p99 <= {target:g} s",
        s["p99"] <= target and not s["missing"],
        f"max {s['max']:.2f} s, {s['events']:,} events, {s['missing']:,} missing; the trigger's detection p99 "
        f"{s['detect_p99']:.2f} s, Airflow's delivery to the database p50 / p99 {s['deliver_p50']:.2f} / {s['deliver_p99']:.2f} s",
    )


def _lines_row(name: str, s: dict[str, Any]) -> Row:
    ok = not (s["lines_lost"] or s["lines_doubled"] or s["lines_foreign"]) and s["lines_written"] > 0
    return Row(
        name,
        f"script output lines in the per-task trigger logs, {s['count']:,} deferred run-script tasks",
        f"{s['lines_lost']:,} lost, {s['lines_doubled']:,} doubled",
        "0 lost, 0 doubled",
        ok,
        f"{s['lines_logged']:,} logged of {s['lines_written']:,} written, {s['lines_foreign']} from another job; "
        f"of the lost ones, {s['lines_in_triggerer_log']:,} are in the triggerer's own log instead; "
        f"the server served {s['lines_served']:,} of them in log pages (the rest in the ended jobs' previews), "
        f"{s['bytes_served_twice']:,} bytes twice",
    )


def growth_table(results: dict[tuple[str, int], dict[str, Any]]) -> str:
    """One line per trial: CPU, memory, open files, pick-up, latency, output lines, errors."""
    lines = [
        "| triggers | trigger | CPU ms / trigger / poll: triggerer (runner) | CPU s / wall s: live / last 20 s before the ends / ends / idle | supervisor share | RSS idle -> live (MiB) | KiB / trigger | fds supervisor / runner | running in the window (pick-up) | job end -> DB p50 / p99 (s) | detection p99 / delivery p99 (s) | lines logged / written | errors logged |",
        "| ---: | --- | --- | --- | ---: | --- | ---: | --- | --- | --- | --- | --- | ---: |",
    ]
    for s in sorted(results.values(), key=lambda s: (s["count"], KINDS.index(s["kind"]))):
        logged = f"{s['lines_logged']:,} / {s['lines_written']:,}" if s["kind"] == SCRIPTRUNNER else "-"
        pickup = "" if s["ramp_s"] != s["ramp_s"] else f" ({s['ramp_s']:.0f} s)"  # NaN: not all of them
        lines.append(
            f"| {s['count']:,} | {LABELS[s['kind']]} | {s['cpu_ms_per_trigger_poll']:.3f} ({s['runner_ms_per_trigger_poll']:.3f}) | "
            f"{s['cpu_per_wall']:.2f} / {s['pre_end_cpu_per_wall']:.2f} / {s['ends_cpu_per_wall']:.2f} / {s['idle_cpu_per_wall']:.2f} | "
            f"{s['supervisor_share']:.0%} | {s['rss_idle_mib']:.0f} -> {s['rss_live_mib']:.0f} | "
            f"{s['kib_per_trigger']:.1f} | {s['fds_live']['supervisor']:,} / {s['fds_live']['runner']:,} | "
            f"{s['running_by_window']:,}{pickup} | {_pair(s['p50'], s['p99'])} | "
            f"{_pair(s['detect_p99'], s['deliver_p99'])} | {logged} | {s['triggerer_errors']} |"
        )
    return "\n".join(lines)


def _pair(a: float, b: float) -> str:
    return "-" if a != a or b != b else f"{a:.2f} / {b:.2f}"  # NaN: nothing measured


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.triggerer_capacity")
    parser.add_argument("--child", choices=("setup", "defer"), required=True)
    parser.add_argument("--trials", default="[]", help="JSON list of [kind, N] (setup)")
    parser.add_argument("--kind", choices=KINDS)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--poll", type=float, default=Timing.poll)
    parser.add_argument("--line-every", type=float, default=Timing.line_every)
    parser.add_argument("--warmup-seconds", type=float, default=WARMUP_SECONDS)
    options = parser.parse_args()
    if options.child == "setup":
        _child_setup(options)
    else:
        _child_defer(options)


if __name__ == "__main__":
    main()
