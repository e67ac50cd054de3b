"""
Which try of a task owns its job, and whether a trigger being stopped must cancel it.

A new try (a retry, or a clear) must find the previous try's job to reattach to it, or to cancel it
before starting the script again: otherwise one task has two live copies of its script. The job id
is kept in a :class:`JobRecord`: an Airflow Variable per task instance, keyed by dag/run/task/map
index and deleted when the job ends. It must survive both retries and clears, on every supported
release: XComs are cleared when a new try starts, and Airflow 3.4 discards a task's
``task_state_store`` when a user clears the task. A Variable survives both, is readable from
workers and triggerers, and needs nothing installed. It shows under Admin -> Variables while the
job runs; a try killed hard (SIGKILL) leaves it until the next try of that task ends the job.

The try that defers records itself and its job as the job's owner (the XCom :data:`XCOM_OWNER`), so
that a trigger stopped after a clear can tell a newer try that follows its job from one that runs
a job of its own. :func:`cancel_verdict` decides, from what the trigger (or the listener) has
read, whether the job must be canceled. A trigger's event names the try it was fired for
(:func:`try_key`), so that an event cannot end another try (:func:`same_try`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from airflow_provider_scriptrunner import _compat

#: Prefix of the Variables that hold the record.
VARIABLE_PREFIX = "scriptrunner_job__"
#: XCom key of the try that owns the job and of its job id (pushed by the run operator before it defers).
XCOM_OWNER = "scriptrunner_owner"
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


class _VariableStore:
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

    def __init__(self, store: _VariableStore | None, log: Any) -> None:
        self.store = store
        self.log = log

    @classmethod
    def of(cls, context: Any, log: Any) -> JobRecord:
        """The record of the task instance in ``context``."""
        ti = context.get("ti")
        dag_id, run_id, task_id = (getattr(ti, name, None) for name in ("dag_id", "run_id", "task_id"))
        if not (isinstance(dag_id, str) and isinstance(run_id, str) and isinstance(task_id, str)):
            return cls(None, log)
        return cls(_VariableStore(variable_key(dag_id, run_id, task_id, getattr(ti, "map_index", -1))), log)

    def get(self) -> str | None:
        if self.store is None:
            return None
        try:
            value = self.store.get()
        except Exception as err:  # noqa: BLE001 - without the record the try starts a new job
            self.log.warning("Could not read the previous try's job from the %s: %s", "Variable", err)
            return None
        return value if isinstance(value, str) and value else None

    def set(self, job_id: str) -> None:
        if self.store is None:
            return
        try:
            self.store.set(job_id)
        except Exception as err:  # noqa: BLE001 - losing reattach must not fail the run
            self.log.warning("Could not record job %s in the %s: %s", job_id, "Variable", err)

    def clear(self) -> None:
        if self.store is None:
            return
        try:
            self.store.delete()
        except Exception as err:  # noqa: BLE001
            self.log.warning("Could not clear the job record in the %s: %s", "Variable", err)


def is_retry(ti: Any, retries: int | None) -> bool:
    """
    Whether ``ti``'s try is a retry, rather than the first try since the task was created or
    cleared. A clear raises ``max_tries`` to the try number plus ``retries``, so the tries since
    the last clear start at ``max_tries - retries + 1`` (as Airflow's own task runner counts them).
    """
    try_number, max_tries = getattr(ti, "try_number", None), getattr(ti, "max_tries", None)
    if not isinstance(try_number, int) or not isinstance(max_tries, int):
        return False
    return try_number > max_tries - (retries or 0) + 1


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
    own_job: str,
    owner: Owner | None,
    deadline_passed: bool,
    deadline: str = "the deadline",
) -> CancelVerdict:
    """
    Whether the job of a trigger that is being stopped (or of a deferred task a user just ended)
    must be canceled now.

    :param cancel_on_kill: the task's setting; False never cancels.
    :param state: the task instance's state now.
    :param own_try: the try the trigger (or the ended task instance) belongs to.
    :param own_job: the trigger's job.
    :param owner: the try recorded as the job's owner, and its job (None when no record is left).
    :param deadline_passed: the task's deadline has passed.
    :param deadline: how the deadline is named in the reason.

    - a newer try runs a job of its own (it did not find this one, e.g. after a clear): nothing
      else will ever stop this job: cancel;
    - a newer try follows this job (it reattached): leave it to that try;
    - the task is still DEFERRED on this try: a triggerer restart, a rebalance, or a trigger
      reassigned to another triggerer: the job goes on;
    - the task ended on this try (marked failed/success, up for retry, ...): cancel;
    - the deadline passed and Airflow ended the deferral (its trigger timeout): cancel;
    - otherwise the task was cleared and its next try reattaches to the job: leave it.
    """
    if not cancel_on_kill:
        return CancelVerdict(False, "cancel_on_kill is off")
    if own_try is not None and owner is not None and owner.try_number != own_try:
        if owner.job_id != own_job:
            return CancelVerdict(
                True,
                f"try {owner.try_number} of the task runs job {owner.job_id}: job {own_job} has no task any more",
            )
        return CancelVerdict(
            False, f"try {owner.try_number} of the task follows the job now, not this trigger's try {own_try}"
        )
    if own_try is not None and owner is None and state != "deferred":
        return CancelVerdict(
            False,
            f"a newer try of the task cleared this try's record (task {state}); it reattaches to the job",
        )
    if state == "deferred":
        return CancelVerdict(
            False, "the task is still deferred (a triggerer restart or rebalance); the job goes on"
        )
    if state in ENDED_TI_STATES:
        return CancelVerdict(True, f"the task is {state}: its try {own_try} is over")
    if deadline_passed:
        return CancelVerdict(True, f"Airflow ended the deferral after {deadline} passed (task {state})")
    return CancelVerdict(False, f"the task was cleared (now {state}): its next try reattaches to the job")


@dataclass(frozen=True)
class Owner:
    """The try recorded as a job's owner, and the job it follows."""

    try_number: int
    job_id: str


def record_owner(ti: Any, job_id: str) -> None:
    """Record ``ti``'s try as the owner of ``job_id``, for the trigger's verdict after a clear."""
    ti.xcom_push(key=XCOM_OWNER, value={"try": ti.try_number, "job_id": job_id})


def try_key(ti: Any) -> dict[str, Any] | None:
    """Which try of which task instance ``ti`` is, as plain JSON; None when ``ti`` does not say."""
    ids = {name: getattr(ti, name, None) for name in ("dag_id", "run_id", "task_id", "try_number")}
    if not all(isinstance(ids[name], str) for name in ("dag_id", "run_id", "task_id")):
        return None
    if not isinstance(ids["try_number"], int):
        return None
    return {**_ids(ti), "try_number": ids["try_number"]}


def same_try(ti: Any, key: dict[str, Any] | None) -> bool:
    """Whether an event fired for the try ``key`` is ``ti``'s own (an event naming no try is)."""
    if key is None:
        return True
    own = try_key(ti)
    return own is None or own == key


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


async def read_owner(ti: Any) -> Owner | None:
    """The try the run operator recorded as the job's owner, and its job; None when none is."""
    from asgiref.sync import sync_to_async

    value = await sync_to_async(_compat.XCom.get_one)(key=XCOM_OWNER, **_ids(ti))
    if not isinstance(value, dict):
        return None
    try_number, job_id = value.get("try"), value.get("job_id")
    if not isinstance(try_number, int) or isinstance(try_number, bool) or not isinstance(job_id, str):
        return None
    return Owner(try_number, job_id)


async def push_result(ti: Any, result: dict[str, Any], *, multiple_outputs: bool) -> None:
    """
    Push a task's return value from the triggerer the way a worker does: ``return_value``, and
    each key as its own XCom with ``multiple_outputs`` (through the SDK's XCom, so the value stays
    a dict downstream and a custom XCom backend applies).
    """
    from asgiref.sync import sync_to_async

    values = {**(result if multiple_outputs else {}), "return_value": result}
    for key, value in values.items():
        await sync_to_async(_compat.XCom.set)(key=key, value=value, **_ids(ti))


async def clear_record(ti: Any, log: Any) -> None:
    """Clear the job record of ``ti`` from the triggerer (the task ends there)."""
    from asgiref.sync import sync_to_async

    await sync_to_async(JobRecord.of({"ti": ti}, log).clear)()
