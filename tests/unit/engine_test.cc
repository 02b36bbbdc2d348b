// The batching engine on a tiny random-weight Llama with a small SentencePiece-style
// tokenizer: continuous batching, chunked prefill, prefix reuse, cancellation, preemption and
// seeds must never change what a request generates.
#include "nibble/engine.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "core/error.h"
#include "formats/memory_checkpoint.h"
#include "model/loader.h"
#include "random_checkpoint.h"
#include "runtime/generator.h"
#include "runtime/request.h"
#include "tokenizer/synthetic_tokenizer.h"

namespace nibble {
namespace {

using nlohmann::json;

using test_util::add_random;
using test_util::rng;

ModelConfig tiny_config() {
  ModelConfig c;
  c.model_type = "llama";
  c.vocab_size = 265;
  c.hidden_size = 64;
  c.intermediate_size = 96;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.max_position_embeddings = 256;
  c.rms_norm_eps = 1e-5f;
  c.eos_token_ids = {2};
  return c;
}

std::shared_ptr<Checkpoint> tiny_checkpoint(const ModelConfig& c) {
  auto ck = std::make_shared<MemoryCheckpoint>("memory://tiny-engine");
  const int64_t h = c.hidden_size, d = c.head_dim;
  auto matrix = [&](const std::string& name, int64_t rows, int64_t cols) {
    add_random(*ck, name, {rows, cols}, 1.0f / std::sqrt(float(cols)));
  };
  add_random(*ck, "model.embed_tokens.weight", {c.vocab_size, h}, 1.0f);
  // A large output scale spreads the logits, so greedy choices are far from ties and do not
  // flip under the tiny rounding differences between batch shapes.
  add_random(*ck, "lm_head.weight", {c.vocab_size, h}, 2.0f);
  add_random(*ck, "model.norm.weight", {h}, 0.2f, 1.0f);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    matrix(p + "self_attn.q_proj.weight", c.num_attention_heads * d, h);
    matrix(p + "self_attn.k_proj.weight", c.num_key_value_heads * d, h);
    matrix(p + "self_attn.v_proj.weight", c.num_key_value_heads * d, h);
    matrix(p + "self_attn.o_proj.weight", h, c.num_attention_heads * d);
    matrix(p + "mlp.gate_proj.weight", c.intermediate_size, h);
    matrix(p + "mlp.up_proj.weight", c.intermediate_size, h);
    matrix(p + "mlp.down_proj.weight", h, c.intermediate_size);
    add_random(*ck, p + "input_layernorm.weight", {h}, 0.2f, 1.0f);
    add_random(*ck, p + "post_attention_layernorm.weight", {h}, 0.2f, 1.0f);
  }
  return ck;
}

// One random model per test; every engine and reference of the test shares its weights.
class EngineTest : public ::testing::Test {
 protected:
  ModelSource source() const {
    ModelSource s;
    s.path = "memory/tiny-engine";
    s.format = "hf";
    s.config = config_;
    s.checkpoint = checkpoint_;
    s.raw_checkpoint = checkpoint_;
    s.tokenizer =
        Tokenizer::from_json(byte_fallback_tokenizer_json({"<s>", "</s>"}), "tiny-tokenizer.json");
    s.stop_ids = {2};
    return s;
  }
  std::unique_ptr<Engine> engine(EngineArgs args = {}) const {
    if (args.max_total_tokens == 0) args.max_total_tokens = 4096;
    // One thread: the tiny model gains nothing from more, and on a busy machine waking pool
    // workers for every small matmul costs milliseconds per step.
    if (args.threads == 0) args.threads = 1;
    return std::make_unique<Engine>(args, source());
  }
  static std::vector<int32_t> prompt(size_t n) {
    std::uniform_int_distribution<int32_t> dist(3, 264);
    std::vector<int32_t> ids(n);
    for (auto& t : ids) t = dist(rng());
    return ids;
  }
  static GenerateRequest greedy(std::vector<int32_t> ids, int64_t max_new_tokens) {
    GenerateRequest r;
    r.input_ids = std::move(ids);
    r.sampling.temperature = 0.0f;
    r.sampling.max_new_tokens = max_new_tokens;
    r.sampling.ignore_eos = true;
    return r;
  }
  // What the single-request Generator makes of the same request.
  std::vector<int32_t> reference(const GenerateRequest& r) const {
    auto s = source();
    auto model = build_model(s, ComputeType::F32);
    Generator generator(*model, nullptr, s.stop_ids);
    return generator.generate(r.input_ids, r.sampling).output_ids;
  }
  static void wait_until(const std::function<bool()>& condition) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!condition() && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ASSERT_TRUE(condition());
  }

  ModelConfig config_ = tiny_config();
  std::shared_ptr<Checkpoint> checkpoint_ = tiny_checkpoint(config_);
};

TEST_F(EngineTest, ConcurrentGreedyRequestsMatchEachAlone) {
  std::vector<GenerateRequest> requests;
  for (size_t n : {3, 17, 40, 9, 33, 64}) requests.push_back(greedy(prompt(n), 20));
  EngineArgs args;
  args.max_running_requests = 4;   // two wait, and join as others finish
  args.chunked_prefill_size = 24;  // prompts are cut into chunks beside decode steps
  args.disable_radix_cache = true;
  auto outputs = engine(args)->generate(requests);
  ASSERT_EQ(outputs.size(), requests.size());
  EngineArgs one;
  one.max_running_requests = 1;
  auto alone = engine(one);
  for (size_t i = 0; i < requests.size(); ++i) {
    const auto want = reference(requests[i]);
    EXPECT_EQ(outputs[i].output_ids, want) << "request " << i;
    EXPECT_EQ(outputs[i].finish.kind, FinishReason::Kind::kLength);
    EXPECT_EQ(outputs[i].prompt_tokens, int64_t(requests[i].input_ids.size()));
    EXPECT_EQ(outputs[i].completion_tokens, 20);
    const auto single = alone->generate({requests[i]});
    EXPECT_EQ(single[0].output_ids, want) << "request " << i;
    EXPECT_EQ(single[0].text, outputs[i].text) << "request " << i;
  }
}

TEST_F(EngineTest, SharedPrefixIsReused) {
  auto cached = engine();
  EngineArgs no_cache_args;
  no_cache_args.disable_radix_cache = true;
  auto uncached = engine(no_cache_args);
  const auto system = prompt(40);
  auto first = greedy(system, 8);
  first.input_ids.push_back(7);
  auto second = greedy(system, 8);
  second.input_ids.insert(second.input_ids.end(), {9, 10, 11});

  auto a = cached->generate({first});
  EXPECT_EQ(a[0].cached_tokens, 0);
  auto b = cached->generate({second});
  EXPECT_EQ(b[0].cached_tokens, 32);  // two whole 16-token blocks of the shared 40
  EXPECT_EQ(b[0].output_ids, uncached->generate({second})[0].output_ids);
  // The whole first request (prompt and output) is cached: repeating it reuses all but the
  // last prompt token's block.
  auto again = cached->generate({first});
  EXPECT_EQ(again[0].cached_tokens, 32);
  EXPECT_EQ(again[0].output_ids, a[0].output_ids);
  EXPECT_GE(cached->stats().cached_prompt_tokens_total, 64);
  EXPECT_EQ(uncached->generate({second})[0].cached_tokens, 0);

  // Concurrent requests with one prefix: both right, the later ones served from the cache.
  std::vector<GenerateRequest> burst;
  for (int i = 0; i < 4; ++i) {
    auto r = greedy(system, 6);
    r.input_ids.push_back(20 + i);
    burst.push_back(r);
  }
  auto outs = cached->generate(burst);
  for (size_t i = 0; i < burst.size(); ++i) {
    EXPECT_EQ(outs[i].output_ids, reference(burst[i])) << i;
    EXPECT_EQ(outs[i].cached_tokens, 32) << i;
  }

  cached->flush_cache();
  EXPECT_EQ(cached->stats().kv_tokens_used, 0);
  EXPECT_EQ(cached->generate({first})[0].cached_tokens, 0);
}

TEST_F(EngineTest, CancelFreesBlocks) {
  for (bool radix : {false, true}) {
    EngineArgs args;
    args.disable_radix_cache = !radix;
    auto e = engine(args);
    std::mutex mutex;
    std::condition_variable cv;
    std::vector<StreamChunk> chunks;
    std::shared_ptr<RequestHandle> handle;
    // The callback itself cancels after the third chunk (as a server does on a disconnect it
    // notices while writing), so the test knows exactly when the cancel happened.
    auto submitted = e->submit(greedy(prompt(30), 200), [&](const StreamChunk& chunk) {
      std::unique_lock lock(mutex);
      chunks.push_back(chunk);
      if (chunks.size() == 3) {
        cv.wait(lock, [&] { return handle != nullptr; });
        handle->cancel();
        handle->cancel();  // twice is harmless
      }
      cv.notify_all();
    });
    {
      std::lock_guard lock(mutex);
      handle = submitted;
    }
    cv.notify_all();
    {
      std::unique_lock lock(mutex);
      cv.wait(lock, [&] { return !chunks.empty() && chunks.back().finished; });
      ASSERT_TRUE(chunks.back().finish);
      EXPECT_EQ(chunks.back().finish->kind, FinishReason::Kind::kAbort);
      EXPECT_EQ(chunks.back().finish->name(), "abort");
      EXPECT_FALSE(chunks.back().error);
      EXPECT_EQ(chunks.back().completion_tokens, 3);  // within one step
      EXPECT_EQ(chunks.size(), 4u);
    }
    // By the time the final chunk arrives, the blocks are free and the stats say so.
    const EngineStats stats = e->stats();
    EXPECT_EQ(stats.running_requests, 0);
    EXPECT_EQ(stats.kv_tokens_used, stats.kv_tokens_cached) << "radix " << radix;
    if (radix) {
      EXPECT_EQ(stats.kv_tokens_cached, 32);  // the two whole blocks of the 30 + 2 computed
    } else {
      EXPECT_EQ(stats.kv_tokens_used, 0);
    }
    e->flush_cache();
    EXPECT_EQ(e->stats().kv_tokens_used, 0);
    EXPECT_EQ(e->stats().requests_finished_total, 1);
  }
}

TEST_F(EngineTest, CancelBeforeAdmissionAndAfterFinishing) {
  EngineArgs args;
  args.max_running_requests = 1;
  auto e = engine(args);
  std::mutex mutex;
  std::condition_variable cv;
  bool queued_cancelled = false;
  std::map<int, StreamChunk> last;
  auto collect = [&](int key) {
    return [&, key](const StreamChunk& chunk) {
      std::unique_lock lock(mutex);
      last[key] = chunk;
      // The running request holds its slot until the queued one has been cancelled.
      if (key == 0) cv.wait(lock, [&] { return queued_cancelled; });
    };
  };
  auto running = e->submit(greedy(prompt(10), 20), collect(0));
  auto queued = e->submit(greedy(prompt(10), 20), collect(1));
  queued->cancel();
  {
    std::lock_guard lock(mutex);
    queued_cancelled = true;
  }
  cv.notify_all();
  wait_until([&] {
    std::lock_guard lock(mutex);
    return last.size() == 2 && last[0].finished && last[1].finished;
  });
  EXPECT_EQ(last[0].finish->kind, FinishReason::Kind::kLength);
  EXPECT_EQ(last[1].finish->kind, FinishReason::Kind::kAbort);
  EXPECT_EQ(last[1].completion_tokens, 0);
  running->cancel();  // after the end: nothing happens
  EXPECT_EQ(e->generate({greedy(prompt(5), 2)})[0].completion_tokens, 2);
  EXPECT_EQ(e->stats().requests_finished_total, 3);
}

TEST_F(EngineTest, PreemptionKeepsOutputsIdentical) {
  std::vector<GenerateRequest> requests;
  for (size_t n : {12, 20, 7, 15}) requests.push_back(greedy(prompt(n), 40));
  for (bool radix : {false, true}) {
    EngineArgs args;
    args.max_total_tokens = 96;  // 6 blocks; each request alone needs up to 4
    args.chunked_prefill_size = 8;
    args.disable_radix_cache = !radix;
    auto e = engine(args);
    auto outputs = e->generate(requests);
    EXPECT_GT(e->stats().preemptions_total, 0) << "radix " << radix;
    for (size_t i = 0; i < requests.size(); ++i) {
      EXPECT_EQ(outputs[i].output_ids, reference(requests[i])) << "request " << i;
      EXPECT_EQ(outputs[i].completion_tokens, 40);
    }
    e->flush_cache();
    EXPECT_EQ(e->stats().kv_tokens_used, 0);
  }
}

TEST_F(EngineTest, LoneRequestLargerThanTheCacheEndsWithLength) {
  EngineArgs args;
  args.max_total_tokens = 32;
  auto e = engine(args);
  auto out = e->generate({greedy(prompt(20), 30)});
  EXPECT_EQ(out[0].finish.kind, FinishReason::Kind::kLength);
  EXPECT_EQ(out[0].completion_tokens, 13);  // 32 slots hold prompt + 12 fed tokens
  EXPECT_EQ(e->stats().kv_tokens_used, e->stats().kv_tokens_cached);
}

TEST_F(EngineTest, SeedsAreReproducible) {
  auto e = engine();
  GenerateRequest r;
  r.input_ids = prompt(12);
  r.sampling.temperature = 1.0f;
  r.sampling.max_new_tokens = 32;
  r.sampling.ignore_eos = true;
  r.sampling.seed = 1234;
  const auto first = e->generate({r})[0].output_ids;
  EXPECT_EQ(e->generate({r})[0].output_ids, first);
  auto other = r;
  other.sampling.seed = 99;
  EXPECT_NE(e->generate({other})[0].output_ids, first);
  // The same seed beside other requests in the batch.
  auto batch = e->generate({r, other, r});
  EXPECT_EQ(batch[0].output_ids, first);
  EXPECT_EQ(batch[2].output_ids, first);

  // --random-seed makes unseeded requests reproducible across engines.
  r.sampling.seed.reset();
  EngineArgs seeded;
  seeded.random_seed = 5;
  EXPECT_EQ(engine(seeded)->generate({r})[0].output_ids,
            engine(seeded)->generate({r})[0].output_ids);
}

TEST_F(EngineTest, InvalidRequestsAreRejected) {
  EngineArgs args;
  args.context_length = 128;
  args.max_total_tokens = 64;
  auto e = engine(args);
  auto rejects = [&](GenerateRequest r, const std::string& needle) {
    try {
      e->submit(r, {});
      ADD_FAILURE() << "accepted a request that should fail with '" << needle << "'";
    } catch (const Error& error) {
      EXPECT_NE(std::string(error.what()).find(needle), std::string::npos) << error.what();
    }
  };
  rejects(greedy({}, 4), "empty");
  rejects(greedy({5, 265}, 4), "input_ids[1] = 265 is out of vocabulary");
  rejects(greedy({-1}, 4), "out of vocabulary");
  auto both = greedy({5}, 4);
  both.text = "hi";
  rejects(both, "not both");
  rejects(greedy(prompt(60), 100), "maximum context length is 128");
  rejects(greedy(prompt(100), 10), "never fit in the KV cache");
  auto bad = greedy({5}, 4);
  bad.sampling.temperature = std::nanf("");
  rejects(bad, "temperature");
  bad = greedy({5}, 4);
  bad.sampling.top_p = 0.0f;
  rejects(bad, "top_p");
  bad = greedy({5}, 4);
  bad.sampling.max_new_tokens = -1;
  rejects(bad, "max_new_tokens");
  bad = greedy({5}, 4);
  bad.return_logprob = true;
  bad.top_logprobs_num = 21;
  rejects(bad, "top_logprobs_num");
  bad.return_logprob = false;
  bad.top_logprobs_num = 2;
  rejects(bad, "return_logprob");
  bad = greedy({5}, 4);
  bad.sampling.stop_token_ids = {300};
  rejects(bad, "stop_token_ids");
  EXPECT_EQ(e->stats().requests_finished_total, 0);
  // The engine still serves good requests.
  EXPECT_EQ(e->generate({greedy({5, 6}, 3)})[0].completion_tokens, 3);

  EngineArgs bad_args;
  bad_args.dtype = "float8";
  EXPECT_THROW(engine(bad_args), Error);
  bad_args = {};
  bad_args.max_running_requests = 0;
  EXPECT_THROW(engine(bad_args), Error);
  bad_args = {};
  bad_args.chat_template = "/nonexistent/template.jinja";
  EXPECT_THROW(engine(bad_args), Error);
}

TEST_F(EngineTest, StreamsTextLogprobsAndStopStrings) {
  auto e = engine();
  auto r = greedy(prompt(10), 24);
  r.return_logprob = true;
  r.top_logprobs_num = 3;
  std::vector<StreamChunk> chunks;
  std::mutex mutex;
  auto handle = e->submit(r, [&](const StreamChunk& c) {
    std::lock_guard lock(mutex);
    chunks.push_back(c);
  });
  wait_until([&] {
    std::lock_guard lock(mutex);
    return !chunks.empty() && chunks.back().finished;
  });
  std::string streamed;
  std::vector<int32_t> ids;
  for (const auto& c : chunks) {
    streamed += c.text;
    ids.insert(ids.end(), c.token_ids.begin(), c.token_ids.end());
    ASSERT_EQ(c.logprobs.size(), c.token_ids.size());
    for (size_t i = 0; i < c.logprobs.size(); ++i) {
      const TokenLogprob& lp = c.logprobs[i];
      EXPECT_EQ(lp.token, c.token_ids[i]);
      ASSERT_EQ(lp.top.size(), 3u);
      // Greedy without penalties: the chosen token is the best one.
      EXPECT_EQ(lp.top[0].first, lp.token);
      EXPECT_FLOAT_EQ(lp.top[0].second, lp.logprob);
      EXPECT_LE(lp.logprob, 0.0f);
      EXPECT_GE(lp.top[0].second, lp.top[1].second);
    }
  }
  const auto whole = e->generate({r})[0];
  EXPECT_EQ(ids, whole.output_ids);
  EXPECT_EQ(streamed, whole.text);
  EXPECT_EQ(ids, reference(r));

  // Stop at a string taken from the middle of the text: the output ends right before it.
  if (whole.text.size() >= 6) {
    const std::string stop = whole.text.substr(whole.text.size() / 2, 2);
    auto with_stop = r;
    with_stop.sampling.stop = {stop};
    const auto cut = e->generate({with_stop})[0];
    EXPECT_EQ(cut.finish.kind, FinishReason::Kind::kStop);
    EXPECT_EQ(std::get<std::string>(cut.finish.matched), stop);
    EXPECT_EQ(cut.text, whole.text.substr(0, whole.text.find(stop)));
  }
}

TEST_F(EngineTest, EosStopsAndIsNotPartOfTheOutput) {
  auto e = engine();
  auto r = greedy(prompt(8), 5);
  const auto ids = e->generate({r})[0].output_ids;
  ASSERT_EQ(ids.size(), 5u);
  r.sampling.ignore_eos = false;
  r.sampling.stop_token_ids = {ids[2]};
  const auto out = e->generate({r})[0];
  // With ignore_eos off the model's own eos (id 2, config above) stops it too: the random
  // weights emit it before ids[2] now and then.
  const auto first_stop =
      std::find_if(ids.begin(), ids.end(), [&](int32_t t) { return t == ids[2] || t == 2; }) -
      ids.begin();
  EXPECT_EQ(out.output_ids, std::vector<int32_t>(ids.begin(), ids.begin() + first_stop));
  EXPECT_EQ(out.completion_tokens, first_stop + 1);
  EXPECT_EQ(std::get<int32_t>(out.finish.matched), ids[size_t(first_stop)]);
}

TEST_F(EngineTest, TextPromptsAndZeroNewTokens) {
  auto e = engine();
  SamplingParams params;
  params.temperature = 0.0f;
  params.max_new_tokens = 6;
  params.ignore_eos = true;
  auto outs = e->generate({"hi", "hi h\u00e9"}, params);
  EXPECT_EQ(outs[0].prompt_tokens, 2);  // <s> ▁hi
  EXPECT_EQ(outs[1].prompt_tokens,
            int64_t(e->model().tokenizer->encode("hi h\u00e9", true).size()));
  EXPECT_EQ(outs[0].completion_tokens, 6);
  params.max_new_tokens = 0;
  auto none = e->generate({"hi"}, params);
  EXPECT_EQ(none[0].finish.kind, FinishReason::Kind::kLength);
  EXPECT_TRUE(none[0].output_ids.empty());
  EXPECT_EQ(e->args().served_model_name, "tiny-engine");
  EXPECT_EQ(e->args().max_total_tokens, 4096);
  EXPECT_EQ(e->args().context_length, 256);
}

TEST_F(EngineTest, ShutdownEndsUnfinishedRequests) {
  EngineArgs args;
  args.max_running_requests = 1;  // the later ones are still queued at shutdown
  auto e = engine(args);
  std::mutex mutex;
  std::vector<StreamChunk> finals;
  for (int i = 0; i < 3; ++i) {
    e->submit(greedy(prompt(10), 240), [&](const StreamChunk& c) {
      std::lock_guard lock(mutex);
      if (c.finished) finals.push_back(c);
    });
  }
  e.reset();
  // Every request got exactly one final chunk; the unfinished ones say why.
  ASSERT_EQ(finals.size(), 3u);
  EXPECT_TRUE(finals.back().error.has_value());
  for (const auto& c : finals) {
    if (c.error) {
      EXPECT_EQ(c.finish->kind, FinishReason::Kind::kAbort);
      EXPECT_NE(c.error->find("shutting down"), std::string::npos) << *c.error;
    }
  }
}

TEST(EngineLogprobs, LogSoftmaxAndTopList) {
  const std::vector<float> logits = {1.0f, 3.0f, -2.0f, 3.0f, 0.5f};
  double z = 0;
  for (float l : logits) z += std::exp(double(l));
  const auto lp = compute_logprobs(logits, 4, 3);
  EXPECT_NEAR(lp.logprob, 0.5 - std::log(z), 1e-6);
  ASSERT_EQ(lp.top.size(), 3u);
  EXPECT_EQ(lp.top[0].first, 1);  // ties: lower id first
  EXPECT_EQ(lp.top[1].first, 3);
  EXPECT_EQ(lp.top[2].first, 0);
  EXPECT_NEAR(lp.top[2].second, 1.0 - std::log(z), 1e-6);
}

}  // namespace
}  // namespace nibble
