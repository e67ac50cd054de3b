"""Which try owns a job: the cancel verdict, the job record of a task's tries, and reading the owner."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from airflow.utils.state import TaskInstanceState

from airflow_provider_scriptrunner import _compat
from airflow_provider_scriptrunner.task import ownership
from airflow_provider_scriptrunner.task.ownership import CancelVerdict, JobRecord, Owner, cancel_verdict
from tests.operators.test_scriptrunner_operators import FakeVariables

JOB = "job_7_1"
#: The job a newer try of the task started of its own (it did not find JOB).
OTHER_JOB = "job_8_1"

# -- cancel_verdict: every branch, with the literal verdict ---------------------------------------

GOES_ON = "the task is still deferred (a triggerer restart or rebalance); the job goes on"
FOLLOWED_BY_TRY_2 = "try 2 of the task follows the job now, not this trigger's try 1"
ORPHANED_BY_TRY_2 = f"try 2 of the task runs job {OTHER_JOB}: job {JOB} has no task any more"


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
        pytest.param(
            {"cancel_on_kill": False, "state": "running", "owner": Owner(2, OTHER_JOB)},
            CancelVerdict(False, "cancel_on_kill is off"),
            id="cancel_on_kill-off-beats-a-newer-tries-own-job",
        ),
        # A newer try that runs a job of its own: nothing else would ever stop this one.
        pytest.param(
            {"state": "running", "owner": Owner(2, OTHER_JOB)},
            CancelVerdict(True, ORPHANED_BY_TRY_2),
            id="newer-try-runs-its-own-job",
        ),
        pytest.param(
            {"state": "deferred", "owner": Owner(2, OTHER_JOB)},
            CancelVerdict(True, ORPHANED_BY_TRY_2),
            id="deferred-on-a-newer-try-with-its-own-job",  # Airflow 3.4: cleared while deferred
        ),
        pytest.param(
            {"state": "success", "owner": Owner(2, OTHER_JOB)},
            CancelVerdict(True, ORPHANED_BY_TRY_2),
            id="newer-try-with-its-own-job-named-before-the-state",
        ),
        pytest.param(
            {"state": "scheduled", "owner": Owner(3, OTHER_JOB), "deadline_passed": True},
            CancelVerdict(True, f"try 3 of the task runs job {OTHER_JOB}: job {JOB} has no task any more"),
            id="newer-try-with-its-own-job-named-before-the-deadline",
        ),
        # A newer try that follows this job (it reattached): the job is that try's.
        pytest.param(
            {"state": "running", "owner": Owner(2, JOB)},
            CancelVerdict(False, FOLLOWED_BY_TRY_2),
            id="newer-try-running",
        ),
        pytest.param(
            {"state": "failed", "owner": Owner(2, JOB)},
            CancelVerdict(False, FOLLOWED_BY_TRY_2),
            id="newer-try-failed",
        ),
        pytest.param(
            {"state": "deferred", "owner": Owner(2, JOB), "deadline_passed": True},
            CancelVerdict(False, FOLLOWED_BY_TRY_2),
            id="deferred-on-a-newer-try-following-the-job",
        ),
        pytest.param(
            {"state": "scheduled", "owner": Owner(2, JOB), "deadline_passed": True},
            CancelVerdict(False, FOLLOWED_BY_TRY_2),
            id="newer-try-beats-the-deadline",
        ),
        # No owner record: a newer try cleared it (its XComs) and reattaches, unless still deferred.
        pytest.param(
            {"state": "running", "owner": None},
            CancelVerdict(
                False,
                "a newer try of the task cleared this try's record (task running); it reattaches to the job",
            ),
            id="newer-try-cleared-the-record",
        ),
        pytest.param(
            {"state": "failed", "owner": None},
            CancelVerdict(
                False,
                "a newer try of the task cleared this try's record (task failed); it reattaches to the job",
            ),
            id="newer-try-cleared-the-record-then-failed",
        ),
        pytest.param(
            {"state": None, "owner": None, "deadline_passed": True},
            CancelVerdict(
                False,
                "a newer try of the task cleared this try's record (task None); it reattaches to the job",
            ),
            id="cleared-record-beats-the-deadline",
        ),
        pytest.param(
            {"state": "deferred", "owner": None}, CancelVerdict(False, GOES_ON), id="deferred-no-record"
        ),
        # This trigger's own try.
        pytest.param({"state": "deferred"}, CancelVerdict(False, GOES_ON), id="still-deferred"),
        pytest.param(
            {"state": "deferred", "deadline_passed": True},
            CancelVerdict(False, GOES_ON),
            id="still-deferred-beats-the-deadline",
        ),
        pytest.param(
            {"state": "deferred", "owner": Owner(1, OTHER_JOB)},
            CancelVerdict(False, GOES_ON),
            id="only-a-newer-tries-job-counts",
        ),
        pytest.param(
            {"state": "failed", "own_try": None, "owner": Owner(3, OTHER_JOB)},
            CancelVerdict(True, "the task is failed: its try None is over"),
            id="no-own-try-decides-by-state",
        ),
        pytest.param(
            {"state": "running", "own_try": None, "owner": None},
            CancelVerdict(False, "the task was cleared (now running): its next try reattaches to the job"),
            id="no-own-try-no-record-decides-by-state",
        ),
        pytest.param(
            {"state": "failed", "own_try": 3, "owner": Owner(3, JOB)},
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
    kwargs = {
        "cancel_on_kill": True,
        "own_try": 1,
        "own_job": JOB,
        "owner": Owner(1, JOB),
        "deadline_passed": False,
        **inputs,
    }
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


@pytest.fixture
def variables(monkeypatch):
    return FakeVariables.install(monkeypatch)


def ti(**fields):
    return SimpleNamespace(
        **{"dag_id": "etl", "run_id": "manual__2026-12-01", "task_id": "run", "map_index": 3, **fields}
    )


def test_a_variable_keeps_the_job_for_the_next_try(variables):
    record = JobRecord.of({"ti": ti()}, RecordingLog())
    assert record.get() is None
    record.set(JOB)
    key = "scriptrunner_job__etl__manual__2026-12-01__run__3"
    assert variables.values == {key: JOB}
    assert variables.descriptions == {
        key: "script-runner job of a running task (airflow-provider-scriptrunner)"
    }
    # The next try gets a record of its own over the same Variable, and finds the job.
    assert JobRecord.of({"ti": ti(try_number=2)}, RecordingLog()).get() == JOB
    record.clear()
    assert variables.values == {}


def test_the_record_is_the_variable_whatever_else_the_context_holds(variables):
    # A task_state_store (Airflow 3.3+) is not used: Airflow 3.4 discards it when a user clears the task.
    store = SimpleNamespace(get=None, set=None, delete=None)  # any call of it would fail
    JobRecord.of({"ti": ti(), "task_state_store": store}, RecordingLog()).set(JOB)
    assert variables.values == {"scriptrunner_job__etl__manual__2026-12-01__run__3": JOB}


def test_the_variable_of_an_unmapped_task_has_index_minus_one(variables):
    JobRecord.of({"ti": ti(map_index=None)}, RecordingLog()).set(JOB)
    JobRecord.of({"ti": ti(map_index=-1, task_id="other")}, RecordingLog()).set("job_8_1")
    assert variables.values == {
        "scriptrunner_job__etl__manual__2026-12-01__run__-1": JOB,
        "scriptrunner_job__etl__manual__2026-12-01__other__-1": "job_8_1",
    }


def test_a_task_instance_without_a_map_index_is_unmapped(variables):
    JobRecord.of({"ti": SimpleNamespace(dag_id="etl", run_id="r", task_id="run")}, RecordingLog()).set(JOB)
    assert variables.values == {"scriptrunner_job__etl__r__run__-1": JOB}


@pytest.mark.parametrize(
    "context",
    [{}, {"ti": None}, {"ti": ti(dag_id=None)}, {"ti": ti(run_id=7)}, {"ti": SimpleNamespace(task_id="run")}],
    ids=["no-ti", "ti-none", "no-dag_id", "run_id-not-text", "no-ids"],
)
def test_a_task_instance_without_ids_keeps_nothing(variables, context):
    log = RecordingLog()
    record = JobRecord.of(context, log)
    assert record.store is None
    record.set(JOB)
    record.clear()
    assert record.get() is None
    assert variables.values == {} and variables.sets == [] and log.warnings == []


@pytest.mark.parametrize("value", ["", 42, None, ["job_7_1"]], ids=["empty", "int", "none", "list"])
def test_only_a_job_id_is_read_back(variables, value):
    variables.values["scriptrunner_job__etl__manual__2026-12-01__run__3"] = value
    assert JobRecord.of({"ti": ti()}, RecordingLog()).get() is None


def test_a_broken_store_is_a_warning_never_a_failure(variables):
    variables.error = RuntimeError("API server down")
    log = RecordingLog()
    record = JobRecord.of({"ti": ti()}, log)

    assert record.get() is None
    record.set(JOB)
    record.clear()
    assert log.warnings == [
        "Could not read the previous try's job from the Variable: API server down",
        f"Could not record job {JOB} in the Variable: API server down",
        "Could not clear the job record in the Variable: API server down",
    ]


# -- the owner of the job, and the task's state, as a trigger reads them ------------------------------


def test_record_owner_pushes_the_try_and_its_job():
    pushed = []
    owner = SimpleNamespace(try_number=3, xcom_push=lambda key, value: pushed.append((key, value)))
    ownership.record_owner(owner, JOB)
    assert pushed == [("scriptrunner_owner", {"try": 3, "job_id": JOB})]


@pytest.mark.parametrize(
    ("task_instance", "expected"),
    [
        (
            ti(try_number=2),
            {
                "dag_id": "etl",
                "run_id": "manual__2026-12-01",
                "task_id": "run",
                "map_index": 3,
                "try_number": 2,
            },
        ),
        (
            ti(try_number=1, map_index=None),
            {
                "dag_id": "etl",
                "run_id": "manual__2026-12-01",
                "task_id": "run",
                "map_index": -1,
                "try_number": 1,
            },
        ),
        (None, None),
        (ti(try_number=None), None),
        (ti(try_number="2"), None),
    ],
    ids=["mapped", "unmapped", "no-ti", "no-try-number", "try-number-text"],
)
def test_try_key_names_the_try_as_plain_json(task_instance, expected):
    assert ownership.try_key(task_instance) == expected


KEY_OF_TRY_2 = {
    "dag_id": "etl",
    "run_id": "manual__2026-12-01",
    "task_id": "run",
    "map_index": 3,
    "try_number": 2,
}


@pytest.mark.parametrize(
    ("task_instance", "key", "same"),
    [
        (ti(try_number=2), KEY_OF_TRY_2, True),
        (ti(try_number=2), None, True),  # an event naming no try
        (None, KEY_OF_TRY_2, True),  # no task instance to compare with
        (ti(try_number=None), KEY_OF_TRY_2, True),
        (ti(try_number=3), KEY_OF_TRY_2, False),
        (ti(try_number=1), KEY_OF_TRY_2, False),
        (ti(try_number=2, task_id="other"), KEY_OF_TRY_2, False),
        (ti(try_number=2, map_index=4), KEY_OF_TRY_2, False),
        (ti(try_number=2, map_index=None), KEY_OF_TRY_2, False),
        (ti(try_number=2, run_id="manual__2026-12-02"), KEY_OF_TRY_2, False),
        (ti(try_number=2, dag_id="other"), KEY_OF_TRY_2, False),
        (ti(try_number=2, map_index=None), {**KEY_OF_TRY_2, "map_index": -1}, True),
    ],
    ids=[
        "same",
        "no-key",
        "no-ti",
        "no-try-number",
        "newer-try",
        "older-try",
        "other-task",
        "other-map-index",
        "unmapped-vs-mapped",
        "other-run",
        "other-dag",
        "unmapped-either-way",
    ],
)
def test_same_try(task_instance, key, same):
    assert ownership.same_try(task_instance, key) is same


def test_an_event_key_survives_json():
    key = ownership.try_key(ti(try_number=2))
    assert ownership.same_try(ti(try_number=2), json.loads(json.dumps(key))) is True


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
    [
        ({"try": 4, "job_id": JOB}, Owner(4, JOB)),
        ({"try": 4, "job_id": JOB, "later": "field"}, Owner(4, JOB)),
        (None, None),
        (4, None),
        ({"try": 4}, None),
        ({"job_id": JOB}, None),
        ({"try": True, "job_id": JOB}, None),
        ({"try": "4", "job_id": JOB}, None),
        ({"try": 4.0, "job_id": JOB}, None),
        ({"try": 4, "job_id": 7}, None),
        ([4, JOB], None),
    ],
    ids=[
        "try-and-job",
        "extra-field",
        "none",
        "bare-try-number",
        "no-job",
        "no-try",
        "bool",
        "text",
        "float",
        "job-not-text",
        "list",
    ],
)
async def test_read_owner(owner_xcom, stored, expected):
    owner_xcom.value[0] = stored
    owner = SimpleNamespace(dag_id="dag_a", task_id="watch", run_id="run_1", map_index=None)

    assert await ownership.read_owner(owner) == expected
    assert owner_xcom.calls == [
        {
            "key": "scriptrunner_owner",
            "dag_id": "dag_a",
            "task_id": "watch",
            "run_id": "run_1",
            "map_index": -1,
        }
    ]


@pytest.mark.asyncio
@pytest.mark.parametrize("read", [ownership.read_task_state, ownership.read_owner])
async def test_without_a_task_instance_nothing_can_be_read(read):
    # As under `airflow dags test`: the trigger has no task instance.
    with pytest.raises(LookupError, match="no task instance"):
        await read(None)


@pytest.mark.parametrize(
    ("try_number", "max_tries", "retries", "retry"),
    [
        (1, 2, 2, False),  # the first try of a task with retries=2
        (2, 2, 2, True),  # its first retry
        (3, 2, 2, True),  # its last
        (3, 4, 2, False),  # the first try after a user cleared it (max_tries = 2 + retries)
        (4, 4, 2, True),  # a retry after that clear
        (1, 0, 0, False),  # no retries
        (2, 1, 0, False),  # cleared, no retries
        (2, None, 2, False),  # unknown: treated as a fresh start
    ],
)
def test_is_retry_counts_tries_since_the_last_clear(try_number, max_tries, retries, retry):
    ti = SimpleNamespace(try_number=try_number, max_tries=max_tries)
    assert ownership.is_retry(ti, retries) is retry
