"""
A worker-mode task process for the SIGTERM scenario (run as a script by the fault suite).

It does what Airflow's task runner does around ``execute``: a SIGTERM handler that calls the
operator's ``on_kill()`` and returns (``airflow.sdk.execution_time.task_runner._on_term``), so
``execute`` goes on and sees the job end. The outcome goes to the JSON file named on the
command line.

    python sigterm_task.py MARKER OUTCOME_JSON
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import sys
from pathlib import Path


class _TI:
    def xcom_push(self, key: str, value: object) -> None:
        json.dumps(value)


def main(marker: str, outcome_path: str) -> int:
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test asks for stacks if we hang
    from airflow_provider_scriptrunner.operators.scriptrunner import ScriptRunnerRunScriptOperator

    op = ScriptRunnerRunScriptOperator(
        task_id="t", script_id="long", args=[marker], deferrable=False, poll_interval=0.2
    )
    parent_pid = os.getpid()

    def on_term(signum: int, frame: object) -> None:
        if os.getpid() != parent_pid:
            return
        op.on_kill()

    signal.signal(signal.SIGTERM, on_term)
    try:
        result = op.execute({"ti": _TI()})
        outcome = {"result": result, "job_id": op.job_id}
    except BaseException as err:
        outcome = {"error": type(err).__name__, "message": str(err), "job_id": op.job_id}
    Path(outcome_path).write_text(json.dumps(outcome), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
