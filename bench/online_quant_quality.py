#!/usr/bin/env python3
"""Quality of every quantization method on one model: the SmolLM2 table of docs/quantization.md.

Runs `nibble validate` twice against the unquantized model (the reference): once with every
online method side by side (`--quantization a,b,... --torchao-config c,d,...`, the reference's
perplexity and task scores computed once), once for a pre-quantized GGUF. Each run scores
perplexity on the first --max-windows windows of 512 tokens of wikitext-2-raw-test, the exact
KL divergence and top-1 agreement against the reference, the first --limit items of each task,
and the relative weight error of every linear layer. Prints a markdown table and leaves the
JSON and the HTML reports in --out-dir. Example (from the repository root):

    NIBBLE_DATA=../shared/data nice -n 10 python3 bench/online_quant_quality.py --out-dir quality/

Without --model, the default model (the shipped SmolLM2-135M-Instruct Q4_1 GGUF) is converted
to a bf16 HF directory in --out-dir with `nibble convert` and used as the reference.
"""
import argparse
import concurrent.futures
import json
import os
import pathlib
import subprocess
import sys
import time

QUANTIZATION = ["fp8", "w8a8_fp8", "w8a8_int8", "int4", "q8_0", "q4_0", "q4_k", "bitsandbytes"]
TORCHAO = ["int8dq", "int8wo", "fp8wo", "fp8dq-per_tensor", "fp8dq-per_row", "int4wo-128"]
DEFAULT_GGUF = (pathlib.Path(os.environ.get("NIBBLE_HOME", pathlib.Path.home() / ".cache" / "nibble"))
                / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf")
TASK_NAMES = {"arc_easy": "ARC-Easy", "arc_challenge": "ARC-Challenge", "piqa": "PIQA",
              "hellaswag": "HellaSwag"}


def validate(args, models, methods, torchao, name):
    out = os.path.join(args.out_dir, f"{name}.json")
    cmd = [args.nibble, "validate", "--reference", args.model, "--max-windows",
           str(args.max_windows), "--tasks", args.tasks, "--limit", str(args.limit), "--json", out,
           "--report", os.path.join(args.out_dir, f"{name}.html")]
    for m in models:
        cmd += ["--model", m]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if methods:
        cmd += ["--quantization", ",".join(methods)]
    if torchao:
        cmd += ["--torchao-config", ",".join(torchao)]
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    start = time.time()
    try:  # exit 1: a gate failed, still a result
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, timeout=args.timeout or None)
    except subprocess.TimeoutExpired:
        print(f"{name}: killed after {args.timeout} s", file=sys.stderr, flush=True)
        return []
    print(f"{name}: {time.time() - start:.0f} s, exit {proc.returncode}", file=sys.stderr, flush=True)
    if not os.path.exists(out):
        print(f"{name}: nibble validate wrote no JSON (exit {proc.returncode}); its rows are "
              "missing from the table", file=sys.stderr, flush=True)
        return []
    result = json.load(open(out))
    return result.get("models", [result])


def acc_cells(tasks, key):
    return [f"{t[key + '_acc']:.3f} / {t[key + '_acc_norm']:.3f}" for t in tasks]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="unquantized HF model directory (the reference)")
    ap.add_argument("--gguf", default=str(DEFAULT_GGUF),
                    help="pre-quantized GGUF to add as a row ('' to skip)")
    ap.add_argument("--nibble", default="build/release/nibble")
    ap.add_argument("--max-windows", type=int, default=8)
    ap.add_argument("--limit", type=int, default=100, help="items per task")
    ap.add_argument("--tasks", default="arc_easy,hellaswag")
    ap.add_argument("--out-dir", default="online-quality")
    ap.add_argument("--methods", default="", help="comma-separated subset (default: all)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="split the methods over this many concurrent validate runs (each also "
                         "scores the reference; the numbers are the same)")
    ap.add_argument("--threads", type=int, default=0,
                    help="CPU threads of each validate run (0: all cores; with --jobs J, about "
                         "cores / (J + 1))")
    ap.add_argument("--timeout", type=float, default=0,
                    help="seconds after which a validate run is killed (its rows are left out)")
    ap.add_argument("--from-json", action="store_true",
                    help="rebuild the table from the JSON files a previous run left in --out-dir")
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    if not args.model:
        args.model = os.path.join(args.out_dir, "smol-bf16")
        if not os.path.exists(os.path.join(args.model, "config.json")):
            subprocess.run([args.nibble, "convert", str(DEFAULT_GGUF), "--out", args.model,
                            "--dtype", "bf16"], check=True, stdout=subprocess.DEVNULL)
    wanted = set(filter(None, args.methods.split(",")))
    methods = [m for m in QUANTIZATION if not wanted or m in wanted]
    torchao = [m for m in TORCHAO if not wanted or m in wanted]
    start = time.time()
    # Round-robin over both lists together, so that every run gets its share of methods.
    flagged = [(m, False) for m in methods] + [(m, True) for m in torchao]
    runs = [(f"online-{i}" if args.jobs > 1 else "online", [args.model],
             [m for m, ao in flagged[i::args.jobs] if not ao],
             [m for m, ao in flagged[i::args.jobs] if ao]) for i in range(args.jobs)]
    runs = [r for r in runs if r[2] or r[3]]
    if args.gguf:
        runs.append(("gguf", [args.gguf], [], []))
    if args.from_json:
        paths = [os.path.join(args.out_dir, f"{name}.json") for name, *_ in runs]
        results = [json.load(open(p)) for p in paths if os.path.exists(p)]
        results = [r.get("models", [r]) for r in results]
    else:
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(runs)) as pool:
            futures = [pool.submit(validate, args, models, q, t, name)
                       for name, models, q, t in runs]
            results = [f.result() for f in futures]
    order = {m: i for i, m in enumerate(methods + torchao)}
    reports = sorted((r for group in results for r in group),
                     key=lambda r: order.get(r["quantization"], len(order)))
    first = reports[0]
    tasks = [t["task"] for t in first["tasks"]]
    header = ["method", "bits/weight (blocks)", "ppl (vs bf16)", "mean KLD", "p99 KLD", "top-1"]
    header += [f"{TASK_NAMES.get(t, t)} acc / acc_norm" for t in tasks]
    header += ["max layer weight error", "gate"]
    print(f"Reference: {args.model}; {first['tokens']} scored tokens in {first['windows']} windows "
          f"of {first['context']}; {first['tasks'][0]['items'] if first['tasks'] else 0} items per "
          f"task; {time.time() - start:.0f} s.\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    ref_ppl = first["reference_ppl"]["ppl"]
    print("| " + " | ".join([f"bf16 (reference, {os.path.basename(args.model.rstrip('/'))})", "16",
                             f"{ref_ppl:.3f}", "0", "0", "1"] +
                            acc_cells(first["tasks"], "reference") + ["0", ""]) + " |")
    for r in reports:
        if r["quantization"]:
            flag = "--torchao-config" if r["quantization"] in TORCHAO else "--quantization"
            name = f"`{flag} {r['quantization']}`"
        else:
            name = f"`{os.path.basename(r['model'])}` as stored"
        ppl = r["model_ppl"]["ppl"]
        worst = max((l["relative_error"] for l in r["layers"]), default=float("nan"))
        print("| " + " | ".join([name, f"{r['bits_per_weight']:.2f}",
                                 f"{ppl:.3f} ({100 * (ppl / ref_ppl - 1):+.2f}%)",
                                 f"{r['kld']['mean']:.5f}", f"{r['kld']['p99']:.4f}",
                                 f"{r['top1_agreement']:.4f}"] + acc_cells(r["tasks"], "model") +
                                [f"{worst:.4f}", "pass" if r["passed"] else "FAIL"]) + " |")


if __name__ == "__main__":
    main()
