#include "eval/kl_divergence.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/mapped_file.h"

namespace nibble::eval {

TopKDistribution top_k_distribution(std::span<const float> logprobs, int k) {
  const size_t n = logprobs.size();
  const size_t kk = std::min(size_t(std::max(k, 1)), n);
  std::vector<int32_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + std::ptrdiff_t(kk), order.end(),
                    [&](int32_t a, int32_t b) {
                      return logprobs[size_t(a)] > logprobs[size_t(b)] ||
                             (logprobs[size_t(a)] == logprobs[size_t(b)] && a < b);
                    });
  TopKDistribution d;
  d.ids.assign(order.begin(), order.begin() + std::ptrdiff_t(kk));
  d.logprobs.reserve(kk);
  for (const int32_t id : d.ids) d.logprobs.push_back(logprobs[size_t(id)]);
  // The tail mass is summed directly rather than as 1 - sum(top-k): when the top-k hold
  // nearly all the mass, the subtraction would lose every significant digit.
  double rest = 0.0;
  for (size_t i = kk; i < n; ++i) rest += std::exp(double(logprobs[size_t(order[i])]));
  d.rest_logprob = rest > 0.0 ? float(std::log(rest)) : -std::numeric_limits<float>::infinity();
  return d;
}

double kl_divergence(std::span<const float> base_logprobs, std::span<const float> model_logprobs) {
  double kl = 0.0;
  for (size_t i = 0; i < base_logprobs.size(); ++i) {
    const double lp = base_logprobs[i];
    if (lp == -std::numeric_limits<double>::infinity()) continue;
    kl += std::exp(lp) * (lp - double(model_logprobs[i]));
  }
  // Rounding can leave a tiny negative sum for identical distributions.
  return std::max(kl, 0.0);
}

double kl_divergence(const TopKDistribution& base, std::span<const float> model_logprobs) {
  double kl = 0.0, model_top = 0.0;
  for (size_t i = 0; i < base.ids.size(); ++i) {
    const double lp = base.logprobs[i];
    const double lq = model_logprobs[size_t(base.ids[i])];
    model_top += std::exp(lq);
    if (lp != -std::numeric_limits<double>::infinity()) kl += std::exp(lp) * (lp - lq);
  }
  const double p_rest = std::exp(double(base.rest_logprob));
  if (p_rest > 0.0) {
    // The model's tail mass, from the same complement: clamp so that a model putting all its
    // mass on the base's top-k gives a large but finite divergence.
    const double q_rest = std::max(1.0 - model_top, 1e-30);
    kl += p_rest * (double(base.rest_logprob) - std::log(q_rest));
  }
  return std::max(kl, 0.0);
}

std::vector<Window> base_windows(const BaseLogits& base, int64_t max_windows) {
  const int64_t n = max_windows > 0 ? std::min(max_windows, base.n_windows) : base.n_windows;
  return make_windows(base.n_text_tokens, base.context, base.stride, n);
}

namespace {

constexpr char kMagic[8] = {'N', 'B', 'B', 'A', 'S', 'E', '0', '1'};

struct FileHeader {
  char magic[8];
  int64_t vocab;
  int32_t top_k;
  int32_t reserved;
  int64_t context, stride, n_text_tokens, n_windows, n_tokens;
};
static_assert(sizeof(FileHeader) == 64);

size_t record_bytes(int32_t k) { return 8 + 4 + 4 + 4 + size_t(k) * 8; }

void accumulate(KldResult& r, double kl, bool agree) {
  r.kld.push_back(kl);
  if (agree) ++r.top1_agree;
}

// Per-window mean KLD of the windows whose tokens start at r.kld[first].
void add_window_means(KldResult& r, std::span<const Window> windows, size_t first) {
  for (const Window& w : windows) {
    const size_t n = size_t(w.end - w.first_scored);
    double sum = 0.0;
    for (size_t i = 0; i < n; ++i) sum += r.kld[first + i];
    r.window_kld.push_back(sum / double(n));
    first += n;
  }
}

void finish(KldResult& r, std::vector<double> base_nll, std::vector<double> model_nll,
            int64_t n_windows) {
  r.base = perplexity_from_nll(std::move(base_nll), n_windows);
  r.model = perplexity_from_nll(std::move(model_nll), n_windows);
  r.kld_summary = summarize(r.kld);
  r.top1_agreement = r.kld.empty() ? 0.0 : double(r.top1_agree) / double(r.kld.size());
}

}  // namespace

void save_base_logits(const std::filesystem::path& path, const BaseLogits& base) {
  NIBBLE_CHECK(base.positions.size() == base.tokens.size(), "{}: inconsistent base records",
               path.string());
  FileHeader h{};
  std::memcpy(h.magic, kMagic, sizeof kMagic);
  h.vocab = base.vocab;
  h.top_k = base.top_k;
  h.context = base.context;
  h.stride = base.stride;
  h.n_text_tokens = base.n_text_tokens;
  h.n_windows = base.n_windows;
  h.n_tokens = int64_t(base.tokens.size());
  AtomicFileWriter out(path);
  out.write(&h, sizeof h);
  std::vector<uint8_t> record(record_bytes(base.top_k));
  for (size_t i = 0; i < base.tokens.size(); ++i) {
    const BaseToken& t = base.tokens[i];
    NIBBLE_CHECK(int32_t(t.dist.ids.size()) == base.top_k, "{}: record {} has {} ids, not {}",
                 path.string(), i, t.dist.ids.size(), base.top_k);
    uint8_t* p = record.data();
    std::memcpy(p, &base.positions[i], 8);
    std::memcpy(p + 8, &t.target, 4);
    std::memcpy(p + 12, &t.nll, 4);
    std::memcpy(p + 16, &t.dist.rest_logprob, 4);
    std::memcpy(p + 20, t.dist.ids.data(), size_t(base.top_k) * 4);
    std::memcpy(p + 20 + size_t(base.top_k) * 4, t.dist.logprobs.data(), size_t(base.top_k) * 4);
    out.write(record.data(), record.size());
  }
  out.commit();
}

BaseLogits load_base_logits(const std::filesystem::path& path) {
  const auto file = MappedFile::open(path);
  const std::string name = path.string();
  NIBBLE_CHECK(file->size() >= sizeof(FileHeader),
               "{}: too small for a base-logits file ({} bytes)", name, file->size());
  FileHeader h;
  std::memcpy(&h, file->data(), sizeof h);
  NIBBLE_CHECK(std::memcmp(h.magic, kMagic, sizeof kMagic) == 0,
               "{}: not a nibble base-logits file (bad magic)", name);
  NIBBLE_CHECK(h.vocab > 0 && h.vocab < (int64_t(1) << 31), "{}: bad vocab size {}", name, h.vocab);
  NIBBLE_CHECK(h.top_k >= 1 && h.top_k <= h.vocab && h.top_k <= 4096, "{}: bad top_k {}", name,
               h.top_k);
  NIBBLE_CHECK(h.context >= 2 && h.stride >= 1 && h.stride <= h.context,
               "{}: bad context {} / stride {}", name, h.context, h.stride);
  NIBBLE_CHECK(
      h.n_text_tokens >= 2 && h.n_windows >= 1 && h.n_tokens >= 1 && h.n_tokens < h.n_text_tokens,
      "{}: bad token counts (text {}, windows {}, scored {})", name, h.n_text_tokens, h.n_windows,
      h.n_tokens);
  const size_t rec = record_bytes(h.top_k);
  const size_t body = file->size() - sizeof h;
  NIBBLE_CHECK(body % rec == 0 && body / rec == size_t(h.n_tokens),
               "{}: size {} does not match {} records of {} bytes", name, file->size(), h.n_tokens,
               rec);
  BaseLogits base;
  base.vocab = h.vocab;
  base.top_k = h.top_k;
  base.context = h.context;
  base.stride = h.stride;
  base.n_text_tokens = h.n_text_tokens;
  base.n_windows = h.n_windows;
  base.positions.resize(size_t(h.n_tokens));
  base.tokens.resize(size_t(h.n_tokens));
  const uint8_t* p = file->data() + sizeof h;
  for (int64_t i = 0; i < h.n_tokens; ++i, p += rec) {
    BaseToken& t = base.tokens[size_t(i)];
    std::memcpy(&base.positions[size_t(i)], p, 8);
    std::memcpy(&t.target, p + 8, 4);
    std::memcpy(&t.nll, p + 12, 4);
    std::memcpy(&t.dist.rest_logprob, p + 16, 4);
    t.dist.ids.resize(size_t(h.top_k));
    t.dist.logprobs.resize(size_t(h.top_k));
    std::memcpy(t.dist.ids.data(), p + 20, size_t(h.top_k) * 4);
    std::memcpy(t.dist.logprobs.data(), p + 20 + size_t(h.top_k) * 4, size_t(h.top_k) * 4);
    for (const int32_t id : t.dist.ids) {
      NIBBLE_CHECK(id >= 0 && id < h.vocab, "{}: record {} has token id {} outside the vocab", name,
                   i, id);
    }
    NIBBLE_CHECK(t.target >= 0 && t.target < h.vocab, "{}: record {} has target {}", name, i,
                 t.target);
  }
  return base;
}

KldResult compare_models(BatchScorer& base, BatchScorer& model, std::span<const int32_t> tokens,
                         std::span<const Window> windows, const KldOptions& options) {
  NIBBLE_CHECK(base.vocab() == model.vocab(),
               "the base model has {} vocabulary entries and the model {}; KLD needs the same "
               "tokenizer",
               base.vocab(), model.vocab());
  const int64_t vocab = base.vocab();
  KldResult r;
  if (options.save_base) {
    BaseLogits& s = *options.save_base;
    s = BaseLogits{};
    s.vocab = vocab;
    s.top_k = int32_t(std::min<int64_t>(options.save_top_k, vocab));
    s.context = options.context;
    s.stride = options.stride;
    s.n_text_tokens = options.n_text_tokens;
    s.n_windows = int64_t(windows.size());
  }
  std::vector<double> base_nll, model_nll;
  std::vector<float> base_rows;
  std::vector<float> row(static_cast<size_t>(vocab));
  const int64_t budget = std::min(base.max_batch_tokens(), model.max_batch_tokens());
  size_t next = 0;
  while (next < windows.size()) {
    size_t end = next;
    int64_t group_tokens = 0;
    while (end < windows.size() &&
           (end == next || group_tokens + windows[end].end - windows[end].begin <= budget)) {
      group_tokens += windows[end].end - windows[end].begin;
      ++end;
    }
    const auto group = windows.subspan(next, end - next);
    base_rows.clear();
    for_each_scored_token(base, tokens, group,
                          [&](int64_t pos, int32_t target, std::span<const float> logits) {
                            const size_t at = base_rows.size();
                            base_rows.resize(at + size_t(vocab));
                            std::span<float> lp(base_rows.data() + at, size_t(vocab));
                            log_softmax(logits, lp);
                            base_nll.push_back(-double(lp[size_t(target)]));
                            if (options.save_base) {
                              BaseToken t;
                              t.target = target;
                              t.nll = -lp[size_t(target)];
                              t.dist = top_k_distribution(lp, options.save_base->top_k);
                              options.save_base->positions.push_back(pos);
                              options.save_base->tokens.push_back(std::move(t));
                            }
                          });
    size_t index = 0;
    const size_t kld_before = r.kld.size();
    for_each_scored_token(
        model, tokens, group, [&](int64_t, int32_t target, std::span<const float> logits) {
          log_softmax(logits, row);
          model_nll.push_back(-double(row[size_t(target)]));
          std::span<const float> lp(base_rows.data() + index * size_t(vocab), size_t(vocab));
          accumulate(r, kl_divergence(lp, row), argmax(lp) == argmax(row));
          ++index;
        });
    add_window_means(r, group, kld_before);
    next = end;
  }
  finish(r, std::move(base_nll), std::move(model_nll), int64_t(windows.size()));
  return r;
}

KldResult compare_with_base(const BaseLogits& base, BatchScorer& model,
                            std::span<const int32_t> tokens) {
  NIBBLE_CHECK(base.vocab == model.vocab(),
               "the stored base has {} vocabulary entries and the model {}; KLD needs the same "
               "tokenizer",
               base.vocab, model.vocab());
  NIBBLE_CHECK(int64_t(tokens.size()) == base.n_text_tokens,
               "the text has {} tokens but the stored base was computed on {}: use the same "
               "--file and tokenizer",
               tokens.size(), base.n_text_tokens);
  const std::vector<Window> windows = base_windows(base, 0);
  KldResult r;
  r.approximate = true;
  r.top_k = base.top_k;
  std::vector<double> base_nll, model_nll;
  std::vector<float> row(static_cast<size_t>(model.vocab()));
  size_t index = 0;
  for_each_scored_token(model, tokens, windows,
                        [&](int64_t pos, int32_t target, std::span<const float> logits) {
                          NIBBLE_CHECK(index < base.tokens.size() && base.positions[index] == pos &&
                                           base.tokens[index].target == target,
                                       "the stored base does not match the text at token {}: "
                                       "use the same --file and tokenizer",
                                       pos);
                          const BaseToken& b = base.tokens[index++];
                          log_softmax(logits, row);
                          base_nll.push_back(double(b.nll));
                          model_nll.push_back(-double(row[size_t(target)]));
                          accumulate(r, kl_divergence(b.dist, row), b.dist.ids[0] == argmax(row));
                        });
  NIBBLE_CHECK(index == base.tokens.size(), "the stored base has {} tokens, the run scored {}",
               base.tokens.size(), index);
  add_window_means(r, windows, 0);
  finish(r, std::move(base_nll), std::move(model_nll), int64_t(windows.size()));
  return r;
}

}  // namespace nibble::eval
