#pragma once
// Runs one request to completion on a model: chunked prefill, then decode steps, through
// the same flat-batch forward that the batching engine uses.
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "model/model.h"
#include "runtime/kv_cache.h"
#include "runtime/kv_scales.h"
#include "runtime/sampling_params.h"
#include "runtime/stop_checker.h"

namespace nibble {

class Tokenizer;

struct GenerationResult {
  std::vector<int32_t> output_ids;
  std::string text;
  FinishReason finish;
  int64_t prompt_tokens = 0;
  double prefill_seconds = 0.0;
  double decode_seconds = 0.0;
};

struct GeneratorOptions {
  int64_t prefill_chunk = 512;  // tokens per prefill forward
  int64_t kv_block_size = 16;
  KvCacheSpec kv;
};

class Generator {
 public:
  // `tokenizer` may be null (a checkpoint without one): the result then has ids but no text.
  Generator(Model& model, const Tokenizer* tokenizer, std::vector<int32_t> eos_ids,
            GeneratorOptions options = {});

  // `on_text` receives the output text as it becomes final (never a broken UTF-8 sequence,
  // never part of a stop string).
  GenerationResult generate(std::span<const int32_t> prompt, const SamplingParams& params,
                            const std::function<void(std::string_view)>& on_text = {});

 private:
  std::string decode(std::span<const int32_t> ids, bool skip_special) const;

  Model& model_;
  const Tokenizer* tokenizer_;
  std::vector<int32_t> eos_ids_;
  GeneratorOptions options_;
};

// Length of the longest prefix of `text` that does not end inside a UTF-8 sequence.
size_t complete_utf8_prefix(std::string_view text);

}  // namespace nibble
