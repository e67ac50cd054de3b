#!/bin/sh
# One line on each stream.
echo "hello stdout"
echo "hello stderr" >&2
