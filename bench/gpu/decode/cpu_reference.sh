#!/usr/bin/env bash
# nibble's CPU logits for the GPU schemes that share its quantization grid, on a small checkpoint
# that travels to a GPU machine beside them (the `tiny` preset of make_reference.py):
#   bf16       → the CPU in f32 on the same bf16 weights
#   fp8        → --quantization fp8 --quantize-lm-head (per-channel e4m3, per-token activations)
#   w8a8-int8  → --quantization w8a8_int8 --quantize-lm-head (RTN int8 per row, per-token int8)
# Writes DIR/cpu-<scheme>.f32 (prompt logits, f32 [prompt][vocab]) and DIR/cpu-<scheme>.json
# (prompt_tokens, dump_tokens: 32 greedy tokens), the --other-* inputs of compare.py.
# Usage: cpu_reference.sh CHECKPOINT_DIR NIBBLE_BINARY PYTHON [PROMPT_TOKENS]
set -euo pipefail
dir="$1" nibble="$2" python="$3" prompt="${4:-1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "[[${prompt}]]" >"$work/prompts.json"
declare -A args=([bf16]="--dtype float32" [fp8]="--dtype float32 --quantization fp8 --quantize-lm-head"
  [w8a8-int8]="--dtype float32 --quantization w8a8_int8 --quantize-lm-head")
for scheme in bf16 fp8 w8a8-int8; do
  # shellcheck disable=SC2086
  "$nibble" logits -m "$dir" --prompts "$work/prompts.json" --out "$work/$scheme" --greedy 32 \
    ${args[$scheme]} >/dev/null
  "$python" - "$work/$scheme" "$dir" "$scheme" "$prompt" <<'PY'
import json, sys
import numpy as np
src, out, scheme, prompt = sys.argv[1:5]
np.load(f"{src}/logits_0.npy").astype(np.float32).tofile(f"{out}/cpu-{scheme}.f32")
json.dump({"prompt_tokens": [int(t) for t in prompt.split(",")],
           "dump_tokens": np.load(f"{src}/greedy_0.npy").astype(int).tolist()},
          open(f"{out}/cpu-{scheme}.json", "w"))
PY
  echo "cpu-$scheme written"
done
