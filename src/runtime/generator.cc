#include "runtime/generator.h"

#include <chrono>

#include "core/error.h"
#include "runtime/sampler.h"
#include "tokenizer/tokenizer.h"

namespace nibble {
namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

size_t complete_utf8_prefix(std::string_view text) {
  // Walk back over at most 3 continuation bytes to the last lead byte.
  size_t n = text.size();
  size_t back = 0;
  while (back < 4 && back < n && (uint8_t(text[n - 1 - back]) & 0xC0) == 0x80) ++back;
  if (back == n) return n;
  const auto lead = uint8_t(text[n - 1 - back]);
  size_t need = 1;
  if (lead >= 0xF0) {
    need = 4;
  } else if (lead >= 0xE0) {
    need = 3;
  } else if (lead >= 0xC0) {
    need = 2;
  }
  // An invalid or complete sequence is left for the decoder to judge; only hold back a
  // valid lead byte whose continuation has not arrived yet.
  if (lead >= 0xC0 && back + 1 < need) return n - back - 1;
  return n;
}

Generator::Generator(Model& model, const Tokenizer* tokenizer, std::vector<int32_t> eos_ids,
                     GeneratorOptions options)
    : model_(model), tokenizer_(tokenizer), eos_ids_(std::move(eos_ids)), options_(options) {}

std::string Generator::decode(std::span<const int32_t> ids, bool skip_special) const {
  return tokenizer_ ? tokenizer_->decode(ids, skip_special) : std::string();
}

GenerationResult Generator::generate(std::span<const int32_t> prompt, const SamplingParams& params,
                                     const std::function<void(std::string_view)>& on_text) {
  params.validate();
  NIBBLE_CHECK(!prompt.empty(), "the prompt is empty");
  const ModelConfig& config = model_.config();
  const int64_t vocab = config.vocab_size;
  for (int32_t t : prompt)
    NIBBLE_CHECK(t >= 0 && t < vocab, "prompt token id {} is outside the vocabulary (size {})", t,
                 vocab);
  const int64_t total = static_cast<int64_t>(prompt.size()) + params.max_new_tokens;
  NIBBLE_CHECK(total <= config.max_position_embeddings,
               "prompt ({} tokens) + max_new_tokens ({}) exceeds the model's context length {}",
               prompt.size(), params.max_new_tokens, config.max_position_embeddings);

  const int64_t block = options_.kv_block_size;
  const int64_t n_blocks = (total + block) / block + 1;
  KvCache cache(config.num_hidden_layers, config.num_key_value_heads, config.head_dim, block,
                n_blocks, options_.kv.dtype);
  options_.kv.apply(cache);
  SequenceBatch seq;
  seq.want_logits = true;
  for (int64_t i = 0; i < n_blocks; ++i) seq.block_table.push_back(*cache.allocate_block());

  GenerationResult result;
  result.prompt_tokens = static_cast<int64_t>(prompt.size());
  Sampler sampler(params, prompt);
  StopChecker stop(params, eos_ids_);
  std::vector<float> logits;
  ForwardBatch batch;

  auto start = std::chrono::steady_clock::now();
  int64_t cached = 0;
  while (cached < result.prompt_tokens) {
    const int64_t n = std::min(options_.prefill_chunk, result.prompt_tokens - cached);
    batch.token_ids.assign(prompt.begin() + cached, prompt.begin() + cached + n);
    seq.token_offset = 0;
    seq.n_tokens = n;
    seq.n_cached = cached;
    seq.want_logits = cached + n == result.prompt_tokens;
    batch.seqs = {seq};
    model_.forward(batch, cache, logits);
    cached += n;
  }
  result.prefill_seconds = seconds_since(start);

  start = std::chrono::steady_clock::now();
  std::string text;
  size_t emitted = 0;
  if (params.max_new_tokens == 0) result.finish = {FinishReason::Kind::kLength, {}};
  for (int64_t step = 0; step < params.max_new_tokens; ++step) {
    const int32_t token = sampler.sample({logits.data(), static_cast<size_t>(vocab)});
    result.output_ids.push_back(token);
    text = decode(result.output_ids, params.skip_special_tokens);
    const auto finish = stop.update(token, text, step + 1);
    if (finish) {
      // A stop token is not part of the output.
      if (finish->matched.index() == 1) {
        result.output_ids.pop_back();
        text = decode(result.output_ids, params.skip_special_tokens);
      }
      result.finish = *finish;
      break;
    }
    const size_t ready = complete_utf8_prefix(text.substr(0, stop.emittable_length(text, false)));
    if (on_text && ready > emitted)
      on_text(std::string_view(text).substr(emitted, ready - emitted));
    emitted = std::max(emitted, ready);
    batch.token_ids = {token};
    seq.n_tokens = 1;
    seq.n_cached = cached;
    seq.want_logits = true;
    batch.seqs = {seq};
    model_.forward(batch, cache, logits);
    cached += 1;
  }
  result.decode_seconds = seconds_since(start);
  const size_t final_length = stop.emittable_length(text, true);
  if (on_text && final_length > emitted)
    on_text(std::string_view(text).substr(emitted, final_length - emitted));
  result.text = text.substr(0, final_length);
  return result;
}

}  // namespace nibble
