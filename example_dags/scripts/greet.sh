#!/bin/sh
# Greets each argument; prints some multi-byte text too.
for name in "$@"; do
  echo "Hello, $name! Grüße, 你好 👋"
done
echo "greeted $# name(s)" >&2
