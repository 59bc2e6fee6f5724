#!/usr/bin/env bash
# `leanlm run` with sampling: the same seed and settings give the same text; another seed another.
# Also what run prints around the text: the statistics on a line of their own (stdout and stderr in
# one pipe), and a word on stderr when generation stops at the context limit; -m by short name.
set -u
LEANLM="$1"
gen() { "$LEANLM" run -p "Once upon a time" -n 24 --temp 0.9 --seed "$1" 2>/dev/null; }
a=$(gen 11); b=$(gen 11); c=$(gen 12)
fails=0
if [ -z "$a" ] || [ "$a" != "$b" ]; then echo "FAIL same seed gave different text:"; echo "$a"; echo "$b"; fails=$((fails + 1)); else echo "ok   same seed, same text"; fi
if [ "$a" = "$c" ]; then echo "FAIL seeds 11 and 12 gave the same text"; fails=$((fails + 1)); else echo "ok   other seed, other text"; fi
out=$("$LEANLM" run -p "Once upon a time" -n 8 2>&1)
if ! printf '%s\n' "$out" | tail -1 | grep -q '^prompt: '; then echo "FAIL statistics not on their own line:"; echo "$out"; fails=$((fails + 1)); else echo "ok   statistics on their own line"; fi
err=$("$LEANLM" run -p "Once upon a time" -c 12 -n 32 2>&1 >/dev/null); rc=$?
if [ "$rc" -ne 0 ] || ! printf '%s' "$err" | grep -q "stopped at the context limit"; then echo "FAIL context limit not reported (rc=$rc): $err"; fails=$((fails + 1)); else echo "ok   context limit reported"; fi
arch=$("$LEANLM" info -m smollm2 2>&1)
if ! printf '%s' "$arch" | grep -q "llama"; then echo "FAIL -m smollm2 (short name):"; echo "$arch"; fails=$((fails + 1)); else echo "ok   -m smollm2 finds the installed model"; fi
echo "$((5 - fails)) passed, $fails failed"
[ "$fails" -eq 0 ]
