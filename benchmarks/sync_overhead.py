"""
Sync-run overhead: ``ScriptRunnerRunScriptOperator.execute`` in worker mode on a quick script vs
one raw ``requests.post(f"{url}/run", json={"scriptId": ..., "mode": "sync"})`` of the same script.

The operator submits in async mode and polls, then reads stdout and stderr from the logs
endpoint; the raw call is held open by the server until the script ends. Medians of interleaved
runs, each operator run with a fresh operator (hook, session and connection lookup included, as
in a task), each raw run with a fresh ``requests.post`` (new connection, as such a call makes).

Measured on the bundled server with TCP_NODELAY (as the real server answers; see
``benchmarks/_server_site``) and, for reference, on the bundled server exactly as shipped.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
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
#: The run operator's first worker-mode poll before the benchmarks changed it.
OLD_FIRST_POLL_DELAY = 0.1


def raw_run(url: str) -> Callable[[], float]:
    import requests

    def raw() -> float:
        start = time.perf_counter()
        response = requests.post(f"{url}/run", json={"scriptId": "quick", "mode": "sync"}, timeout=30)
        body = response.json()
        elapsed = time.perf_counter() - start
        assert response.status_code == 200 and body["status"] == "succeeded", body
        return elapsed

    return raw


def operator_run(conn_id: str, first_poll: float | None = None) -> Callable[[], float]:
    from airflow_provider_scriptrunner.operators import run_script as ops

    def operator() -> float:
        op = ops.ScriptRunnerRunScriptOperator(
            task_id="bench", script_id="quick", deferrable=False, scriptrunner_conn_id=conn_id
        )
        context = make_context()
        saved = ops.FIRST_POLL_DELAY
        if first_poll is not None:
            ops.FIRST_POLL_DELAY = first_poll
        try:
            start = time.perf_counter()
            result = op.execute(context)
            elapsed = time.perf_counter() - start
        finally:
            ops.FIRST_POLL_DELAY = saved
        assert result["status"] == "succeeded" and result["stdout"] == "hello\n", result
        return elapsed

    return operator


def run(workdir: Path) -> tuple[list[Row], dict[str, Any]]:
    from airflow_provider_scriptrunner.operators import run_script as ops

    log("sync-run overhead ...")
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(bundled_server(workdir / "sync-overhead", SCRIPTS, "bench_sync"))
        variants = {"raw": raw_run(server.url), "operator": operator_run("bench_sync")}
        if ops.FIRST_POLL_DELAY != OLD_FIRST_POLL_DELAY:
            variants["operator, first poll 0.1 s (before)"] = operator_run("bench_sync", OLD_FIRST_POLL_DELAY)
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
    for name, ms in medians.items():
        if name.startswith("raw"):
            continue
        baseline_name = "raw, server as shipped" if name.endswith("as shipped") else "raw"
        baseline = medians[baseline_name]
        ratio = paired_ratio(samples, name, baseline_name)
        main = name == "operator"
        rows.append(
            Row(
                "Sync-run overhead",
                f"{name} vs raw sync POST /run (median of {RUNS} interleaved pairs)",
                f"{ratio:.2f}x",
                f"<= {TARGET}x" if main else "(reference)",
                ratio <= TARGET if main else None,
                f"medians {ms:.1f} ms vs {baseline:.1f} ms",
            )
        )
    return rows, {"median_ms": {k: round(v, 2) for k, v in medians.items()}}
