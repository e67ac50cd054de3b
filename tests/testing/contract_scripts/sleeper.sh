#!/bin/sh
# Reports its pid, then sleeps (default 30 s) so that it can be observed and canceled.
echo "pid=$$"
echo "sleeping" >&2
sleep "${1:-30}"
echo "woke up"
