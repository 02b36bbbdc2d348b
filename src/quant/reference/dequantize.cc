#include "quant/reference/dequantize.h"

#include "core/error.h"
#include "formats/gguf/gguf_dequant.h"
#include "quant/packing.h"
#include "quant/types.h"

namespace nibble::quant {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

void allocate_codes(QuantizedTensor& t) {
  if (t.elem == ElemType::GgufBlock) {
    t.row_bytes =
        static_cast<int64_t>(gguf::row_bytes(static_cast<gguf::GgmlType>(t.gguf_type), t.cols));
  } else {
    t.row_bytes = ceil_div(t.cols * elem_bits(t.elem), 8);
  }
  t.codes.assign(static_cast<size_t>(t.rows * t.row_bytes), 0);
}

void set_scale_layout(QuantizedTensor& t, int64_t block_rows, int64_t block_cols) {
  t.scale_block_rows = block_rows;
  t.scale_block_cols = block_cols;
  t.scale_rows = ceil_div(t.rows, block_rows);
  t.scale_cols = ceil_div(t.cols, block_cols);
  const auto count = static_cast<size_t>(t.scale_rows * t.scale_cols);
  t.scales.assign(count, 0.0f);
  if (t.zero_kind == ZeroKind::Integer) t.int_zeros.assign(count, 0);
  if (t.zero_kind == ZeroKind::Float) t.float_zeros.assign(count, 0.0f);
}

void validate(const QuantizedTensor& t, std::string_view what) {
  NIBBLE_CHECK(t.rows > 0 && t.cols > 0, "{}: empty quantized tensor [{}, {}]", what, t.rows,
               t.cols);
  const int64_t expected_row_bytes =
      t.elem == ElemType::GgufBlock
          ? static_cast<int64_t>(gguf::row_bytes(static_cast<gguf::GgmlType>(t.gguf_type), t.cols))
          : ceil_div(t.cols * elem_bits(t.elem), 8);
  NIBBLE_CHECK(t.row_bytes == expected_row_bytes && int64_t(t.codes.size()) == t.rows * t.row_bytes,
               "{}: codes hold {} bytes ({} per row), expected {} rows of {}", what, t.codes.size(),
               t.row_bytes, t.rows, expected_row_bytes);
  if (t.elem == ElemType::GgufBlock) return;
  NIBBLE_CHECK(t.scale_block_rows > 0 && t.scale_block_cols > 0, "{}: scale block [{}, {}]", what,
               t.scale_block_rows, t.scale_block_cols);
  NIBBLE_CHECK(t.scale_rows == ceil_div(t.rows, t.scale_block_rows),
               "{}: {} scale rows for {} rows in blocks of {}", what, t.scale_rows, t.rows,
               t.scale_block_rows);
  if (t.g_idx.empty()) {
    NIBBLE_CHECK(t.scale_cols == ceil_div(t.cols, t.scale_block_cols),
                 "{}: {} scale columns for {} columns in groups of {}", what, t.scale_cols, t.cols,
                 t.scale_block_cols);
  } else {
    NIBBLE_CHECK(int64_t(t.g_idx.size()) == t.cols, "{}: g_idx has {} entries, expected {}", what,
                 t.g_idx.size(), t.cols);
    for (size_t k = 0; k < t.g_idx.size(); ++k)
      NIBBLE_CHECK(t.g_idx[k] >= 0 && t.g_idx[k] < t.scale_cols,
                   "{}: g_idx[{}] = {} is outside [0, {})", what, k, t.g_idx[k], t.scale_cols);
  }
  const auto count = static_cast<size_t>(t.scale_rows * t.scale_cols);
  NIBBLE_CHECK(t.scales.size() == count, "{}: {} scales, expected {}", what, t.scales.size(),
               count);
  if (t.zero_kind == ZeroKind::Integer) {
    NIBBLE_CHECK(t.int_zeros.size() == count, "{}: {} zero points, expected {}", what,
                 t.int_zeros.size(), count);
    NIBBLE_CHECK(elem_info(t.elem).unsigned_int, "{}: integer zero points need an unsigned {}",
                 what, "element type");
  }
  if (t.zero_kind == ZeroKind::Float)
    NIBBLE_CHECK(t.float_zeros.size() == count, "{}: {} zero points, expected {}", what,
                 t.float_zeros.size(), count);
}

uint32_t get_code(const QuantizedTensor& t, int64_t n, int64_t k) {
  const int bits = elem_bits(t.elem);
  return read_byte_stream(t.codes.data() + n * t.row_bytes, k * bits, bits);
}

void set_code(QuantizedTensor& t, int64_t n, int64_t k, uint32_t code) {
  const int bits = elem_bits(t.elem);
  write_byte_stream(t.codes.data() + n * t.row_bytes, k * bits, bits, code);
}

int64_t scale_index(const QuantizedTensor& t, int64_t n, int64_t k) {
  const int64_t col = t.g_idx.empty() ? k / t.scale_block_cols : t.g_idx[static_cast<size_t>(k)];
  return (n / t.scale_block_rows) * t.scale_cols + col;
}

void dequantize_rows(const QuantizedTensor& t, int64_t row_begin, int64_t row_end, float* out) {
  NIBBLE_CHECK(row_begin >= 0 && row_begin <= row_end && row_end <= t.rows,
               "quant: rows [{}, {}) outside [0, {})", row_begin, row_end, t.rows);
  if (t.elem == ElemType::GgufBlock) {
    for (int64_t n = row_begin; n < row_end; ++n)
      gguf::dequantize_row(static_cast<gguf::GgmlType>(t.gguf_type),
                           t.codes.data() + n * t.row_bytes, out + (n - row_begin) * t.cols,
                           t.cols);
    return;
  }
  const ElemTypeInfo& info = elem_info(t.elem);
  const int bits = info.bits;
  for (int64_t n = row_begin; n < row_end; ++n) {
    const uint8_t* row = t.codes.data() + n * t.row_bytes;
    float* dst = out + (n - row_begin) * t.cols;
    for (int64_t k = 0; k < t.cols; ++k) {
      const uint32_t code = read_byte_stream(row, k * bits, bits);
      const auto s = static_cast<size_t>(scale_index(t, n, k));
      const float scale = t.scales[s];
      float value;
      if (info.is_float) {
        value = decode_float_code(t.elem, code) * scale;
      } else if (info.signed_int) {
        value = static_cast<float>(sign_extend(code, bits)) * scale;
      } else if (t.zero_kind == ZeroKind::Integer) {
        value = static_cast<float>(static_cast<int32_t>(code) - t.int_zeros[s]) * scale;
      } else {
        value = static_cast<float>(code) * scale;
      }
      if (t.zero_kind == ZeroKind::Float) value += t.float_zeros[s];
      dst[k] = t.global_scale == 1.0f ? value : value * t.global_scale;
    }
  }
}

std::vector<float> dequantize(const QuantizedTensor& t) {
  validate(t, "quant");
  std::vector<float> out(static_cast<size_t>(t.rows * t.cols));
  dequantize_rows(t, 0, t.rows, out.data());
  return out;
}

}  // namespace nibble::quant
