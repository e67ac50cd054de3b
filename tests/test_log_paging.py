"""PageTextReader: a log page's JSON body decoded as it arrives, in any slices, to the exact text."""

from __future__ import annotations

import io
import json
import random

import pytest
import urllib3

from airflow_provider_scriptrunner.hooks.scriptrunner import ScriptRunnerHook
from airflow_provider_scriptrunner.log_paging import PageTextReader
from tests.conftest import BASE_URL, log_page, log_page_callback, mixed_text

FIELDS = {"ok": True, "jobId": "j", "stream": "stdout", "offset": 0, "nextOffset": 5, "totalSize": 9}
#: What makes slicing hard: escapes, surrogate pairs, multi-byte UTF-8, quotes, control characters.
HARD = ["a", '"', "\\", "\\u", "\n", "\t", "\x01", "é", "中", "😀", "𝄞", "\ufffd", "/", " ", "ok"]


def hard_text(rng: random.Random, length: int) -> str:
    return "".join(rng.choice(HARD) for _ in range(length))


def body(data: str, *, order: str = "last", ensure_ascii: bool = True, indent: int | None = None) -> bytes:
    fields = dict(FIELDS)
    if order == "first":
        fields = {"data": data, **fields}
    elif order == "middle":
        fields = {"ok": True, "jobId": "j", "data": data, "stream": "stdout", "offset": 0, "nextOffset": 5, "totalSize": 9}  # fmt: skip
    else:
        fields["data"] = data
    return json.dumps(fields, ensure_ascii=ensure_ascii, indent=indent).encode()


def read(raw: bytes, sizes: list[int], skip: int = 0) -> tuple[str, str, dict]:
    """Feed ``raw`` in slices of the given sizes (cycled); return (handed out, held back, other fields)."""
    reader = PageTextReader(skip=skip)
    handed, position, index = [], 0, 0
    while position < len(raw):
        size = sizes[index % len(sizes)]
        handed += reader.feed(raw[position : position + size])
        position, index = position + size, index + 1
    fields = json.loads(reader.fields())
    rest, held = reader.finish(fields["data"])
    return "".join(handed + rest), held, fields


@pytest.mark.parametrize("seed", range(40))
def test_any_slicing_gives_the_exact_text(seed):
    rng = random.Random(seed)
    text = hard_text(rng, rng.randint(1, 400))
    raw = body(
        text,
        order=rng.choice(["first", "middle", "last"]),
        ensure_ascii=seed % 2 == 0,
        indent=rng.choice([None, 2]),
    )
    sizes = [rng.randint(1, 13) for _ in range(7)] if seed % 3 else [rng.randint(1, 4000)]
    handed, held, fields = read(raw, sizes)
    assert handed + held == text
    assert held == text[-1]
    assert fields["data"] == "" and {k: fields[k] for k in FIELDS} == FIELDS


def test_every_cut_of_a_pair_an_escape_and_a_character():
    text = 'x😀\\"é\n中\u00e9\\u0041'
    for ensure_ascii in (True, False):
        raw = body(text, ensure_ascii=ensure_ascii)
        for cut in range(1, len(raw)):
            reader = PageTextReader()
            pieces = reader.feed(raw[:cut]) + reader.feed(raw[cut:])
            rest, held = reader.finish(json.loads(reader.fields())["data"])
            assert "".join(pieces + rest) + held == text, (ensure_ascii, cut)


def test_skip_hands_out_only_the_rest():
    text = "0123456789é😀"
    handed, held, _ = read(body(text), [3], skip=4)
    assert handed + held == text[4:]
    handed, held, _ = read(body("ab"), [1], skip=5)  # skipping past the end hands out nothing
    assert (handed, held) == ("", "")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"jobId": "data", "data": "top"}',  # a value that spells "data" is not the key
        b'{"nested": {"data": "no"}, "data": "top"}',
        b'{"list": ["data", {"data": 1}], "data": "top"}',
        b'{"data" : \n "top" , "database": "x"}',
    ],
)
def test_only_the_top_level_data_is_read_in_pieces(raw):
    handed, held, fields = read(raw, [2])
    assert handed + held == "top"
    assert fields["data"] == ""


def test_a_body_of_another_shape_is_handed_out_at_the_end():
    # An escaped key is not recognised while reading: the parsed field is handed out instead.
    handed, held, fields = read(b'{"d\\u0061ta": "whole", "ok": true}', [5])
    assert (handed + held, fields["data"]) == ("whole", "whole")


def test_a_body_cut_inside_its_data_is_malformed():
    reader = PageTextReader()
    reader.feed(body("abc")[:-5])
    with pytest.raises(ValueError):
        reader.fields()
    with pytest.raises(ValueError):
        PageTextReader().feed(b'{"data": "bad \\x escape"}')


# -- the sync hook's copy_log ----------------------------------------------------------------------


def copy(hook: ScriptRunnerHook, **kwargs) -> tuple[str, list[tuple[int, int, int]]]:
    pieces: list[str] = []
    ends = [(c.offset, c.next_offset, c.total_size) for c in hook.copy_log("j", pieces.append, **kwargs)]
    return "".join(pieces), ends


@pytest.mark.parametrize("page_size", [4, 7, 1000, 1048576])
def test_copy_log_writes_what_iter_log_yields(conn, requests_mock, page_size):
    blob = mixed_text(20_000)
    requests_mock.get(f"{BASE_URL}/jobs/j/logs", json=log_page_callback({"stdout": blob}))
    chunks = list(ScriptRunnerHook().iter_log("j", page_size=page_size))
    text, ends = copy(ScriptRunnerHook(), page_size=page_size)
    assert text.encode() == blob
    assert ends == [(c.offset, c.next_offset, c.total_size) for c in chunks]


def test_copy_log_holds_back_a_character_cut_at_the_end_of_a_running_stream(conn, requests_mock):
    blob = "ab€".encode()[:-1]  # the job is still writing the euro sign
    requests_mock.get(f"{BASE_URL}/jobs/j/logs", json=log_page_callback({"stdout": blob}))
    text, ends = copy(ScriptRunnerHook(), stream_complete=False)
    assert (text, ends) == ("ab", [(0, 2, 4)])
    text, _ = copy(
        ScriptRunnerHook(), stream_complete=True
    )  # a finished stream keeps it as the server has it
    assert text == "ab\ufffd"


class CutBody(io.RawIOBase):
    """A response body that breaks off after ``cut`` bytes, as a dropped connection does."""

    def __init__(self, data: bytes, cut: int) -> None:
        self.data, self.cut, self.position = data, cut, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.position >= self.cut:
            raise urllib3.exceptions.ProtocolError("Connection broken: IncompleteRead")
        size = min(len(buffer), self.cut - self.position)
        buffer[:size] = self.data[self.position : self.position + size]
        self.position += size
        return size


def test_a_page_cut_off_while_read_is_read_again_and_written_once(conn, requests_mock):
    blob = mixed_text(50_000)
    page = json.dumps(log_page({"stdout": blob}, "stdout", 0, 65536, "j")).encode()
    requests_mock.get(
        f"{BASE_URL}/jobs/j/logs",
        [{"body": CutBody(page, 30_000), "status_code": 200}, {"body": io.BytesIO(page), "status_code": 200}],
    )
    text, ends = copy(ScriptRunnerHook(), page_size=65536)
    assert text.encode() == blob
    assert ends == [(0, len(blob), len(blob))]
    assert len(requests_mock.request_history) == 2


def test_a_page_that_is_not_json_fails_like_any_bad_answer(conn, requests_mock):
    from airflow_provider_scriptrunner.exceptions import ScriptRunnerResponseError

    requests_mock.get(f"{BASE_URL}/jobs/j/logs", text='{"ok": true, "data": "bad \\x escape", "offset": 0}')
    with pytest.raises(ScriptRunnerResponseError, match="malformed response") as info:
        copy(ScriptRunnerHook())
    assert info.value.status_code == 200 and len(requests_mock.request_history) == 1  # not retried


def test_copy_log_retries_a_transient_answer_and_maps_errors(conn, requests_mock):
    from airflow_provider_scriptrunner.exceptions import ScriptRunnerJobNotFoundError

    blob = b"one\ntwo\n"
    page = log_page({"stdout": blob}, "stdout", 0, 65536, "j")
    requests_mock.get(
        f"{BASE_URL}/jobs/j/logs", [{"status_code": 503, "text": "<html>busy</html>"}, {"json": page}]
    )
    assert copy(ScriptRunnerHook()) == ("one\ntwo\n", [(0, 8, 8)])
    assert len(requests_mock.request_history) == 2

    gone = {"ok": False, "error": {"code": "JOB_NOT_FOUND", "message": "job not found: j"}}
    requests_mock.get(f"{BASE_URL}/jobs/j/logs", status_code=404, json=gone)
    with pytest.raises(ScriptRunnerJobNotFoundError):
        copy(ScriptRunnerHook())
