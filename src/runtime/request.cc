#include "runtime/request.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "runtime/generator.h"

namespace nibble {
namespace {

// Prompt tokens given to the detokenizer as left context: enough for SentencePiece's
// "strip the leading space of the first token" rule to see that the output is not first.
constexpr size_t kDetokenizerContext = 4;

}  // namespace

TokenLogprob compute_logprobs(std::span<const float> logits, int32_t token, int32_t top_n) {
  float max_logit = -std::numeric_limits<float>::infinity();
  for (float l : logits) max_logit = std::max(max_logit, l);
  double sum = 0.0;
  for (float l : logits) sum += std::exp(double(l) - double(max_logit));
  const double log_z = double(max_logit) + std::log(sum);
  TokenLogprob out;
  out.token = token;
  out.logprob = float(double(logits[size_t(token)]) - log_z);
  const size_t n = std::min(size_t(std::max(top_n, 0)), logits.size());
  if (n > 0) {
    std::vector<int32_t> ids(logits.size());
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t(i);
    // Ties go to the lower id, so the list is deterministic.
    std::partial_sort(ids.begin(), ids.begin() + std::ptrdiff_t(n), ids.end(),
                      [&](int32_t a, int32_t b) {
                        return logits[size_t(a)] > logits[size_t(b)] ||
                               (logits[size_t(a)] == logits[size_t(b)] && a < b);
                      });
    for (size_t i = 0; i < n; ++i)
      out.top.emplace_back(ids[i], float(double(logits[size_t(ids[i])]) - log_z));
  }
  return out;
}

Request::Request(uint64_t request_id, std::vector<int32_t> prompt, const GenerateRequest& request,
                 ChunkCallback on_chunk, const Tokenizer* tokenizer, std::vector<int32_t> eos_ids)
    : id(request_id),
      tokens(std::move(prompt)),
      prompt_len(int64_t(tokens.size())),
      params_(request.sampling),
      return_logprob_(request.return_logprob),
      top_logprobs_num_(request.top_logprobs_num),
      on_chunk_(std::move(on_chunk)),
      sampler_(request.sampling, tokens),
      stop_(request.sampling, eos_ids),
      stop_ids_(request.sampling.stop_token_ids) {
  if (!params_.ignore_eos) stop_ids_.insert(stop_ids_.end(), eos_ids.begin(), eos_ids.end());
  if (tokenizer != nullptr) {
    const size_t context = std::min(kDetokenizerContext, tokens.size());
    detokenizer_ = std::make_unique<IncrementalDetokenizer>(
        *tokenizer, params_.skip_special_tokens,
        std::span<const int32_t>(tokens).subspan(tokens.size() - context));
  }
}

StreamChunk Request::make_chunk() const {
  StreamChunk chunk;
  chunk.prompt_tokens = prompt_len;
  chunk.completion_tokens = n_sampled_;
  chunk.cached_tokens = cached_tokens;
  return chunk;
}

void Request::emit_text(StreamChunk& chunk) {
  size_t ready = stop_.emittable_length(text_, finished_);
  if (!finished_) ready = complete_utf8_prefix(std::string_view(text_).substr(0, ready));
  if (ready > emitted_) {
    chunk.text = text_.substr(emitted_, ready - emitted_);
    emitted_ = ready;
  }
}

void Request::deliver(const StreamChunk& chunk) {
  if (!on_chunk_) return;
  try {
    on_chunk_(chunk);
  } catch (...) {
    // A failing consumer (a closed connection) must not take the engine down: treat it as
    // a cancellation so the request's blocks are freed at the next step.
    control->cancelled.store(true);
  }
}

bool Request::on_logits(std::span<float> logits) {
  if (return_logprob_) raw_logits_.assign(logits.begin(), logits.end());
  const int32_t token = sampler_.sample(logits);
  tokens.push_back(token);
  ++n_sampled_;
  StreamChunk chunk = make_chunk();
  std::optional<FinishReason> reason;
  if (std::find(stop_ids_.begin(), stop_ids_.end(), token) != stop_ids_.end()) {
    // A stop token is not part of the output (nor its text, nor its logprob).
    reason = FinishReason{FinishReason::Kind::kStop, token};
  } else {
    chunk.token_ids.push_back(token);
    if (return_logprob_)
      chunk.logprobs.push_back(compute_logprobs(raw_logits_, token, top_logprobs_num_));
    if (detokenizer_) {
      detokenizer_->push(token);
      text_ = detokenizer_->text();
    }
    reason = stop_.update(token, text_, n_sampled_);
    stopped_by_string_ = reason && reason->matched.index() == 2;
  }
  if (reason) {
    finished_ = true;
    if (detokenizer_ && !stopped_by_string_) {
      detokenizer_->finish();
      text_ = detokenizer_->text();
    }
    chunk.finished = true;
    chunk.finish = *reason;
  }
  emit_text(chunk);
  if (finished_) {
    final_chunk_ = std::move(chunk);
  } else if (!chunk.token_ids.empty() || !chunk.text.empty()) {
    deliver(chunk);
  }
  return finished_;
}

void Request::finish(FinishReason reason, std::optional<std::string> error) {
  if (finished_) return;
  finished_ = true;
  if (detokenizer_) {
    detokenizer_->finish();
    text_ = detokenizer_->text();
  }
  StreamChunk chunk = make_chunk();
  if (!error) emit_text(chunk);
  chunk.finished = true;
  chunk.finish = std::move(reason);
  chunk.error = std::move(error);
  final_chunk_ = std::move(chunk);
}

void Request::deliver_final() {
  if (!final_chunk_) return;
  StreamChunk chunk = std::move(*final_chunk_);
  final_chunk_.reset();
  deliver(chunk);
}

}  // namespace nibble
