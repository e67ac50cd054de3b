"""
What a run tells the rest of the data platform about itself: the extra of the asset events it
produces, and its OpenLineage facet (built only when apache-airflow-providers-openlineage is
installed; nothing here imports it otherwise).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable

    from airflow.sdk import Context

    from airflow_provider_scriptrunner.client.models import ScriptRunnerJob

#: The key under which a run's details go into each asset event's extra, and the facet's name.
EXTRA_KEY = "scriptrunner"
FACET_NAME = "scriptrunner_job"


def job_extra(job: ScriptRunnerJob) -> dict[str, Any]:
    """Which run produced the data: the job id, script id, exit code and duration."""
    return {
        "job_id": job.job_id,
        "script_id": job.script_id,
        "exit_code": job.exit_code,
        "duration_ms": job.duration_ms,
    }


def annotate_asset_events(context: Context, outlets: Iterable[Any], job: ScriptRunnerJob, log: Any) -> None:
    """
    Put :func:`job_extra` into the event of each asset the task produces (``outlets``): assets and
    references to them (``Asset.ref(name=...)``); an alias's events are added by name, so not here.
    """
    from airflow.sdk import Asset
    from airflow.sdk.definitions.asset import AssetRef

    assets = [outlet for outlet in outlets if isinstance(outlet, (Asset, AssetRef))]
    if not assets:
        return
    events = context["outlet_events"]
    for asset in assets:
        try:  # a reference is resolved through the API server
            events[asset].extra[EXTRA_KEY] = job_extra(job)
        except Exception as err:  # noqa: BLE001 - the script succeeded: the event just lacks the job
            log.warning("Could not put the job into the asset event of %r: %s", asset, err)


def operator_lineage(script_id: str, job_url: str | None, job: ScriptRunnerJob | None) -> Any:
    """The run's OpenLineage data: one run facet naming the script and, once known, its job."""
    from airflow.providers.openlineage.extractors import OperatorLineage

    from airflow_provider_scriptrunner.operators._lineage_facet import ScriptRunnerJobRunFacet

    facet = ScriptRunnerJobRunFacet(
        scriptId=job.script_id if job is not None and job.script_id else script_id,
        jobId=None if job is None else job.job_id,
        jobUrl=job_url,
        status=None if job is None else job.status.value,
        exitCode=None if job is None else job.exit_code,
        durationMs=None if job is None else job.duration_ms,
    )
    return OperatorLineage(run_facets={FACET_NAME: facet})
