"""Which try owns a job: the cancel verdict, the job record of a task's tries, and reading the owner."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from airflow.utils.state import TaskInstanceState

from airflow_provider_scriptrunner import _compat
from airflow_provider_scriptrunner.task import ownership
from airflow_provider_scriptrunner.task.ownership import CancelVerdict, JobRecord, cancel_verdict

JOB = "job_7_1"

# -- cancel_verdict: every branch, with the literal verdict ---------------------------------------

GOES_ON = "the task is still deferred (a triggerer restart or rebalance); the job goes on"


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        pytest.param(
            {"cancel_on_kill": False, "state": "failed"},
            CancelVerdict(False, "cancel_on_kill is off"),
            id="cancel_on_kill-off-beats-an-ended-try",
        ),
        pytest.param(
            {"cancel_on_kill": False, "state": "scheduled", "deadline_passed": True},
            CancelVerdict(False, "cancel_on_kill is off"),
            id="cancel_on_kill-off-beats-the-deadline",
        ),
        pytest.param({"state": "deferred"}, CancelVerdict(False, GOES_ON), id="still-deferred"),
        pytest.param(
            {"state": "deferred", "owner_try": 2, "deadline_passed": True},
            CancelVerdict(False, GOES_ON),
            id="still-deferred-beats-owner-and-deadline",
        ),
        pytest.param(
            {"state": "running", "owner_try": 2},
            CancelVerdict(False, "try 2 of the task owns the job now, not this trigger's try 1"),
            id="newer-try-running",
        ),
        pytest.param(
            {"state": "failed", "owner_try": 2},
            CancelVerdict(False, "try 2 of the task owns the job now, not this trigger's try 1"),
            id="newer-try-failed",
        ),
        pytest.param(
            {"state": "scheduled", "owner_try": 2, "deadline_passed": True},
            CancelVerdict(False, "try 2 of the task owns the job now, not this trigger's try 1"),
            id="newer-try-beats-the-deadline",
        ),
        pytest.param(
            {"state": "running", "owner_try": None},
            CancelVerdict(
                False,
                "a newer try (it cleared this try's record) of the task owns the job now, "
                "not this trigger's try 1",
            ),
            id="newer-try-cleared-the-record",
        ),
        pytest.param(
            {"state": "failed", "own_try": None, "owner_try": 3},
            CancelVerdict(True, "the task is failed: its try None is over"),
            id="no-own-try-decides-by-state",
        ),
        pytest.param(
            {"state": "failed", "own_try": 3, "owner_try": 3},
            CancelVerdict(True, "the task is failed: its try 3 is over"),
            id="failed",
        ),
        pytest.param(
            {"state": "success"}, CancelVerdict(True, "the task is success: its try 1 is over"), id="success"
        ),
        pytest.param(
            {"state": "skipped"}, CancelVerdict(True, "the task is skipped: its try 1 is over"), id="skipped"
        ),
        pytest.param(
            {"state": "upstream_failed"},
            CancelVerdict(True, "the task is upstream_failed: its try 1 is over"),
            id="upstream_failed",
        ),
        pytest.param(
            {"state": "removed"}, CancelVerdict(True, "the task is removed: its try 1 is over"), id="removed"
        ),
        pytest.param(
            {"state": "up_for_retry"},
            CancelVerdict(True, "the task is up_for_retry: its try 1 is over"),
            id="up_for_retry",
        ),
        pytest.param(
            {"state": "up_for_reschedule"},
            CancelVerdict(True, "the task is up_for_reschedule: its try 1 is over"),
            id="up_for_reschedule",
        ),
        pytest.param(
            {"state": "failed", "deadline_passed": True, "deadline": "timeout=10 s"},
            CancelVerdict(True, "the task is failed: its try 1 is over"),
            id="ended-try-named-before-the-deadline",
        ),
        pytest.param(
            {"state": "scheduled", "deadline_passed": True, "deadline": "execution_timeout=20 s"},
            CancelVerdict(
                True, "Airflow ended the deferral after execution_timeout=20 s passed (task scheduled)"
            ),
            id="deadline-passed",
        ),
        pytest.param(
            {"state": None, "deadline_passed": True},
            CancelVerdict(True, "Airflow ended the deferral after the deadline passed (task None)"),
            id="deadline-passed-unnamed",
        ),
        pytest.param(
            {"state": None},
            CancelVerdict(False, "the task was cleared (now None): its next try reattaches to the job"),
            id="cleared",
        ),
        pytest.param(
            {"state": "scheduled"},
            CancelVerdict(False, "the task was cleared (now scheduled): its next try reattaches to the job"),
            id="cleared-scheduled",
        ),
        pytest.param(
            {"state": "queued"},
            CancelVerdict(False, "the task was cleared (now queued): its next try reattaches to the job"),
            id="cleared-queued",
        ),
        pytest.param(
            {"state": "restarting"},
            CancelVerdict(False, "the task was cleared (now restarting): its next try reattaches to the job"),
            id="cleared-while-running",
        ),
    ],
)
def test_cancel_verdict(inputs, expected):
    kwargs = {"cancel_on_kill": True, "own_try": 1, "owner_try": 1, "deadline_passed": False, **inputs}
    assert cancel_verdict(**kwargs) == expected


def test_the_ended_states_are_airflow_task_instance_states():
    # A misspelt state would never match, and a try marked that way would never cancel its job.
    unknown = ownership.ENDED_TI_STATES - {state.value for state in TaskInstanceState}
    assert not unknown, unknown


# -- JobRecord: where a task's tries keep their job id ----------------------------------------------


class RecordingLog:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warning(self, message: str, *args) -> None:
        self.warnings.append(message % args)


class FakeStore:
    """Airflow 3.3's task_state_store."""

    def __init__(self) -> None:
        self.values: dict = {}

    def get(self, key, default=None):
        return self.values.get(key, default)

    def set(self, key, value, **_):
        self.values[key] = value

    def delete(self, key):
        self.values.pop(key, None)


class FakeVariables:
    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.descriptions: dict[str, str] = {}

    def get(self, key, default=None):
        return self.values.get(key, default)

    def set(self, key, value, description=None):
        self.values[key] = value
        self.descriptions[key] = description

    def delete(self, key):
        self.values.pop(key, None)


@pytest.fixture
def variables(monkeypatch):
    """Airflow 3.1/3.2: no task state store; Variables in memory."""
    import airflow.sdk

    fake = FakeVariables()
    monkeypatch.setattr(_compat, "HAS_TASK_STATE_STORE", False)
    monkeypatch.setattr(airflow.sdk, "Variable", fake)
    return fake


def ti(**fields):
    return SimpleNamespace(
        **{"dag_id": "etl", "run_id": "manual__2026-12-01", "task_id": "run", "map_index": 3, **fields}
    )


def test_the_task_state_store_keeps_the_job_for_the_next_try():
    store = FakeStore()
    record = JobRecord.of({"task_state_store": store, "ti": ti()}, RecordingLog())
    assert record.get() is None
    record.set(JOB)
    assert store.values == {"scriptrunner_job_id": JOB}
    # The next try gets a record of its own over the same store, and finds the job.
    assert JobRecord.of({"task_state_store": store, "ti": ti()}, RecordingLog()).get() == JOB
    record.clear()
    assert store.values == {}


def test_without_a_task_state_store_a_variable_keeps_the_job(variables):
    record = JobRecord.of({"ti": ti()}, RecordingLog())
    record.set(JOB)
    key = "scriptrunner_job__etl__manual__2026-12-01__run__3"
    assert variables.values == {key: JOB}
    assert "airflow-provider-scriptrunner" in variables.descriptions[key]
    assert JobRecord.of({"ti": ti()}, RecordingLog()).get() == JOB
    record.clear()
    assert variables.values == {}


def test_the_variable_of_an_unmapped_task_has_index_minus_one(variables):
    JobRecord.of({"ti": ti(map_index=None)}, RecordingLog()).set(JOB)
    JobRecord.of({"ti": ti(map_index=-1, task_id="other")}, RecordingLog()).set("job_8_1")
    assert variables.values == {
        "scriptrunner_job__etl__manual__2026-12-01__run__-1": JOB,
        "scriptrunner_job__etl__manual__2026-12-01__other__-1": "job_8_1",
    }


def test_the_store_is_chosen_by_the_airflow_version_at_call_time(variables, monkeypatch):
    # On Airflow 3.3+ a missing task_state_store means there is nothing to keep the id in.
    monkeypatch.setattr(_compat, "HAS_TASK_STATE_STORE", True)
    record = JobRecord.of({"ti": ti()}, RecordingLog())
    record.set(JOB)
    assert record.get() is None and variables.values == {}
    monkeypatch.setattr(_compat, "HAS_TASK_STATE_STORE", False)
    JobRecord.of({"ti": ti()}, RecordingLog()).set(JOB)
    assert list(variables.values.values()) == [JOB]


@pytest.mark.parametrize(
    "context",
    [{}, {"ti": None}, {"ti": ti(dag_id=None)}, {"ti": ti(run_id=7)}, {"ti": SimpleNamespace(task_id="run")}],
    ids=["no-ti", "ti-none", "no-dag_id", "run_id-not-text", "no-ids"],
)
def test_a_task_instance_without_ids_keeps_nothing(variables, context):
    log = RecordingLog()
    record = JobRecord.of(context, log)
    record.set(JOB)
    record.clear()
    assert record.get() is None
    assert variables.values == {} and log.warnings == []


@pytest.mark.parametrize("value", ["", 42, None, ["job_7_1"]], ids=["empty", "int", "none", "list"])
def test_only_a_job_id_is_read_back(value):
    store = FakeStore()
    store.values["scriptrunner_job_id"] = value
    assert JobRecord.of({"task_state_store": store}, RecordingLog()).get() is None


@pytest.mark.parametrize("where", ["task_state_store", "Variable"])
def test_a_broken_store_is_a_warning_never_a_failure(variables, where):
    def broken(*args, **kwargs):
        raise RuntimeError("API server down")

    if where == "task_state_store":
        store = FakeStore()
        store.get = store.set = store.delete = broken
        context = {"task_state_store": store, "ti": ti()}
    else:
        variables.get = variables.set = variables.delete = broken
        context = {"ti": ti()}
    log = RecordingLog()
    record = JobRecord.of(context, log)

    assert record.get() is None
    record.set(JOB)
    record.clear()
    assert log.warnings == [
        f"Could not read the previous try's job from the {where}: API server down",
        f"Could not record job {JOB} in the {where}: API server down",
        f"Could not clear the job record in the {where}: API server down",
    ]


# -- the owner of the job, and the task's state, as a trigger reads them ------------------------------


def test_record_owner_pushes_the_try_number():
    pushed = []
    owner = SimpleNamespace(try_number=3, xcom_push=lambda key, value: pushed.append((key, value)))
    ownership.record_owner(owner)
    assert pushed == [("scriptrunner_try", 3)]


@pytest.fixture
def task_states(monkeypatch):
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    calls: list[dict] = []
    answer: dict = {}

    def get_task_states(**kwargs):
        calls.append(kwargs)
        return answer

    monkeypatch.setattr(RuntimeTaskInstance, "get_task_states", staticmethod(get_task_states))
    return SimpleNamespace(calls=calls, answer=answer)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("map_index", "states", "expected_map_index", "expected"),
    [
        (-1, {"run_1": {"watch": "deferred"}}, -1, "deferred"),
        (None, {"run_1": {"watch": TaskInstanceState.FAILED}}, -1, "failed"),
        (2, {"run_1": {"watch_2": "deferred", "watch_3": "failed"}}, 2, "deferred"),
        (3, {"run_1": {"watch_2": "deferred", "watch_3": TaskInstanceState.SUCCESS}}, 3, "success"),
        (-1, {"run_1": {"watch": None}}, -1, None),
    ],
    ids=["unmapped", "no-map-index-enum", "mapped-2", "mapped-3-enum", "cleared"],
)
async def test_read_task_state(task_states, map_index, states, expected_map_index, expected):
    task_states.answer.update(states)
    owner = SimpleNamespace(dag_id="dag_a", task_id="watch", run_id="run_1", map_index=map_index)

    assert await ownership.read_task_state(owner) == expected
    assert task_states.calls == [
        {"dag_id": "dag_a", "task_ids": ["watch"], "run_ids": ["run_1"], "map_index": expected_map_index}
    ]


@pytest.fixture
def owner_xcom(monkeypatch):
    calls: list[dict] = []
    value: list = [None]

    def get_one(**kwargs):
        calls.append(kwargs)
        return value[0]

    monkeypatch.setattr(_compat.XCom, "get_one", staticmethod(get_one))
    return SimpleNamespace(calls=calls, value=value)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("stored", "expected"),
    [(4, 4), (None, None), (True, None), ("4", None), (4.0, None)],
    ids=["int", "none", "bool", "text", "float"],
)
async def test_read_owner_try(owner_xcom, stored, expected):
    owner_xcom.value[0] = stored
    owner = SimpleNamespace(dag_id="dag_a", task_id="watch", run_id="run_1", map_index=None)

    assert await ownership.read_owner_try(owner) == expected
    assert owner_xcom.calls == [
        {"key": "scriptrunner_try", "dag_id": "dag_a", "task_id": "watch", "run_id": "run_1", "map_index": -1}
    ]


@pytest.mark.asyncio
@pytest.mark.parametrize("read", [ownership.read_task_state, ownership.read_owner_try])
async def test_without_a_task_instance_nothing_can_be_read(read):
    # As under `airflow dags test`: the trigger has no task instance.
    with pytest.raises(LookupError, match="no task instance"):
        await read(None)
