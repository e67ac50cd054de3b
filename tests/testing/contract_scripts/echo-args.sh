#!/bin/sh
# Each argument on its own line, between angle brackets, exactly as received.
for arg in "$@"; do
    printf '<%s>\n' "$arg"
done
