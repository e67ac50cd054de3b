"""
Log retrieval: ``ScriptRunnerHook.iter_log`` over 1 MiB of stdout vs one raw GET of the same
bytes (``/jobs/{id}/logs?limit=1048576``), and the memory the run operator's log streaming
(``StreamFollower.pump``, which writes every line to the task log) needs for that 1 MiB.

The hook reads with its default page size (the server's largest page, 1 MiB) and, for
reference, with 64 KiB pages (the server's default page, and the hook's default before the
benchmarks changed it); each run uses a fresh hook (connection lookup and session included), each
raw GET a fresh ``requests.get``. Memory is traced with :mod:`tracemalloc` from just before the
pump (hook and session already warm) to its end: "peak extra" is the highest traced memory above
that starting point, with the operator's defaults (64 KiB pages, ``max_output_bytes`` 64 KiB) and,
for reference, with nothing kept (``max_output_bytes=0``). The target is a bound that does not grow
with the output: at most :data:`MEMORY_TARGET_PAGES` pages (a page's body, its text and its parsed
JSON, and the chunk being written) plus the kept end of the output, ``max_output_bytes``.
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks._common import Row, bundled_server, interleaved, log, median, paired_ratio

MIB = 1048576
# 1 MiB of log lines (80 characters each, the last one cut), written by the script itself.
SCRIPTS = {
    "mib": {
        "body": '#!/bin/sh\nyes "2026-01-01T00:00:00Z INFO worker: processed a batch of records, all checks passed ok" | head -c 1048576\n'
    },
}
RUNS = 60
WARMUP = 3
RATIO_TARGET = 1.2
#: Peak extra memory while streaming: at most this many pages, plus ``max_output_bytes``.
MEMORY_TARGET_PAGES = 4


def _finished_job(url: str) -> str:
    import requests

    body = requests.post(f"{url}/run", json={"scriptId": "mib", "mode": "sync"}, timeout=60).json()
    assert body["status"] == "succeeded" and body["stdoutSize"] == MIB, body
    return body["jobId"]


def measure_speed(url: str, conn_id: str, job_id: str) -> dict[str, list[float]]:
    import requests

    from airflow_provider_scriptrunner.hooks.scriptrunner import ScriptRunnerHook

    def raw() -> float:
        start = time.perf_counter()
        response = requests.get(
            f"{url}/jobs/{job_id}/logs", params={"stream": "stdout", "offset": 0, "limit": MIB}, timeout=30
        )
        data = response.json()["data"]
        elapsed = time.perf_counter() - start
        assert len(data) == MIB
        return elapsed

    def hook(**page: int) -> Callable[[], float]:
        def iterate() -> float:
            start = time.perf_counter()
            with ScriptRunnerHook(conn_id) as sr_hook:
                size = sum(len(chunk.text) for chunk in sr_hook.iter_log(job_id, **page))
            elapsed = time.perf_counter() - start
            assert size == MIB
            return elapsed

        return iterate

    variants = {"raw GET": raw, "hook.iter_log": hook(), "hook.iter_log, 64 KiB pages": hook(page_size=65536)}
    interleaved(WARMUP, variants)
    return interleaved(RUNS, variants)


def measure_memory(conn_id: str, job_id: str, max_output_bytes: int | None = None) -> dict[str, int]:
    from airflow_provider_scriptrunner.hooks.scriptrunner import ScriptRunnerHook
    from airflow_provider_scriptrunner.operators.scriptrunner import ScriptRunnerRunScriptOperator
    from airflow_provider_scriptrunner.task.output import StreamFollower, TailBuffer

    op = ScriptRunnerRunScriptOperator(
        task_id="bench", script_id="mib", deferrable=False, scriptrunner_conn_id=conn_id
    )
    page = op.log_page_bytes
    cap = op.max_output_bytes if max_output_bytes is None else max_output_bytes
    hook = ScriptRunnerHook(conn_id)

    def follower() -> StreamFollower:
        return StreamFollower("stdout", op.log, page, tail=TailBuffer(cap))

    # Warm up: connection, session, imports and the logging chain, outside the trace.
    follower().pump(hook, job_id, complete=True)
    follow = follower()
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        follow.pump(hook, job_id, complete=True)
        follow.finish()
        end, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    hook.close()
    assert follow.offset == MIB
    return {"page": page, "peak_extra": peak - start, "retained": end - start, "max_output_bytes": cap}


def memory_bound(result: dict[str, int]) -> int:
    """The most extra memory streaming may take: :data:`MEMORY_TARGET_PAGES` pages plus the kept end."""
    return MEMORY_TARGET_PAGES * result["page"] + result["max_output_bytes"]


def run(workdir: Path) -> tuple[list[Row], dict[str, Any]]:
    log("log retrieval ...")
    with bundled_server(workdir / "log-retrieval", SCRIPTS, "bench_logs") as server:
        job_id = _finished_job(server.url)
        samples = measure_speed(server.url, "bench_logs", job_id)
        memory = measure_memory("bench_logs", job_id)
        streaming_only = measure_memory("bench_logs", job_id, max_output_bytes=0)
    medians = {name: median(values) * 1000 for name, values in samples.items()}
    raw_ms = medians["raw GET"]
    rows = []
    for name in ("hook.iter_log", "hook.iter_log, 64 KiB pages"):
        ratio = paired_ratio(samples, name, "raw GET")
        main = name == "hook.iter_log"
        rows.append(
            Row(
                "Log retrieval",
                f"{name}{' (default page size)' if main else ''}, 1 MiB, vs one raw GET (median of {RUNS} interleaved pairs)",
                f"{ratio:.2f}x",
                f"<= {RATIO_TARGET}x" if main else "(reference)",
                ratio <= RATIO_TARGET if main else None,
                f"medians {medians[name]:.1f} ms vs {raw_ms:.1f} ms",
            )
        )
    for result, label in ((memory, "operator defaults"), (streaming_only, "max_output_bytes=0, reference")):
        main = result is memory
        bound = memory_bound(result)
        rows.append(
            Row(
                "Log retrieval",
                f"peak extra memory streaming 1 MiB into the task log (StreamFollower.pump, {label})",
                f"{result['peak_extra'] / 1024:.0f} KiB",
                f"<= {MEMORY_TARGET_PAGES} pages + max_output_bytes ({bound // 1024} KiB)"
                if main
                else "(reference)",
                result["peak_extra"] <= bound if main else None,
                f"{result['peak_extra'] / result['page']:.2f}x page, page {result['page'] // 1024} KiB, "
                f"max_output_bytes {result['max_output_bytes'] // 1024} KiB, "
                f"{result['retained'] / 1024:.0f} KiB kept afterwards",
            )
        )
    return rows, {
        "median_ms": {k: round(v, 2) for k, v in medians.items()},
        "memory": [memory, streaming_only],
    }
