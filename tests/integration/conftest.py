"""Integration tests: the provider against the bundled server over real loopback HTTP."""

from __future__ import annotations

import sys

import pytest

from airflow_provider_scriptrunner.testing.pytest_plugin import (  # noqa: F401 (fixtures)
    scriptrunner_connection,
    scriptrunner_server,
    scriptrunner_server_config,
)

#: Deterministic mixed ASCII / multi-byte text, SIZE bytes or a little more, on stdout.
MIXED_TEXT = (
    "import sys, random\n"
    "rng = random.Random(int(sys.argv[2]))\n"
    "pieces = ['a', 'Z', ' ', '\\n', 'é', 'ß', '中', '文', '€', '😀', '𝄞', 'ok\\t']\n"
    "out, total, size = [], 0, int(sys.argv[1])\n"
    "while total < size:\n"
    "    p = rng.choice(pieces); out.append(p); total += len(p.encode())\n"
    "sys.stdout.buffer.write(''.join(out).encode())\n"
)


def mixed_text(size: int, seed: int) -> bytes:
    import random

    rng = random.Random(seed)
    pieces = ["a", "Z", " ", "\n", "é", "ß", "中", "文", "€", "😀", "𝄞", "ok\t"]
    out, total = [], 0
    while total < size:
        piece = rng.choice(pieces)
        out.append(piece)
        total += len(piece.encode())
    return "".join(out).encode()


@pytest.fixture
def scriptrunner_scripts(tmp_path):
    """Scripts for the integration tests; each writes what a test needs to check from outside."""
    python = sys.executable
    (tmp_path / "mixed.py").write_text(MIXED_TEXT)
    return {
        "mixed": {"body": f'#!/bin/sh\nexec "{python}" "{tmp_path / "mixed.py"}" "$1" "$2"\n'},
        "echo": {"body": '#!/bin/sh\necho "$@"\n'},
        "fail": {"body": '#!/bin/sh\necho "about to fail" >&2\nexit "${1:-1}"\n'},
        # Records its pid, then works until stopped; counts its runs in a file.
        "long": {
            "body": '#!/bin/sh\necho $$ > "$1.pid"\necho run >> "$1.count"\ni=0\n'
            'while [ $i -lt 600 ]; do echo "tick $i"; sleep 0.1; i=$((i+1)); done\n'
        },
        "counted": {"body": '#!/bin/sh\necho run >> "$1"\necho "run number $(wc -l < "$1")"\n'},
        "slow-timeout": {"body": "#!/bin/sh\nsleep 30\n", "timeoutSec": 1},
    }
