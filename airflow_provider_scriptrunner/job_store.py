"""
Where a run-script task remembers its live job from one try to the next.

A new try (a retry, or a clear) must find the previous try's job to reattach to it, or to cancel it
before starting the script again: otherwise one task has two live copies of its script.

- Airflow 3.3+: the task's ``task_state_store``, made for exactly this (shared by a task's tries).
- Airflow 3.1/3.2 have no task state store. The store is then an Airflow Variable, keyed by
  dag/run/task/map index and deleted when the job ends. Why a Variable: XComs are per try (Airflow
  clears a task's XComs when a new try starts, before ``execute``), so the next try cannot read the
  previous try's; a Variable survives tries, is readable from workers and triggerers on every 3.x
  version, and needs nothing installed. It shows under Admin -> Variables while the job runs; a
  try killed hard (SIGKILL) leaves it until the next try of that task ends the job.
"""

from __future__ import annotations

import hashlib
from typing import Any

#: Key of the job id in the task's state store (Airflow 3.3+), shared by all tries of a task.
STATE_JOB_ID = "scriptrunner_job_id"
#: Prefix of the Variables that play the task state store on Airflow 3.1/3.2.
VARIABLE_PREFIX = "scriptrunner_job__"
#: Airflow Variable keys are at most 250 characters.
_MAX_KEY = 250


def variable_key(dag_id: str, run_id: str, task_id: str, map_index: int | None) -> str:
    """The Variable of one task instance (all its tries); long ids are shortened with a hash."""
    index = -1 if map_index is None else map_index
    key = f"{VARIABLE_PREFIX}{dag_id}__{run_id}__{task_id}__{index}"
    if len(key) <= _MAX_KEY:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return f"{key[: _MAX_KEY - 34]}__{digest}"


class JobStore:
    """
    The previous try's job id, for the run operator; never fails the task over bookkeeping.

    :param context: the task's context.
    :param log: where a failure to read or write the store is reported (a warning).
    """

    def __init__(self, context: Any, log: Any) -> None:
        self.log = log
        from airflow_provider_scriptrunner._compat import HAS_TASK_STATE_STORE

        self._state = context.get("task_state_store")
        ti = context.get("ti")
        dag_id, run_id, task_id = (getattr(ti, name, None) for name in ("dag_id", "run_id", "task_id"))
        self._key: str | None = None
        if (
            not HAS_TASK_STATE_STORE
            and isinstance(dag_id, str)
            and isinstance(run_id, str)
            and isinstance(task_id, str)
        ):
            self._key = variable_key(dag_id, run_id, task_id, getattr(ti, "map_index", -1))

    @property
    def kind(self) -> str:
        return "task_state_store" if self._state is not None else "Variable"

    @property
    def available(self) -> bool:
        return self._state is not None or self._key is not None

    def get(self) -> str | None:
        try:
            if self._state is not None:
                value = self._state.get(STATE_JOB_ID)
            elif self._key is not None:
                from airflow.sdk import Variable

                value = Variable.get(self._key, default=None)
            else:
                return None
        except Exception as err:  # noqa: BLE001 - without the store the try starts a new job
            self.log.warning("Could not read the previous try's job from the %s: %s", self.kind, err)
            return None
        return value if isinstance(value, str) and value else None

    def set(self, job_id: str) -> None:
        try:
            if self._state is not None:
                self._state.set(STATE_JOB_ID, job_id)
            elif self._key is not None:
                from airflow.sdk import Variable

                Variable.set(
                    self._key,
                    job_id,
                    description="script-runner job of a running task (airflow-provider-scriptrunner)",
                )
        except Exception as err:  # noqa: BLE001 - losing reattach must not fail the run
            self.log.warning("Could not record job %s in the %s: %s", job_id, self.kind, err)

    def clear(self) -> None:
        try:
            if self._state is not None:
                self._state.delete(STATE_JOB_ID)
            elif self._key is not None:
                from airflow.sdk import Variable

                Variable.delete(self._key)
        except Exception as err:  # noqa: BLE001
            self.log.warning("Could not clear the job record in the %s: %s", self.kind, err)
