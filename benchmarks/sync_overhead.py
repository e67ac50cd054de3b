"""
Sync-run overhead: ``ScriptRunnerRunScriptOperator.execute`` in worker mode on a quick script vs the
cheapest raw request sequence that gives the same result: a sync ``POST /run`` (held open by the
server until the script ends), then a GET of each log stream that is not empty.

The operator submits in async mode (so that it always holds the job id) and polls, then takes the
output from the finished job's previews when they are all of it (else from the logs endpoint).
Medians of interleaved runs, each operator run with a fresh operator (hook, session and connection
lookup included, as in a task), each raw run with fresh ``requests`` calls (new connections, as
such a script makes). For reference: the raw sync ``POST /run`` alone, and the operator with the
previous polling schedule (first poll after 10 ms, doubling).

Measured on the bundled server with TCP_NODELAY (as the real server answers; see
``benchmarks/_server_site``) and, for reference, on the bundled server exactly as shipped.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks._common import (
    Row,
    bundled_server,
    interleaved,
    log,
    make_context,
    median,
    paired_ratio,
    server_has_nagle,
)

SCRIPTS = {"quick": {"body": "#!/bin/sh\necho hello\n"}}
RUNS = 50
WARMUP = 3
TARGET = 1.25
#: The run operator's worker-mode polling schedule (first pause, growth) before issue 11.
OLD_SCHEDULE = (0.01, 2.0)


def raw_run(url: str, read_logs: bool = True) -> Callable[[], float]:
    """The raw sequence: a sync POST /run, then (``read_logs``) a GET of each non-empty stream."""
    import requests

    def raw() -> float:
        start = time.perf_counter()
        response = requests.post(f"{url}/run", json={"scriptId": "quick", "mode": "sync"}, timeout=30)
        body = response.json()
        assert response.status_code == 200 and body["status"] == "succeeded", body
        output = {}
        for stream in ("stdout", "stderr") if read_logs else ():
            if body[f"{stream}Size"]:
                page = requests.get(
                    f"{url}/jobs/{body['jobId']}/logs", params={"stream": stream, "offset": 0}, timeout=30
                ).json()
                output[stream] = page["data"]
        elapsed = time.perf_counter() - start
        assert not read_logs or output == {"stdout": "hello\n"}, output
        return elapsed

    return raw


@contextlib.contextmanager
def polling(schedule: tuple[float, float] | None) -> Iterator[None]:
    """Run the operator with another (first pause, growth) polling schedule."""
    from airflow_provider_scriptrunner.operators import run_script as ops

    saved = ops.FIRST_POLL_DELAY, ops.POLL_GROWTH
    if schedule is not None:
        ops.FIRST_POLL_DELAY, ops.POLL_GROWTH = schedule
    try:
        yield
    finally:
        ops.FIRST_POLL_DELAY, ops.POLL_GROWTH = saved


def operator_run(conn_id: str, schedule: tuple[float, float] | None = None) -> Callable[[], float]:
    from airflow_provider_scriptrunner.operators import run_script as ops

    def operator() -> float:
        op = ops.ScriptRunnerRunScriptOperator(
            task_id="bench", script_id="quick", deferrable=False, scriptrunner_conn_id=conn_id
        )
        context = make_context()
        with polling(schedule):
            start = time.perf_counter()
            result = op.execute(context)
            elapsed = time.perf_counter() - start
        assert result["status"] == "succeeded" and result["stdout"] == "hello\n", result
        return elapsed

    return operator


def run(workdir: Path) -> tuple[list[Row], dict[str, Any]]:
    from airflow_provider_scriptrunner.operators import run_script as ops

    log("sync-run overhead ...")
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(bundled_server(workdir / "sync-overhead", SCRIPTS, "bench_sync"))
        variants = {
            "raw": raw_run(server.url),
            "raw POST only": raw_run(server.url, read_logs=False),
            "operator": operator_run("bench_sync"),
        }
        if (ops.FIRST_POLL_DELAY, ops.POLL_GROWTH) != OLD_SCHEDULE:
            variants["operator, previous polling (10 ms, x2)"] = operator_run("bench_sync", OLD_SCHEDULE)
        if server_has_nagle():
            shipped = stack.enter_context(
                bundled_server(
                    workdir / "sync-overhead-shipped", SCRIPTS, "bench_sync_shipped", nodelay=False
                )
            )
            variants["raw, server as shipped"] = raw_run(shipped.url)
            variants["operator, server as shipped"] = operator_run("bench_sync_shipped")
        interleaved(WARMUP, variants)
        samples = interleaved(RUNS, variants)

    medians = {name: median(values) * 1000 for name, values in samples.items()}
    rows = []
    comparisons = [
        (name, "raw, server as shipped" if name.endswith("as shipped") else "raw") for name in medians
    ]
    comparisons = [(name, base) for name, base in comparisons if not name.startswith("raw")]
    comparisons.append(("operator", "raw POST only"))
    for name, baseline_name in comparisons:
        baseline = medians[baseline_name]
        ratio = paired_ratio(samples, name, baseline_name)
        main = (name, baseline_name) == ("operator", "raw")
        against = (
            "raw sync POST /run alone"
            if baseline_name == "raw POST only"
            else "raw sync POST /run + a GET of each non-empty log"
        )
        rows.append(
            Row(
                "Sync-run overhead",
                f"{name} vs {against} (median of {RUNS} interleaved pairs, `echo hello`)",
                f"{ratio:.2f}x",
                f"<= {TARGET}x" if main else "(reference)",
                ratio <= TARGET if main else None,
                f"medians {medians[name]:.1f} ms vs {baseline:.1f} ms",
            )
        )
    return rows, {"median_ms": {k: round(v, 2) for k, v in medians.items()}}
