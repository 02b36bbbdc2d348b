#!/usr/bin/env bash
# Sets everything up and runs every test: format check, warnings-as-errors build, unit tests,
# the parity tests against the Python reference libraries, and the unit tests again under
# AddressSanitizer + UBSan.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
NIBBLE_HOME="${NIBBLE_HOME:-$HOME/.cache/nibble}"
export NIBBLE_HOME
# Fresh clones (CI) live at new paths: make ccache hash paths relative so they still hit.
export CCACHE_BASEDIR="$here" CCACHE_NOHASHDIR=true

bash scripts/setup.sh --no-build

echo "== format check"
mapfile -t sources < <(git ls-files '*.cc' '*.h')
clang-format --dry-run --Werror "${sources[@]}"

echo "== build (release, warnings as errors)"
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release -DNIBBLE_WERROR=ON \
  -DCMAKE_CXX_COMPILER_LAUNCHER=ccache >/dev/null
cmake --build build/release

echo "== unit tests"
(cd build/release && ctest --output-on-failure -j2)

echo "== parity tests (Python references)"
NIBBLE_BIN="$here/build/release/nibble" "$NIBBLE_HOME/venv/bin/python" -m pytest -q tests/python

echo "== unit tests under AddressSanitizer + UBSan"
cmake -S . -B build/asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DNIBBLE_WERROR=ON -DNIBBLE_SANITIZE=ON \
  -DNIBBLE_BENCH=OFF -DCMAKE_CXX_COMPILER_LAUNCHER=ccache >/dev/null
cmake --build build/asan --target nibble_tests
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 build/asan/nibble_tests \
  --gtest_brief=1
