"""
A tiny asyncio HTTP/1.1 server that answers ``GET /jobs/{id}`` for the trigger fan-in benchmark.

1,000 real scripts on the bundled server would mean 1,000 shell processes and 3,000 server
threads on a 2-core machine, whose cost would swamp what is measured (the triggers' own CPU),
so the fan-in benchmark polls this server instead. It keeps no table: a job id
``bench_<end-epoch-ms>_<n>`` carries the moment the job ends. Before it the job is ``running``,
after it ``succeeded``, with the same fields the real server sends. With the request header
``X-Absent-While-Running: 1`` a running job is answered ``404 JOB_NOT_FOUND`` instead: that is
what ``HttpSensorTrigger`` (which fires on the first non-404 answer) waits on, on the same URL.

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


class MockJobsServer:
    def __init__(self) -> None:
        self.job_requests = 0

    def answer(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict]:
        if method == "GET" and path == "/__stats":
            return 200, {"ok": True, "jobRequests": self.job_requests}
        parts = path.split("/")
        if method == "GET" and len(parts) == 3 and parts[1] == "jobs":
            self.job_requests += 1
            job_id = parts[2]
            try:
                end_ms = int(job_id.split("_")[1])
            except (IndexError, ValueError):
                return 404, {
                    "ok": False,
                    "error": {"code": "JOB_NOT_FOUND", "message": f"job not found: {job_id}"},
                }
            now_ms = int(time.time() * 1000)
            if now_ms < end_ms and headers.get("x-absent-while-running") == "1":
                return 404, {
                    "ok": False,
                    "error": {"code": "JOB_NOT_FOUND", "message": f"job not found: {job_id}"},
                }
            return 200, job_body(job_id, end_ms, now_ms)
        return 404, {
            "ok": False,
            "error": {"code": "NOT_FOUND", "message": f"route not found: {method} {path}"},
        }

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, version = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0") or 0)
                if length:
                    await reader.readexactly(length)
                status, payload = self.answer(method, target.split("?", 1)[0], headers)
                body = json.dumps(payload).encode()
                close = headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
                reason = "OK" if status == 200 else "Not Found"
                writer.write(
                    f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\n"
                    f"Content-Length: {len(body)}\r\n{'Connection: close' if close else 'Connection: keep-alive'}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()


async def serve(port: int, max_seconds: float) -> None:
    mock = MockJobsServer()
    server = await asyncio.start_server(mock.handle, HOST, port, backlog=4096)
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
