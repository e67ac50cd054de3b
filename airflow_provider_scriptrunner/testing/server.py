"""A script-runner compatible HTTP server, written with the Python standard library only.

The real script-runner is a Node.js service; this module re-implements the HTTP contract described in
``script-runner-api.md`` so that the provider (and DAG authors) can test against real loopback HTTP
without Node. It reads the same ``config.json`` / ``scripts.json`` files::

    python -m airflow_provider_scriptrunner.testing.server --config /path/to/config.json
    CONFIG_FILE=/path/to/config.json python -m airflow_provider_scriptrunner.testing.server

Once the socket is bound, exactly one line ``script-runner listening on http://HOST:PORT`` is printed
to stdout (``--port 0`` picks an ephemeral port, so a parent process reads the real one from there).

Where this server knowingly differs from the real one:

* The default host is ``127.0.0.1``; the real server defaults to ``0.0.0.0``. ``--host`` and
  ``--port`` override ``server.host`` / ``server.port``.
* ``runner.killGraceSec`` is an extension, off unless the config sets it. Without it the server does
  what the real one does: cancel and timeout send SIGTERM only, so a script that ignores SIGTERM keeps
  running and its job stays ``running``. With it, a script group still alive that many seconds after
  that SIGTERM gets SIGKILL.
* The process-group ids of live scripts are listed in ``running.pgids`` next to the job store, and on
  SIGTERM/SIGINT the server terminates those groups before exiting (SIGTERM, then SIGKILL for groups
  still alive after :data:`SHUTDOWN_GRACE_SEC`, or after ``killGraceSec`` when that is shorter). The
  real server leaves such scripts running, detached. Like the real server after a crash, the jobs are
  NOT recorded as ended: a restart reloads them as ``failed`` with code ``-1``.
* A job reloaded as ``failed`` after a restart gets its previews from the end of its stored log (what
  the script wrote past ``maxLogBytesPerStream`` before the restart is gone); the contract does not say.
* ``args.itemPattern`` is compiled with Python's :mod:`re` and applied with search semantics (like
  JavaScript's ``RegExp.prototype.test``): anchor it with ``^...$`` to match whole arguments.
* A request body over 2 MiB is answered with ``413`` and an ``INTERNAL_ERROR`` error body.
* Error messages: the ones the contract quotes are the real server's, word for word. The others are
  this server's own, in the same style: ``script not found: ID``, ``job not found: ID``,
  ``arg[N] too long: max M``, ``stream must be stdout or stderr``, ``request body too large`` (the
  413) and, as ``400 INVALID_ARGS`` where the contract does not say what happens, ``arg[N] must not
  contain NUL``, ``arg[N] must be valid unicode`` (a lone surrogate), ``mode must be sync or async``,
  ``offset must be a non-negative integer`` (also ``limit``), ``invalid Content-Length header`` and
  ``invalid chunked body``.
* Other requests the contract leaves open: ``args: null`` means ``[]``; an empty body, or a JSON body
  that is not an object, is treated as ``{}`` (hence ``SCRIPT_NOT_FOUND``); the logs ``stream``
  defaults to ``stdout``.

POSIX only: scripts run in their own process group (``start_new_session``) and are signalled with
:func:`os.killpg`.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import parse_qs, unquote, urlsplit

if TYPE_CHECKING:
    from collections.abc import Callable

LISTENING_PREFIX = "script-runner listening on "
RUNNING_PGIDS_FILENAME = "running.pgids"
#: Exit status when the listening socket cannot be bound because the address is in use
#: (``EX_TEMPFAIL`` from sysexits.h), so that a supervising harness knows a retry may succeed.
EXIT_ADDRESS_IN_USE = 75

MAX_BODY_BYTES = 2 * 1024 * 1024
# An oversized body is still read (and dropped) up to this size before answering 413: a client such
# as requests sends the whole body before reading the response, and closing a socket with unread data
# makes the kernel reset the connection, so the client would see a reset instead of our 413.
_MAX_DRAIN_BYTES = 32 * 1024 * 1024

DEFAULT_LOG_LIMIT = 65536
MAX_LOG_LIMIT = 1048576
_PIPE_CHUNK = 65536

STREAMS = ("stdout", "stderr")
MODES = ("sync", "async")
#: On SIGTERM/SIGINT the server gives its scripts this long (or ``killGraceSec``, when shorter) to
#: exit after SIGTERM before it SIGKILLs their groups, whether or not ``killGraceSec`` is set.
SHUTDOWN_GRACE_SEC = 2.0
#: The statuses of a finished job, as the server spells them (the contract's own words, kept apart from
#: the client's models: this server is an independent implementation to test the client against).
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "timed_out", "canceled"})


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------


class ConfigError(Exception):
    """The configuration, the scripts file or the job store cannot be used."""


@dataclass(frozen=True)
class ScriptSpec:
    """One whitelisted script from ``scripts.json``.

    :param id: the ``scriptId`` clients send.
    :param path: absolute path of the script file.
    :param mode: ``sync``, ``async`` or ``None`` (then ``runner.defaultMode`` applies).
    :param timeout_sec: seconds before the script is stopped; ``0`` means no timeout.
    :param max_items: most arguments accepted.
    :param item_pattern: regular expression each argument must match, or ``None``.
    :param item_max_length: longest argument accepted, in characters.
    """

    id: str
    path: Path
    mode: str | None = None
    timeout_sec: float = 0
    max_items: int = 10
    item_pattern: re.Pattern[str] | None = None
    item_max_length: int = 1024


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server needs, with relative paths already resolved."""

    host: str
    port: int
    max_concurrent: int
    default_mode: str
    max_log_bytes_per_stream: int
    preview_max_bytes: int
    job_store_file: Path
    logs_dir: Path
    #: Seconds after a cancel/timeout SIGTERM before SIGKILL; ``None`` (the default): never.
    kill_grace_sec: float | None
    scripts: dict[str, ScriptSpec]

    @property
    def running_pgids_file(self) -> Path:
        """Where the process-group ids of live scripts are listed (next to the job store)."""
        return self.job_store_file.parent / RUNNING_PGIDS_FILENAME

    @property
    def shutdown_grace_sec(self) -> float:
        """How long a shutting-down server waits after SIGTERM before it SIGKILLs script groups."""
        if self.kill_grace_sec is None:
            return SHUTDOWN_GRACE_SEC
        return min(self.kill_grace_sec, SHUTDOWN_GRACE_SEC)


def _read_json_object(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from exc
    except ValueError as exc:
        raise ConfigError(f"{what} {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must contain a JSON object")
    return data


def _section(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {key!r} must be an object")
    return value


def _number(
    data: dict[str, Any], key: str, default: float, where: str, *, minimum: float, integer: bool = True
) -> Any:
    value = data.get(key, default)
    # bool is an int subclass in Python; "maxConcurrent": true is a mistake, not 1.
    allowed = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, allowed) or value < minimum:
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{where}: {key!r} must be {kind} >= {minimum}, got {value!r}")
    return value


def _resolve(base_dir: Path, value: Any, where: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} must be a non-empty string, got {value!r}")
    return (base_dir / value).resolve()


def _load_script(item: Any, base_dir: Path, where: str) -> ScriptSpec:
    if not isinstance(item, dict):
        raise ConfigError(f"{where} must be an object")
    script_id = item.get("id")
    if not isinstance(script_id, str) or not script_id:
        raise ConfigError(f"{where}: 'id' is required and must be a non-empty string")
    where = f"{where} ({script_id})"
    mode = item.get("mode")
    if mode is not None and mode not in MODES:
        raise ConfigError(f"{where}: 'mode' must be 'sync' or 'async', got {mode!r}")
    args = _section(item, "args", where)
    pattern = args.get("itemPattern")
    compiled = None
    if pattern is not None:
        if not isinstance(pattern, str):
            raise ConfigError(f"{where}: 'args.itemPattern' must be a string")
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"{where}: invalid 'args.itemPattern' {pattern!r}: {exc}") from exc
    return ScriptSpec(
        id=script_id,
        path=_resolve(base_dir, item.get("path"), f"{where}: 'path'"),
        mode=mode,
        timeout_sec=_number(item, "timeoutSec", 0, where, minimum=0, integer=False),
        max_items=_number(args, "maxItems", 10, f"{where} args", minimum=0),
        item_pattern=compiled,
        item_max_length=_number(args, "itemMaxLength", 1024, f"{where} args", minimum=0),
    )


def load_scripts(path: str | os.PathLike[str]) -> dict[str, ScriptSpec]:
    """Read a ``scripts.json`` whitelist; script paths are relative to the file.

    :param path: the scripts file.
    :raises ConfigError: when the file is missing, malformed, or has duplicate ids.
    """
    path = Path(path).resolve()
    data = _read_json_object(path, "scripts file")
    items = data.get("scripts")
    if not isinstance(items, list):
        raise ConfigError(f"scripts file {path}: 'scripts' must be an array")
    scripts: dict[str, ScriptSpec] = {}
    for index, item in enumerate(items):
        spec = _load_script(item, path.parent, f"scripts file {path}: scripts[{index}]")
        if spec.id in scripts:
            raise ConfigError(f"scripts file {path}: duplicate script id {spec.id!r}")
        scripts[spec.id] = spec
    return scripts


def resolve_job_store_file(config_path: str | os.PathLike[str]) -> Path:
    """Where a config's job store lives, without checking the rest of the configuration.

    :param config_path: the config file.
    :raises ConfigError: when the file cannot be read.
    """
    path = Path(config_path).resolve()
    runner = _section(_read_json_object(path, "config file"), "runner", f"config file {path}")
    return _resolve(path.parent, runner.get("jobStoreFile", "./jobs.json"), "runner.jobStoreFile")


def load_config(
    path: str | os.PathLike[str], *, host: str | None = None, port: int | None = None
) -> ServerConfig:
    """Read ``config.json`` and the scripts file it names.

    :param path: the config file; relative paths inside it are relative to its directory.
    :param host: overrides ``server.host`` (default ``127.0.0.1``).
    :param port: overrides ``server.port`` (default 8080); ``0`` picks an ephemeral port.
    :raises ConfigError: when a file is missing or a value is invalid.
    """
    path = Path(path).resolve()
    data = _read_json_object(path, "config file")
    where = f"config file {path}"
    server = _section(data, "server", where)
    runner = _section(data, "runner", where)
    base_dir = path.parent

    config_host = server.get("host", "127.0.0.1")
    if not isinstance(config_host, str) or not config_host:
        raise ConfigError(f"{where}: 'server.host' must be a non-empty string")
    default_mode = runner.get("defaultMode", "sync")
    if default_mode not in MODES:
        raise ConfigError(f"{where}: 'runner.defaultMode' must be 'sync' or 'async', got {default_mode!r}")
    return ServerConfig(
        host=host if host is not None else config_host,
        port=port if port is not None else _number(server, "port", 8080, f"{where} server", minimum=0),
        max_concurrent=_number(runner, "maxConcurrent", 1, f"{where} runner", minimum=1),
        default_mode=default_mode,
        max_log_bytes_per_stream=_number(
            runner, "maxLogBytesPerStream", 1048576, f"{where} runner", minimum=0
        ),
        preview_max_bytes=_number(runner, "previewMaxBytes", 4096, f"{where} runner", minimum=0),
        job_store_file=resolve_job_store_file(path),
        logs_dir=_resolve(base_dir, runner.get("logsDir", "./logs"), "runner.logsDir"),
        kill_grace_sec=(
            None
            if runner.get("killGraceSec") is None
            else _number(runner, "killGraceSec", 0, f"{where} runner", minimum=0, integer=False)
        ),
        scripts=load_scripts(_resolve(base_dir, data.get("scriptsFile", "./scripts.json"), "scriptsFile")),
    )


# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _iso(ms: int | None) -> str | None:
    """Format epoch milliseconds like JavaScript's ``Date.prototype.toISOString``."""
    if ms is None:
        return None
    whole = datetime.fromtimestamp(ms // 1000, tz=timezone.utc)
    return f"{whole:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def _parse_iso(value: str | None) -> int | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return int(parsed.timestamp()) * 1000 + parsed.microsecond // 1000


def shell_command(path: Path, args: list[str]) -> str:
    """The ``/bin/sh -c`` command line: the script path and every argument single-quoted.

    Inside single quotes the shell expands nothing; a quote itself is written as ``'\\''``
    (close the quote, an escaped quote, reopen).
    """
    return " ".join("'" + str(word).replace("'", "'\\''") + "'" for word in [path, *args])


def signal_group(pgid: int, signum: int) -> None:
    # Already gone (or reused by someone else's process: not ours to touch).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def signal_groups(pgids: list[int] | set[int], signum: int, wait: float) -> list[int]:
    """Send ``signum`` to each live group, wait up to ``wait`` seconds for all to go; return survivors."""
    for pgid in pgids:
        if process_group_alive(pgid):
            signal_group(pgid, signum)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and any(process_group_alive(p) for p in pgids):
        time.sleep(0.02)
    return [p for p in pgids if process_group_alive(p)]


def _proc_stat(pid: str) -> tuple[str, int] | None:
    """``(state, pgid)`` of a process from ``/proc``, or ``None`` when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as stat_file:
            stat = stat_file.read()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain spaces or ")".
    fields = stat.rpartition(")")[2].split()
    return fields[0], int(fields[2])


def process_alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie.

    Zombies matter here: when a script's parent dies, its orphans are re-parented to PID 1, and in
    some containers PID 1 never reaps them, so "kill(pid, 0) succeeds" does not mean "still running".
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = _proc_stat(str(pid))
    if stat is None:
        return not os.path.isdir("/proc")
    return stat[0] not in ("Z", "X")


def process_group_alive(pgid: int) -> bool:
    """Whether any non-zombie process is left in a process group (see :func:`process_alive`)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not os.path.isdir("/proc"):
        return True
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = _proc_stat(entry.name)
            if stat is not None and stat[1] == pgid and stat[0] not in ("Z", "X"):
                return True
    return False


def _write_atomically(path: Path, text: str) -> None:
    """Write via a temporary file and ``os.replace`` so a crash never leaves a half-written file."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def _read_range(path: Path, offset: int, length: int) -> bytes:
    if length <= 0:
        return b""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read(length)
    except FileNotFoundError:
        return b""


# --------------------------------------------------------------------------------------------------
# Jobs
# --------------------------------------------------------------------------------------------------


class _TailBuffer:
    """The last ``capacity`` bytes of everything fed to it; never holds more than that between feeds."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._data = bytearray()

    def feed(self, chunk: bytes) -> None:
        if self._capacity == 0:
            return  # chunk[-0:] would be the whole chunk
        self._data += chunk[-self._capacity :]
        del self._data[: -self._capacity]  # a no-op while shorter; CPython trims the front in O(1)

    def getvalue(self) -> bytes:
        return bytes(self._data)


@dataclass
class StreamLog:
    """What is stored of one output stream of a job."""

    ref: str
    size: int = 0
    truncated: bool = False
    preview: str = ""
    #: The end of everything the script wrote (also past the stored limit), handed over by the pipe
    #: reader when the stream closes; it becomes ``preview`` when the job ends. Never persisted.
    tail: bytes | None = field(default=None, repr=False)


@dataclass
class Job:
    """One run of a script. ``to_dict`` gives the contract's job object."""

    job_id: str
    script_id: str
    mode: str
    status: str = "queued"
    code: int | None = None
    created_ms: int = field(default_factory=_now_ms)
    started_ms: int | None = None
    ended_ms: int | None = None
    streams: dict[str, StreamLog] = field(default_factory=dict)
    # Runtime state, never persisted.
    args: list[str] = field(default_factory=list, repr=False)
    pgid: int | None = None
    #: Why the server is stopping the script ("canceled" or "timed_out"); decides the final status.
    stop_reason: str | None = None
    #: Set once the job is terminal, so sync requests can wait without polling.
    done: threading.Event = field(default_factory=threading.Event, repr=False)

    def __post_init__(self) -> None:
        for name in STREAMS:  # a new job's (empty) logs are named after it
            self.streams.setdefault(name, StreamLog(ref=f"{self.job_id}.{name}.log"))

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def to_dict(self) -> dict[str, Any]:
        duration = None
        if self.started_ms is not None and self.ended_ms is not None:
            duration = self.ended_ms - self.started_ms
        out, err = self.streams["stdout"], self.streams["stderr"]
        return {
            "jobId": self.job_id,
            "scriptId": self.script_id,
            "mode": self.mode,
            "status": self.status,
            "code": self.code,
            "createdAt": _iso(self.created_ms),
            "startedAt": _iso(self.started_ms),
            "endedAt": _iso(self.ended_ms),
            "durationMs": duration,
            "stdoutSize": out.size,
            "stderrSize": err.size,
            "stdoutTruncated": out.truncated,
            "stderrTruncated": err.truncated,
            "stdoutPreview": out.preview,
            "stderrPreview": err.preview,
            "stdoutRef": out.ref,
            "stderrRef": err.ref,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        job = cls(
            job_id=data["jobId"],
            script_id=data["scriptId"],
            mode=data["mode"],
            status=data["status"],
            code=data["code"],
            created_ms=_parse_iso(data["createdAt"]) or 0,
            started_ms=_parse_iso(data["startedAt"]),
            ended_ms=_parse_iso(data["endedAt"]),
        )
        for name in STREAMS:
            job.streams[name] = StreamLog(
                ref=data[f"{name}Ref"],
                size=data[f"{name}Size"],
                truncated=data[f"{name}Truncated"],
                preview=data[f"{name}Preview"],
            )
        if job.is_terminal:
            job.done.set()
        return job


class ApiError(Exception):
    """An error answer: HTTP status, contract error code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class JobRunner:
    """Runs scripts as jobs: queueing, processes, logs, timeouts, cancellation and the job store.

    One lock guards every job and both state files; it is never held while waiting for a process.
    Each job has an :class:`threading.Event` that is set when it becomes terminal.

    :param config: the server configuration.
    """

    def __init__(self, config: ServerConfig) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._queue: deque[Job] = deque()
        self._running = 0
        self._live_pgids: dict[str, int] = {}
        self._next_number = 1
        self._closing = False
        config.logs_dir.mkdir(parents=True, exist_ok=True)
        config.job_store_file.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._load_store()
            self._commit()

    # ---- requests -------------------------------------------------------------------------------

    def submit(self, script: ScriptSpec, args: list[str], mode: str) -> tuple[Job, str]:
        """Create a job, queue it, and start it at once if a slot is free.

        Returns the job and its status at submission (``queued`` or ``running``), read under the
        lock: a quick script may already have ended by the time the caller could look again, and
        the async answer must still say ``queued``/``running`` as the real server does.
        """
        with self._lock:
            job_id = self._new_job_id()
            job = Job(job_id=job_id, script_id=script.id, mode=mode, args=list(args))
            self._jobs[job_id] = job
            self._queue.append(job)
            self._dispatch()
            self._commit()
            return job, job.status

    def snapshot(self, job_id: str) -> dict[str, Any] | None:
        """The job object as a dict, or ``None`` for an unknown id."""
        with self._lock:
            job = self._jobs.get(job_id)
            return job.to_dict() if job else None

    def wait(self, job: Job) -> dict[str, Any]:
        """Block until the job is terminal, then return its job object."""
        job.done.wait()
        with self._lock:
            return job.to_dict()

    def cancel(self, job_id: str) -> dict[str, Any] | None:
        """Cancel a job; ``None`` for an unknown id.

        A queued job is canceled at once. A running job's process group gets SIGTERM and the job is
        returned still ``running``: it turns ``canceled`` when the process has exited.
        """
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            if job.status == "queued":
                self._queue.remove(job)
                job.status, job.code, job.ended_ms = "canceled", -1, _now_ms()
                job.done.set()
                self._commit()
            elif job.status == "running":
                self._stop_locked(job, "canceled")
            return job.to_dict()

    def read_log(self, job_id: str, stream: str, offset: int, limit: int) -> dict[str, Any] | None:
        """One page of a stored stream: bytes ``[offset, nextOffset)``; ``None`` for an unknown id."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            log = job.streams[stream]
            total, truncated, path = log.size, log.truncated, self._config.logs_dir / log.ref
        # Only bytes already counted in ``size`` are read: they were written before it was raised.
        chunk = _read_range(path, offset, min(limit, total - offset)) if offset < total else b""
        return {
            "jobId": job_id,
            "stream": stream,
            "offset": offset,
            "nextOffset": offset + len(chunk),
            "totalSize": total,
            "truncated": truncated,
            "data": chunk.decode("utf-8", errors="replace"),
        }

    def shutdown(self, grace: float) -> None:
        """Terminate every live script group without recording the jobs as ended.

        The jobs stay ``running``/``queued`` in the store, exactly as after a crash of the real
        server, so the next start reloads them as ``failed`` with code ``-1``.
        """
        with self._lock:
            self._closing = True
            pgids = list(self._live_pgids.values())
        survivors = signal_groups(pgids, signal.SIGTERM, grace)
        survivors = signal_groups(survivors, signal.SIGKILL, 2)
        with self._lock:
            _write_atomically(self._config.running_pgids_file, "".join(f"{p}\n" for p in survivors))

    # ---- job life cycle (callers hold the lock) -------------------------------------------------

    def _new_job_id(self) -> str:
        while True:
            job_id = f"job_{_now_ms()}_{self._next_number}"
            self._next_number += 1
            if job_id not in self._jobs:  # a reloaded job could, in theory, carry the same id
                return job_id

    def _dispatch(self) -> None:
        while self._queue and self._running < self._config.max_concurrent and not self._closing:
            self._start_locked(self._queue.popleft())

    def _start_locked(self, job: Job) -> None:
        script = self._config.scripts[job.script_id]
        job.status, job.started_ms = "running", _now_ms()
        sinks: dict[str, BinaryIO] = {}
        try:
            for name in STREAMS:
                # Open for the job's whole life; closed by the reader thread when the script exits.
                sinks[name] = open(self._config.logs_dir / job.streams[name].ref, "wb", buffering=0)  # noqa: SIM115
            process = subprocess.Popen(
                ["/bin/sh", "-c", shell_command(script.path, job.args)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                bufsize=0,  # raw pipes: a read returns whatever is available
                start_new_session=True,  # own process group, so cancel/timeout can signal the whole tree
            )
        except OSError as exc:
            # Nothing ran (unwritable logs dir, no /bin/sh): the job fails like a lost one.
            for sink in sinks.values():
                sink.close()
            print(f"script-runner: cannot start {job.job_id}: {exc}", file=sys.stderr)
            self._end_locked(job, "failed", -1)
            return
        self._running += 1
        job.pgid = process.pid  # the session leader's pid is the group id
        self._live_pgids[job.job_id] = process.pid
        pumps = [
            threading.Thread(
                target=self._pump,
                args=(job, name, getattr(process, name), sinks[name]),
                name=f"{job.job_id}-{name}",
                daemon=True,
            )
            for name in STREAMS
        ]
        for pump in pumps:
            pump.start()
        threading.Thread(
            target=self._supervise,
            args=(job, process, pumps, script.timeout_sec),
            name=f"{job.job_id}-supervisor",
            daemon=True,
        ).start()

    def _stop_locked(self, job: Job, reason: str) -> None:
        """SIGTERM a running job's group (once); SIGKILL it if it outlives ``killGraceSec``, when set."""
        if job.stop_reason is not None or job.pgid is None:
            return
        job.stop_reason = reason
        signal_group(job.pgid, signal.SIGTERM)
        if self._config.kill_grace_sec is None:
            return  # like the real server: a script that ignores SIGTERM goes on running
        timer = threading.Timer(self._config.kill_grace_sec, self._kill_if_alive, args=(job, job.pgid))
        timer.daemon = True
        timer.start()

    def _kill_if_alive(self, job: Job, pgid: int) -> None:
        with self._lock:
            # After the group is gone its id can be recycled; within the grace period only one of
            # our own new scripts (each one a group leader) is a plausible holder: never kill that.
            recycled = any(p == pgid for other, p in self._live_pgids.items() if other != job.job_id)
        if not recycled and process_group_alive(pgid):
            signal_group(pgid, signal.SIGKILL)

    def _end_locked(self, job: Job, status: str, code: int) -> None:
        job.status, job.code, job.ended_ms = status, code, _now_ms()
        for log in job.streams.values():
            tail = log.tail
            if tail is None:  # no pipe was read by this server (a job reloaded after a restart)
                start = max(0, log.size - self._config.preview_max_bytes)
                tail = _read_range(self._config.logs_dir / log.ref, start, log.size - start)
            log.preview, log.tail = tail.decode("utf-8", errors="replace"), None
        job.done.set()

    # ---- worker threads -------------------------------------------------------------------------

    def _pump(self, job: Job, name: str, pipe: BinaryIO, sink: BinaryIO) -> None:
        """Copy one output pipe into its log file, keeping at most ``maxLogBytesPerStream`` bytes.

        The preview's bytes are taken from the pipe, not from the log file: they are the end of all
        the output, also when the stored log stopped at the limit.
        """
        log = job.streams[name]
        limit = self._config.max_log_bytes_per_stream
        tail = _TailBuffer(self._config.preview_max_bytes)
        stored = 0
        with pipe, sink:
            # Keep reading after the limit: a script blocked on a full pipe would never finish.
            while chunk := pipe.read(_PIPE_CHUNK):
                tail.feed(chunk)
                kept = chunk[: max(0, limit - stored)]
                if kept:
                    sink.write(kept)  # unbuffered: on disk before the size below says so
                    stored += len(kept)
                with self._lock:
                    log.size = stored
                    if len(kept) < len(chunk):
                        log.truncated = True
        with self._lock:
            log.tail = tail.getvalue()

    def _supervise(
        self, job: Job, process: subprocess.Popen[bytes], pumps: list[threading.Thread], timeout_sec: float
    ) -> None:
        """Wait for the process to exit and both pipes to drain (enforcing the timeout), then finish."""
        deadline = time.monotonic() + timeout_sec if timeout_sec > 0 else None

        def process_exited(timeout: float | None) -> bool:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True

        def pipe_drained(pump: threading.Thread) -> Callable[[float | None], bool]:
            def drained(timeout: float | None) -> bool:
                pump.join(timeout)
                return not pump.is_alive()

            return drained

        # The timeout also covers draining: a background child can hold the pipes open after exit.
        for finished in (process_exited, *(pipe_drained(p) for p in pumps)):
            while not finished(None if deadline is None else max(0.0, deadline - time.monotonic())):
                with self._lock:
                    self._stop_locked(job, "timed_out")
                deadline = None
        self._finish(job, process.returncode)

    def _finish(self, job: Job, returncode: int) -> None:
        with self._lock:
            if self._closing:
                return  # shutting down: leave the job unfinished on disk, as a crash would
            self._running -= 1
            self._live_pgids.pop(job.job_id, None)
            if job.stop_reason is not None:
                status, code = job.stop_reason, -1
            elif returncode < 0:  # killed by a signal
                status, code = "failed", -1
            else:
                status, code = ("succeeded" if returncode == 0 else "failed"), returncode
            self._end_locked(job, status, code)
            self._dispatch()
            self._commit()

    # ---- persistence (callers hold the lock) ----------------------------------------------------

    def _commit(self) -> None:
        """Persist the job store and the list of live process groups."""
        jobs = [job.to_dict() for job in self._jobs.values()]
        _write_atomically(self._config.job_store_file, json.dumps({"jobs": jobs}, indent=1))
        pgids = "".join(f"{pgid}\n" for pgid in self._live_pgids.values())
        _write_atomically(self._config.running_pgids_file, pgids)

    def _load_store(self) -> None:
        path = self._config.job_store_file
        if not path.exists():
            return
        try:
            jobs = [Job.from_dict(item) for item in json.loads(path.read_text(encoding="utf-8"))["jobs"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"job store {path} cannot be loaded: {exc}") from exc
        for job in jobs:
            if not job.is_terminal:
                # The server that ran it is gone; whatever the script did since is unknown.
                # Sizes are only persisted on state changes; the log files hold what was kept.
                for log in job.streams.values():
                    on_disk = self._config.logs_dir / log.ref
                    log.size = on_disk.stat().st_size if on_disk.exists() else 0
                self._end_locked(job, "failed", -1)
            self._jobs[job.job_id] = job


# --------------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------------


class ScriptRunnerHTTPServer(http.server.ThreadingHTTPServer):
    """A threading HTTP server bound to one :class:`JobRunner`."""

    daemon_threads = True  # sync requests may wait for long; they must not block shutdown
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], runner: JobRunner, config: ServerConfig) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.runner = runner
        self.config = config
        super().__init__(address, ScriptRunnerRequestHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that drops its keep-alive connection is normal (and the fault suite does it on
        # purpose); only unexpected errors deserve a traceback.
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)


class _BodyTooLarge(Exception):
    pass


class ScriptRunnerRequestHandler(http.server.BaseHTTPRequestHandler):
    """Routes requests to the :class:`JobRunner` and writes JSON answers."""

    server: ScriptRunnerHTTPServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle's algorithm on, a keep-alive client
    # waits ~40 ms for the second. Node.js (the real server) sets TCP_NODELAY too.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = do_GET

    # ---- plumbing -------------------------------------------------------------------------------

    def _handle(self) -> None:
        try:
            body = self._read_body()
        except _BodyTooLarge:
            self.close_connection = True
            self._send_error(ApiError(413, "INTERNAL_ERROR", "request body too large"))
            return
        except ApiError as exc:
            self.close_connection = True
            self._send_error(exc)
            return
        url = urlsplit(self.path)
        try:
            status, payload = self._route(self.command, url.path, parse_qs(url.query), body)
        except ApiError as exc:
            self._send_error(exc)
            return
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            self._send_error(ApiError(500, "INTERNAL_ERROR", str(exc) or type(exc).__name__))
            return
        self._send_json(status, payload)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            return b""
        try:
            length = int(raw_length)
            if length < 0:
                raise ValueError(raw_length)
        except ValueError:
            raise ApiError(400, "INVALID_ARGS", "invalid Content-Length header") from None
        if length > MAX_BODY_BYTES:
            self._drain(length)
            raise _BodyTooLarge
        return self.rfile.read(length)

    def _drain(self, length: int) -> None:
        remaining = min(length, _MAX_DRAIN_BYTES)
        while remaining > 0 and (chunk := self.rfile.read(min(remaining, 1 << 16))):
            remaining -= len(chunk)

    def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            size_line = self.rfile.readline(1024)
            try:
                size = int(size_line.split(b";")[0].strip(), 16)
            except ValueError:
                raise ApiError(400, "INVALID_ARGS", "invalid chunked body") from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return bytes(body)
            if len(body) + size > MAX_BODY_BYTES:
                raise _BodyTooLarge
            body += self.rfile.read(size)
            self.rfile.readline(1024)  # CRLF after the chunk

    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _send_error(self, error: ApiError) -> None:
        self._send_json(error.status, {"ok": False, "error": {"code": error.code, "message": error.message}})

    # ---- routes ---------------------------------------------------------------------------------

    def _route(
        self, method: str, path: str, query: dict[str, list[str]], body: bytes
    ) -> tuple[int, dict[str, Any]]:
        segments = path.split("/")[1:]  # "/jobs/x/logs" -> ["jobs", "x", "logs"]
        if method == "GET" and segments == ["healthz"]:
            return 200, {"ok": True}
        if method == "POST" and segments == ["run"]:
            return self._run(body)
        if len(segments) in (2, 3) and segments[0] == "jobs" and segments[1]:
            job_id = unquote(segments[1])
            action = segments[2] if len(segments) == 3 else None
            if method == "GET" and action is None:
                return 200, self._job_or_404(self.server.runner.snapshot(job_id), job_id)
            if method == "GET" and action == "logs":
                return self._logs(job_id, query)
            if method == "POST" and action == "cancel":
                return 200, self._job_or_404(self.server.runner.cancel(job_id), job_id)
        raise ApiError(404, "NOT_FOUND", f"route not found: {method} {path}")

    @staticmethod
    def _job_or_404(job: dict[str, Any] | None, job_id: str) -> dict[str, Any]:
        if job is None:
            raise ApiError(404, "JOB_NOT_FOUND", f"job not found: {job_id}")
        return {"ok": True, **job}

    def _run(self, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            request = json.loads(body) if body.strip() else {}
        except ValueError:
            raise ApiError(500, "INTERNAL_ERROR", "invalid json body") from None
        if not isinstance(request, dict):
            request = {}  # like reading properties of a non-object in JavaScript: nothing there
        config = self.server.config
        script_id = request.get("scriptId")
        script = config.scripts.get(script_id) if isinstance(script_id, str) else None
        if script is None:
            raise ApiError(400, "SCRIPT_NOT_FOUND", f"script not found: {script_id}")
        args = request.get("args")
        _validate_args(script, [] if args is None else args)
        mode = request.get("mode") or script.mode or config.default_mode
        if mode not in MODES:
            raise ApiError(400, "INVALID_ARGS", "mode must be sync or async")
        job, status_at_submit = self.server.runner.submit(script, args or [], mode)
        if mode == "async":
            return 202, {"ok": True, "jobId": job.job_id, "status": status_at_submit}
        return 200, {"ok": True, **self.server.runner.wait(job)}

    def _logs(self, job_id: str, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        stream = query.get("stream", ["stdout"])[-1]
        if stream not in STREAMS:
            raise ApiError(400, "INVALID_ARGS", "stream must be stdout or stderr")
        offset = _query_int(query, "offset", 0)
        limit = min(_query_int(query, "limit", DEFAULT_LOG_LIMIT), MAX_LOG_LIMIT)
        page = self.server.runner.read_log(job_id, stream, offset, limit)
        return 200, self._job_or_404(page, job_id)

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"script-runner: {self.address_string()} {format % args}\n")


def _query_int(query: dict[str, list[str]], name: str, default: int) -> int:
    raw = query.get(name, [None])[-1]
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not raw.isascii():  # rejects "-1", "1.5", "abc", non-ASCII digits
        raise ApiError(400, "INVALID_ARGS", f"{name} must be a non-negative integer")
    return int(raw)


def _validate_args(script: ScriptSpec, args: Any) -> None:
    """Apply the script's ``args`` rules; the message names the offending item.

    The messages of the array, count, type and pattern checks are the real server's, word for word;
    the others follow their style.
    """
    if not isinstance(args, list):
        raise ApiError(400, "INVALID_ARGS", "args must be an array of strings")
    if len(args) > script.max_items:
        raise ApiError(400, "INVALID_ARGS", f"too many args: max {script.max_items}")
    for index, item in enumerate(args):
        if not isinstance(item, str):
            raise ApiError(400, "INVALID_ARGS", f"arg[{index}] must be string")
        if len(item) > script.item_max_length:
            raise ApiError(400, "INVALID_ARGS", f"arg[{index}] too long: max {script.item_max_length}")
        if "\0" in item:  # cannot be passed to a process at all
            raise ApiError(400, "INVALID_ARGS", f"arg[{index}] must not contain NUL")
        if not item.isascii():
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate from a \ud800-style JSON escape
                raise ApiError(400, "INVALID_ARGS", f"arg[{index}] must be valid unicode") from None
        if script.item_pattern is not None and not script.item_pattern.search(item):
            raise ApiError(400, "INVALID_ARGS", f"arg[{index}] does not match pattern")


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def _watch_parent(pid: int, stop: threading.Event) -> None:
    """Set ``stop`` once ``pid`` has exited (checked every half second)."""
    while not stop.wait(0.5):
        if not process_alive(pid):
            stop.set()


def main(argv: list[str] | None = None) -> int:
    """Run the server until SIGTERM or SIGINT; returns the process exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_scriptrunner.testing.server",
        description="A script-runner compatible HTTP server (for tests).",
    )
    parser.add_argument("--config", help="config.json (default: $CONFIG_FILE)")
    parser.add_argument("--host", help="listen address (overrides server.host; default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (overrides server.port; 0 = ephemeral)")
    parser.add_argument(
        "--exit-with-parent",
        type=int,
        metavar="PID",
        help="shut down (stopping every script) once process PID is gone, e.g. a test run killed without teardown",
    )
    options = parser.parse_args(argv)
    config_path = options.config or os.environ.get("CONFIG_FILE")
    if not config_path:
        parser.error("no configuration: pass --config PATH or set CONFIG_FILE")

    try:
        config = load_config(config_path, host=options.host, port=options.port)
        runner = JobRunner(config)
    except ConfigError as exc:
        print(f"script-runner: {exc}", file=sys.stderr)
        return 2
    try:
        httpd = ScriptRunnerHTTPServer((config.host, config.port), runner, config)
    except OSError as exc:
        print(f"script-runner: cannot listen on {config.host}:{config.port}: {exc}", file=sys.stderr)
        return EXIT_ADDRESS_IN_USE if exc.errno == errno.EADDRINUSE else 1

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    if options.exit_with_parent:
        threading.Thread(
            target=_watch_parent, args=(options.exit_with_parent, stop), name="parent", daemon=True
        ).start()
    # A short poll interval keeps shutdown() (which waits for the next poll) quick.
    serving = threading.Thread(target=httpd.serve_forever, args=(0.05,), name="http", daemon=True)
    serving.start()
    host = f"[{config.host}]" if ":" in config.host else config.host
    print(f"{LISTENING_PREFIX}http://{host}:{httpd.server_address[1]}", flush=True)

    # A timed wait: a signal delivered to a worker thread only runs its handler once the main
    # thread wakes up, which an untimed wait would never do.
    while not stop.wait(0.2):
        pass
    httpd.shutdown()
    httpd.server_close()
    runner.shutdown(grace=config.shutdown_grace_sec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
