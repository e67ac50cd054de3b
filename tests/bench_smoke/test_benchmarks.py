"""
The benchmarks still run: each piece of ``make bench`` once, small (a few triggers, a 1 s job).

No speed or memory is asserted here (targets live in ``make bench`` itself); these catch a
benchmark that a change in the provider broke, as a task instance without ``try_number`` once
broke the deferred-mode run of the requests-per-job benchmark, found only by a full ``make bench``.
"""

from __future__ import annotations

import contextlib

import pytest

from benchmarks import fan_in, log_retrieval, requests_per_job, sync_overhead, triggerer_capacity
from benchmarks._common import Row, bundled_server, render_table


def test_sync_overhead_runs_every_variant(tmp_path):
    with bundled_server(tmp_path / "server", sync_overhead.SCRIPTS, "bench_smoke_sync") as server:
        variants = {
            "raw": sync_overhead.raw_run(server.url),
            "raw POST only": sync_overhead.raw_run(server.url, read_logs=False),
            "operator": sync_overhead.operator_run("bench_smoke_sync"),
            "operator, previous polling": sync_overhead.operator_run(
                "bench_smoke_sync", sync_overhead.OLD_SCHEDULE
            ),
        }
        for variant in variants.values():
            assert variant() > 0  # each asserts its own result


def test_log_memory_is_measured_on_the_whole_mib(tmp_path):
    with bundled_server(tmp_path / "server", log_retrieval.SCRIPTS, "bench_smoke_logs") as server:
        job_id = log_retrieval._finished_job(server.url)
        memory = log_retrieval.measure_memory("bench_smoke_logs", job_id)
    assert memory["peak_extra"] > 0 and memory["page"] > 0


@pytest.mark.parametrize("mode", ["worker", "deferred"])
def test_requests_per_job_runs_a_job_in_each_mode(tmp_path, monkeypatch, mode):
    monkeypatch.setattr(requests_per_job, "JOB_SECONDS", 1)
    target = requests_per_job._worker_mode if mode == "worker" else requests_per_job._deferred_mode
    with bundled_server(
        tmp_path / "server", requests_per_job.SCRIPTS, "bench_smoke_rpj", maxConcurrent=2
    ) as server:
        result = target("bench_smoke_rpj")
        requests = requests_per_job.count_requests(server)
    assert (result["status"], result["stdout"]) == ("succeeded", "slept 1 s\n")
    assert requests >= 3  # submit, at least one poll, the log


def test_fan_in_trials_run_on_both_clients_and_render(tmp_path, monkeypatch):
    # A short trial: 20 triggers, poll 0.5 s, jobs ending 2.5-3 s after the loop starts.
    monkeypatch.setattr(fan_in, "POLL_INTERVAL", 0.5)
    monkeypatch.setattr(fan_in, "END_MIN", 2.5)
    monkeypatch.setattr(fan_in, "END_MAX", 3.0)
    summary = {}
    with fan_in.MockServer(max_seconds=120) as server:
        for backend in ("aiohttp", "httpx"):
            trial = fan_in._run_child(tmp_path, server, fan_in.SCRIPTRUNNER, backend, count=20)
            summary[(fan_in.SCRIPTRUNNER, backend, 20)] = fan_in.summarize([trial])
        floor = fan_in._run_child(tmp_path, server, "floor", count=100)
    for s in summary.values():
        assert (s["events"], s["failures"], s["clients_left"]) == (20, 0, 0)
        assert s["cpu_ms_per_poll"] > 0 and s["kib_per_trigger"] > 0
    assert set(floor) == {
        "httpx, one shared client",
        "aiohttp, a session per request",
        "aiohttp, one shared session",
    }
    ours = summary[(fan_in.SCRIPTRUNNER, "aiohttp", 20)]
    rows = fan_in.rows(
        {
            (fan_in.SCRIPTRUNNER, "aiohttp", fan_in.TARGET_COUNT): ours,
            (fan_in.SCRIPTRUNNER, "aiohttp", 1000): ours,
            (fan_in.HTTP_SENSOR, "aiohttp", 1000): summary[(fan_in.SCRIPTRUNNER, "httpx", 20)],
        },
        floor,
    )
    assert all(isinstance(row, Row) for row in rows)
    assert "Trigger fan-in" in render_table(rows)
    table = fan_in.growth_table({f"ours ({b}) x {n}": s for (_, b, n), s in summary.items()})
    assert table.count("\n| 20 |") == 2


def _started_by(tmp_path):
    """Processes this test started that are still there: our children, or anything working in tmp_path."""
    import psutil

    mine = {p.pid for p in psutil.Process().children(recursive=True)}
    for process in psutil.process_iter(["cwd"]):
        with contextlib.suppress(psutil.Error):
            if str(tmp_path) in (process.info["cwd"] or ""):
                mine.add(process.pid)
    return mine


def test_triggerer_capacity_runs_tiny_trials_in_a_real_triggerer(tmp_path):
    # 5 deferred run-script tasks, then 5 DateTimeTriggers, each in a real `airflow triggerer`:
    # poll 1 s, a line of output every 0.5 s.
    timing = triggerer_capacity.Timing(
        poll=1, line_every=0.5, window=3, pre_end=1, end_spread=1, idle=1, ramp_base=5, drain=20
    )
    kind, floor = triggerer_capacity.SCRIPTRUNNER, triggerer_capacity.DATETIME
    _, details = triggerer_capacity.run(tmp_path, trials=((kind, 5), (floor, 5)), timing=timing)
    assert not _started_by(tmp_path)
    assert not details["failed"]
    assert details["trials"][(floor, 5)]["events"] == 5
    s = details["trials"][(kind, 5)]
    assert (s["events"], s["missing"], s["running_by_window"]) == (5, 0, 5)
    assert s["lines_written"] > 5 and s["lines_logged"] == s["lines_written"]
    assert (s["lines_lost"], s["lines_doubled"], s["lines_foreign"]) == (0, 0, 0)
    assert s["cpu_ms_per_trigger_poll"] > 0 and s["polls_per_s"] > 0
    # One open trigger log file per running trigger, in the supervisor.
    assert s["fds_live"]["supervisor"] >= s["fds_idle"]["supervisor"] + 5
    assert 0 < s["p50"] <= s["p99"] < 10
    # Every row and the table render from such a trial, standing in for each kind and size.
    stand_in = {
        (k, n): {**s, "kind": k, "count": n}
        for k in triggerer_capacity.KINDS
        for n in (triggerer_capacity.TARGET_COUNT, triggerer_capacity.LARGE_COUNT)
    }
    rows = triggerer_capacity.rows(stand_in, timing)
    assert len(rows) == 11 and all(isinstance(row, Row) for row in rows)
    assert "Triggerer capacity" in render_table(rows)
    assert triggerer_capacity.growth_table(stand_in).count("\n| 1,000 |") == 4
