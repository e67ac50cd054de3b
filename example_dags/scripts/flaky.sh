#!/bin/sh
# Fails the first time it is called with a given MARKER, succeeds the second time (and forgets it).
# Give each DAG run its own marker (e.g. its run id) so that every run fails exactly once. The
# marker file lives in the server's temporary directory; the whitelist pattern keeps "/" out of it.
marker="${TMPDIR:-/tmp}/scriptrunner-flaky-${1:-default}"
if [ ! -e "$marker" ]; then
  touch "$marker"
  echo "first try: failing on purpose" >&2
  exit 1
fi
rm -f "$marker"
echo "second try: succeeded"
