"""Integration tests: the provider against the bundled server over real loopback HTTP."""

from __future__ import annotations

import sys

import pytest

from airflow_provider_scriptrunner.testing.pytest_plugin import (  # noqa: F401 (fixtures)
    scriptrunner_connection,
    scriptrunner_server,
    scriptrunner_server_config,
)
from tests.conftest import MIXED_TEXT_SOURCE, mixed_text  # noqa: F401 (re-exported for the tests)

MIXED_SCRIPT = (
    MIXED_TEXT_SOURCE
    + "\nimport sys\nsys.stdout.buffer.write(mixed_text(int(sys.argv[1]), int(sys.argv[2])))\n"
)


@pytest.fixture
def scriptrunner_scripts(tmp_path):
    """Scripts for the integration tests; each writes what a test needs to check from outside."""
    python = sys.executable
    (tmp_path / "mixed.py").write_text(MIXED_SCRIPT)
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
