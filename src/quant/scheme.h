#pragma once
// The one canonical in-memory form of a quantized linear weight (DESIGN.md §3). Every loader
// (src/quant/formats) maps its on-disk tensors into a QuantizedTensor, the scalar reference
// (src/quant/reference) defines what it means, and backends repack it once into their kernel
// layouts. Nothing here knows about files or kernels.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace nibble::quant {

// Element type of the codes.
//  - Int*: signed two's-complement b-bit codes, value = code * scale (symmetric).
//  - UInt*: unsigned b-bit codes with an integer zero point, value = (code - zero) * scale.
//  - float types: value = decode(code) * scale.
//  - GgufBlock: codes are raw ggml blocks (see `gguf_type`), which carry their own scales.
enum class ElemType : uint8_t {
  Int2,
  Int3,
  Int4,
  Int8,
  UInt2,
  UInt3,
  UInt4,
  UInt8,
  Fp8E4M3,
  Fp8E5M2,
  Fp4E2M1,
  Nf4,
  GgufBlock,
};

// The dtype the scales had on disk. Scales are held as f32 here (every listed type converts
// to f32 exactly), the tag lets exporters and kernels restore or exploit the narrow type.
enum class ScaleDType : uint8_t { F32, F16, BF16, E4M3, UE8M0 };

enum class ZeroKind : uint8_t {
  None,     // symmetric (signed or float codes)
  Integer,  // (code - zero) * scale, zero an integer per scale block
  Float,    // code * scale + zero (GGUF-style "min"), zero a float per scale block
};

// Granularity is implied by the scale block shape; this names it for messages and dispatch.
enum class ScaleGranularity : uint8_t { None, PerTensor, PerChannel, PerGroup, Block2D };

// W[N, K] in PyTorch orientation (y = x · Wᵀ): N = rows (out features), K = cols (in features).
struct QuantizedTensor {
  ElemType elem = ElemType::Int4;
  int64_t rows = 0;
  int64_t cols = 0;

  // Row-major codes. Each row is a little-endian bitstream: element k of a row sits at bits
  // [k·b, k·b + b) of the row (so for 4-bit the even element is the low nibble, as in
  // NVFP4). Rows start on byte boundaries: `row_bytes` = ⌈K·b/8⌉. For GgufBlock a row is its
  // ggml blocks.
  std::vector<uint8_t> codes;
  int64_t row_bytes = 0;
  int gguf_type = -1;  // a gguf::GgmlType value when elem == GgufBlock

  // scales[(n / scale_block_rows) * scale_cols + (k / scale_block_cols)], or with g_idx the
  // column index is g_idx[k]. Per-tensor: block = [N, K]; per-channel: [1, K]; per-group:
  // [1, G]; 2-D blocks: [bn, bk]. Empty for GgufBlock.
  std::vector<float> scales;
  int64_t scale_block_rows = 1;
  int64_t scale_block_cols = 1;
  int64_t scale_rows = 0;
  int64_t scale_cols = 0;
  ScaleDType scale_dtype = ScaleDType::F32;

  // Laid out like `scales`.
  ZeroKind zero_kind = ZeroKind::None;
  std::vector<int32_t> int_zeros;
  std::vector<float> float_zeros;

  // Act-order (GPTQ desc_act): the scale column of input channel k. Empty means k / block.
  std::vector<int32_t> g_idx;

  // A second-level multiplier applied after the block scale (NVFP4's global scale).
  float global_scale = 1.0f;

  ScaleGranularity granularity() const;
  int64_t group_size() const { return scale_block_cols; }
};

// How a linear layer's activations are quantized at run time.
enum class ActQuantKind : uint8_t {
  None,                     // A16: activations stay in the compute dtype
  DynamicPerTokenInt8,      // s_t = max|x_t| / 127
  DynamicPerTokenFp8,       // s_t = max|x_t| / 448
  DynamicPerTokenGroupFp8,  // block-FP8: one scale per token per `group_size` channels
  StaticPerTensorInt8,      // x_q = round(x / input_scale)
  StaticPerTensorFp8,       // x_q = fp8(x / input_scale)
  Nvfp4,                    // dynamic 16-element blocks, global scale from the checkpoint
};

struct ActQuant {
  ActQuantKind kind = ActQuantKind::None;
  int64_t group_size = 0;                   // DynamicPerTokenGroupFp8 / Nvfp4
  std::optional<float> input_scale;         // static kinds (and NVFP4's global)
  std::optional<int32_t> input_zero_point;  // static asymmetric int8
};

// What a linear layer computes: the method it came from (SGLang's name), its weight and its
// activation quantization.
struct LinearScheme {
  std::string method;  // "gptq", "awq", "compressed-tensors", "fp8", "modelopt_fp8", ...
  QuantizedTensor weight;
  ActQuant act;
};

}  // namespace nibble::quant
