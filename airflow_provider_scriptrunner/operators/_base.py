"""What every script-runner operator shares: the connection, the lazy hook, the job link."""

from __future__ import annotations

from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, BaseOperatorLink

from airflow_provider_scriptrunner._compat import AirflowFailException
from airflow_provider_scriptrunner.client.errors import ScriptRunnerError
from airflow_provider_scriptrunner.hooks._base import DEFAULT_CONN_ID
from airflow_provider_scriptrunner.hooks.scriptrunner import ScriptRunnerHook
from airflow_provider_scriptrunner.task.outcome import retry_can_help

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow.sdk import Context

XCOM_JOB_ID = "job_id"
XCOM_JOB_URL = "job_url"
DEFAULT_MAX_OUTPUT_BYTES = 65536


@contextmanager
def without_retries_when_futile(*, job_given: bool = False) -> Iterator[None]:
    """Fail the task at once, keeping its retries unused, where another try would fail the same way."""
    try:
        yield
    except Exception as err:
        if retry_can_help(err, job_given=job_given):
            raise
        raise AirflowFailException(f"{err} (not retried: another try would fail the same way)") from err


class ScriptRunnerJobLink(BaseOperatorLink):
    """
    Link from the task to its job on the script-runner server.

    Airflow 3 asks for the link once, in the task's own process as the try ends, and keeps it:
    the operator that ran holds the URL (empty when the task failed before it had a job).
    """

    name = "Script Runner Job"

    def get_link(self, operator: BaseOperator, *, ti_key: Any) -> str:
        return getattr(operator, "job_url", None) or ""


class ScriptRunnerOperatorBase(BaseOperator):
    """Holds the connection id and creates the hook lazily (never at DAG parse time)."""

    operator_extra_links = (ScriptRunnerJobLink(),)

    def __init__(self, *, scriptrunner_conn_id: str = DEFAULT_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scriptrunner_conn_id = scriptrunner_conn_id
        self.job_url: str | None = None

    @cached_property
    def hook(self) -> ScriptRunnerHook:
        return ScriptRunnerHook(self.scriptrunner_conn_id)

    def _link_job(self, job_id: str) -> None:
        """Know the job's URL for the task's link (no request: the URL comes from the connection)."""
        try:
            self.job_url = self.hook.get_job_url(job_id)
        except ScriptRunnerError as err:  # the link is a convenience; never fail the task for it
            self.log.warning("Could not build the job link: %s", err)

    def _publish_job(self, context: Context, job_id: str) -> None:
        """Push the job id (and its URL) to XCom as soon as it is known."""
        self._link_job(job_id)
        ti = context["ti"]
        ti.xcom_push(key=XCOM_JOB_ID, value=job_id)
        if self.job_url:
            ti.xcom_push(key=XCOM_JOB_URL, value=self.job_url)
