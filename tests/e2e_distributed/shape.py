"""The distributed deployment's shape and the settings its tests rely on (see conftest.py)."""

from __future__ import annotations

TRIGGERERS = ("triggerer-1", "triggerer-2")
WORKERS = ("celery-worker-1", "celery-worker-2")
COMPONENTS = ("api-server", "scheduler", "dag-processor", *TRIGGERERS, *WORKERS)

#: A triggerer whose heartbeat is older than this loses its triggers to the other one.
TRIGGERER_HEALTH_CHECK_THRESHOLD = 10
#: A running task whose heartbeat is older than this is failed by the scheduler (and retried).
TASK_HEARTBEAT_TIMEOUT = 15
#: How long a triggerer lets a trigger's on_kill() run. The first state query of a trigger goes
#: through an execution API the triggerer builds on first use (~20 s on a busy 2-core machine).
ON_KILL_TIMEOUT = 45
#: Triggers one triggerer takes at most: 20 mapped tasks need both triggerers.
TRIGGERER_CAPACITY = 10
#: Scripts the script-runner runs at once: the 20 mapped tasks' scripts all at once, plus spare.
SCRIPTRUNNER_MAX_CONCURRENT = 24
