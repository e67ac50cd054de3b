"""
A minimal asyncio HTTP/1.1 server that answers ``GET /jobs/{id}`` for the trigger fan-in benchmark.

10,000 real scripts on the bundled server would mean 10,000 shell processes and 30,000 server
threads on a 2-core machine, whose cost would swamp what is measured (the triggers' own CPU),
so the fan-in benchmark polls this server instead. It keeps no table: a job id
``bench_<end-epoch-ms>_<n>`` carries the moment the job ends. Before it the job is ``running``,
after it ``succeeded``, with the same fields the real server sends. With the request header
``X-Absent-While-Running: 1`` a running job is answered ``404 JOB_NOT_FOUND`` instead: that is
what ``HttpSensorTrigger`` (which fires on the first non-404 answer) waits on, on the same URL.

It must not be the bottleneck (its CPU is reported next to the triggers'): it is an
``asyncio.Protocol`` (no stream objects per connection), parses only the request line and the two
headers it needs, and keeps each job's encoded answers (one per state), so a poll costs a dict
lookup and a write.

``GET /__stats`` returns the number of job requests answered so far.

Run as ``python -m benchmarks.mock_jobs_server --port 0 --max-seconds 600``: binds 127.0.0.1
only, prints ``listening on PORT`` once bound, and exits by itself after ``--max-seconds``.
Standard library only, plus the bundled server's job serializer (itself standard library only).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from airflow_provider_scriptrunner.testing.server import Job

HOST = "127.0.0.1"
LISTENING_PREFIX = "listening on "
_ABSENT_HEADER = b"\r\nx-absent-while-running: 1"
_CLOSE_HEADER = b"\r\nconnection: close"


def job_body(job_id: str, end_ms: int, now_ms: int) -> dict:
    """The job object (the bundled server's serializer): running until ``end_ms``, then succeeded."""
    created = end_ms - 60_000
    done = now_ms >= end_ms
    job = Job(
        job_id=job_id,
        script_id="bench-sleep",
        mode="async",
        status="succeeded" if done else "running",
        code=0 if done else None,
        created_ms=created,
        started_ms=created + 5,
        ended_ms=end_ms if done else None,
    )
    return {"ok": True, **job.to_dict()}


def _response(status: int, payload: dict, close: bool) -> bytes:
    body = json.dumps(payload).encode()
    reason = "OK" if status == 200 else "Not Found"
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: {'close' if close else 'keep-alive'}\r\n\r\n"
    ).encode() + body


def _not_found(code: str, message: str) -> dict:
    return {"ok": False, "error": {"code": code, "message": message}}


class MockJobsServer:
    def __init__(self) -> None:
        self.job_requests = 0
        self._answers: dict[tuple[str, bool, bool, bool], bytes] = {}

    def answer(self, method: str, path: str, absent: bool, close: bool) -> bytes:
        if method == "GET" and path == "/__stats":
            return _response(200, {"ok": True, "jobRequests": self.job_requests}, close)
        parts = path.split("/")
        if method != "GET" or len(parts) != 3 or parts[1] != "jobs":
            return _response(404, _not_found("NOT_FOUND", f"route not found: {method} {path}"), close)
        self.job_requests += 1
        job_id = parts[2]
        try:
            end_ms = int(job_id.split("_")[1])
        except (IndexError, ValueError):
            return _response(404, _not_found("JOB_NOT_FOUND", f"job not found: {job_id}"), close)
        done = time.time() * 1000 >= end_ms
        key = (job_id, done, absent and not done, close)
        cached = self._answers.get(key)
        if cached is None:
            if absent and not done:
                cached = _response(404, _not_found("JOB_NOT_FOUND", f"job not found: {job_id}"), close)
            else:
                cached = _response(200, job_body(job_id, end_ms, end_ms if done else end_ms - 1), close)
            self._answers[key] = cached
        return cached


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
            self.transport.write(
                self.server.answer(method, target.split("?", 1)[0], _ABSENT_HEADER in lowered, close)
            )
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
