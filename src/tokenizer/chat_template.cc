#include "tokenizer/chat_template.h"

#include "tokenizer/jinja/interpreter.h"
#include "tokenizer/jinja/parser.h"

namespace nibble {

struct ChatTemplate::Impl {
  jinja::Body body;
  ChatTemplateLimits limits;
};

namespace {
// The parser recurses per nesting level; this keeps hostile templates off the stack's end.
constexpr size_t kMaxParseDepth = 256;
}  // namespace

ChatTemplate::ChatTemplate(const std::string& source, ChatTemplateLimits limits)
    : impl_(std::make_unique<Impl>()) {
  impl_->limits = limits;
  impl_->body = jinja::parse_template(source, kMaxParseDepth);
}

ChatTemplate::~ChatTemplate() = default;
ChatTemplate::ChatTemplate(ChatTemplate&&) noexcept = default;
ChatTemplate& ChatTemplate::operator=(ChatTemplate&&) noexcept = default;

namespace {
template <typename Json>
std::string render_with(const jinja::Body& body, const ChatTemplateLimits& limits,
                        const Json& context, std::time_t now) {
  if (!context.is_object()) fail("chat template context must be a JSON object");
  jinja::Interpreter interpreter(
      {limits.max_output_bytes, limits.max_loop_iterations, limits.max_recursion_depth}, now);
  return interpreter.render(body, jinja::Value::from_json(context));
}
}  // namespace

std::string ChatTemplate::render(const nlohmann::json& context) const {
  return render_with(impl_->body, impl_->limits, context, std::time(nullptr));
}
std::string ChatTemplate::render(const nlohmann::ordered_json& context) const {
  return render_with(impl_->body, impl_->limits, context, std::time(nullptr));
}
std::string ChatTemplate::render(const nlohmann::json& context, std::time_t now) const {
  return render_with(impl_->body, impl_->limits, context, now);
}
std::string ChatTemplate::render(const nlohmann::ordered_json& context, std::time_t now) const {
  return render_with(impl_->body, impl_->limits, context, now);
}

}  // namespace nibble
