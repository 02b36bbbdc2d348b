#pragma once
// Chat templates: the subset of Jinja2 that real model templates use, rendered exactly as
// Python's jinja2 renders them (trim_blocks/lstrip_blocks off, as transformers sets up),
// sandboxed: no file or OS access, and bounded loops, recursion depth and output size.
#include <cstddef>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

namespace nibble {

struct ChatTemplateLimits {
  size_t max_output_bytes = 16u << 20;
  size_t max_loop_iterations = 1u << 20;
  size_t max_recursion_depth = 64;
};

class ChatTemplate {
 public:
  // Parses the template; throws nibble::Error with line/column on a syntax error.
  explicit ChatTemplate(const std::string& source, ChatTemplateLimits limits = {});
  ~ChatTemplate();
  ChatTemplate(ChatTemplate&&) noexcept;
  ChatTemplate& operator=(ChatTemplate&&) noexcept;

  // `context` holds the template variables, e.g. {"messages": [...],
  // "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>"}.
  // raise_exception(msg) in the template throws nibble::Error(msg).
  std::string render(const nlohmann::json& context) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace nibble
