#!/bin/sh
# Sleeps SECONDS (default 30), printing a heartbeat every second.
seconds=${1:-30}
i=0
while [ "$i" -lt "$seconds" ]; do
  echo "still working ($i/$seconds)"
  sleep 1
  i=$((i + 1))
done
echo done
