#pragma once
// Text <-> token ids, built from an HF tokenizer.json or from GGUF tokenizer.ggml.* metadata.
// Token ids match the `tokenizers` package exactly for the supported model families.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace nibble {
namespace gguf {
class GgufFile;
}

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // tokenizer.json (tokenizer_config.json beside it, if present, supplies bos/eos names).
  static std::unique_ptr<Tokenizer> from_hf_dir(const std::filesystem::path& dir);
  static std::unique_ptr<Tokenizer> from_json(const nlohmann::json& tokenizer_json,
                                              const std::string& source);
  static std::unique_ptr<Tokenizer> from_gguf(const gguf::GgufFile& file);
  // A directory (from_hf_dir), a tokenizer.json file, or a .gguf file.
  static std::unique_ptr<Tokenizer> from_path(const std::filesystem::path& path);

  // Input bytes that are not valid UTF-8 are first replaced by U+FFFD (maximal subparts), as
  // Python's bytes.decode(errors="replace") does before `tokenizers` sees the text.
  // add_special_tokens adds what the tokenizer's post-processor adds (e.g. a BOS token).
  virtual std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const = 0;
  // Bytes of the concatenated tokens; may end in an incomplete UTF-8 sequence.
  virtual std::string decode(std::span<const int32_t> ids, bool skip_special_tokens) const = 0;
  // The text `tokenizers`' decode returns: always valid UTF-8, invalid bytes replaced by U+FFFD
  // exactly as its decoders do. Ids out of range are skipped, as `tokenizers` does.
  virtual std::string decode_text(std::span<const int32_t> ids, bool skip_special_tokens) const;

  virtual int64_t vocab_size() const = 0;
  virtual std::optional<int32_t> token_to_id(std::string_view token) const = 0;
  virtual std::string id_to_token(int32_t id) const = 0;  // the vocabulary string
  virtual bool is_special(int32_t id) const = 0;
  virtual std::optional<int32_t> bos_id() const = 0;
  virtual std::optional<int32_t> eos_id() const = 0;

  // An HF tokenizer.json equivalent to this tokenizer (used by `nibble convert`).
  virtual nlohmann::json to_hf_json() const = 0;
  // The matching tokenizer_config.json fields (bos_token, eos_token, add_bos_token, ...).
  virtual nlohmann::json to_hf_tokenizer_config() const { return nlohmann::json::object(); }
};

// The llama.cpp pre-tokenizer name (tokenizer.ggml.pre) whose split equals this byte-level
// tokenizer.json's, for HF -> GGUF conversion; nullopt when none is known to match.
std::optional<std::string> gguf_pre_tokenizer_name(const nlohmann::json& tokenizer_json);

}  // namespace nibble
