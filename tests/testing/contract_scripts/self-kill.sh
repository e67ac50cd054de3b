#!/bin/sh
# SIGKILLs its own process group: the job is killed by a signal.
echo "about to die"
kill -KILL 0
