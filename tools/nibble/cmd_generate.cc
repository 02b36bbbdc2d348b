// `nibble generate`: one prompt in, one completion out (streamed to stdout).
#include <cstdio>
#include <iostream>

#include "command.h"
#include "common_options.h"
#include "runtime/chat_prompt.h"
#include "runtime/generator.h"

namespace nibble::cli {
namespace {

struct GenerateOptions {
  ModelOptions model;
  SamplingOptions sampling;
  std::string prompt;
  std::string system;
  bool chat = false;
  bool no_special = false;
  bool stats = false;
};

int run_generate(const GenerateOptions& o) {
  o.model.apply_threads();
  ModelSource source = o.model.open();
  require_tokenizer(source);
  SamplingParams params = o.sampling.resolve(source.generation);
  std::vector<int32_t> prompt;
  if (o.chat) {
    nlohmann::json messages = nlohmann::json::array();
    if (!o.system.empty()) messages.push_back({{"role", "system"}, {"content", o.system}});
    messages.push_back({{"role", "user"}, {"content", o.prompt}});
    prompt = chat_prompt_ids(source, messages, true);
  } else {
    prompt = source.tokenizer->encode(o.prompt, !o.no_special);
  }
  auto model = build_model(source, o.model.compute_type());
  Generator generator(*model, source.tokenizer.get(), source.stop_ids,
                      {.kv = o.model.kv_cache(source)});
  if (!o.chat) std::fputs(o.prompt.c_str(), stdout);
  auto result = generator.generate(prompt, params, [](std::string_view text) {
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
  });
  std::fputs("\n", stdout);
  if (o.stats) {
    const double n = static_cast<double>(result.output_ids.size());
    std::fprintf(stderr,
                 "[%lld prompt tokens, %.1f tok/s prefill; %lld new tokens, "
                 "%.1f tok/s decode; "
                 "finish: %s]\n",
                 static_cast<long long>(result.prompt_tokens),
                 result.prompt_tokens / std::max(result.prefill_seconds, 1e-9),
                 static_cast<long long>(result.output_ids.size()),
                 n / std::max(result.decode_seconds, 1e-9),
                 std::string(result.finish.name()).c_str());
  }
  return 0;
}

NIBBLE_COMMAND(generate, [](CLI::App& app) -> std::function<int()> {
  auto o = std::make_shared<GenerateOptions>();
  app.description("Generate a completion for one prompt");
  o->model.add(app);
  o->sampling.add(app);
  app.add_option("--prompt,-p", o->prompt, "the prompt text")->required();
  app.add_flag("--chat", o->chat, "wrap the prompt as a user message in the chat template");
  app.add_option("--system", o->system, "system message (with --chat)");
  app.add_flag("--no-special", o->no_special, "do not add BOS/special tokens to a plain prompt");
  app.add_flag("--stats", o->stats, "print token counts and speed to stderr");
  return [o] { return run_generate(*o); };
});

}  // namespace
}  // namespace nibble::cli
