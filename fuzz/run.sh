#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan, no NDEBUG) in build/fuzz and runs each for a
# bounded time, starting from the seeds in fuzz/corpus/<target>/ plus whatever earlier runs
# found (build/fuzz/work/corpus/<target>/). A crash, sanitizer report, assert/abort, timeout,
# out-of-memory or unexpected exception stops that target; the script runs the others and
# exits non-zero, naming each reproducer (build/fuzz/work/crashes/<target>/...).
# Reproduce one: build/fuzz/fuzz/<target> <reproducer file>
# Usage: fuzz/run.sh [seconds per target (default 30)] [target ...]   (default: every target)
# NIBBLE_FUZZ_FORK=N runs N worker processes per target (libFuzzer -fork=N) on a machine with
# cores to spare; NIBBLE_FUZZ_BUILD picks the build directory.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
seconds="${1:-30}"
shift || true
build="${NIBBLE_FUZZ_BUILD:-build/fuzz}"
work="$build/work"
if (($#)); then
  targets=("$@")
else
  mapfile -t targets < <(cd fuzz && ls fuzz_*.cc | sed 's/\.cc$//')
fi

launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Fuzz -DNIBBLE_FUZZ=ON \
  -DNIBBLE_TESTS=OFF -DNIBBLE_BENCH=OFF "${launcher[@]}" >/dev/null
cmake --build "$build" --target "${targets[@]}"

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
failed=()
for target in "${targets[@]}"; do
  corpus="$work/corpus/$target"
  crashes="$work/crashes/$target"
  log="$work/logs/$target.log"
  mkdir -p "$corpus" "$crashes" "$(dirname "$log")"
  options=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
    -artifact_prefix="$crashes/")
  [ -f "fuzz/dict/$target.dict" ] && options+=(-dict="fuzz/dict/$target.dict")
  [ "${NIBBLE_FUZZ_FORK:-0}" -gt 0 ] && options+=(-fork="$NIBBLE_FUZZ_FORK")
  echo "== $target: ${seconds}s"
  if "$build/fuzz/$target" "${options[@]}" "$corpus" "fuzz/corpus/$target" >"$log" 2>&1; then
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
    echo "   ok: ${execs:-?} inputs, corpus $(ls "$corpus" | wc -l) files"
  else
    failed+=("$target")
    echo "   FAILED, see $log"
    grep -m1 -E "ERROR|runtime error|uncaught|terminate|deadly signal|timeout|out-of-memory" "$log" \
      | sed 's/^/   /' || true
    ls -t "$crashes" | head -3 | sed "s|^|   reproducer: $crashes/|"
  fi
done
if ((${#failed[@]})); then
  echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: all ${#targets[@]} targets ran ${seconds}s without a crash"
