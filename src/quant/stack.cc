#include "quant/stack.h"

namespace nibble::quant {
namespace {

// Rewrites a per-tensor scale (one block covering all rows) as one block per row.
QuantizedTensor per_row_scales(const QuantizedTensor& t) {
  QuantizedTensor out = t;
  out.scale_block_rows = 1;
  out.scale_rows = t.rows;
  out.scales.clear();
  out.int_zeros.clear();
  out.float_zeros.clear();
  for (int64_t r = 0; r < t.rows; ++r) {
    out.scales.insert(out.scales.end(), t.scales.begin(), t.scales.end());
    out.int_zeros.insert(out.int_zeros.end(), t.int_zeros.begin(), t.int_zeros.end());
    out.float_zeros.insert(out.float_zeros.end(), t.float_zeros.begin(), t.float_zeros.end());
  }
  return out;
}

bool same_layout(const QuantizedTensor& a, const QuantizedTensor& b) {
  return a.elem == b.elem && a.cols == b.cols && a.row_bytes == b.row_bytes &&
         a.gguf_type == b.gguf_type && a.scale_block_cols == b.scale_block_cols &&
         a.scale_cols == b.scale_cols && a.scale_block_rows == b.scale_block_rows &&
         a.scale_dtype == b.scale_dtype && a.zero_kind == b.zero_kind && a.g_idx == b.g_idx &&
         a.global_scale == b.global_scale;
}

}  // namespace

bool same_act_quant(const ActQuant& a, const ActQuant& b) {
  return a.kind == b.kind && a.group_size == b.group_size && a.input_scale == b.input_scale &&
         a.input_zero_point == b.input_zero_point;
}

std::optional<QuantizedTensor> stack_rows(const std::vector<const QuantizedTensor*>& parts) {
  if (parts.empty()) return std::nullopt;
  std::vector<QuantizedTensor> normalized;
  normalized.reserve(parts.size());
  for (const QuantizedTensor* p : parts) {
    const bool per_tensor =
        p->elem != ElemType::GgufBlock && !p->scales.empty() && p->scale_block_rows == p->rows;
    normalized.push_back(per_tensor && parts.size() > 1 ? per_row_scales(*p) : *p);
  }
  const QuantizedTensor& first = normalized.front();
  for (const QuantizedTensor& t : normalized) {
    if (!same_layout(first, t)) return std::nullopt;
    // A 2-D scale block may not straddle two parts.
    if (t.elem != ElemType::GgufBlock && !t.scales.empty() && t.rows % t.scale_block_rows != 0)
      return std::nullopt;
  }
  if (normalized.size() == 1) return std::move(normalized.front());
  QuantizedTensor out = first;
  out.rows = 0;
  out.scale_rows = 0;
  out.codes.clear();
  out.scales.clear();
  out.int_zeros.clear();
  out.float_zeros.clear();
  for (const QuantizedTensor& t : normalized) {
    out.rows += t.rows;
    out.scale_rows += t.scale_rows;
    out.codes.insert(out.codes.end(), t.codes.begin(), t.codes.end());
    out.scales.insert(out.scales.end(), t.scales.begin(), t.scales.end());
    out.int_zeros.insert(out.int_zeros.end(), t.int_zeros.begin(), t.int_zeros.end());
    out.float_zeros.insert(out.float_zeros.end(), t.float_zeros.begin(), t.float_zeros.end());
  }
  return out;
}

}  // namespace nibble::quant
