#pragma once
// A Checkpoint that presents every quantized linear layer of a pre-quantized HF checkpoint as
// a plain `<p>.weight` [N, K], whose load_f32 dequantizes through the scalar reference — so
// any model runs on any supported format before a kernel exists for it. The format's own
// tensors (qweight, qzeros, scales, g_idx, weight_packed, weight_scale, input_scale, k_scale,
// ...) are hidden. `linear_scheme` gives the QuantizedTensor itself to backends that have a
// kernel for it.
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "formats/checkpoint.h"
#include "quant/resolve.h"

namespace nibble::quant {

class QuantizedCheckpoint final : public Checkpoint {
 public:
  QuantizedCheckpoint(std::shared_ptr<Checkpoint> inner, QuantConfig config);

  std::string source() const override { return inner_->source(); }
  const std::vector<CheckpointTensor>& tensors() const override { return tensors_; }
  const CheckpointTensor* find(std::string_view name) const override;
  std::vector<float> load_f32(std::string_view name) const override;

  const QuantConfig& config() const { return config_; }
  // Module paths of the quantized linear layers, in checkpoint order.
  const std::vector<std::string>& quantized_modules() const { return modules_; }
  // The layer behind a presented `<module>.weight`; nullopt when it is not quantized.
  std::optional<LinearScheme> linear_scheme(std::string_view weight_name) const;

 private:
  std::shared_ptr<Checkpoint> inner_;
  QuantConfig config_;
  std::vector<CheckpointTensor> tensors_;
  std::unordered_map<std::string, size_t> index_;
  std::unordered_map<std::string, LayerPlan> plans_;  // by module path
  std::vector<std::string> modules_;
};

// Wraps `inner` when the directory's config (with the --quantization rules applied) names a
// quantization method; returns `inner` unchanged otherwise.
std::shared_ptr<Checkpoint> wrap_quantized_checkpoint(std::shared_ptr<Checkpoint> inner,
                                                      const std::filesystem::path& dir,
                                                      const std::string& user_method = "");

}  // namespace nibble::quant
