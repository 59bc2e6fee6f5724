#!/usr/bin/env bash
# `leanlm run` with sampling: the same seed and settings give the same text; another seed another.
set -u
LEANLM="$1"
gen() { "$LEANLM" run -p "Once upon a time" -n 24 --temp 0.9 --seed "$1" 2>/dev/null; }
a=$(gen 11); b=$(gen 11); c=$(gen 12)
fails=0
if [ -z "$a" ] || [ "$a" != "$b" ]; then echo "FAIL same seed gave different text:"; echo "$a"; echo "$b"; fails=$((fails + 1)); else echo "ok   same seed, same text"; fi
if [ "$a" = "$c" ]; then echo "FAIL seeds 11 and 12 gave the same text"; fails=$((fails + 1)); else echo "ok   other seed, other text"; fi
echo "$((2 - fails)) passed, $fails failed"
[ "$fails" -eq 0 ]
