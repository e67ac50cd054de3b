"""
``@task.scriptrunner``: a Python function computes the script's args at run time; the script then
runs exactly as with :class:`~airflow_provider_scriptrunner.operators.scriptrunner.ScriptRunnerRunScriptOperator`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk.bases.decorator import DecoratedOperator, TaskDecorator, task_decorator_factory
from airflow.sdk.definitions._internal.types import SET_DURING_EXECUTION
from airflow.sdk.definitions.context import context_merge

from airflow_provider_scriptrunner._compat import AirflowFailException, determine_kwargs
from airflow_provider_scriptrunner.operators.run_script import ScriptRunnerRunScriptOperator

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping, Sequence

    from airflow.sdk import Context


class _ScriptRunnerDecoratedOperator(DecoratedOperator, ScriptRunnerRunScriptOperator):
    """
    Calls the decorated function with its resolved inputs, and runs the script with the list it
    returns as the script's args. Takes every keyword of the run-script operator except ``args``.

    :param python_callable: the decorated function.
    :param op_args: positional arguments for the function (templated).
    :param op_kwargs: keyword arguments for the function (templated).
    """

    template_fields: Sequence[str] = (
        *DecoratedOperator.template_fields,
        *ScriptRunnerRunScriptOperator.template_fields,
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {
        **DecoratedOperator.template_fields_renderers,
        **ScriptRunnerRunScriptOperator.template_fields_renderers,
    }
    custom_operator_name = "@task.scriptrunner"
    resume_with_args = True
    #: The args exist only once the function ran: Rendered Templates shows them after the try.
    overwrite_rtif_after_execution = True

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if "args" in kwargs:
            raise TypeError(
                "@task.scriptrunner takes the script's args from what the decorated function returns: "
                "remove args=... and return the list from the function instead"
            )
        super().__init__(
            python_callable=python_callable,
            op_args=op_args,
            op_kwargs=op_kwargs,
            args=SET_DURING_EXECUTION,
            **kwargs,
        )

    def execute(self, context: Context) -> dict[str, Any] | None:
        context_merge(context, self.op_kwargs)
        kwargs = determine_kwargs(self.python_callable, self.op_args, context)
        returned = self.python_callable(*self.op_args, **kwargs)
        if not isinstance(returned, (list, tuple)):
            raise AirflowFailException(
                f"the function of @task.scriptrunner task {self.task_id!r} returned "
                f"{type(returned).__name__} {returned!r:.80}; it must return the script's args as a list "
                "or tuple of strings and numbers, e.g. return ['orders', ds] (not retried: another try "
                "would fail the same way)"
            )
        self.args = list(returned)
        self.render_template_fields(context)
        return super().execute(context)


def scriptrunner_task(
    python_callable: Callable[..., Any] | None = None, *, multiple_outputs: bool = True, **kwargs: Any
) -> TaskDecorator:
    """
    Turn a function into a run-script task: ``@task.scriptrunner(script_id="load")``.

    The function runs when the task runs, with its inputs resolved (XComArgs, context values such
    as ``ds``), and returns the script's args: a list or tuple of strings and numbers (numbers are
    converted with ``str()``). The task then runs the script as
    :class:`~airflow_provider_scriptrunner.operators.scriptrunner.ScriptRunnerRunScriptOperator`
    does, with every keyword of that operator but ``args``, and returns the same dict.

    :param python_callable: the function (given by the decorator syntax).
    :param multiple_outputs: also push each key of the returned dict as its own XCom, so that
        downstream tasks can take ``run["result"]`` or ``run["stdout"]`` of a task ``run``
        (default True: the function's annotation describes the args, not the task's result).
    """
    return task_decorator_factory(
        python_callable=python_callable,
        multiple_outputs=multiple_outputs,
        decorated_operator_class=_ScriptRunnerDecoratedOperator,
        **kwargs,
    )
