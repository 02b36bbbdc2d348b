"""Merges nibble_gpu_bench's and torch_baselines.py's CSVs into one markdown table: per shape and
M, each kernel's median µs with weight TB/s (M ≤ 64) or TFLOP/s (M > 64)."""
import csv
import sys

COLUMNS = [
    ("nibble_bf16", "nibble bf16 (cuBLASLt)"),
    ("torch_bf16", "torch bf16"),
    ("nibble_w4a16_g128", "nibble W4A16 g128"),
    ("torch_int4pack_g128", "torch int4pack g128"),
    ("nibble_w8a16_channel", "nibble W8A16"),
    ("nibble_fp8_tensor", "nibble fp8 tensor"),
    ("nibble_fp8_tensor_fast", "nibble fp8 tensor fast"),
    ("torch_scaled_mm_tensor", "torch _scaled_mm tensor"),
    ("torch_scaled_mm_tensor_fast", "torch _scaled_mm tensor fast"),
    ("nibble_fp8_rowwise", "nibble fp8 rowwise"),
    ("torch_scaled_mm_rowwise", "torch _scaled_mm rowwise"),
    ("nibble_fp8_rowwise_with_act_quant", "nibble fp8 rowwise + act quant"),
]


def main():
    best = {}
    for path in sys.argv[1:]:
        with open(path) as f:
            for row in csv.DictReader(line for line in f if "," in line):
                try:
                    key = (int(row["K"]), int(row["N"]), int(row["M"]), row["kernel"])
                    us = float(row["us"])
                except (KeyError, ValueError):
                    continue
                # Several paths of one kernel: keep the fastest, and say which.
                if key not in best or us < best[key][0]:
                    best[key] = (us, int(row["weight_bytes"]), row["path"])
    shapes = sorted({(k, n, m) for (k, n, m, _) in best}, key=lambda s: (s[0], s[1], s[2]))
    present = [c for c in COLUMNS if any(key[3] == c[0] for key in best)]
    print("| K×N | M | " + " | ".join(title for _, title in present) + " |")
    print("|---|---|" + "---|" * len(present))
    for k, n, m in shapes:
        cells = []
        for name, _ in present:
            if (k, n, m, name) not in best:
                cells.append("–")
                continue
            us, nbytes, path = best[(k, n, m, name)]
            if m <= 64:
                extra = f"{nbytes / us / 1e6:.2f} TB/s"
            else:
                extra = f"{2.0 * m * n * k / us / 1e6:.0f} TF/s"
            note = f" [{path}]" if name.startswith("nibble_w") else ""
            cells.append(f"{us:.1f} ({extra}){note}")
        print(f"| {k}×{n} | {m} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
