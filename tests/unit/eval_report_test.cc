// The HTML report and the side-by-side outputs of `nibble validate`
// (eval/report_html.h, eval/quality_gate.h) on hand-made reports: one chart bar
// per linear layer, no URL anywhere, labels escaped, several models compared.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "eval/quality_gate.h"
#include "eval/report_html.h"

namespace nibble::eval {
namespace {

size_t count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

ValidationReport make_report(const std::string& label, double kld, double layer_scale) {
  ValidationReport r;
  // Built, not assigned from literals: GCC 12 -O3 warns falsely (-Wrestrict) on those here.
  r.model_path = label + "-model";
  r.label = label;
  r.reference_path = label + "-ref";
  r.kld.base.ppl = 10.0;
  r.kld.model.ppl = 10.0 * (1.0 + kld);
  r.kld.kld = {kld / 2, kld, 2 * kld};
  r.kld.window_kld = {kld};
  r.kld.kld_summary.mean = kld;
  r.kld.top1_agreement = 1.0 - kld;
  for (int block = 0; block < 2; ++block) {
    for (const char* proj : {"self_attn.q_proj", "self_attn.k_proj", "mlp.down_proj"}) {
      r.layers.push_back({.name = "model.layers." + std::to_string(block) + "." + proj,
                          .block = block,
                          .format = "Q8_0",
                          .rows = 4,
                          .cols = 8,
                          .relative_error = layer_scale * (1 + block)});
    }
  }
  r.checks = evaluate_gate(
      r.kld, r.tasks,
      {.max_ppl_increase = 0.01, .max_kld = 0.01, .min_top1 = 0.9, .max_acc_drop = std::nullopt});
  r.passed = all_pass(r.checks);
  return r;
}

TEST(EvalReport, OneBarPerLinearLayerAndNoUrl) {
  const std::string html = render_html_report(make_report("a", 0.001, 0.01));
  EXPECT_EQ(count(html, "<rect data-layer=\""), 6u);
  EXPECT_NE(html.find("data-layer=\"model.layers.1.mlp.down_proj\""), std::string::npos);
  EXPECT_EQ(html.find("http"), std::string::npos);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("Side by side"), std::string::npos);
  EXPECT_NE(html.find("PASSED"), std::string::npos);
}

TEST(EvalReport, SeveralModelsSideBySide) {
  const std::vector<ValidationReport> reports = {make_report("<q8>", 0.001, 0.005),
                                                 make_report("int4", 0.3, 0.1)};
  const std::string html = render_html_report(reports);
  EXPECT_NE(html.find("Side by side"), std::string::npos);
  EXPECT_NE(html.find("&lt;q8&gt;"), std::string::npos);
  EXPECT_EQ(html.find("<q8>"), std::string::npos);
  EXPECT_EQ(count(html, "<rect data-layer=\""), 12u);
  EXPECT_EQ(count(html, "<polyline"),
            4u);  // KLD distributions and layer errors, per model
  EXPECT_NE(html.find("FAILED"), std::string::npos);
  EXPECT_EQ(html.find("http"), std::string::npos);

  const nlohmann::json j = to_json(reports);
  ASSERT_EQ(j["models"].size(), 2u);
  EXPECT_FALSE(j["passed"].get<bool>());
  EXPECT_EQ(j["models"][1]["layers"].size(), 6u);
  EXPECT_DOUBLE_EQ(j["models"][1]["layers"][5]["relative_error"].get<double>(), 0.2);

  const std::string table = format_comparison_table(reports);
  EXPECT_NE(table.find("(reference)"), std::string::npos);
  EXPECT_NE(table.find("int4"), std::string::npos);
  EXPECT_NE(table.find("FAIL"), std::string::npos);
  // The worst layer of each model is named in its own table.
  EXPECT_NE(format_table(reports[1]).find("model.layers.1.self_attn.q_proj"), std::string::npos);
}

}  // namespace
}  // namespace nibble::eval
