#pragma once
// The Tokenizer built from an HF tokenizer.json: added tokens -> normalizer -> pre-tokenizer
// -> BPE model -> post-processor, and back through the decoder. GGUF tokenizers are first
// turned into the equivalent tokenizer.json, so there is one code path.
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "tokenizer/added_tokens.h"
#include "tokenizer/bpe_model.h"
#include "tokenizer/decoder.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/tokenizer.h"

namespace nibble {

class HfTokenizer : public Tokenizer {
 public:
  // `config` holds tokenizer_config.json fields (bos_token, eos_token...) or is empty.
  HfTokenizer(nlohmann::json spec, const std::string& source, nlohmann::json config);

  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const override;
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens) const override;
  std::string decode_text(std::span<const int32_t> ids, bool skip_special_tokens) const override;

  int64_t vocab_size() const override { return vocab_size_; }
  std::optional<int32_t> token_to_id(std::string_view token) const override;
  std::string id_to_token(int32_t id) const override;
  bool is_special(int32_t id) const override;
  std::optional<int32_t> bos_id() const override { return bos_id_; }
  std::optional<int32_t> eos_id() const override { return eos_id_; }

  nlohmann::json to_hf_json() const override { return spec_; }
  nlohmann::json to_hf_tokenizer_config() const override { return config_; }

 private:
  std::string decode_with(std::span<const int32_t> ids, bool skip_special_tokens,
                          DecodeMode mode) const;
  void encode_text(const Segment& segment, std::vector<int32_t>& out) const;
  std::optional<int32_t> resolve_config_token(const char* key) const;

  nlohmann::json spec_;
  nlohmann::json config_;
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<BpeModel> model_;
  std::unique_ptr<Decoder> decoder_;
  SpecialTokenTemplate template_;

  std::vector<AddedToken> added_tokens_;
  std::unordered_map<int32_t, size_t> added_by_id_;
  std::unordered_map<std::string, int32_t> added_by_content_;
  AddedTokenMatcher raw_matcher_;
  std::vector<const AddedToken*> raw_tokens_;
  AddedTokenMatcher normalized_matcher_;
  std::vector<const AddedToken*> normalized_tokens_;

  int64_t vocab_size_ = 0;
  std::optional<int32_t> bos_id_;
  std::optional<int32_t> eos_id_;
};

}  // namespace nibble
