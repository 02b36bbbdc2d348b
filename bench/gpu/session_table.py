"""Summarises nibble_gpu_bench CSV lines: µs and TB/s of the bytes streamed (weights, or K and V
for attention), one line per (kernel, shape, M, path). Usage: session_table.py bench.csv"""
import csv
import sys


def main(path):
    print("| kernel | K×N (attention: context×batch) | M | path | µs | TB/s |")
    print("|---|---|---|---|---|---|")
    with open(path) as f:
        for row in csv.reader(f):
            if len(row) != 7 or row[0] == "kernel":
                if row and row[0] != "kernel":
                    print("<!-- " + ",".join(row) + " -->")
                continue
            kernel, k, n, m, us, nbytes, kpath = row
            tbs = float(nbytes) / (float(us) * 1e-6) / 1e12
            print(f"| {kernel} | {k}×{n} | {m} | {kpath} | {float(us):.1f} | {tbs:.2f} |")


if __name__ == "__main__":
    main(sys.argv[1])
