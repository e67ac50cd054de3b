"""What every script-runner operator shares: the connection, the lazy hook, the job link."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, BaseOperatorLink

from airflow_provider_scriptrunner._compat import XCom
from airflow_provider_scriptrunner.constants import DEFAULT_CONN_ID
from airflow_provider_scriptrunner.exceptions import ScriptRunnerError
from airflow_provider_scriptrunner.hooks.scriptrunner import ScriptRunnerHook

if TYPE_CHECKING:
    from airflow.sdk import Context

XCOM_JOB_ID = "job_id"
XCOM_JOB_URL = "job_url"
DEFAULT_MAX_OUTPUT_BYTES = 65536


class ScriptRunnerJobLink(BaseOperatorLink):
    """Link from the task to its job on the script-runner server."""

    name = "Script Runner Job"

    def get_link(self, operator: BaseOperator, *, ti_key: Any) -> str:
        return XCom.get_value(ti_key=ti_key, key=XCOM_JOB_URL) or ""


class _ScriptRunnerOperatorBase(BaseOperator):
    """Holds the connection id and creates the hook lazily (never at DAG parse time)."""

    operator_extra_links = (ScriptRunnerJobLink(),)

    def __init__(self, *, scriptrunner_conn_id: str = DEFAULT_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scriptrunner_conn_id = scriptrunner_conn_id

    @cached_property
    def hook(self) -> ScriptRunnerHook:
        return ScriptRunnerHook(self.scriptrunner_conn_id)

    def _publish_job(self, context: Context, job_id: str) -> None:
        """Push the job id (and the link's URL) to XCom as soon as it is known."""
        ti = context["ti"]
        ti.xcom_push(key=XCOM_JOB_ID, value=job_id)
        try:
            ti.xcom_push(key=XCOM_JOB_URL, value=self.hook.get_job_url(job_id))
        except ScriptRunnerError as err:  # the link is a convenience; never fail the task for it
            self.log.warning("Could not build the job link: %s", err)
