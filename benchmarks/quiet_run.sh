#!/bin/bash
# Run a benchmark alone on a shared machine: every other Python process is stopped (SIGSTOP,
# re-checked each second, so processes started meanwhile are stopped too) while "$@" runs, and
# continued (SIGCONT) after it. Usage: bash benchmarks/quiet_run.sh python benchmarks/decode.py ...
"$@" &
bench=$!
list=$(mktemp)
trap 'for p in $(cat "$list"); do kill -CONT "$p" 2>/dev/null; done; rm -f "$list"' EXIT
while kill -0 "$bench" 2>/dev/null; do
  for p in $(pgrep -x 'python|python3|python3.11|python3.12'); do
    [ "$p" = "$bench" ] && continue
    [ "$(ps -o ppid= -p "$p" | tr -d ' ')" = "$bench" ] && continue
    grep -qx "$p" "$list" || { kill -STOP "$p" 2>/dev/null && echo "$p" >> "$list"; }
  done
  sleep 1
done
wait "$bench"
rc=$?
echo "stopped meanwhile: $(tr '\n' ' ' < "$list")" >&2
exit $rc
