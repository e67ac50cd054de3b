"""
``python -m benchmarks`` (``make bench``): run the benchmarks, print the table, write RESULTS.md.

``--only sync,logs,fan-in,requests,triggerer,trigger-end`` runs a subset and only prints it (RESULTS.md is written by
full runs only). Everything runs in a scratch directory that is removed afterwards; every server
is stopped by the benchmark that started it.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import (
    Row,
    load_average,
    log,
    machine_info,
    prepare_environment,
    render_table,
    route_task_log,
)

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
#: Everything below this line in RESULTS.md is written by hand and kept by every run.
NOTES_MARKER = "<!-- Notes below this line are kept by `make bench`. -->"
NAMES = ("sync", "logs", "fan-in", "requests", "triggerer", "trigger-end")

METHOD = """\
How each row is measured (details in each module's docstring, `benchmarks/*.py`):

- Servers: the bundled server (`airflow_provider_scriptrunner.testing`, started through its harness
  in a scratch directory, 127.0.0.1, own process group, stopped afterwards). It runs with TCP_NODELAY,
  as the real Node.js server does (see `benchmarks/_server_site/sitecustomize.py`); the rows marked
  "server as shipped" use it unmodified. The fan-in rows poll `benchmarks/mock_jobs_server.py`
  instead (10,000 real scripts would mean 10,000 shells and 30,000 server threads on 2 cores).
- Timing ratios: the variants run interleaved in the same run (round robin, rotating which goes
  first in each round); the ratio is the median over rounds of A's time / B's time in that round
  (a slow spell of the shared machine then hits both), next to the two medians in ms.
- Sync-run overhead: `ScriptRunnerRunScriptOperator(deferrable=False).execute()` on `echo hello` (fresh
  operator each run) vs the cheapest raw sequence with the same result:
  `requests.post(url + "/run", json={"scriptId": ..., "mode": "sync"})`, then a `requests.get` of
  `/jobs/{id}/logs` for each stream the job reports non-empty (for reference: the POST alone).
- Trigger fan-in: 1,000, 5,000 and 10,000 triggers (poll_interval 10 s) per child process, ours on
  each client library of the async hook (the shared aiohttp session, the default, at every size; a
  shared httpx client at 1,000 and 5,000), HttpSensorTrigger at 1,000 (twice, interleaved with ours); starts spread over the first
  poll interval, jobs ending evenly between 23 and 30 s; CPU per poll, CPU/wall, the mock server's
  CPU and memory (RSS above the child's RSS before the first trigger, per trigger) measured while
  all of them are live (process CPU time; polls counted by the server); latency = event time - job
  end. The "HTTP client alone" row times 2,000 GETs per client, 50 in flight, in a child.
- Log retrieval: 1 MiB of 80-character lines; `ScriptRunnerHook.iter_log` (default page size) vs one
  `requests.get(.../logs?limit=1048576)`; memory: tracemalloc peak above the starting point while
  `StreamFollower.pump` (the run operator's log streaming, default 64 KiB pages and
  max_output_bytes, the kept end of the output included) writes the 1 MiB into the task log; the
  target is a bound that does not grow with the output: 4 pages plus max_output_bytes.
- Requests per job: a real 60 s job per mode, both at once, counted from each server's request log;
  the 0.1 s script is timed from `execute()` to its return (submit and final log reads included).
- Triggerer capacity: one real `airflow triggerer` (Airflow's supervisor and its trigger-runner
  subprocess, SQLite, no scheduler, no worker) per trial; N + 1 task instances of a mapped task in
  one DAG run, deferred by a child process through the operators' own deferral (the run operator's
  `_defer`, the sensors' `execute`) into `Trigger` rows built from each trigger's `serialize()`; the
  last one a warm-up. Jobs from the mock server write a stdout line every 5 s and end evenly over
  10 s, the first one 21 s after a live window of at least 20 s with every trigger running (seen by
  its per-task trigger log file). CPU (user + system of every process of the triggerer), RSS and open
  file descriptors from psutil, sampled every second; CPU per trigger per poll = CPU s in the live
  window / (window / 10 s) / N; latency = `task_instance.scheduled_dttm` (written by
  `Trigger.submit_event`) - job end, split at the trigger's "Trigger fired event" log line; output
  lines are read back from every per-task trigger log file.
- Rows marked "(before)" run the code as it was before the benchmarks' fixes, side by side.
"""


def write_results(rows: list[Row], info: dict[str, str], seconds: float, sections: dict[str, str]) -> None:
    notes = ""
    if RESULTS.exists():
        text = RESULTS.read_text(encoding="utf-8")
        if NOTES_MARKER in text:
            notes = text.split(NOTES_MARKER, 1)[1].strip("\n")
    machine = "\n".join(f"| {key} | {value} |" for key, value in info.items())
    met = sum(1 for row in rows if row.met is True)
    judged = sum(1 for row in rows if row.met is not None)
    RESULTS.write_text(
        "# Benchmark results\n\n"
        f"Written by `make bench` (`python -m benchmarks`, {seconds:.0f} s). {met} of {judged} targets met.\n\n"
        f"{render_table(rows)}\n\n"
        + "".join(f"## {title}\n\n{body}\n\n" for title, body in sections.items())
        + "## Machine\n\n| | |\n| --- | --- |\n"
        f"{machine}\n\n"
        "## Method\n\n"
        f"{METHOD}\n"
        f"{NOTES_MARKER}\n\n{notes}\n",
        encoding="utf-8",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only", help=f"comma-separated subset of {', '.join(NAMES)}; prints without writing RESULTS.md"
    )
    options = parser.parse_args(argv)
    selected = set(NAMES) if not options.only else {name.strip() for name in options.only.split(",")}
    unknown = selected - set(NAMES)
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {', '.join(NAMES)}")

    # A stop by SIGTERM unwinds like Ctrl-C: every benchmark stops what it started.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="scriptrunner-bench-"))
    try:
        prepare_environment(workdir)
        route_task_log(workdir / "task.log")
        from benchmarks import (
            fan_in,
            log_retrieval,
            requests_per_job,
            sync_overhead,
            trigger_end,
            triggerer_capacity,
        )

        info = machine_info()
        info["load average (1/5/15 min) at start"] = load_average()
        if selected & {"fan-in", "triggerer"}:
            fan_in.ensure_http_provider()
            info["apache-airflow-providers-http"] = machine_info()["apache-airflow-providers-http"]
        rows: list[Row] = []
        sections: dict[str, str] = {}
        if "sync" in selected:
            rows += sync_overhead.run(workdir)[0]
        if "requests" in selected:
            rows += requests_per_job.quick_result(workdir)[0]
        if "logs" in selected:
            rows += log_retrieval.run(workdir)[0]
        # The 60 s jobs wait in the background while the fan-in trials run in child processes.
        with (
            requests_per_job.LongJobs(workdir)
            if "requests" in selected
            else contextlib.nullcontext() as long_jobs
        ):
            if "fan-in" in selected:
                fan_rows, fan_details = fan_in.run(workdir)
                rows += fan_rows
                sections["Trigger fan-in against trigger count"] = fan_in.growth_table(fan_details["summary"])
            if long_jobs is not None:
                rows += long_jobs.rows()
        # Alone on the machine: the triggerer's CPU is what it measures.
        if "triggerer" in selected:
            capacity_rows, capacity_details = triggerer_capacity.run(workdir)
            rows += capacity_rows
            sections["Triggerer capacity against trigger count"] = triggerer_capacity.growth_table(
                capacity_details["trials"]
            )
        # Real Airflow components (the e2e deployment): alone on the machine, like the triggerer.
        if "trigger-end" in selected:
            end_rows, end_details = trigger_end.run(workdir)
            rows += end_rows
            sections["A deferred task that ends in the triggerer"] = trigger_end.section(end_details)
        info["load average (1/5/15 min) at end"] = load_average()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    seconds = time.perf_counter() - started
    print(render_table(rows))
    print()
    for title, body in sections.items():
        print(f"{title}\n\n{body}\n")
    for key, value in info.items():
        print(f"{key}: {value}")
    if selected == set(NAMES):
        write_results(rows, info, seconds, sections)
        log(f"wrote {RESULTS} ({seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
