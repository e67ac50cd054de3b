"""
Run a DAG with ``airflow dags test`` against a script-runner, in a throwaway AIRFLOW_HOME.

Used by ``make demo`` and by the example-DAG tests; DAG authors can use it in their own tests::

    from airflow_provider_scriptrunner.testing.dag_runner import run_dag_test

    result = run_dag_test("my_dag", dags_folder="dags", airflow_home=tmp_path / "airflow",
                          scriptrunner_url=server.url)
    assert result.states["my_task"] == "success"

Standard library only: Airflow runs in subprocesses with their own environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from collections.abc import Mapping

_RESULTS_SCRIPT = r"""
import json, sys
from sqlalchemy import select
from airflow.models import DagRun, TaskInstance
from airflow.models.asset import AssetEvent, AssetModel
from airflow.models.renderedtifields import RenderedTaskInstanceFields as RTIF
from airflow.models.xcom import XComModel
from airflow.utils.session import create_session

dag_id = sys.argv[1]
with create_session() as session:
    run = session.scalars(select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.id.desc())).first()
    out = {"run_id": run.run_id if run else None, "state": str(run.state) if run else None, "tasks": [],
           "asset_events": []}
    if run is not None:
        tis = session.scalars(select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run.run_id)).all()
        for ti in sorted(tis, key=lambda t: (t.task_id, t.map_index)):
            xcoms = session.scalars(select(XComModel).where(
                XComModel.dag_id == dag_id, XComModel.run_id == run.run_id,
                XComModel.task_id == ti.task_id, XComModel.map_index == ti.map_index)).all()
            values = {x.key: x.value for x in xcoms if not x.key.startswith("_link_")}
            if hasattr(RTIF, "task_instance_id"):  # Airflow 3.4: keyed by the task instance's id
                which = [RTIF.task_instance_id == ti.id]
            else:
                which = [RTIF.dag_id == dag_id, RTIF.run_id == run.run_id,
                         RTIF.task_id == ti.task_id, RTIF.map_index == ti.map_index]
            rendered = session.scalars(select(RTIF.rendered_fields).where(*which)).first()
            out["tasks"].append({"task_id": ti.task_id, "map_index": ti.map_index, "state": str(ti.state),
                                 "try_number": ti.try_number, "xcom": values, "rendered": rendered or {}})
        events = session.execute(select(AssetModel.name, AssetEvent.extra).join(
            AssetModel, AssetModel.id == AssetEvent.asset_id).where(
            AssetEvent.source_dag_id == dag_id, AssetEvent.source_run_id == run.run_id)).all()
        out["asset_events"] = [{"asset": name, "extra": extra} for name, extra in events]
print("@@RESULTS@@" + json.dumps(out, default=str))
"""


@dataclass
class DagTestResult:
    """What one ``airflow dags test`` run left behind."""

    dag_id: str
    returncode: int
    output: str
    run_state: str | None = None
    tasks: list[dict[str, Any]] = field(default_factory=list)
    #: The asset events the run produced: ``{"asset": name, "extra": {...}}``.
    asset_events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def states(self) -> dict[str, str]:
        """``{task_id: state}``; mapped tasks appear as ``task_id[i]``."""
        return {_label(t): t["state"] for t in self.tasks}

    def xcom(self, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        return self._task(task_id, map_index)["xcom"].get(key)

    def rendered_fields(self, task_id: str, map_index: int = -1) -> dict[str, Any]:
        """The task's Rendered Templates, as the UI shows them."""
        return self._task(task_id, map_index)["rendered"]

    def asset_event_extras(self, asset_name: str) -> list[dict[str, Any]]:
        """The extra of each event of one asset that the run produced."""
        return [event["extra"] for event in self.asset_events if event["asset"] == asset_name]

    def _task(self, task_id: str, map_index: int) -> dict[str, Any]:
        for task in self.tasks:
            if task["task_id"] == task_id and task["map_index"] == map_index:
                return task
        raise KeyError(f"no task {task_id!r} (map_index {map_index}) in the run")


def _label(task: dict[str, Any]) -> str:
    return task["task_id"] if task["map_index"] < 0 else f"{task['task_id']}[{task['map_index']}]"


def airflow_env(
    airflow_home: str | os.PathLike[str],
    dags_folder: str | os.PathLike[str],
    scriptrunner_url: str,
    extra_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """
    Environment for Airflow commands: its own home, the DAGs folder, and the default connection.

    The caller's ``AIRFLOW*`` variables are left out, so that no setting of the machine leaks in;
    ``extra_env`` (e.g. ``AIRFLOW__OPENLINEAGE__TRANSPORT``, or another
    ``AIRFLOW_CONN_SCRIPTRUNNER_DEFAULT``) is added last and wins over ours.
    """
    parts = urlsplit(scriptrunner_url)
    conn = {
        "conn_type": "scriptrunner",
        "host": scriptrunner_url if parts.path not in ("", "/") else parts.hostname,
        "port": parts.port,
    }
    if parts.path in ("", "/"):
        conn["schema"] = parts.scheme
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(Path(airflow_home).resolve()),
        AIRFLOW__CORE__DAGS_FOLDER=str(Path(dags_folder).resolve()),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
        AIRFLOW_CONN_SCRIPTRUNNER_DEFAULT=json.dumps(conn),
    )
    env.update(extra_env or {})
    return env


def migrate(env: dict[str, str], timeout: float = 600) -> None:
    """Create the metadata database (SQLite in AIRFLOW_HOME)."""
    done = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def run_dag_test(
    dag_id: str,
    *,
    dags_folder: str | os.PathLike[str],
    airflow_home: str | os.PathLike[str],
    scriptrunner_url: str,
    timeout: float = 900,
    migrate_first: bool = True,
    extra_env: Mapping[str, str] | None = None,
) -> DagTestResult:
    """
    Run ``airflow dags test DAG_ID`` and read back each task's state and XComs.

    :param extra_env: more environment variables for Airflow (see :func:`airflow_env`).
    """
    env = airflow_env(airflow_home, dags_folder, scriptrunner_url, extra_env)
    Path(airflow_home).mkdir(parents=True, exist_ok=True)
    if migrate_first and not (Path(airflow_home) / "airflow.db").exists():
        migrate(env)
    done = subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "test", dag_id],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        start_new_session=True,
    )
    result = DagTestResult(dag_id, done.returncode, done.stdout)
    query = subprocess.run(
        [sys.executable, "-c", _RESULTS_SCRIPT, dag_id], env=env, capture_output=True, text=True, timeout=300
    )
    marker = [line for line in query.stdout.splitlines() if line.startswith("@@RESULTS@@")]
    if query.returncode != 0 or not marker:
        raise RuntimeError(f"could not read the results of {dag_id}:\n{query.stderr[-3000:]}")
    data = json.loads(marker[-1][len("@@RESULTS@@") :])
    result.run_state = data["state"]
    result.tasks = data["tasks"]
    result.asset_events = data["asset_events"]
    return result
