#include "quant/quantized_checkpoint.h"

#include <fmt/ranges.h>

#include <cstring>
#include <set>

#include "core/error.h"
#include "quant/reference/dequantize.h"
#include "quant/types.h"

namespace nibble::quant {
namespace {

// Tensors that belong to a quantized layer's storage rather than to the model graph.
const std::set<std::string> kLayerStorageSuffixes = {"qweight",
                                                     "qzeros",
                                                     "scales",
                                                     "g_idx",
                                                     "weight_packed",
                                                     "weight_shape",
                                                     "weight_scale",
                                                     "weight_zero_point",
                                                     "weight_g_idx",
                                                     "weight_global_scale",
                                                     "input_global_scale",
                                                     "input_scale",
                                                     "input_zero_point",
                                                     "output_scale",
                                                     "output_zero_point",
                                                     "weight_scale_inv",
                                                     "weight_scale_2",
                                                     "pre_quant_scale"};

// Attention KV-cache scales (any method): read by the KV cache, never by a linear layer.
const std::set<std::string> kKvScaleSuffixes = {"k_scale", "v_scale", "q_scale", "kv_scale"};

// Linear modules of the supported architectures, by their last path component.
const std::set<std::string> kLinearNames = {"q_proj",    "k_proj",      "v_proj",    "o_proj",
                                            "gate_proj", "up_proj",     "down_proj", "lm_head",
                                            "qkv_proj",  "gate_up_proj"};

std::pair<std::string, std::string> split_last(const std::string& name) {
  const auto dot = name.rfind('.');
  if (dot == std::string::npos) return {"", name};
  return {name.substr(0, dot), name.substr(dot + 1)};
}

bool is_linear(const std::string& module) {
  return kLinearNames.count(split_last(module).second) > 0;
}

// How the checkpoint stores a module, judged from its tensors alone.
enum class Stored { Dense, Gptq, CtPacked, Fp8, Int8, Nvfp4, Bnb4, Absent };

Stored stored_kind(const Checkpoint& ckpt, const std::string& module) {
  if (ckpt.find(module + ".qweight")) return Stored::Gptq;  // GPTQ or AWQ
  if (ckpt.find(module + ".weight_packed")) return Stored::CtPacked;
  if (is_bnb_4bit_layer(ckpt, module)) return Stored::Bnb4;
  const CheckpointTensor* w = ckpt.find(module + ".weight");
  if (w == nullptr) return Stored::Absent;
  if (w->type == "F8_E4M3") return Stored::Fp8;
  if (w->type == "I8") return Stored::Int8;
  if (w->type == "U8") return Stored::Nvfp4;
  return Stored::Dense;
}

bool plan_fits(LayerFormat f, Stored s) {
  switch (f) {
    case LayerFormat::Gptq:
    case LayerFormat::Awq: return s == Stored::Gptq;
    case LayerFormat::CtPacked: return s == Stored::CtPacked;
    case LayerFormat::CtUnpacked: return s == Stored::Fp8 || s == Stored::Int8;
    case LayerFormat::Fp8: return s == Stored::Fp8;
    case LayerFormat::Nvfp4: return s == Stored::Nvfp4;
    case LayerFormat::Bnb4: return s == Stored::Bnb4;
    case LayerFormat::Dense: return s == Stored::Dense;
  }
  return false;
}

std::string_view format_name(LayerFormat f) {
  switch (f) {
    case LayerFormat::Dense: return "dense";
    case LayerFormat::Gptq: return "GPTQ (qweight/qzeros/scales)";
    case LayerFormat::Awq: return "AWQ (qweight/qzeros/scales)";
    case LayerFormat::CtPacked: return "pack-quantized (weight_packed)";
    case LayerFormat::CtUnpacked: return "int/float-quantized (weight + weight_scale)";
    case LayerFormat::Fp8: return "fp8 (F8_E4M3 weight)";
    case LayerFormat::Nvfp4: return "NVFP4 (U8 weight)";
    case LayerFormat::Bnb4: return "bitsandbytes 4-bit (U8 weight + quant_state)";
  }
  return "?";
}

std::string_view stored_name(Stored s) {
  switch (s) {
    case Stored::Dense: return "a dense weight";
    case Stored::Gptq: return "qweight/qzeros/scales";
    case Stored::CtPacked: return "weight_packed";
    case Stored::Fp8: return "an F8_E4M3 weight";
    case Stored::Int8: return "an I8 weight";
    case Stored::Nvfp4: return "a U8 weight";
    case Stored::Bnb4: return "a bitsandbytes 4-bit weight";
    case Stored::Absent: return "no weight";
  }
  return "?";
}

// [N, K] of a quantized layer from its tensors' shapes, without reading data.
std::vector<int64_t> presented_shape(const Checkpoint& ckpt, const std::string& module,
                                     const LayerPlan& plan) {
  auto shape_of = [&](const char* suffix) -> const std::vector<int64_t>& {
    const CheckpointTensor* t = ckpt.find(module + "." + suffix);
    if (t == nullptr)
      fail("{}: layer '{}' is missing '{}.{}'", ckpt.source(), module, module, suffix);
    if (t->shape.size() != 2 && std::string(suffix) != "weight_shape")
      fail("{}: tensor '{}.{}' has shape [{}], expected 2 dimensions", ckpt.source(), module,
           suffix, fmt::join(t->shape, ", "));
    return t->shape;
  };
  switch (plan.format) {
    case LayerFormat::Gptq: {
      const auto& s = shape_of("qweight");
      return {s[1], s[0] * 32 / plan.gptq.bits};
    }
    case LayerFormat::Awq: {
      const auto& s = shape_of("qweight");
      return {s[1] * 8, s[0]};
    }
    case LayerFormat::CtPacked: {
      const CheckpointTensor* t = ckpt.find(module + ".weight_shape");
      if (t == nullptr || t->type != "I64" || t->shape != std::vector<int64_t>{2} ||
          t->nbytes != 16 || t->data == nullptr)
        fail("{}: layer '{}' needs weight_shape I64 [2]", ckpt.source(), module);
      int64_t nk[2];
      std::memcpy(nk, t->data, 16);
      return {nk[0], nk[1]};
    }
    case LayerFormat::Nvfp4: {
      const auto& s = shape_of("weight");
      return {s[0], s[1] * 2};
    }
    case LayerFormat::Bnb4: return bnb_4bit_shape(ckpt, module);
    default: return shape_of("weight");
  }
}

}  // namespace

QuantizedCheckpoint::QuantizedCheckpoint(std::shared_ptr<Checkpoint> inner, QuantConfig config)
    : inner_(std::move(inner)), config_(std::move(config)) {
  const Checkpoint& ckpt = *inner_;
  // Modules that own a weight-like tensor, in checkpoint order.
  std::vector<std::string> candidates;
  std::set<std::string> seen;
  for (const auto& t : ckpt.tensors()) {
    const auto [module, leaf] = split_last(t.name);
    if (module.empty() || !is_linear(module)) continue;
    if (leaf != "weight" && leaf != "qweight" && leaf != "weight_packed") continue;
    if (seen.insert(module).second) candidates.push_back(module);
  }
  for (const auto& module : candidates) {
    const Stored stored = stored_kind(ckpt, module);
    LayerPlan plan = plan_layer(config_, module);
    const bool lm_head = split_last(module).second == "lm_head";
    if (lm_head && plan.format == LayerFormat::Dense && stored != Stored::Dense) {
      // SGLang leaves lm_head in the model dtype for most methods; a checkpoint that does
      // quantize it (GPTQ lm_head: true, compressed-tensors without the usual ignore) is
      // loaded as stored.
      QuantConfig as_linear = config_;
      as_linear.gptq.lm_head = true;
      plan = plan_layer(as_linear, module + ".__as_linear__");
    }
    if (lm_head && plan.format != LayerFormat::Dense && stored == Stored::Dense) plan = LayerPlan{};
    if (!plan_fits(plan.format, stored)) {
      if (plan.format == LayerFormat::Dense)
        fail(
            "{}: layer '{}' stores {} but the {} config ({}) leaves it unquantized "
            "(ignore / exclude list or per-module rule)",
            ckpt.source(), module, stored_name(stored), config_.method, config_.source);
      fail("{}: the {} config ({}) says layer '{}' is {}, but the checkpoint stores {}",
           ckpt.source(), config_.method, config_.source, module, format_name(plan.format),
           stored_name(stored));
    }
    if (plan.format == LayerFormat::Dense) continue;
    plans_.emplace(module, plan);
    modules_.push_back(module);
  }

  for (const auto& t : ckpt.tensors()) {
    const auto [module, leaf] = split_last(t.name);
    if (kKvScaleSuffixes.count(leaf)) continue;
    if (module.size() > 7 && (module.ends_with("k_proj") || module.ends_with("v_proj")) &&
        leaf == "output_scale")
      continue;  // AutoFP8's KV scales
    // bitsandbytes keeps its quant state under `<module>.weight.*`.
    if (const auto at = t.name.find(".weight."); at != std::string::npos) {
      const auto owner = plans_.find(t.name.substr(0, at));
      if (owner != plans_.end() && owner->second.format == LayerFormat::Bnb4) continue;
    }
    const auto plan = plans_.find(module);
    if (plan == plans_.end()) {
      index_.emplace(t.name, tensors_.size());
      tensors_.push_back(t);
      continue;
    }
    if (kLayerStorageSuffixes.count(leaf)) continue;
    if (leaf == "weight" && plan->second.format != LayerFormat::Gptq &&
        plan->second.format != LayerFormat::Awq && plan->second.format != LayerFormat::CtPacked)
      continue;  // replaced by the presented weight below
    index_.emplace(t.name, tensors_.size());
    tensors_.push_back(t);
  }
  for (const auto& module : modules_) {
    const LayerPlan& plan = plans_.at(module);
    CheckpointTensor t;
    t.name = module + ".weight";
    t.shape = presented_shape(ckpt, module, plan);
    // Not a dtype: the data is produced by load_f32, there are no stored bytes to read.
    t.type = "quantized:" + config_.method;
    if (index_.count(t.name))
      fail("{}: layer '{}' has both a dense weight and {} tensors", ckpt.source(), module,
           config_.method);
    index_.emplace(t.name, tensors_.size());
    tensors_.push_back(std::move(t));
  }
}

const CheckpointTensor* QuantizedCheckpoint::find(std::string_view name) const {
  const auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

std::optional<LinearScheme> QuantizedCheckpoint::linear_scheme(std::string_view weight_name) const {
  const auto [module, leaf] = split_last(std::string(weight_name));
  const auto it = plans_.find(module);
  if (leaf != "weight" || it == plans_.end()) return std::nullopt;
  return load_linear(config_, it->second, *inner_, module);
}

std::vector<float> QuantizedCheckpoint::load_f32(std::string_view name) const {
  const CheckpointTensor* t = find(name);
  if (t == nullptr) fail("{}: tensor '{}' not found", source(), name);
  std::optional<LinearScheme> scheme = linear_scheme(name);
  if (!scheme) return inner_->load_f32(name);
  const QuantizedTensor& w = scheme->weight;
  validate(w, fmt::format("{}: {}", source(), name));
  if (std::vector<int64_t>{w.rows, w.cols} != t->shape)
    fail("{}: layer '{}' decoded to [{}, {}] but its tensors declare [{}]", source(), name, w.rows,
         w.cols, fmt::join(t->shape, ", "));
  return dequantize(w);
}

std::shared_ptr<Checkpoint> wrap_quantized_checkpoint(std::shared_ptr<Checkpoint> inner,
                                                      const std::filesystem::path& dir,
                                                      const std::string& user_method) {
  std::optional<QuantConfig> config = resolve_quantization(dir, user_method);
  if (!config) return inner;
  return std::make_shared<QuantizedCheckpoint>(std::move(inner), std::move(*config));
}

}  // namespace nibble::quant
