// --quantize-lm-head: the online method also quantizes the output layer (a tied model gets a
// quantized copy of its embedding), a decode step then reads fewer bytes, and the logits stay
// within the method's error of the dense head's; without an online method or a GGUF file the
// flag is refused by name.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "formats/memory_checkpoint.h"
#include "model/loader.h"
#include "random_checkpoint.h"
#include "runtime/kv_cache.h"

namespace nibble {
namespace {

using test_util::add_random;
using test_util::rng;

ModelSource tiny_source(bool tied, const std::string& quantization) {
  ModelConfig c;
  c.model_type = "llama";
  c.vocab_size = 97;
  c.hidden_size = 64;
  c.intermediate_size = 96;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.max_position_embeddings = 64;
  c.rms_norm_eps = 1e-5f;
  c.tie_word_embeddings = tied;
  auto ck = std::make_shared<MemoryCheckpoint>("memory://tiny-lm-head");
  const int64_t h = c.hidden_size, d = c.head_dim;
  add_random(*ck, "model.embed_tokens.weight", {c.vocab_size, h}, 1.0f);
  if (!tied) add_random(*ck, "lm_head.weight", {c.vocab_size, h}, 1.0f);
  add_random(*ck, "model.norm.weight", {h}, 0.2f, 1.0f);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    auto matrix = [&](const std::string& name, int64_t rows, int64_t cols) {
      add_random(*ck, p + name, {rows, cols}, 1.0f / std::sqrt(float(cols)));
    };
    matrix("self_attn.q_proj.weight", c.num_attention_heads * d, h);
    matrix("self_attn.k_proj.weight", c.num_key_value_heads * d, h);
    matrix("self_attn.v_proj.weight", c.num_key_value_heads * d, h);
    matrix("self_attn.o_proj.weight", h, c.num_attention_heads * d);
    matrix("mlp.gate_proj.weight", c.intermediate_size, h);
    matrix("mlp.up_proj.weight", c.intermediate_size, h);
    matrix("mlp.down_proj.weight", h, c.intermediate_size);
    add_random(*ck, p + "input_layernorm.weight", {h}, 0.2f, 1.0f);
    add_random(*ck, p + "post_attention_layernorm.weight", {h}, 0.2f, 1.0f);
  }
  ModelSource s;
  s.path = "memory/tiny-lm-head";
  s.format = "hf";
  s.config = c;
  s.checkpoint = ck;
  s.raw_checkpoint = ck;
  if (!quantization.empty()) {
    s.quantization = quantization;
    s.quantization_flag = quantization;
    s.online_quantization = true;
  }
  return s;
}

std::vector<float> last_logits(Model& model, const std::vector<int32_t>& tokens) {
  const ModelConfig& c = model.config();
  KvCache cache(c.num_hidden_layers, c.num_key_value_heads, c.head_dim, 16, 4);
  ForwardBatch batch;
  batch.token_ids = tokens;
  batch.seqs.push_back({0, int64_t(tokens.size()), 0, {*cache.allocate_block()}, true});
  std::vector<float> logits;
  model.forward(batch, cache, logits);
  return logits;
}

class QuantizedLmHead : public ::testing::TestWithParam<bool> {};

TEST_P(QuantizedLmHead, ShrinksTheStepAndStaysWithinTheMethodsError) {
  const bool tied = GetParam();
  ModelSource source = tiny_source(tied, "q8_0");
  auto a = build_model(source, ComputeType::F32);
  source.quantize_lm_head = true;
  auto b = build_model(source, ComputeType::F32);
  // The f32 head [97, 64] (24.8 KB) becomes q8_0 blocks (34 bytes per 32 weights, 6.6 KB).
  const int64_t dense_bytes = 97 * 64 * 4, q8_bytes = 97 * 64 / 32 * 34;
  EXPECT_EQ(int64_t(a->step_weight_bytes()) - int64_t(b->step_weight_bytes()),
            dense_bytes - q8_bytes);
  // Tied: the embedding stays for lookups beside the quantized copy.
  EXPECT_EQ(int64_t(b->weight_bytes()) - int64_t(a->weight_bytes()),
            tied ? q8_bytes : q8_bytes - dense_bytes);

  std::uniform_int_distribution<int32_t> token(0, 96);
  std::vector<int32_t> tokens(9);
  for (auto& t : tokens) t = token(rng());
  const auto want = last_logits(*a, tokens), got = last_logits(*b, tokens);
  ASSERT_EQ(got.size(), want.size());
  double diff = 0.0, norm = 0.0;
  for (size_t i = 0; i < want.size(); ++i) {
    diff += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    norm += double(want[i]) * want[i];
  }
  // q8_0 rounds each weight to 1/254 of its block's range: ~0.3% relative per weight, and the
  // logits move by about that much.
  const double rel = std::sqrt(diff / norm);
  EXPECT_GT(rel, 0.0) << "the head was not quantized";
  EXPECT_LT(rel, 0.02);
}

INSTANTIATE_TEST_SUITE_P(LmHead, QuantizedLmHead, ::testing::Values(false, true),
                         [](const auto& param_info) {
                           return param_info.param ? "tied" : "untied";
                         });

// int4wo-128 does not take K = 64 (torchao leaves such a layer dense): the tied model keeps its
// embedding as the output layer instead of holding a dense copy of it.
TEST(QuantizedLmHeadFlag, TiedHeadTheMethodLeavesDenseIsNotDuplicated) {
  ModelSource source = tiny_source(/*tied=*/true, "");
  source.quantization = "int4wo-128";
  source.torchao_config = "int4wo-128";
  source.online_quantization = true;
  auto a = build_model(source, ComputeType::F32);
  source.quantize_lm_head = true;
  auto b = build_model(source, ComputeType::F32);
  EXPECT_EQ(b->weight_bytes(), a->weight_bytes());
  EXPECT_EQ(b->step_weight_bytes(), a->step_weight_bytes());
}

TEST(QuantizedLmHeadFlag, NeedsAnOnlineMethodOrAGgufFile) {
  ModelSource s = tiny_source(/*tied=*/true, "");
  s.quantize_lm_head = true;
  try {
    build_model(s, ComputeType::F32);
    FAIL() << "built a dense model with --quantize-lm-head";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("--quantize-lm-head"), std::string::npos) << what;
    EXPECT_NE(what.find("memory/tiny-lm-head"), std::string::npos) << what;
  }
}

}  // namespace
}  // namespace nibble
