"""
Requests per job: the HTTP requests the run operator makes for a 60 s job with default settings
(``poll_interval=10``), in worker mode and in deferred mode; and how soon, in worker mode, the
operator has the result of a 0.1 s script.

The 60 s job runs for real, once per mode, both at the same time (in threads, while the fan-in
benchmark runs in its child processes). Deferred mode is the whole task: ``execute`` up to
``TaskDeferred``, the trigger's ``run()`` in an event loop, then ``execute_complete``. Each mode
has its own bundled server, and the requests are counted from that server's request log, so
retries or requests made by anything else would be counted too.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks._common import (
    Row,
    bundled_server,
    interleaved,
    log,
    make_context,
    median,
)

JOB_SECONDS = 60
REQUEST_TARGET = 40
QUICK_SECONDS = 0.1
QUICK_RUNS = 10
QUICK_TARGET = 0.3
SCRIPTS = {
    "sleep": {"body": '#!/bin/sh\nsleep "$1"\necho "slept $1 s"\n', "args": {"itemPattern": "^[0-9.]+$"}},
}
_REQUEST_LINE = re.compile(r'"(GET|POST|PUT|DELETE|HEAD|PATCH|OPTIONS) \S+ HTTP/')


def count_requests(server: Any) -> int:
    """Requests the server answered, from its request log."""
    text = server.stderr_path.read_text(encoding="utf-8", errors="replace")
    return sum(1 for line in text.splitlines() if _REQUEST_LINE.search(line))


def _worker_mode(conn_id: str) -> dict[str, Any]:
    from airflow_provider_scriptrunner.operators.scriptrunner import (
        ScriptRunnerRunScriptOperator,
    )

    op = ScriptRunnerRunScriptOperator(
        task_id="bench",
        script_id="sleep",
        args=[str(JOB_SECONDS)],
        deferrable=False,
        scriptrunner_conn_id=conn_id,
    )
    return op.execute(make_context())


def _deferred_mode(conn_id: str) -> dict[str, Any]:
    from airflow_provider_scriptrunner._compat import TaskDeferred
    from airflow_provider_scriptrunner.operators.scriptrunner import (
        ScriptRunnerRunScriptOperator,
    )

    op = ScriptRunnerRunScriptOperator(
        task_id="bench",
        script_id="sleep",
        args=[str(JOB_SECONDS)],
        deferrable=True,
        scriptrunner_conn_id=conn_id,
    )
    context = make_context()
    try:
        op.execute(context)
    except TaskDeferred as deferred:
        trigger = deferred.trigger

        async def first_event() -> Any:
            async for event in trigger.run():
                return event
            raise AssertionError("the trigger ended without an event")

        event = asyncio.run(asyncio.wait_for(first_event(), JOB_SECONDS + 60))
        return getattr(op, deferred.method_name)(context, event.payload)
    raise AssertionError("the operator did not defer")


class LongJobs:
    """The 60 s job in both modes, in background threads; ``rows()`` waits for them."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.stack = contextlib.ExitStack()
        self.servers: dict[str, Any] = {}
        self.threads: dict[str, threading.Thread] = {}
        self.results: dict[str, Any] = {}

    def __enter__(self) -> LongJobs:
        log(f"requests per job: a {JOB_SECONDS} s job in worker and deferred mode, in the background ...")
        for mode, target in (("worker", _worker_mode), ("deferred", _deferred_mode)):
            conn_id = f"bench_rpj_{mode}"
            self.servers[mode] = self.stack.enter_context(
                bundled_server(self.workdir / f"rpj-{mode}", SCRIPTS, conn_id, maxConcurrent=2)
            )
            self.threads[mode] = threading.Thread(
                target=self._run, args=(mode, target, conn_id), name=f"rpj-{mode}", daemon=True
            )
        for thread in self.threads.values():
            thread.start()
        return self

    def _run(self, mode: str, target: Any, conn_id: str) -> None:
        start = time.perf_counter()
        try:
            result = target(conn_id)
            self.results[mode] = {"result": result, "seconds": time.perf_counter() - start}
        except BaseException as err:
            self.results[mode] = {"error": f"{type(err).__name__}: {err}"}

    def __exit__(self, *exc: object) -> None:
        self.stack.close()

    def rows(self) -> list[Row]:
        for thread in self.threads.values():
            thread.join(JOB_SECONDS * 4)
        rows = []
        for mode in ("worker", "deferred"):
            outcome = self.results.get(mode, {"error": "did not finish in time"})
            requests = count_requests(self.servers[mode])
            if "error" in outcome:
                rows.append(
                    Row(
                        "Requests per job",
                        f"{mode} mode, {JOB_SECONDS} s job",
                        "failed",
                        f"<= {REQUEST_TARGET}",
                        False,
                        outcome["error"],
                    )
                )
                continue
            assert outcome["result"]["status"] == "succeeded", outcome
            rows.append(
                Row(
                    "Requests per job",
                    f"{mode} mode, {JOB_SECONDS} s job, poll_interval=10 (requests the server answered)",
                    str(requests),
                    f"<= {REQUEST_TARGET}",
                    requests <= REQUEST_TARGET,
                    f"task took {outcome['seconds']:.1f} s",
                )
            )
        return rows


def quick_result(workdir: Path) -> tuple[list[Row], dict[str, Any]]:
    """Worker mode on a 0.1 s script: seconds from ``execute`` to its result (and with the old first poll)."""
    from airflow_provider_scriptrunner.operators import run_script as ops
    from benchmarks.sync_overhead import OLD_SCHEDULE, polling

    log(f"first result of a {QUICK_SECONDS} s script ...")

    def run_once(schedule: tuple[float, float] | None = None) -> float:
        op = ops.ScriptRunnerRunScriptOperator(
            task_id="bench",
            script_id="sleep",
            args=[str(QUICK_SECONDS)],
            deferrable=False,
            scriptrunner_conn_id="bench_quick",
        )
        with polling(schedule):
            start = time.perf_counter()
            result = op.execute(make_context())
            elapsed = time.perf_counter() - start
        assert result["status"] == "succeeded", result
        return elapsed

    variants = {"operator": run_once}
    if (ops.FIRST_POLL_DELAY, ops.POLL_GROWTH) != OLD_SCHEDULE:
        variants["operator, previous polling (10 ms, x2)"] = lambda: run_once(OLD_SCHEDULE)
    with bundled_server(workdir / "quick-result", SCRIPTS, "bench_quick"):
        interleaved(1, variants)  # warm-up: imports and the connection lookup
        samples = interleaved(QUICK_RUNS, variants)
    rows = []
    for name, seconds in samples.items():
        main = name == "operator"
        rows.append(
            Row(
                "Requests per job",
                f"worker mode: a {QUICK_SECONDS:g} s script's result, execute() start to return, worst of {QUICK_RUNS} runs"
                + ("" if main else f" ({name.split(', ', 1)[1]})"),
                f"{max(seconds):.3f} s",
                f"< {QUICK_TARGET:g} s" if main else "(reference)",
                max(seconds) < QUICK_TARGET if main else None,
                f"median {median(seconds):.3f} s",
            )
        )
    return rows, {"seconds": {k: [round(s, 4) for s in v] for k, v in samples.items()}}
