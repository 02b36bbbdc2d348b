// AutoAWQ GEMM layout: checkpoint-formats.md §2.
#include "quant/formats/int_codes.h"
#include "quant/formats/loaders.h"
#include "quant/formats/tensor_access.h"
#include "quant/packing.h"

namespace nibble::quant {
namespace {

// Nibble slot of column 8c + r is kAwqSlotOfColumn[r] (the inverse of the pack order
// [0, 2, 4, 6, 1, 3, 5, 7], which AutoAWQ chose to suit its CUDA dequantization).
constexpr int kAwqSlotOfColumn[8] = {0, 4, 1, 5, 2, 6, 3, 7};

uint32_t awq_field(const uint8_t* row_words, int64_t column) {
  const int64_t word = column / 8;
  const int slot = kAwqSlotOfColumn[column % 8];
  return (load_u32_le(row_words + word * 4) >> (4 * slot)) & 0xFu;
}

}  // namespace

QuantizedTensor load_awq(const Checkpoint& ckpt, const std::string& prefix, const AwqParams& p) {
  LayerTensors L(ckpt, prefix, "awq");
  if (p.bits != 4)
    L.fail_layer("bits={} is not supported (AWQ GEMM checkpoints are 4-bit)", p.bits);
  const CheckpointTensor& qweight = L.require("qweight");
  const CheckpointTensor& qzeros = L.require("qzeros");
  const CheckpointTensor& scales = L.require("scales");
  L.check_rank(qweight, 2);
  L.check_rank(scales, 2);
  const int64_t K = qweight.shape[0], N = qweight.shape[1] * 8;
  if (K <= 0 || N <= 0) L.fail_layer("qweight has an empty shape");
  const int64_t group = p.group_size == -1 ? K : p.group_size;
  if (group <= 0) L.fail_layer("group_size={} (expected -1 or > 0)", p.group_size);
  const int64_t groups = (K + group - 1) / group;
  // A GEMV-layout tensor ([N, K/8] with scales [N, ...]) lands here only if the config lied
  // about `version`; its scales shape gives it away.
  if (scales.shape != std::vector<int64_t>{groups, N})
    L.fail_layer(
        "scales has shape [{}, {}], expected [{}, {}] for the GEMM layout (qweight [K, N/8]); "
        "a GEMV-layout checkpoint (qweight [N, K/8]) is not supported",
        scales.shape[0], scales.shape[1], groups, N);
  L.check_shape(qzeros, {groups, N / 8});
  L.check_type(scales, {"F16", "BF16", "F32"});

  QuantizedTensor t;
  t.rows = N;
  t.cols = K;
  t.elem = ElemType::UInt4;
  t.zero_kind = ZeroKind::Integer;
  t.scale_dtype = L.scale_dtype(scales);
  allocate_codes(t);
  set_scale_layout(t, 1, group);

  const std::vector<float> scale_values = L.floats(scales);
  const uint8_t* zero_words = L.words(qzeros);
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t n = 0; n < N; ++n) {
      const auto s = static_cast<size_t>(n * groups + g);
      t.int_zeros[s] = static_cast<int32_t>(awq_field(zero_words + g * (N / 8) * 4, n));
      t.scales[s] = scale_values[size_t(g * N + n)];
    }
  const uint8_t* weight_words = L.words(qweight);
  for (int64_t k = 0; k < K; ++k) {
    const uint8_t* row = weight_words + k * (N / 8) * 4;
    for (int64_t n = 0; n < N; ++n) set_code(t, n, k, awq_field(row, n));
  }
  make_signed_if_symmetric(t);
  return t;
}

}  // namespace nibble::quant
