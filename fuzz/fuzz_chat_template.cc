// Chat templates: the Jinja lexer, parser and sandboxed interpreter with the limits the server
// renders under (output size, loop iterations, recursion depth). The template comes from a
// model file and the messages from a request, so both are hostile. Input: the template, a NUL
// byte, then the render context as JSON (messages, add_generation_prompt, bos_token, ...); a
// missing or invalid context falls back to a small conversation.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "fuzz_common.h"
#include "tokenizer/chat_template.h"

namespace {

using nlohmann::ordered_json;

const ordered_json& default_context() {
  static const ordered_json context = ordered_json::parse(R"({
    "messages": [
      {"role": "system", "content": "You are helpful."},
      {"role": "user", "content": "Hi <|im_end|> {{ there }}"},
      {"role": "assistant", "content": "Hello!"},
      {"role": "user", "content": "\u00e9\u4e16 \ud83d\ude00"}
    ],
    "add_generation_prompt": true,
    "bos_token": "<s>",
    "eos_token": "</s>"
  })");
  return context;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto [template_text, context_text] =
      nibble::fuzz::split_at_nul(nibble::fuzz::as_text(data, size));
  const auto parsed = nibble::fuzz::parse_json<ordered_json>(context_text);
  const ordered_json& context = parsed && parsed->is_object() ? *parsed : default_context();
  try {
    const nibble::ChatTemplate chat_template{std::string(template_text)};
    // A fixed clock: strftime_now() must not make a crash depend on the time of day.
    (void)chat_template.render(context, std::time_t{1'700'000'000});
  } catch (const nibble::Error&) {
  }
  return 0;
}
