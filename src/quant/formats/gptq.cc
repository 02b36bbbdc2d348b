// GPTQ (AutoGPTQ / GPTQModel / optimum): checkpoint-formats.md §1.
#include "quant/formats/int_codes.h"
#include "quant/formats/loaders.h"
#include "quant/formats/tensor_access.h"
#include "quant/packing.h"

namespace nibble::quant {

QuantizedTensor load_gptq(const Checkpoint& ckpt, const std::string& prefix, const GptqParams& p) {
  LayerTensors L(ckpt, prefix, "gptq");
  const int b = p.bits;
  if (b != 2 && b != 3 && b != 4 && b != 8)
    L.fail_layer("bits={} is not supported (GPTQ packs 2, 3, 4 or 8 bits)", b);
  const CheckpointTensor& qweight = L.require("qweight");
  const CheckpointTensor& qzeros = L.require("qzeros");
  const CheckpointTensor& scales = L.require("scales");
  L.check_rank(qweight, 2);
  L.check_rank(qzeros, 2);
  L.check_rank(scales, 2);
  const int64_t packed_rows = qweight.shape[0], N = qweight.shape[1];
  // 32 values fill b words for every b (3-bit included), so K = rows · 32 / b exactly.
  if (packed_rows <= 0 || N <= 0 || (packed_rows * 32) % b != 0)
    L.fail_layer("qweight shape [{}, {}] is not [K·{}/32, N]", packed_rows, N, b);
  const int64_t K = packed_rows * 32 / b;
  if (b == 3 && (K % 32 != 0 || N % 32 != 0))
    L.fail_layer("3-bit GPTQ needs K and N multiples of 32, got K={} N={}", K, N);
  if ((N * b) % 32 != 0) L.fail_layer("N={} does not fill whole qzeros words at {} bits", N, b);
  const int64_t group = p.group_size == -1 ? K : p.group_size;
  if (group <= 0) L.fail_layer("group_size={} (expected -1 or > 0)", p.group_size);
  const int64_t groups = (K + group - 1) / group;
  L.check_shape(scales, {groups, N});
  L.check_shape(qzeros, {groups, N * b / 32});
  L.check_type(scales, {"F16", "BF16", "F32"});

  QuantizedTensor t;
  t.rows = N;
  t.cols = K;
  t.elem = unsigned_int_type(b, "gptq bits");
  t.zero_kind = ZeroKind::Integer;
  t.scale_dtype = L.scale_dtype(scales);
  allocate_codes(t);
  set_scale_layout(t, 1, group);

  // desc_act with one group is plain per-channel (vLLM does the same); without desc_act vLLM
  // ignores the stored g_idx and assumes k / G, so we do too.
  if (p.desc_act && groups > 1) {
    const CheckpointTensor& g_idx = L.require("g_idx");
    L.check_shape(g_idx, {K});
    t.g_idx = L.ints(g_idx);
    for (int64_t k = 0; k < K; ++k)
      if (t.g_idx[size_t(k)] < 0 || t.g_idx[size_t(k)] >= groups)
        L.fail_layer("g_idx[{}] = {} is outside [0, {})", k, t.g_idx[size_t(k)], groups);
  }

  const std::vector<float> scale_values = L.floats(scales);
  const uint8_t* zero_words = L.words(qzeros);
  const uint32_t field_max = (1u << b) - 1;
  for (int64_t g = 0; g < groups; ++g) {
    const uint8_t* zero_row = zero_words + g * (N * b / 32) * 4;
    for (int64_t n = 0; n < N; ++n) {
      const uint32_t field = read_word_stream(zero_row, 4, n * b, b);
      // v1 stores z - 1. A field of all ones there means z - 1 = -1 was ORed into the word,
      // which also corrupted the fields above it (AutoGPTQ), or a borrow crossed fields
      // (GPTQModel's v2→v1 subtraction): the zero points of this word cannot be recovered.
      if (!p.v2 && field == field_max)
        L.fail_layer(
            "qzeros[{}] column {} holds {} in a checkpoint_format 'gptq' (v1) file: a zero "
            "point of 0 underflowed when it was written and the neighbouring zero points of "
            "that word are unreliable; re-export with checkpoint_format 'gptq_v2' or "
            "symmetric quantization",
            g, n, field);
      const auto s = static_cast<size_t>(n * groups + g);
      t.int_zeros[s] = static_cast<int32_t>(p.v2 ? field : field + 1);
      t.scales[s] = scale_values[size_t(g * N + n)];
    }
  }

  const uint8_t* weight_words = L.words(qweight);
  for (int64_t n = 0; n < N; ++n) {
    // Column n of qweight is one bitstream down the rows (stride N words).
    const uint8_t* column = weight_words + n * 4;
    for (int64_t k = 0; k < K; ++k) set_code(t, n, k, read_word_stream(column, N * 4, k * b, b));
  }
  drop_trivial_g_idx(t);
  make_signed_if_symmetric(t);
  return t;
}

}  // namespace nibble::quant
