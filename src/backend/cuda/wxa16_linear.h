#pragma once
// Weight-only quantized linear layers on the GPU: W4A16 and W8A16 (integer codes, per-group or
// per-channel scales in f32/f16/bf16, symmetric or with integer zero points), bf16 activations.
//
// The weight is repacked once at load (prepare_wxa16_weight) into "units" of 8 output rows × KU
// input columns (KU = 128 for 4-bit, 64 for 8-bit): 512 bytes, 16 per lane of a warp, ordered so
// that each lane's 16 bytes are exactly its B fragments of `mma.m16n8k16` for the whole unit.
// A warp streams a unit with one coalesced 16-byte load per lane and never shuffles.
//
// Four paths (wxa16_linear picks by M):
//  - BulkGemv (4- and 8-bit, M ≤ 8, sm_90+; wxa16_bulk_gemv.cu): decode. A persistent kernel whose
//    weights reach shared memory by bulk asynchronous copies through a ring of stages (one
//    producer thread per CTA keeps them in flight), decoded by eight consumer warps.
//  - Gemv (4- and 8-bit, M ≤ kWxA16GemvMaxM; w4a16_gemv.cu): decode. Each warp streams two tiles
//    through registers (the weight is the mma's A operand, x its B, so one mma covers 8 batch
//    rows), only the real rows of x sit in shared memory, split-K fills every SM.
//  - Stream (M ≤ kWxA16StreamMaxM): the tensor-core streaming kernel. Codes become bf16 in
//    registers (a magic-exponent OR, then one subtraction of 128+zero, exact), activations come
//    from shared memory through ldmatrix, products accumulate in f32 per group and are scaled
//    there. The grid splits K so that every SM streams (each split stores its f32 partial sums
//    in its own workspace slice; the last CTA of each column block adds the slices in split
//    order and writes bf16, so results are bit-identical run to run). M up to 64 is one pass
//    over the weight; larger M takes one pass per 64 rows.
//  - DequantGemm (larger M): dequantize the whole weight to bf16 into a workspace, then
//    cuBLASLt's bf16 GEMM (compute-bound there, so the extra pass is a small share).
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/device_buffer.h"
#include "backend/cuda/lt_gemm.h"
#include "quant/scheme.h"

namespace nibble::cuda {

inline constexpr int64_t kWxA16StreamMaxM = 128;
inline constexpr int64_t kWxA16GemvMaxM = 16;

enum class WxA16ScaleType : uint8_t { F32, F16, BF16 };

struct WxA16Weight {
  int bits = 4;            // 4 or 8
  int64_t rows = 0;        // N
  int64_t cols = 0;        // K
  int64_t n_tiles = 0;     // ⌈N / 8⌉
  int64_t k_units = 0;     // ⌈K / KU⌉
  int64_t group_size = 0;  // columns per scale (K for per-channel)
  int64_t n_groups = 0;    // scale columns per row, padded columns' groups included (scale 0)
  WxA16ScaleType scale_type = WxA16ScaleType::F32;
  int symmetric_zero = 0;  // the zero of every group when `zeros` is empty (8 / 128 / 0)
  // Codes are fp8 e4m3 bytes (bits 8, no zeros): FP8 W8A8, run only by the BulkGemv path, which
  // quantizes the activations per token as quantize_fp8_per_token does (fp8_linear.h).
  bool fp8 = false;
  DeviceBuffer codes;   // [n_tiles][k_units][32 lanes][16 bytes]
  DeviceBuffer scales;  // [n_tiles][n_groups][8] of scale_type (0 for padding rows)
  DeviceBuffer zeros;   // [n_tiles][n_groups][8] uint8, empty when symmetric
  // Act-order (GPTQ desc_act): the weight's columns are stored sorted by group, so that every
  // group is a contiguous run as the kernels expect; input_perm[j] (int32 [K]) is the input
  // column that stored column j multiplies. Empty for weights without g_idx.
  DeviceBuffer input_perm;

  int unit_cols() const { return bits == 4 ? 128 : 64; }
  int64_t padded_cols() const { return k_units * unit_cols(); }
  // Bytes the kernel must stream per call: codes, scales and zeros.
  size_t stream_bytes() const { return codes.bytes() + scales.bytes() + zeros.bytes(); }
};

// Repacks a QuantizedTensor with elem Int4/UInt4/Int8/UInt8 (or Fp8E4M3, see `fp8`), one scale per
// row per group
// (group size a multiple of 16 that divides or is a multiple of KU, or per-channel), integer or
// no zeros. A g_idx (act-order) must give every group exactly its group size of columns (the last
// group the rest), as GPTQ writes it; the columns are then stored in group order (input_perm).
// Anything else is an Error naming `what`.
WxA16Weight prepare_wxa16_weight(const quant::QuantizedTensor& weight, const char* what);

// Scratch owned by the caller (one per stream); grown on first use.
struct WxA16Workspace {
  DeviceBuffer partial_sums;  // f32 [splits][M][n_tiles * 8]: one slice per split-K split
  DeviceBuffer counters;      // int per column block, all zero between calls
  DeviceBuffer dequantized;   // bf16 [n_tiles * 8][padded_cols] for the DequantGemm path
  DeviceBuffer permuted_x;    // bf16 [M][K]: x in an act-order weight's column order
};

// x in the weight's stored column order: for an act-order weight, x gathered by input_perm into
// workspace.permuted_x; x itself otherwise. wxa16_linear and w4a16_gemv call it themselves.
const void* wxa16_permuted_input(const WxA16Weight& weight, const void* x, int64_t m,
                                 WxA16Workspace& workspace, cudaStream_t stream);

enum class WxA16Path : uint8_t { Auto, BulkGemv, Gemv, Stream, DequantGemm };

// y[M, N] (bf16, rows of N) = x[M, K] (bf16, rows of K) · dequant(W)ᵀ.
void wxa16_linear(LtGemm& lt, const WxA16Weight& weight, const void* x, int64_t m, void* y,
                  WxA16Workspace& workspace, cudaStream_t stream, WxA16Path path = WxA16Path::Auto);

// Whether the Gemv path takes this weight at this M (4- or 8-bit codes, groups of at least 32
// columns that divide a unit or span whole units, 1 ≤ M ≤ kWxA16GemvMaxM).
bool wxa16_gemv_supports(const WxA16Weight& weight, int64_t m);
// Whether Auto picks it: supported and groups spanning whole units (≥ 128 columns for 4-bit,
// ≥ 64 for 8-bit; with 4-bit g32/g64 it loads a scale per 32/64 columns per lane and measured 2×
// slower than the Stream kernel on an H100).
bool wxa16_gemv_preferred(const WxA16Weight& weight, int64_t m);
// The Gemv path alone (Error when !wxa16_gemv_supports).
void w4a16_gemv(const WxA16Weight& weight, const void* x, int64_t m, void* y,
                WxA16Workspace& workspace, cudaStream_t stream);

// The input of a BulkGemv call, computed while the kernel stages it (decode fusions: one launch
// instead of two, and no round trip of x through memory):
//  - Plain: x [M][K].
//  - ResidualRmsNorm: x = bf16(norm_weight · bf16(h · rsqrt(mean(h²) + eps))) per row, with
//    h = bf16(x + delta) (h = x when delta is null); h is written to residual_out (not x itself,
//    which every CTA still reads) when that is non-null. The same roundings as rms_norm() in
//    llama_kernels.h; only the order of the sum of squares differs.
//  - SiluMul: x[i] = bf16(bf16(silu(g[i])) · g[K + i]) per row of g = gate_up [M][2K], as
//    silu_mul() (bit for bit).
struct WxA16Input {
  enum class Kind : uint8_t { Plain, ResidualRmsNorm, SiluMul };
  Kind kind = Kind::Plain;
  const void* x = nullptr;
  const void* delta = nullptr;
  const void* norm_weight = nullptr;
  void* residual_out = nullptr;
  float eps = 1e-5f;
  // Plain x already gathered into an act-order weight's column order (wxa16_permuted_input); an
  // act-order weight refuses any other input.
  bool permuted = false;
};

// Whether the BulkGemv path takes this weight at this M (sm_90+, groups as for Gemv, M ≤ 8, x and
// the ring fit in shared memory); Auto picks it whenever `wxa16_gemv_tuning().bulk` is on.
bool wxa16_bulk_gemv_supports(const WxA16Weight& weight, int64_t m);
// The BulkGemv path alone (Error when !wxa16_bulk_gemv_supports).
void wxa16_bulk_gemv(const WxA16Weight& weight, const void* x, int64_t m, void* y,
                     cudaStream_t stream);
// Whether BulkGemv also takes the fused inputs for this weight (supported, K a multiple of 8, no
// act-order).
bool wxa16_bulk_gemv_fuses(const WxA16Weight& weight, int64_t m);
// BulkGemv of a (fused) input; Error when the path or the fusion is not supported, or when the
// fused input's pointers are not 16-byte aligned or residual_out is x.
void wxa16_bulk_gemv(const WxA16Weight& weight, const WxA16Input& input, int64_t m, void* y,
                     cudaStream_t stream);

// Knobs of the Gemv path, for the benchmarks' variant sweep: units each warp loads before it
// uses any (4 or 8: registers against bytes in flight) and the CTAs per SM that split-K aims at.
struct WxA16GemvTuning {
  int batch_units = 4;
  int ctas_per_sm = 2;  // measured best or within 5% at M = 1 and 16 on 6 of 8 Llama-3-8B shapes
  // Beyond the CTAs-per-SM target, split K further until a split streams at most this many
  // 128-column units (at most kWxA16GemvUnitSplits splits, at most 8 CTAs per SM); 0: off.
  // Measured on an H200 at M = 1 (docs/benchmarks.md): 4096×28672 35.6 µs with 8 splits of 4
  // units against 42.2 with 3 of 11; 4096×6144 11.6 against 12.9; the rest unchanged.
  int max_units_per_split = 4;
  // Launch with programmatic stream serialization (sm_90+; programmatic_launch.cuh): the kernel
  // may start, and load its first weights, while the small kernel before it (RMSNorm, SiLU,
  // attention, which allow it early) still runs. Measured on an H200: W4A16 Llama-3-8B decode
  // step 3.76 → 3.62 ms, tokens bit-identical.
  bool programmatic_launch = true;
  // The BulkGemv path: on/off for Auto, units each consumer warp decodes per stage (1, 2 or 4: a
  // stage is 8× that many units of both tiles of a pair, 8–32 KB of 4-bit codes), ring depth
  // (lowered until x and the ring fit), CTAs per SM.
  // Measured on an H100 (docs/benchmarks.md): 2 units, 4 stages, 2 CTAs per SM was best or
  // within 10% of the best on Llama-3-8B's shapes at M = 1 and 8, 4- and 8-bit.
  bool bulk = true;
  int bulk_units_per_warp = 2;
  int bulk_stages = 4;
  int bulk_ctas_per_sm = 2;
};
inline constexpr int64_t kWxA16GemvUnitSplits = 8;
WxA16GemvTuning& wxa16_gemv_tuning();

// The bf16 dequantization of the repacked weight into out[n_tiles * 8][padded_cols] (rows past N
// and columns past K hold padding); the DequantGemm path's first step, exposed for tests.
void wxa16_dequantize(const WxA16Weight& weight, void* out, cudaStream_t stream);

}  // namespace nibble::cuda
