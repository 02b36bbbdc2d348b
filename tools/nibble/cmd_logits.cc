// `nibble logits`: logits for every position of token-id prompts, and greedy
// continuations, written as .npy files. This is the hook the parity tests
// compare with transformers.
#include <fstream>

#include "command.h"
#include "common_options.h"
#include "core/error.h"
#include "formats/npy.h"
#include "runtime/generator.h"
#include "runtime/kv_cache.h"

namespace nibble::cli {
namespace {

struct LogitsOptions {
  ModelOptions model;
  std::string prompts_file;  // JSON: [[ids...], ...]
  std::string out_dir;
  int64_t greedy_tokens = 0;
};

// The prompt's K/V go through the cache --kv-cache-dtype asks for (the logits of a prefill
// read the cached keys back), so fp8 caches and their scales show in the logits.
std::vector<float> all_position_logits(Model& model, const std::vector<int32_t>& prompt,
                                       const KvCacheSpec& kv) {
  const ModelConfig& config = model.config();
  const int64_t block = 16;
  const int64_t n_blocks = static_cast<int64_t>(prompt.size()) / block + 2;
  KvCache cache(config.num_hidden_layers, config.num_key_value_heads, config.head_dim, block,
                n_blocks, kv.dtype);
  kv.apply(cache);
  ForwardBatch batch;
  batch.token_ids = prompt;
  SequenceBatch seq;
  seq.token_offset = 0;
  seq.n_tokens = static_cast<int64_t>(prompt.size());
  seq.n_cached = 0;
  seq.want_logits = true;
  for (int64_t i = 0; i < n_blocks; ++i) seq.block_table.push_back(*cache.allocate_block());
  batch.seqs = {seq};
  std::vector<float> logits;
  model.forward_all_logits(batch, cache, logits);
  return logits;
}

int run_logits(const LogitsOptions& o) {
  o.model.apply_threads();
  std::ifstream in(o.prompts_file);
  NIBBLE_CHECK(in.good(), "{}: cannot open", o.prompts_file);
  nlohmann::json prompts;
  try {
    prompts = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON: {}", o.prompts_file, e.what());
  }
  NIBBLE_CHECK(prompts.is_array(), "{}: expected an array of token-id arrays", o.prompts_file);
  ModelSource source = o.model.open();
  auto model = build_model(source, o.model.compute_type());
  std::filesystem::create_directories(o.out_dir);
  const int64_t vocab = source.config.vocab_size;
  const KvCacheSpec kv = o.model.kv_cache(source);
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto ids = prompts[i].get<std::vector<int32_t>>();
    const auto logits = all_position_logits(*model, ids, kv);
    write_npy_f32(std::filesystem::path(o.out_dir) / fmt::format("logits_{}.npy", i), logits,
                  {static_cast<int64_t>(ids.size()), vocab});
    if (o.greedy_tokens > 0) {
      Generator generator(*model, source.tokenizer.get(), source.stop_ids, {.kv = kv});
      SamplingParams params;
      params.temperature = 0.0f;
      params.ignore_eos = true;
      params.max_new_tokens = o.greedy_tokens;
      const auto result = generator.generate(ids, params);
      write_npy_i32(std::filesystem::path(o.out_dir) / fmt::format("greedy_{}.npy", i),
                    result.output_ids, {static_cast<int64_t>(result.output_ids.size())});
    }
  }
  return 0;
}

NIBBLE_COMMAND(logits, [](CLI::App& app) -> std::function<int()> {
  auto o = std::make_shared<LogitsOptions>();
  app.description(
      "Write all-position logits (and greedy continuations) of "
      "token-id prompts");
  o->model.add(app);
  app.add_option("--prompts", o->prompts_file, "JSON file: an array of token-id arrays")
      ->required();
  app.add_option("--out", o->out_dir, "output directory for logits_<i>.npy, greedy_<i>.npy")
      ->required();
  app.add_option("--greedy", o->greedy_tokens, "also write this many greedy tokens per prompt");
  return [o] { return run_logits(*o); };
});

}  // namespace
}  // namespace nibble::cli
