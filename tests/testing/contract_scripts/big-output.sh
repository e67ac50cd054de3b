#!/bin/sh
# Writes $1 lines to stdout and $2 lines to stderr, 12 bytes each ("line 000001\n", ...).
awk -v n="${1:-0}" 'BEGIN { for (i = 1; i <= n; i++) printf "line %06d\n", i }'
awk -v n="${2:-0}" 'BEGIN { for (i = 1; i <= n; i++) printf "line %06d\n", i }' >&2
