// `nibble chat-template`: renders a chat template with a JSON context, for checking a
// template against transformers' rendering.
#include <cstdio>
#include <fstream>
#include <sstream>

#include "command.h"
#include "core/error.h"
#include "tokenizer/chat_template.h"

namespace nibble::cli {
namespace {

std::string read_file(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open {}", path, what);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct Options {
  std::string template_path;
  std::string context_path;
  int64_t now = -1;
};

}  // namespace

NIBBLE_COMMAND(chat_template, [](CLI::App& app) -> std::function<int()> {
  app.name("chat-template");
  app.description("Render a chat template with a JSON context and print the result");
  auto options = std::make_shared<Options>();
  app.add_option("--template", options->template_path, "Jinja chat template file")->required();
  app.add_option("--context", options->context_path,
                 "JSON file with the template variables (messages, add_generation_prompt, ...)")
      ->required();
  app.add_option("--now", options->now,
                 "seconds since the epoch that strftime_now() reports (default: the current time)");
  return [options]() {
    std::string source = read_file(options->template_path, "chat template");
    std::string context_text = read_file(options->context_path, "context JSON");
    nlohmann::ordered_json context = nlohmann::ordered_json::parse(context_text, nullptr, false);
    if (context.is_discarded()) fail("{}: not valid JSON", options->context_path);
    ChatTemplate tmpl = [&] {
      try {
        return ChatTemplate(source);
      } catch (const Error& e) {
        fail("{}: {}", options->template_path, e.what());
      }
    }();
    std::string out = options->now >= 0
                          ? tmpl.render(context, static_cast<std::time_t>(options->now))
                          : tmpl.render(context);
    std::fwrite(out.data(), 1, out.size(), stdout);
    return 0;
  };
});

}  // namespace nibble::cli
