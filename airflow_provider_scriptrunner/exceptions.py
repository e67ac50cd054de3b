"""
The provider's exceptions, importable from here as documented (they are defined in
:mod:`airflow_provider_scriptrunner.client.errors`).
"""

from __future__ import annotations

from airflow_provider_scriptrunner.client.errors import (
    ScriptRunnerApiError,
    ScriptRunnerAuthError,
    ScriptRunnerConfigError,
    ScriptRunnerConnectionError,
    ScriptRunnerError,
    ScriptRunnerJobError,
    ScriptRunnerJobNotFoundError,
    ScriptRunnerOutputError,
    ScriptRunnerResponseError,
    ScriptRunnerTimeoutError,
    ScriptRunnerTLSError,
)

__all__ = [
    "ScriptRunnerApiError",
    "ScriptRunnerAuthError",
    "ScriptRunnerConfigError",
    "ScriptRunnerConnectionError",
    "ScriptRunnerError",
    "ScriptRunnerJobError",
    "ScriptRunnerJobNotFoundError",
    "ScriptRunnerOutputError",
    "ScriptRunnerResponseError",
    "ScriptRunnerTLSError",
    "ScriptRunnerTimeoutError",
]
