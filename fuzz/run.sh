#!/usr/bin/env bash
# run.sh -- run libFuzzer targets for a while each and print the totals.
#
#   fuzz/run.sh OUT_DIR SECONDS NAME...
#
# OUT_DIR/fuzz_NAME (built by `make fuzz`) runs for SECONDS on
# OUT_DIR/NAME/corpus, a fresh copy of fuzz/corpus/NAME/, so what it finds
# never lands in the committed corpus; the seeds run first, as regression
# inputs. Dictionary: fuzz/NAME.dict if there is one, else fuzz/json.dict.
# The whole output goes to OUT_DIR/NAME/fuzz.log. A crash, leak, timeout or
# failed CHECK saves its input under OUT_DIR/NAME/ and prints that path.
#
# One line per target, then exactly "N passed, N failed" (one per target).
# The exit status is non-zero when any target failed.
set -uo pipefail

if [ $# -lt 3 ]; then
  echo "usage: $0 OUT_DIR SECONDS NAME..." >&2
  exit 2
fi
out_dir=$1
seconds=$2
shift 2

cd "$(dirname "$0")/.." || exit 2
case $out_dir in /*) ;; *) out_dir=$(pwd)/$out_dir ;; esac

passed=0
failed=0
for name in "$@"; do
  bin=$out_dir/fuzz_$name
  dir=$out_dir/$name
  log=$dir/fuzz.log
  rm -rf "$dir"
  mkdir -p "$dir/corpus"
  [ -d "fuzz/corpus/$name" ] && cp fuzz/corpus/"$name"/* "$dir/corpus/" 2>/dev/null
  seeds=$(find "$dir/corpus" -type f | wc -l)
  dict=fuzz/$name.dict
  [ -f "$dict" ] || dict=fuzz/json.dict

  # -timeout: an input that takes 10 s is a hang. Leaks are on by default.
  "$bin" "$dir/corpus" -max_total_time="$seconds" -timeout=10 -dict="$dict" \
    -artifact_prefix="$dir/" -print_final_stats=1 >"$log" 2>&1
  rc=$?

  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  cov=$(grep -E '^#[0-9]+' "$log" | tail -n 1 | sed -n 's/.*cov: \([0-9]*\) ft: \([0-9]*\) corp: \([0-9]*\).*/cov \1, ft \2, corpus \3/p')
  stats="${runs:-?} runs, ${eps:-?} exec/s, ${cov:-no coverage line}, $seeds seeds"
  if [ "$rc" -eq 0 ]; then
    echo "fuzz: $name: ok, ${seconds} s: $stats"
    passed=$((passed + 1))
  else
    # The report, from its first line (a failed CHECK, a sanitizer, libFuzzer),
    # as plain text (cat -v): it may quote the input's bytes.
    first=$(grep -a -n -m 1 -E 'CHECK\(|==[0-9]+==ERROR|runtime error:|ERROR: libFuzzer' "$log" |
            cut -d: -f1)
    echo "== $name (status $rc): from $log"
    if [ -n "$first" ]; then
      sed -n "$((first > 1 ? first - 1 : 1)),$((first + 60))p" "$log" | cat -v
    else
      tail -n 60 "$log" | cat -v
    fi
    input=$(sed -n 's/.*Test unit written to //p' "$log" | tail -n 1)
    echo "fuzz: $name: FAILED (status $rc): $stats"
    if [ -n "$input" ]; then
      echo "fuzz: $name: input saved as $input; replay: $bin $input"
    fi
    failed=$((failed + 1))
  fi
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
