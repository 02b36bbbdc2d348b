// Host-side repacking of integer weight codes into the W4A16/W8A16 kernel layout (once, at load).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <numeric>
#include <vector>

#include "backend/cuda/wxa16_linear.h"
#include "quant/reference/dequantize.h"
#include "quant/types.h"

namespace nibble::cuda {
namespace {

using quant::ElemType;
using quant::QuantizedTensor;

// Code of (n, k) as the kernel's unsigned value: signed codes are offset by 2^(bits-1) (so the
// kernel always computes (u - zero) with zero = 2^(bits-1)), unsigned ones are kept.
uint32_t unsigned_code(const QuantizedTensor& t, int bits, bool is_signed, int64_t n, int64_t k) {
  const uint8_t* row = t.codes.data() + n * t.row_bytes;
  uint32_t code = bits == 4 ? (row[k / 2] >> ((k & 1) * 4)) & 0xFu : row[k];
  if (is_signed) code ^= 1u << (bits - 1);
  return code;
}

template <typename Narrow, typename ToNarrow, typename ToFloat>
bool fits(const std::vector<float>& values, ToNarrow to_narrow, ToFloat to_float) {
  return std::all_of(values.begin(), values.end(), [&](float v) {
    const Narrow narrow = to_narrow(v);
    return to_float(narrow) == v;
  });
}

// An act-order tensor with its columns stored in group order (g_idx dropped) and the input
// column of each stored column. GPTQ's g_idx gives each group exactly group-size columns (the
// last the rest), so sorting by group makes every group one aligned run, as the kernels need.
QuantizedTensor sorted_by_group(const QuantizedTensor& t, std::vector<int32_t>& perm,
                                const char* what) {
  const int64_t g = t.scale_block_cols;
  perm.resize(size_t(t.cols));
  std::iota(perm.begin(), perm.end(), 0);
  std::stable_sort(perm.begin(), perm.end(),
                   [&](int32_t a, int32_t b) { return t.g_idx[size_t(a)] < t.g_idx[size_t(b)]; });
  for (int64_t j = 0; j < t.cols; ++j) {
    const int32_t group = t.g_idx[size_t(perm[size_t(j)])];
    NIBBLE_CHECK(group == j / g,
                 "{}: g_idx does not give each group {} columns (group {} has a column at sorted "
                 "position {}); the CUDA kernels need GPTQ's act-order layout",
                 what, g, group, j);
  }
  QuantizedTensor sorted = t;
  sorted.g_idx.clear();
  for (int64_t n = 0; n < t.rows; ++n)
    for (int64_t j = 0; j < t.cols; ++j)
      quant::set_code(sorted, n, j, quant::get_code(t, n, perm[size_t(j)]));
  return sorted;
}

}  // namespace

WxA16Weight prepare_wxa16_weight(const QuantizedTensor& t, const char* what) {
  quant::validate(t, what);
  if (!t.g_idx.empty()) {
    std::vector<int32_t> perm;
    WxA16Weight w = prepare_wxa16_weight(sorted_by_group(t, perm, what), what);
    w.input_perm.resize(perm.size() * sizeof(int32_t));
    w.input_perm.upload(perm.data(), w.input_perm.bytes());
    return w;
  }
  WxA16Weight w;
  bool is_signed = false;
  switch (t.elem) {
    case ElemType::Int4: w.bits = 4, is_signed = true; break;
    case ElemType::UInt4: w.bits = 4; break;
    case ElemType::Int8: w.bits = 8, is_signed = true; break;
    case ElemType::UInt8: w.bits = 8; break;
    case ElemType::Fp8E4M3: w.bits = 8, w.fp8 = true; break;
    default:
      fail("{}: the CUDA weight-only kernel takes int4/uint4/int8/uint8/fp8_e4m3 codes, not {}",
           what, quant::elem_name(t.elem));
  }
  NIBBLE_CHECK(t.zero_kind != quant::ZeroKind::Float,
               "{}: float zero points are not supported by the CUDA W{}A16 kernel", what, w.bits);
  NIBBLE_CHECK(!(is_signed && t.zero_kind == quant::ZeroKind::Integer),
               "{}: signed {} codes with integer zero points", what, quant::elem_name(t.elem));
  const int ku = w.unit_cols();
  w.rows = t.rows;
  w.cols = t.cols;
  w.n_tiles = (t.rows + 7) / 8;
  w.k_units = (t.cols + ku - 1) / ku;
  const int64_t g = t.scale_block_cols;
  if (g >= t.cols) {
    // One scale per row: a "group" as wide as the padded row keeps the kernel's index at 0.
    w.group_size = w.padded_cols();
    w.n_groups = 1;
  } else {
    NIBBLE_CHECK(g >= 32 && g % 16 == 0 && (ku % g == 0 || g % ku == 0),
                 "{}: group size {} is not supported by the CUDA W{}A16 kernel (32, 64, {} or a "
                 "multiple of {}, or per-channel)",
                 what, g, w.bits, ku, ku);
    w.group_size = g;
    // Groups of the padded columns too (scale 0): the kernel copies a whole unit's groups.
    w.n_groups = std::max(t.scale_cols, w.padded_cols() / g);
  }
  w.symmetric_zero = is_signed ? 1 << (w.bits - 1) : 0;
  NIBBLE_CHECK(!w.fp8 || t.zero_kind == quant::ZeroKind::None, "{}: fp8 codes with zero points",
               what);

  // Codes: lane L of a unit holds row n = 8·tile + L/4 and, with t = L % 4, for mma step s (16
  // columns) the B fragment columns 2t, 2t+1 (register b0) and 2t+8, 2t+9 (register b1).
  //  4-bit: word w holds steps 2w and 2w+1; nibble pair j (bits 4j and 16+4j, which one OR with
  //         0x43004300 turns into a bf16 pair) is step 2w + j/2, register j % 2.
  //  8-bit: word w is step w; bytes 0,1 are register b0, bytes 2,3 register b1.
  std::vector<uint32_t> packed(size_t(w.n_tiles * w.k_units * 32 * 4), 0u);
  const uint32_t pad_code = uint32_t(w.symmetric_zero);
  for (int64_t nt = 0; nt < w.n_tiles; ++nt) {
    for (int64_t u = 0; u < w.k_units; ++u) {
      uint32_t* unit = packed.data() + (nt * w.k_units + u) * 128;
      for (int lane = 0; lane < 32; ++lane) {
        const int64_t n = nt * 8 + lane / 4;
        const int t4 = lane % 4;
        auto code_at = [&](int64_t k) {
          return (n < t.rows && k < t.cols) ? unsigned_code(t, w.bits, is_signed, n, k) : pad_code;
        };
        for (int word = 0; word < 4; ++word) {
          uint32_t value = 0;
          if (w.bits == 4) {
            for (int j = 0; j < 4; ++j) {
              const int step = 2 * word + j / 2, reg = j % 2;
              const int64_t k = u * ku + 16 * step + 2 * t4 + 8 * reg;
              value |= code_at(k) << (4 * j);
              value |= code_at(k + 1) << (16 + 4 * j);
            }
          } else {
            for (int byte = 0; byte < 4; ++byte) {
              const int64_t k = u * ku + 16 * word + 2 * t4 + 8 * (byte / 2) + byte % 2;
              value |= code_at(k) << (8 * byte);
            }
          }
          unit[lane * 4 + word] = value;
        }
      }
    }
  }
  w.codes.resize(packed.size() * sizeof(uint32_t));
  w.codes.upload(packed.data(), w.codes.bytes());

  // Scales (and zeros) per [tile][group][row in tile]; padding rows get scale 0.
  const size_t meta_count = size_t(w.n_tiles * w.n_groups * 8);
  std::vector<float> scales(meta_count, 0.0f);
  std::vector<uint8_t> zeros;
  const bool has_zeros = t.zero_kind == quant::ZeroKind::Integer;
  if (has_zeros) zeros.assign(meta_count, uint8_t(w.symmetric_zero));
  for (int64_t n = 0; n < t.rows; ++n) {
    for (int64_t gi = 0; gi < t.scale_cols; ++gi) {
      const auto src = size_t((n / t.scale_block_rows) * t.scale_cols + gi);
      const auto dst = size_t(((n / 8) * w.n_groups + gi) * 8 + n % 8);
      scales[dst] = t.scales[src] * t.global_scale;
      if (has_zeros) {
        const int32_t z = t.int_zeros[src];
        NIBBLE_CHECK(z >= 0 && z < (1 << w.bits), "{}: zero point {} of row {} is not a uint{}",
                     what, z, n, w.bits);
        zeros[dst] = uint8_t(z);
      }
    }
  }
  // Narrow scales halve the scale bytes the kernel streams; kept only where exact.
  if (fits<__half>(
          scales, [](float v) { return __float2half_rn(v); },
          [](__half h) { return __half2float(h); })) {
    std::vector<uint16_t> narrow(scales.size());
    std::transform(scales.begin(), scales.end(), narrow.begin(),
                   [](float v) { return __half_as_ushort(__float2half_rn(v)); });
    w.scale_type = WxA16ScaleType::F16;
    w.scales.resize(narrow.size() * sizeof(uint16_t));
    w.scales.upload(narrow.data(), w.scales.bytes());
  } else if (fits<__nv_bfloat16>(
                 scales, [](float v) { return __float2bfloat16_rn(v); },
                 [](__nv_bfloat16 h) { return __bfloat162float(h); })) {
    std::vector<uint16_t> narrow(scales.size());
    std::transform(scales.begin(), scales.end(), narrow.begin(),
                   [](float v) { return __bfloat16_as_ushort(__float2bfloat16_rn(v)); });
    w.scale_type = WxA16ScaleType::BF16;
    w.scales.resize(narrow.size() * sizeof(uint16_t));
    w.scales.upload(narrow.data(), w.scales.bytes());
  } else {
    w.scale_type = WxA16ScaleType::F32;
    w.scales.resize(scales.size() * sizeof(float));
    w.scales.upload(scales.data(), w.scales.bytes());
  }
  if (has_zeros) {
    // Padded to 16 bytes: the bulk-copy GEMV copies 16-byte-aligned spans of zero rows.
    zeros.resize((zeros.size() + 15) / 16 * 16, uint8_t(0));
    w.zeros.resize(zeros.size());
    w.zeros.upload(zeros.data(), zeros.size());
  }
  return w;
}

}  // namespace nibble::cuda
