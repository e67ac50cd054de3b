"""
Every ``literalinclude`` in docs/ shows code that exists: its file, both of its markers (once
each, in order) and, for Python, a region that parses. So a renamed or moved marker fails
``make test``, not only ``make docs``. Plain text parsing: no Sphinx needed.
"""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"

#: A MyST directive fence: ```{literalinclude} path (three or more backticks), its options, the fence.
DIRECTIVE = re.compile(
    r"^(`{3,})\{literalinclude\}[ \t]+(\S+)[ \t]*\n(.*?)^\1[ \t]*$", re.MULTILINE | re.DOTALL
)
OPTION = re.compile(r"^:([\w-]+):[ \t]*(.*?)[ \t]*$")


@dataclass
class Include:
    page: Path
    line: int
    path: str
    options: dict[str, str] = field(default_factory=dict)

    @property
    def file(self) -> Path:
        return (self.page.parent / self.path).resolve()

    def __str__(self) -> str:
        return f"{self.page.relative_to(DOCS.parent)}:{self.line}"


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def find_includes(root: Path = DOCS) -> list[Include]:
    includes = []
    for page in sorted(root.rglob("*.md")):
        text = page.read_text(encoding="utf-8")
        for match in DIRECTIVE.finditer(text):
            options = {}
            for body_line in match.group(3).splitlines():
                option = OPTION.match(body_line)
                if not option:
                    break  # the options end where the directive's content starts
                options[option.group(1)] = _unquote(option.group(2))
            line = text.count("\n", 0, match.start()) + 1
            includes.append(Include(page, line, match.group(2), options))
    return includes


INCLUDES = find_includes()


def test_the_docs_include_example_code():
    # The parser found the includes the pages are known to have: a changed syntax fails here.
    pages = {include.page.name for include in INCLUDES}
    assert "operators.md" in pages, pages


def test_the_parser_reads_options_and_fences(tmp_path):
    (tmp_path / "page.md").write_text(
        'text\n\n````{literalinclude} ../code.py\n:language: python\n:start-after: "[START a]"\n'
        ":end-before: [END a]\n:dedent:\n````\n\n```python\nnot_an_include()\n```\n"
    )
    [include] = find_includes(tmp_path)
    assert (include.line, include.path) == (3, "../code.py")
    assert include.options == {
        "language": "python",
        "start-after": "[START a]",
        "end-before": "[END a]",
        "dedent": "",
    }


@pytest.mark.parametrize("include", INCLUDES, ids=str)
def test_literalinclude_shows_existing_code(include: Include):
    assert include.file.is_file(), f"{include}: {include.path} does not exist"
    source = include.file.read_text(encoding="utf-8")
    start, end = include.options.get("start-after"), include.options.get("end-before")
    if start and end and start.startswith("[START "):
        assert end == "[END " + start.removeprefix("[START "), f"{include}: {start!r} ends at {end!r}"
    region = source
    if start is not None:
        assert source.count(start) == 1, (
            f"{include}: {start!r} occurs {source.count(start)} times in {include.path}"
        )
        region = region[region.index(start) + len(start) :]
    if end is not None:
        assert region.count(end) == 1, (
            f"{include}: {end!r} does not follow the start marker once in {include.path}"
        )
        region = region[: region.index(end)]
    # Both markers sit on comment lines of their own: drop the rest of those lines.
    code = "\n".join(region.split("\n")[1:-1] if start and end else region.split("\n"))
    assert code.strip(), f"{include}: the region between {start!r} and {end!r} is empty"
    if include.options.get("language") == "python":
        ast.parse(textwrap.dedent(code))
