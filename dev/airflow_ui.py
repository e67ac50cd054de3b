"""
`make airflow`: the Airflow UI on this machine, with the provider, the example DAGs and a
script-runner to run them against, until Ctrl-C.

It starts the bundled script-runner with the scripts in ``example_dags/scripts/`` and a local
Airflow 3 (api-server, scheduler with LocalExecutor, dag-processor, triggerer; SQLite) whose DAGs
folder is ``example_dags/``, adds the ``scriptrunner_default`` connection (pointing at that
server) to Airflow's database, so that it shows under Admin -> Connections, and prints the UI's
address and login. Everything listens on 127.0.0.1 only, every component runs in its own process
group, and Ctrl-C or SIGTERM stops all of them: Airflow's components and the task processes they
started, the script-runner and its scripts. State lives in ``.airflow/airflow-ui/`` (gitignored)
and is thrown away at the next start.

The Airflow side is the end-to-end tests' deployment (``tests/e2e/deployment.py``), used as it
is. ``dev/screenshots.py`` starts the same thing with :class:`LocalAirflow`.

    python dev/airflow_ui.py [--port 8080]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# tests/ is not part of the installed package: put the checkout on the path to reuse the
# deployment of the end-to-end tests instead of keeping a second one here.
sys.path.insert(0, str(ROOT))

from airflow_provider_scriptrunner.testing import ScriptRunnerServerProcess, process_alive  # noqa: E402
from tests.e2e.deployment import (  # noqa: E402
    ADMIN_USER,
    HOST,
    AirflowApi,
    AirflowDeployment,
    DeploymentError,
    free_port,
    wait_for,
)

EXAMPLE_DAGS = ROOT / "example_dags"
WORK_ROOT = ROOT / ".airflow"
CONN_ID = "scriptrunner_default"
PREFERRED_PORT = 8080
LOCAL_BUNDLE = "airflow.dag_processing.bundles.local.LocalDagBundle"
#: Signals that stop everything (SIGINT is Python's KeyboardInterrupt already).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def stop_on_signals() -> None:
    """SIGTERM and SIGHUP (terminal closed) stop everything, as Ctrl-C does."""
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)


class LocalAirflow:
    """
    The bundled script-runner plus a local Airflow deployment on it, in ``.airflow/<name>/``.

    :param name: folder under ``.airflow/``; wiped at start.
    :param port: api-server port; 0 takes 8080 when it is free, else any free port.
    :param extra_bundles: ``{bundle name: folder}`` of DAG bundles to parse besides ``example_dags/``.
    """

    def __init__(self, name: str, port: int = 0, extra_bundles: Mapping[str, Path] | None = None) -> None:
        self.work = WORK_ROOT / name
        self.port = port or (PREFERRED_PORT if _port_is_free(PREFERRED_PORT) else free_port())
        self.extra_bundles = dict(extra_bundles or {})
        self.server: ScriptRunnerServerProcess | None = None
        self.deployment: AirflowDeployment | None = None
        self.api: AirflowApi | None = None
        #: ``ps`` lines of processes that survived the last :meth:`stop` (empty when all are gone).
        self.leftovers: list[str] = []
        self._pid_file = self.work / "owner.pid"

    # -- start -------------------------------------------------------------------------------------

    def start(self) -> LocalAirflow:
        """Start the server and Airflow; on any failure (Ctrl-C included) stop what was started."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self._claim_work_dir()
        shutil.copytree(
            EXAMPLE_DAGS / "scripts", self.work / "scripts", ignore=shutil.ignore_patterns("state")
        )
        # The server's scripts (flaky.sh keeps its markers in TMPDIR), Airflow's bundle storage and
        # Chromium's profile all go to a temporary folder of our own, thrown away at the next start.
        (self.work / "tmp").mkdir()
        os.environ["TMPDIR"] = str(self.work / "tmp")

        self.server = ScriptRunnerServerProcess(
            self.work / "scriptrunner", config_path=self.work / "scripts" / "config.json"
        )
        self.server.start()

        deployment = AirflowDeployment(
            home=self.work / "airflow",
            dags_folder=EXAMPLE_DAGS,
            scriptrunner_url=self.server.url,
            api_port=self.port,
        )
        # The connection goes into the database instead (below): one from the environment would
        # not be listed under Admin -> Connections, and would override any edit made there.
        deployment.env.pop("AIRFLOW_CONN_SCRIPTRUNNER_DEFAULT", None)
        if self.extra_bundles:
            # The default bundle (the DAGs folder, example_dags/), then one per extra folder.
            bundles = [{"name": "dags-folder", "classpath": LOCAL_BUNDLE, "kwargs": {}}]
            bundles += [
                {"name": name, "classpath": LOCAL_BUNDLE, "kwargs": {"path": str(path)}}
                for name, path in self.extra_bundles.items()
            ]
            deployment.env["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"] = json.dumps(bundles)
        self.deployment = deployment
        deployment.start()

        self.api = AirflowApi(deployment.api_url, ADMIN_USER, deployment.admin_password)
        self.api.request(
            "POST",
            "/api/v2/connections",
            expect=(201,),
            json={
                "connection_id": CONN_ID,
                "conn_type": "scriptrunner",
                "description": "The bundled script-runner started by make airflow",
                "host": HOST,
                "port": self.server.port,
            },
        )
        self._wait_for_dags(self.dag_ids())

    def _claim_work_dir(self) -> None:
        """Refuse to wipe the folder of a run that is still alive; else start from an empty one."""
        try:
            owner = int(self._pid_file.read_text())
        except (FileNotFoundError, ValueError):
            owner = None
        if owner is not None and owner != os.getpid() and process_alive(owner):
            raise SystemExit(f"{self.work} belongs to a run that is still alive (pid {owner}); stop it first")
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        self._pid_file.write_text(str(os.getpid()))

    def dag_ids(self) -> list[str]:
        """The DAGs this deployment must show: one per file (each file is named after its DAG)."""
        folders = [EXAMPLE_DAGS, *self.extra_bundles.values()]
        return sorted(path.stem for folder in folders for path in Path(folder).glob("*.py"))

    def _wait_for_dags(self, dag_ids: Iterable[str], timeout: float = 240) -> None:
        assert self.api is not None and self.deployment is not None
        wanted = set(dag_ids)
        api, deployment = self.api, self.deployment

        def parsed() -> bool:
            listed = {
                dag["dag_id"] for dag in api.request("GET", "/api/v2/dags", params={"limit": 100})["dags"]
            }
            return wanted <= listed

        def why() -> str:
            errors = api.request("GET", "/api/v2/importErrors").get("import_errors", [])
            text = "\n".join(f"{e['filename']}: {e['stack_trace'][-1500:]}" for e in errors)
            return f"import errors:\n{text}" if errors else deployment.tail("dag-processor")

        wait_for(f"the DAGs {sorted(wanted)} to be parsed", parsed, timeout, interval=1, on_timeout=why)

    # -- while it runs -----------------------------------------------------------------------------

    def check_alive(self) -> None:
        """Raise DeploymentError when the server or an Airflow component has exited."""
        assert self.server is not None and self.deployment is not None
        if not self.server.running:
            raise DeploymentError(f"the script-runner exited; see {self.server.stderr_path}")
        for component in self.deployment.components.values():
            if not component.running:
                raise DeploymentError(f"{component.name} exited\n{self.deployment.tail(component.name)}")

    # -- stop --------------------------------------------------------------------------------------

    def stop(self) -> list[str]:
        """Stop every process of the deployment and the server; return ``ps`` lines of any survivor.

        Ctrl-C, SIGTERM and SIGHUP are ignored meanwhile: a second Ctrl-C must not cut the teardown
        short and leave processes behind.
        """
        previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in STOP_SIGNALS}
        try:
            left: list[str] = []
            if self.deployment is not None:
                self.deployment.stop_all()
                left += self.deployment.leftovers()
            if self.server is not None:
                pid = self.server.pid
                self.server.stop()
                if pid is not None and process_alive(pid):
                    left.append(f"{pid} script-runner (bundled)")
            try:
                if self._pid_file.read_text() == str(os.getpid()):
                    self._pid_file.unlink()
            except FileNotFoundError:
                pass
            self.leftovers = left
            return left
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def __enter__(self) -> LocalAirflow:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def report_stop(self) -> int:
        """Say whether everything is gone; 0 when it is."""
        if self.leftovers:
            print(
                "Processes still alive after stopping:\n  " + "\n  ".join(self.leftovers),
                file=sys.stderr,
                flush=True,
            )
            return 1
        print(
            "Stopped: Airflow, its task processes, the script-runner and its scripts; nothing is left running.",
            flush=True,
        )
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--port",
        type=int,
        default=0,
        help=f"api-server port (default: {PREFERRED_PORT} if free, else any free port)",
    )
    options = parser.parse_args(argv)

    stop_on_signals()
    local = LocalAirflow("airflow-ui", port=options.port)
    print(
        f"Starting script-runner and Airflow (api-server on {HOST}:{local.port}); this takes a minute...",
        flush=True,
    )
    started = time.monotonic()
    try:
        with local:
            assert local.deployment is not None and local.server is not None
            home = local.deployment.home
            print(
                f"\nReady after {time.monotonic() - started:.0f} s.\n\n"
                f"  Airflow UI     {local.deployment.api_url}\n"
                f"  login          {ADMIN_USER} / {local.deployment.admin_password}\n"
                f"  DAGs folder    {EXAMPLE_DAGS.relative_to(ROOT)}/ ({len(local.dag_ids())} DAGs)\n"
                f"  connection     {CONN_ID} -> {local.server.url} (Admin -> Connections)\n"
                f"  script-runner  {local.server.url}, scripts from {(EXAMPLE_DAGS / 'scripts').relative_to(ROOT)}/\n"
                f"  logs           {home.relative_to(ROOT)}/logs/ (components/ has each component's output)\n\n"
                "Trigger a DAG from the UI (the play button); Ctrl-C stops everything.",
                flush=True,
            )
            while True:
                local.check_alive()
                time.sleep(1)
    except KeyboardInterrupt:
        print(flush=True)
        return local.report_stop()
    except DeploymentError as err:
        print(f"\nFailed: {err}", file=sys.stderr, flush=True)
        local.report_stop()
        return 1


if __name__ == "__main__":
    sys.exit(main())
