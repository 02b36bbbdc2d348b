// Inputs the GGUF fuzzer (fuzz/fuzz_gguf.cc) found to crash the loader, reduced to the
// property that broke; each must now give an nibble::Error.
#include <gtest/gtest.h>

#include <filesystem>
#include <random>

#include "core/error.h"
#include "formats/gguf/gguf_writer.h"
#include "model/loader.h"

namespace nibble {
namespace {

namespace fs = std::filesystem;

fs::path temp_gguf(const std::string& stem) {
  std::random_device rd;
  return fs::temp_directory_path() /
         ("nibble-fuzz-regression-" + stem + "-" + std::to_string(rd()) + ".gguf");
}

// The metadata of a one-layer llama-architecture GGUF (hidden 32, 2 heads, 1 KV head).
void write_tiny_llama_metadata(gguf::GgufWriter& w) {
  w.add_string("general.architecture", "llama");
  w.add_uint32("llama.block_count", 1);
  w.add_uint32("llama.context_length", 128);
  w.add_uint32("llama.embedding_length", 32);
  w.add_uint32("llama.feed_forward_length", 64);
  w.add_uint32("llama.attention.head_count", 2);
  w.add_uint32("llama.attention.head_count_kv", 1);
  w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  w.add_uint32("llama.vocab_size", 4);
  w.add_string("tokenizer.ggml.model", "llama");
  w.add_string_array("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>", "a"});
}

// A llama-architecture GGUF whose q/k tensor has zero rows: the row un-permutation divided by
// the row count (UBSan: division by zero in gguf_names.cc) before the fix.
TEST(GgufFuzzRegression, ZeroRowAttentionTensorIsAnError) {
  const fs::path path = temp_gguf("zero-rows");
  {
    gguf::GgufWriter w(path);
    write_tiny_llama_metadata(w);
    // PyTorch order [0, 32]: no data at all, so every size check upstream passes.
    w.add_tensor("blk.0.attn_k.weight", gguf::GgmlType::F32, {0, 32}, {});
    w.write();
  }
  EXPECT_THROW(open_model_source(path), Error);
  fs::remove(path);
}

// The same file with a q/k tensor that has rows but zero columns: the un-permutation indexed
// into an empty byte buffer (UBSan: reference binding to null pointer) before the fix. An
// empty tensor has nothing to reorder, so it loads as empty.
TEST(GgufFuzzRegression, ZeroColumnAttentionTensorLoadsEmpty) {
  const fs::path path = temp_gguf("zero-cols");
  {
    gguf::GgufWriter w(path);
    write_tiny_llama_metadata(w);
    w.add_tensor("blk.0.attn_k.weight", gguf::GgmlType::F32, {4, 0}, {});
    w.write();
  }
  try {
    const ModelSource source = open_model_source(path);
    const CheckpointTensor* tensor =
        source.checkpoint->find("model.layers.0.self_attn.k_proj.weight");
    ASSERT_NE(tensor, nullptr);
    EXPECT_EQ(tensor->nbytes, 0u);
    EXPECT_TRUE(source.checkpoint->load_f32(tensor->name).empty());
  } catch (const Error&) {
    // Refusing the file is as good as loading it empty; crashing is not.
  }
  fs::remove(path);
}

}  // namespace
}  // namespace nibble
