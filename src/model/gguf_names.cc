#include "model/gguf_names.h"

#include <array>
#include <cstring>
#include <unordered_map>

#include "core/error.h"

namespace nibble {
namespace {

struct NamePair {
  const char* gguf;
  const char* hf;
};

// Per-layer names, without the "blk.N." / "model.layers.N." prefix.
constexpr std::array<NamePair, 15> kLayerNames{{
    {"attn_norm.weight", "input_layernorm.weight"},
    {"attn_q.weight", "self_attn.q_proj.weight"},
    {"attn_q.bias", "self_attn.q_proj.bias"},
    {"attn_k.weight", "self_attn.k_proj.weight"},
    {"attn_k.bias", "self_attn.k_proj.bias"},
    {"attn_v.weight", "self_attn.v_proj.weight"},
    {"attn_v.bias", "self_attn.v_proj.bias"},
    {"attn_output.weight", "self_attn.o_proj.weight"},
    {"attn_q_norm.weight", "self_attn.q_norm.weight"},
    {"attn_k_norm.weight", "self_attn.k_norm.weight"},
    {"ffn_norm.weight", "post_attention_layernorm.weight"},
    {"ffn_gate.weight", "mlp.gate_proj.weight"},
    {"ffn_up.weight", "mlp.up_proj.weight"},
    {"ffn_down.weight", "mlp.down_proj.weight"},
    {"attn_output.bias", "self_attn.o_proj.bias"},
}};

constexpr std::array<NamePair, 3> kGlobalNames{{
    {"token_embd.weight", "model.embed_tokens.weight"},
    {"output_norm.weight", "model.norm.weight"},
    {"output.weight", "lm_head.weight"},
}};

// Splits "<prefix><digits>.<rest>" into layer number and rest.
std::optional<std::pair<std::string, std::string>> split_layer(const std::string& name,
                                                               std::string_view prefix) {
  if (name.rfind(prefix, 0) != 0) return std::nullopt;
  size_t i = prefix.size();
  size_t j = i;
  while (j < name.size() && name[j] >= '0' && name[j] <= '9') ++j;
  if (j == i || j >= name.size() || name[j] != '.') return std::nullopt;
  return std::make_pair(name.substr(i, j - i), name.substr(j + 1));
}

class GgufAsHfCheckpoint final : public Checkpoint {
 public:
  GgufAsHfCheckpoint(std::shared_ptr<const Checkpoint> gguf, const ModelConfig& config,
                     bool unpermute)
      : gguf_(std::move(gguf)) {
    for (const auto& t : gguf_->tensors()) {
      auto hf = gguf_to_hf_name(t.name);
      if (!hf) continue;  // e.g. rope_freqs.weight: derived from the config instead
      CheckpointTensor mapped = t;
      mapped.name = *hf;
      Entry entry{t.name, 0};
      if (unpermute && (hf->ends_with("q_proj.weight") || hf->ends_with("k_proj.weight"))) {
        entry.heads = hf->ends_with("q_proj.weight") ? config.num_attention_heads
                                                     : config.num_key_value_heads;
        mapped.data = unpermute_rows(t, entry.heads);
      }
      index_[mapped.name] = tensors_.size();
      entries_.push_back(entry);
      tensors_.push_back(std::move(mapped));
    }
  }

  std::string source() const override { return gguf_->source(); }
  const std::vector<CheckpointTensor>& tensors() const override { return tensors_; }
  const CheckpointTensor* find(std::string_view name) const override {
    auto it = index_.find(std::string(name));
    return it == index_.end() ? nullptr : &tensors_[it->second];
  }

  std::vector<float> load_f32(std::string_view name) const override {
    auto it = index_.find(std::string(name));
    if (it == index_.end()) fail("{}: tensor '{}' not found", source(), name);
    const Entry& entry = entries_[it->second];
    std::vector<float> raw = gguf_->load_f32(entry.gguf_name);
    // An empty tensor has nothing to reorder (and no storage to point into).
    if (entry.heads == 0 || raw.empty()) return raw;
    const auto& shape = tensors_[it->second].shape;
    const int64_t rows = shape[0];
    const int64_t cols = static_cast<int64_t>(raw.size()) / rows;
    std::vector<float> out(raw.size());
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t src = llama_gguf_row_for_hf_row(r, rows, entry.heads);
      std::memcpy(out.data() + r * cols, raw.data() + src * cols, cols * sizeof(float));
    }
    return out;
  }

 private:
  struct Entry {
    std::string gguf_name;
    int64_t heads;  // non-zero: rows are stored permuted for this many heads
  };

  const uint8_t* unpermute_rows(const CheckpointTensor& t, int64_t heads) {
    NIBBLE_CHECK(
        t.shape.size() == 2 && heads > 0 && t.shape[0] > 0 && t.shape[0] % (2 * heads) == 0,
        "{}: tensor '{}' has shape incompatible with {} heads", gguf_->source(), t.name, heads);
    const int64_t rows = t.shape[0];
    NIBBLE_CHECK(t.nbytes % rows == 0, "{}: tensor '{}' rows are not byte-aligned", gguf_->source(),
                 t.name);
    const size_t row_bytes = t.nbytes / rows;
    if (row_bytes == 0) return t.data;
    auto& buffer = permuted_.emplace_back(t.nbytes);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t src = llama_gguf_row_for_hf_row(r, rows, heads);
      std::memcpy(buffer.data() + r * row_bytes, t.data + src * row_bytes, row_bytes);
    }
    return buffer.data();
  }

  std::shared_ptr<const Checkpoint> gguf_;
  std::vector<CheckpointTensor> tensors_;
  std::vector<Entry> entries_;
  std::unordered_map<std::string, size_t> index_;
  std::vector<std::vector<uint8_t>> permuted_;
};

}  // namespace

int64_t llama_gguf_row_for_hf_row(int64_t hf_row, int64_t rows, int64_t n_heads) {
  // Within a head of 2*half rows, HF row (j*half + i) is stored at GGUF row (2*i + j).
  const int64_t head_rows = rows / n_heads;
  const int64_t half = head_rows / 2;
  const int64_t head = hf_row / head_rows;
  const int64_t within = hf_row % head_rows;
  const int64_t j = within / half;
  const int64_t i = within % half;
  return head * head_rows + 2 * i + j;
}

std::optional<std::string> gguf_to_hf_name(const std::string& gguf_name) {
  for (const auto& p : kGlobalNames)
    if (gguf_name == p.gguf) return std::string(p.hf);
  if (auto split = split_layer(gguf_name, "blk.")) {
    for (const auto& p : kLayerNames)
      if (split->second == p.gguf) return "model.layers." + split->first + "." + p.hf;
  }
  return std::nullopt;
}

std::optional<std::string> hf_to_gguf_name(const std::string& hf_name) {
  for (const auto& p : kGlobalNames)
    if (hf_name == p.hf) return std::string(p.gguf);
  if (auto split = split_layer(hf_name, "model.layers.")) {
    for (const auto& p : kLayerNames)
      if (split->second == p.hf) return "blk." + split->first + "." + p.gguf;
  }
  return std::nullopt;
}

std::shared_ptr<Checkpoint> gguf_as_hf_checkpoint(std::shared_ptr<const Checkpoint> gguf,
                                                  const ModelConfig& config,
                                                  const std::string& gguf_architecture) {
  return std::make_shared<GgufAsHfCheckpoint>(std::move(gguf), config,
                                              gguf_architecture == "llama");
}

}  // namespace nibble
