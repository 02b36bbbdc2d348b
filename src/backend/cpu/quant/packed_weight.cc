#include "backend/cpu/quant/packed_weight.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "backend/cpu/quant/packing_builder.h"
#include "backend/cpu/quant/reference_kernels.h"
#include "core/numeric.h"
#include "quant/packing.h"
#include "quant/reference/dequantize.h"
#include "quant/types.h"

namespace nibble::cpu {
namespace {

bool exact_in_f16(float v) { return std::isfinite(v) && f16_to_f32(f32_to_f16(v)) == v; }

// Stable order of the input channels by g_idx. The kernels need each group to be a contiguous
// run of exactly `group` channels in that order, which GPTQ's desc_act produces (g_idx[perm[i]]
// = i / group). Empty result: the natural order already works. nullopt: no kernel layout.
std::optional<std::vector<int32_t>> act_order_permutation(const quant::QuantizedTensor& t) {
  if (t.g_idx.empty()) return std::vector<int32_t>{};
  const int64_t group = t.scale_block_cols;
  bool natural = true;
  for (int64_t k = 0; k < t.cols; ++k) natural = natural && t.g_idx[size_t(k)] == k / group;
  if (natural) return std::vector<int32_t>{};
  std::vector<int32_t> perm(size_t(t.cols));
  std::iota(perm.begin(), perm.end(), 0);
  std::stable_sort(perm.begin(), perm.end(),
                   [&](int32_t a, int32_t b) { return t.g_idx[size_t(a)] < t.g_idx[size_t(b)]; });
  for (int64_t k = 0; k < t.cols; ++k) {
    if (t.g_idx[size_t(perm[size_t(k)])] != k / group) return std::nullopt;
  }
  return perm;
}

std::optional<PackedQuantWeight> pack_plain_weight(const quant::QuantizedTensor& t) {
  using quant::ElemType;
  using quant::ZeroKind;
  const quant::ElemTypeInfo& info = quant::elem_info(t.elem);
  const int bits = info.bits;
  // Per-channel (and per-tensor) scales become one group spanning the padded row.
  const bool whole_row = t.scale_block_cols >= t.cols;
  const int64_t k_padded = (t.cols + 31) / 32 * 32;
  const int64_t group = whole_row ? k_padded : t.scale_block_cols;
  if (!whole_row && group != 16 && group % 32 != 0) return std::nullopt;
  const auto perm = act_order_permutation(t);
  if (!perm) return std::nullopt;
  if (!perm->empty() && whole_row) return std::nullopt;

  QuantCodes kind;
  switch (t.elem) {
    case ElemType::Int4: kind = QuantCodes::U4Sym; break;
    case ElemType::UInt4: kind = QuantCodes::U4; break;
    case ElemType::Int2:
    case ElemType::Int3:
    case ElemType::Int8:
    case ElemType::UInt2:
    case ElemType::UInt3:
    case ElemType::UInt8: kind = QuantCodes::S8; break;
    case ElemType::Fp8E4M3: kind = QuantCodes::Fp8E4M3; break;
    case ElemType::Fp8E5M2: kind = QuantCodes::Fp8E5M2; break;
    case ElemType::Nf4: kind = QuantCodes::Nf4; break;
    case ElemType::Fp4E2M1: kind = QuantCodes::Fp4E2M1; break;
    default: return std::nullopt;
  }
  // value = (code - zero) * scale: a zero that is the same everywhere and equals the offset
  // the kernel applies anyway (8 for 4-bit, 128 for 8-bit) needs no min.
  int32_t offset = 0;  // what the kernel's value() subtracts from the raw code
  if (t.elem == ElemType::UInt8) offset = 128;
  bool has_mins = t.zero_kind == ZeroKind::Float;
  if (info.unsigned_int) {
    const int32_t implicit = t.elem == ElemType::UInt4 ? 8 : offset;
    const bool uniform = t.zero_kind == ZeroKind::Integer && implicit != 0 &&
                         std::all_of(t.int_zeros.begin(), t.int_zeros.end(),
                                     [&](int32_t z) { return z == implicit; });
    if (uniform) {
      if (t.elem == ElemType::UInt4) kind = QuantCodes::U4Sym;
      offset = implicit;
    } else if (t.zero_kind == ZeroKind::Integer || offset != 0) {
      has_mins = true;
    }
  }
  const bool uniform_zero = kind == QuantCodes::U4Sym && t.elem == ElemType::UInt4;

  const int64_t n_groups = (k_padded + group - 1) / group;
  const int64_t scale_groups = std::min(n_groups, t.scale_cols);
  PackedQuantWeight packed = build_packed_weight(
      kind, t.rows, t.cols, group, has_mins,
      [&](int64_t n, uint8_t* codes, float* scales, float* mins) {
        const uint8_t* row = t.codes.data() + n * t.row_bytes;
        for (int64_t kp = 0; kp < t.cols; ++kp) {
          const int64_t k = perm->empty() ? kp : (*perm)[size_t(kp)];
          const uint32_t code = quant::read_byte_stream(row, k * bits, bits);
          uint32_t stored = code;
          if (kind == QuantCodes::U4Sym && !uniform_zero) stored = code ^ 8u;  // signed c -> c + 8
          if (kind == QuantCodes::S8) {
            int32_t v = info.signed_int ? quant::sign_extend(code, bits) : int32_t(code) - offset;
            stored = uint32_t(uint8_t(int8_t(v)));
          }
          codes[kp] = uint8_t(stored);
        }
        const int64_t srow = n / t.scale_block_rows;
        for (int64_t g = 0; g < scale_groups; ++g) {
          const size_t s = size_t(srow * t.scale_cols + g);
          const float d = t.scales[s] * t.global_scale;
          scales[g] = d;
          if (!has_mins) continue;
          float m = 0.0f;
          if (t.zero_kind == ZeroKind::Integer && !uniform_zero) {
            m = -d * float(t.int_zeros[s] - offset);
          } else if (offset != 0 && !uniform_zero) {
            m = d * float(offset);  // unsigned codes without zeros: value = code * scale
          }
          if (t.zero_kind == ZeroKind::Float) m += t.float_zeros[s] * t.global_scale;
          mins[g] = m;
        }
      });
  packed.k_permutation = *perm;
  packed.source = std::string(info.name) +
                  (whole_row ? (t.scale_block_rows >= t.rows ? " per-tensor" : " per-channel")
                             : " g" + std::to_string(group)) +
                  (perm->empty() ? "" : " act-order");
  return packed;
}

}  // namespace

PackedQuantWeight build_packed_weight(QuantCodes kind, int64_t rows, int64_t cols,
                                      int64_t group_size, bool has_mins,
                                      const PackRowFn& fill_row) {
  PackedQuantWeight p;
  p.codes_kind = kind;
  p.rows = rows;
  p.cols = cols;
  p.k_padded = (cols + 31) / 32 * 32;
  p.group_size = group_size;
  p.n_groups = (p.k_padded + group_size - 1) / group_size;
  p.has_mins = has_mins;
  const bool four_bit = quant_codes_are_4bit(kind);
  p.code_row_bytes = four_bit ? p.k_padded / 2 : p.k_padded;
  p.codes.assign(size_t(rows * p.code_row_bytes), 0);
  std::vector<float> scales(size_t(rows * p.n_groups), 0.0f);
  std::vector<float> mins(has_mins ? scales.size() : 0, 0.0f);
  std::vector<uint8_t> row_codes(size_t(p.k_padded));
  std::vector<float> no_mins(size_t(p.n_groups));
  for (int64_t n = 0; n < rows; ++n) {
    std::fill(row_codes.begin(), row_codes.end(), uint8_t(0));
    float* row_mins = has_mins ? mins.data() + n * p.n_groups : no_mins.data();
    fill_row(n, row_codes.data(), scales.data() + n * p.n_groups, row_mins);
    uint8_t* dst = p.codes.data() + n * p.code_row_bytes;
    if (four_bit) {
      for (int64_t c = 0; c < p.k_padded / 32; ++c) {
        for (int j = 0; j < 16; ++j) {
          dst[c * 16 + j] = uint8_t((row_codes[size_t(c * 32 + j)] & 0xF) |
                                    ((row_codes[size_t(c * 32 + j + 16)] & 0xF) << 4));
        }
      }
    } else {
      std::copy(row_codes.begin(), row_codes.end(), dst);
    }
  }
  p.params_f16 = std::all_of(scales.begin(), scales.end(), exact_in_f16) &&
                 std::all_of(mins.begin(), mins.end(), exact_in_f16);
  if (p.params_f16) {
    p.scales_f16.resize(scales.size());
    for (size_t i = 0; i < scales.size(); ++i) p.scales_f16[i] = f32_to_f16(scales[i]);
    p.mins_f16.resize(mins.size());
    for (size_t i = 0; i < mins.size(); ++i) p.mins_f16[i] = f32_to_f16(mins[i]);
  } else {
    p.scales_f32 = std::move(scales);
    p.mins_f32 = std::move(mins);
  }
  return p;
}

const void* PackedQuantWeight::scales() const {
  return params_f16 ? static_cast<const void*>(scales_f16.data())
                    : static_cast<const void*>(scales_f32.data());
}

const void* PackedQuantWeight::mins() const {
  if (!has_mins) return nullptr;
  return params_f16 ? static_cast<const void*>(mins_f16.data())
                    : static_cast<const void*>(mins_f32.data());
}

size_t PackedQuantWeight::nbytes() const {
  return codes.size() + 2 * (scales_f16.size() + mins_f16.size()) +
         4 * (scales_f32.size() + mins_f32.size()) + 4 * k_permutation.size();
}

QuantMatmulArgs PackedQuantWeight::kernel_args() const {
  QuantMatmulArgs a;
  a.k = k_padded;
  a.codes_kind = codes_kind;
  a.codes = codes.data();
  a.code_row_bytes = code_row_bytes;
  a.nibbles64 = nibbles64;
  a.scales = scales();
  a.mins = mins();
  a.params_f16 = params_f16;
  a.group_size = group_size;
  a.n_groups = n_groups;
  return a;
}

void use_nibbles64(PackedQuantWeight& w) {
  if (w.nibbles64 || !quant_codes_are_4bit(w.codes_kind)) return;
  if (w.group_size != 32 && w.group_size % 64 != 0 && w.n_groups != 1) return;
  const int64_t blocks = w.k_padded / 64;
  std::vector<uint8_t> plain(size_t(blocks * 64));
  for (int64_t n = 0; n < w.rows; ++n) {
    uint8_t* row = w.codes.data() + n * w.code_row_bytes;
    for (int64_t k = 0; k < blocks * 64; ++k)
      plain[size_t(k)] = uint8_t(quant_packed_code(w.codes_kind, row, k));
    for (int64_t b = 0; b < blocks; ++b)
      for (int64_t j = 0; j < 32; ++j)
        row[b * 32 + j] =
            uint8_t(plain[size_t(b * 64 + j)] | (plain[size_t(b * 64 + 32 + j)] << 4));
  }
  w.nibbles64 = true;
}

std::optional<PackedQuantWeight> pack_quantized_weight(const quant::QuantizedTensor& t) {
  quant::validate(t, "quantized linear weight");
  if (t.elem == quant::ElemType::GgufBlock) return pack_gguf_weight(t);
  return pack_plain_weight(t);
}

}  // namespace nibble::cpu
