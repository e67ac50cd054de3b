#!/bin/sh
# Writes a small report over a few seconds: ROWS lines (default 5), one every DELAY tenths of a second.
rows=${1:-5}
delay=${2:-2}
i=1
while [ "$i" -le "$rows" ]; do
  echo "row $i: ok"
  sleep "$(awk "BEGIN{print $delay/10}")"
  i=$((i + 1))
done
echo "report finished with $rows rows" >&2
