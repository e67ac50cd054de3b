#!/bin/sh
# Fails the first time it is called with a given marker name, succeeds afterwards.
# The marker lives in the server's temporary directory, so each demo run starts fresh.
marker="${TMPDIR:-/tmp}/scriptrunner-flaky-${1:-default}"
if [ ! -e "$marker" ]; then
  touch "$marker"
  echo "first try: failing on purpose" >&2
  exit 1
fi
rm -f "$marker"
echo "second try: succeeded"
