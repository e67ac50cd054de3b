"""
A real Airflow deployment for the end-to-end tests: scheduler (LocalExecutor), dag-processor,
triggerer and api-server, on SQLite in a temporary AIRFLOW_HOME, plus a small client for the
public REST API (``/api/v2``).

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

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import requests

from airflow_provider_scriptrunner.testing.dag_runner import airflow_env, migrate

HOST = "127.0.0.1"
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
ADMIN_USER = "admin"
#: Environment variable carried by every process of a deployment (value: the deployment's id).
MARKER_VAR = "SCRIPTRUNNER_E2E_DEPLOYMENT"
TERMINAL_TI_STATES = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})

T = TypeVar("T")


class DeploymentError(RuntimeError):
    """A component did not come up, an API call failed, or a wait ran out."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_for(what: str, probe: Callable[[], T], timeout: float, interval: float = 0.25, on_timeout: Callable[[], str] | None = None) -> T:
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


def _signal(target: int, signum: int, group: bool) -> None:
    try:
        (os.killpg if group else os.kill)(target, signum)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass
class Component:
    name: str
    command: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""


@dataclass
class AirflowDeployment:
    """
    Airflow 3 on SQLite in ``home``, with the DAGs of ``dags_folder``, talking to ``scriptrunner_url``.

    Use :meth:`start` once, :meth:`restart` for a single component, and :meth:`stop_all` at the
    end (always; it is idempotent). :meth:`leftovers` lists any process still alive after that.
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

    def __post_init__(self) -> None:
        self.home = Path(self.home).resolve()
        self.log_dir = self.home / "logs" / "components"
        self.marker_path = self.home / ".deployment"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.env = self._environment()
        airflow = [sys.executable, "-m", "airflow"]
        commands = {
            "api-server": [*airflow, "api-server", "--host", HOST, "--port", str(self.api_port), "--workers", "1"],
            # --skip-serve-logs: the log servers would listen on all interfaces; logs are local files.
            "scheduler": [*airflow, "scheduler", "--skip-serve-logs"],
            "dag-processor": [*airflow, "dag-processor"],
            "triggerer": [*airflow, "triggerer", "--skip-serve-logs"],
        }
        for name in COMPONENTS:
            self.components[name] = Component(name, commands[name], self.log_dir / f"{name}.log")

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
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
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
        return env

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self, timeout: float = 240) -> AirflowDeployment:
        """Create the database, start every component and wait until the API reports them healthy."""
        migrate(self.env)
        for name in COMPONENTS:
            self.start_component(name)
        self.wait_healthy(timeout=timeout)
        # The api-server builds its (versioned) execution API on the first request, which takes
        # ~10 s on a small machine: long enough for the first task's first call to time out.
        wait_for("the execution API", lambda: requests.get(f"{self.api_url}/execution/health", timeout=60).ok, timeout)
        return self

    def start_component(self, name: str) -> None:
        component = self.components[name]
        if component.running:
            raise RuntimeError(f"{name} is already running (pid {component.process.pid})")  # type: ignore[union-attr]
        marker = os.open(self.marker_path, os.O_RDONLY | os.O_CREAT, 0o600)
        with open(component.log_path, "ab") as log:
            log.write(f"\n===== start #{component.starts + 1} of {name}: {' '.join(component.command)}\n".encode())
            log.flush()
            component.process = subprocess.Popen(
                component.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.home,
                env=self.env,
                start_new_session=True,
                pass_fds=(marker,),
            )
        os.close(marker)
        component.starts += 1
        self.pgids.add(component.process.pid)

    def stop_component(self, name: str, grace: float = 20) -> None:
        """SIGTERM the component's process group, wait, then SIGKILL what is left of it."""
        component = self.components[name]
        process = component.process
        if process is None:
            return
        self._remember_groups()
        _signal(process.pid, signal.SIGTERM, group=True)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            pass
        _signal(process.pid, signal.SIGKILL, group=True)
        process.wait()
        self._wait_group_gone(process.pid, 10)

    def restart(self, name: str, timeout: float = 120) -> None:
        """Stop one component and start it again; waits until the API reports it healthy."""
        self.stop_component(name)
        self.start_component(name)
        self.wait_healthy(timeout=timeout, components=[name])

    def stop_all(self, grace: float = 20) -> None:
        """Stop every process this deployment started, directly or not. Safe to call again."""
        self._remember_groups()
        for component in self.components.values():
            if component.process is not None and component.process.poll() is None:
                _signal(component.process.pid, signal.SIGTERM, group=True)
        for pid in self._marked_pids():
            _signal(pid, signal.SIGTERM, group=False)
        deadline = time.monotonic() + grace
        for component in self.components.values():
            if component.process is not None:
                try:
                    component.process.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
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
        output = subprocess.run(["ps", "-eo", "pid=,pgid=,stat=,args="], capture_output=True, text=True, check=True).stdout
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
        for pid in self._marked_pids():
            try:
                links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
            except OSError:
                continue
            for link in links:
                if link.startswith("socket:[") and link[8:-1] in listening:
                    found.append((pid, *listening[link[8:-1]]))
        return found

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
        marked = {pid for pid in pids if pid != own and (_environ_has(pid, needle) or _holds_file(pid, marker))}
        roots = {c.process.pid for c in self.components.values() if c.process is not None and c.process.poll() is None}
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
        keys = {"scheduler": "scheduler", "triggerer": "triggerer", "dag-processor": "dag_processor"}
        wanted = [keys[name] for name in components if name in keys]

        def probe() -> bool:
            for component in self.components.values():
                if component.process is not None and component.process.poll() is not None:
                    raise DeploymentError(
                        f"{component.name} exited with status {component.process.returncode}\n{self.tail(component.name)}"
                    )
            health = self.health()
            return health["metadatabase"]["status"] == "healthy" and all(health[key]["status"] == "healthy" for key in wanted)

        wait_for(f"healthy {', '.join(components)}", probe, timeout, interval=0.5, on_timeout=self.tails)

    def trigger_logs(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> dict[str, str]:
        """``{file name: text}`` of the logs triggerers wrote for one try (``attempt=N.log.trigger.<job>.log``)."""
        task_dir = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        prefix = f"attempt={try_number}.log.trigger."
        if not task_dir.is_dir():
            return {}
        return {p.name: p.read_text(errors="replace") for p in sorted(task_dir.iterdir()) if p.name.startswith(prefix)}

    def tail(self, name: str, chars: int = 4000) -> str:
        return f"--- {name} log (end) ---\n{self.components[name].log_text()[-chars:]}"

    def tails(self) -> str:
        return "\n".join(self.tail(name) for name in COMPONENTS)


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
            f"{base_url.rstrip('/')}/auth/token", json={"username": username, "password": password}, timeout=30
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
            f"{dag_id}/{run_id} to be {state}", lambda: (run := self.dag_run(dag_id, run_id))["state"] == state and run, timeout
        )

    # -- task instances ---

    def _ti_path(self, dag_id: str, run_id: str, task_id: str) -> str:
        return f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"

    def task_instance(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        return self.request("GET", self._ti_path(dag_id, run_id, task_id))

    def set_state(self, dag_id: str, run_id: str, task_id: str, state: str) -> Any:
        return self.request("PATCH", self._ti_path(dag_id, run_id, task_id), json={"new_state": state})

    def clear(self, dag_id: str, run_id: str, task_ids: list[str], only_failed: bool = False) -> Any:
        body = {"dry_run": False, "dag_run_id": run_id, "task_ids": task_ids, "only_failed": only_failed, "reset_dag_runs": True}
        return self.request("POST", f"/api/v2/dags/{dag_id}/clearTaskInstances", json=body)

    def xcoms(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        """``{key: value}`` of the task's current XComs."""
        entries = self.request("GET", f"{self._ti_path(dag_id, run_id, task_id)}/xcomEntries")["xcom_entries"]
        values = {}
        for entry in entries:
            detail = self.request("GET", f"{self._ti_path(dag_id, run_id, task_id)}/xcomEntries/{entry['key']}")
            values[entry["key"]] = detail["value"]
        return values

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> str:
        """The task log of one try as text (events, plus the exception of a failure)."""
        path = f"{self._ti_path(dag_id, run_id, task_id)}/logs/{try_number}"
        data = self.request("GET", path, params={"full_content": "true"}, headers={"Accept": "application/json"})
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
    ) -> dict[str, Any]:
        """Poll the TI until its state is one of ``states``; ``seen`` collects each state change."""
        wanted = {states} if isinstance(states, str) else set(states)
        last: dict[str, Any] = {}

        def probe() -> dict[str, Any] | None:
            ti = self.task_instance(dag_id, run_id, task_id)
            last.update(ti)
            if seen is not None and (not seen or seen[-1] != ti["state"]):
                seen.append(ti["state"])
            if ti["state"] in wanted:
                return ti
            if ti["state"] in TERMINAL_TI_STATES:
                raise DeploymentError(f"{dag_id}/{run_id}/{task_id} ended {ti['state']!r}, not {sorted(wanted)}")
            return None

        return wait_for(
            f"{dag_id}/{run_id}/{task_id} to be {sorted(wanted)}",
            probe,
            timeout,
            interval=interval,
            on_timeout=lambda: f"last state: {last.get('state')!r}; seen: {seen}",
        )
