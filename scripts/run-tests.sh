#!/usr/bin/env bash
# run-tests.sh -- run the cmocka unit test binaries, then the integration tests
# (pytest, against the real servers), and print the totals.
#
#   scripts/run-tests.sh [--unit-only] BIN_DIR [UNIT_TEST_BINARY...]
#   scripts/run-tests.sh --compose      (make compose-test: tests/compose only)
#
# Each unit binary runs on its own (its output is shown when it fails); its
# counts come from cmocka's "[  PASSED  ] N test(s)." and "[  FAILED  ] N
# test(s)" lines (a binary that dies before its summary counts as one
# failure). Unless --unit-only,
# `python3 -m pytest -q tests/integration` then runs with SF_BIN=BIN_DIR and
# its counts are added (errors count as failures).
#
# The last line is always exactly "N passed, N failed". The exit status is
# non-zero when anything failed or when no test ran at all.
set -uo pipefail

unit_only=0
pytest_dir=tests/integration
if [ "${1:-}" = "--unit-only" ]; then
  unit_only=1
  shift
elif [ "${1:-}" = "--compose" ]; then
  # The compose test builds its own images: no binaries, no unit tests.
  pytest_dir=tests/compose
  set -- build/bin
fi
if [ $# -lt 1 ]; then
  echo "usage: $0 [--unit-only] BIN_DIR [UNIT_TEST_BINARY...] | $0 --compose" >&2
  exit 2
fi
bin_dir=$1
shift

cd "$(dirname "$0")/.." || exit 2
repo=$(pwd)
case $bin_dir in /*) ;; *) bin_dir=$repo/$bin_dir ;; esac

passed=0
failed=0
out=$(mktemp)
trap 'rm -f "$out"' EXIT

# --- unit tests (cmocka) ---------------------------------------------------------
for t in "$@"; do
  name=$(basename "$t")
  # cmocka's default output, whatever the caller's environment says.
  CMOCKA_MESSAGE_OUTPUT=stdout "$t" >"$out" 2>&1
  rc=$?
  p=$(sed -n 's/^\[  PASSED  \] \([0-9][0-9]*\) test(s)\..*/\1/p' "$out" | awk '{s+=$1} END {print s+0}')
  f=$(sed -n 's/^\[  FAILED  \] \([0-9][0-9]*\) test(s).*/\1/p' "$out" | awk '{s+=$1} END {print s+0}')
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    # Crashed, or failed outside a test (setup, a sanitizer at exit...).
    echo "run-tests: $name exited with status $rc without a cmocka failure count: counted as 1 failure" >&2
    f=1
  fi
  if [ "$rc" -eq 0 ] && [ "$p" -eq 0 ] && [ "$f" -eq 0 ]; then
    echo "run-tests: $name ran no test (no cmocka summary)" >&2
  fi
  # The whole output only when something is wrong; a line otherwise.
  if [ "$rc" -ne 0 ] || [ "$f" -ne 0 ] || [ "$p" -eq 0 ]; then
    echo "== $name (status $rc)"
    cat "$out"
  fi
  echo "== $name: $p passed, $f failed"
  passed=$((passed + p))
  failed=$((failed + f))
done

# --- integration tests (pytest) ------------------------------------------------------
if [ "$unit_only" -eq 0 ]; then
  echo "== integration tests ($pytest_dir, SF_BIN=$bin_dir)"
  # -p no:cacheprovider: no .pytest_cache in the checkout. -rfE lists what failed.
  SF_BIN=$bin_dir /usr/bin/python3 -m pytest -q -rfE -p no:cacheprovider "$pytest_dir" 2>&1 | tee "$out"
  rc=${PIPESTATUS[0]}
  summary=$(grep -E '^=*.*[0-9]+ (passed|failed|errors?|skipped|deselected|xfailed|xpassed)' "$out" | tail -n 1)
  count() { echo "$summary" | grep -oE "[0-9]+ $1" | awk '{s+=$1} END {print s+0}'; }
  p=$(count passed)
  f=$(( $(count failed) + $(count 'errors?') ))
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    # pytest itself failed (usage error, crash, interrupted, no tests collected).
    echo "run-tests: pytest exited with status $rc without a failure count: counted as 1 failure" >&2
    f=1
  fi
  passed=$((passed + p))
  failed=$((failed + f))
fi

status=0
if [ "$failed" -ne 0 ]; then
  status=1
elif [ "$passed" -eq 0 ]; then
  echo "run-tests: no test ran" >&2
  status=1
fi
echo "$passed passed, $failed failed"
exit "$status"
