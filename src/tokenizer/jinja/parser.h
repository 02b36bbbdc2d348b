#pragma once
#include <string>

#include "tokenizer/jinja/ast.h"

namespace nibble::jinja {

// Parses template source; throws nibble::Error "... at LINE:COLUMN: ..." on a syntax error.
// `max_depth` bounds expression/block nesting so hostile templates cannot overflow the stack.
Body parse_template(const std::string& source, size_t max_depth);

}  // namespace nibble::jinja
