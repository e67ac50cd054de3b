"""Run the bundled script-runner server in a subprocess, for tests.

Typical use::

    from airflow_provider_scriptrunner.testing import ScriptRunnerServerProcess

    scripts = {"greet": {"body": "#!/bin/sh\\necho hello \\"$1\\"\\n", "mode": "sync"}}
    with ScriptRunnerServerProcess(tmp_path, scripts, runner={"maxConcurrent": 2}) as server:
        requests.post(f"{server.url}/run", json={"scriptId": "greet", "args": ["world"]})

The server always listens on ``127.0.0.1`` and starts on an ephemeral port; :meth:`restart` comes back
on the same port. Nothing it started outlives :meth:`stop`: the server's own process group is stopped,
then every script process group it listed in ``running.pgids``, including scripts orphaned by
:meth:`kill` (a simulated crash leaves them running, as the real server's crash would).

Standard library only.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_scriptrunner.testing.server import (
    EXIT_ADDRESS_IN_USE,
    LISTENING_PREFIX,
    RUNNING_PGIDS_FILENAME,
    process_alive,
    process_group_alive,
    resolve_job_store_file,
    signal_group,
    signal_groups,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "HOST",
    "RUNNER_OPTIONS",
    "ScriptRunnerServerError",
    "ScriptRunnerServerProcess",
    "process_alive",
    "process_group_alive",
]

HOST = "127.0.0.1"
#: ``runner`` keys a harness may override (``killGraceSec`` exists only in the bundled server: without
#: it, as on the real server, cancel and timeout send SIGTERM only).
RUNNER_OPTIONS = frozenset(
    {
        "maxConcurrent",
        "defaultMode",
        "maxLogBytesPerStream",
        "previewMaxBytes",
        "jobStoreFile",
        "logsDir",
        "killGraceSec",
    }
)
_SCRIPT_KEYS = frozenset({"body", "path", "mode", "timeoutSec", "args"})
_SCRIPT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# The directory that holds the ``airflow_provider_scriptrunner`` package, so the child can import it
# even when the parent found it through pytest's rootdir rather than an installation.
_SOURCE_ROOT = Path(__file__).resolve().parents[2]


class ScriptRunnerServerError(RuntimeError):
    """The bundled server did not start; the message includes what it wrote to stderr."""


class ScriptRunnerServerProcess:
    """The bundled script-runner server, running in a subprocess.

    Give either ``scripts`` (written out as ``scripts/<id>.sh`` plus ``scripts.json`` and
    ``config.json`` in ``directory``) or ``config_path`` (an existing ``config.json``).

    :param directory: where generated files, the server's state (``state/``) and its output logs
        (``server.stdout.log``, ``server.stderr.log``) go. Created if missing.
    :param scripts: ``{script_id: spec}``; a spec has ``body`` (the script text; or ``path``, an
        existing script file) and optionally ``mode``, ``timeoutSec`` and ``args``
        (``{"maxItems", "itemPattern", "itemMaxLength"}``), as in ``scripts.json``.
    :param config_path: an existing ``config.json`` to use instead of ``scripts``.
    :param runner: overrides for the ``runner`` section (``maxConcurrent``, ``maxLogBytesPerStream``,
        ``previewMaxBytes``, ``defaultMode``, ``killGraceSec``, ...); only with ``scripts``. Unset keys
        keep the server defaults, which are the real server's (``defaultMode`` ``sync``, no SIGKILL).
    :param port: port of the first start; ``0`` (default) picks a free one.
    :param startup_timeout: seconds to wait for the server to listen.
    :param stop_timeout: seconds to wait after SIGTERM before the server's group gets SIGKILL.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        scripts: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        config_path: str | os.PathLike[str] | None = None,
        runner: Mapping[str, Any] | None = None,
        port: int = 0,
        startup_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        if (scripts is None) == (config_path is None):
            raise ValueError("give exactly one of scripts or config_path")
        if runner and config_path is not None:
            raise ValueError("runner overrides apply to generated configs only; edit config_path instead")
        unknown = set(runner or {}) - RUNNER_OPTIONS
        if unknown:
            raise ValueError(f"unknown runner options {sorted(unknown)}; known: {sorted(RUNNER_OPTIONS)}")

        self.directory = Path(directory).resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        if scripts is not None:
            self.config_path = self._write_config(scripts, runner or {})
        else:
            self.config_path = Path(config_path).resolve()  # type: ignore[arg-type]
        self.state_dir = resolve_job_store_file(self.config_path).parent
        self.stdout_path = self.directory / "server.stdout.log"
        self.stderr_path = self.directory / "server.stderr.log"
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._port = port
        self._process: subprocess.Popen[bytes] | None = None
        self._orphan_pgids: set[int] = set()

    # ---- public API -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port the server listens on (known after the first start)."""
        if not self._port:
            raise RuntimeError("the server has not been started yet")
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234``."""
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        """Process id of the running server, or ``None`` when it is not running."""
        return self._process.pid if self.running else None  # type: ignore[union-attr]

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def running_pgids_path(self) -> Path:
        """The server's list of live script process groups."""
        return self.state_dir / RUNNING_PGIDS_FILENAME

    def start(self) -> ScriptRunnerServerProcess:
        """Start the server and wait until it listens.

        On a restart the previous port is requested again; while it is still held (a dying
        predecessor, a lingering socket) the start is retried until ``startup_timeout``.

        :raises ScriptRunnerServerError: when the server exits or stays silent.
        """
        if self.running:
            raise RuntimeError(f"the server is already running (pid {self.pid})")
        deadline = time.monotonic() + self.startup_timeout
        while True:
            process, stdout_offset, stderr_offset = self._spawn()
            self._process = process
            port = self._await_listening(process, stdout_offset, deadline)
            if port is not None:
                self._port = port
                return self
            retry = process.returncode == EXIT_ADDRESS_IN_USE and self._port != 0
            if retry and time.monotonic() < deadline:
                time.sleep(0.1)
                continue
            self._terminate_server(signal.SIGKILL)
            raise ScriptRunnerServerError(self._startup_failure(process, stderr_offset))

    def stop(self, kill: bool = False) -> None:
        """Stop the server and every script it started. Safe to call more than once.

        :param kill: SIGKILL the server instead of SIGTERM (its scripts are killed afterwards anyway).
        """
        if self._process is not None:
            self._terminate_server(signal.SIGKILL if kill else signal.SIGTERM)
            self._remember_live_scripts()
        self._kill_orphans()

    def kill(self) -> None:
        """Simulate a crash: SIGKILL the server and leave its scripts running.

        The orphaned scripts are remembered and killed by the next :meth:`stop`.
        """
        if self._process is not None:
            self._terminate_server(signal.SIGKILL)
            self._remember_live_scripts()

    def restart(self, kill: bool = False) -> ScriptRunnerServerProcess:
        """Stop the server (gracefully, or with a simulated crash) and start it on the same port.

        :param kill: crash it with :meth:`kill` instead of a graceful :meth:`stop`.
        """
        if kill:
            self.kill()
        else:
            self.stop()
        return self.start()

    def __enter__(self) -> ScriptRunnerServerProcess:
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._port else "not started"
        return f"<{type(self).__name__} {where} pid={self.pid} config={self.config_path}>"

    # ---- setup ----------------------------------------------------------------------------------

    def _write_config(self, scripts: Mapping[str, Mapping[str, Any]], runner: Mapping[str, Any]) -> Path:
        scripts_dir = self.directory / "scripts"
        scripts_dir.mkdir(exist_ok=True)
        entries = []
        for script_id, spec in scripts.items():
            if not _SCRIPT_ID.match(script_id):
                raise ValueError(f"script id {script_id!r} must match {_SCRIPT_ID.pattern} (it names a file)")
            unknown = set(spec) - _SCRIPT_KEYS
            if unknown or ("body" in spec) == ("path" in spec):
                raise ValueError(
                    f"script {script_id!r}: give exactly one of 'body' or 'path', plus optional "
                    f"'mode', 'timeoutSec', 'args' (unknown keys: {sorted(unknown)})"
                )
            if "body" in spec:
                path = scripts_dir / f"{script_id}.sh"
                path.write_text(spec["body"], encoding="utf-8")
                path.chmod(0o755)
            else:
                path = Path(spec["path"]).resolve()
            entry: dict[str, Any] = {"id": script_id, "path": str(path)}
            entry.update({key: spec[key] for key in ("mode", "timeoutSec", "args") if key in spec})
            entries.append(entry)
        scripts_file = self.directory / "scripts.json"
        scripts_file.write_text(json.dumps({"scripts": entries}, indent=2), encoding="utf-8")
        config = {
            "server": {"host": HOST, "port": 0},
            "runner": {"jobStoreFile": "state/jobs.json", "logsDir": "state/logs", **runner},
            "scriptsFile": "scripts.json",
        }
        config_path = self.directory / "config.json"
        config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
        return config_path

    # ---- process handling -----------------------------------------------------------------------

    def _spawn(self) -> tuple[subprocess.Popen[bytes], int, int]:
        """Start the server with its output appended to the log files; returns the start offsets."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_SOURCE_ROOT), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        command = [
            sys.executable,
            "-m",
            "airflow_provider_scriptrunner.testing.server",
            "--config",
            str(self.config_path),
            "--host",
            HOST,
            "--port",
            str(self._port),
            # If this test process dies without teardown (SIGKILL), the server still goes away.
            "--exit-with-parent",
            str(os.getpid()),
        ]
        # Files, not pipes: nobody drains a pipe for the server's lifetime, and a full pipe would
        # block it. The listening line is read back from the file.
        with open(self.stdout_path, "ab") as stdout, open(self.stderr_path, "ab") as stderr:
            offsets = stdout.tell(), stderr.tell()
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                cwd=self.directory,
                env=env,
                start_new_session=True,  # its own group: stop() can signal it without touching us
            )
        return process, *offsets

    def _await_listening(self, process: subprocess.Popen[bytes], offset: int, deadline: float) -> int | None:
        """Poll the stdout log for the listening line; the port, or ``None`` if the server gave up."""
        while True:
            with open(self.stdout_path, "rb") as handle:
                handle.seek(offset)
                output = handle.read().decode("utf-8", errors="replace")
            for line in output.splitlines(keepends=True):
                if line.startswith(LISTENING_PREFIX) and line.endswith("\n"):
                    return urlsplit(line[len(LISTENING_PREFIX) :].strip()).port
            if process.poll() is not None or time.monotonic() >= deadline:
                return None
            time.sleep(0.02)

    def _startup_failure(self, process: subprocess.Popen[bytes], stderr_offset: int) -> str:
        with open(self.stderr_path, "rb") as handle:
            handle.seek(stderr_offset)
            stderr = handle.read()[-8000:].decode("utf-8", errors="replace").strip()
        if process.returncode is None or process.returncode == -signal.SIGKILL:
            reason = f"did not report listening within {self.startup_timeout:g}s"
        else:
            reason = f"exited with status {process.returncode}"
        return f"script-runner server ({self.config_path}) {reason}; stderr:\n{stderr or '(empty)'}"

    def _terminate_server(self, signum: int) -> None:
        """Signal the server's process group, wait, and SIGKILL the group if it lingers."""
        process = self._process
        if process is None:
            return
        self._process = None
        if process.poll() is None:
            signal_group(process.pid, signum)
            try:
                process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                signal_group(process.pid, signal.SIGKILL)
                process.wait()
        if process_group_alive(process.pid):
            signal_group(process.pid, signal.SIGKILL)

    def _remember_live_scripts(self) -> None:
        self._orphan_pgids.update(_read_pgids(self.running_pgids_path))

    def _kill_orphans(self) -> None:
        """SIGKILL every script group the server listed as live, then wait until they are gone."""
        pgids = self._orphan_pgids | set(_read_pgids(self.running_pgids_path))
        signal_groups(pgids, signal.SIGKILL, 5)
        self._orphan_pgids.clear()
        if pgids and self.running_pgids_path.exists():
            # These ids are dead now; leaving them listed would make a later stop() signal
            # whatever process happens to reuse them.
            self.running_pgids_path.write_text("", encoding="utf-8")


def _read_pgids(path: Path) -> list[int]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [int(word) for word in text.split() if word.isdigit()]
