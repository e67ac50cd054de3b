#!/bin/sh
# "café €uro" and a newline: 13 bytes, with a 2-byte and a 3-byte character.
printf 'caf\303\251 \342\202\254uro\n'
