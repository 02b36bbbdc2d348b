#include "core/module_regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "core/error.h"

namespace nibble {
namespace {

// Module paths are short; a legitimate pattern needs a few hundred steps per path. The limits
// bound a pathological one to milliseconds.
constexpr uint32_t kMatchLimit = 100000;
constexpr uint32_t kDepthLimit = 1000;

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  pcre2_get_error_message(code, buffer, sizeof(buffer));
  return reinterpret_cast<const char*>(buffer);
}

}  // namespace

struct ModuleRegex::Impl {
  pcre2_code* code = nullptr;
  pcre2_match_context* context = nullptr;
  ~Impl() {
    pcre2_match_context_free(context);
    pcre2_code_free(code);
  }
};

ModuleRegex::ModuleRegex(std::string pattern, std::string where)
    : pattern_(std::move(pattern)), where_(std::move(where)) {
  auto impl = std::make_shared<Impl>();
  int error = 0;
  PCRE2_SIZE offset = 0;
  impl->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern_.data()), pattern_.size(), 0,
                             &error, &offset, nullptr);
  if (!impl->code)
    fail("{}: invalid regular expression '{}': {} at offset {}", where_, pattern_,
         pcre2_message(error), offset);
  impl->context = pcre2_match_context_create(nullptr);
  if (!impl->context) fail("{}: out of memory compiling '{}'", where_, pattern_);
  pcre2_set_match_limit(impl->context, kMatchLimit);
  pcre2_set_depth_limit(impl->context, kDepthLimit);
  impl_ = std::move(impl);
}

bool ModuleRegex::match_prefix(std::string_view text) const { return run(text, false); }
bool ModuleRegex::match_full(std::string_view text) const { return run(text, true); }

bool ModuleRegex::run(std::string_view text, bool whole) const {
  pcre2_match_data* data = pcre2_match_data_create_from_pattern(impl_->code, nullptr);
  if (!data) fail("{}: out of memory matching '{}'", where_, pattern_);
  const uint32_t options = PCRE2_ANCHORED | (whole ? PCRE2_ENDANCHORED : 0u);
  const int rc = pcre2_match(impl_->code, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), 0,
                             options, data, impl_->context);
  pcre2_match_data_free(data);
  if (rc >= 0) return true;
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  fail("{}: regular expression '{}' on '{}': {} (a pattern that backtracks this much is refused)",
       where_, pattern_, text, pcre2_message(rc));
}

}  // namespace nibble
