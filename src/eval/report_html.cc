#include "eval/report_html.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "eval/statistics.h"

namespace nibble::eval {

std::string html_escape(std::string_view text) {
  std::string out;
  for (const char c : text) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

namespace {

constexpr int kWidth = 720, kHeight = 260, kLeft = 60, kBottom = 40, kTop = 20, kRight = 20;

// Bars of `values` with x labels at the given positions.
std::string bar_chart(const std::vector<double>& values, const std::string& x_title,
                      const std::string& y_title,
                      const std::vector<std::pair<double, std::string>>& x_ticks) {
  const double plot_w = kWidth - kLeft - kRight, plot_h = kHeight - kTop - kBottom;
  const double peak =
      values.empty() ? 1.0 : std::max(*std::max_element(values.begin(), values.end()), 1e-30);
  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" "
      "viewBox=\"0 0 {} {}\" font-family=\"sans-serif\" font-size=\"11\">\n",
      kWidth, kHeight, kWidth, kHeight);
  svg += fmt::format(
      "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"#fafafa\" "
      "stroke=\"#ccc\"/>\n",
      kLeft, kTop, plot_w, plot_h);
  const double bar_w = values.empty() ? 0 : plot_w / double(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    const double h = plot_h * values[i] / peak;
    svg += fmt::format(
        "<rect x=\"{:.2f}\" y=\"{:.2f}\" width=\"{:.2f}\" height=\"{:.2f}\" "
        "fill=\"#4a7ebb\"/>\n",
        kLeft + bar_w * double(i), kTop + plot_h - h, std::max(bar_w - 1, 0.5), h);
  }
  for (const auto& [frac, label] : x_ticks) {
    const double x = kLeft + plot_w * frac;
    svg += fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", x,
                       kHeight - kBottom + 14, html_escape(label));
  }
  svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
                     kLeft + plot_w / 2, kHeight - 6, html_escape(x_title));
  svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n", kLeft - 4,
                     kTop + 10, fmt::format("{:.3g}", peak));
  svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">0</text>\n", kLeft - 4,
                     kTop + plot_h);
  svg += fmt::format(
      "<text transform=\"translate(14,{}) rotate(-90)\" text-anchor=\"middle\">{}"
      "</text>\n",
      kTop + plot_h / 2, html_escape(y_title));
  svg += "</svg>\n";
  return svg;
}

std::string kld_histogram(const std::vector<double>& kld) {
  // log10 bins from 1e-6 to 10 nats: per-token KLD spans many decades, and the heavy tail is
  // what separates a good quantization from a bad one. Smaller values land in the first bin.
  constexpr double lo = -6.0, hi = 1.0;
  constexpr int bins = 56;
  std::vector<double> logs;
  logs.reserve(kld.size());
  for (const double k : kld) logs.push_back(std::log10(std::max(k, 1e-12)));
  const Histogram h = make_histogram(logs, bins, lo, hi);
  std::vector<double> counts(h.counts.begin(), h.counts.end());
  std::vector<std::pair<double, std::string>> ticks;
  for (int e = int(lo); e <= int(hi); ++e) {
    ticks.emplace_back((e - lo) / (hi - lo), fmt::format("1e{}", e));
  }
  return bar_chart(counts, "per-token KL(reference || model), nats (log scale)", "tokens", ticks);
}

std::string window_chart(const std::vector<double>& window_kld) {
  std::vector<std::pair<double, std::string>> ticks;
  const size_t n = window_kld.size();
  for (size_t i = 0; i < n; i += std::max<size_t>(1, n / 8)) {
    ticks.emplace_back((double(i) + 0.5) / double(n), std::to_string(i));
  }
  return bar_chart(window_kld, "window", "mean KLD", ticks);
}

}  // namespace

std::string render_html_report(const ValidationReport& r) {
  std::string html =
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
      "<title>nibble validate</title>\n<style>\n"
      "body{font-family:sans-serif;max-width:800px;margin:2em auto;color:#222}\n"
      "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;"
      "text-align:right}th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}\n"
      ".pass{color:#1a7f37;font-weight:bold}.fail{color:#cf222e;font-weight:bold}\n"
      "</style></head><body>\n";
  html += fmt::format("<h1>nibble validate: <span class=\"{}\">{}</span></h1>\n",
                      r.passed ? "pass" : "fail", r.passed ? "PASSED" : "FAILED");
  html += fmt::format(
      "<p>Model <code>{}</code> ({}, {:.2f} bits/weight)<br>Reference "
      "<code>{}</code><br>{} windows of {} tokens, stride {}, {} scored tokens"
      "</p>\n",
      html_escape(r.model_path), html_escape(r.family.name), r.family.bits_per_weight,
      html_escape(r.reference_path), r.kld.base.n_windows, r.context, r.stride,
      r.kld.base.n_tokens);
  html += "<table><tr><th></th><th>reference</th><th>model</th></tr>\n";
  html += fmt::format(
      "<tr><td>perplexity</td><td>{:.4f} &plusmn; {:.4f}</td><td>{:.4f} "
      "&plusmn; {:.4f}</td></tr>\n",
      r.kld.base.ppl, r.kld.base.ppl_std_error, r.kld.model.ppl, r.kld.model.ppl_std_error);
  for (const TaskComparison& t : r.tasks) {
    html += fmt::format(
        "<tr><td>{} acc / acc_norm ({} items)</td><td>{:.4f} / {:.4f}</td>"
        "<td>{:.4f} / {:.4f}</td></tr>\n",
        html_escape(t.task), t.n_items, t.reference_acc, t.reference_acc_norm, t.model_acc,
        t.model_acc_norm);
  }
  html += "</table>\n";
  const SampleSummary& s = r.kld.kld_summary;
  html += fmt::format(
      "<p>KLD mean {:.6f} &plusmn; {:.6f}, median {:.6f}, p99 {:.6f}, max "
      "{:.6f}; top-1 agreement {:.4f}</p>\n",
      s.mean, s.std_error, s.median, s.p99, s.max, r.kld.top1_agreement);
  html +=
      "<h2>Checks</h2>\n<table><tr><th>metric</th><th>value</th><th>limit</th>"
      "<th>result</th></tr>\n";
  for (const GateCheck& c : r.checks) {
    html += fmt::format(
        "<tr><td>{}</td><td>{:.6f}</td><td>{} {:.6f}</td><td class=\"{}\">{}"
        "</td></tr>\n",
        html_escape(c.metric), c.value, c.upper_bound ? "&le;" : "&ge;", c.limit,
        c.pass ? "pass" : "fail", c.pass ? "pass" : "FAIL");
  }
  html += "</table>\n<h2>Per-token KL divergence</h2>\n" + kld_histogram(r.kld.kld);
  html += "<h2>Mean KL divergence per window</h2>\n" + window_chart(r.kld.window_kld);
  html += "</body></html>\n";
  return html;
}

}  // namespace nibble::eval
