#pragma once
// `nibble validate --report`: one self-contained HTML page (no scripts, no external files)
// with the summary, the gate checks and inline SVG charts: the distribution of per-token KLD
// (log10 bins) and the mean KLD of each window along the text.
#include <string>

#include "eval/quality_gate.h"

namespace nibble::eval {

std::string render_html_report(const ValidationReport& report);

std::string html_escape(std::string_view text);

}  // namespace nibble::eval
