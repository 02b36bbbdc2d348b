#!/usr/bin/env python3
"""Quality of every online quantization method on one unquantized model.

For each method, runs `nibble validate` (perplexity on wikitext-2-raw-test windows of 512
tokens, KL divergence and top-1 agreement against the same model unquantized) and prints a
markdown table. Example (from the repository root):

    nibble convert ~/.cache/nibble/models/SmolLM2-135M-Instruct.Q4_1.gguf --out smol-bf16
    NIBBLE_DATA=<data folder> python3 bench/online_quant_quality.py --model smol-bf16 \
        --max-windows 16 --out-dir quality/
"""
import argparse
import json
import os
import subprocess
import sys
import time

QUANTIZATION = ["fp8", "w8a8_fp8", "w8a8_int8", "int4", "q8_0", "q4_0", "q4_k", "bitsandbytes"]
TORCHAO = ["int8wo", "int8dq", "fp8wo", "fp8dq-per_tensor", "fp8dq-per_row", "int4wo-32",
           "int4wo-64", "int4wo-128", "int4wo-256"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="unquantized HF model directory")
    ap.add_argument("--nibble", default="build/release/nibble")
    ap.add_argument("--max-windows", type=int, default=16)
    ap.add_argument("--out-dir", default="online-quality")
    ap.add_argument("--methods", default="", help="comma-separated subset (default: all)")
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    wanted = set(filter(None, args.methods.split(",")))
    runs = [("--quantization", m) for m in QUANTIZATION] + [("--torchao-config", m) for m in TORCHAO]
    rows = []
    for flag, method in runs:
        if wanted and method not in wanted:
            continue
        out = os.path.join(args.out_dir, f"{method}.json")
        start = time.time()
        cmd = [args.nibble, "validate", "--model", args.model, "--reference", args.model, flag,
               method, "--max-windows", str(args.max_windows), "--json", out]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.time() - start
        if not os.path.exists(out):
            print(f"{method}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            rows.append(f"| {flag} {method} | failed | | | | |")
            continue
        r = json.load(open(out))
        ref = r["reference_ppl"]["ppl"]
        ppl = r["model_ppl"]["ppl"]
        rows.append(
            f"| `{flag} {method}` | {r['bits_per_weight']:.2f} | "
            f"{ppl:.3f} ({100 * (ppl / ref - 1):+.2f}%) | {r['kld']['mean']:.5f} | "
            f"{r['top1_agreement']:.4f} | {'pass' if r['passed'] else 'FAIL'} |")
        print(rows[-1], f"({seconds:.0f} s)", file=sys.stderr, flush=True)
    print(f"Reference perplexity: {ref:.3f}; {r['tokens']} tokens in {r['windows']} windows of "
          f"{r['context']}.\n")
    print("| method | bits/weight (blocks) | ppl (vs unquantized) | mean KLD | top-1 | gate |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
