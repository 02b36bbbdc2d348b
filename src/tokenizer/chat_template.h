#pragma once
// Chat templates: the subset of Jinja2 that real model templates use, rendered exactly as
// transformers renders them: jinja2's ImmutableSandboxedEnvironment with trim_blocks and
// lstrip_blocks on, loopcontrols, and transformers' globals (raise_exception, strftime_now,
// namespace, dict) and tojson filter (ensure_ascii=False). Sandboxed: no file or OS access
// (include/import/extends are refused), and bounded loops, recursion depth and output size.
#include <cstddef>
#include <ctime>
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
  // strftime_now() reports the current local time.
  // nlohmann::json keeps object keys sorted, but templates see key order (tojson of a tool
  // schema, `for k, v in d.items()`): pass an ordered_json to keep the caller's order, as
  // Python dicts do.
  std::string render(const nlohmann::json& context) const;
  std::string render(const nlohmann::ordered_json& context) const;
  // The same, with strftime_now() reporting `now` (seconds since the epoch, formatted in the
  // local time zone) so renders are reproducible.
  std::string render(const nlohmann::json& context, std::time_t now) const;
  std::string render(const nlohmann::ordered_json& context, std::time_t now) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace nibble
