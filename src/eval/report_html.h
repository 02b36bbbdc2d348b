#pragma once
// `nibble validate --report`: one self-contained HTML page (no scripts, no styles or images
// from elsewhere, no URLs at all) with the summary, the gate checks and inline SVG charts:
//  - per model: the relative weight error of every linear layer of the transformer blocks
//    (eval/layer_error.h), the distribution of per-token KLD (log10 bins) and the mean KLD of
//    each window along the text;
//  - with several models: a side-by-side table, bars of mean KLD, perplexity increase and
//    top-1 agreement per model, the per-token KLD distributions as overlaid cumulative curves
//    and the per-layer weight errors as overlaid lines (log scale).
#include <string>
#include <vector>

#include "eval/quality_gate.h"

namespace nibble::eval {

std::string render_html_report(const std::vector<ValidationReport>& reports);
std::string render_html_report(const ValidationReport& report);

std::string html_escape(std::string_view text);

}  // namespace nibble::eval
