"""What the benchmarks share: environment, the bundled server, statistics, result rows."""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
CONN_ENV = "AIRFLOW_CONN_{}"
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def prepare_environment(workdir: Path) -> None:
    """Point Airflow at a scratch home before anything imports it."""
    os.environ.setdefault("AIRFLOW_HOME", str(workdir / "airflow-home"))
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"


def route_task_log(path: Path) -> None:
    """
    Send what operators, hooks and triggers log to ``path`` instead of the terminal.

    Airflow's own structlog chain (formatting included) stays in place, as in a task, so its
    cost is part of what is measured; only the destination changes.
    """
    import airflow.sdk  # noqa: F401 - configures structlog
    import structlog

    factory = structlog.get_config()["logger_factory"]
    if hasattr(factory, "io"):
        factory.io = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the process
    else:  # pragma: no cover - another structlog setup: keep it, but off the terminal
        structlog.configure(
            # The benchmark process's whole life: closed when it exits.
            logger_factory=structlog.WriteLoggerFactory(file=open(path, "a", encoding="utf-8"))  # noqa: SIM115
        )


def set_connection(conn_id: str, port: int, conn_type: str = "scriptrunner") -> None:
    """Define an Airflow connection to ``127.0.0.1:port`` through its environment variable."""
    value = {"conn_type": conn_type, "host": HOST, "port": port, "schema": "http"}
    os.environ[CONN_ENV.format(conn_id.upper())] = json.dumps(value)


SERVER_SITE = Path(__file__).resolve().parent / "_server_site"


def server_has_nagle() -> bool:
    """Whether the bundled server, as shipped, answers with Nagle's algorithm on (see ``_server_site``)."""
    from airflow_provider_scriptrunner.testing.server import ScriptRunnerRequestHandler

    return not ScriptRunnerRequestHandler.disable_nagle_algorithm


@contextlib.contextmanager
def bundled_server(
    directory: Path,
    scripts: dict[str, Any],
    conn_id: str = "scriptrunner_default",
    *,
    nodelay: bool = True,
    **runner: Any,
) -> Iterator[Any]:
    """
    The bundled script-runner server (own process group, 127.0.0.1), always stopped.

    :param nodelay: answer with TCP_NODELAY, as the real (Node.js) server does; ``False`` runs
        the bundled server exactly as shipped.
    """
    from airflow_provider_scriptrunner.testing.harness import ScriptRunnerServerProcess

    server = ScriptRunnerServerProcess(directory, scripts, runner=runner or None)
    saved = os.environ.get("PYTHONPATH")
    try:
        if nodelay and server_has_nagle():
            # The harness passes our environment on to the server: its interpreter then imports
            # _server_site/sitecustomize.py at start-up.
            os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SERVER_SITE), saved]))
        try:
            server.start()
        finally:
            if saved is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = saved
        set_connection(conn_id, server.port)
        yield server
    finally:
        server.stop()
        os.environ.pop(CONN_ENV.format(conn_id.upper()), None)


class FakeTI:
    """Just enough of a task instance for ``execute`` (as in the operator tests): the first try."""

    def __init__(self) -> None:
        self.xcom: dict[str, Any] = {}
        self.try_number = 1
        self.start_date = None  # the deadline then counts from execute()

    def xcom_push(self, key: str, value: Any) -> None:
        json.dumps(value)
        self.xcom[key] = value


def make_context() -> dict[str, Any]:
    return {"ti": FakeTI()}


# --------------------------------------------------------------------------------------------
# Statistics


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (p99 of 1,000 samples is the 990th smallest)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: list[float]) -> float:
    return statistics.median(values)


def interleaved(runs: int, variants: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """
    Run each variant ``runs`` times, round robin, rotating who goes first in each round.

    Rotation keeps a slow moment of the (shared, contended) machine from landing on one
    variant only.
    """
    names = list(variants)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_number in range(runs):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(variants[name]())
    return samples


def paired_ratio(samples: dict[str, list[float]], name: str, baseline: str) -> float:
    """
    Median over rounds of ``name``'s time / ``baseline``'s time in the same round.

    Both ran moments apart, so a slow spell of the shared machine mostly cancels out, which a
    ratio of two medians does not do.
    """
    return median([a / b for a, b in zip(samples[name], samples[baseline], strict=True)])


def timed(function: Callable[[], Any]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


# --------------------------------------------------------------------------------------------
# Results


@dataclass
class Row:
    """One line of the results table."""

    benchmark: str
    metric: str
    value: str
    target: str = ""
    met: bool | None = None
    note: str = ""

    @property
    def verdict(self) -> str:
        return {True: "met", False: "MISSED", None: ""}[self.met]


def render_table(rows: list[Row]) -> str:
    lines = ["| benchmark | metric | measured | target | result |", "| --- | --- | --- | --- | --- |"]
    for row in rows:
        value = row.value + (f" ({row.note})" if row.note else "")
        lines.append(f"| {row.benchmark} | {row.metric} | {value} | {row.target} | {row.verdict} |")
    return "\n".join(lines)


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def machine_info() -> dict[str, str]:
    return {
        "CPU": cpu_model(),
        "cores": str(os.cpu_count()),
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "Airflow": _version("apache-airflow"),
        "apache-airflow-providers-http": _version("apache-airflow-providers-http"),
        "httpx": _version("httpx"),
        "requests": _version("requests"),
        "aiohttp": _version("aiohttp"),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def stop_group(process: subprocess.Popen[Any], grace: float) -> None:
    """SIGTERM the process group of ``process``, SIGKILL whatever of it is left after ``grace`` seconds."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
