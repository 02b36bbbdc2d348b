#pragma once
// Decides when a request is finished (stop token, stop string, length) and how much of the
// generated text is safe to emit while streaming: text that could still become the start of
// a stop string is held back, because a matched stop string is not part of the output.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "runtime/sampling_params.h"

namespace nibble {

struct FinishReason {
  // kAbort: cancelled by the client (or the engine shutting down), as SGLang/vLLM name it.
  enum class Kind { kStop, kLength, kAbort };
  Kind kind = Kind::kStop;
  // The stop token id or stop string that ended the request, if any (OpenAI's "matched_stop").
  std::variant<std::monostate, int32_t, std::string> matched;
  std::string_view name() const {
    switch (kind) {
      case Kind::kStop: return "stop";
      case Kind::kLength: return "length";
      case Kind::kAbort: return "abort";
    }
    return "stop";
  }
};

class StopChecker {
 public:
  // `eos_ids` are the model's end-of-sequence ids (ignored when params.ignore_eos).
  StopChecker(const SamplingParams& params, std::vector<int32_t> eos_ids);

  // Records one generated token and the full output text decoded so far.
  // Returns the finish reason once the request is done.
  std::optional<FinishReason> update(int32_t token, const std::string& text, int64_t n_generated);

  // Length of the output text that is final: before any matched stop string, and before
  // a tail that may still grow into one.
  size_t emittable_length(const std::string& text, bool finished) const;

 private:
  SamplingParams params_;
  std::vector<int32_t> stop_ids_;
  std::optional<size_t> stop_at_;  // byte offset of a matched stop string
};

}  // namespace nibble
