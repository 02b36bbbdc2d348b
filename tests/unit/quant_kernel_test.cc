// The quantized linear kernels (kernel_table.h, QuantMatmulArgs) of every SIMD ISA this CPU
// runs, against the scalar reference (backend/cpu/quant/reference_kernels.h, sums in double /
// int64) on fresh random codes, scales, mins and activations; and the repacking of every
// weight layout against quant::dequantize.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/kernels.h"
#include "backend/cpu/quant/packed_weight.h"
#include "backend/cpu/quant/reference_kernels.h"
#include "core/numeric.h"
#include "formats/gguf/gguf_dequant.h"
#include "quant/reference/dequantize.h"
#include "quant/reference/quantize.h"
#include "quant/types.h"

namespace nibble::cpu {
namespace {

constexpr double kUnitRoundoff = 1.0 / (1 << 24);  // f32

std::mt19937& rng() {
  static std::mt19937 gen(std::random_device{}());
  return gen;
}

float uniform(float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(rng()); }
uint32_t random_bits(int bits) { return uint32_t(rng()()) & ((1u << bits) - 1u); }

std::vector<const KernelTable*> simd_tables() {
  std::vector<const KernelTable*> tables;
  for (const std::string& name : available_isas())
    if (name != "scalar") tables.push_back(kernels_for_isa(name));
  return tables;
}

const char* kind_name(QuantCodes kind) {
  switch (kind) {
    case QuantCodes::U4Sym: return "u4sym";
    case QuantCodes::U4: return "u4";
    case QuantCodes::S8: return "s8";
    case QuantCodes::Fp8E4M3: return "e4m3";
    case QuantCodes::Fp8E5M2: return "e5m2";
    case QuantCodes::Nf4: return "nf4";
    case QuantCodes::Fp4E2M1: return "e2m1";
  }
  return "?";
}

// Random operands of one kernel call, in the packed layout.
struct Problem {
  QuantCodes kind;
  int64_t m, n, k, group, n_groups;
  bool mins, f16;
  bool nibbles64 = false;    // 4-bit codes in the 64-element form (a8 kernels)
  bool per_group_x = false;  // a8 with one activation scale per group (x_group_scale)
  std::vector<float> x_group_scales, xgsum_scaled;
  std::vector<uint8_t> codes;
  std::vector<float> scales32, mins32;
  std::vector<uint16_t> scales16, mins16;
  std::vector<float> x, bias, x_scale;
  std::vector<int8_t> xq;
  std::vector<int32_t> xsum;
  std::vector<float> xgsum;
  int64_t row_bytes;

  Problem(QuantCodes kind_, int64_t m_, int64_t n_, int64_t k_, int64_t group_, bool mins_,
          bool f16_)
      : kind(kind_), m(m_), n(n_), k(k_), group(group_), mins(mins_), f16(f16_) {
    n_groups = (k + group - 1) / group;
    row_bytes = quant_codes_are_4bit(kind) ? k / 2 : k;
    codes.resize(size_t(n * row_bytes));
    for (auto& c : codes) {
      c = uint8_t(random_bits(8));
      // e4m3 0x7f / 0xff are NaN: weights never hold them.
      if (kind == QuantCodes::Fp8E4M3 && (c & 0x7F) == 0x7F) c = 0x3C;
      // e5m2 exponent 31 is inf / NaN.
      if (kind == QuantCodes::Fp8E5M2 && ((c >> 2) & 0x1F) == 0x1F) c = 0x3C;
    }
    const size_t count = size_t(n * n_groups);
    for (size_t i = 0; i < count; ++i) {
      const float d = uniform(0.001f, 0.1f) * (random_bits(1) ? 1.0f : -1.0f);
      const float mn = uniform(-0.5f, 0.5f);
      if (f16) {
        scales16.push_back(f32_to_f16(d));
        mins16.push_back(f32_to_f16(mn));
      } else {
        scales32.push_back(d);
        mins32.push_back(mn);
      }
    }
    for (int64_t i = 0; i < m * k; ++i) x.push_back(uniform(-2.0f, 2.0f));
    for (int64_t i = 0; i < n; ++i) bias.push_back(uniform(-1.0f, 1.0f));
    for (int64_t i = 0; i < m * k; ++i) xq.push_back(int8_t(int(random_bits(8) % 255) - 127));
    for (int64_t i = 0; i < m; ++i) x_scale.push_back(uniform(0.001f, 0.05f));
    xsum.assign(size_t(m * n_groups), 0);
    xgsum.assign(size_t(m * n_groups), 0.0f);
    for (int64_t r = 0; r < m; ++r)
      for (int64_t kk = 0; kk < k; ++kk)
        xgsum[size_t(r * n_groups + kk / group)] += x[size_t(r * k + kk)];
    for (int64_t r = 0; r < m; ++r)
      for (int64_t kk = 0; kk < k; ++kk)
        xsum[size_t(r * n_groups + kk / group)] += xq[size_t(r * k + kk)];
    for (int64_t i = 0; i < m * n_groups; ++i) {
      x_group_scales.push_back(uniform(0.001f, 0.05f));
      xgsum_scaled.push_back(x_group_scales.back() * float(xsum[size_t(i)]));
    }
  }

  QuantMatmulArgs args(float* y) const {
    QuantMatmulArgs a;
    a.x = x.data();
    a.xq = xq.data();
    a.x_scale = x_scale.data();
    a.xsum = xsum.data();
    a.xgsum = xgsum.data();
    a.ldx = k;
    a.m_rows = m;
    a.k = k;
    a.codes_kind = kind;
    a.codes = codes.data();
    a.code_row_bytes = row_bytes;
    a.nibbles64 = nibbles64;
    if (per_group_x) {
      a.x_group_scale = x_group_scales.data();
      a.xgsum = xgsum_scaled.data();
    }
    a.scales = f16 ? static_cast<const void*>(scales16.data()) : scales32.data();
    a.mins = !mins ? nullptr : f16 ? static_cast<const void*>(mins16.data()) : mins32.data();
    a.params_f16 = f16;
    a.group_size = group;
    a.n_groups = n_groups;
    a.bias = bias.data();
    a.y = y;
    a.ldy = n;
    return a;
  }

  // sum_k |x w| (a16) or |s_x| * sum_g (|d| sum |v xq| + |mn xsum|) (a8), for error bounds.
  double magnitude(int64_t r, int64_t col, bool a8) const {
    const QuantMatmulArgs a = args(nullptr);
    const uint8_t* row = codes.data() + col * row_bytes;
    double total = 0.0;
    for (int64_t g = 0; g < n_groups; ++g) {
      const double d = std::fabs(quant_param(a.scales, f16, col * n_groups + g));
      const double mn = mins ? std::fabs(quant_param(a.mins, f16, col * n_groups + g)) : 0.0;
      double part = 0.0;
      for (int64_t kk = g * group; kk < std::min(k, (g + 1) * group); ++kk) {
        const double v = kind == QuantCodes::U4Sym
                             ? 15.0
                             : std::fabs(quant_code_value(kind, quant_packed_code(a, row, kk)));
        part += a8 ? v * std::fabs(double(xq[size_t(r * k + kk)])) * d
                   : (v * d + mn) * std::fabs(double(x[size_t(r * k + kk)]));
      }
      // The kernels apply mins (and U4Sym's -8 d) through the group sums of x.
      const double folded = mn + (kind == QuantCodes::U4Sym ? 8.0 * d : 0.0);
      if (a8) {
        part += folded * std::fabs(double(xsum[size_t(r * n_groups + g)]));
        if (per_group_x) part *= x_group_scales[size_t(r * n_groups + g)];
      } else {
        for (int64_t kk = g * group; kk < std::min(k, (g + 1) * group); ++kk)
          part += folded * std::fabs(double(x[size_t(r * k + kk)]));
      }
      total += part;
    }
    return a8 && !per_group_x ? total * x_scale[size_t(r)] : total;
  }
};

void check_problem(const KernelTable& table, const Problem& p, bool a8) {
  std::vector<float> ref(size_t(p.m * p.n)), got(size_t(p.m * p.n), -7.0f);
  (a8 ? quant_matmul_a8_reference : quant_matmul_a16_reference)(p.args(ref.data()), 0, p.n);
  // Split the rows as threads would, at an odd boundary.
  const int64_t split = p.n / 2 + 1;
  const QuantMatmulFn fn = a8 ? table.quant_matmul_a8 : table.quant_matmul_a16;
  fn(p.args(got.data()), 0, split);
  fn(p.args(got.data()), split, p.n);
  for (int64_t r = 0; r < p.m; ++r) {
    for (int64_t c = 0; c < p.n; ++c) {
      // f32 accumulation over K terms (plus the scale FMA and the horizontal sum): the
      // classical bound (K + 8) u sum|terms|, bias included.
      const double bound =
          double(p.k + 8) * kUnitRoundoff * (p.magnitude(r, c, a8) + std::fabs(p.bias[size_t(c)])) +
          1e-30;
      const size_t i = size_t(r * p.n + c);
      ASSERT_NEAR(got[i], ref[i], bound)
          << table.name << (a8 ? " a8 " : " a16 ") << kind_name(p.kind) << " m=" << p.m
          << " n=" << p.n << " k=" << p.k << " group=" << p.group << " mins=" << p.mins
          << " f16=" << p.f16 << " nibbles64=" << p.nibbles64 << " per_group_x=" << p.per_group_x
          << " at (" << r << ", " << c << ")";
    }
  }
}

TEST(QuantKernels, A16EveryCodeKindAgainstReference) {
  const auto tables = simd_tables();
  if (tables.empty()) GTEST_SKIP() << "no SIMD ISA on this CPU: only the scalar reference exists";
  const QuantCodes kinds[] = {QuantCodes::U4Sym,   QuantCodes::U4,      QuantCodes::S8,
                              QuantCodes::Fp8E4M3, QuantCodes::Fp8E5M2, QuantCodes::Nf4,
                              QuantCodes::Fp4E2M1};
  for (const KernelTable* t : tables) {
    for (QuantCodes kind : kinds) {
      for (int64_t group : {16, 32, 64, 160}) {
        for (bool mins : {false, true}) {
          for (bool f16 : {false, true}) {
            for (int64_t m : {1, 3, 5}) {
              check_problem(*t, Problem(kind, m, 13, 160, group, mins, f16), false);
            }
          }
        }
      }
      // A K that is not a multiple of the group: the last group is short.
      check_problem(*t, Problem(kind, 2, 7, 96, 64, true, false), false);
    }
  }
}

TEST(QuantKernels, A8IntegerCodesAgainstReference) {
  const auto tables = simd_tables();
  if (tables.empty()) GTEST_SKIP() << "no SIMD ISA on this CPU: only the scalar reference exists";
  for (const KernelTable* t : tables) {
    for (QuantCodes kind : {QuantCodes::U4Sym, QuantCodes::U4, QuantCodes::S8}) {
      // 320: ten chunks a group, past the eight that AVX2's 4-bit s16 pair sums hold.
      for (int64_t group : {32, 64, 96, 192, 320}) {
        for (bool mins : {false, true}) {
          for (bool f16 : {false, true}) {
            for (int64_t m : {1, 3, 5}) {
              const int64_t k = group > 192 ? 2 * group : 192;
              check_problem(*t, Problem(kind, m, 11, k, group, mins, f16), true);
            }
          }
        }
      }
    }
  }
}

TEST(QuantKernels, A8FourBitCodesInTheWideFormAgainstReference) {
  const auto tables = simd_tables();
  if (tables.empty()) GTEST_SKIP() << "no SIMD ISA on this CPU: only the scalar reference exists";
  for (const KernelTable* t : tables) {
    for (QuantCodes kind : {QuantCodes::U4Sym, QuantCodes::U4}) {
      // K = 160 ends in an odd 32-element chunk (kept in the 16-byte form); 160 as the group
      // is one group per row. 320: past the eight chunks AVX2's s16 pair sums hold.
      // 32 x 352 and 576: eight-group blocks, then a pair, then (352) an odd chunk.
      for (const auto& [group, k] : {std::pair<int64_t, int64_t>{32, 160},
                                     {32, 256},
                                     {32, 352},
                                     {32, 576},
                                     {64, 160},
                                     {64, 256},
                                     {256, 512},
                                     {128, 384},
                                     {192, 384},
                                     {160, 160},
                                     {320, 640}}) {
        for (bool mins : {false, true}) {
          for (bool f16 : {false, true}) {
            for (int64_t m : {1, 3, 5}) {
              Problem p(kind, m, 11, k, group, mins, f16);
              p.nibbles64 = true;
              check_problem(*t, p, true);
            }
          }
        }
      }
    }
  }
}

TEST(QuantKernels, A8PerGroupActivationScalesAgainstReference) {
  const auto tables = simd_tables();
  if (tables.empty()) GTEST_SKIP() << "no SIMD ISA on this CPU: only the scalar reference exists";
  for (const KernelTable* t : tables) {
    for (QuantCodes kind : {QuantCodes::U4Sym, QuantCodes::U4, QuantCodes::S8}) {
      for (bool wide : {false, true}) {
        if (wide && kind == QuantCodes::S8) continue;
        for (const auto& [group, k] : {std::pair<int64_t, int64_t>{32, 160},
                                       {32, 352},
                                       {64, 256},
                                       {128, 384},
                                       {192, 384},
                                       {320, 640}}) {
          for (bool mins : {false, true}) {
            for (int64_t m : {1, 3}) {
              Problem p(kind, m, 11, k, group, mins, true);
              p.nibbles64 = wide;
              p.per_group_x = true;
              check_problem(*t, p, true);
            }
          }
        }
      }
    }
  }
}

// Q8_0-style codes (S8, groups of 32, no mins) have their own a8 tile, which takes the groups'
// scales eight at a time: K of exactly eight groups, and eleven (eight plus a partial block).
TEST(QuantKernels, A8Q8StyleCodesInBlocksOfEightGroups) {
  const auto tables = simd_tables();
  if (tables.empty()) GTEST_SKIP() << "no SIMD ISA on this CPU: only the scalar reference exists";
  for (const KernelTable* t : tables) {
    for (int64_t k : {256, 352}) {
      for (bool f16 : {false, true}) {
        for (bool per_group_x : {false, true}) {
          for (int64_t m : {1, 2, 3, 5}) {
            Problem p(QuantCodes::S8, m, 11, k, 32, false, f16);
            p.per_group_x = per_group_x;
            check_problem(*t, p, true);
          }
        }
      }
    }
  }
}

TEST(QuantKernels, A8ExtremeCodesDoNotSaturate) {
  // |w| = 128 against |x| = 127 is the largest pair maddubs sums in s16 (2 * 128 * 127 < 2^15).
  const auto tables = simd_tables();
  if (tables.empty()) GTEST_SKIP() << "no SIMD ISA on this CPU: only the scalar reference exists";
  for (const KernelTable* t : tables) {
    Problem p(QuantCodes::S8, 3, 5, 128, 128, false, false);
    for (size_t i = 0; i < p.codes.size(); ++i) p.codes[i] = (i % 3) ? 0x80 : 0x7F;
    for (size_t i = 0; i < p.xq.size(); ++i) p.xq[i] = (i % 2) ? -127 : 127;
    check_problem(*t, p, true);
    // Nibbles of 15 against xq of one sign: eight chunks of pair sums (8 * 3810) in s16.
    for (int8_t x : {int8_t(127), int8_t(-127)}) {
      Problem q(QuantCodes::U4, 3, 5, 512, 256, false, false);
      for (auto& c : q.codes) c = 0xFF;
      for (auto& v : q.xq) v = x;
      check_problem(*t, q, true);
      q.nibbles64 = true;
      check_problem(*t, q, true);
    }
  }
}

// ---- repacking: every weight of the packed form equals quant::dequantize ----

// The packed weight as f32 [rows, cols] in the original K order; `terms` gets |d v| + |min|.
std::vector<float> unpack(const PackedQuantWeight& p, std::vector<double>& terms) {
  std::vector<float> out(size_t(p.rows * p.cols));
  terms.assign(out.size(), 0.0);
  for (int64_t n = 0; n < p.rows; ++n) {
    const uint8_t* row = p.codes.data() + n * p.code_row_bytes;
    for (int64_t kp = 0; kp < p.cols; ++kp) {
      const int64_t g = n * p.n_groups + kp / p.group_size;
      float w = quant_code_value(p.codes_kind, quant_packed_code(p.kernel_args(), row, kp)) *
                quant_param(p.scales(), p.params_f16, g);
      double term = std::fabs(w);
      if (p.has_mins) {
        w += quant_param(p.mins(), p.params_f16, g);
        term += std::fabs(quant_param(p.mins(), p.params_f16, g));
      }
      const int64_t k = p.k_permutation.empty() ? kp : p.k_permutation[size_t(kp)];
      out[size_t(n * p.cols + k)] = w;
      terms[size_t(n * p.cols + k)] = term;
    }
  }
  return out;
}

void expect_packs_exactly(const quant::QuantizedTensor& t, const std::string& what) {
  const auto packed = pack_quantized_weight(t);
  ASSERT_TRUE(packed.has_value()) << what << ": no kernel layout";
  const std::vector<float> ref = quant::dequantize(t);
  std::vector<double> terms;
  const std::vector<float> got = unpack(*packed, terms);
  for (size_t i = 0; i < ref.size(); ++i) {
    // One rounding of the folded parameter (scale * global, -scale * zero), of the product
    // and of the sum, on either side: 4 ulp of the largest term.
    const double bound = 4.0 * kUnitRoundoff * (terms[i] + std::fabs(ref[i]));
    ASSERT_NEAR(got[i], ref[i], bound) << what << " element " << i << " (" << packed->source << ")";
  }
  // The int8-activation kernels' 4-bit form holds the same weights.
  auto wide = pack_quantized_weight(t);
  use_nibbles64(*wide);
  std::vector<double> wide_terms;
  EXPECT_EQ(unpack(*wide, wide_terms), got) << what << " in the 64-element form";
}

quant::QuantizedTensor random_tensor(quant::ElemType elem, int64_t rows, int64_t cols,
                                     int64_t block_rows, int64_t block_cols, quant::ZeroKind zero,
                                     quant::ScaleDType scale_dtype) {
  quant::QuantizedTensor t;
  t.elem = elem;
  t.rows = rows;
  t.cols = cols;
  t.zero_kind = zero;
  t.scale_dtype = scale_dtype;
  quant::allocate_codes(t);
  const int bits = quant::elem_bits(elem);
  for (int64_t n = 0; n < rows; ++n)
    for (int64_t k = 0; k < cols; ++k) {
      uint32_t c = random_bits(bits);
      if (elem == quant::ElemType::Fp8E4M3 && (c & 0x7F) == 0x7F) c = 0x30;
      if (elem == quant::ElemType::Fp8E5M2 && ((c >> 2) & 0x1F) == 0x1F) c = 0x30;
      quant::set_code(t, n, k, c);
    }
  quant::set_scale_layout(t, block_rows, block_cols);
  for (float& s : t.scales) {
    s = uniform(0.001f, 0.1f);
    if (scale_dtype == quant::ScaleDType::F16) s = f16_to_f32(f32_to_f16(s));
  }
  for (int32_t& z : t.int_zeros) z = int32_t(random_bits(bits));
  for (float& z : t.float_zeros) z = uniform(-0.5f, 0.5f);
  return t;
}

TEST(QuantKernelPacking, EveryPlainLayoutMatchesDequantize) {
  using quant::ElemType;
  using quant::ScaleDType;
  using quant::ZeroKind;
  struct Case {
    ElemType elem;
    ZeroKind zero;
  };
  const Case cases[] = {
      {ElemType::Int4, ZeroKind::None},     {ElemType::UInt4, ZeroKind::Integer},
      {ElemType::UInt4, ZeroKind::None},    {ElemType::UInt4, ZeroKind::Float},
      {ElemType::Int8, ZeroKind::None},     {ElemType::UInt8, ZeroKind::Integer},
      {ElemType::UInt8, ZeroKind::None},    {ElemType::Int2, ZeroKind::None},
      {ElemType::Int3, ZeroKind::None},     {ElemType::UInt2, ZeroKind::Integer},
      {ElemType::UInt3, ZeroKind::Integer}, {ElemType::Fp8E4M3, ZeroKind::None},
      {ElemType::Fp8E5M2, ZeroKind::None},  {ElemType::Nf4, ZeroKind::None},
      {ElemType::Fp4E2M1, ZeroKind::None},
  };
  for (const Case& c : cases) {
    for (ScaleDType dtype : {ScaleDType::F32, ScaleDType::F16}) {
      const std::string what = std::string(quant::elem_name(c.elem)) + " zero " +
                               std::to_string(int(c.zero)) + " dtype " + std::to_string(int(dtype));
      expect_packs_exactly(random_tensor(c.elem, 5, 256, 1, 128, c.zero, dtype), what + " g128");
      expect_packs_exactly(random_tensor(c.elem, 3, 64, 1, 16, c.zero, dtype), what + " g16");
      // Per-channel with a K that is no multiple of 32 (padded), and 2-D blocks.
      expect_packs_exactly(random_tensor(c.elem, 4, 45, 1, 45, c.zero, dtype), what + " per-row");
      expect_packs_exactly(random_tensor(c.elem, 7, 96, 4, 32, c.zero, dtype),
                           what + " 4x32 blocks");
      auto global = random_tensor(c.elem, 3, 64, 1, 32, c.zero, dtype);
      global.global_scale = 0.37f;
      expect_packs_exactly(global, what + " global scale");
    }
  }
}

TEST(QuantKernelPacking, ActOrderBecomesAPermutation) {
  // GPTQ desc_act: g_idx[perm[i]] = i / group for a random permutation perm.
  auto t = random_tensor(quant::ElemType::UInt4, 6, 128, 1, 32, quant::ZeroKind::Integer,
                         quant::ScaleDType::F16);
  std::vector<int32_t> perm(128);
  for (int32_t i = 0; i < 128; ++i) perm[size_t(i)] = i;
  std::shuffle(perm.begin(), perm.end(), rng());
  t.g_idx.assign(128, 0);
  for (int32_t i = 0; i < 128; ++i) t.g_idx[size_t(perm[size_t(i)])] = i / 32;
  expect_packs_exactly(t, "act-order");
  EXPECT_FALSE(pack_quantized_weight(t)->k_permutation.empty());
  // A g_idx whose groups are not runs of `group` channels has no kernel layout.
  t.g_idx[0] = t.g_idx[0] == 0 ? 1 : 0;
  EXPECT_FALSE(pack_quantized_weight(t).has_value());
}

TEST(QuantKernelPacking, UnsupportedGroupHasNoLayout) {
  auto t = random_tensor(quant::ElemType::Int4, 2, 64, 1, 8, quant::ZeroKind::None,
                         quant::ScaleDType::F32);
  EXPECT_FALSE(pack_quantized_weight(t).has_value());
}

TEST(QuantKernelPacking, GgufBlockTypesMatchDequantize) {
  using gguf::GgmlType;
  const int64_t cols = 512;
  for (GgmlType type :
       {GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0,
        GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K}) {
    quant::QuantizedTensor t;
    t.elem = quant::ElemType::GgufBlock;
    t.gguf_type = int(type);
    t.rows = 3;
    t.cols = cols;
    quant::allocate_codes(t);
    if (gguf::can_quantize(type)) {
      std::vector<float> w(static_cast<size_t>(cols));
      for (int64_t n = 0; n < t.rows; ++n) {
        for (float& v : w) v = uniform(-1.0f, 1.0f);
        gguf::quantize_row(type, w.data(), t.codes.data() + n * t.row_bytes, cols);
      }
    } else {
      // Random bytes are valid K-quant blocks once their f16 fields are finite.
      for (auto& b : t.codes) b = uint8_t(random_bits(8));
      const int64_t block_bytes = t.row_bytes / (cols / 256);
      std::vector<int64_t> f16_fields;
      if (type == GgmlType::Q2_K) f16_fields = {80, 82};
      if (type == GgmlType::Q3_K) f16_fields = {108};
      if (type == GgmlType::Q4_K || type == GgmlType::Q5_K) f16_fields = {0, 2};
      if (type == GgmlType::Q6_K) f16_fields = {208};
      for (int64_t off = 0; off < int64_t(t.codes.size()); off += block_bytes) {
        for (int64_t f : f16_fields) {
          const uint16_t h = f32_to_f16(uniform(0.0005f, 0.01f));
          std::memcpy(t.codes.data() + off + f, &h, 2);
        }
      }
    }
    expect_packs_exactly(t, "gguf type " + std::to_string(int(type)));
  }
}

}  // namespace
}  // namespace nibble::cpu
