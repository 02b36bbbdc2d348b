// Scalar reference of src/quant: bit-stream packing, fp8/fp4 encoders, RTN quantizers,
// and the symmetric-canonicalisation step of the integer loaders.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/error.h"
#include "core/numeric.h"
#include "quant/formats/int_codes.h"
#include "quant/packing.h"
#include "quant/reference/dequantize.h"
#include "quant/reference/fp8.h"
#include "quant/reference/quantize.h"
#include "quant/types.h"

namespace nibble::quant {
namespace {

std::mt19937 fresh_rng() { return std::mt19937(std::random_device{}()); }

std::vector<float> random_weights(std::mt19937& rng, size_t n, float sigma = 0.05f) {
  std::normal_distribution<float> dist(0.0f, sigma);
  std::vector<float> w(n);
  for (auto& x : w) x = dist(rng);
  return w;
}

TEST(QuantPacking, ByteStreamRoundTripsEveryWidth) {
  auto rng = fresh_rng();
  for (int bits : {2, 3, 4, 8}) {
    const int count = 67;  // odd: fields straddle bytes and the last byte is partial
    std::vector<uint32_t> values(count);
    for (auto& v : values) v = rng() & ((1u << bits) - 1);
    std::vector<uint8_t> bytes((count * bits + 7) / 8, 0);
    for (int i = 0; i < count; ++i)
      write_byte_stream(bytes.data(), int64_t(i) * bits, bits, values[i]);
    for (int i = 0; i < count; ++i)
      ASSERT_EQ(read_byte_stream(bytes.data(), int64_t(i) * bits, bits), values[i]) << bits;
  }
}

TEST(QuantPacking, GptqSymmetricZeroWordsDecodeToMidpointMinusOne) {
  // checkpoint-formats.md §1.5: v1 sym qzeros constants hold z - 1 = 2^(b-1) - 1 per field.
  const uint32_t four = 0x77777777u, eight = 0x7F7F7F7Fu, two = 0x55555555u;
  for (int i = 0; i < 8; ++i)
    EXPECT_EQ(read_word_stream(reinterpret_cast<const uint8_t*>(&four), 4, i * 4, 4), 7u);
  for (int i = 0; i < 4; ++i)
    EXPECT_EQ(read_word_stream(reinterpret_cast<const uint8_t*>(&eight), 4, i * 8, 8), 127u);
  for (int i = 0; i < 16; ++i)
    EXPECT_EQ(read_word_stream(reinterpret_cast<const uint8_t*>(&two), 4, i * 2, 2), 1u);
  const uint32_t three[3] = {0xDB6DB6DBu, 0xB6DB6DB6u, 0x6DB6DB6Du};
  for (int i = 0; i < 32; ++i)
    EXPECT_EQ(read_word_stream(reinterpret_cast<const uint8_t*>(three), 4, i * 3, 3), 3u) << i;
}

TEST(QuantPacking, ThreeBitFieldsStraddleWordsWithStride) {
  // Values 10 and 21 of a 32-value group cross word boundaries (AutoGPTQ's 10|1|10|1|10).
  auto rng = fresh_rng();
  std::vector<uint32_t> values(32);
  for (auto& v : values) v = rng() & 7u;
  // Three words, laid out as one column of a [3, 2] int32 tensor (stride 2 words).
  uint32_t words[6] = {0, 0, 0, 0, 0, 0};
  for (int i = 0; i < 32; ++i) {
    const int bit = i * 3, w = bit / 32, off = bit % 32;
    words[w * 2] |= values[i] << off;
    if (off + 3 > 32) words[(w + 1) * 2] |= values[i] >> (32 - off);
  }
  for (int i = 0; i < 32; ++i)
    EXPECT_EQ(read_word_stream(reinterpret_cast<const uint8_t*>(words), 8, i * 3, 3), values[i]);
}

TEST(QuantFp8, EveryFiniteCodeRoundTrips) {
  for (int c = 0; c < 256; ++c) {
    if ((c & 0x7f) == 0x7f) continue;  // NaN
    const float v = fp8_e4m3_to_f32(uint8_t(c));
    const uint8_t back = f32_to_fp8_e4m3(v);
    if (v == 0.0f) {
      EXPECT_EQ(back & 0x7f, 0);
      continue;
    }
    EXPECT_EQ(back, c) << v;
  }
}

TEST(QuantFp8, RoundsHalfToEvenAndSaturates) {
  // 1.0 = 0x38 and the next code 1.125 = 0x39: the midpoint goes to the even code.
  EXPECT_EQ(f32_to_fp8_e4m3(1.0625f), 0x38);
  EXPECT_EQ(f32_to_fp8_e4m3(1.1875f), 0x3a);  // between 1.125 (odd) and 1.25: up to even
  EXPECT_EQ(f32_to_fp8_e4m3(1000.0f), 0x7e);
  EXPECT_EQ(f32_to_fp8_e4m3(-1000.0f), 0xfe);
  // Subnormals are steps of 2^-9; half a step rounds to even (zero).
  EXPECT_EQ(f32_to_fp8_e4m3(std::ldexp(1.0f, -10)), 0x00);
  EXPECT_EQ(f32_to_fp8_e4m3(std::ldexp(3.0f, -10)), 0x02);
  // Random values: the nearest code, always.
  auto rng = fresh_rng();
  std::uniform_real_distribution<float> dist(-440.0f, 440.0f);
  for (int i = 0; i < 2000; ++i) {
    const float x = dist(rng);
    const float got = fp8_e4m3_to_f32(f32_to_fp8_e4m3(x));
    for (int c = 0; c < 256; ++c) {
      if ((c & 0x7f) == 0x7f) continue;
      ASSERT_LE(std::fabs(got - x), std::fabs(fp8_e4m3_to_f32(uint8_t(c)) - x)) << x;
    }
  }
}

TEST(QuantFp4, DocumentedTiesAndSaturation) {
  const std::pair<float, float> cases[] = {{0.25f, 0.0f}, {0.75f, 1.0f}, {1.25f, 1.0f},
                                           {1.75f, 2.0f}, {2.5f, 2.0f},  {3.5f, 4.0f},
                                           {5.0f, 4.0f},  {7.0f, 6.0f},  {-2.6f, -3.0f}};
  for (auto [in, out] : cases)
    EXPECT_EQ(decode_float_code(ElemType::Fp4E2M1, f32_to_fp4_e2m1(in)), out) << in;
}

TEST(QuantReference, RtnIntErrorWithinHalfAStep) {
  auto rng = fresh_rng();
  const int64_t rows = 24, cols = 96;
  const auto w = random_weights(rng, size_t(rows * cols));
  for (int bits : {2, 3, 4, 8})
    for (int64_t group : {int64_t(-1), int64_t(32)})
      for (bool sym : {true, false}) {
        const QuantizedTensor t = quantize_rtn_int(w, rows, cols, {bits, group, sym});
        validate(t, "rtn");
        const auto d = dequantize(t);
        for (int64_t n = 0; n < rows; ++n)
          for (int64_t k = 0; k < cols; ++k) {
            const float scale = t.scales[size_t(scale_index(t, n, k))];
            // Half a step from rounding, plus up to half a step where the grid edge clips
            // (+amax on the symmetric grid; the rounded zero point on the asymmetric one).
            const float bound = scale * 1.0001f;
            ASSERT_LE(std::fabs(d[size_t(n * cols + k)] - w[size_t(n * cols + k)]), bound)
                << bits << " " << group << " " << sym;
          }
      }
}

TEST(QuantReference, Fp8QuantizeErrorBound) {
  auto rng = fresh_rng();
  const int64_t rows = 40, cols = 72;  // not multiples of the block: padded edges
  const auto w = random_weights(rng, size_t(rows * cols));
  for (auto g : {Fp8Granularity::PerTensor, Fp8Granularity::PerChannel, Fp8Granularity::Block}) {
    const QuantizedTensor t = quantize_fp8_e4m3(w, rows, cols, g, 32, 32);
    validate(t, "fp8");
    const auto d = dequantize(t);
    for (size_t i = 0; i < w.size(); ++i) {
      const float scale = t.scales[size_t(scale_index(t, int64_t(i) / cols, int64_t(i) % cols))];
      // e4m3 keeps 3 mantissa bits: relative error 2^-4, or half a subnormal step.
      const float bound = std::max(std::fabs(w[i]) * 0.0625f, scale * std::ldexp(1.0f, -10));
      ASSERT_LE(std::fabs(d[i] - w[i]), bound * 1.0001f);
    }
  }
}

TEST(QuantReference, SymmetricUnsignedCodesBecomeSignedWithSameValues) {
  auto rng = fresh_rng();
  for (int bits : {2, 3, 4, 8}) {
    QuantizedTensor t;
    t.rows = 8;
    t.cols = 64;
    t.elem = unsigned_int_type(bits, "test");
    t.zero_kind = ZeroKind::Integer;
    allocate_codes(t);
    set_scale_layout(t, 1, 32);
    for (auto& s : t.scales) s = std::uniform_real_distribution<float>(0.01f, 0.1f)(rng);
    std::fill(t.int_zeros.begin(), t.int_zeros.end(), 1 << (bits - 1));
    for (int64_t n = 0; n < t.rows; ++n)
      for (int64_t k = 0; k < t.cols; ++k) set_code(t, n, k, rng() & ((1u << bits) - 1));
    const auto before = dequantize(t);
    make_signed_if_symmetric(t);
    EXPECT_EQ(t.elem, signed_int_type(bits, "test"));
    EXPECT_EQ(t.zero_kind, ZeroKind::None);
    EXPECT_EQ(dequantize(t), before);
  }
}

TEST(QuantReference, ValidateRejectsInconsistentLayouts) {
  QuantizedTensor t = quantize_rtn_int(std::vector<float>(64, 0.5f), 2, 32, {4, 16, true});
  t.g_idx.assign(32, 0);
  t.g_idx[5] = 7;  // only 2 groups
  EXPECT_THROW(validate(t, "t"), Error);
  t.g_idx.clear();
  t.scales.pop_back();
  EXPECT_THROW(validate(t, "t"), Error);
}

}  // namespace
}  // namespace nibble::quant
