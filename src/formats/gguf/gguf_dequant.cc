// Reference (de)quantization, written to round exactly like gguf-py's numpy code: each
// product and sum is one float32 operation in the order numpy evaluates it (for example
// Q4_1 is (d * q) + m, and the K-quants first form d * scale per sub-block, then
// (d * scale) * q - dmin * min). A fused multiply-add would round once instead of twice,
// so contraction is switched off for this file.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "formats/gguf/gguf_dequant.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/numeric.h"
#include "formats/gguf/gguf_kquant.h"

namespace nibble::gguf {
namespace {

constexpr int kQK = 32;    // elements per block of the 32-element types
constexpr int kQKK = 256;  // elements per super-block of the K-quants

template <typename T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));  // blocks are packed: fields are not aligned
  return v;
}

float load_f16(const uint8_t* p) { return f16_to_f32(load<uint16_t>(p)); }

void store_f16(uint8_t* p, float v) {
  const uint16_t h = f32_to_f16(v);
  std::memcpy(p, &h, 2);
}

void dequant_q4_0(const uint8_t* b, float* y) {
  const float d = load_f16(b);
  const uint8_t* qs = b + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = d * float(int(qs[j] & 0xF) - 8);
    y[j + 16] = d * float(int(qs[j] >> 4) - 8);
  }
}

void dequant_q4_1(const uint8_t* b, float* y) {
  const float d = load_f16(b);
  const float m = load_f16(b + 2);
  const uint8_t* qs = b + 4;
  for (int j = 0; j < 16; ++j) {
    y[j] = (d * float(qs[j] & 0xF)) + m;
    y[j + 16] = (d * float(qs[j] >> 4)) + m;
  }
}

// The fifth bit of element j is bit j of the little-endian u32 qh.
int q5_value(const uint8_t* qs, uint32_t qh, int j) {
  const int low = j < 16 ? (qs[j] & 0xF) : (qs[j - 16] >> 4);
  return low | int(((qh >> j) & 1u) << 4);
}

void dequant_q5_0(const uint8_t* b, float* y) {
  const float d = load_f16(b);
  const uint32_t qh = load<uint32_t>(b + 2);
  for (int j = 0; j < kQK; ++j) y[j] = d * float(q5_value(b + 6, qh, j) - 16);
}

void dequant_q5_1(const uint8_t* b, float* y) {
  const float d = load_f16(b);
  const float m = load_f16(b + 2);
  const uint32_t qh = load<uint32_t>(b + 4);
  for (int j = 0; j < kQK; ++j) y[j] = (d * float(q5_value(b + 8, qh, j))) + m;
}

void dequant_q8_0(const uint8_t* b, float* y) {
  const float d = load_f16(b);
  for (int j = 0; j < kQK; ++j) y[j] = float(int8_t(b[2 + j])) * d;
}

// Layout: scales[16] (low nibble scale, high nibble min), qs[64], d, dmin.
void dequant_q2_k(const uint8_t* b, float* y) {
  const uint8_t* scales = b;
  const uint8_t* qs = b + 16;
  const float d = load_f16(b + 80);
  const float dmin = load_f16(b + 82);
  for (int e = 0; e < kQKK; ++e) {
    const int half = e / 128, shift = 2 * ((e % 128) / 32), l = e % 32;
    const uint8_t sc = scales[e / 16];
    const float dl = d * float(sc & 0xF);
    const float ml = dmin * float(sc >> 4);
    const int q = (qs[32 * half + l] >> shift) & 3;
    y[e] = dl * float(q) - ml;
  }
}

// Layout: hmask[32], qs[64], scales[12] (16 packed 6-bit scales), d.
void dequant_q3_k(const uint8_t* b, float* y) {
  const uint8_t* hmask = b;
  const uint8_t* qs = b + 32;
  const uint8_t* packed = b + 96;
  const float d = load_f16(b + 108);
  float dl[16];
  for (int i = 0; i < 16; ++i) {
    const int low = (i < 8 ? packed[i] : packed[i - 8] >> 4) & 0xF;
    const int high = (packed[8 + i % 4] >> (2 * (i / 4))) & 3;
    dl[i] = d * float((low | (high << 4)) - 32);
  }
  for (int e = 0; e < kQKK; ++e) {
    const int half = e / 128, shift = 2 * ((e % 128) / 32), l = e % 32;
    const int low = (qs[32 * half + l] >> shift) & 3;
    const int high_bit = (hmask[l] >> (e / 32)) & 1;
    // A clear hmask bit means "subtract 4".
    y[e] = dl[e / 16] * float(low - (high_bit ? 0 : 4));
  }
}

// The 8 six-bit scales and mins of Q4_K/Q5_K, packed into 12 bytes.
void unpack_k4_scales(const uint8_t* q, int* sc, int* mn) {
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      sc[j] = q[j] & 63;
      mn[j] = q[j + 4] & 63;
    } else {
      sc[j] = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
      mn[j] = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
  }
}

// Layout: d, dmin, scales[12], qs[128].
void dequant_q4_k(const uint8_t* b, float* y) {
  const float d = load_f16(b);
  const float dmin = load_f16(b + 2);
  int sc[8], mn[8];
  unpack_k4_scales(b + 4, sc, mn);
  const uint8_t* qs = b + 16;
  for (int e = 0; e < kQKK; ++e) {
    const int sub = e / 32, l = e % 32;
    const int q = (qs[32 * (sub / 2) + l] >> (4 * (sub % 2))) & 0xF;
    const float ds = d * float(sc[sub]);
    const float dm = dmin * float(mn[sub]);
    y[e] = ds * float(q) - dm;
  }
}

// Layout: d, dmin, scales[12], qh[32], qs[128].
void dequant_q5_k(const uint8_t* b, float* y) {
  const float d = load_f16(b);
  const float dmin = load_f16(b + 2);
  int sc[8], mn[8];
  unpack_k4_scales(b + 4, sc, mn);
  const uint8_t* qh = b + 16;
  const uint8_t* qs = b + 48;
  for (int e = 0; e < kQKK; ++e) {
    const int sub = e / 32, l = e % 32;
    const int low = (qs[32 * (sub / 2) + l] >> (4 * (sub % 2))) & 0xF;
    const int high = (qh[l] >> sub) & 1;
    const float ds = d * float(sc[sub]);
    const float dm = dmin * float(mn[sub]);
    y[e] = ds * float(low | (high << 4)) - dm;
  }
}

// Layout: ql[128], qh[64], scales[16] (int8), d.
void dequant_q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const uint8_t* scales = b + 192;
  const float d = load_f16(b + 208);
  for (int e = 0; e < kQKK; ++e) {
    const int half = e / 128, within = e % 128;
    const int low = (ql[64 * half + within % 64] >> (4 * (within / 64))) & 0xF;
    const int high = (qh[32 * half + within % 32] >> (2 * (within / 32))) & 3;
    const float ds = d * float(int8_t(scales[e / 16]));
    y[e] = ds * float((low | (high << 4)) - 32);
  }
}

using BlockFn = void (*)(const uint8_t*, float*);

BlockFn block_dequantizer(GgmlType type) {
  switch (type) {
    case GgmlType::Q4_0: return dequant_q4_0;
    case GgmlType::Q4_1: return dequant_q4_1;
    case GgmlType::Q5_0: return dequant_q5_0;
    case GgmlType::Q5_1: return dequant_q5_1;
    case GgmlType::Q8_0: return dequant_q8_0;
    case GgmlType::Q2_K: return dequant_q2_k;
    case GgmlType::Q3_K: return dequant_q3_k;
    case GgmlType::Q4_K: return dequant_q4_k;
    case GgmlType::Q5_K: return dequant_q5_k;
    case GgmlType::Q6_K: return dequant_q6_k;
    default: return nullptr;
  }
}

bool is_plain(GgmlType type) {
  switch (type) {
    case GgmlType::F32:
    case GgmlType::F16:
    case GgmlType::BF16:
    case GgmlType::F64:
    case GgmlType::I8:
    case GgmlType::I16:
    case GgmlType::I32:
    case GgmlType::I64: return true;
    default: return false;
  }
}

TypeTraits checked_traits(GgmlType type, int64_t n_elements, std::string_view action) {
  const auto traits = type_traits(type);
  if (!traits) fail("cannot {} unknown ggml {}", action, type_name(type));
  if (n_elements < 0 || n_elements % traits->block_elems != 0) {
    fail("cannot {} {} elements of {}: not a whole number of {}-element blocks", action, n_elements,
         traits->name, traits->block_elems);
  }
  return *traits;
}

// Block statistics with numpy's semantics (a NaN propagates through max/min).
float block_max(const float* x, int n) {
  float m = x[0];
  for (int i = 1; i < n; ++i)
    if (x[i] > m || std::isnan(x[i])) m = std::isnan(m) ? m : x[i];
  return m;
}
float block_min(const float* x, int n) {
  float m = x[0];
  for (int i = 1; i < n; ++i)
    if (x[i] < m || std::isnan(x[i])) m = std::isnan(m) ? m : x[i];
  return m;
}
// The element with the largest magnitude, sign kept (first one on ties, like argmax).
float block_signed_absmax(const float* x, int n) {
  int best = 0;
  for (int i = 1; i < n; ++i)
    if (std::fabs(x[i]) > std::fabs(x[best])) best = i;
  return x[best];
}

// trunc(v) clipped to [0, max_q], as numpy's trunc().astype(uint8).clip() does for the
// in-range values these quantizers produce.
int trunc_clip(float v, int max_q) {
  const float t = std::trunc(v);
  if (!(t > 0.0f)) return 0;
  return t >= float(max_q) ? max_q : int(t);
}

void quant_q8_0(const float* x, uint8_t* b) {
  float amax = std::fabs(x[0]);
  for (int i = 1; i < kQK; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float d = amax / 127.0f;
  const float id = d == 0.0f ? 0.0f : 1.0f / d;
  store_f16(b, d);
  for (int i = 0; i < kQK; ++i) {
    const float q = std::round(x[i] * id);  // halves away from zero, like np_roundf
    // Only degenerate blocks (subnormal amax, NaN) leave [-127, 127]; clamp instead of UB.
    const int qi = std::isnan(q) ? 0 : int(std::clamp(q, -128.0f, 127.0f));
    b[2 + i] = uint8_t(int8_t(qi));
  }
}

void quant_q4_0(const float* x, uint8_t* b) {
  const float d = block_signed_absmax(x, kQK) / -8.0f;
  const float id = d == 0.0f ? 0.0f : 1.0f / d;
  store_f16(b, d);
  for (int j = 0; j < 16; ++j) {
    const int q0 = trunc_clip(x[j] * id + 8.5f, 15);
    const int q1 = trunc_clip(x[j + 16] * id + 8.5f, 15);
    b[2 + j] = uint8_t(q0 | (q1 << 4));
  }
}

void quant_q4_1(const float* x, uint8_t* b) {
  const float max = block_max(x, kQK), min = block_min(x, kQK);
  const float d = (max - min) / 15.0f;
  const float id = d == 0.0f ? 0.0f : 1.0f / d;
  store_f16(b, d);
  store_f16(b + 2, min);
  for (int j = 0; j < 16; ++j) {
    const int q0 = trunc_clip((x[j] - min) * id + 0.5f, 15);
    const int q1 = trunc_clip((x[j + 16] - min) * id + 0.5f, 15);
    b[4 + j] = uint8_t(q0 | (q1 << 4));
  }
}

void pack_q5(const int* q, uint8_t* qh_out, uint8_t* qs_out) {
  uint32_t qh = 0;
  for (int j = 0; j < kQK; ++j) qh |= uint32_t(q[j] >> 4) << j;
  std::memcpy(qh_out, &qh, 4);
  for (int j = 0; j < 16; ++j) qs_out[j] = uint8_t((q[j] & 0xF) | ((q[j + 16] << 4) & 0xF0));
}

void quant_q5_0(const float* x, uint8_t* b) {
  const float d = block_signed_absmax(x, kQK) / -16.0f;
  const float id = d == 0.0f ? 0.0f : 1.0f / d;
  store_f16(b, d);
  int q[kQK];
  for (int j = 0; j < kQK; ++j) q[j] = trunc_clip(x[j] * id + 16.5f, 31);
  pack_q5(q, b + 2, b + 6);
}

void quant_q5_1(const float* x, uint8_t* b) {
  const float max = block_max(x, kQK), min = block_min(x, kQK);
  const float d = (max - min) / 31.0f;
  const float id = d == 0.0f ? 0.0f : 1.0f / d;
  store_f16(b, d);
  store_f16(b + 2, min);
  int q[kQK];
  for (int j = 0; j < kQK; ++j) q[j] = trunc_clip((x[j] - min) * id + 0.5f, 31);
  pack_q5(q, b + 4, b + 8);
}

using QuantFn = void (*)(const float*, uint8_t*);

QuantFn block_quantizer(GgmlType type) {
  switch (type) {
    case GgmlType::Q4_0: return quant_q4_0;
    case GgmlType::Q4_1: return quant_q4_1;
    case GgmlType::Q5_0: return quant_q5_0;
    case GgmlType::Q5_1: return quant_q5_1;
    case GgmlType::Q8_0: return quant_q8_0;
    default: return nullptr;
  }
}

}  // namespace

bool can_dequantize(GgmlType type) { return is_plain(type) || block_dequantizer(type) != nullptr; }

bool can_quantize(GgmlType type) {
  return type == GgmlType::F32 || type == GgmlType::F16 || type == GgmlType::BF16 ||
         type == GgmlType::Q4_K || block_quantizer(type) != nullptr;
}

uint64_t row_bytes(GgmlType type, int64_t n_elements) {
  const TypeTraits traits = checked_traits(type, n_elements, "size");
  return uint64_t(n_elements / traits.block_elems) * uint64_t(traits.block_bytes);
}

void dequantize_row(GgmlType type, const uint8_t* src, float* dst, int64_t n_elements) {
  const TypeTraits traits = checked_traits(type, n_elements, "dequantize");
  const size_t n = size_t(n_elements);
  switch (type) {
    case GgmlType::F32: std::memcpy(dst, src, n * 4); return;
    case GgmlType::F16:
      for (size_t i = 0; i < n; ++i) dst[i] = load_f16(src + 2 * i);
      return;
    case GgmlType::BF16:
      for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(load<uint16_t>(src + 2 * i));
      return;
    case GgmlType::F64:
      for (size_t i = 0; i < n; ++i) dst[i] = float(load<double>(src + 8 * i));
      return;
    case GgmlType::I8:
      for (size_t i = 0; i < n; ++i) dst[i] = float(int8_t(src[i]));
      return;
    case GgmlType::I16:
      for (size_t i = 0; i < n; ++i) dst[i] = float(load<int16_t>(src + 2 * i));
      return;
    case GgmlType::I32:
      for (size_t i = 0; i < n; ++i) dst[i] = float(load<int32_t>(src + 4 * i));
      return;
    case GgmlType::I64:
      for (size_t i = 0; i < n; ++i) dst[i] = float(load<int64_t>(src + 8 * i));
      return;
    default: break;
  }
  const BlockFn fn = block_dequantizer(type);
  if (!fn) fail("dequantization of ggml type {} is not supported", traits.name);
  const size_t n_blocks = n / size_t(traits.block_elems);
  for (size_t i = 0; i < n_blocks; ++i) {
    fn(src + i * size_t(traits.block_bytes), dst + i * size_t(traits.block_elems));
  }
}

void quantize_row(GgmlType type, const float* src, uint8_t* dst, int64_t n_elements) {
  const TypeTraits traits = checked_traits(type, n_elements, "quantize");
  const size_t n = size_t(n_elements);
  switch (type) {
    case GgmlType::F32: std::memcpy(dst, src, n * 4); return;
    case GgmlType::F16:
      for (size_t i = 0; i < n; ++i) store_f16(dst + 2 * i, src[i]);
      return;
    case GgmlType::BF16:
      for (size_t i = 0; i < n; ++i) {
        const uint16_t h = f32_to_bf16(src[i]);
        std::memcpy(dst + 2 * i, &h, 2);
      }
      return;
    case GgmlType::Q4_K: quantize_row_q4_k(src, dst, n_elements); return;
    default: break;
  }
  const QuantFn fn = block_quantizer(type);
  if (!fn) fail("quantization to ggml type {} is not supported", traits.name);
  const size_t n_blocks = n / size_t(traits.block_elems);
  for (size_t i = 0; i < n_blocks; ++i) {
    fn(src + i * size_t(traits.block_elems), dst + i * size_t(traits.block_bytes));
  }
}

}  // namespace nibble::gguf
