// GGUF block types mapped exactly onto the kernels' layout: every ggml block becomes codes plus
// one scale (and min) per 32 or 16 elements, computed with the same f32 operations as the
// reference dequantization (formats/gguf/gguf_dequant.cc), so d * value + min reproduces it.
// Block layouts: ggml's block_q* structs.
#include <cstring>

#include "backend/cpu/quant/packing_builder.h"
#include "core/numeric.h"
#include "formats/gguf/gguf_file.h"

namespace nibble::cpu {
namespace {

using gguf::GgmlType;

float load_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// The fifth bit of element j is bit j of the little-endian u32 qh.
int q5_value(const uint8_t* qs, uint32_t qh, int j) {
  const int low = j < 16 ? (qs[j] & 0xF) : (qs[j - 16] >> 4);
  return low | int(((qh >> j) & 1u) << 4);
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

// Decodes one block into codes (as the packed kind stores them), scales and mins.
using BlockFn = void (*)(const uint8_t* b, uint8_t* codes, float* scales, float* mins);

void block_q4_0(const uint8_t* b, uint8_t* codes, float* scales, float*) {
  scales[0] = load_f16(b);
  for (int j = 0; j < 16; ++j) {
    codes[j] = b[2 + j] & 0xF;
    codes[j + 16] = b[2 + j] >> 4;
  }
}

void block_q4_1(const uint8_t* b, uint8_t* codes, float* scales, float* mins) {
  scales[0] = load_f16(b);
  mins[0] = load_f16(b + 2);
  for (int j = 0; j < 16; ++j) {
    codes[j] = b[4 + j] & 0xF;
    codes[j + 16] = b[4 + j] >> 4;
  }
}

void block_q5_0(const uint8_t* b, uint8_t* codes, float* scales, float*) {
  scales[0] = load_f16(b);
  const uint32_t qh = load_u32(b + 2);
  for (int j = 0; j < 32; ++j) codes[j] = uint8_t(int8_t(q5_value(b + 6, qh, j) - 16));
}

void block_q5_1(const uint8_t* b, uint8_t* codes, float* scales, float* mins) {
  scales[0] = load_f16(b);
  mins[0] = load_f16(b + 2);
  const uint32_t qh = load_u32(b + 4);
  for (int j = 0; j < 32; ++j) codes[j] = uint8_t(q5_value(b + 8, qh, j));
}

void block_q8_0(const uint8_t* b, uint8_t* codes, float* scales, float*) {
  scales[0] = load_f16(b);
  std::memcpy(codes, b + 2, 32);
}

void block_q2_k(const uint8_t* b, uint8_t* codes, float* scales, float* mins) {
  const uint8_t* sc = b;
  const uint8_t* qs = b + 16;
  const float d = load_f16(b + 80), dmin = load_f16(b + 82);
  for (int i = 0; i < 16; ++i) {
    scales[i] = d * float(sc[i] & 0xF);
    mins[i] = -(dmin * float(sc[i] >> 4));
  }
  for (int e = 0; e < 256; ++e) {
    const int half = e / 128, shift = 2 * ((e % 128) / 32), l = e % 32;
    codes[e] = uint8_t((qs[32 * half + l] >> shift) & 3);
  }
}

void block_q3_k(const uint8_t* b, uint8_t* codes, float* scales, float*) {
  const uint8_t* hmask = b;
  const uint8_t* qs = b + 32;
  const uint8_t* packed = b + 96;
  const float d = load_f16(b + 108);
  for (int i = 0; i < 16; ++i) {
    const int low = (i < 8 ? packed[i] : packed[i - 8] >> 4) & 0xF;
    const int high = (packed[8 + i % 4] >> (2 * (i / 4))) & 3;
    scales[i] = d * float((low | (high << 4)) - 32);
  }
  for (int e = 0; e < 256; ++e) {
    const int half = e / 128, shift = 2 * ((e % 128) / 32), l = e % 32;
    const int low = (qs[32 * half + l] >> shift) & 3;
    const int high_bit = (hmask[l] >> (e / 32)) & 1;
    codes[e] = uint8_t(int8_t(low - (high_bit ? 0 : 4)));
  }
}

void k4_params(const uint8_t* b, float* scales, float* mins) {
  const float d = load_f16(b), dmin = load_f16(b + 2);
  int sc[8], mn[8];
  unpack_k4_scales(b + 4, sc, mn);
  for (int i = 0; i < 8; ++i) {
    scales[i] = d * float(sc[i]);
    mins[i] = -(dmin * float(mn[i]));
  }
}

void block_q4_k(const uint8_t* b, uint8_t* codes, float* scales, float* mins) {
  k4_params(b, scales, mins);
  const uint8_t* qs = b + 16;
  for (int e = 0; e < 256; ++e) {
    const int sub = e / 32, l = e % 32;
    codes[e] = uint8_t((qs[32 * (sub / 2) + l] >> (4 * (sub % 2))) & 0xF);
  }
}

void block_q5_k(const uint8_t* b, uint8_t* codes, float* scales, float* mins) {
  k4_params(b, scales, mins);
  const uint8_t* qh = b + 16;
  const uint8_t* qs = b + 48;
  for (int e = 0; e < 256; ++e) {
    const int sub = e / 32, l = e % 32;
    const int low = (qs[32 * (sub / 2) + l] >> (4 * (sub % 2))) & 0xF;
    const int high = (qh[l] >> sub) & 1;
    codes[e] = uint8_t(low | (high << 4));
  }
}

void block_q6_k(const uint8_t* b, uint8_t* codes, float* scales, float*) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const uint8_t* sc = b + 192;
  const float d = load_f16(b + 208);
  for (int i = 0; i < 16; ++i) scales[i] = d * float(int8_t(sc[i]));
  for (int e = 0; e < 256; ++e) {
    const int half = e / 128, within = e % 128;
    const int low = (ql[64 * half + within % 64] >> (4 * (within / 64))) & 0xF;
    const int high = (qh[32 * half + within % 32] >> (2 * (within / 32))) & 3;
    codes[e] = uint8_t(int8_t((low | (high << 4)) - 32));
  }
}

struct GgufMapping {
  BlockFn fn;
  QuantCodes kind;
  int block_elems;
  int block_bytes;
  int group;
  bool mins;
  const char* name;
};

std::optional<GgufMapping> mapping(GgmlType type) {
  switch (type) {
    case GgmlType::Q4_0:
      return GgufMapping{block_q4_0, QuantCodes::U4Sym, 32, 18, 32, false, "q4_0"};
    case GgmlType::Q4_1: return GgufMapping{block_q4_1, QuantCodes::U4, 32, 20, 32, true, "q4_1"};
    case GgmlType::Q5_0: return GgufMapping{block_q5_0, QuantCodes::S8, 32, 22, 32, false, "q5_0"};
    case GgmlType::Q5_1: return GgufMapping{block_q5_1, QuantCodes::S8, 32, 24, 32, true, "q5_1"};
    case GgmlType::Q8_0: return GgufMapping{block_q8_0, QuantCodes::S8, 32, 34, 32, false, "q8_0"};
    case GgmlType::Q2_K: return GgufMapping{block_q2_k, QuantCodes::S8, 256, 84, 16, true, "q2_k"};
    case GgmlType::Q3_K:
      return GgufMapping{block_q3_k, QuantCodes::S8, 256, 110, 16, false, "q3_k"};
    case GgmlType::Q4_K: return GgufMapping{block_q4_k, QuantCodes::U4, 256, 144, 32, true, "q4_k"};
    case GgmlType::Q5_K: return GgufMapping{block_q5_k, QuantCodes::S8, 256, 176, 32, true, "q5_k"};
    case GgmlType::Q6_K:
      return GgufMapping{block_q6_k, QuantCodes::S8, 256, 210, 16, false, "q6_k"};
    default: return std::nullopt;
  }
}

}  // namespace

std::optional<PackedQuantWeight> pack_gguf_weight(const quant::QuantizedTensor& t) {
  const auto m = mapping(static_cast<GgmlType>(t.gguf_type));
  if (!m || t.cols % m->block_elems != 0) return std::nullopt;
  const int groups_per_block = m->block_elems / m->group;
  PackedQuantWeight packed =
      build_packed_weight(m->kind, t.rows, t.cols, m->group, m->mins,
                          [&](int64_t n, uint8_t* codes, float* scales, float* mins) {
                            const uint8_t* row = t.codes.data() + n * t.row_bytes;
                            for (int64_t blk = 0; blk < t.cols / m->block_elems; ++blk) {
                              m->fn(row + blk * m->block_bytes, codes + blk * m->block_elems,
                                    scales + blk * groups_per_block, mins + blk * groups_per_block);
                            }
                          });
  packed.source = std::string("gguf ") + m->name;
  return packed;
}

}  // namespace nibble::cpu
