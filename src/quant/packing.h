#pragma once
// Bit-field access to little-endian bitstreams. Every packed layout of the supported formats is
// such a stream (GPTQ 3-bit included: its 10|1|10|1|10 split over three int32 words is the
// dense 96-bit little-endian stream), differing only in which words make up one stream:
// contiguous bytes (a QuantizedTensor row, compressed-tensors rows) or int32 words taken with a
// stride (a GPTQ qweight column walks down the rows of [K·b/32, N]).
#include <cstdint>
#include <cstring>

namespace nibble::quant {

inline uint32_t load_u32_le(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);  // the targets are little-endian, like every format here
  return v;
}

// Reads the `bits`-wide field at stream bit `bit`, where stream word i (32 bits) is at
// words + i * word_stride_bytes. A field may straddle two words (3-bit).
inline uint32_t read_word_stream(const uint8_t* words, int64_t word_stride_bytes, int64_t bit,
                                 int bits) {
  const int64_t word = bit >> 5;
  const int offset = static_cast<int>(bit & 31);
  uint64_t v = load_u32_le(words + word * word_stride_bytes);
  if (offset + bits > 32) v |= uint64_t(load_u32_le(words + (word + 1) * word_stride_bytes)) << 32;
  return static_cast<uint32_t>((v >> offset) & ((uint64_t(1) << bits) - 1));
}

// Byte-granular streams (QuantizedTensor rows): never reads past the last byte holding the field.
inline uint32_t read_byte_stream(const uint8_t* bytes, int64_t bit, int bits) {
  const int64_t first = bit >> 3;
  const int offset = static_cast<int>(bit & 7);
  const int nbytes = (offset + bits + 7) >> 3;
  uint64_t v = 0;
  for (int i = 0; i < nbytes; ++i) v |= uint64_t(bytes[first + i]) << (8 * i);
  return static_cast<uint32_t>((v >> offset) & ((uint64_t(1) << bits) - 1));
}

inline void write_byte_stream(uint8_t* bytes, int64_t bit, int bits, uint32_t value) {
  const uint64_t mask = (uint64_t(1) << bits) - 1;
  const int64_t first = bit >> 3;
  const int offset = static_cast<int>(bit & 7);
  const int nbytes = (offset + bits + 7) >> 3;
  const uint64_t field = (uint64_t(value) & mask) << offset;
  const uint64_t keep = ~(mask << offset);
  for (int i = 0; i < nbytes; ++i) {
    const int shift = 8 * i;
    bytes[first + i] =
        static_cast<uint8_t>((bytes[first + i] & (keep >> shift)) | (field >> shift));
  }
}

}  // namespace nibble::quant
