"""
`make demo`: start the bundled script-runner with the example scripts, run the example DAG with
`airflow dags test`, and print each task's result. Everything lives in .demo/ and every process
it starts is stopped before it exits.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from airflow_provider_scriptrunner.testing import ScriptRunnerServerProcess
from airflow_provider_scriptrunner.testing.dag_runner import run_dag_test

ROOT = Path(__file__).resolve().parents[1]


def main(dag_ids: list[str]) -> int:
    work = ROOT / ".demo"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(ROOT / "example_dags" / "scripts", work / "server")
    ok = True
    with ScriptRunnerServerProcess(
        work / "server-run", config_path=work / "server" / "config.json"
    ) as server:
        print(f"script-runner (bundled) listening on {server.url}")
        for dag_id in dag_ids:
            print(f"\n=== airflow dags test {dag_id}")
            result = run_dag_test(
                dag_id,
                dags_folder=ROOT / "example_dags",
                airflow_home=work / "airflow",
                scriptrunner_url=server.url,
            )
            (work / f"{dag_id}.log").write_text(result.output)
            for task in result.tasks:
                value = task["xcom"].get("return_value")
                label = (
                    task["task_id"] if task["map_index"] < 0 else f"{task['task_id']}[{task['map_index']}]"
                )
                print(
                    f"{label:<24} {task['state']:<10} {json.dumps(value, ensure_ascii=False)[:300] if value is not None else ''}"
                )
            print(f"DAG run: {result.run_state} (full output in .demo/{dag_id}.log)")
            ok = ok and result.run_state == "success"
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["example_scriptrunner"]))
