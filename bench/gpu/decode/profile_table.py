#!/usr/bin/env python3
"""Markdown tables of nibble_gpu_decode's --profile-steps and sweep results (from its --json)."""
import argparse
import json


def profile_rows(profile):
    rows = ["| op | ms/step | share | calls/step | µs/call | weight GB/s |", "|---|---|---|---|---|---|"]
    for op in profile["ops"]:
        gbps = f"{op['weight_gb_per_s']:.0f}" if op["weight_bytes_per_step"] > 1e6 else ""
        rows.append(
            f"| {op['op']} | {op['ms_per_step']:.3f} | {100 * op['share']:.1f}% | "
            f"{op['calls_per_step']:.0f} | {op['us_per_call']:.1f} | {gbps} |"
        )
    rows.append(f"| total (eager, events) | {profile['step_ms']:.3f} | | | | |")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("json", nargs="+")
    args = parser.parse_args()
    for path in args.json:
        d = json.load(open(path))
        print(f"### {d['scheme']}: {d['tokens_per_s']:.1f} tokens/s, step {d['step_ms']:.3f} ms "
              f"(graph), runs_tokens_equal {d['runs_tokens_equal']}, "
              f"eager_tokens_equal {d.get('eager_tokens_equal')}")
        if "profile" in d:
            print("\n".join(profile_rows(d["profile"])))
        for key, knob in (("sweep_gemv_ctas", "gemv_ctas_per_sm"),
                          ("sweep_gemv_units", "gemv_units_per_split"),
                          ("sweep_attention_partition", "attention_min_partition"),
                          ("sweep_gemv_pdl", "gemv_programmatic_launch"),
                          ("sweep_gemv_bulk", "gemv_bulk"),
                          ("sweep_bulk_units", "bulk_units_per_warp"),
                          ("sweep_bulk_stages", "bulk_stages"),
                          ("sweep_bulk_ctas", "bulk_ctas_per_sm"),
                          ("sweep_fusion", "fuse_small_ops")):
            if key not in d:
                continue
            ops = sorted({op["op"] for p in d[key] if "profile" in p for op in p["profile"]["ops"]})
            print(f"\n{knob} sweep")
            head = ["value", "tokens/s", "step ms", "tokens = default"] + [f"{o} ms" for o in ops]
            print("| " + " | ".join(head) + " |")
            print("|" + "---|" * len(head))
            for p in d[key]:
                if "error" in p:
                    print(f"| {p[knob]} | error: {p['error']} |")
                    continue
                per_op = {op["op"]: op["ms_per_step"] for op in p.get("profile", {}).get("ops", [])}
                cells = [str(p[knob]), f"{p['tokens_per_s']:.1f}", f"{p['step_ms']:.3f}",
                         str(p["tokens_equal_default"])]
                cells += [f"{per_op[o]:.3f}" if o in per_op else "" for o in ops]
                print("| " + " | ".join(cells) + " |")
        print()


if __name__ == "__main__":
    main()
