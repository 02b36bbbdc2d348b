#include "eval/report_html.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
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
constexpr double kPlotW = kWidth - kLeft - kRight, kPlotH = kHeight - kTop - kBottom;

// Distinct on white and for the common colour-vision deficiencies (Okabe-Ito plus greys).
constexpr std::array<const char*, 10> kPalette = {"#0072b2", "#e69f00", "#009e73", "#d55e00",
                                                  "#cc79a7", "#56b4e9", "#f0e442", "#000000",
                                                  "#999999", "#8c564b"};

const char* color(size_t i) { return kPalette[i % kPalette.size()]; }

// Inline SVG needs no xmlns inside HTML, and leaving it out keeps the page free of any URL.
std::string svg_open(int width, int height) {
  return fmt::format(
      "<svg width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\" font-family=\"sans-serif\" "
      "font-size=\"11\" role=\"img\">\n",
      width, height, width, height);
}

std::string plot_frame() {
  return fmt::format(
      "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"#fafafa\" stroke=\"#ccc\"/>\n",
      kLeft, kTop, kPlotW, kPlotH);
}

std::string axis_titles(const std::string& x_title, const std::string& y_title) {
  return fmt::format(
      "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n"
      "<text transform=\"translate(14,{}) rotate(-90)\" text-anchor=\"middle\">{}</text>\n",
      kLeft + kPlotW / 2, kHeight - 6, html_escape(x_title), kTop + kPlotH / 2,
      html_escape(y_title));
}

std::string x_tick_labels(const std::vector<std::pair<double, std::string>>& ticks) {
  std::string svg;
  for (const auto& [frac, label] : ticks) {
    svg += fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
                       kLeft + kPlotW * frac, kHeight - kBottom + 14, html_escape(label));
  }
  return svg;
}

std::string legend(const std::vector<std::string>& names) {
  std::string html = "<p class=\"legend\">";
  for (size_t i = 0; i < names.size(); ++i) {
    html += fmt::format("<span><span class=\"swatch\" style=\"background:{}\"></span>{}</span> ",
                        color(i), html_escape(names[i]));
  }
  return html + "</p>\n";
}

// Bars of `values` with x labels at the given positions.
std::string bar_chart(const std::vector<double>& values, const std::string& x_title,
                      const std::string& y_title,
                      const std::vector<std::pair<double, std::string>>& x_ticks) {
  const double peak =
      values.empty() ? 1.0 : std::max(*std::max_element(values.begin(), values.end()), 1e-30);
  std::string svg = svg_open(kWidth, kHeight) + plot_frame();
  const double bar_w = values.empty() ? 0 : kPlotW / double(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    const double h = kPlotH * values[i] / peak;
    svg += fmt::format(
        "<rect x=\"{:.2f}\" y=\"{:.2f}\" width=\"{:.2f}\" height=\"{:.2f}\" "
        "fill=\"#4a7ebb\"/>\n",
        kLeft + bar_w * double(i), kTop + kPlotH - h, std::max(bar_w - 1, 0.5), h);
  }
  svg += x_tick_labels(x_ticks);
  svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{:.3g}</text>\n", kLeft - 4,
                     kTop + 10, peak);
  svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">0</text>\n", kLeft - 4,
                     kTop + kPlotH);
  return svg + axis_titles(x_title, y_title) + "</svg>\n";
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

// "model.layers.3.self_attn.q_proj" -> "q_proj".
std::string_view projection_of(std::string_view name) {
  const size_t dot = name.rfind('.');
  return dot == std::string_view::npos ? name : name.substr(dot + 1);
}

// One bar per linear layer, in model order, coloured by projection; each bar carries its name
// (data-layer) and a tooltip with the value.
std::string layer_error_chart(const std::vector<LayerWeightError>& layers) {
  std::vector<std::string> projections;
  for (const LayerWeightError& l : layers) {
    const std::string p(projection_of(l.name));
    if (std::find(projections.begin(), projections.end(), p) == projections.end()) {
      projections.push_back(p);
    }
  }
  double peak = 1e-30;
  for (const LayerWeightError& l : layers) peak = std::max(peak, l.relative_error);
  std::string svg = svg_open(kWidth, kHeight) + plot_frame();
  const double bar_w = layers.empty() ? 0 : kPlotW / double(layers.size());
  std::vector<std::pair<double, std::string>> ticks;
  int64_t last_block = -1;
  for (size_t i = 0; i < layers.size(); ++i) {
    const LayerWeightError& l = layers[i];
    const size_t kind =
        size_t(std::find(projections.begin(), projections.end(), projection_of(l.name)) -
               projections.begin());
    const double h = kPlotH * l.relative_error / peak;
    svg += fmt::format(
        "<rect data-layer=\"{}\" x=\"{:.2f}\" y=\"{:.2f}\" width=\"{:.2f}\" height=\"{:.2f}\" "
        "fill=\"{}\"><title>{} ({}, {}x{}): {:.6g}</title></rect>\n",
        html_escape(l.name), kLeft + bar_w * double(i), kTop + kPlotH - h,
        std::max(bar_w - 0.3, 0.3), h, color(kind), html_escape(l.name), html_escape(l.format),
        l.rows, l.cols, l.relative_error);
    if (l.block != last_block && l.block % 5 == 0) {
      ticks.emplace_back(double(i) / double(layers.size()), std::to_string(l.block));
    }
    last_block = l.block;
  }
  svg += x_tick_labels(ticks);
  svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{:.3g}</text>\n", kLeft - 4,
                     kTop + 10, peak);
  svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">0</text>\n", kLeft - 4,
                     kTop + kPlotH);
  svg += axis_titles("transformer block", "||Wq - W||F / ||W||F");
  return svg + "</svg>\n" + legend(projections);
}

// One horizontal bar per model.
std::string model_bars(const std::vector<std::string>& labels, const std::vector<double>& values,
                       const std::string& title) {
  constexpr int row = 20, label_w = 300, value_w = 90;
  const int height = kTop + row * int(labels.size()) + 30;
  double peak = 1e-30;
  for (const double v : values) peak = std::max(peak, std::abs(v));
  const double plot_w = kWidth - label_w - value_w;
  std::string svg = svg_open(kWidth, height);
  for (size_t i = 0; i < labels.size(); ++i) {
    const double y = kTop + row * double(i);
    const double w = plot_w * std::abs(values[i]) / peak;
    svg += fmt::format(
        "<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\">{}</text>\n"
        "<rect x=\"{}\" y=\"{:.1f}\" width=\"{:.2f}\" height=\"{}\" fill=\"{}\"/>\n"
        "<text x=\"{:.1f}\" y=\"{:.1f}\">{:.5g}</text>\n",
        label_w - 6, y + row - 7, html_escape(labels[i]), label_w, y + 2, w, row - 4, color(i),
        label_w + w + 4, y + row - 7, values[i]);
  }
  svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
                     label_w + plot_w / 2, height - 8, html_escape(title));
  return svg + "</svg>\n";
}

struct Series {
  std::vector<double> x, y;  // x in [0, 1] of the plot width; y in the chart's units
};

// Overlaid polylines on a log10 y axis (values <= 0 sit on the floor).
std::string log_lines_chart(const std::vector<Series>& series, const std::string& x_title,
                            const std::string& y_title,
                            const std::vector<std::pair<double, std::string>>& x_ticks) {
  double lo = 1e300, hi = 1e-300;
  for (const Series& s : series) {
    for (const double v : s.y) {
      if (v > 0) {
        lo = std::min(lo, v);
        hi = std::max(hi, v);
      }
    }
  }
  if (lo > hi) lo = 1e-6, hi = 1.0;
  const double e_lo = std::floor(std::log10(lo)),
               e_hi = std::max(std::ceil(std::log10(hi)), e_lo + 1);
  auto to_y = [&](double v) {
    const double e = v > 0 ? std::log10(v) : e_lo;
    return kTop + kPlotH * (1.0 - (e - e_lo) / (e_hi - e_lo));
  };
  std::string svg = svg_open(kWidth, kHeight) + plot_frame();
  for (double e = e_lo; e <= e_hi; e += 1.0) {
    const double y = to_y(std::pow(10.0, e));
    svg += fmt::format(
        "<line x1=\"{}\" x2=\"{}\" y1=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#e4e4e4\"/>\n"
        "<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\">1e{}</text>\n",
        kLeft, kLeft + kPlotW, y, y, kLeft - 4, y + 4, int(e));
  }
  for (size_t i = 0; i < series.size(); ++i) {
    std::string points;
    for (size_t j = 0; j < series[i].x.size(); ++j) {
      points +=
          fmt::format("{:.1f},{:.1f} ", kLeft + kPlotW * series[i].x[j], to_y(series[i].y[j]));
    }
    svg +=
        fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.2\" points=\"{}\"/>\n",
                    color(i), points);
  }
  return svg + x_tick_labels(x_ticks) + axis_titles(x_title, y_title) + "</svg>\n";
}

// Fraction of tokens with KLD <= x for x on a log10 axis (1e-6 .. 10 nats), one curve per
// model: the whole distribution of every model on one chart.
std::string kld_cdf_chart(const std::vector<ValidationReport>& reports) {
  constexpr double lo = -6.0, hi = 1.0;
  constexpr int steps = 140;
  std::string svg = svg_open(kWidth, kHeight) + plot_frame();
  for (int f = 0; f <= 4; ++f) {
    const double y = kTop + kPlotH * (1.0 - f / 4.0);
    svg += fmt::format(
        "<line x1=\"{}\" x2=\"{}\" y1=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#e4e4e4\"/>\n"
        "<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\">{:.2f}</text>\n",
        kLeft, kLeft + kPlotW, y, y, kLeft - 4, y + 4, f / 4.0);
  }
  for (size_t i = 0; i < reports.size(); ++i) {
    std::vector<double> sorted = reports[i].kld.kld;
    std::sort(sorted.begin(), sorted.end());
    std::string points;
    for (int s = 0; s <= steps && !sorted.empty(); ++s) {
      const double x = lo + (hi - lo) * s / steps;
      const double below =
          double(std::upper_bound(sorted.begin(), sorted.end(), std::pow(10.0, x)) -
                 sorted.begin()) /
          double(sorted.size());
      points +=
          fmt::format("{:.1f},{:.1f} ", kLeft + kPlotW * s / steps, kTop + kPlotH * (1.0 - below));
    }
    svg +=
        fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.2\" points=\"{}\"/>\n",
                    color(i), points);
  }
  std::vector<std::pair<double, std::string>> ticks;
  for (int e = int(lo); e <= int(hi); ++e) {
    ticks.emplace_back((e - lo) / (hi - lo), fmt::format("1e{}", e));
  }
  return svg + x_tick_labels(ticks) +
         axis_titles("per-token KL(reference || model), nats (log scale)",
                     "fraction of tokens <= x") +
         "</svg>\n";
}

std::string comparison_section(const std::vector<ValidationReport>& reports) {
  std::vector<std::string> labels;
  std::vector<double> kld, increase, top1;
  for (const ValidationReport& r : reports) {
    labels.push_back(r.label);
    kld.push_back(r.kld.kld_summary.mean);
    increase.push_back(100.0 * (r.kld.model.ppl - r.kld.base.ppl) / r.kld.base.ppl);
    top1.push_back(r.kld.top1_agreement);
  }
  std::string html =
      "<h2>Side by side</h2>\n<table><tr><th>model</th><th>bits/weight</th>"
      "<th>ppl</th><th>ppl increase</th><th>mean KLD</th><th>p99 KLD</th>"
      "<th>top-1</th>";
  for (const TaskComparison& t : reports.front().tasks) {
    html += fmt::format("<th>{} acc</th>", html_escape(t.task));
  }
  html += "<th>max layer error</th><th>gate</th></tr>\n";
  const ValidationReport& first = reports.front();
  html += fmt::format(
      "<tr><td>reference</td><td></td><td>{:.4f}</td><td></td><td></td><td></td>"
      "<td></td>",
      first.kld.base.ppl);
  for (const TaskComparison& t : first.tasks)
    html += fmt::format("<td>{:.4f}</td>", t.reference_acc);
  html += "<td></td><td></td></tr>\n";
  for (size_t i = 0; i < reports.size(); ++i) {
    const ValidationReport& r = reports[i];
    double worst = 0.0;
    for (const LayerWeightError& l : r.layers) worst = std::max(worst, l.relative_error);
    html += fmt::format(
        "<tr><td><a href=\"#model-{}\">{}</a></td><td>{:.2f}</td><td>{:.4f}</td>"
        "<td>{:+.2f}%</td><td>{:.6f}</td><td>{:.6f}</td><td>{:.4f}</td>",
        i, html_escape(r.label), r.family.bits_per_weight, r.kld.model.ppl, increase[i], kld[i],
        r.kld.kld_summary.p99, top1[i]);
    for (const TaskComparison& t : r.tasks) html += fmt::format("<td>{:.4f}</td>", t.model_acc);
    html += fmt::format("<td>{}</td><td class=\"{}\">{}</td></tr>\n",
                        r.layers.empty() ? "" : fmt::format("{:.5f}", worst),
                        r.passed ? "pass" : "fail", r.passed ? "pass" : "FAIL");
  }
  html += "</table>\n";
  html += "<h3>Mean KL divergence</h3>\n" + model_bars(labels, kld, "mean KLD (nats)");
  html += "<h3>Perplexity increase</h3>\n" +
          model_bars(labels, increase, "perplexity increase over the reference, % (bar: |value|)");
  html += "<h3>Top-1 agreement</h3>\n" + model_bars(labels, top1, "top-1 agreement");
  html +=
      "<h3>Per-token KL divergence, cumulative</h3>\n" + kld_cdf_chart(reports) + legend(labels);
  std::vector<Series> series;
  std::vector<std::pair<double, std::string>> ticks;
  for (const ValidationReport& r : reports) {
    Series s;
    const size_t n = r.layers.size();
    for (size_t j = 0; j < n; ++j) {
      s.x.push_back((double(j) + 0.5) / double(n));
      s.y.push_back(r.layers[j].relative_error);
      if (ticks.size() < 8 && series.empty() && r.layers[j].block % 5 == 0 &&
          (j == 0 || r.layers[j - 1].block != r.layers[j].block)) {
        ticks.emplace_back(double(j) / double(n), std::to_string(r.layers[j].block));
      }
    }
    series.push_back(std::move(s));
  }
  if (!first.layers.empty()) {
    html += "<h3>Per-layer weight error</h3>\n" +
            log_lines_chart(series, "transformer block (linear layers in model order)",
                            "||Wq - W||F / ||W||F", ticks) +
            legend(labels);
  }
  return html;
}

std::string model_section(const ValidationReport& r, size_t index, bool several) {
  std::string html;
  if (several) {
    html += fmt::format("<h2 id=\"model-{}\">{}: <span class=\"{}\">{}</span></h2>\n", index,
                        html_escape(r.label), r.passed ? "pass" : "fail",
                        r.passed ? "PASSED" : "FAILED");
  }
  html += fmt::format(
      "<p>Model <code>{}</code>{} ({}, {:.2f} bits/weight)</p>\n", html_escape(r.model_path),
      r.quantization.empty()
          ? ""
          : fmt::format(" quantized online: <code>{}</code>", html_escape(r.quantization)),
      html_escape(r.family.name), r.family.bits_per_weight);
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
  const std::string h = several ? "h3" : "h2";
  html += fmt::format(
      "<{}>Checks</{}>\n<table><tr><th>metric</th><th>value</th><th>limit</th>"
      "<th>result</th></tr>\n",
      h, h);
  for (const GateCheck& c : r.checks) {
    html += fmt::format(
        "<tr><td>{}</td><td>{:.6f}</td><td>{} {:.6f}</td><td class=\"{}\">{}"
        "</td></tr>\n",
        html_escape(c.metric), c.value, c.upper_bound ? "&le;" : "&ge;", c.limit,
        c.pass ? "pass" : "fail", c.pass ? "pass" : "FAIL");
  }
  html += "</table>\n";
  if (!r.layers.empty()) {
    html += fmt::format(
        "<{}>Per-layer weight error</{}>\n<p>Relative Frobenius error of each linear layer's "
        "weight as the model computes with it against the reference weight, "
        "||W<sub>model</sub> &minus; W<sub>ref</sub>||<sub>F</sub> / "
        "||W<sub>ref</sub>||<sub>F</sub> ({} layers).</p>\n",
        h, h, r.layers.size());
    html += "<div class=\"layer-chart\">\n" + layer_error_chart(r.layers) + "</div>\n";
  }
  html += fmt::format("<{}>Per-token KL divergence</{}>\n", h, h) + kld_histogram(r.kld.kld);
  html += fmt::format("<{}>Mean KL divergence per window</{}>\n", h, h) +
          window_chart(r.kld.window_kld);
  return html;
}

}  // namespace

std::string render_html_report(const std::vector<ValidationReport>& reports) {
  bool passed = !reports.empty();
  for (const ValidationReport& r : reports) passed = passed && r.passed;
  std::string html =
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
      "<title>nibble validate</title>\n<style>\n"
      "body{font-family:sans-serif;max-width:800px;margin:2em auto;color:#222}\n"
      "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;"
      "text-align:right}th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}\n"
      ".pass{color:#1a7f37;font-weight:bold}.fail{color:#cf222e;font-weight:bold}\n"
      ".legend span{margin-right:1em;white-space:nowrap}.swatch{display:inline-block;width:10px;"
      "height:10px;margin-right:4px}\n"
      "</style></head><body>\n";
  html += fmt::format("<h1>nibble validate: <span class=\"{}\">{}</span></h1>\n",
                      passed ? "pass" : "fail", passed ? "PASSED" : "FAILED");
  if (reports.empty()) return html + "<p>No model was validated.</p></body></html>\n";
  const ValidationReport& first = reports.front();
  html += fmt::format(
      "<p>Reference <code>{}</code><br>{} windows of {} tokens, stride {}, {} scored tokens"
      "</p>\n",
      html_escape(first.reference_path), first.kld.base.n_windows, first.context, first.stride,
      first.kld.base.n_tokens);
  const bool several = reports.size() > 1;
  if (several) html += comparison_section(reports);
  for (size_t i = 0; i < reports.size(); ++i) html += model_section(reports[i], i, several);
  html += "</body></html>\n";
  return html;
}

std::string render_html_report(const ValidationReport& report) {
  return render_html_report(std::vector<ValidationReport>{report});
}

}  // namespace nibble::eval
