#!/usr/bin/env bash
# Runs the test suite (or the tests named after RUNS) RUNS times in a row while `stress --cpu N` keeps
# every core busy, to show the suite does not depend on a quiet machine. Stops at the first failing
# run. Every run gets its own temporary directory (removed after); stress is stopped on exit.
#
#   scripts/suite_under_load.sh 20                       # the whole suite, 20 times
#   scripts/suite_under_load.sh 20 tests/run tests/index # only these folders
#
# Needs `stress` (Debian: apt-get install stress). PYTHON picks the interpreter (default: python3).
set -euo pipefail
runs="${1:?usage: $0 RUNS [PYTEST ARGS...]}"
shift
python="${PYTHON:-python3}"
cpus="${STRESS_CPUS:-$(nproc)}"
command -v stress >/dev/null || { echo "$0: needs stress (apt-get install stress)" >&2; exit 2; }
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
stress --cpu "$cpus" >/dev/null 2>&1 &
stress_pid=$!
trap 'pkill -P "$stress_pid" 2>/dev/null; kill "$stress_pid" 2>/dev/null; wait "$stress_pid" 2>/dev/null; rm -rf "$work"' EXIT
echo "stress --cpu $cpus running (pid $stress_pid); $runs run(s) of: pytest ${*:-(whole suite)}"
for i in $(seq 1 "$runs"); do
    start=$(date +%s)
    if "$python" -m pytest -q -p no:cacheprovider --basetemp "$work/run$i" "$@" >"$work/log" 2>&1; then
        echo "run $i/$runs: $(tail -1 "$work/log") (wall $(( $(date +%s) - start )) s)"
        rm -rf "$work/run$i"
    else
        echo "run $i/$runs FAILED after $(( $(date +%s) - start )) s:"
        grep -E "^(FAILED|ERROR)" "$work/log" || true
        sed -n '/^=* \(FAILURES\|ERRORS\) =*$/,$p' "$work/log" | head -200
        [ -s "$work/log" ] && grep -q "FAILURES\|ERRORS" "$work/log" || tail -30 "$work/log"
        exit 1
    fi
done
echo "all $runs runs passed under stress --cpu $cpus"
