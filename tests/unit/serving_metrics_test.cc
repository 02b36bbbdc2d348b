#include "net/serving_metrics.h"

#include <gtest/gtest.h>

namespace nibble::net {
namespace {

TEST(ServingMetrics, PercentileInterpolatesLikeNumpy) {
  // numpy.percentile([1, 2, 3, 4], q) for q = 0, 50, 90, 99, 100.
  const std::vector<double> v = {4, 1, 3, 2};
  EXPECT_DOUBLE_EQ(percentile(v, 0), 1.0);
  EXPECT_DOUBLE_EQ(percentile(v, 50), 2.5);
  EXPECT_DOUBLE_EQ(percentile(v, 90), 3.7);
  EXPECT_DOUBLE_EQ(percentile(v, 99), 3.97);
  EXPECT_DOUBLE_EQ(percentile(v, 100), 4.0);
  EXPECT_DOUBLE_EQ(percentile({}, 50), 0.0);
  EXPECT_DOUBLE_EQ(percentile({7}, 99), 7.0);
}

TEST(ServingMetrics, SummaryFollowsBenchServingDefinitions) {
  RequestOutcome a{.success = true,
                   .error = "",
                   .prompt_tokens = 100,
                   .output_tokens = 5,
                   .ttft_s = 0.2,
                   .latency_s = 1.0,
                   .itl_s = {0.2, 0.2, 0.2, 0.2},
                   .generated_text = "abcde"};
  RequestOutcome b{.success = true,
                   .error = "",
                   .prompt_tokens = 50,
                   .output_tokens = 1,
                   .ttft_s = 0.4,
                   .latency_s = 0.4,
                   .itl_s = {},
                   .generated_text = "x"};
  RequestOutcome failed{.success = false,
                        .error = "HTTP 503",
                        .prompt_tokens = 999,
                        .output_tokens = 999,
                        .ttft_s = 0,
                        .latency_s = 9,
                        .itl_s = {},
                        .generated_text = ""};
  const ServingSummary s = summarize({a, b, failed}, 2.0);
  EXPECT_EQ(s.completed, 2);
  EXPECT_EQ(s.failed, 1);
  EXPECT_EQ(s.total_input_tokens, 150);
  EXPECT_EQ(s.total_output_tokens, 6);
  EXPECT_DOUBLE_EQ(s.request_throughput, 1.0);
  EXPECT_DOUBLE_EQ(s.input_throughput, 75.0);
  EXPECT_DOUBLE_EQ(s.output_throughput, 3.0);
  EXPECT_DOUBLE_EQ(s.total_throughput, 78.0);
  EXPECT_DOUBLE_EQ(s.concurrency, 0.7);
  EXPECT_DOUBLE_EQ(s.ttft_ms.mean, 300.0);
  // TPOT only for requests with more than one token: (1.0 - 0.2) / 4.
  EXPECT_DOUBLE_EQ(s.tpot_ms.mean, 200.0);
  EXPECT_DOUBLE_EQ(s.tpot_ms.p99, 200.0);
  EXPECT_NEAR(s.itl_ms.median, 200.0, 1e-9);
  EXPECT_DOUBLE_EQ(s.e2e_ms.max, 1000.0);
  const auto j = to_json(s);
  EXPECT_EQ(j["completed"], 2);
  EXPECT_DOUBLE_EQ(j["e2e_latency_ms"]["mean"].get<double>(), 700.0);
  const std::string table = format_table(s, {"Backend:  openai"});
  EXPECT_NE(table.find("Successful requests:"), std::string::npos);
  EXPECT_NE(table.find("Median TPOT (ms):"), std::string::npos);
  EXPECT_NE(table.find("Backend:  openai"), std::string::npos);
}

}  // namespace
}  // namespace nibble::net
