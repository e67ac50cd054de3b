#!/bin/sh
# Writes $1 "-" characters, one "€" (3 bytes: E2 82 AC), then $2 "a" characters and a newline.
awk -v n="${1:-0}" 'BEGIN { for (i = 0; i < n; i++) printf "-" }'
printf '\342\202\254'
awk -v n="${2:-0}" 'BEGIN { for (i = 0; i < n; i++) printf "a"; printf "\n" }'
