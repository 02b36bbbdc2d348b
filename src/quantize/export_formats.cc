#include "quantize/export_formats.h"

#include <fmt/format.h>

#include <algorithm>

#include "core/error.h"
#include "model/loader.h"
#include "quant/reference/dequantize.h"
#include "quant/reference/fp8.h"
#include "quant/types.h"
#include "quantize/export_common.h"

namespace nibble::quantize {
namespace {

using nlohmann::json;
using quant::QuantizedTensor;

// What the export's quantization config records about the integer weights.
struct IntLayout {
  int bits = 4;
  int64_t group = 128;  // -1: per channel
  bool symmetric = true;
  bool act_order = false;  // some layer stores a g_idx
};

IntLayout int_layout(const QuantizedModel& model, const Recipe& r) {
  IntLayout l{r.bits, r.group_size, r.symmetric, false};
  for (const auto& [_, s] : model.linears) l.act_order = l.act_order || !s.weight.g_idx.empty();
  return l;
}

int64_t group_of(const QuantizedTensor& t, int64_t k) {
  return t.g_idx.empty() ? k / t.scale_block_cols : t.g_idx[size_t(k)];
}

std::vector<float> scale_column_major(const QuantizedTensor& t) {
  // [groups, N] (GPTQ/AWQ orientation) from the [N, groups] table.
  std::vector<float> out(static_cast<size_t>(t.scale_cols * t.rows));
  for (int64_t n = 0; n < t.rows; ++n)
    for (int64_t g = 0; g < t.scale_cols; ++g)
      out[size_t(g * t.rows + n)] = t.scales[size_t(n * t.scale_cols + g)];
  return out;
}

json ignore_list(const ModelSource& source, const QuantizedModel& model) {
  json ignore = json::array();
  if (!source.config.tie_word_embeddings || source.checkpoint->find("lm_head.weight"))
    ignore.push_back("lm_head");
  for (const auto& m : unquantized_linears(source, model)) ignore.push_back(m);
  return ignore;
}

// ---- compressed-tensors ----------------------------------------------------------------------

json ct_args(int bits, const std::string& type, bool symmetric, const std::string& strategy,
             json group_size, bool dynamic, json block = nullptr, json actorder = nullptr,
             json observer = "minmax") {
  return {{"num_bits", bits},       {"type", type},
          {"symmetric", symmetric}, {"group_size", group_size},
          {"strategy", strategy},   {"block_structure", block},
          {"dynamic", dynamic},     {"actorder", actorder},
          {"observer", observer},   {"observer_kwargs", json::object()}};
}

void ct_pack_quantized(const std::string& p, const QuantizedTensor& t,
                       std::vector<ExportTensor>& out) {
  const int b = quant::elem_bits(t.elem);
  const int64_t N = t.rows, K = t.cols, words = (K * b + 31) / 32, G = t.scale_cols;
  std::vector<uint32_t> packed(static_cast<size_t>(N * words), 0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k)
      set_word_field(packed, n * words, 1, k * b, b, unsigned_code(t, n, k));
  add_tensor(out, p + ".weight_packed", DType::I32, {N, words}, raw_bytes(packed));
  add_tensor(out, p + ".weight_scale", scale_dtype_to_dtype(t.scale_dtype), {N, G},
             encode_floats(t.scales, scale_dtype_to_dtype(t.scale_dtype)));
  add_tensor(out, p + ".weight_shape", DType::I64, {2}, raw_bytes(std::vector<int64_t>{N, K}));
  if (t.zero_kind == quant::ZeroKind::Integer) {
    const int64_t zrows = (N * b + 31) / 32;
    std::vector<uint32_t> zp(static_cast<size_t>(zrows * G), 0);
    for (int64_t g = 0; g < G; ++g)
      for (int64_t n = 0; n < N; ++n)
        set_word_field(zp, g, G, n * b, b, unsigned_zero(t, n * G + g));
    add_tensor(out, p + ".weight_zero_point", DType::I32, {zrows, G}, raw_bytes(zp));
  }
  if (!t.g_idx.empty()) add_tensor(out, p + ".weight_g_idx", DType::I32, {K}, raw_bytes(t.g_idx));
}

void ct_unpacked(const std::string& p, const quant::LinearScheme& s, const Recipe& r,
                 std::vector<ExportTensor>& out) {
  const QuantizedTensor& t = s.weight;
  const bool fp8 = t.elem == quant::ElemType::Fp8E4M3;
  NIBBLE_CHECK(fp8 || t.elem == quant::ElemType::Int8, "{}: int-quantized export needs int8 codes",
               p);
  add_tensor(out, p + ".weight", fp8 ? DType::F8_E4M3 : DType::I8, {t.rows, t.cols}, t.codes);
  // The shape names the strategy (a 128×128 block on a 128×128 weight is still "block").
  std::vector<int64_t> scale_shape;
  if (r.fp8_per_tensor) {
    scale_shape = {1};
  } else if (r.fp8_block || (r.kind == WeightKind::Int && r.group_size != -1)) {
    scale_shape = {t.scale_rows, t.scale_cols};
  } else {
    scale_shape = {t.rows, 1};
  }
  add_tensor(out, p + ".weight_scale", scale_dtype_to_dtype(t.scale_dtype), scale_shape,
             encode_floats(t.scales, scale_dtype_to_dtype(t.scale_dtype)));
  if (s.act.input_scale)
    add_tensor(out, p + ".input_scale", DType::F32, {1},
               encode_floats({*s.act.input_scale}, DType::F32));
}

json compressed_tensors_config(const ModelSource& source, const QuantizedModel& model,
                               const Recipe& r) {
  json weights, input = nullptr;
  std::string format;
  if (r.kind == WeightKind::Int) {
    const IntLayout l = int_layout(model, r);
    const bool channel = l.group == -1;
    weights = ct_args(l.bits, "int", l.symmetric, channel ? "channel" : "group",
                      channel ? json(nullptr) : json(l.group), false, nullptr,
                      l.act_order   ? json("group")
                      : r.act_order ? json("weight")
                                    : json(nullptr));
    if (r.act == quant::ActQuantKind::DynamicPerTokenInt8) {
      input = ct_args(8, "int", true, "token", nullptr, true, nullptr, nullptr, nullptr);
      format = "int-quantized";
    } else {
      format = "pack-quantized";
    }
  } else {
    format = "float-quantized";
    if (r.fp8_per_tensor) {
      weights = ct_args(8, "float", true, "tensor", nullptr, false);
      input = ct_args(8, "float", true, "tensor", nullptr, false);
    } else if (r.fp8_block) {
      weights = ct_args(8, "float", true, "block", nullptr, false,
                        json::array({r.fp8_block, r.fp8_block}));
      input = ct_args(8, "float", true, "group", r.act_group_size, true, nullptr, nullptr, nullptr);
    } else {
      weights = ct_args(8, "float", true, "channel", nullptr, false);
      input = ct_args(8, "float", true, "token", nullptr, true, nullptr, nullptr, nullptr);
    }
  }
  // LLM Compressor's kv_cache_scheme for static per-tensor fp8 K/V.
  const json kv_cache_scheme =
      model.kv_scales.empty() ? json(nullptr) : ct_args(8, "float", true, "tensor", nullptr, false);
  json group = {{"targets", json::array({"Linear"})},
                {"weights", weights},
                {"input_activations", input},
                {"output_activations", nullptr},
                {"format", format}};
  return {{"quant_method", "compressed-tensors"}, {"format", format},
          {"quantization_status", "compressed"},  {"config_groups", {{"group_0", group}}},
          {"ignore", ignore_list(source, model)}, {"kv_cache_scheme", kv_cache_scheme},
          {"global_compression_ratio", nullptr},  {"sparsity_config", json::object()},
          {"transform_config", json::object()},   {"version", "0.12.2"}};
}

void export_compressed_tensors(const ModelSource& source, const QuantizedModel& model,
                               const Recipe& r, const std::filesystem::path& out, bool force) {
  std::vector<ExportTensor> tensors;
  add_dense_tensors(source, model, tensors);
  for (const auto& [module, s] : model.linears) {
    if (r.kind == WeightKind::Int && r.act == quant::ActQuantKind::None) {
      ct_pack_quantized(module, s.weight, tensors);
    } else {
      ct_unpacked(module, s, r, tensors);
    }
  }
  // On the attention module, as LLM Compressor's initialize_attn_qparams places them.
  for (size_t layer = 0; layer < model.kv_scales.size(); ++layer) {
    const std::string attn = fmt::format("model.layers.{}.self_attn.", layer);
    add_tensor(tensors, attn + "k_scale", DType::F32, {1},
               encode_floats({model.kv_scales[layer].first}, DType::F32));
    add_tensor(tensors, attn + "v_scale", DType::F32, {1},
               encode_floats({model.kv_scales[layer].second}, DType::F32));
  }
  write_export_directory(source, out, std::move(tensors),
                         compressed_tensors_config(source, model, r), {}, force);
}

// ---- GPTQ (v1) -------------------------------------------------------------------------------

void export_gptq(const ModelSource& source, const QuantizedModel& model, const Recipe& r,
                 const std::filesystem::path& out, bool force) {
  const IntLayout l = int_layout(model, r);
  std::vector<ExportTensor> tensors;
  add_dense_tensors(source, model, tensors);
  for (const auto& [p, s] : model.linears) {
    const QuantizedTensor& t = s.weight;
    const int b = quant::elem_bits(t.elem);
    const int64_t N = t.rows, K = t.cols, G = t.scale_cols;
    NIBBLE_CHECK((K * b) % 32 == 0 && (N * b) % 32 == 0,
                 "{}: GPTQ packs {}-bit codes into int32 words: [N={}, K={}] must fill whole words "
                 "along both dimensions",
                 p, b, N, K);
    const int64_t qrows = K * b / 32, zcols = N * b / 32;
    std::vector<uint32_t> qweight(static_cast<size_t>(qrows * N), 0);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k)
        set_word_field(qweight, n, N, k * b, b, unsigned_code(t, n, k));
    std::vector<uint32_t> qzeros(static_cast<size_t>(G * zcols), 0);
    for (int64_t g = 0; g < G; ++g)
      for (int64_t n = 0; n < N; ++n) {
        const uint32_t z = unsigned_zero(t, n * G + g);
        NIBBLE_CHECK(z >= 1, "{}: zero point 0 cannot be stored in GPTQ v1 (z − 1 underflows)", p);
        set_word_field(qzeros, g * zcols, 1, n * b, b, z - 1);
      }
    std::vector<int32_t> g_idx(static_cast<size_t>(K));
    for (int64_t k = 0; k < K; ++k) g_idx[size_t(k)] = int32_t(group_of(t, k));
    add_tensor(tensors, p + ".qweight", DType::I32, {qrows, N}, raw_bytes(qweight));
    add_tensor(tensors, p + ".qzeros", DType::I32, {G, zcols}, raw_bytes(qzeros));
    add_tensor(tensors, p + ".scales", DType::F16, {G, N},
               encode_floats(scale_column_major(t), DType::F16));
    add_tensor(tensors, p + ".g_idx", DType::I32, {K}, raw_bytes(g_idx));
  }
  json config = {
      {"bits", l.bits},
      {"group_size", l.group},
      {"desc_act", l.act_order},
      {"sym", l.symmetric},
      {"static_groups", r.static_groups},
      {"lm_head", false},
      {"damp_percent", r.damp_percent},
      {"true_sequential", true},
      {"model_name_or_path", nullptr},
      {"model_file_base_name", "model"},
      {"quant_method", "gptq"},
      {"checkpoint_format", "gptq"},
      {"pack_dtype", "int32"},
      {"meta", {{"quantizer", json::array({"nibble"})}, {"method", method_name(r.method)}}}};
  // GPTQModel's way to say a module stays dense: a negative "-:" rule (vLLM honours it).
  const auto dense = unquantized_linears(source, model);
  if (!dense.empty()) {
    json dynamic = json::object();
    for (const auto& m : dense) {
      std::string escaped;
      for (char c : m) {
        if (c == '.') escaped += '\\';
        escaped += c;
      }
      dynamic["-:" + escaped] = json::object();
    }
    config["dynamic"] = dynamic;
  }
  write_export_directory(source, out, std::move(tensors), config,
                         {{"quantize_config.json", config}}, force);
}

// ---- AWQ (AutoAWQ GEMM) ----------------------------------------------------------------------

void export_awq(const ModelSource& source, const QuantizedModel& model, const Recipe& r,
                const std::filesystem::path& out, bool force) {
  constexpr int kOrder[8] = {0, 2, 4, 6, 1, 3, 5, 7};
  std::vector<ExportTensor> tensors;
  add_dense_tensors(source, model, tensors);
  for (const auto& [p, s] : model.linears) {
    const QuantizedTensor& t = s.weight;
    const int64_t N = t.rows, K = t.cols, G = t.scale_cols;
    NIBBLE_CHECK(quant::elem_bits(t.elem) == 4 && t.g_idx.empty() && N % 8 == 0,
                 "{}: AWQ GEMM holds 4-bit codes without act-order, N ({}) a multiple of 8", p, N);
    const int64_t cols = N / 8;
    std::vector<uint32_t> qweight(static_cast<size_t>(K * cols), 0),
        qzeros(static_cast<size_t>(G * cols), 0);
    for (int64_t k = 0; k < K; ++k)
      for (int64_t c = 0; c < cols; ++c) {
        uint32_t word = 0;
        for (int i = 0; i < 8; ++i) word |= unsigned_code(t, 8 * c + kOrder[i], k) << (4 * i);
        qweight[size_t(k * cols + c)] = word;
      }
    for (int64_t g = 0; g < G; ++g)
      for (int64_t c = 0; c < cols; ++c) {
        uint32_t word = 0;
        for (int i = 0; i < 8; ++i)
          word |= unsigned_zero(t, (8 * c + kOrder[i]) * G + g) << (4 * i);
        qzeros[size_t(g * cols + c)] = word;
      }
    add_tensor(tensors, p + ".qweight", DType::I32, {K, cols}, raw_bytes(qweight));
    add_tensor(tensors, p + ".qzeros", DType::I32, {G, cols}, raw_bytes(qzeros));
    add_tensor(tensors, p + ".scales", DType::F16, {G, N},
               encode_floats(scale_column_major(t), DType::F16));
  }
  json not_convert = nullptr;
  const auto dense = unquantized_linears(source, model);
  if (!dense.empty()) not_convert = dense;
  const json config = {{"quant_method", "awq"},      {"zero_point", true},
                       {"group_size", r.group_size}, {"bits", 4},
                       {"version", "gemm"},          {"modules_to_not_convert", not_convert}};
  const json legacy = {
      {"zero_point", true}, {"q_group_size", r.group_size}, {"w_bit", 4}, {"version", "GEMM"}};
  write_export_directory(source, out, std::move(tensors), config, {{"quant_config.json", legacy}},
                         force);
}

// ---- fp8 (DeepSeek / AutoFP8 style) ---------------------------------------------------------

void export_fp8(const ModelSource& source, const QuantizedModel& model, const Recipe& r,
                const std::filesystem::path& out, bool force) {
  std::vector<ExportTensor> tensors;
  add_dense_tensors(source, model, tensors);
  for (const auto& [p, s] : model.linears) {
    const QuantizedTensor& t = s.weight;
    add_tensor(tensors, p + ".weight", DType::F8_E4M3, {t.rows, t.cols}, t.codes);
    if (r.fp8_block) {
      add_tensor(tensors, p + ".weight_scale_inv", DType::F32, {t.scale_rows, t.scale_cols},
                 encode_floats(t.scales, DType::F32));
    } else {
      add_tensor(tensors, p + ".weight_scale", DType::F32, {1},
                 encode_floats(t.scales, DType::F32));
      NIBBLE_CHECK(s.act.input_scale.has_value(), "{}: static FP8 without an input scale", p);
      add_tensor(tensors, p + ".input_scale", DType::F32, {1},
                 encode_floats({*s.act.input_scale}, DType::F32));
    }
  }
  // KV-cache scales where vLLM's and SGLang's fp8 KV-cache method looks for them (on the
  // attention module; no config key announces them), [1] like the other scales of this format.
  for (size_t layer = 0; layer < model.kv_scales.size(); ++layer) {
    const std::string attn = fmt::format("model.layers.{}.self_attn.", layer);
    add_tensor(tensors, attn + "k_scale", DType::F32, {1},
               encode_floats({model.kv_scales[layer].first}, DType::F32));
    add_tensor(tensors, attn + "v_scale", DType::F32, {1},
               encode_floats({model.kv_scales[layer].second}, DType::F32));
  }
  json ignored = ignore_list(source, model);
  json config = {{"quant_method", "fp8"},
                 {"fmt", "e4m3"},
                 {"activation_scheme", r.fp8_block ? "dynamic" : "static"},
                 {"ignored_layers", ignored},
                 {"modules_to_not_convert", ignored}};
  if (r.fp8_block) config["weight_block_size"] = json::array({r.fp8_block, r.fp8_block});
  write_export_directory(source, out, std::move(tensors), config, {}, force);
}

// ---- ModelOpt (NVFP4, FP8) -------------------------------------------------------------------

void add_modelopt_nvfp4(const std::string& p, const quant::LinearScheme& s,
                        std::vector<ExportTensor>& tensors) {
  const QuantizedTensor& t = s.weight;
  std::vector<uint8_t> scale_bytes(t.scales.size());
  for (size_t i = 0; i < t.scales.size(); ++i) scale_bytes[i] = quant::f32_to_fp8_e4m3(t.scales[i]);
  add_tensor(tensors, p + ".weight", DType::U8, {t.rows, t.cols / 2}, t.codes);
  add_tensor(tensors, p + ".weight_scale", DType::F8_E4M3, {t.rows, t.cols / 16},
             std::move(scale_bytes));
  add_tensor(tensors, p + ".weight_scale_2", DType::F32, {},
             encode_floats({t.global_scale}, DType::F32));
  NIBBLE_CHECK(s.act.input_scale.has_value(), "{}: NVFP4 without an input scale", p);
  add_tensor(tensors, p + ".input_scale", DType::F32, {},
             encode_floats({*s.act.input_scale}, DType::F32));
}

// unified_export_hf's FP8 tensors: scalar weight_scale (amax / 448) and input_scale.
void add_modelopt_fp8(const std::string& p, const quant::LinearScheme& s,
                      std::vector<ExportTensor>& tensors) {
  const QuantizedTensor& t = s.weight;
  NIBBLE_CHECK(t.elem == quant::ElemType::Fp8E4M3 && t.scales.size() == 1,
               "{}: ModelOpt FP8 needs e4m3 weights with one per-tensor scale", p);
  add_tensor(tensors, p + ".weight", DType::F8_E4M3, {t.rows, t.cols}, t.codes);
  add_tensor(tensors, p + ".weight_scale", DType::F32, {}, encode_floats(t.scales, DType::F32));
  NIBBLE_CHECK(s.act.input_scale.has_value(), "{}: static FP8 without an input scale", p);
  add_tensor(tensors, p + ".input_scale", DType::F32, {},
             encode_floats({*s.act.input_scale}, DType::F32));
}

void export_modelopt(const ModelSource& source, const QuantizedModel& model, const Recipe& r,
                     const std::filesystem::path& out, bool force) {
  const bool nvfp4 = r.kind == WeightKind::Nvfp4;
  std::vector<ExportTensor> tensors;
  add_dense_tensors(source, model, tensors);
  for (const auto& [p, s] : model.linears) {
    if (nvfp4) {
      add_modelopt_nvfp4(p, s, tensors);
    } else {
      add_modelopt_fp8(p, s, tensors);
    }
  }
  // ModelOpt's KV-cache scales sit on the k/v projections and are clamped to ≥ 1 for FP8
  // (modelopt's postprocess_state_dict); SGLang and vLLM remap them onto the attention.
  for (size_t layer = 0; layer < model.kv_scales.size(); ++layer) {
    const std::string attn = fmt::format("model.layers.{}.self_attn.", layer);
    add_tensor(tensors, attn + "k_proj.k_scale", DType::F32, {},
               encode_floats({std::max(model.kv_scales[layer].first, 1.0f)}, DType::F32));
    add_tensor(tensors, attn + "v_proj.v_scale", DType::F32, {},
               encode_floats({std::max(model.kv_scales[layer].second, 1.0f)}, DType::F32));
  }
  const bool kv_fp8 = !model.kv_scales.empty();
  const json kv_scheme =
      kv_fp8 ? json{{"dynamic", false}, {"num_bits", 8}, {"type", "float"}} : json(nullptr);
  const json kv_algo = kv_fp8 ? json("FP8") : json(nullptr);
  const json ignore = ignore_list(source, model);
  const std::string algo = nvfp4 ? "NVFP4" : "FP8";
  json args = {{"dynamic", false}, {"num_bits", nvfp4 ? 4 : 8}, {"type", "float"}};
  if (nvfp4) args["group_size"] = 16;
  const json producer = {{"name", "modelopt"}, {"version", "0.35.0"}};
  const json config = {
      {"config_groups",
       {{"group_0",
         {{"input_activations", args}, {"weights", args}, {"targets", json::array({"Linear"})}}}}},
      {"ignore", ignore},
      {"quant_algo", algo},
      {"kv_cache_scheme", kv_scheme},
      {"producer", producer},
      {"quant_method", "modelopt"}};
  // vLLM requires group_size, kv_cache_quant_algo and exclude_modules in the nested form.
  json quantization = {
      {"quant_algo", algo}, {"kv_cache_quant_algo", kv_algo}, {"exclude_modules", ignore}};
  if (nvfp4) quantization["group_size"] = 16;
  const json side = {{"producer", producer}, {"quantization", quantization}};
  write_export_directory(source, out, std::move(tensors), config, {{"hf_quant_config.json", side}},
                         force);
}

}  // namespace

quant::ScaleDType export_scale_dtype(const ModelSource& source, const Recipe& r) {
  if (r.format == "gptq" || r.format == "awq") return quant::ScaleDType::F16;
  return source.config.torch_dtype == "float16" ? quant::ScaleDType::F16 : quant::ScaleDType::BF16;
}

void export_model(const ModelSource& source, const QuantizedModel& model, const Recipe& r,
                  const std::filesystem::path& out, bool force) {
  if (r.format == "compressed-tensors")
    return export_compressed_tensors(source, model, r, out, force);
  if (r.format == "gptq") return export_gptq(source, model, r, out, force);
  if (r.format == "awq") return export_awq(source, model, r, out, force);
  if (r.format == "fp8") return export_fp8(source, model, r, out, force);
  if (r.format == "modelopt") return export_modelopt(source, model, r, out, force);
  fail("--format {}: no HF-directory exporter (GGUF output is a .gguf file)", r.format);
}

}  // namespace nibble::quantize
