// `nibble chat`: an interactive conversation through the model's chat template.
#include <cstdio>
#include <iostream>

#include "command.h"
#include "common_options.h"
#include "core/error.h"
#include "runtime/chat_prompt.h"
#include "runtime/generator.h"

namespace nibble::cli {
namespace {

struct ChatOptions {
  ModelOptions model;
  SamplingOptions sampling;
  std::string system;
};

int run_chat(const ChatOptions& o) {
  o.model.apply_threads();
  ModelSource source = o.model.open();
  require_tokenizer(source);
  SamplingParams params = o.sampling.resolve(source.generation);
  auto model = build_model(source, o.model.compute_type());
  Generator generator(*model, source.tokenizer.get(), source.stop_ids,
                      {.kv = o.model.kv_cache(source)});
  nlohmann::json messages = nlohmann::json::array();
  if (!o.system.empty()) messages.push_back({{"role", "system"}, {"content", o.system}});
  std::fprintf(stderr, "nibble chat: %s (type /reset to start over, /exit or Ctrl-D to quit)\n",
               source.path.string().c_str());
  std::string line;
  for (;;) {
    std::fputs("> ", stdout);
    std::fflush(stdout);
    if (!std::getline(std::cin, line) || line == "/exit") break;
    if (line == "/reset") {
      messages = nlohmann::json::array();
      if (!o.system.empty()) messages.push_back({{"role", "system"}, {"content", o.system}});
      continue;
    }
    if (line.empty()) continue;
    messages.push_back({{"role", "user"}, {"content", line}});
    try {
      const auto prompt = chat_prompt_ids(source, messages, true);
      auto result = generator.generate(prompt, params, [](std::string_view text) {
        std::fwrite(text.data(), 1, text.size(), stdout);
        std::fflush(stdout);
      });
      std::fputs("\n", stdout);
      messages.push_back({{"role", "assistant"}, {"content", result.text}});
    } catch (const Error& e) {
      // A bad turn (e.g. the context is full) must not end the session.
      std::fprintf(stderr, "error: %s\n", e.what());
      messages.erase(messages.end() - 1);
    }
  }
  return 0;
}

NIBBLE_COMMAND(chat, [](CLI::App& app) -> std::function<int()> {
  auto o = std::make_shared<ChatOptions>();
  app.description("Chat with a model interactively (streams tokens)");
  o->model.add(app);
  o->sampling.add(app);
  app.add_option("--system", o->system, "system message");
  return [o] { return run_chat(*o); };
});

}  // namespace
}  // namespace nibble::cli
