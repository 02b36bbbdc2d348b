"""Compares nibble_gpu_decode's logits dump and tokens with a reference.

    python3 compare.py --vocab V --nibble-logits A.f32 --nibble-json A.json
        (--reference DIR/reference.npz | --other-logits B.f32 --other-json B.json) [--steps 32]

With --reference (transformers, make_reference.py): per prompt position, ‖a − b‖/‖b‖ of nibble's
logits against transformers' bf16 logits and both against the f32 model's, argmax agreement,
then the greedy tokens of the first --steps steps, and the logits of the generated steps while
the tokens agree. With --other-*: the same between two nibble runs (w4a16 against w4a16-ref).
Prints one JSON object; exit status 1 if a prompt position's argmax differs or the relative error
exceeds --max-rel (default 0.05: bf16 activations through the whole model), or tokens differ
before a step whose top-2 gap is above --tie-gap.
"""

import argparse
import json
import sys

import numpy as np


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vocab", type=int, required=True)
    ap.add_argument("--nibble-logits", required=True)
    ap.add_argument("--nibble-json", required=True)
    ap.add_argument("--reference")
    ap.add_argument("--other-logits")
    ap.add_argument("--other-json")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--max-rel", type=float, default=0.05)
    ap.add_argument("--tie-gap", type=float, default=0.0625)
    args = ap.parse_args()

    a = np.fromfile(args.nibble_logits, dtype=np.float32).reshape(-1, args.vocab)
    a_json = json.load(open(args.nibble_json))
    prompt_len = len(a_json["prompt_tokens"])
    a_tokens = np.array(a_json["dump_tokens"])
    out = {"label": args.nibble_json}
    if args.reference:
        ref = np.load(args.reference)
        b_prompt = ref["prompt_logits_bf16"]
        f32 = ref["prompt_logits_f32"]
        b_tokens = ref["tokens"]
        b_steps = ref["step_logits"]
        gaps = ref["top2_gap"]
        out["vs"] = "transformers"
        out["rel_vs_transformers_bf16"] = [rel(a[p], b_prompt[p]) for p in range(prompt_len)]
        out["rel_vs_f32"] = [rel(a[p], f32[p]) for p in range(prompt_len)]
        out["rel_transformers_bf16_vs_f32"] = [rel(b_prompt[p], f32[p]) for p in range(prompt_len)]
        out["argmax_equal_f32"] = [
            bool(a[p].argmax() == f32[p].argmax()) for p in range(prompt_len)
        ]
    else:
        b_all = np.fromfile(args.other_logits, dtype=np.float32).reshape(-1, args.vocab)
        b_json = json.load(open(args.other_json))
        b_prompt = b_all[:prompt_len]
        b_tokens = np.array(b_json["dump_tokens"])
        b_steps = b_all[prompt_len - 1 :]
        top2 = np.sort(b_steps, axis=1)[:, -2:]
        gaps = top2[:, 1] - top2[:, 0]
        out["vs"] = args.other_json
        out["rel_vs_other"] = [rel(a[p], b_prompt[p]) for p in range(prompt_len)]
    out["argmax_equal"] = [bool(a[p].argmax() == b_prompt[p].argmax()) for p in range(prompt_len)]
    steps = min(args.steps, len(a_tokens), len(b_tokens))
    same = [bool(a_tokens[i] == b_tokens[i]) for i in range(steps)]
    first_diff = same.index(False) if False in same else None
    out["tokens_compared"] = steps
    out["tokens_equal"] = sum(same)
    out["first_divergence"] = first_diff
    if first_diff is not None:
        out["top2_gap_at_divergence"] = float(gaps[first_diff])
    agree = steps if first_diff is None else first_diff + 1
    rows = min(agree, len(b_steps), a.shape[0] - (prompt_len - 1))
    out["step_rel_max"] = max(rel(a[prompt_len - 1 + s], b_steps[s]) for s in range(rows))
    out["min_top2_gap"] = float(np.min(gaps[:steps]))
    rel_key = "rel_vs_transformers_bf16" if args.reference else "rel_vs_other"
    ok = all(out["argmax_equal"]) and max(out[rel_key]) <= args.max_rel
    if first_diff is not None and gaps[first_diff] > args.tie_gap:
        ok = False
    out["ok"] = ok
    print(json.dumps(out))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
