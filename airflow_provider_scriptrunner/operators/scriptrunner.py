"""
The provider's operators, importable from here as documented:

- :class:`ScriptRunnerRunScriptOperator` (:mod:`.run_script`): run a script and wait for its result;
- :class:`ScriptRunnerSubmitScriptOperator`, :class:`ScriptRunnerCancelJobOperator`,
  :class:`ScriptRunnerGetJobLogsOperator` (:mod:`.jobs`): submit, cancel, read logs;
- :class:`ScriptRunnerJobLink` (:mod:`._base`): the task's link to its job.
"""

from __future__ import annotations

from airflow_provider_scriptrunner.operators._base import ScriptRunnerJobLink
from airflow_provider_scriptrunner.operators.jobs import (
    ScriptRunnerCancelJobOperator,
    ScriptRunnerGetJobLogsOperator,
    ScriptRunnerSubmitScriptOperator,
)
from airflow_provider_scriptrunner.operators.run_script import ScriptRunnerRunScriptOperator

__all__ = [
    "ScriptRunnerCancelJobOperator",
    "ScriptRunnerGetJobLogsOperator",
    "ScriptRunnerJobLink",
    "ScriptRunnerRunScriptOperator",
    "ScriptRunnerSubmitScriptOperator",
]
