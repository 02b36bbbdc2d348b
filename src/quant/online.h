#pragma once
// Online quantization at load time: the methods that quantize an unquantized (bf16/f16/f32)
// checkpoint's linear weights as they are read, one (possibly fused) weight at a time, so peak
// memory stays near the quantized model plus one dense tensor. Semantics follow the producer
// of each method (docs/quantization.md "Online methods"):
//  - --quantization fp8 / w8a8_fp8: SGLang's online path, e4m3 weights with one f32 scale per
//    output row (amax / 448), dynamic per-token fp8 activations;
//  - --quantization w8a8_int8: int8 per-row weights as compressed-tensors' W8A8 checkpoints
//    that SGLang's w8a8_int8 runs (scale amax / 127.5), dynamic per-token int8 activations;
//  - --torchao-config int8dq | int8wo | fp8wo | fp8dq-per_tensor | fp8dq-per_row |
//    int4wo-<32|64|128|256>: torchao's quantize_ configs on bf16 weights, op by op;
//  - --quantization bitsandbytes: NF4, blocks of 64, nested absmax (as SGLang's in-flight
//    bitsandbytes loader calls quantize_4bit);
//  - nibble's own --quantization int4 (RTN, group 128, asymmetric) and the GGUF block types
//    q4_0, q4_k, q8_0 (ggml's reference quantizers, rows of ggml blocks).
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "quant/scheme.h"

namespace nibble::quant {

enum class OnlineKind : uint8_t {
  Fp8PerRow,        // fp8, w8a8_fp8
  Int8PerRowRtn,    // w8a8_int8
  TorchaoInt8,      // int8wo, int8dq
  TorchaoInt4,      // int4wo-G
  TorchaoFp8,       // fp8wo, fp8dq-per_row, fp8dq-per_tensor
  BitsAndBytesNf4,  // bitsandbytes
  RtnInt4,          // int4
  GgufBlocks,       // q4_0, q4_k, q8_0
};

struct OnlineMethod {
  // Canonical: "fp8", "w8a8_fp8", "w8a8_int8", "int8dq", "int8wo", "fp8wo", "fp8dq-per_tensor",
  // "fp8dq-per_row", "int4wo-32".."int4wo-256", "bitsandbytes", "int4", "q4_0", "q4_k", "q8_0".
  std::string name;
  OnlineKind kind = OnlineKind::Fp8PerRow;
  bool from_torchao = false;  // given by --torchao-config (SGLang: only modules named *proj*)
  int64_t group_size = 0;     // int4wo-G, int4 (128), bitsandbytes blocksize (64)
  bool per_tensor = false;    // fp8dq-per_tensor
  int gguf_type = -1;         // a gguf::GgmlType value for GgufBlocks
  // Template of the activation quantization every layer gets.
  ActQuant act;
};

// From --quantization and --torchao-config (either may be empty; "unquant" counts as empty).
// nullopt when neither asks for online quantization. Unknown or conflicting values (both
// flags, a pre-quantized-only method such as awq, a torchao name given to --quantization)
// throw nibble::Error listing the choices. Call it for an unquantized checkpoint, i.e. when
// resolve_quantization() returned nullopt.
std::optional<OnlineMethod> parse_online_method(const std::string& quantization,
                                                const std::string& torchao_config);

// Every canonical name above, --quantization ones first.
const std::vector<std::string>& online_method_names();
// The subsets accepted by each flag.
const std::vector<std::string>& online_quantization_names();
const std::vector<std::string>& torchao_config_names();

// Why W[rows, cols] cannot be quantized by `method` (a group or block size that does not divide
// K), or nullopt when it can. torchao leaves such a layer unquantized (int4wo skips it with a
// log line); the caller can do the same or refuse.
std::optional<std::string> online_shape_problem(const OnlineMethod& method, int64_t rows,
                                                int64_t cols);

// Quantizes one (possibly fused: q/k/v or gate/up stacked by rows) linear weight W[rows, cols],
// f32 row-major, the way SGLang/torchao/bitsandbytes/ggml do for that method; returns the scheme
// (method = the canonical name) with its activation quantization. Fused weights get what
// SGLang's fused qkv_proj / gate_up_proj get: per-row scales are unaffected, a per-tensor scale
// (fp8dq-per_tensor) covers the whole fused weight. Throws when online_shape_problem() is set.
LinearScheme quantize_online(const OnlineMethod& method, std::span<const float> w, int64_t rows,
                             int64_t cols);

}  // namespace nibble::quant
