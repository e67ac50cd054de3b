"""
A real Airflow deployment for the end-to-end tests: scheduler (LocalExecutor), dag-processor,
triggerer and api-server, on SQLite in a temporary AIRFLOW_HOME, plus a small client for the
public REST API (``/api/v2``).

The same class runs the distributed shape too (tests/e2e_distributed): another executor and
metadata database, several instances of a component (``triggerer-1``, ``triggerer-2``,
``celery-worker-1``, ...; an instance's kind is its name without the ``-N``), extra settings,
and each instance reporting its own name as its hostname (so the REST API's ``hostname`` of a
task instance or triggerer job says which instance it was).

Every component runs in its own process group (``start_new_session=True``), listens on
``127.0.0.1`` only, and writes its output to ``<home>/logs/components/<name>.log``. Airflow's
own log servers (which would listen on every interface) are not started: task and trigger logs
are local files that the api-server reads directly.

:meth:`AirflowDeployment.stop_all` stops every process the deployment ever started, including
the task processes that Airflow's supervisor puts into process groups of their own. A process
belongs to the deployment when it is a descendant of a component, sits in a process group we saw,
or carries one of two inherited markers: an open file descriptor on ``<home>/.deployment`` (which
survives ``setproctitle``) and a variable in its environment (which survives closing descriptors).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import requests

from airflow_provider_scriptrunner.testing.dag_runner import airflow_env, migrate

HOST = "127.0.0.1"
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
ADMIN_USER = "admin"
#: Environment variable carried by every process of a deployment (value: the deployment's id).
MARKER_VAR = "SCRIPTRUNNER_E2E_DEPLOYMENT"
#: Environment variable naming the component instance a process belongs to (``triggerer-2``).
COMPONENT_VAR = "SCRIPTRUNNER_E2E_COMPONENT"
#: The repository root: components import the provider and :func:`component_hostname` from here.
REPO_ROOT = Path(__file__).resolve().parents[2]
#: The Airflow job type each kind of component heartbeats as (``GET /api/v2/jobs``).
JOB_TYPES = {"scheduler": "SchedulerJob", "triggerer": "TriggererJob", "dag-processor": "DagProcessorJob"}
TERMINAL_TI_STATES = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})

T = TypeVar("T")


class DeploymentError(RuntimeError):
    """A component did not come up, an API call failed, or a wait ran out."""


def component_kind(name: str) -> str:
    """``triggerer-2`` -> ``triggerer``; ``api-server`` -> ``api-server``."""
    base, _, suffix = name.rpartition("-")
    return base if base and suffix.isdigit() else name


def component_hostname() -> str:
    """``[core] hostname_callable`` of a deployment with per-component hostnames: the instance name
    (a command that is no component, such as ``airflow db migrate``, gets the machine's name)."""
    return os.environ.get(COMPONENT_VAR) or socket.getfqdn()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_for(
    what: str,
    probe: Callable[[], T],
    timeout: float,
    interval: float = 0.25,
    on_timeout: Callable[[], str] | None = None,
) -> T:
    """Call ``probe`` until it returns something truthy; raise DeploymentError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = probe()
            if value:
                return value
        except (requests.RequestException, OSError, KeyError, ValueError) as err:
            last_error = err
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            extra = ("\n" + on_timeout()) if on_timeout else ""
            raise DeploymentError(f"timed out after {timeout:g} s waiting for {what}{detail}{extra}")
        time.sleep(interval)


# ------------------------------------------------------------------------------------------------
# Processes


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgid) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read().decode(errors="replace")
    except OSError:
        return None
    fields = data[data.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[2])


def _environ_has(pid: int, needle: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            return needle in handle.read().split(b"\0")
    except OSError:
        return False


def _decode_address(hex_address: str) -> str:
    """An address from /proc/net/tcp{,6} (little-endian 32-bit words) in the usual notation."""
    import ipaddress

    raw = bytes.fromhex(hex_address)
    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(raw)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return str(address)


def _holds_file(pid: int, path: str) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == path:
                return True
        except OSError:
            continue
    return False


def _descendants(roots: set[int], pids: list[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid in pids:
        stat = _proc_stat(pid)
        if stat is not None:
            children.setdefault(stat[1], []).append(pid)
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return found


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _alive(pid: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def _signal(target: int, signum: int, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        (os.killpg if group else os.kill)(target, signum)


def listening_sockets(pids: Iterable[int]) -> list[tuple[int, str, int]]:
    """``(pid, address, port)`` of every TCP socket one of ``pids`` listens on."""
    listening: dict[str, tuple[str, int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                address, port = fields[1].split(":")
                listening[fields[9]] = (_decode_address(address), int(port, 16))
    found = []
    for pid in pids:
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        for link in links:
            if link.startswith("socket:[") and link[8:-1] in listening:
                found.append((pid, *listening[link[8:-1]]))
    return found


@dataclass
class Component:
    name: str
    command: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    #: Processes :meth:`AirflowDeployment.pause_component` stopped (SIGSTOP).
    paused: set[int] = field(default_factory=set)
    #: Set when the deployment stopped or killed it on purpose; any other exit is a crash.
    stopped: bool = False
    #: Where the current start's output begins in the log, and when (wall clock) it started.
    log_offset: int = 0
    started_at: float = 0.0

    @property
    def kind(self) -> str:
        return component_kind(self.name)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def crashed(self) -> bool:
        """It exited, and nobody asked it to."""
        return self.process is not None and not self.stopped and self.process.poll() is not None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def current_log(self) -> str:
        """What the current start of the component has written so far."""
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(self.log_offset)
                return handle.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""


@dataclass
class AirflowDeployment:
    """
    Airflow 3 on SQLite in ``home``, with the DAGs of ``dags_folder``, talking to ``scriptrunner_url``.

    Use :meth:`start` once, :meth:`restart` for a single component, and :meth:`stop_all` at the
    end (always; it is idempotent). :meth:`leftovers` lists any process still alive after that.

    :param executor: ``[core] executor``.
    :param database_url: ``[database] sql_alchemy_conn``; None: SQLite in ``home``.
    :param component_names: the instances to start, in order: a kind (``api-server``,
        ``scheduler``, ``dag-processor``, ``triggerer``, ``celery-worker``), optionally with ``-N``.
    :param extra_env: more settings (``AIRFLOW__...``) for every component; they win over ours.
    :param component_hostnames: each instance reports its name as its hostname.
    """

    home: Path
    dags_folder: Path
    scriptrunner_url: str
    admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    deployment_id: str = field(default_factory=lambda: secrets.token_hex(8))
    api_port: int = field(default_factory=free_port)
    components: dict[str, Component] = field(default_factory=dict)
    #: Every process group this deployment created or saw, for the final check.
    pgids: set[int] = field(default_factory=set)
    executor: str = "LocalExecutor"
    database_url: str | None = None
    component_names: Sequence[str] = COMPONENTS
    extra_env: Mapping[str, str] = field(default_factory=dict)
    component_hostnames: bool = False

    def __post_init__(self) -> None:
        self.home = Path(self.home).resolve()
        self.log_dir = self.home / "logs" / "components"
        self.marker_path = self.home / ".deployment"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.env = self._environment()
        self._api: AirflowApi | None = None
        for name in self.component_names:
            if name in self.components:
                raise ValueError(f"component {name!r} is listed twice")
            self.components[name] = Component(name, self._command(name), self.log_dir / f"{name}.log")

    def _command(self, name: str) -> list[str]:
        airflow = [sys.executable, "-m", "airflow"]
        # --skip-serve-logs: the log servers would listen on all interfaces; logs are local files.
        commands = {
            "api-server": [
                *airflow,
                "api-server",
                "--host",
                HOST,
                "--port",
                str(self.api_port),
                "--workers",
                "1",
            ],
            "scheduler": [*airflow, "scheduler", "--skip-serve-logs"],
            "dag-processor": [*airflow, "dag-processor"],
            "triggerer": [*airflow, "triggerer", "--skip-serve-logs"],
            # Concurrency from [celery] worker_concurrency; the Celery node is celery@<name>.
            "celery-worker": [*airflow, "celery", "worker", "--celery-hostname", name, "--skip-serve-logs"],
        }
        kind = component_kind(name)
        if kind not in commands:
            raise ValueError(f"unknown component kind {kind!r} (of {name!r}); known: {sorted(commands)}")
        return commands[kind]

    def names(self, kind: str) -> list[str]:
        """The instances of one kind, e.g. ``names("triggerer")`` -> ``["triggerer-1", "triggerer-2"]``."""
        return [name for name, component in self.components.items() if component.kind == kind]

    # -- configuration -----------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.api_port}"

    def _environment(self) -> dict[str, str]:
        from cryptography.fernet import Fernet

        passwords_file = self.home / "simple_auth_manager_passwords.json"
        passwords_file.write_text(json.dumps({ADMIN_USER: self.admin_password}), encoding="utf-8")
        env = airflow_env(self.home, self.dags_folder, self.scriptrunner_url)
        env.update(
            {
                MARKER_VAR: self.deployment_id,
                "PYTHONUNBUFFERED": "1",
                # Shared secrets (every component must agree on them).
                "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
                "AIRFLOW__API__SECRET_KEY": secrets.token_hex(32),
                # LocalExecutor: Airflow 3 accepts it on SQLite (the default executor, as in `standalone`).
                "AIRFLOW__CORE__EXECUTOR": self.executor,
                "AIRFLOW__CORE__PARALLELISM": "4",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
                # Simple auth manager: one admin with a password we know.
                "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file),
                "AIRFLOW__API__HOST": HOST,
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API__EXPOSE_CONFIG": "False",
                # Nothing listens on 0.0.0.0: no log servers, no scheduler health server.
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                # Fast loops, so a test waits seconds, not minutes.
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "60",
                "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "2",
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
                # The triggerer's supervisor answers a trigger's first state query (our on_kill asks
                # whether the task is still DEFERRED) through an in-process execution API that it
                # builds on first use, blocking for ~20 s on a busy 2-core machine: keep on_kill's
                # budget (default 30 s) clear of that.
                "AIRFLOW__TRIGGERER__ON_KILL_TIMEOUT": "90",
                "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
            }
        )
        if self.database_url is not None:
            env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = self.database_url
        # The provider (and component_hostname) from this checkout, whichever one is installed.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        if self.component_hostnames:
            env["AIRFLOW__CORE__HOSTNAME_CALLABLE"] = f"{__name__}.component_hostname"
        env.update(self.extra_env)
        return env

    def component_env(self, name: str) -> dict[str, str]:
        return {**self.env, COMPONENT_VAR: name}

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self, timeout: float = 240) -> AirflowDeployment:
        """Create the database, start every component and wait until the API reports them healthy."""
        migrate(self.env)
        for name in self.components:
            self.start_component(name)
        self.wait_healthy(timeout=timeout, components=list(self.components))
        # The api-server builds its (versioned) execution API on the first request, which takes
        # ~10 s on a small machine: long enough for the first task's first call to time out.
        wait_for(
            "the execution API",
            lambda: requests.get(f"{self.api_url}/execution/health", timeout=60).ok,
            timeout,
        )
        return self

    def start_component(self, name: str) -> None:
        component = self.components[name]
        if component.running:
            raise RuntimeError(f"{name} is already running (pid {component.process.pid})")  # type: ignore[union-attr]
        marker = os.open(self.marker_path, os.O_RDONLY | os.O_CREAT, 0o600)
        with open(component.log_path, "ab") as log:
            log.write(
                f"\n===== start #{component.starts + 1} of {name}: {' '.join(component.command)}\n".encode()
            )
            log.flush()
            component.log_offset = log.tell()
            component.started_at = time.time()
            component.process = subprocess.Popen(
                component.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.home,
                env=self.component_env(name),
                start_new_session=True,
                pass_fds=(marker,),
            )
        os.close(marker)
        component.starts += 1
        component.stopped = False
        self.pgids.add(component.process.pid)

    def stop_component(self, name: str, grace: float = 20) -> None:
        """SIGTERM the component's process group, wait, then SIGKILL what is left of it."""
        component = self.components[name]
        process = component.process
        if process is None:
            return
        component.stopped = True
        self._remember_groups()
        self.resume_component(name)
        _signal(process.pid, signal.SIGTERM, group=True)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(grace)
        _signal(process.pid, signal.SIGKILL, group=True)
        process.wait()
        self._wait_group_gone(process.pid, 10)

    def component_pids(self, name: str) -> set[int]:
        """The component's live processes: its process group and every descendant, whatever its group
        (a Celery worker's pool children share its group; the task processes they supervise do not)."""
        process = self.components[name].process
        if process is None or process.poll() is not None:
            return set()
        pids = _all_pids()
        in_group = {pid for pid in pids if (stat := _proc_stat(pid)) and stat[2] == process.pid}
        return {pid for pid in _descendants({process.pid} | in_group, pids) if _alive(pid)}

    def _freeze(self, name: str) -> set[int]:
        """SIGSTOP the component's processes until no new one appears (a stopped process cannot fork)."""
        frozen: set[int] = set()
        while True:
            new = self.component_pids(name) - frozen
            if not new:
                return frozen
            for pid in new:
                _signal(pid, signal.SIGSTOP, group=False)
                if stat := _proc_stat(pid):
                    self.pgids.add(stat[2])
            frozen |= new

    def kill_component(self, name: str) -> set[int]:
        """
        Crash a component as if its host died: every process of it (its group and all descendants,
        such as a Celery worker's pool and task processes) is frozen, then SIGKILLed at once, so
        that none of them notices the others dying and reacts. Returns the pids killed.
        """
        component = self.components[name]
        process = component.process
        if process is None or process.poll() is not None:
            raise RuntimeError(f"{name} is not running")
        component.stopped = True
        self._remember_groups()
        pids = self._freeze(name)
        for pid in pids:
            _signal(pid, signal.SIGKILL, group=False)
        _signal(process.pid, signal.SIGKILL, group=True)
        component.paused.clear()
        process.wait()
        wait_for(f"the processes of {name} to be gone", lambda: not any(_alive(pid) for pid in pids), 15)
        return pids

    def pause_component(self, name: str) -> set[int]:
        """SIGSTOP every process of the component (a host that hangs); :meth:`resume_component` undoes it."""
        self._remember_groups()
        pids = self._freeze(name)
        self.components[name].paused |= pids
        return pids

    def resume_component(self, name: str) -> None:
        """SIGCONT what :meth:`pause_component` stopped."""
        component = self.components[name]
        for pid in component.paused:
            _signal(pid, signal.SIGCONT, group=False)
        component.paused.clear()

    def revive(self, timeout: float = 120) -> list[str]:
        """
        Bring the deployment back to full strength after a test: continue paused components and
        start every one that is not running. Returns ``name (exit status)`` of those that had
        crashed (exited without being stopped), so that the test that saw it can say so.
        """
        crashed = [
            f"{name} (exit status {c.process.returncode})"  # type: ignore[union-attr]
            for name, c in self.components.items()
            if c.crashed
        ]
        down = []
        for name, component in self.components.items():
            self.resume_component(name)
            if not component.running:
                self.start_component(name)
                down.append(name)
        if down:
            self.wait_healthy(timeout=timeout, components=down)
        return crashed

    def restart(self, name: str, timeout: float = 120) -> None:
        """Stop one component and start it again; waits until the API reports it healthy."""
        self.stop_component(name)
        self.start_component(name)
        self.wait_healthy(timeout=timeout, components=[name])

    def stop_all(self, grace: float = 20) -> None:
        """Stop every process this deployment started, directly or not. Safe to call again."""
        self._remember_groups()
        for name, component in self.components.items():
            component.stopped = True
            self.resume_component(name)  # a stopped process would not act on SIGTERM
        for component in self.components.values():
            if component.process is not None and component.process.poll() is None:
                _signal(component.process.pid, signal.SIGTERM, group=True)
        for pid in self._marked_pids():
            _signal(pid, signal.SIGTERM, group=False)
        deadline = time.monotonic() + grace
        for component in self.components.values():
            if component.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    component.process.wait(max(0.1, deadline - time.monotonic()))
        while time.monotonic() < deadline and self._live_pids():
            time.sleep(0.2)
        for _ in range(3):
            live = self._live_pids()
            if not live:
                break
            for pgid in self.pgids:
                _signal(pgid, signal.SIGKILL, group=True)
            for pid in live:
                _signal(pid, signal.SIGKILL, group=False)
            for component in self.components.values():
                if component.process is not None:
                    component.process.wait()
            wait_deadline = time.monotonic() + 5
            while time.monotonic() < wait_deadline and self._live_pids():
                time.sleep(0.1)

    def leftovers(self) -> list[str]:
        """``ps`` lines of processes still alive from this deployment (empty when all are gone)."""
        live = set(self._live_pids())
        output = subprocess.run(
            ["ps", "-eo", "pid=,pgid=,stat=,args="], capture_output=True, text=True, check=True
        ).stdout
        lines = []
        for line in output.splitlines():
            parts = line.split(None, 3)
            if len(parts) < 3 or parts[2].startswith("Z"):
                continue
            pid, pgid = int(parts[0]), int(parts[1])
            if pid in live or pgid in self.pgids:
                lines.append(line.strip())
        return lines

    def listening_sockets(self) -> list[tuple[int, str, int]]:
        """``(pid, address, port)`` of every TCP socket a process of this deployment listens on."""
        return listening_sockets(self._marked_pids())

    def _remember_groups(self) -> None:
        for pid in self._marked_pids():
            stat = _proc_stat(pid)
            if stat is not None:
                self.pgids.add(stat[2])

    def _marked_pids(self) -> list[int]:
        """Processes that inherited a marker, or descend from a running component."""
        needle = f"{MARKER_VAR}={self.deployment_id}".encode()
        marker = str(self.marker_path)
        own = os.getpid()
        pids = _all_pids()
        marked = {
            pid for pid in pids if pid != own and (_environ_has(pid, needle) or _holds_file(pid, marker))
        }
        roots = {
            c.process.pid
            for c in self.components.values()
            if c.process is not None and c.process.poll() is None
        }
        return sorted(marked | _descendants(roots, pids))

    def _live_pids(self) -> list[int]:
        """Non-zombie processes that carry our marker or sit in one of our process groups."""
        live = []
        marked = set(self._marked_pids())
        for pid in _all_pids():
            stat = _proc_stat(pid)
            if stat is None or stat[0] in ("Z", "X") or pid == os.getpid():
                continue
            if pid in marked or stat[2] in self.pgids:
                live.append(pid)
        return live

    def _wait_group_gone(self, pgid: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not any((s := _proc_stat(pid)) and s[2] == pgid and s[0] not in "ZX" for pid in _all_pids()):
                return
            time.sleep(0.1)

    # -- readiness ---------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        response = requests.get(f"{self.api_url}/api/v2/monitor/health", timeout=5)
        response.raise_for_status()
        return response.json()

    def wait_healthy(self, timeout: float = 240, components: Iterable[str] = COMPONENTS) -> None:
        """Wait until the API reports the kinds of ``components`` healthy and each of them is ready
        (with per-component hostnames: heartbeats as its own job; a Celery worker: says it is ready)."""
        components = list(components)
        keys = {"scheduler": "scheduler", "triggerer": "triggerer", "dag-processor": "dag_processor"}
        wanted = sorted({keys[kind] for kind in map(component_kind, components) if kind in keys})

        def probe() -> bool:
            for component in self.components.values():
                if component.process is not None and component.process.poll() is not None:
                    raise DeploymentError(
                        f"{component.name} exited with status {component.process.returncode}\n{self.tail(component.name)}"
                    )
            health = self.health()
            if health["metadatabase"]["status"] != "healthy":
                return False
            return all(health[key]["status"] == "healthy" for key in wanted) and all(
                map(self.is_ready, components)
            )

        wait_for(f"healthy {', '.join(components)}", probe, timeout, interval=0.5, on_timeout=self.tails)

    def is_ready(self, name: str) -> bool:
        component = self.components[name]
        if component.kind == "celery-worker":
            return f"celery@{name} ready." in component.current_log()
        if self.component_hostnames and component.kind in JOB_TYPES:
            return self.job_of(name) is not None
        return True

    @property
    def api(self) -> AirflowApi:
        """A REST API client signed in as the admin (created on first use)."""
        if self._api is None:
            self._api = AirflowApi(self.api_url, ADMIN_USER, self.admin_password)
        return self._api

    def job_of(self, name: str) -> dict[str, Any] | None:
        """The live Airflow job of the component's current start (needs per-component hostnames)."""
        component = self.components[name]
        params = {
            "job_type": JOB_TYPES[component.kind],
            "hostname": name,
            "is_alive": "true",
            "order_by": "-id",
        }
        jobs = self.api.request("GET", "/api/v2/jobs", params=params)["jobs"]
        for job in jobs:
            started = datetime.fromisoformat(job["start_date"].replace("Z", "+00:00")).timestamp()
            if started >= component.started_at - 1:
                return job
        return None

    def trigger_logs(
        self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1
    ) -> dict[str, str]:
        """``{file name: text}`` of the logs triggerers wrote for one try (``attempt=N.log.trigger.<job>.log``)."""
        task_dir = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        if map_index >= 0:
            task_dir /= f"map_index={map_index}"
        prefix = f"attempt={try_number}.log.trigger."
        if not task_dir.is_dir():
            return {}
        return {
            p.name: p.read_text(errors="replace")
            for p in sorted(task_dir.iterdir())
            if p.name.startswith(prefix)
        }

    def wait_trigger_running(
        self,
        api: AirflowApi,
        dag_id: str,
        run_id: str,
        task_id: str = "run",
        *,
        map_index: int = -1,
        not_on: int | None = None,
        seen: list[str] | None = None,
        timeout: float = 60,
    ) -> dict[str, Any]:
        """
        Wait until the task is DEFERRED and a triggerer (other than job ``not_on``) runs its
        trigger: assigned is not yet running, so this waits for that triggerer's "... starting"
        line in the trigger log. Returns the task instance (``triggerer_job`` names the job).
        """
        api.wait_state(dag_id, run_id, task_id, "deferred", seen=seen, map_index=map_index, timeout=timeout)

        def probe() -> dict[str, Any] | None:
            ti = api.task_instance(dag_id, run_id, task_id, map_index=map_index)
            if seen is not None and seen[-1] != ti["state"]:
                seen.append(ti["state"])
            if ti["state"] != "deferred":
                raise DeploymentError(f"left DEFERRED before a triggerer ran its trigger: {ti['state']}")
            triggerer = ti["triggerer_job"]
            if not (ti["trigger"] and triggerer and triggerer["id"] != not_on):
                return None
            logs = self.trigger_logs(dag_id, run_id, task_id, ti["try_number"], map_index)
            started = logs.get(f"attempt={ti['try_number']}.log.trigger.{triggerer['id']}.log", "")
            return ti if " starting" in started else None

        return wait_for(f"a triggerer to run the trigger of {dag_id}/{run_id}/{task_id}", probe, timeout)

    def tail(self, name: str, chars: int = 4000) -> str:
        return f"--- {name} log (end) ---\n{self.components[name].log_text()[-chars:]}"

    def tails(self) -> str:
        return "\n".join(self.tail(name) for name in self.components)


# ------------------------------------------------------------------------------------------------
# REST API client


class AirflowApi:
    """The public REST API (``/api/v2``) with a JWT from ``POST /auth/token``."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {self.get_token(base_url, username, password)}"

    @staticmethod
    def get_token(base_url: str, username: str, password: str) -> str:
        response = requests.post(
            f"{base_url.rstrip('/')}/auth/token",
            json={"username": username, "password": password},
            timeout=30,
        )
        if response.status_code != 201:
            raise DeploymentError(f"POST /auth/token answered {response.status_code}: {response.text[:500]}")
        return response.json()["access_token"]

    def request(self, method: str, path: str, expect: Iterable[int] = (200,), **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", 60)
        response = self.session.request(method, f"{self.base_url}{path}", **kwargs)
        if response.status_code not in tuple(expect):
            raise DeploymentError(f"{method} {path} answered {response.status_code}: {response.text[:2000]}")
        return response.json() if response.content else None

    # -- dags and runs ---

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None, run_id: str | None = None) -> str:
        body: dict[str, Any] = {"logical_date": None, "conf": conf or {}}
        if run_id:
            body["dag_run_id"] = run_id
        return self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body)["dag_run_id"]

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")

    def wait_run_state(self, dag_id: str, run_id: str, state: str, timeout: float = 60) -> dict[str, Any]:
        """Wait for the DAG run's state. Clear only finished runs: on SQLite (no row locks) a clear
        that races the scheduler's own "run finished" update can leave the run failed with the
        cleared task never scheduled again."""
        return wait_for(
            f"{dag_id}/{run_id} to be {state}",
            lambda: (run := self.dag_run(dag_id, run_id))["state"] == state and run,
            timeout,
        )

    # -- task instances ---

    def _ti_path(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
        return f"{path}/{map_index}" if map_index >= 0 else path

    def task_instance(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
        return self.request("GET", self._ti_path(dag_id, run_id, task_id, map_index))

    def mapped_task_instances(self, dag_id: str, run_id: str, task_id: str) -> list[dict[str, Any]]:
        """Every mapped instance of a task, by map index."""
        path = f"{self._ti_path(dag_id, run_id, task_id)}/listMapped"
        tis = self.request("GET", path, params={"limit": 1000})["task_instances"]
        return sorted(tis, key=lambda ti: ti["map_index"])

    def jobs(self, job_type: str) -> list[dict[str, Any]]:
        """Airflow's jobs of one type (``TriggererJob``, ...), alive or not."""
        return self.request("GET", "/api/v2/jobs", params={"job_type": job_type, "limit": 1000})["jobs"]

    def wait_xcom(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        key: str,
        previous: Any = None,
        timeout: float = 60,
        map_index: int = -1,
    ) -> Any:
        """The task's XCom ``key`` once it is set (and differs from ``previous``)."""

        def probe() -> Any:
            value = self.xcoms(dag_id, run_id, task_id, map_index).get(key)
            return value if value and value != previous else None

        return wait_for(f"XCom {key!r} of {dag_id}/{run_id}/{task_id}", probe, timeout)

    def set_state(self, dag_id: str, run_id: str, task_id: str, state: str) -> Any:
        return self.request("PATCH", self._ti_path(dag_id, run_id, task_id), json={"new_state": state})

    def clear(self, dag_id: str, run_id: str, task_ids: list[str], only_failed: bool = False) -> Any:
        body = {
            "dry_run": False,
            "dag_run_id": run_id,
            "task_ids": task_ids,
            "only_failed": only_failed,
            "reset_dag_runs": True,
        }
        return self.request("POST", f"/api/v2/dags/{dag_id}/clearTaskInstances", json=body)

    def xcoms(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
        """``{key: value}`` of the task's current XComs."""
        path = f"{self._ti_path(dag_id, run_id, task_id)}/xcomEntries"
        params = {"map_index": map_index} if map_index >= 0 else None
        entries = self.request("GET", path, params=params)["xcom_entries"]
        values = {}
        for entry in entries:
            detail = self.request("GET", f"{path}/{entry['key']}", params=params)
            values[entry["key"]] = detail["value"]
        return values

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> str:
        """The task log of one try as text (events, plus the exception of a failure)."""
        path = f"{self._ti_path(dag_id, run_id, task_id)}/logs/{try_number}"
        data = self.request(
            "GET", path, params={"full_content": "true"}, headers={"Accept": "application/json"}
        )
        content = data.get("content")
        if not isinstance(content, list):
            return str(content)
        lines = []
        for item in content:
            if not isinstance(item, dict):
                lines.append(str(item))
                continue
            lines.append(str(item.get("event", "")))
            # A failure's exception travels as structured data next to "Task failed with exception".
            for error in item.get("error_detail") or ():
                lines.append(f"{error.get('exc_type')}: {error.get('exc_value')}")
        return "\n".join(lines)

    def wait_state(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        states: str | Iterable[str],
        timeout: float = 90,
        seen: list[str] | None = None,
        interval: float = 0.2,
        map_index: int = -1,
    ) -> dict[str, Any]:
        """Poll the TI until its state is one of ``states``; ``seen`` collects each state change."""
        wanted = {states} if isinstance(states, str) else set(states)
        last: dict[str, Any] = {}

        def probe() -> dict[str, Any] | None:
            ti = self.task_instance(dag_id, run_id, task_id, map_index)
            last.update(ti)
            if seen is not None and (not seen or seen[-1] != ti["state"]):
                seen.append(ti["state"])
            if ti["state"] in wanted:
                return ti
            if ti["state"] in TERMINAL_TI_STATES:
                raise DeploymentError(
                    f"{dag_id}/{run_id}/{task_id} ended {ti['state']!r}, not {sorted(wanted)}"
                )
            return None

        return wait_for(
            f"{dag_id}/{run_id}/{task_id} to be {sorted(wanted)}",
            probe,
            timeout,
            interval=interval,
            on_timeout=lambda: f"last state: {last.get('state')!r}; seen: {seen}",
        )
