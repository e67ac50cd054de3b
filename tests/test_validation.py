"""Input checks (validation, and the byte counts of log paging): each names the parameter, what it must be and what it got."""

from __future__ import annotations

from datetime import timedelta

import pytest

from airflow_provider_scriptrunner.client import paging, validation


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: validation.integer("n", "3", minimum=1), TypeError, "n must be an int >= 1, got str: '3'"),
        (
            lambda: validation.integer("n", True, minimum=1),
            TypeError,
            "n must be an int >= 1, got bool: True",
        ),
        (lambda: validation.integer("n", 0, minimum=1), ValueError, "n must be an int >= 1, got 0"),
        (
            lambda: validation.integer("n", 9, minimum=1, maximum=5),
            ValueError,
            "n must be an int between 1 and 5, got 9",
        ),
        (
            lambda: paging.page_size_check("log_page_bytes", 3),
            ValueError,
            "log_page_bytes must be a number of bytes between 4 and 1048576, got 3",
        ),
        (
            lambda: validation.byte_count("max_output_bytes", -1),
            ValueError,
            "max_output_bytes must be a number of bytes >= 0, got -1",
        ),
        (
            lambda: validation.offset("offset", 1.5),
            TypeError,
            "offset must be a byte offset >= 0, got float: 1.5",
        ),
        (
            lambda: paging.log_params("stdout", 0, 0),
            ValueError,
            "limit must be a number of bytes between 1 and 1048576, got 0",
        ),
        (
            lambda: validation.positive_seconds("timeout", 0),
            ValueError,
            "timeout must be a positive number of seconds (or a timedelta), or None, got 0",
        ),
        (
            lambda: validation.positive_seconds("timeout", "10"),
            TypeError,
            "timeout must be a positive number of seconds (or a timedelta), or None, got str: '10'",
        ),
        (lambda: validation.positive_seconds("timeout", True), TypeError, "got bool: True"),
        (lambda: validation.positive_seconds("timeout", float("inf")), ValueError, "got inf"),
        (
            lambda: validation.required_seconds("poll_interval", None),
            TypeError,
            "poll_interval must be a positive number of seconds (or a timedelta), got None",
        ),
        (
            lambda: validation.timestamp("end_time", float("nan")),
            ValueError,
            "end_time must be a wall-clock timestamp (epoch seconds) or None, got nan",
        ),
        (
            lambda: validation.conn_id(""),
            ValueError,
            "scriptrunner_conn_id must be a non-empty connection id such as 'scriptrunner_default', got ''",
        ),
        (
            lambda: validation.skip_codes(True),
            TypeError,
            "skip_on_exit_code must be an int or a list of ints, not a bool",
        ),
        (
            lambda: validation.skip_codes(["3"]),
            TypeError,
            "skip_on_exit_code must contain only ints, got ['3']",
        ),
        (
            lambda: validation.skip_codes(3.5),
            TypeError,
            "skip_on_exit_code must be an int or a list of ints, got 3.5",
        ),
    ],
)
def test_bad_values_are_named_with_what_they_must_be(call, error, message):
    with pytest.raises(error) as info:
        call()
    assert message in str(info.value)


def test_good_values_pass_through():
    assert validation.integer("n", 5, minimum=1, maximum=5) == 5
    assert validation.optional_integer("n", None, minimum=0) is None
    assert validation.positive_seconds("t", timedelta(minutes=2)) == 120.0
    assert validation.positive_seconds("t", None) is None
    assert validation.required_seconds("t", 1) == 1.0
    assert validation.timestamp("t", 1) == 1.0 and validation.timestamp("t", None) is None
    # No limit: the server's default page size.
    assert paging.log_params("stderr", 7, None) == {"stream": "stderr", "offset": 7}
    assert paging.log_params("stdout", 0, 1048576) == {"stream": "stdout", "offset": 0, "limit": 1048576}
    assert paging.page_size_check("page_size", 4) == 4
    assert validation.skip_codes(None) == frozenset() and validation.skip_codes((1, 2)) == frozenset({1, 2})
    assert validation.conn_id("sr") == "sr"


def test_a_number_of_the_wrong_kind_is_both_a_type_and_a_value_error():
    # Code that catches bad input as ValueError catches a number of the wrong kind too.
    for call in (
        lambda: validation.integer("n", "3", minimum=0),
        lambda: validation.positive_seconds("t", "5"),
    ):
        with pytest.raises(ValueError):
            call()
        with pytest.raises(TypeError):
            call()
