"""
Input checks, in one place for the client, the hooks, the task logic and the adapters.

Every check runs before any request is sent and raises ``ValueError`` (right kind, wrong value) or,
for a wrong kind of value, ``TypeError`` for text and argument lists and :class:`ArgumentTypeError`
for numbers, naming the parameter, what it must be and what it got.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_scriptrunner.client.models import LOG_STREAMS

if TYPE_CHECKING:
    from collections.abc import Iterable


class ArgumentTypeError(TypeError, ValueError):
    """
    A number of the wrong kind (``"5"``, ``None``, ``True``): a ``TypeError`` that is also a
    ``ValueError``, so that code catching bad input as ``ValueError`` catches it too.
    """


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def integer(name: str, value: Any, *, minimum: int, maximum: int | None = None, what: str = "an int") -> int:
    """``value`` as an int within ``[minimum, maximum]``."""
    bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
    if not _is_int(value):
        raise ArgumentTypeError(f"{name} must be {what} {bounds}, got {type(value).__name__}: {value!r:.80}")
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be {what} {bounds}, got {value!r}")
    return value


def optional_integer(
    name: str, value: Any, *, minimum: int, maximum: int | None = None, what: str = "an int"
) -> int | None:
    return None if value is None else integer(name, value, minimum=minimum, maximum=maximum, what=what)


def positive_seconds(name: str, value: Any) -> float | None:
    """``value`` (seconds or a timedelta) as float seconds > 0, or None."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if not _is_number(value):
        raise ArgumentTypeError(
            f"{name} must be a positive number of seconds (or a timedelta), or None, got {type(value).__name__}: {value!r:.80}"
        )
    if not value > 0 or value == float("inf"):
        raise ValueError(
            f"{name} must be a positive number of seconds (or a timedelta), or None, got {value!r}"
        )
    return float(value)


def required_seconds(name: str, value: Any) -> float:
    """Like :func:`positive_seconds`, but None is not allowed."""
    if value is None:
        raise ArgumentTypeError(f"{name} must be a positive number of seconds (or a timedelta), got None")
    return positive_seconds(name, value)  # type: ignore[return-value]


def timestamp(name: str, value: Any) -> float | None:
    """A wall-clock time (epoch seconds), or None."""
    if value is None:
        return None
    if not _is_number(value) or value != value:
        raise ValueError(f"{name} must be a wall-clock timestamp (epoch seconds) or None, got {value!r}")
    return float(value)


def conn_id(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(
            f"scriptrunner_conn_id must be a non-empty connection id such as 'scriptrunner_default', got {value!r}"
        )
    return value


def require_text(name: str, value: Any, example: str, empty_hint: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string such as {example!r}, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{name} is empty: {empty_hint}")
    return value


def validate_script_id(script_id: Any) -> str:
    return require_text(
        "script_id", script_id, "quick-echo", "give the id of a script in the server's scripts.json"
    )


def validate_args(args: Any) -> list[str]:
    """Return ``args`` as a list of strings; numbers are converted with ``str()``."""
    if args is None:
        return []
    if isinstance(args, (str, bytes)) or not isinstance(args, (list, tuple)):
        raise TypeError(
            f"args must be a list or tuple of strings, got {type(args).__name__}"
            + (_string_args_hint(args) if isinstance(args, str) else "")
        )
    result = []
    for index, item in enumerate(args):
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    # A lone surrogate cannot reach a process as text: the server would fail or mangle it.
                    raise ValueError(
                        f"args[{index}] is not valid Unicode text (it holds a lone surrogate): {item!r:.80}"
                    ) from None
            result.append(item)
        elif isinstance(item, (int, float)) and not isinstance(item, bool):
            result.append(str(item))
        else:
            raise TypeError(
                f"args[{index}] must be a string (or a number), got {type(item).__name__}: {item!r:.80}"
            )
    return result


def _string_args_hint(args: str) -> str:
    words = args.split()
    if len(words) > 1:
        # The server checks each argument against its pattern: "a b" as one argument is rejected.
        return f": give each argument as its own item, e.g. args={words!r}"
    return f": wrap a single argument in a list, e.g. args=[{args!r}]"


def validate_job_id(job_id: Any) -> str:
    require_text(
        "job_id", job_id, "job_1795342284509_3", "pass the job id returned when the script was submitted"
    )
    if job_id.strip() in (".", ".."):
        # Dot segments would be folded away by URL normalisation and hit another route.
        raise ValueError(f"job_id {job_id!r} is not a job id")
    return job_id


def validate_stream(stream: Any) -> str:
    if stream not in LOG_STREAMS:
        raise ValueError(f"stream must be 'stdout' or 'stderr', got {stream!r}")
    return stream


def offset(name: str, value: Any) -> int:
    return integer(name, value, minimum=0, what="a byte offset")


def byte_count(name: str, value: Any) -> int:
    return integer(name, value, minimum=0, what="a number of bytes")


def skip_codes(skip_on_exit_code: int | Iterable[int] | None) -> frozenset[int]:
    """Accept an int, an iterable of ints, or None (as BashOperator does)."""
    if skip_on_exit_code is None:
        return frozenset()
    if isinstance(skip_on_exit_code, bool):
        raise TypeError("skip_on_exit_code must be an int or a list of ints, not a bool")
    if isinstance(skip_on_exit_code, int):
        return frozenset({skip_on_exit_code})
    try:
        codes = frozenset(skip_on_exit_code)
    except TypeError:
        raise TypeError(
            f"skip_on_exit_code must be an int or a list of ints, got {skip_on_exit_code!r}"
        ) from None
    if not all(_is_int(code) for code in codes):
        raise TypeError(f"skip_on_exit_code must contain only ints, got {sorted(codes, key=str)!r}")
    return codes
