#include "runtime/chat_prompt.h"

#include "core/error.h"
#include "model/loader.h"
#include "tokenizer/chat_template.h"

namespace nibble {

std::string render_chat(const ModelSource& source, const nlohmann::json& messages,
                        bool add_generation_prompt) {
  NIBBLE_CHECK(!source.chat_template.empty(),
               "{}: the model has no chat template (tokenizer_config.json chat_template or GGUF "
               "tokenizer.chat_template); use a plain prompt",
               source.path.string());
  ChatTemplate tmpl(source.chat_template);
  nlohmann::json context = {{"messages", messages},
                            {"add_generation_prompt", add_generation_prompt},
                            {"bos_token", source.bos_token},
                            {"eos_token", source.eos_token}};
  return tmpl.render(context);
}

std::vector<int32_t> chat_prompt_ids(const ModelSource& source, const nlohmann::json& messages,
                                     bool add_generation_prompt) {
  return source.tokenizer->encode(render_chat(source, messages, add_generation_prompt), false);
}

}  // namespace nibble
