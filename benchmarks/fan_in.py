"""
Trigger fan-in: thousands of concurrent triggers in one event loop, each running its own ``run()``,
on jobs that end at staggered, known moments: ours (``ScriptRunnerJobTrigger``) on each client
library of the async hook (the shared aiohttp session, the default; a shared httpx client), and
Airflow's ``HttpSensorTrigger`` (apache-airflow-providers-http) polling the same job URLs.

Each trial runs in a fresh child process (``python -m benchmarks.fan_in --child ...``) so that its
CPU time and memory are its own. The jobs are served by :mod:`benchmarks.mock_jobs_server` (a
separate process: its CPU is measured on its own and reported, so that it is seen not to be the
bottleneck).

Per trial (poll interval ``POLL_INTERVAL``): trigger starts are spread evenly over the first poll
interval (as tasks defer at different moments); jobs end evenly spread between ``END_MIN`` and
``END_MAX`` seconds after the loop starts, in shuffled order. Between the last start and the first
job end every trigger is live: CPU/wall, CPU per poll and the server's CPU are measured in that
window (process CPU time; polls counted by the server), and memory at its end: RSS above the
child's RSS before the first trigger was made (imports, connection and one warm-up trigger
done), divided by the trigger count. Detection latency is the moment a trigger's event is yielded
minus the job's end; event-loop lag is how late a 50 ms sleep wakes up, and the longest garbage
collection pause is timed with ``gc.callbacks``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
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

POLL_INTERVAL = 10.0
#: The live window: from every trigger started (one poll interval) to the first job end.
END_MIN = 23.0
END_MAX = 30.0
SCRIPTRUNNER = "ScriptRunnerJobTrigger"
HTTP_SENSOR = "HttpSensorTrigger"
#: (kind, client library, trigger count), in the order they run. Ours on aiohttp (the default) at
#: every size; ours on httpx side by side up to 5,000, where one core is already saturated (CPU/wall
#: 1.00, a fifth of the polls made; at 10,000 a trial on httpx ran 250-300+ s and was dropped);
#: HttpSensorTrigger at 1,000.
TRIALS = (
    (SCRIPTRUNNER, "aiohttp", 1000),
    (HTTP_SENSOR, "aiohttp", 1000),
    (SCRIPTRUNNER, "httpx", 1000),
    (SCRIPTRUNNER, "aiohttp", 5000),
    (SCRIPTRUNNER, "httpx", 5000),
    (SCRIPTRUNNER, "aiohttp", 10000),
    # A second pair at 1,000 for the CPU-per-poll ratio (the shared machine's noise hits both).
    (HTTP_SENSOR, "aiohttp", 1000),
    (SCRIPTRUNNER, "aiohttp", 1000),
)
TARGET_COUNT = 10000
CPU_PER_WALL_TARGET = 0.5
CPU_RATIO_TARGET = 0.3
LATENCY_SLACK = 1.0
MEMORY_TARGET_KIB = 10.0
CHILD_TIMEOUT = 300.0
FLOOR_REQUESTS = 2000
HTTP_CONN_ID = "bench_http"
SR_CONN_ID = "bench_fanin"


# --------------------------------------------------------------------------------------------
# The mock server


class MockServer:
    """:mod:`benchmarks.mock_jobs_server` in its own process group; always stopped."""

    def __init__(self, max_seconds: float = 1200.0) -> None:
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

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def job_requests(self) -> int:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/__stats", timeout=10) as response:
            return json.load(response)["jobRequests"]


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of another process, from /proc."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------------------------
# The child: one trial of one kind


async def _stats(port: int) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /__stats HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    data = await reader.read()
    writer.close()
    return json.loads(data.split(b"\r\n\r\n", 1)[1])["jobRequests"]


def _make_trigger(kind: str, job_id: str, poll: float) -> Any:
    if kind == SCRIPTRUNNER:
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
    if kind == SCRIPTRUNNER:
        if not isinstance(payload, dict) or payload.get("kind") != "ended":
            return False
        return isinstance(payload.get("job"), dict) and payload["job"].get("status") == "succeeded"
    return payload is True


def _rss_kib() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


async def _trial(options: argparse.Namespace, rss_before: int) -> dict[str, Any]:
    kind, count, poll = options.kind, options.count, options.poll
    base = time.time()
    rng = random.Random(options.seed)
    ends = [
        base + options.end_min + (options.end_max - options.end_min) * i / max(1, count - 1)
        for i in range(count)
    ]
    rng.shuffle(ends)
    starts = [poll * i / count for i in range(count)]
    latencies: list[float] = []
    failures: list[str] = []

    async def follow(i: int) -> None:
        await asyncio.sleep(max(0.0, base + starts[i] - time.time()))
        end_ms = int(ends[i] * 1000)
        trigger = _make_trigger(kind, f"bench_{end_ms}_{i}", poll)
        try:
            async for event in trigger.run():
                latencies.append(time.time() - end_ms / 1000)
                if not _fired_ok(kind, event.payload):
                    failures.append(repr(event.payload)[:200])
                break
        finally:
            await trigger.cleanup()  # as the triggerer does

    window: dict[str, float] = {}

    async def monitor() -> None:
        await asyncio.sleep(max(0.0, base + poll + 0.5 - time.time()))  # every trigger has started
        polls_a = await _stats(options.port)
        window.update(
            cpu_a=time.process_time(), wall_a=time.perf_counter(), polls_a=polls_a,
            server_a=process_cpu(options.server_pid),
        )  # fmt: skip
        await asyncio.sleep(max(0.0, base + options.end_min - 0.5 - time.time()))  # no job has ended yet
        polls_b = await _stats(options.port)
        window.update(
            cpu_b=time.process_time(), wall_b=time.perf_counter(), polls_b=polls_b,
            server_b=process_cpu(options.server_pid), rss_live=_rss_kib(),
        )  # fmt: skip

    lags: list[float] = []

    async def loop_lag() -> None:
        # How late a 50 ms sleep wakes up: the event loop's own queueing delay.
        while len(latencies) < count:
            start = time.perf_counter()
            await asyncio.sleep(0.05)
            lags.append(time.perf_counter() - start - 0.05)

    await asyncio.gather(monitor(), loop_lag(), *(follow(i) for i in range(count)))
    if kind == SCRIPTRUNNER:
        from airflow_provider_scriptrunner.client.backends import pool

        window["clients_left"] = pool.shared_count()
    wall = window["wall_b"] - window["wall_a"]
    return {
        "lags": lags,
        "latencies": latencies,
        "failures": failures,
        "live_cpu": window["cpu_b"] - window["cpu_a"],
        "live_wall": wall,
        "live_polls": window["polls_b"] - window["polls_a"],
        "server_cpu": window["server_b"] - window["server_a"],
        "rss_live_kib": window["rss_live"],
        "clients_left": window.get("clients_left", 0),
    }


async def _client_floor(port: int, requests: int) -> dict[str, float]:
    """Process CPU ms per request of the HTTP clients themselves, 50 requests in flight at a time."""
    import aiohttp
    import httpx

    url = f"http://127.0.0.1:{port}/jobs/bench_9999999999999_0"
    in_flight = 50

    async def spread(get: Any) -> None:
        async def worker() -> None:
            for _ in range(requests // in_flight):
                json.loads(await get())

        await asyncio.gather(*(worker() for _ in range(in_flight)))

    async def httpx_shared() -> None:
        async with httpx.AsyncClient() as client:

            async def get() -> str:
                return (await client.get(url)).text

            await spread(get)

    async def aiohttp_new_session() -> None:  # what HttpSensorTrigger does per poll
        async def get() -> str:
            async with aiohttp.ClientSession() as session, session.get(url) as response:
                return await response.text()

        await spread(get)

    async def aiohttp_shared() -> None:
        async with aiohttp.ClientSession() as session:

            async def get() -> str:
                async with session.get(url) as response:
                    return await response.text()

            await spread(get)

    variants = {
        "httpx, one shared client": httpx_shared,
        "aiohttp, a session per request": aiohttp_new_session,
        "aiohttp, one shared session": aiohttp_shared,
    }
    cpu = dict.fromkeys(variants, 0.0)
    for _ in range(2):
        for name, variant in variants.items():
            start = time.process_time()
            await variant()
            cpu[name] += time.process_time() - start
    return {name: seconds / (2 * requests) * 1000 for name, seconds in cpu.items()}


def child(options: argparse.Namespace) -> None:
    if options.kind == "floor":
        print(json.dumps(asyncio.run(_client_floor(options.port, options.count))))
        return
    workdir = Path(options.workdir)
    prepare_environment(workdir)
    set_connection(SR_CONN_ID, options.port)
    set_connection(HTTP_CONN_ID, options.port, conn_type="http")
    route_task_log(workdir / f"fan-in-{options.kind}-{options.backend}-{options.count}.log")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4 * options.count:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8 * options.count), hard))
    if options.kind == SCRIPTRUNNER:
        from airflow_provider_scriptrunner.hooks.scriptrunner import ScriptRunnerAsyncHook

        ScriptRunnerAsyncHook.http_client = options.backend
    # Import and exercise everything a trigger needs before measuring: one trigger runs to its event.
    import airflow.sdk  # noqa: F401

    async def warm_up() -> None:
        trigger = _make_trigger(options.kind, f"bench_{int(time.time() * 1000)}_0", 0.01)
        async for _ in trigger.run():
            break
        await trigger.cleanup()

    asyncio.run(warm_up())
    gc.collect()

    pauses: list[float] = []
    started: dict[str, float] = {}

    def gc_timer(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started["at"] = time.perf_counter()
        elif "at" in started:
            pauses.append(time.perf_counter() - started.pop("at"))

    gc.callbacks.append(gc_timer)
    rss_before = _rss_kib()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    result = asyncio.run(_trial(options, rss_before))
    result.update(
        kind=options.kind,
        backend=options.backend,
        count=options.count,
        cpu=time.process_time() - cpu0,
        wall=time.perf_counter() - wall0,
        rss_before_kib=rss_before,
        peak_rss_kib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        gc_pause_max=max(pauses, default=0.0),
        gc_collections=len(pauses),
    )
    print(json.dumps(result))


# --------------------------------------------------------------------------------------------
# The parent


def _run_child(
    workdir: Path, server: MockServer, kind: str, backend: str = "aiohttp", count: int = 1000, seed: int = 0
) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "benchmarks.fan_in", "--child", "--kind", kind, "--backend", backend,
        "--port", str(server.port), "--server-pid", str(server.pid), "--workdir", str(workdir),
        "--count", str(count), "--poll", str(POLL_INTERVAL), "--end-min", str(END_MIN),
        "--end-max", str(END_MAX), "--seed", str(seed),
    ]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=PACKAGE_ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, _ = process.communicate(timeout=CHILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise RuntimeError(
            f"fan-in child for {kind} ({backend}, {count}) did not finish within {CHILD_TIMEOUT:g} s"
        ) from None
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 9)
            process.wait()
    if process.returncode != 0:
        raise RuntimeError(
            f"fan-in child for {kind} ({backend}, {count}) failed with status {process.returncode}"
        )
    return json.loads(out.strip().splitlines()[-1])


def summarize(trials: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = [x for t in trials for x in t["latencies"]]
    live_cpu = sum(t["live_cpu"] for t in trials)
    live_wall = sum(t["live_wall"] for t in trials)
    live_polls = sum(t["live_polls"] for t in trials)
    count = trials[0]["count"]
    return {
        "count": count,
        "trials": len(trials),
        "events": len(latencies),
        "expected_events": count * len(trials),
        "failures": sum(len(t["failures"]) for t in trials),
        "cpu_ms_per_poll": live_cpu / live_polls * 1000,
        "cpu_per_wall": live_cpu / live_wall,
        "polls_per_s": live_polls / live_wall,
        "server_cpu_per_wall": sum(t["server_cpu"] for t in trials) / live_wall,
        "server_ms_per_poll": sum(t["server_cpu"] for t in trials) / live_polls * 1000,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "max": max(latencies),
        "loop_lag_p99": percentile([x for t in trials for x in t["lags"]], 99),
        "gc_pause_max": max(t["gc_pause_max"] for t in trials),
        "kib_per_trigger": max((t["rss_live_kib"] - t["rss_before_kib"]) / count for t in trials),
        "rss_live_mib": max(t["rss_live_kib"] for t in trials) / 1024,
        "rss_before_mib": max(t["rss_before_kib"] for t in trials) / 1024,
        "clients_left": max(t["clients_left"] for t in trials),
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


def _label(kind: str, backend: str) -> str:
    return f"ours ({backend})" if kind == SCRIPTRUNNER else kind


def run(workdir: Path) -> tuple[list[Row], dict[str, Any]]:
    ensure_http_provider()
    trials: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    with MockServer() as server:
        for seed, (kind, backend, count) in enumerate(TRIALS):
            log(f"fan-in: {count:,} x {_label(kind, backend)} ...")
            before = server.job_requests()
            trial = _run_child(workdir, server, kind, backend, count, seed=seed)
            trial["polls"] = server.job_requests() - before
            trials.setdefault((kind, backend, count), []).append(trial)
        log("fan-in: CPU per request of the HTTP clients alone ...")
        floor = _run_child(workdir, server, "floor", count=FLOOR_REQUESTS)
    summary = {key: summarize(value) for key, value in trials.items()}
    return rows(summary, floor), {
        "summary": {f"{_label(k, b)} x {n}": s for (k, b, n), s in summary.items()},
        "client_cpu_ms_per_request": floor,
    }


def rows(summary: dict[tuple[str, str, int], dict[str, Any]], floor: dict[str, float]) -> list[Row]:
    name = "Trigger fan-in"
    ours = summary[(SCRIPTRUNNER, "aiohttp", TARGET_COUNT)]
    theirs = summary[(HTTP_SENSOR, "aiohttp", 1000)]
    ours_1k = summary[(SCRIPTRUNNER, "aiohttp", 1000)]
    ratio = ours["cpu_ms_per_poll"] / theirs["cpu_ms_per_poll"]
    latency_target = POLL_INTERVAL + LATENCY_SLACK
    out = [
        Row(name, f"CPU s / wall s, {TARGET_COUNT:,} live ScriptRunnerJobTriggers in one process (poll {POLL_INTERVAL:g} s)",
            f"{ours['cpu_per_wall']:.2f}", f"< {CPU_PER_WALL_TARGET}", ours["cpu_per_wall"] < CPU_PER_WALL_TARGET,
            f"{ours['polls_per_s']:.0f} polls/s"),
        Row(name, f"CPU per poll, ours at {TARGET_COUNT:,} vs HttpSensorTrigger at 1,000 (same endpoints)",
            f"{ratio:.2f}x", f"<= {CPU_RATIO_TARGET}x", ratio <= CPU_RATIO_TARGET,
            f"{ours['cpu_ms_per_poll']:.3f} ms vs {theirs['cpu_ms_per_poll']:.3f} ms; "
            f"ours at 1,000: {ours_1k['cpu_ms_per_poll'] / theirs['cpu_ms_per_poll']:.2f}x"),
        Row(name, f"detection latency p50 / p99 (job end -> event), {TARGET_COUNT:,} triggers",
            f"{ours['p50']:.2f} s / {ours['p99']:.2f} s", f"p99 <= {latency_target:g} s", ours["p99"] <= latency_target,
            f"max {ours['max']:.2f} s, {ours['events']:,} events; event-loop lag p99 {ours['loop_lag_p99'] * 1000:.0f} ms, "
            f"longest GC pause {ours['gc_pause_max'] * 1000:.0f} ms"),
        Row(name, f"memory per live trigger above the baseline, {TARGET_COUNT:,} triggers (RSS)",
            f"{ours['kib_per_trigger']:.1f} KiB", f"<= {MEMORY_TARGET_KIB:g} KiB", ours["kib_per_trigger"] <= MEMORY_TARGET_KIB,
            f"RSS {ours['rss_before_mib']:.0f} -> {ours['rss_live_mib']:.0f} MiB"),
        Row(name, f"mock jobs server's own CPU s / wall s at {TARGET_COUNT:,} triggers",
            f"{ours['server_cpu_per_wall']:.2f}", "(not the bottleneck)", None,
            f"{ours['server_ms_per_poll']:.3f} ms per poll"),
        Row(name, "shared clients still open after every trigger ended",
            str(max(s["clients_left"] for s in summary.values())), "0", all(s["clients_left"] == 0 for s in summary.values())),
    ]  # fmt: skip
    for (kind, backend, count), s in summary.items():
        if s["failures"] or s["events"] != s["expected_events"]:
            out.append(
                Row(name, f"{_label(kind, backend)} x {count:,}: events", f"{s['events']:,} ({s['failures']} wrong)",
                    f"{s['expected_events']:,}", False)
            )  # fmt: skip
    out.append(
        Row(name, f"HTTP client alone, CPU ms per request ({' / '.join(floor)})",
            " / ".join(f"{ms:.3f}" for ms in floor.values()), "(reference)", None, "50 in flight, same server")
    )  # fmt: skip
    return out


def growth_table(summary: dict[str, dict[str, Any]]) -> str:
    """CPU per poll, CPU/wall, memory and latency against trigger count, one line per trial kind."""
    lines = [
        "| triggers | client | CPU ms / poll | CPU s / wall s | polls / s | RSS live (MiB) | KiB / trigger | p50 / p99 latency (s) | loop lag p99 (ms) | server CPU s / wall s |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for label, s in sorted(summary.items(), key=lambda item: (item[1]["count"], item[0])):
        lines.append(
            f"| {s['count']:,} | {label.split(' x ')[0]} | {s['cpu_ms_per_poll']:.3f} | {s['cpu_per_wall']:.2f} | "
            f"{s['polls_per_s']:.0f} | {s['rss_live_mib']:.0f} | {s['kib_per_trigger']:.1f} | "
            f"{s['p50']:.2f} / {s['p99']:.2f} | {s['loop_lag_p99'] * 1000:.0f} | {s['server_cpu_per_wall']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fan_in")
    parser.add_argument("--child", action="store_true", required=True)
    parser.add_argument("--kind", choices=(SCRIPTRUNNER, HTTP_SENSOR, "floor"), required=True)
    parser.add_argument("--backend", choices=("aiohttp", "httpx"), default="aiohttp")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--server-pid", type=int, default=0)
    parser.add_argument("--workdir", default="")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--poll", type=float, default=POLL_INTERVAL)
    parser.add_argument("--end-min", type=float, default=END_MIN)
    parser.add_argument("--end-max", type=float, default=END_MAX)
    parser.add_argument("--seed", type=int, default=0)
    child(parser.parse_args())


if __name__ == "__main__":
    main()
