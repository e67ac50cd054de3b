"""
A retry policy for run-script tasks (Airflow 3.3+, ``retry_policy=``): retry a script only on the
exit codes that mean "try again".

Airflow 3.3 evaluates a task's ``retry_policy`` in the worker when the task fails. This module
imports Airflow 3.3's retry-policy classes, so import it only on Airflow 3.3 or newer.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk.definitions.retry_policy import RetryDecision, RetryPolicy

from airflow_provider_scriptrunner.client.errors import ScriptRunnerJobError
from airflow_provider_scriptrunner.client.models import JobStatus
from airflow_provider_scriptrunner.client.validation import integer, positive_seconds

if TYPE_CHECKING:
    from airflow.sdk import Context


class RetryOnExitCodes(RetryPolicy):
    """
    Retry a script that exited with one of ``exit_codes``; fail at once on any other exit code.

    Only a script's own exit is judged: every other failure (an unreachable server, a limit that
    passed, a killed script, ...) gets the task's usual retries, and the task's ``retries`` still
    bound how many there are.

    :param exit_codes: the exit codes worth another try, e.g. ``[75]`` for "temporary failure".
    :param retry_delay: the pause before such a retry; None: the task's ``retry_delay``.

    .. code-block:: python

        ScriptRunnerRunScriptOperator(
            task_id="load", script_id="load", retries=3, retry_policy=RetryOnExitCodes([75])
        )
    """

    def __init__(self, exit_codes: Iterable[int], retry_delay: timedelta | float | None = None) -> None:
        if isinstance(exit_codes, (str, bytes)) or not isinstance(exit_codes, Iterable):
            raise TypeError(f"exit_codes must be a list of ints, got {exit_codes!r}")
        self.exit_codes = frozenset(integer("exit_codes[]", code, minimum=0) for code in exit_codes)
        seconds = positive_seconds("retry_delay", retry_delay)
        self.retry_delay = None if seconds is None else timedelta(seconds=seconds)

    def evaluate(
        self, exception: BaseException, try_number: int, max_tries: int, context: Context | None = None
    ) -> RetryDecision:
        job = exception.job if isinstance(exception, ScriptRunnerJobError) else None
        if job is None or job.status is not JobStatus.FAILED or job.exit_code in (None, -1):
            return RetryDecision.default()
        if job.exit_code in self.exit_codes:
            return RetryDecision.retry(
                self.retry_delay,
                reason=f"exit code {job.exit_code} is one to retry ({sorted(self.exit_codes)})",
            )
        return RetryDecision.fail(
            reason=f"exit code {job.exit_code} is not one to retry ({sorted(self.exit_codes)}): no retries"
        )

    def serialize(self) -> dict[str, Any]:
        delay = None if self.retry_delay is None else self.retry_delay.total_seconds()
        return {"exit_codes": sorted(self.exit_codes), "retry_delay": delay}

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> RetryOnExitCodes:
        return cls(data["exit_codes"], data.get("retry_delay"))
