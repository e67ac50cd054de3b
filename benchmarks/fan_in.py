"""
Trigger fan-in: 1,000 concurrent triggers in one event loop, each running its own ``run()``, on
jobs that end at staggered, known moments; ours (``ScriptRunnerJobTrigger``) vs Airflow's
``HttpSensorTrigger`` (apache-airflow-providers-http) polling the same job URLs.

Each trial runs in a fresh child process (``python -m benchmarks.fan_in --child ...``) so that its
CPU time and peak RSS are its own; trials of the two kinds alternate. The jobs are served by
:mod:`benchmarks.mock_jobs_server` (a separate process, so its CPU is not counted).

Per trial: trigger starts are spread evenly over the first poll interval (as tasks defer at
different moments); jobs end evenly spread between ``END_MIN`` and ``END_MAX`` seconds after the
loop starts, in shuffled order. Between the last start and the first job end all 1,000 triggers
are live: the CPU/wall ratio and the CPU per poll are measured in that window (process CPU time,
``time.process_time``; polls counted by the server). Detection latency is the moment a trigger's
event is yielded minus the job's end. Peak RSS is the child's ``ru_maxrss``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._common import (
    PACKAGE_ROOT,
    Row,
    log,
    percentile,
    prepare_environment,
    route_task_log,
    set_connection,
)

COUNT = 1000
POLL_INTERVAL = 2.0
END_MIN = 8.0
END_MAX = 18.0
ROUNDS = 2
KINDS = ("ScriptRunnerJobTrigger", "HttpSensorTrigger")
CPU_RATIO_TARGET = 0.5
LATENCY_SLACK = 0.5
CHILD_TIMEOUT = 180.0
FLOOR_REQUESTS = 1000
HTTP_CONN_ID = "bench_http"
SR_CONN_ID = "bench_fanin"


# --------------------------------------------------------------------------------------------
# The mock server


class MockServer:
    """:mod:`benchmarks.mock_jobs_server` in its own process group; always stopped."""

    def __init__(self, max_seconds: float = 600.0) -> None:
        self.max_seconds = max_seconds
        self.process: subprocess.Popen[str] | None = None
        self.port = 0

    def __enter__(self) -> MockServer:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.mock_jobs_server",
                "--port",
                "0",
                "--max-seconds",
                str(self.max_seconds),
            ],
            cwd=PACKAGE_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        line = self.process.stdout.readline()  # type: ignore[union-attr]
        if not line.startswith("listening on "):
            self.__exit__()
            raise RuntimeError(f"mock jobs server did not start: {line!r}")
        self.port = int(line.split()[-1])
        return self

    def __exit__(self, *exc: object) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            os.killpg(process.pid, 15)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait()
        if process.stdout:
            process.stdout.close()

    def job_requests(self) -> int:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/__stats", timeout=10) as response:
            return json.load(response)["jobRequests"]


# --------------------------------------------------------------------------------------------
# The child: one trial of one kind


async def _stats(port: int) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /__stats HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    data = await reader.read()
    writer.close()
    return json.loads(data.split(b"\r\n\r\n", 1)[1])["jobRequests"]


def _make_trigger(kind: str, job_id: str, poll: float) -> Any:
    if kind == "ScriptRunnerJobTrigger":
        from airflow_provider_scriptrunner.triggers.scriptrunner import (
            ScriptRunnerJobTrigger,
        )

        return ScriptRunnerJobTrigger(job_id, scriptrunner_conn_id=SR_CONN_ID, poll_interval=poll)
    from airflow.providers.http.triggers.http import HttpSensorTrigger

    return HttpSensorTrigger(
        endpoint=f"jobs/{job_id}", http_conn_id=HTTP_CONN_ID, method="GET",
        headers={"X-Absent-While-Running": "1"}, poke_interval=poll,
    )  # fmt: skip


def _fired_ok(kind: str, payload: Any) -> bool:
    if kind == "ScriptRunnerJobTrigger":
        return isinstance(payload, dict) and payload.get("status") == "success"
    return payload is True


async def _trial(
    kind: str, port: int, count: int, poll: float, end_min: float, end_max: float, seed: int
) -> dict[str, Any]:
    base = time.time()
    rng = random.Random(seed)
    ends = [base + end_min + (end_max - end_min) * i / max(1, count - 1) for i in range(count)]
    rng.shuffle(ends)
    starts = [poll * i / count for i in range(count)]
    latencies: list[float] = []
    failures: list[str] = []

    async def follow(i: int) -> None:
        await asyncio.sleep(max(0.0, base + starts[i] - time.time()))
        end_ms = int(ends[i] * 1000)
        trigger = _make_trigger(kind, f"bench_{end_ms}_{i}", poll)
        async for event in trigger.run():
            latencies.append(time.time() - end_ms / 1000)
            if not _fired_ok(kind, event.payload):
                failures.append(repr(event.payload)[:200])
            break

    window: dict[str, float] = {}

    async def monitor() -> None:
        await asyncio.sleep(max(0.0, base + poll + 0.2 - time.time()))  # every trigger has started
        polls_a = await _stats(port)
        window.update(cpu_a=time.process_time(), wall_a=time.perf_counter(), polls_a=polls_a)
        await asyncio.sleep(max(0.0, base + end_min - 0.2 - time.time()))  # no job has ended yet
        polls_b = await _stats(port)
        window.update(cpu_b=time.process_time(), wall_b=time.perf_counter(), polls_b=polls_b)

    lags: list[float] = []

    async def loop_lag() -> None:
        # How late a 50 ms sleep wakes up: the event loop's own queueing delay.
        while len(latencies) < count:
            start = time.perf_counter()
            await asyncio.sleep(0.05)
            lags.append(time.perf_counter() - start - 0.05)

    await asyncio.gather(monitor(), loop_lag(), *(follow(i) for i in range(count)))
    return {
        "lags": lags,
        "latencies": latencies,
        "failures": failures,
        "live_cpu": window["cpu_b"] - window["cpu_a"],
        "live_wall": window["wall_b"] - window["wall_a"],
        "live_polls": window["polls_b"] - window["polls_a"],
    }


async def _transport_floor(port: int, requests: int) -> dict[str, float]:
    """Process CPU ms per request of the HTTP clients themselves, one request at a time."""
    import aiohttp
    import httpx

    url = f"http://127.0.0.1:{port}/jobs/bench_9999999999999_0"

    async def httpx_keep_alive() -> None:
        async with httpx.AsyncClient() as client:
            for _ in range(requests):
                json.loads((await client.get(url)).text)

    async def aiohttp_new_session() -> None:  # what HttpSensorTrigger does per poll
        for _ in range(requests):
            async with aiohttp.ClientSession() as session, session.get(url) as response:
                json.loads(await response.text())

    async def aiohttp_keep_alive() -> None:
        async with aiohttp.ClientSession() as session:
            for _ in range(requests):
                async with session.get(url) as response:
                    json.loads(await response.text())

    variants = {
        "httpx keep-alive": httpx_keep_alive,
        "aiohttp session per request": aiohttp_new_session,
        "aiohttp keep-alive": aiohttp_keep_alive,
    }
    cpu = dict.fromkeys(variants, 0.0)
    for _ in range(2):
        for name, variant in variants.items():
            start = time.process_time()
            await variant()
            cpu[name] += time.process_time() - start
    return {name: seconds / (2 * requests) * 1000 for name, seconds in cpu.items()}


def _rss_kib() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def child(options: argparse.Namespace) -> None:
    if options.kind == "floor":
        print(json.dumps(asyncio.run(_transport_floor(options.port, options.count))))
        return
    workdir = Path(options.workdir)
    prepare_environment(workdir)
    set_connection(SR_CONN_ID, options.port)
    set_connection(HTTP_CONN_ID, options.port, conn_type="http")
    route_task_log(workdir / f"fan-in-{options.kind}.log")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4 * options.count:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8 * options.count), hard))
    # Import everything a trigger needs before measuring.
    _make_trigger(options.kind, "bench_0_0", options.poll)
    import airflow.sdk  # noqa: F401

    rss_before = _rss_kib()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    result = asyncio.run(
        _trial(
            options.kind,
            options.port,
            options.count,
            options.poll,
            options.end_min,
            options.end_max,
            options.seed,
        )
    )
    result.update(
        kind=options.kind,
        cpu=time.process_time() - cpu0,
        wall=time.perf_counter() - wall0,
        rss_before_kib=rss_before,
        peak_rss_kib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    )
    print(json.dumps(result))


# --------------------------------------------------------------------------------------------
# The parent


def _run_child(workdir: Path, kind: str, port: int, seed: int = 0, count: int = COUNT) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "benchmarks.fan_in", "--child", "--kind", kind, "--port", str(port),
        "--workdir", str(workdir), "--count", str(count), "--poll", str(POLL_INTERVAL),
        "--end-min", str(END_MIN), "--end-max", str(END_MAX), "--seed", str(seed),
    ]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=PACKAGE_ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, _ = process.communicate(timeout=CHILD_TIMEOUT)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 9)
            process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"fan-in child for {kind} failed with status {process.returncode}")
    return json.loads(out.strip().splitlines()[-1])


def summarize(trials: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = [x for t in trials for x in t["latencies"]]
    live_cpu = sum(t["live_cpu"] for t in trials)
    live_polls = sum(t["live_polls"] for t in trials)
    return {
        "trials": len(trials),
        "events": len(latencies),
        "failures": sum(len(t["failures"]) for t in trials),
        "cpu_per_1000_polls": live_cpu / live_polls * 1000,
        "cpu_per_wall": live_cpu / sum(t["live_wall"] for t in trials),
        "whole_run_cpu_per_1000_polls": sum(t["cpu"] for t in trials)
        / sum(t["polls"] for t in trials)
        * 1000,
        "polls": sum(t["polls"] for t in trials),
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "max": max(latencies),
        "loop_lag_p99": percentile([x for t in trials for x in t["lags"]], 99),
        "peak_rss_mib": max(t["peak_rss_kib"] for t in trials) / 1024,
        "rss_growth_mib": max(t["peak_rss_kib"] - t["rss_before_kib"] for t in trials) / 1024,
    }


def ensure_http_provider() -> None:
    """Install apache-airflow-providers-http into this interpreter's environment on first use."""
    try:
        import airflow.providers.http.triggers.http
    except ImportError:
        from importlib import metadata

        airflow = f"apache-airflow=={metadata.version('apache-airflow')}"  # never let pip move Airflow
        log(f"installing apache-airflow-providers-http (for the fan-in comparison, with {airflow}) ...")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "apache-airflow-providers-http",
                airflow,
            ],
            check=True,
        )


def run(workdir: Path) -> tuple[list[Row], dict[str, Any]]:
    ensure_http_provider()
    trials: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    with MockServer() as server:
        for round_number in range(ROUNDS):
            order = KINDS if round_number % 2 == 0 else KINDS[::-1]
            for kind in order:
                log(f"fan-in: {COUNT} x {kind}, round {round_number + 1}/{ROUNDS} ...")
                before = server.job_requests()
                trial = _run_child(workdir, kind, server.port, seed=round_number)
                trial["polls"] = server.job_requests() - before
                trials[kind].append(trial)
        log("fan-in: CPU per request of the HTTP clients alone ...")
        floor = _run_child(workdir, "floor", server.port, count=FLOOR_REQUESTS)
    ours, theirs = (summarize(trials[kind]) for kind in KINDS)
    cpu_ratio = ours["cpu_per_1000_polls"] / theirs["cpu_per_1000_polls"]
    latency_target = POLL_INTERVAL + LATENCY_SLACK
    name = "Trigger fan-in"
    rows = [
        Row(name, f"CPU s per 1,000 polls, ours vs HttpSensorTrigger ({COUNT} live triggers, poll {POLL_INTERVAL:g} s)",
            f"{cpu_ratio:.2f}x", f"<= {CPU_RATIO_TARGET}x", cpu_ratio <= CPU_RATIO_TARGET,
            f"{ours['cpu_per_1000_polls']:.3f} s vs {theirs['cpu_per_1000_polls']:.3f} s"),
        Row(name, "whole-run CPU s per 1,000 polls (each trigger's setup and teardown included), ours vs HttpSensorTrigger",
            f"{ours['whole_run_cpu_per_1000_polls']:.3f} s vs {theirs['whole_run_cpu_per_1000_polls']:.3f} s", "(reference)", None),
        Row(name, f"CPU s / wall s with {COUNT} live ScriptRunnerJobTriggers", f"{ours['cpu_per_wall']:.2f}", "< 1",
            ours["cpu_per_wall"] < 1),
        Row(name, "detection latency p50 / p99 (job end -> event), ours", f"{ours['p50']:.2f} s / {ours['p99']:.2f} s",
            f"p99 <= {latency_target:g} s", ours["p99"] <= latency_target,
            f"max {ours['max']:.2f} s, {ours['events']} events; event-loop lag p99 {ours['loop_lag_p99'] * 1000:.0f} ms"),
        Row(name, "peak RSS, ours (growth during the loop)", f"{ours['peak_rss_mib']:.0f} MiB",
            "", None, f"+{ours['rss_growth_mib']:.0f} MiB"),
        Row(name, "HttpSensorTrigger: CPU s / wall s", f"{theirs['cpu_per_wall']:.2f}", "(reference)", None),
        Row(name, "HttpSensorTrigger: detection latency p50 / p99", f"{theirs['p50']:.2f} s / {theirs['p99']:.2f} s",
            "(reference)", None,
            f"max {theirs['max']:.2f} s, {theirs['events']} events; event-loop lag p99 {theirs['loop_lag_p99'] * 1000:.0f} ms"),
        Row(name, "HttpSensorTrigger: peak RSS (growth during the loop)", f"{theirs['peak_rss_mib']:.0f} MiB",
            "(reference)", None, f"+{theirs['rss_growth_mib']:.0f} MiB"),
    ]  # fmt: skip
    rows.append(
        Row(name, f"HTTP client alone, CPU ms per request ({' / '.join(floor)})", " / ".join(f"{ms:.2f}" for ms in floor.values()),
            "(reference)", None, "one request at a time, same server")
    )  # fmt: skip
    for kind, summary in (("ours", ours), ("HttpSensorTrigger", theirs)):
        if summary["failures"] or summary["events"] != COUNT * ROUNDS:
            rows.append(
                Row(
                    name,
                    f"{kind}: events",
                    f"{summary['events']} ({summary['failures']} wrong)",
                    f"{COUNT * ROUNDS}",
                    False,
                )
            )
    return rows, {"ours": ours, "HttpSensorTrigger": theirs, "client_cpu_ms_per_request": floor}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fan_in")
    parser.add_argument("--child", action="store_true", required=True)
    parser.add_argument("--kind", choices=(*KINDS, "floor"), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--count", type=int, default=COUNT)
    parser.add_argument("--poll", type=float, default=POLL_INTERVAL)
    parser.add_argument("--end-min", type=float, default=END_MIN)
    parser.add_argument("--end-max", type=float, default=END_MAX)
    parser.add_argument("--seed", type=int, default=0)
    child(parser.parse_args())


if __name__ == "__main__":
    main()
