"""The OpenLineage run facet of a script-runner job (imported only with the OpenLineage provider)."""

from __future__ import annotations

from attrs import define
from openlineage.client.facet_v2 import RunFacet

from airflow_provider_scriptrunner import __version__

#: Where the facet is described (docs/lineage.md, published with the package).
SCHEMA_URL = (
    f"https://pypi.org/project/airflow-provider-scriptrunner/{__version__}/#scriptrunner_job-run-facet"
)


@define
class ScriptRunnerJobRunFacet(RunFacet):
    """
    The script-runner job behind an Airflow task's run.

    :param scriptId: the script's id in the server's whitelist.
    :param jobId: the job's id on the server (None before the script was submitted).
    :param jobUrl: the job's URL on the server (never with a credential in it).
    :param status: the job's status when the event was sent (``succeeded``, ``failed``, ...).
    :param exitCode: the script's exit code (None until the job ended; -1 when it was killed).
    :param durationMs: how long the script ran.
    """

    scriptId: str  # OpenLineage facet fields are camelCase
    jobId: str | None = None
    jobUrl: str | None = None
    status: str | None = None
    exitCode: int | None = None
    durationMs: int | None = None

    @staticmethod
    def _get_schema() -> str:
        return SCHEMA_URL
