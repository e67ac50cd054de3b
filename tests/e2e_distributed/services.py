"""
The distributed deployment's backing services, from Debian's packages: a throwaway PostgreSQL
cluster (``initdb`` + ``pg_ctl``, metadata database and Celery result backend) and a Redis
server (Celery broker). Each listens on ``127.0.0.1`` on a free port only, runs in a process
group of its own, and :meth:`stop` leaves nothing behind (:meth:`leftovers` says what would be).

PostgreSQL refuses to run as root, so as root the cluster belongs to an unprivileged user
(``nobody`` unless told otherwise) and every PostgreSQL command runs through ``setpriv``. Its
files live in a directory of their own under the system temp dir, because pytest's temp dirs
(mode 0700, owned by root) are closed to that user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

from tests.e2e.deployment import HOST, free_port, wait_for

POSTGRES_ROOT = Path("/usr/lib/postgresql")
POSTGRES_TOOLS = ("initdb", "pg_ctl", "postgres", "createdb")
#: Settings for a cluster that holds nothing worth keeping: no fsync, no durable commits.
POSTGRES_SETTINGS = {
    "listen_addresses": HOST,
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "64MB",
}


def postgres_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with every tool we need (Debian's layout)."""
    override = os.environ.get("SCRIPTRUNNER_E2E_PG_BIN")
    candidates = (
        [Path(override)]
        if override
        else sorted(
            POSTGRES_ROOT.glob("*/bin"),
            key=lambda p: [int(n) for n in re.findall(r"\d+", p.parent.name)],
            reverse=True,
        )
    )
    for directory in candidates:
        if all(os.access(directory / tool, os.X_OK) for tool in POSTGRES_TOOLS):
            return directory
    return None


def redis_server_binary() -> Path | None:
    found = (
        os.environ.get("SCRIPTRUNNER_E2E_REDIS_SERVER")
        or shutil.which("redis-server")
        or "/usr/bin/redis-server"
    )
    return Path(found) if os.access(found, os.X_OK) else None


def _group_members(pgid: int) -> list[int]:
    members = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                data = handle.read().decode(errors="replace")
        except OSError:
            continue
        fields = data[data.rindex(")") + 2 :].split()
        if fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            members.append(int(name))
    return members


def _working_in(directory: Path) -> list[int]:
    """Live processes whose working directory is ``directory`` (every PostgreSQL process of a
    cluster works in its data directory; each sits in a session of its own, so no group has them all)."""
    found = []
    target = str(directory.resolve())
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{name}/cwd") != target:
                continue
            with open(f"/proc/{name}/stat", "rb") as handle:
                data = handle.read().decode(errors="replace")
        except OSError:
            continue
        if data[data.rindex(")") + 2 :].split()[0] not in ("Z", "X"):
            found.append(int(name))
    return found


def _kill_group(pgid: int, timeout: float = 10) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return
    wait_for(f"process group {pgid} to be gone", lambda: not _group_members(pgid), timeout)


def _service_env() -> dict[str, str]:
    """A minimal environment: nothing of the test's (no Airflow settings, no deployment markers)."""
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TZ": "UTC"}


class PostgresCluster:
    """
    A PostgreSQL cluster in a temporary directory, with one database and one password user.

    :param bin_dir: where ``initdb``, ``pg_ctl`` and ``postgres`` are (see :func:`postgres_bin_dir`).
    :param run_as: the system user that owns the cluster when we are root.
    """

    database = "airflow"
    user = "airflow"

    def __init__(self, bin_dir: Path, run_as: str = "nobody") -> None:
        self.bin_dir = bin_dir
        self.port = free_port()
        self.password = secrets.token_urlsafe(16)
        self.directory = Path(tempfile.mkdtemp(prefix="scriptrunner-e2e-pg-"))
        self.data_dir = self.directory / "data"
        self.socket_dir = self.directory / "socket"
        self.log_path = self.directory / "postgres.log"
        self.postmaster_pid: int | None = None
        self.owner = pwd.getpwnam(run_as) if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the database (psycopg2)."""
        return f"postgresql+psycopg2://{self.user}:{self.password}@{HOST}:{self.port}/{self.database}"

    @property
    def celery_result_backend(self) -> str:
        return f"db+postgresql://{self.user}:{self.password}@{HOST}:{self.port}/{self.database}"

    def _run(
        self, tool: str, *args: str, timeout: float = 120, **popen: object
    ) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / tool), *args]
        if self.owner is not None:
            command = [
                "setpriv",
                f"--reuid={self.owner.pw_uid}",
                f"--regid={self.owner.pw_gid}",
                "--clear-groups",
                "--",
                *command,
            ]
        done = subprocess.run(
            command,
            env=_service_env(),
            cwd=self.directory,
            capture_output=True,
            text=True,
            timeout=timeout,
            **popen,  # type: ignore[arg-type]
        )
        if done.returncode != 0:
            output = f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            raise RuntimeError(f"{tool} failed ({done.returncode}):\n{output}\n{self.log_tail()}")
        return done

    def start(self) -> PostgresCluster:
        self.socket_dir.mkdir()
        password_file = self.directory / "password"
        password_file.write_text(self.password + "\n", encoding="utf-8")
        password_file.chmod(0o600)
        if self.owner is not None:
            for path in (self.directory, self.socket_dir, password_file):
                os.chown(path, self.owner.pw_uid, self.owner.pw_gid)
        # TCP needs the password; the unix socket (in our directory only) is trusted, for createdb.
        self._run(
            "initdb", "-D", str(self.data_dir), "-U", self.user, f"--pwfile={password_file}", "-E", "UTF8",
            "--auth-host=scram-sha-256", "--auth-local=trust", "--no-sync", "--no-instructions",
        )  # fmt: skip
        password_file.unlink()
        options = " ".join(
            f"-c {key}={value}" for key, value in {**POSTGRES_SETTINGS, "port": self.port}.items()
        )
        options += f" -k {self.socket_dir}"
        # pg_ctl starts the postmaster in a session (and process group) of its own, and waits (-w)
        # until it accepts connections. (Each backend then calls setsid() too.)
        self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_path),
            "-w",
            "-t",
            "60",
            "-o",
            options,
            "start",
        )
        self.postmaster_pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
        self._run(
            "createdb", "-h", str(self.socket_dir), "-p", str(self.port), "-U", self.user, self.database
        )
        return self

    def stop(self) -> None:
        """Fast shutdown (pg_ctl), then SIGKILL whatever is left of the group; removes the files."""
        try:
            if self.postmaster_pid is not None and self.leftovers():
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    self._run(
                        "pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "30", "stop", timeout=60
                    )
                for pid in self.leftovers():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                wait_for("the PostgreSQL processes to be gone", lambda: not self.leftovers(), 10)
        finally:
            if not self.leftovers():
                shutil.rmtree(self.directory, ignore_errors=True)

    def leftovers(self) -> list[int]:
        """Pids of the cluster still alive: the postmaster and every process working in its data directory."""
        return _working_in(self.data_dir) if self.data_dir.is_dir() else []

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return f"--- postgres log (end) ---\n{self.log_path.read_text(errors='replace')[-chars:]}"
        except OSError:
            return "--- no postgres log ---"


class RedisServer:
    """A Redis server with its own config: loopback only, a free port, no persistence, in the foreground."""

    def __init__(self, directory: Path, binary: Path) -> None:
        self.directory = directory
        self.binary = binary
        self.port = free_port()
        self.log_path = directory / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "redis.conf"
        config.write_text(
            "\n".join(
                [
                    f"bind {HOST}",
                    f"port {self.port}",
                    "protected-mode yes",
                    "daemonize no",
                    'save ""',
                    "appendonly no",
                    f"dir {self.directory}",
                    'logfile ""',  # stdout, into our log file
                    "databases 2",
                ]
            )
            + "\n",
            encoding="utf-8",
        )
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(self.binary), str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                env=_service_env(),
                start_new_session=True,
            )
        wait_for(f"redis on port {self.port}", self._pong, timeout=30, on_timeout=self.log_tail)
        return self

    def _pong(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(
                f"redis-server exited with status {self.process.returncode}\n{self.log_tail()}"
            )
        with socket.create_connection((HOST, self.port), timeout=2) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(64).startswith(b"+PONG")

    def stop(self, grace: float = 10) -> None:
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()  # no persistence configured: it exits without writing anything
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(grace)
        _kill_group(process.pid)
        process.wait()

    def leftovers(self) -> list[int]:
        return _group_members(self.process.pid) if self.process is not None else []

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return f"--- redis log (end) ---\n{self.log_path.read_text(errors='replace')[-chars:]}"
        except OSError:
            return "--- no redis log ---"
