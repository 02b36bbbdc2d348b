"""PyTorch's kernels on the shapes nibble_gpu_bench measures, with the same protocol: weights in
enough copies to exceed 200 MB, calls rotating through them, median of 15 samples of 20
back-to-back calls between CUDA events after 3 warm-up samples. CSV like nibble_gpu_bench."""
import argparse
import math
import sys

import torch

ROTATE_BYTES = 200 << 20


def median_us(call, copies):
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    samples, index = [], 0
    for sample in range(3 + 15):
        start.record()
        for _ in range(20):
            call(index % copies)
            index += 1
        stop.record()
        stop.synchronize()
        if sample >= 3:
            samples.append(start.elapsed_time(stop) * 1000.0 / 20)
    samples.sort()
    return samples[len(samples) // 2]


def copies_for(nbytes):
    return max(1, math.ceil(ROTATE_BYTES / nbytes))


def report(kernel, k, n, m, us, nbytes, path):
    print(f"{kernel},{k},{n},{m},{us:.2f},{nbytes},{path}", flush=True)


def parse_list(text):
    return [int(v) for v in text.replace("x", ",").split(",") if v]


def bench_shape(k, n, ms, only):
    dev = "cuda"
    wanted = lambda name: not only or name in only
    x_full = torch.randn(max(ms), k, device=dev, dtype=torch.bfloat16)
    if wanted("bf16"):
        nbytes = n * k * 2
        ws = [torch.randn(n, k, device=dev, dtype=torch.bfloat16) * 0.02 for _ in range(copies_for(nbytes))]
        for m in ms:
            x = x_full[:m]
            report("torch_bf16", k, n, m, median_us(lambda i: torch.nn.functional.linear(x, ws[i]), len(ws)), nbytes, "cublas")
        del ws
    if wanted("fp8"):
        nbytes = n * k
        ws = [(torch.randn(n, k, device=dev) * 0.5).to(torch.float8_e4m3fn) for _ in range(copies_for(nbytes))]
        one = torch.ones((), device=dev, dtype=torch.float32)
        for m in ms:
            x8 = x_full[:m].to(torch.float8_e4m3fn)
            row_a = torch.ones(m, 1, device=dev, dtype=torch.float32)
            row_b = torch.ones(1, n, device=dev, dtype=torch.float32)
            for name, sa, sb in (("torch_scaled_mm_tensor", one, one), ("torch_scaled_mm_rowwise", row_a, row_b)):
                for fast in (False, True):
                    try:
                        us = median_us(lambda i: torch._scaled_mm(x8, ws[i].t(), scale_a=sa, scale_b=sb,
                                                                  out_dtype=torch.bfloat16, use_fast_accum=fast), len(ws))
                        report(name + ("_fast" if fast else ""), k, n, m, us, nbytes, "cublasLt")
                    except Exception as e:  # noqa: BLE001 - report and go on
                        print(f"{name}: {e}", file=sys.stderr)
        del ws
    if wanted("w4a16"):
        group = 128
        nbytes = n * k // 2 + (k // group) * n * 2 * 2
        try:
            packed = []
            for _ in range(copies_for(nbytes)):
                codes = torch.randint(0, 16, (n, k), device=dev, dtype=torch.int32)
                u8 = (codes[:, ::2] << 4 | codes[:, 1::2]).to(torch.uint8)
                packed.append(torch._convert_weight_to_int4pack(u8, 8))
            sz = torch.rand(k // group, n, 2, device=dev, dtype=torch.bfloat16) * 0.01
            for m in ms:
                x = x_full[:m]
                us = median_us(lambda i: torch._weight_int4pack_mm(x, packed[i], group, sz), len(packed))
                report("torch_int4pack_g128", k, n, m, us, nbytes, "tinygemm")
        except Exception as e:  # noqa: BLE001
            print(f"torch_int4pack: {e}", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shapes", default="4096x6144,4096x4096,4096x28672,14336x4096")
    parser.add_argument("--ms", default="1,16,64,256,2048")
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    dims, ms = parse_list(args.shapes), parse_list(args.ms)
    print("kernel,K,N,M,us,weight_bytes,path")
    for i in range(0, len(dims) - 1, 2):
        bench_shape(dims[i], dims[i + 1], ms, args.only)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
