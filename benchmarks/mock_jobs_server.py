"""
A minimal asyncio HTTP/1.1 server that answers ``GET /jobs/{id}`` and ``GET /jobs/{id}/logs`` for
the trigger benchmarks (fan-in, and the real triggerer's capacity).

10,000 real scripts on the bundled server would mean 10,000 shell processes and 30,000 server
threads on a 2-core machine, whose cost would swamp what is measured (the triggers' own CPU),
so the trigger benchmarks poll this server instead. A job's id carries its whole plan:

- ``bench_<end-epoch-ms>_<n>``: a silent job that ends at that moment.
- ``live_<start-epoch-ms>_<end-epoch-ms>_<every-ms>_<n>``: a job that writes one line to stdout
  at its start and every ``every`` ms after it while it runs (``<job id> line 00007``), and ends
  at its end. Its stdout size grows line by line; ``/logs`` serves the bytes written so far, in
  pages, as the real server does; once ended its preview is the end of its output (the real
  server's default 4,096 bytes), as the real server's is.

Before its end a job is ``running``, after it ``succeeded``, with the same fields the real server
sends. With the request header ``X-Absent-While-Running: 1`` a running job is answered
``404 JOB_NOT_FOUND`` instead: that is what ``HttpSensorTrigger`` (which fires on the first
non-404 answer) waits on, on the same URL.

It must not be the bottleneck (its CPU is reported next to the triggers'): it is an
``asyncio.Protocol`` (no stream objects per connection), parses only the request line and the two
headers it needs, and keeps each job's latest encoded answer, so a poll costs a dict lookup and a
write.

``GET /__stats`` returns the number of job requests answered so far (``jobRequests``), of log
requests (``logRequests``) and of distinct jobs asked about (``jobsSeen``). ``GET /__jobs`` returns,
per ``live_`` job asked about: its end (``endMs``), the lines it wrote in all (``linesWritten``), the
lines the log pages served carried (``linesServed``, counted per page: a line served twice counts
twice), the bytes served more than once (``bytesServedTwice``), and its first and last poll.

Run as ``python -m benchmarks.mock_jobs_server --port 0 --max-seconds 600``: binds 127.0.0.1
only, prints ``listening on PORT`` once bound, and exits by itself after ``--max-seconds``.
Standard library only, plus the bundled server's job serializer (itself standard library only).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass
from urllib.parse import parse_qs

from airflow_provider_scriptrunner.testing.server import Job

HOST = "127.0.0.1"
LISTENING_PREFIX = "listening on "
_ABSENT_HEADER = b"\r\nx-absent-while-running: 1"
_CLOSE_HEADER = b"\r\nconnection: close"
#: The real server's default ``runner.previewMaxBytes``.
PREVIEW_MAX_BYTES = 4096
LIVE_PREFIX = "live_"


@dataclass(frozen=True)
class LivePlan:
    """What a ``live_`` job writes and when it ends, read from its id."""

    job_id: str
    start_ms: int
    end_ms: int
    every_ms: int

    @classmethod
    def parse(cls, job_id: str) -> LivePlan | None:
        parts = job_id.split("_")
        if len(parts) != 5 or parts[0] != LIVE_PREFIX.rstrip("_"):
            return None
        try:
            start, end, every = int(parts[1]), int(parts[2]), int(parts[3])
        except ValueError:
            return None
        return cls(job_id, start, end, every) if every > 0 and end >= start else None

    @property
    def line_bytes(self) -> int:
        return len(self.line(0))

    def line(self, number: int) -> str:
        return f"{self.job_id} line {number:05d}\n"

    @property
    def total_lines(self) -> int:
        """Lines written in all: one at the start and one every ``every_ms`` before the end."""
        return -(-(self.end_ms - self.start_ms) // self.every_ms) if self.end_ms > self.start_ms else 0

    def lines_at(self, now_ms: float) -> int:
        if now_ms < self.start_ms:
            return 0
        return min(self.total_lines, int((now_ms - self.start_ms) // self.every_ms) + 1)

    def text(self, start_byte: int, end_byte: int) -> str:
        """Bytes ``[start_byte, end_byte)`` of the output (ASCII: one character per byte)."""
        size = self.line_bytes
        first, last = start_byte // size, -(-end_byte // size)
        whole = "".join(self.line(n) for n in range(first, last))
        return whole[start_byte - first * size : end_byte - first * size]


def job_body(job_id: str, end_ms: int, now_ms: int, plan: LivePlan | None = None) -> dict:
    """The job object (the bundled server's serializer): running until ``end_ms``, then succeeded."""
    created = end_ms - 60_000 if plan is None else plan.start_ms - 5
    done = now_ms >= end_ms
    job = Job(
        job_id=job_id,
        script_id="bench-sleep" if plan is None else "bench-live",
        mode="async",
        status="succeeded" if done else "running",
        code=0 if done else None,
        created_ms=created,
        started_ms=created + 5,
        ended_ms=end_ms if done else None,
    )
    if plan is not None:
        stdout = job.streams["stdout"]
        stdout.size = plan.lines_at(now_ms) * plan.line_bytes
        if done:
            stdout.preview = plan.text(max(0, stdout.size - PREVIEW_MAX_BYTES), stdout.size)
    return {"ok": True, **job.to_dict()}


def _response(status: int, payload: dict, close: bool) -> bytes:
    body = json.dumps(payload).encode()
    reason = {200: "OK", 400: "Bad Request"}.get(status, "Not Found")
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: {'close' if close else 'keep-alive'}\r\n\r\n"
    ).encode() + body


def _error(code: str, message: str) -> dict:
    return {"ok": False, "error": {"code": code, "message": message}}


@dataclass
class LiveRecord:
    """What a ``live_`` job was asked and served."""

    plan: LivePlan
    first_poll_ms: float
    last_poll_ms: float
    lines_served: int = 0
    bytes_served_twice: int = 0
    #: The bytes served so far, ``[served_from, served_up_to)`` (a follower reads them in order).
    served_from: int = 0
    served_up_to: int = 0

    def to_dict(self) -> dict:
        return {
            "endMs": self.plan.end_ms,
            "linesWritten": self.plan.total_lines,
            "linesServed": self.lines_served,
            "bytesServedTwice": self.bytes_served_twice,
            "firstPollMs": self.first_poll_ms,
            "lastPollMs": self.last_poll_ms,
        }


class MockJobsServer:
    def __init__(self) -> None:
        self.job_requests = 0
        self.log_requests = 0
        self._seen: set[str] = set()
        self._live: dict[str, LiveRecord] = {}
        self._answers: dict[tuple[str, bool, bool, bool], bytes] = {}
        #: The latest answer of each live job, keyed by what it depends on (lines written, ...).
        self._live_answers: dict[str, tuple[tuple[int, bool, bool], bytes]] = {}

    def answer(self, method: str, path: str, absent: bool, close: bool) -> bytes:
        path, _, query = path.partition("?")
        if method == "GET" and path == "/__stats":
            stats = {
                "ok": True,
                "jobRequests": self.job_requests,
                "logRequests": self.log_requests,
                "jobsSeen": len(self._seen),
            }
            return _response(200, stats, close)
        if method == "GET" and path == "/__jobs":
            jobs = {job_id: record.to_dict() for job_id, record in self._live.items()}
            return _response(200, {"ok": True, "jobs": jobs}, close)
        parts = path.split("/")
        if (
            method != "GET"
            or len(parts) not in (3, 4)
            or parts[1] != "jobs"
            or parts[3:] not in ([], ["logs"])
        ):
            return _response(404, _error("NOT_FOUND", f"route not found: {method} {path}"), close)
        job_id = parts[2]
        now_ms = time.time() * 1000
        plan = LivePlan.parse(job_id)
        if len(parts) == 4:
            self.log_requests += 1
            if plan is None:
                return _response(404, _error("JOB_NOT_FOUND", f"job not found: {job_id}"), close)
            return self._log_page(plan, parse_qs(query), now_ms, close)
        self.job_requests += 1
        self._seen.add(job_id)
        if plan is not None:
            return self._live_job(plan, now_ms, absent, close)
        try:
            end_ms = int(job_id.split("_")[1])
        except (IndexError, ValueError):
            return _response(404, _error("JOB_NOT_FOUND", f"job not found: {job_id}"), close)
        done = now_ms >= end_ms
        key = (job_id, done, absent and not done, close)
        cached = self._answers.get(key)
        if cached is None:
            if absent and not done:
                cached = _response(404, _error("JOB_NOT_FOUND", f"job not found: {job_id}"), close)
            else:
                cached = _response(200, job_body(job_id, end_ms, end_ms if done else end_ms - 1), close)
            self._answers[key] = cached
        return cached

    def _live_job(self, plan: LivePlan, now_ms: float, absent: bool, close: bool) -> bytes:
        record = self._live.get(plan.job_id)
        if record is None:
            record = self._live[plan.job_id] = LiveRecord(plan, now_ms, now_ms)
        record.last_poll_ms = now_ms
        done = now_ms >= plan.end_ms
        key = (plan.lines_at(now_ms), done, absent and not done)
        cached = self._live_answers.get(plan.job_id)
        if cached is not None and cached[0] == key and not close:
            return cached[1]
        if absent and not done:
            body = _error("JOB_NOT_FOUND", f"job not found: {plan.job_id}")
            answer = _response(404, body, close)
        else:
            answer = _response(200, job_body(plan.job_id, plan.end_ms, int(now_ms), plan), close)
        if not close:
            self._live_answers[plan.job_id] = (key, answer)
        return answer

    def _log_page(self, plan: LivePlan, query: dict[str, list[str]], now_ms: float, close: bool) -> bytes:
        stream = query.get("stream", ["stdout"])[-1]
        try:
            offset = int(query.get("offset", ["0"])[-1])
            limit = int(query.get("limit", [str(1 << 20)])[-1])
        except ValueError:
            return _response(400, _error("INVALID_ARGS", "offset and limit must be integers"), close)
        total = plan.lines_at(now_ms) * plan.line_bytes if stream == "stdout" else 0
        end = min(total, offset + max(0, limit)) if offset < total else offset
        data = plan.text(offset, end) if end > offset else ""
        record = self._live.get(plan.job_id)
        if record is not None and data:
            record.lines_served += data.count("\n")
            if record.served_up_to == record.served_from:  # nothing served yet
                record.served_from = offset
            overlap = min(end, record.served_up_to) - max(offset, record.served_from)
            record.bytes_served_twice += max(0, overlap)
            record.served_from = min(record.served_from, offset)
            record.served_up_to = max(record.served_up_to, end)
        page = {
            "ok": True,
            "jobId": plan.job_id,
            "stream": stream,
            "offset": offset,
            "nextOffset": end if end > offset else offset,
            "totalSize": total,
            "truncated": False,
            "data": data,
        }
        return _response(200, page, close)


class _Connection(asyncio.Protocol):
    def __init__(self, server: MockJobsServer) -> None:
        self.server = server
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end]
            lowered = head.lower()
            length = 0
            if b"\r\ncontent-length:" in lowered:
                length = int(lowered.split(b"\r\ncontent-length:", 1)[1].split(b"\r\n", 1)[0])
            if len(self.buffer) < end + 4 + length:
                return  # the body is still coming
            self.buffer = self.buffer[end + 4 + length :]
            try:
                method, target, version = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            except ValueError:
                self.transport.close()
                return
            close = _CLOSE_HEADER in lowered or version == "HTTP/1.0"
            self.transport.write(self.server.answer(method, target, _ABSENT_HEADER in lowered, close))
            if close:
                self.transport.close()
                self.transport = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(port: int, max_seconds: float) -> None:
    mock = MockJobsServer()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(mock), HOST, port, backlog=4096)
    print(f"{LISTENING_PREFIX}{server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await asyncio.sleep(max_seconds)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mock_jobs_server")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--max-seconds", type=float, default=600.0, help="exit after this long, whatever happens"
    )
    options = parser.parse_args()
    asyncio.run(serve(options.port, options.max_seconds))


if __name__ == "__main__":
    main()
