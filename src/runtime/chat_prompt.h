#pragma once
// Renders a conversation through the model's chat template into prompt token ids.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace nibble {

struct ModelSource;

// `messages` is an OpenAI-style array of {"role", "content"}. The rendered text is encoded
// without adding special tokens, as transformers' apply_chat_template does: the template
// writes them itself.
std::string render_chat(const ModelSource& source, const nlohmann::json& messages,
                        bool add_generation_prompt);
std::vector<int32_t> chat_prompt_ids(const ModelSource& source, const nlohmann::json& messages,
                                     bool add_generation_prompt);

}  // namespace nibble
