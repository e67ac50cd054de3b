"""
Which try of a task owns its job, and whether a trigger being stopped must cancel it.

A new try (a retry, or a clear) must find the previous try's job to reattach to it, or to cancel it
before starting the script again: otherwise one task has two live copies of its script. The job id
is kept in a :class:`JobRecord`, whose store is chosen once per task:

- Airflow 3.3+: the task's ``task_state_store``, made for exactly this (shared by a task's tries).
- Airflow 3.1/3.2 have no task state store. The record is then an Airflow Variable, keyed by
  dag/run/task/map index and deleted when the job ends. XComs cannot play it: Airflow clears a
  task's XComs when a new try starts, so the next try cannot read the previous try's. A Variable
  survives tries, is readable from workers and triggerers on every 3.x version, and needs nothing
  installed. It shows under Admin -> Variables while the job runs; a try killed hard (SIGKILL)
  leaves it until the next try of that task ends the job.

The try that deferred records itself as the job's owner (the XCom :data:`XCOM_OWNER_TRY`), so that
a trigger stopped after a clear can tell a newer try's job from its own. :func:`cancel_verdict`
decides, from what the trigger (or the listener) has read, whether the job must be canceled.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from airflow_provider_scriptrunner import _compat

#: Key of the job id in the task's state store (Airflow 3.3+), shared by all tries of a task.
STATE_JOB_ID = "scriptrunner_job_id"
#: Prefix of the Variables that hold the record on Airflow 3.1/3.2.
VARIABLE_PREFIX = "scriptrunner_job__"
#: XCom key of the try that owns the job (pushed by the run operator before it defers).
XCOM_OWNER_TRY = "scriptrunner_try"
#: Task-instance states that end a try: its job is then canceled.
ENDED_TI_STATES = frozenset(
    {"success", "failed", "skipped", "upstream_failed", "removed", "up_for_retry", "up_for_reschedule"}
)
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


class _TaskStateStore:
    kind = "task_state_store"

    def __init__(self, store: Any) -> None:
        self.store = store

    def get(self) -> Any:
        return self.store.get(STATE_JOB_ID)

    def set(self, job_id: str) -> None:
        self.store.set(STATE_JOB_ID, job_id)

    def delete(self) -> None:
        self.store.delete(STATE_JOB_ID)


class _VariableStore:
    kind = "Variable"

    def __init__(self, key: str) -> None:
        self.key = key

    def get(self) -> Any:
        from airflow.sdk import Variable

        return Variable.get(self.key, default=None)

    def set(self, job_id: str) -> None:
        from airflow.sdk import Variable

        Variable.set(
            self.key,
            job_id,
            description="script-runner job of a running task (airflow-provider-scriptrunner)",
        )

    def delete(self) -> None:
        from airflow.sdk import Variable

        Variable.delete(self.key)


class JobRecord:
    """
    The job id a task's tries share; never fails the task over bookkeeping (failures are warnings).

    :param store: where the id lives (None: nowhere, e.g. a task instance without ids).
    :param log: where a failure to read or write the store is reported.
    """

    def __init__(self, store: _TaskStateStore | _VariableStore | None, log: Any) -> None:
        self.store = store
        self.log = log

    @classmethod
    def of(cls, context: Any, log: Any) -> JobRecord:
        """The record of the task instance in ``context``, in the store its Airflow version has."""
        state = context.get("task_state_store")
        if state is not None:
            return cls(_TaskStateStore(state), log)
        ti = context.get("ti")
        dag_id, run_id, task_id = (getattr(ti, name, None) for name in ("dag_id", "run_id", "task_id"))
        if _compat.HAS_TASK_STATE_STORE or not (
            isinstance(dag_id, str) and isinstance(run_id, str) and isinstance(task_id, str)
        ):
            return cls(None, log)
        return cls(_VariableStore(variable_key(dag_id, run_id, task_id, getattr(ti, "map_index", -1))), log)

    def get(self) -> str | None:
        if self.store is None:
            return None
        try:
            value = self.store.get()
        except Exception as err:  # noqa: BLE001 - without the record the try starts a new job
            self.log.warning("Could not read the previous try's job from the %s: %s", self.store.kind, err)
            return None
        return value if isinstance(value, str) and value else None

    def set(self, job_id: str) -> None:
        if self.store is None:
            return
        try:
            self.store.set(job_id)
        except Exception as err:  # noqa: BLE001 - losing reattach must not fail the run
            self.log.warning("Could not record job %s in the %s: %s", job_id, self.store.kind, err)

    def clear(self) -> None:
        if self.store is None:
            return
        try:
            self.store.delete()
        except Exception as err:  # noqa: BLE001
            self.log.warning("Could not clear the job record in the %s: %s", self.store.kind, err)


@dataclass(frozen=True)
class CancelVerdict:
    """Whether a stopped trigger's job must be canceled, and why (for the log)."""

    cancel: bool
    why: str


def cancel_verdict(
    *,
    cancel_on_kill: bool,
    state: str | None,
    own_try: int | None,
    owner_try: int | None,
    deadline_passed: bool,
    deadline: str = "the deadline",
) -> CancelVerdict:
    """
    Whether the job of a trigger that is being stopped (or of a deferred task a user just ended)
    must be canceled now.

    :param cancel_on_kill: the task's setting; False never cancels.
    :param state: the task instance's state now.
    :param own_try: the try the trigger (or the ended task instance) belongs to.
    :param owner_try: the try recorded as the job's owner (None when no record is left).
    :param deadline_passed: the task's deadline has passed.
    :param deadline: how the deadline is named in the reason.

    - the task is still DEFERRED: a triggerer restart, a rebalance, or a trigger reassigned to
      another triggerer: the job goes on;
    - another try owns the job (it reattached, or started its own): leave it to that try;
    - the task ended on this try (marked failed/success, up for retry, ...): cancel;
    - the deadline passed and Airflow ended the deferral (its trigger timeout): cancel;
    - otherwise the task was cleared and its next try reattaches to the job: leave it.
    """
    if not cancel_on_kill:
        return CancelVerdict(False, "cancel_on_kill is off")
    if state == "deferred":
        return CancelVerdict(
            False, "the task is still deferred (a triggerer restart or rebalance); the job goes on"
        )
    if own_try is not None and owner_try != own_try:
        newer = f"try {owner_try}" if owner_try is not None else "a newer try (it cleared this try's record)"
        return CancelVerdict(False, f"{newer} of the task owns the job now, not this trigger's try {own_try}")
    if state in ENDED_TI_STATES:
        return CancelVerdict(True, f"the task is {state}: its try {own_try} is over")
    if deadline_passed:
        return CancelVerdict(True, f"Airflow ended the deferral after {deadline} passed (task {state})")
    return CancelVerdict(False, f"the task was cleared (now {state}): its next try reattaches to the job")


def record_owner(ti: Any) -> None:
    """Record ``ti``'s try as the owner of its job, for the trigger's verdict after a clear."""
    ti.xcom_push(key=XCOM_OWNER_TRY, value=ti.try_number)


def _ids(ti: Any) -> dict[str, Any]:
    if ti is None:
        raise LookupError("the trigger has no task instance (e.g. under `airflow dags test`)")
    map_index = ti.map_index if getattr(ti, "map_index", None) is not None else -1
    return {"dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": ti.task_id, "map_index": map_index}


async def read_task_state(ti: Any) -> str | None:
    """The state of ``ti`` now, as the triggerer's supervisor reports it."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance
    from asgiref.sync import sync_to_async

    ids = _ids(ti)
    states = await sync_to_async(RuntimeTaskInstance.get_task_states)(
        dag_id=ids["dag_id"], task_ids=[ids["task_id"]], run_ids=[ids["run_id"]], map_index=ids["map_index"]
    )
    key = f"{ids['task_id']}_{ids['map_index']}" if ids["map_index"] >= 0 else ids["task_id"]
    state = states[ids["run_id"]][key]
    return getattr(state, "value", state)


async def read_owner_try(ti: Any) -> int | None:
    """The try number the run operator recorded as the job's owner; None when none is."""
    from asgiref.sync import sync_to_async

    value = await sync_to_async(_compat.XCom.get_one)(key=XCOM_OWNER_TRY, **_ids(ti))
    return value if isinstance(value, int) and not isinstance(value, bool) else None
