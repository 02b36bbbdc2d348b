#pragma once
// Per-request sampling parameters, named and defaulted as SGLang's SamplingParams.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace nibble {

struct SamplingParams {
  float temperature = 1.0f;  // 0 means greedy
  float top_p = 1.0f;
  int32_t top_k = -1;  // -1 (or 0) means all tokens
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;  // over prompt and output tokens, as transformers does
  float frequency_penalty = 0.0f;   // over output tokens, as OpenAI defines it
  float presence_penalty = 0.0f;
  int64_t max_new_tokens = 128;
  std::vector<std::string> stop;
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  bool skip_special_tokens = true;
  std::optional<uint64_t> seed;

  // Throws nibble::Error naming the parameter when a value is out of range.
  void validate() const;
};

}  // namespace nibble
