"""Shared fixtures. Airflow reads AIRFLOW_HOME at import, so it is set before anything imports airflow."""

from __future__ import annotations

import json
import os
import tempfile

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="scriptrunner-airflow-home-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

import pytest
import tenacity

from airflow_provider_scriptrunner.client import api
from airflow_provider_scriptrunner.testing.server import TERMINAL_STATUSES, Job

BASE_URL = "http://sr.test:8080"
TOKEN = "s3cr3t-token-value"


@pytest.fixture
def set_connection(monkeypatch):
    """Define the ``scriptrunner_default`` connection (JSON form) through its environment variable."""

    def _set(conn_id: str = "scriptrunner_default", **fields):
        fields.setdefault("conn_type", "scriptrunner")
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))

    return _set


@pytest.fixture
def conn(set_connection):
    """A plain connection to http://sr.test:8080 with no auth."""
    set_connection(host="sr.test", port=8080)
    return BASE_URL


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    """Keep the real retry rules but drop the backoff sleeps."""
    monkeypatch.setattr(api, "RETRY_WAIT", tenacity.wait_none())


#: Deterministic mixed ASCII / multi-byte UTF-8 text. Kept as source so that a script run by the
#: bundled server can print exactly what the tests expect (tests/integration writes it to a file).
MIXED_TEXT_SOURCE = """
import random


def mixed_text(size, seed=7):
    rng = random.Random(seed)
    pieces = ["a", "Z", " ", "\\n", "é", "ß", "中", "文", "€", "😀", "𝄞", "ok\\t"]
    out, total = [], 0
    while total < size:
        piece = rng.choice(pieces)
        out.append(piece)
        total += len(piece.encode())
    return "".join(out).encode()
"""
_namespace: dict = {}
exec(MIXED_TEXT_SOURCE, _namespace)
mixed_text = _namespace["mixed_text"]


#: 2026-01-01T00:00:00.000Z, when every job of job_body() was created.
JOB_CREATED_MS = 1_767_225_600_000


def job_body(job_id: str = "job_1_1", status: str = "running", **overrides):
    """A job object as the server returns it (the bundled server's serializer); ``overrides`` replace fields."""
    ended = status in TERMINAL_STATUSES
    job = Job(
        job_id=job_id,
        script_id="quick-echo",
        mode="async",
        status=status,
        code=(0 if status == "succeeded" else -1) if ended else None,
        created_ms=JOB_CREATED_MS,
        started_ms=JOB_CREATED_MS + 10,
        ended_ms=JOB_CREATED_MS + 1000 if ended else None,
    )
    return {"ok": True, **job.to_dict(), **overrides}


def log_page(
    streams: dict[str, bytes], stream: str, offset: int, limit: int, job_id: str, truncated: bool = False
) -> dict:
    """A log page of byte blobs exactly as script-runner pages them (U+FFFD where a page cuts a character)."""
    blob = streams[stream]
    end = min(len(blob), offset + limit) if offset < len(blob) else offset
    return {
        "ok": True,
        "jobId": job_id,
        "stream": stream,
        "offset": offset,
        "nextOffset": end,
        "totalSize": len(blob),
        "truncated": truncated,
        "data": blob[offset:end].decode("utf-8", errors="replace"),
    }


def log_page_callback(streams: dict[str, bytes], truncated: bool = False):
    """A requests-mock callback that pages byte blobs exactly as script-runner does."""
    from urllib.parse import parse_qs, urlsplit

    def callback(request, context):
        query = parse_qs(urlsplit(request.url).query)
        context.status_code = 200
        return log_page(
            streams,
            query["stream"][0],
            int(query.get("offset", ["0"])[0]),
            int(query.get("limit", ["65536"])[0]),
            request.path.split("/")[2],
            truncated,
        )

    return callback


@pytest.fixture
def task_log():
    """Everything operators, sensors and triggers log (Airflow 3 logs through structlog), as text."""
    import structlog.testing

    with structlog.testing.capture_logs() as entries:

        class Log:
            @property
            def text(self) -> str:
                lines = []
                for entry in entries:
                    event = str(entry.get("event", ""))
                    args = entry.get("positional_args")
                    lines.append(f"{entry.get('log_level', '')}: " + (event % args if args else event))
                return "\n".join(lines)

        yield Log()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):
    """
    After the last test of each module (its module fixtures torn down): no asyncio loop may be left
    running in this thread, or every later asyncio test would fail ("event loop is running"). Sync
    Playwright, for one, runs a loop while its context is open. Checked whatever the test order.
    """
    yield
    if nextitem is not None and nextitem.module is item.module:
        return
    import asyncio

    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(f"{item.module.__name__} left an asyncio loop running in the main thread: {running!r}")
