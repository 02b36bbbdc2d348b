// Evaluation math: KL divergence, perplexity windows and values, statistics, the base-logits
// file, task parsers and answer extraction.
#include <bzlib.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include "core/error.h"
#include "eval/batch_scorer.h"
#include "eval/bz2_file.h"
#include "eval/gsm8k.h"
#include "eval/kl_divergence.h"
#include "eval/multiple_choice.h"
#include "eval/perplexity.h"
#include "eval/quality_gate.h"
#include "eval/report_html.h"
#include "eval/statistics.h"

namespace nibble::eval {
namespace {

std::mt19937 fresh_rng() { return std::mt19937(std::random_device{}()); }

std::vector<float> random_logprobs(std::mt19937& rng, size_t n, float scale = 3.0f) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> logits(n), out(n);
  for (float& x : logits) x = dist(rng);
  log_softmax(logits, out);
  return out;
}

// Emits the same logits for every token: a model whose next-token distribution is fixed.
class ConstantModel final : public Model {
 public:
  explicit ConstantModel(std::vector<float> logits) : logits_(std::move(logits)) {
    config_.vocab_size = int64_t(logits_.size());
    config_.num_hidden_layers = 1;
    config_.num_key_value_heads = 1;
    config_.head_dim = 4;
  }
  const ModelConfig& config() const override { return config_; }
  void forward(const ForwardBatch&, KvCache&, std::vector<float>&) override {}
  void forward_all_logits(const ForwardBatch& batch, KvCache&, std::vector<float>& out) override {
    ++forwards;
    out.clear();
    for (size_t t = 0; t < batch.token_ids.size(); ++t) {
      out.insert(out.end(), logits_.begin(), logits_.end());
    }
  }
  size_t weight_bytes() const override { return 0; }
  size_t layer_weight_bytes() const override { return 0; }
  int forwards = 0;

 private:
  ModelConfig config_;
  std::vector<float> logits_;
};

TEST(EvalKld, IdenticalDistributionsAreZero) {
  auto rng = fresh_rng();
  const auto p = random_logprobs(rng, 1000);
  EXPECT_NEAR(kl_divergence(p, p), 0.0, 1e-9);
  EXPECT_NEAR(kl_divergence(top_k_distribution(p, 16), p), 0.0, 1e-6);
}

TEST(EvalKld, KnownSmallCase) {
  const std::vector<float> p = {std::log(0.5f), std::log(0.5f)};
  const std::vector<float> q = {std::log(0.25f), std::log(0.75f)};
  const double expected = 0.5 * std::log(0.5 / 0.25) + 0.5 * std::log(0.5 / 0.75);
  EXPECT_NEAR(kl_divergence(p, q), expected, 1e-6);
  // KL(p || q) != KL(q || p).
  const double reverse = 0.25 * std::log(0.25 / 0.5) + 0.75 * std::log(0.75 / 0.5);
  EXPECT_NEAR(kl_divergence(q, p), reverse, 1e-6);
}

TEST(EvalKld, TopKIsALowerBoundAndExactWithFullK) {
  auto rng = fresh_rng();
  for (int trial = 0; trial < 20; ++trial) {
    const auto p = random_logprobs(rng, 500);
    const auto q = random_logprobs(rng, 500);
    const double exact = kl_divergence(p, q);
    EXPECT_GT(exact, 0.0);
    EXPECT_NEAR(kl_divergence(top_k_distribution(p, 500), q), exact, 1e-4 * exact);
    const double approx = kl_divergence(top_k_distribution(p, 32), q);
    EXPECT_LE(approx, exact + 1e-6);
  }
}

TEST(EvalKld, TopKDistributionKeepsMassAndOrder) {
  auto rng = fresh_rng();
  const auto p = random_logprobs(rng, 300);
  const auto d = top_k_distribution(p, 10);
  ASSERT_EQ(d.ids.size(), 10u);
  double mass = std::exp(double(d.rest_logprob));
  for (size_t i = 0; i < d.ids.size(); ++i) {
    mass += std::exp(double(d.logprobs[i]));
    if (i > 0) {
      EXPECT_GE(d.logprobs[i - 1], d.logprobs[i]);
    }
  }
  EXPECT_NEAR(mass, 1.0, 1e-5);
  EXPECT_EQ(d.ids[0], argmax(p));
}

TEST(EvalPerplexity, WindowsFollowTheSlidingConvention) {
  // 10 tokens, context 4, stride 2: [0,4) scores 1..3, [2,6) scores 4..5, [4,8) 6..7,
  // [6,10) 8..9, and the walk stops at the window that reaches the end.
  const auto w = make_windows(10, 4, 2, 0);
  ASSERT_EQ(w.size(), 4u);
  EXPECT_EQ(w[0].begin, 0);
  EXPECT_EQ(w[0].first_scored, 1);
  EXPECT_EQ(w[1].begin, 2);
  EXPECT_EQ(w[1].first_scored, 4);
  EXPECT_EQ(w[3].end, 10);
  EXPECT_EQ(w[3].first_scored, 8);
  // Non-overlapping windows: the first token of each window is context only.
  const auto n = make_windows(10, 4, 4, 0);
  ASSERT_EQ(n.size(), 3u);
  EXPECT_EQ(n[1].first_scored, 5);
  EXPECT_EQ(n[2].begin, 8);
  EXPECT_EQ(n[2].first_scored, 9);
  EXPECT_EQ(make_windows(10, 4, 4, 2).size(), 2u);
  EXPECT_THROW(make_windows(10, 4, 5, 0), Error);
  EXPECT_THROW(make_windows(10, 1, 1, 0), Error);
}

TEST(EvalPerplexity, UniformModelHasVocabSizePerplexity) {
  const int64_t vocab = 97;
  auto rng = fresh_rng();
  std::uniform_real_distribution<float> level(-5.0f, 5.0f);
  ConstantModel model(std::vector<float>(size_t(vocab), level(rng)));
  BatchScorer scorer(model, {.max_batch_tokens = 64, .kv = {}});
  std::uniform_int_distribution<int32_t> token(0, int32_t(vocab) - 1);
  std::vector<int32_t> tokens(300);
  for (auto& t : tokens) t = token(rng);
  const auto windows = make_windows(int64_t(tokens.size()), 32, 16, 0);
  const auto r = perplexity(scorer, tokens, windows);
  EXPECT_NEAR(r.ppl, double(vocab), 1e-3);
  EXPECT_EQ(r.n_tokens, 299);  // every token but the first, each once
  EXPECT_NEAR(r.nll_std_error, 0.0, 1e-9);
  EXPECT_GT(model.forwards, 1);
  EXPECT_LT(model.forwards, int(windows.size()));  // several windows per forward
}

TEST(EvalPerplexity, KnownDistribution) {
  // p(token 0) = 0.5, p(token 1) = 0.25, p(token 2) = 0.25: text "0 1" scores token 1 only.
  ConstantModel model({std::log(0.5f), std::log(0.25f), std::log(0.25f)});
  BatchScorer scorer(model);
  const std::vector<int32_t> tokens = {0, 1, 0};
  const auto r = perplexity(scorer, tokens, make_windows(3, 8, 8, 0));
  // NLLs: ln 4 and ln 2 -> ppl = exp((ln 4 + ln 2) / 2) = sqrt(8).
  EXPECT_NEAR(r.ppl, std::sqrt(8.0), 1e-5);
  EXPECT_NEAR(r.mean_nll, 1.5 * std::log(2.0), 1e-6);
}

TEST(EvalStatistics, SummaryOfKnownSamples) {
  const std::vector<double> x = {1, 2, 3, 4, 5};
  const auto s = summarize(x);
  EXPECT_DOUBLE_EQ(s.mean, 3.0);
  EXPECT_DOUBLE_EQ(s.median, 3.0);
  EXPECT_DOUBLE_EQ(s.max, 5.0);
  EXPECT_NEAR(s.std_error, std::sqrt(2.5 / 5.0), 1e-12);  // sample variance 2.5
  EXPECT_NEAR(s.p99, 4.96, 1e-12);                        // numpy.percentile(x, 99)
  EXPECT_DOUBLE_EQ(quantile({4, 1, 3, 2}, 0.5), 2.5);
  const auto h = make_histogram(x, 2, 0.0, 10.0);
  EXPECT_EQ(h.counts[0], 4);
  EXPECT_EQ(h.counts[1], 1);
}

TEST(EvalStatistics, LogSoftmaxIsStableForLargeLogits) {
  const std::vector<float> logits = {1000.0f, 1000.0f};
  std::vector<float> out(2);
  log_softmax(logits, out);
  EXPECT_NEAR(out[0], -std::log(2.0f), 1e-6);
}

TEST(EvalBaseLogits, RoundTripAndCorruption) {
  auto rng = fresh_rng();
  BaseLogits base;
  base.vocab = 50;
  base.top_k = 5;
  base.context = 8;
  base.stride = 8;
  base.n_text_tokens = 20;
  base.n_windows = 3;
  for (int64_t i = 1; i < 4; ++i) {
    const auto lp = random_logprobs(rng, 50);
    BaseToken t;
    t.target = int32_t(i);
    t.nll = -lp[size_t(i)];
    t.dist = top_k_distribution(lp, 5);
    base.positions.push_back(i);
    base.tokens.push_back(t);
  }
  const auto path = std::filesystem::temp_directory_path() /
                    ("nibble_eval_base_" + std::to_string(rng()) + ".bin");
  save_base_logits(path, base);
  const auto loaded = load_base_logits(path);
  ASSERT_EQ(loaded.tokens.size(), 3u);
  EXPECT_EQ(loaded.positions, base.positions);
  EXPECT_EQ(loaded.tokens[2].dist.ids, base.tokens[2].dist.ids);
  EXPECT_EQ(loaded.tokens[1].dist.logprobs, base.tokens[1].dist.logprobs);
  // Truncated file: a clear error, not a crash.
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 3);
  try {
    load_base_logits(path);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos);
  }
  std::filesystem::remove(path);
}

TEST(EvalTasks, ParsesQueryChoicesAndHellaswag) {
  const auto items = parse_query_choices_jsonl(
      "{\"query\": \"Question: Why?\", \"choices\": [\"a\", \"b c\"], \"gold\": 1}\n", "x", 0);
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0].context, "Question: Why?\nAnswer:");
  EXPECT_EQ(items[0].continuations[1], " b c");
  EXPECT_THROW(
      parse_query_choices_jsonl("{\"query\": \"q\", \"choices\": [\"a\"], \"gold\": 3}", "x", 0),
      Error);
  const auto hs = parse_hellaswag_text("ctx here\n2\ne0\ne1\ne2\ne3\n", "hs", 0);
  ASSERT_EQ(hs.size(), 1u);
  EXPECT_EQ(hs[0].gold, 2);
  EXPECT_EQ(hs[0].continuations[3], " e3");
  EXPECT_THROW(parse_hellaswag_text("ctx\n7\na\nb\nc\nd\n", "hs", 0), Error);
  EXPECT_EQ(utf8_length("h\xc3\xa9llo"), 5);
}

TEST(EvalTasks, Bz2RoundTripAndCorruption) {
  auto rng = fresh_rng();
  std::string text;
  for (int i = 0; i < 5000; ++i) text += char('a' + rng() % 26);
  std::vector<char> packed(text.size() * 2 + 600);
  unsigned packed_n = unsigned(packed.size());
  ASSERT_EQ(BZ2_bzBuffToBuffCompress(packed.data(), &packed_n, text.data(), unsigned(text.size()),
                                     9, 0, 0),
            BZ_OK);
  const auto path = std::filesystem::temp_directory_path() /
                    ("nibble_eval_" + std::to_string(rng()) + ".txt.bz2");
  {
    std::ofstream out(path, std::ios::binary);
    out.write(packed.data(), packed_n);
  }
  EXPECT_EQ(read_text_file(path), text);
  std::filesystem::resize_file(path, packed_n / 2);
  EXPECT_THROW(read_text_file(path), Error);
  std::filesystem::remove(path);
}

TEST(EvalGsm8k, ExtractsFinalNumbers) {
  EXPECT_EQ(extract_gsm8k_answer("so 48+24 = 72\n#### 72"), "72");
  EXPECT_EQ(extract_gsm8k_answer("#### 1,234"), "1234");
  EXPECT_EQ(extract_gsm8k_answer("The answer is $18.00."), "18");
  EXPECT_EQ(extract_gsm8k_answer("first 3 then -5"), "-5");
  EXPECT_EQ(extract_gsm8k_answer("no digits"), std::nullopt);
  const std::string prompt = gsm8k_prompt({{"q1", "a1"}}, "q2");
  EXPECT_EQ(prompt, "Question: q1\nAnswer: a1\n\nQuestion: q2\nAnswer:");
}

TEST(EvalGate, FamiliesThresholdsAndChecks) {
  EXPECT_EQ(family_from_bits(5.0).name, "4-bit");
  EXPECT_EQ(family_from_bits(8.5).name, "8-bit");
  EXPECT_EQ(family_from_bits(16.0).name, "16-bit");
  KldResult r;
  r.base.ppl = 10.0;
  r.model.ppl = 10.1;
  r.kld_summary.mean = 0.01;
  r.top1_agreement = 0.95;
  GateThresholds t;
  t.max_ppl_increase = 0.02;
  t.max_kld = 0.05;
  t.min_top1 = 0.9;
  EXPECT_TRUE(all_pass(evaluate_gate(r, {}, t)));
  r.kld_summary.mean = 0.2;
  const auto checks = evaluate_gate(r, {}, t);
  EXPECT_FALSE(all_pass(checks));
  EXPECT_EQ(checks[1].metric, "kld_mean");
  EXPECT_FALSE(checks[1].pass);
  ValidationReport report;
  report.model_path = "<model & \"x\">";
  report.kld = r;
  report.kld.kld = {1e-4, 0.02, 3.0};
  report.kld.window_kld = {0.1, 0.2};
  report.checks = checks;
  const std::string html = render_html_report(report);
  EXPECT_NE(html.find("<svg"), std::string::npos);
  EXPECT_NE(html.find("&lt;model &amp; &quot;x&quot;&gt;"), std::string::npos);
}

}  // namespace
}  // namespace nibble::eval
