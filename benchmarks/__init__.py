"""
Benchmarks of the script-runner provider against the bundled server on loopback.

``make bench`` (``python -m benchmarks``) runs every benchmark, prints a table of measured values
next to their targets and writes it, with the machine's description, to ``benchmarks/RESULTS.md``.

Modules, one per benchmark:

* :mod:`benchmarks.sync_overhead`: the run operator (worker mode) on a quick script vs one raw
  sync ``POST /run``.
* :mod:`benchmarks.fan_in`: up to 10,000 concurrent ``ScriptRunnerJobTrigger`` runs in one event
  loop, on aiohttp and on httpx, vs 1,000 of Airflow's ``HttpSensorTrigger``, each trial in a fresh
  child process, against :mod:`benchmarks.mock_jobs_server`.
* :mod:`benchmarks.log_retrieval`: the hook's whole-stream iteration of 1 MiB vs one raw GET, and
  the memory the operator's log streaming needs.
* :mod:`benchmarks.requests_per_job`: HTTP requests made for a 60 s job in worker and deferred
  mode, and how soon the operator sees the end of a 0.1 s script.
* :mod:`benchmarks.triggerer_capacity`: 1,000 and 5,000 deferred run-script tasks in one real
  ``airflow triggerer`` (SQLite, no worker), next to Airflow's ``DateTimeTrigger`` and
  ``HttpSensorTrigger``: the whole triggerer's CPU, memory and open files, how soon a job's end
  reaches the database, and every line of the scripts' output in the per-task trigger logs.

Every server is bound to 127.0.0.1, started in its own process group and stopped when its
benchmark ends, whatever happens.
"""
