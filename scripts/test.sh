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
# NIBBLE_PYTHON: also the Python extension, laid out as a package in build/release/python.
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release -DNIBBLE_WERROR=ON \
  -DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DNIBBLE_PYTHON=ON \
  -DPython_EXECUTABLE="$NIBBLE_HOME/venv/bin/python" >/dev/null
cmake --build build/release

echo "== unit tests"
(cd build/release && ctest --output-on-failure -j2)

echo "== parity tests (Python references)"
# NIBBLE_TEST_WHEEL: also `pip wheel .` (the package as users install it) into build/wheel and
# run the wheel; ccache makes a rebuild cheap.
NIBBLE_BIN="$here/build/release/nibble" NIBBLE_REQUIRE_PYTHON=1 NIBBLE_TEST_WHEEL=1 \
  "$NIBBLE_HOME/venv/bin/python" -m pytest -q tests/python

echo "== unit tests under AddressSanitizer + UBSan"
cmake -S . -B build/asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DNIBBLE_WERROR=ON -DNIBBLE_SANITIZE=ON \
  -DNIBBLE_BENCH=OFF -DCMAKE_CXX_COMPILER_LAUNCHER=ccache >/dev/null
cmake --build build/asan --target nibble_tests
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 build/asan/nibble_tests \
  --gtest_brief=1

# CUDA backend: compile check only (sm_90a; nothing runs without a GPU). GPU tests and benchmarks
# run on a GPU machine with tests/gpu/run and bench/gpu/run.
nvcc_path="$(command -v nvcc || true)"
if [[ -z "$nvcc_path" && -x /usr/local/cuda/bin/nvcc ]]; then nvcc_path=/usr/local/cuda/bin/nvcc; fi
if [[ -n "$nvcc_path" ]]; then
  echo "== CUDA backend (compile check, sm_90a)"
  CUDACXX="$nvcc_path" cmake -S . -B build/cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DNIBBLE_WERROR=ON \
    -DNIBBLE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a -DCMAKE_CXX_COMPILER_LAUNCHER=ccache \
    -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache >/dev/null
  cmake --build build/cuda --target nibble_cuda nibble_gpu_tests nibble_gpu_bench nibble_gpu_decode
fi

echo "== fuzz targets (libFuzzer, ASan + UBSan), ${NIBBLE_FUZZ_SECONDS:-20} s each"
bash fuzz/run.sh "${NIBBLE_FUZZ_SECONDS:-20}"
