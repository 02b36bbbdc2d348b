// compressed-tensors (llm-compressor output): checkpoint-formats.md §3.4.
#include <cstring>

#include "quant/formats/int_codes.h"
#include "quant/formats/loaders.h"
#include "quant/formats/tensor_access.h"
#include "quant/packing.h"

namespace nibble::quant {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

struct ScaleBlock {
  int64_t rows, cols;
};

// The scale block implied by the strategy, after checking the scale tensor has the shape
// compressed-tensors gives it (initialize_qparams).
ScaleBlock scale_block(const LayerTensors& L, const CtWeightArgs& a, const CheckpointTensor& scale,
                       int64_t N, int64_t K) {
  const std::string& s = a.strategy;
  if (s == "tensor") {
    if (L.numel(scale) != 1)
      L.fail_layer("strategy 'tensor' needs a single weight_scale, got {} values", L.numel(scale));
    return {N, K};
  }
  if (s == "channel") {
    if (L.numel(scale) != N || scale.shape.empty() || scale.shape[0] != N)
      L.fail_layer("strategy 'channel' needs weight_scale [{}, 1]", N);
    return {1, K};
  }
  if (s == "group" || s == "tensor_group") {
    if (a.group_size <= 0) L.fail_layer("strategy '{}' needs group_size > 0", s);
    L.check_shape(scale, {N, ceil_div(K, a.group_size)});
    return {1, a.group_size};
  }
  if (s == "block") {
    if (a.block_rows <= 0 || a.block_cols <= 0)
      L.fail_layer("strategy 'block' needs block_structure [rows, cols]");
    L.check_shape(scale, {ceil_div(N, a.block_rows), ceil_div(K, a.block_cols)});
    return {a.block_rows, a.block_cols};
  }
  L.fail_layer("weight strategy '{}' is not supported for weights", s);
}

void load_g_idx(const LayerTensors& L, QuantizedTensor& t) {
  const CheckpointTensor* g_idx = L.find("weight_g_idx");
  if (g_idx == nullptr) return;
  L.check_shape(*g_idx, {t.cols});
  t.g_idx = L.ints(*g_idx);
  for (int64_t k = 0; k < t.cols; ++k)
    if (t.g_idx[size_t(k)] < 0 || t.g_idx[size_t(k)] >= t.scale_cols)
      L.fail_layer("weight_g_idx[{}] = {} is outside [0, {})", k, t.g_idx[size_t(k)], t.scale_cols);
  drop_trivial_g_idx(t);
}

}  // namespace

QuantizedTensor load_ct_pack_quantized(const Checkpoint& ckpt, const std::string& prefix,
                                       const CtWeightArgs& a) {
  LayerTensors L(ckpt, prefix, "compressed-tensors pack-quantized");
  if (a.is_float) L.fail_layer("pack-quantized holds integer weights, the config says float");
  const int b = a.bits;
  if (b != 2 && b != 3 && b != 4 && b != 8)
    L.fail_layer("num_bits={} is not supported (expected 2, 3, 4 or 8)", b);
  const CheckpointTensor& packed = L.require("weight_packed");
  const CheckpointTensor& shape = L.require("weight_shape");
  const CheckpointTensor& scale = L.require("weight_scale");
  L.check_shape(shape, {2});
  const std::vector<int32_t> nk = L.ints(shape);
  const int64_t N = nk[0], K = nk[1];
  if (N <= 0 || K <= 0) L.fail_layer("weight_shape [{}, {}] is empty", N, K);
  // Rows are padded to whole int32 words; within a row element k sits at stream bit k·b.
  const int64_t words_per_row = ceil_div(K * b, 32);
  L.check_shape(packed, {N, words_per_row});
  L.check_type(scale, {"F16", "BF16", "F32"});
  const ScaleBlock block = scale_block(L, a, scale, N, K);

  QuantizedTensor t;
  t.rows = N;
  t.cols = K;
  t.elem = unsigned_int_type(b, "compressed-tensors num_bits");
  t.zero_kind = ZeroKind::Integer;
  t.scale_dtype = L.scale_dtype(scale);
  allocate_codes(t);
  set_scale_layout(t, block.rows, block.cols);
  const std::vector<float> scale_values = L.floats(scale);
  std::memcpy(t.scales.data(), scale_values.data(), t.scales.size() * sizeof(float));

  const int32_t offset = 1 << (b - 1);
  if (a.symmetric) {
    std::fill(t.int_zeros.begin(), t.int_zeros.end(), offset);
  } else {
    // Zero points (signed, stored + 2^(b-1)) packed along N: [⌈N·b/32⌉, groups].
    const CheckpointTensor& zp = L.require("weight_zero_point");
    const int64_t zcols = t.scale_cols;
    if (block.rows != 1) L.fail_layer("asymmetric pack-quantized needs channel or group scales");
    L.check_shape(zp, {ceil_div(N * b, 32), zcols});
    const uint8_t* words = L.words(zp);
    for (int64_t g = 0; g < zcols; ++g)
      for (int64_t n = 0; n < N; ++n)
        t.int_zeros[size_t(n * zcols + g)] =
            static_cast<int32_t>(read_word_stream(words + g * 4, zcols * 4, n * b, b));
  }
  const uint8_t* words = L.words(packed);
  for (int64_t n = 0; n < N; ++n) {
    const uint8_t* row = words + n * words_per_row * 4;
    for (int64_t k = 0; k < K; ++k) set_code(t, n, k, read_word_stream(row, 4, k * b, b));
  }
  load_g_idx(L, t);
  make_signed_if_symmetric(t);
  return t;
}

QuantizedTensor load_ct_unpacked(const Checkpoint& ckpt, const std::string& prefix,
                                 const CtWeightArgs& a) {
  LayerTensors L(ckpt, prefix, "compressed-tensors");
  const CheckpointTensor& weight = L.require("weight");
  const CheckpointTensor& scale = L.require("weight_scale");
  L.check_rank(weight, 2);
  const int64_t N = weight.shape[0], K = weight.shape[1];
  if (a.is_float) {
    if (a.bits != 8) L.fail_layer("float weights of {} bits are not supported here", a.bits);
    L.check_type(weight, {"F8_E4M3"});
    if (!a.symmetric) L.fail_layer("asymmetric float weights are not supported");
  } else {
    if (a.bits > 8) L.fail_layer("num_bits={} does not fit the int8 container", a.bits);
    L.check_type(weight, {"I8"});
  }
  L.check_type(scale, {"F16", "BF16", "F32"});
  const ScaleBlock block = scale_block(L, a, scale, N, K);
  if (weight.data == nullptr || weight.nbytes != uint64_t(N * K))
    L.fail_layer("tensor '{}' holds {} bytes, expected {}", weight.name, weight.nbytes, N * K);

  QuantizedTensor t;
  t.rows = N;
  t.cols = K;
  const bool asym_int = !a.is_float && !a.symmetric;
  t.elem = a.is_float ? ElemType::Fp8E4M3 : (asym_int ? ElemType::UInt8 : ElemType::Int8);
  t.zero_kind = asym_int ? ZeroKind::Integer : ZeroKind::None;
  t.scale_dtype = L.scale_dtype(scale);
  allocate_codes(t);
  set_scale_layout(t, block.rows, block.cols);
  const std::vector<float> scale_values = L.floats(scale);
  std::memcpy(t.scales.data(), scale_values.data(), t.scales.size() * sizeof(float));
  // Codes are the stored bytes; an asymmetric int8 code q (and its zero point) gets +128 so
  // that (q + 128) - (zp + 128) = q - zp in unsigned form.
  std::memcpy(t.codes.data(), weight.data, t.codes.size());
  if (asym_int) {
    const CheckpointTensor& zp = L.require("weight_zero_point");
    if (L.numel(zp) != int64_t(t.int_zeros.size()))
      L.fail_layer("weight_zero_point has {} values, expected {}", L.numel(zp), t.int_zeros.size());
    const std::vector<int32_t> zeros = L.ints(zp);
    for (size_t i = 0; i < zeros.size(); ++i) t.int_zeros[i] = zeros[i] + 128;
    for (uint8_t& c : t.codes) c ^= 0x80;
  }
  load_g_idx(L, t);
  return t;
}

}  // namespace nibble::quant
