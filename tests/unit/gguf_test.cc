#include <gtest/gtest.h>
#include <unistd.h>

#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>

#include "core/error.h"
#include "core/numeric.h"
#include "formats/gguf/gguf_checkpoint.h"
#include "formats/gguf/gguf_dequant.h"
#include "formats/gguf/gguf_file.h"
#include "formats/gguf/gguf_model_config.h"
#include "formats/gguf/gguf_writer.h"

namespace nibble::gguf {
namespace {

namespace fs = std::filesystem;

fs::path temp_path(const std::string& stem) {
  static int counter = 0;
  return fs::temp_directory_path() /
         fmt::format("nibble_gguf_test_{}_{}_{}.gguf", ::getpid(), stem, counter++);
}

class TempFile {
 public:
  explicit TempFile(const std::string& bytes, const std::string& stem = "case")
      : path_(temp_path(stem)) {
    std::ofstream out(path_, std::ios::binary);
    out.write(bytes.data(), std::streamsize(bytes.size()));
  }
  ~TempFile() {
    std::error_code ec;
    fs::remove(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// Builds GGUF bytes field by field, so each test can corrupt exactly one thing.
struct Bytes {
  std::string b;
  template <typename T>
  Bytes& put(T v) {
    char raw[sizeof(T)];
    std::memcpy(raw, &v, sizeof(T));
    b.append(raw, sizeof(T));
    return *this;
  }
  Bytes& str(std::string_view s) {
    put<uint64_t>(s.size());
    b.append(s);
    return *this;
  }
  Bytes& pad(size_t alignment) {
    while (b.size() % alignment) b.push_back('\0');
    return *this;
  }
};

struct TensorSpec {
  std::string name = "t";
  std::vector<uint64_t> ne = {8};
  uint32_t type = 0;  // F32
  uint64_t offset = 0;
};

// A v3 file with the given tensor infos followed by `data_bytes` of data. `kvs` appends
// `n_kv` metadata entries.
std::string build(const std::vector<TensorSpec>& tensors, uint64_t data_bytes, uint64_t n_kv = 0,
                  const std::function<void(Bytes&)>& kvs = {}, size_t alignment = 32) {
  Bytes out;
  out.put<uint32_t>(0x46554747).put<uint32_t>(3).put<uint64_t>(tensors.size()).put<uint64_t>(n_kv);
  if (kvs) kvs(out);
  for (const auto& t : tensors) {
    out.str(t.name).put<uint32_t>(uint32_t(t.ne.size()));
    for (uint64_t d : t.ne) out.put<uint64_t>(d);
    out.put<uint32_t>(t.type).put<uint64_t>(t.offset);
  }
  out.pad(alignment);
  for (uint64_t i = 0; i < data_bytes; ++i) out.b.push_back(char(0x3c + i % 7));
  return out.b;
}

// Opens `bytes` as a GGUF file and expects an Error naming the file and every fragment.
void expect_error(const std::string& bytes, std::vector<std::string> fragments) {
  TempFile file(bytes);
  try {
    GgufFile::open(file.path());
    ADD_FAILURE() << "no error; expected one mentioning " << fragments[0];
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find(file.path().string()), std::string::npos) << message;
    for (const auto& fragment : fragments) {
      EXPECT_NE(message.find(fragment), std::string::npos)
          << "'" << fragment << "' not in: " << message;
    }
  }
}

std::vector<float> random_floats(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

std::vector<uint8_t> as_bytes(const std::vector<float>& v) {
  std::vector<uint8_t> out(v.size() * 4);
  std::memcpy(out.data(), v.data(), out.size());
  return out;
}

// A small but complete file from nibble's own writer: every value type, a string array,
// quantized and plain tensors. The last tensor is 32 bytes, so the file ends exactly at
// its data and every shorter prefix is invalid.
fs::path write_sample(std::mt19937& rng) {
  const fs::path path = temp_path("sample");
  GgufWriter w(path);
  w.add_string("general.architecture", "llama");
  w.add_uint32("llama.block_count", 1);
  w.add_uint32("llama.context_length", 256);
  w.add_uint32("llama.embedding_length", 64);
  w.add_uint32("llama.feed_forward_length", 128);
  w.add_uint32("llama.attention.head_count", 4);
  w.add_uint32("llama.attention.head_count_kv", 2);
  w.add_float32("llama.rope.freq_base", 10000.0f);
  w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  w.add("test.u8", {ValueType::UINT8, ValueType::UINT32, 200});
  w.add("test.i8", {ValueType::INT8, ValueType::UINT32, -100});
  w.add("test.u16", {ValueType::UINT16, ValueType::UINT32, 60000});
  w.add("test.i16", {ValueType::INT16, ValueType::UINT32, -30000});
  w.add_int32("test.i32", -2000000000);
  w.add_uint64("test.u64", 1ull << 40);
  w.add_int64("test.i64", -(1ll << 40));
  w.add_float64("test.f64", 0.125);
  w.add_bool("test.bool", true);
  w.add_string_array("tokenizer.ggml.tokens", {"<s>", "</s>", "a", "b", "ab"});
  w.add_int32_array("tokenizer.ggml.token_type", {3, 3, 1, 1, 1});
  w.add_float32_array("tokenizer.ggml.scores", {0.f, 0.f, -1.f, -2.f, -3.f});
  w.add_uint32("tokenizer.ggml.bos_token_id", 0);
  w.add_uint32("tokenizer.ggml.eos_token_id", 1);

  const auto embd = random_floats(5 * 64, rng);
  std::vector<uint8_t> q8(row_bytes(GgmlType::Q8_0, 5 * 64));
  quantize_row(GgmlType::Q8_0, embd.data(), q8.data(), 5 * 64);
  w.add_tensor("token_embd.weight", GgmlType::Q8_0, {5, 64}, q8);
  const auto wq = random_floats(64 * 64, rng);
  std::vector<uint8_t> q41(row_bytes(GgmlType::Q4_1, 64 * 64));
  quantize_row(GgmlType::Q4_1, wq.data(), q41.data(), 64 * 64);
  w.add_tensor("blk.0.attn_q.weight", GgmlType::Q4_1, {64, 64}, q41);
  w.add_tensor("blk.0.attn_norm.weight", GgmlType::F32, {8}, as_bytes(random_floats(8, rng)));
  w.write();
  return path;
}

TEST(GgufWriter, RoundTripsMetadataAndTensors) {
  std::mt19937 rng(std::random_device{}());
  const fs::path path = write_sample(rng);
  const auto file = GgufFile::open(path);
  EXPECT_EQ(file->version(), 3u);
  EXPECT_EQ(file->alignment(), 32u);
  EXPECT_EQ(file->get_string("general.architecture"), "llama");
  EXPECT_EQ(file->get_int("test.u8"), 200);
  EXPECT_EQ(file->get_int("test.i8"), -100);
  EXPECT_EQ(file->get_int("test.u16"), 60000);
  EXPECT_EQ(file->get_int("test.i16"), -30000);
  EXPECT_EQ(file->get_int("test.i32"), -2000000000);
  EXPECT_EQ(file->get_int("test.u64"), int64_t(1) << 40);
  EXPECT_EQ(file->get_int("test.i64"), -(int64_t(1) << 40));
  EXPECT_EQ(file->get_float("test.f64"), 0.125);
  EXPECT_EQ(file->get_bool("test.bool"), true);
  EXPECT_FALSE(file->get_int("test.missing").has_value());
  EXPECT_THROW(file->get_int("general.architecture"), Error);
  EXPECT_THROW(file->get_string("test.u8"), Error);
  const auto tokens = file->get_string_array("tokenizer.ggml.tokens");
  ASSERT_TRUE(tokens.has_value());
  EXPECT_EQ(*tokens, (std::vector<std::string>{"<s>", "</s>", "a", "b", "ab"}));
  EXPECT_EQ(file->get_int_array("tokenizer.ggml.token_type")->at(0), 3);
  EXPECT_EQ(file->get_float_array("tokenizer.ggml.scores")->at(4), -3.0);
  EXPECT_THROW(file->get_string_array("tokenizer.ggml.scores"), Error);

  ASSERT_EQ(file->tensors().size(), 3u);
  const TensorInfo* q = file->find_tensor("blk.0.attn_q.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->type, GgmlType::Q4_1);
  EXPECT_EQ(q->ne, (std::vector<uint64_t>{64, 64}));
  EXPECT_EQ(q->nbytes, 64u * 2 * 20);
  for (const auto& t : file->tensors()) EXPECT_EQ(t.offset % 32, 0u);

  const auto checkpoint = open_gguf_checkpoint(path);
  const CheckpointTensor* embd = checkpoint->find("token_embd.weight");
  ASSERT_NE(embd, nullptr);
  EXPECT_EQ(embd->type, "Q8_0");
  EXPECT_EQ(embd->shape, (std::vector<int64_t>{5, 64}));
  const auto values = checkpoint->load_f32("token_embd.weight");
  std::vector<float> expected(5 * 64);
  dequantize_row(GgmlType::Q8_0, embd->data, expected.data(), 5 * 64);
  EXPECT_EQ(values, expected);
  EXPECT_THROW(checkpoint->load_f32("nope"), Error);

  const ModelConfig config = model_config_from_gguf(*file);
  EXPECT_EQ(config.model_type, "llama");
  EXPECT_EQ(config.hidden_size, 64);
  EXPECT_EQ(config.intermediate_size, 128);
  EXPECT_EQ(config.num_hidden_layers, 1);
  EXPECT_EQ(config.num_attention_heads, 4);
  EXPECT_EQ(config.num_key_value_heads, 2);
  EXPECT_EQ(config.head_dim, 16);
  EXPECT_EQ(config.vocab_size, 5);
  EXPECT_EQ(config.max_position_embeddings, 256);
  EXPECT_FLOAT_EQ(config.rms_norm_eps, 1e-5f);
  EXPECT_TRUE(config.tie_word_embeddings);  // no output.weight
  EXPECT_EQ(config.bos_token_id, 0);
  EXPECT_EQ(config.eos_token_ids, std::vector<int64_t>{1});
  fs::remove(path);
}

TEST(GgufModelConfig, ReverseMappingReadsBack) {
  ModelConfig config;
  config.model_type = "qwen3";
  config.vocab_size = 1000;
  config.hidden_size = 256;
  config.intermediate_size = 512;
  config.num_hidden_layers = 2;
  config.num_attention_heads = 4;
  config.num_key_value_heads = 2;
  config.head_dim = 128;  // != hidden / heads, so key_length is written
  config.rms_norm_eps = 1e-6f;
  config.rope_theta = 1000000.0f;
  config.max_position_embeddings = 4096;
  config.bos_token_id = 5;
  config.eos_token_ids = {7};
  const fs::path path = temp_path("config");
  GgufWriter w(path);
  for (auto& [key, value] : gguf_metadata_from_model_config(config)) w.add(key, value);
  w.write();
  const ModelConfig back = model_config_from_gguf(*GgufFile::open(path));
  EXPECT_EQ(back.model_type, "qwen3");
  EXPECT_EQ(back.vocab_size, 1000);
  EXPECT_EQ(back.hidden_size, 256);
  EXPECT_EQ(back.intermediate_size, 512);
  EXPECT_EQ(back.num_hidden_layers, 2);
  EXPECT_EQ(back.num_attention_heads, 4);
  EXPECT_EQ(back.num_key_value_heads, 2);
  EXPECT_EQ(back.head_dim, 128);
  EXPECT_EQ(back.rope_theta, 1000000.0f);
  EXPECT_EQ(back.rms_norm_eps, 1e-6f);
  EXPECT_EQ(back.max_position_embeddings, 4096);
  EXPECT_TRUE(back.qk_norm);
  EXPECT_EQ(back.bos_token_id, 5);
  EXPECT_EQ(back.eos_token_ids, std::vector<int64_t>{7});
  EXPECT_EQ(gguf_architecture_for("mistral"), "llama");
  EXPECT_THROW(gguf_architecture_for("gpt2"), Error);
  fs::remove(path);
}

TEST(GgufReader, EveryTruncationIsAnError) {
  std::mt19937 rng(std::random_device{}());
  const fs::path path = write_sample(rng);
  std::ifstream in(path, std::ios::binary);
  const std::string whole((std::istreambuf_iterator<char>(in)), {});
  fs::remove(path);
  ASSERT_GT(whole.size(), 100u);
  {
    TempFile ok(whole);
    EXPECT_NO_THROW(GgufFile::open(ok.path()));
  }
  for (size_t length = 0; length < whole.size(); ++length) {
    TempFile file(whole.substr(0, length));
    try {
      GgufFile::open(file.path());
      ADD_FAILURE() << "prefix of " << length << " bytes parsed";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(file.path().string()), std::string::npos) << e.what();
    }
  }
}

TEST(GgufReader, RandomCorruptionsGiveErrorsNotCrashes) {
  std::mt19937 rng(std::random_device{}());
  const fs::path path = write_sample(rng);
  std::ifstream in(path, std::ios::binary);
  const std::string whole((std::istreambuf_iterator<char>(in)), {});
  fs::remove(path);
  std::uniform_int_distribution<size_t> header_pos(0, 400);  // metadata and tensor infos
  std::uniform_int_distribution<int> byte(0, 255), flips(1, 4);
  int parsed = 0;
  for (int trial = 0; trial < 400; ++trial) {
    std::string bytes = whole;
    for (int f = flips(rng); f > 0; --f) bytes[header_pos(rng) % bytes.size()] = char(byte(rng));
    TempFile file(bytes);
    try {
      const auto checkpoint = open_gguf_checkpoint(file.path());
      for (const auto& t : checkpoint->tensors()) {
        try {
          checkpoint->load_f32(t.name);
        } catch (const Error&) {
        }
      }
      ++parsed;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(file.path().string()), std::string::npos) << e.what();
    }
  }
  RecordProperty("parsed", parsed);
}

TEST(GgufModelConfig, DefaultModel) {
  const char* home = std::getenv("NIBBLE_HOME");
  const char* user_home = std::getenv("HOME");
  const fs::path models = home ? fs::path(home) / "models"
                               : fs::path(user_home ? user_home : "/") / ".cache/nibble/models";
  const fs::path path = models / "SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!fs::exists(path)) GTEST_SKIP() << "default model not installed";
  const auto file = GgufFile::open(path);
  const ModelConfig config = model_config_from_gguf(*file);
  EXPECT_EQ(config.model_type, "llama");
  EXPECT_EQ(config.hidden_size, 576);
  EXPECT_EQ(config.intermediate_size, 1536);
  EXPECT_EQ(config.num_hidden_layers, 30);
  EXPECT_EQ(config.num_attention_heads, 9);
  EXPECT_EQ(config.num_key_value_heads, 3);
  EXPECT_EQ(config.head_dim, 64);
  EXPECT_EQ(config.vocab_size, 49152);
  EXPECT_EQ(config.max_position_embeddings, 8192);
  EXPECT_EQ(config.rope_theta, 100000.0f);
  EXPECT_EQ(config.rms_norm_eps, 1e-5f);
  EXPECT_TRUE(config.tie_word_embeddings);
  EXPECT_FALSE(config.attention_bias);
  EXPECT_FALSE(config.qk_norm);
  EXPECT_EQ(config.bos_token_id, 1);
  EXPECT_EQ(config.eos_token_ids, std::vector<int64_t>{2});
  EXPECT_EQ(config.pad_token_id, 2);
  const auto checkpoint = open_gguf_checkpoint(path);
  const CheckpointTensor* q = checkpoint->find("blk.0.attn_q.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->type, "Q4_1");
  EXPECT_EQ(q->shape, (std::vector<int64_t>{576, 576}));
}

TEST(GgufReader, RefusesBadHeaders) {
  const std::string good = build({}, 0);
  expect_error("", {"truncated"});
  std::string bad_magic = good;
  bad_magic[0] = 'X';
  expect_error(bad_magic, {"not a GGUF file"});
  for (uint32_t version : {1u, 99u, 0x03000000u}) {
    std::string v = good;
    std::memcpy(v.data() + 4, &version, 4);
    expect_error(v, {version == 1 ? "version 1" : version == 99 ? "version 99" : "big-endian"});
  }
  std::string many_tensors = good;
  const uint64_t absurd = uint64_t(1) << 63;
  std::memcpy(many_tensors.data() + 8, &absurd, 8);
  expect_error(many_tensors, {"tensor count"});
  std::string many_kv = good;
  std::memcpy(many_kv.data() + 16, &absurd, 8);
  expect_error(many_kv, {"metadata count"});
}

TEST(GgufReader, RefusesBadMetadata) {
  // A string whose length runs past the end of the file.
  expect_error(build({}, 0, 1, [](Bytes& b) { b.put<uint64_t>(1000).b.append("abc"); }),
               {"metadata key #0", "past the end"});
  // An array whose length cannot fit in the file.
  expect_error(build({}, 0, 1,
                     [](Bytes& b) {
                       b.str("arr").put<uint32_t>(9).put<uint32_t>(4).put<uint64_t>(uint64_t(1)
                                                                                    << 61);
                     }),
               {"'arr'", "array"});
  expect_error(build({}, 0, 1, [](Bytes& b) { b.str("k").put<uint32_t>(13).put<uint32_t>(0); }),
               {"'k'", "unknown value type 13"});
  expect_error(build({}, 0, 1, [](Bytes& b) { b.str("arr").put<uint32_t>(9).put<uint32_t>(77); }),
               {"'arr'", "unknown value type 77"});
  // Nested arrays beyond the depth bound.
  expect_error(build({}, 0, 1,
                     [](Bytes& b) {
                       b.str("deep").put<uint32_t>(9);
                       for (int i = 0; i < 5; ++i) b.put<uint32_t>(9).put<uint64_t>(1);
                       b.put<uint32_t>(4).put<uint64_t>(1).put<uint32_t>(0);
                     }),
               {"'deep'", "nested"});
  expect_error(build({}, 0, 2,
                     [](Bytes& b) {
                       b.str("dup").put<uint32_t>(4).put<uint32_t>(1);
                       b.str("dup").put<uint32_t>(4).put<uint32_t>(2);
                     }),
               {"duplicate metadata key 'dup'"});
  for (uint32_t alignment : {0u, 3u, 48u}) {
    expect_error(build({}, 0, 1,
                       [&](Bytes& b) {
                         b.str("general.alignment").put<uint32_t>(4).put<uint32_t>(alignment);
                       }),
                 {"general.alignment", "power of two"});
  }
  expect_error(
      build({}, 0, 1,
            [](Bytes& b) { b.str("general.alignment").put<uint32_t>(10).put<uint64_t>(32); }),
      {"general.alignment", "UINT32"});
}

TEST(GgufReader, RefusesBadTensorInfos) {
  expect_error(build({{.name = "w", .ne = {8}, .type = 99}}, 32), {"'w'", "unknown ggml type 99"});
  expect_error(build({{.name = "w", .ne = {8, 1, 1, 1, 1}}}, 32), {"'w'", "5 dimensions"});
  expect_error(build({{.name = "w", .ne = {31, 2}, .type = 2}}, 64),
               {"'w'", "not a multiple", "Q4_0", "32"});
  expect_error(build({{.name = "w", .ne = {uint64_t(1) << 32, uint64_t(1) << 32, 4}}}, 32),
               {"'w'", "overflow"});
  expect_error(build({{.name = "w", .ne = {uint64_t(1) << 62, 1}, .type = 2}}, 32),
               {"'w'"});  // element count fits int64, byte size does not fit the file
  expect_error(build({{.name = "w", .ne = {8}, .offset = 4}}, 64), {"'w'", "not a multiple"});
  expect_error(build({{.name = "w", .ne = {16}}}, 32), {"'w'", "past the end"});
  expect_error(build({{.name = "w", .ne = {8}, .offset = uint64_t(1) << 63}}, 32),
               {"'w'", "past the end"});
  expect_error(build({{.name = "a", .ne = {16}}, {.name = "b", .ne = {8}, .offset = 32}}, 64),
               {"'a'", "'b'", "overlap"});
  expect_error(build({{.name = "a", .ne = {8}}, {.name = "a", .ne = {8}, .offset = 32}}, 64),
               {"duplicate tensor name 'a'"});
  expect_error(build({{.name = "", .ne = {8}}}, 32), {"empty name"});
  // A valid file of the same shape parses, so the cases above fail for their own reason.
  TempFile ok(build({{.name = "a", .ne = {8}}, {.name = "b", .ne = {8}, .offset = 32}}, 64));
  const auto file = GgufFile::open(ok.path());
  EXPECT_EQ(file->tensors().size(), 2u);
  EXPECT_EQ(file->tensors()[1].data - file->tensors()[0].data, 32);
}

TEST(GgufDequant, KnownBlocks) {
  // Q4_0 with d = 2: nibble q gives (q - 8) * 2; low nibbles are elements 0..15.
  uint8_t q4_0[18] = {0x00, 0x40};
  for (int j = 0; j < 16; ++j) q4_0[2 + j] = uint8_t(j | ((15 - j) << 4));
  float y[32];
  dequantize_row(GgmlType::Q4_0, q4_0, y, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], float((j - 8) * 2));
    EXPECT_EQ(y[j + 16], float((7 - j) * 2));
  }
  // Q4_K with d = 1, dmin = 1, all scales 1 and mins 2: y = q - 2.
  uint8_t q4_k[144] = {0x00, 0x3c, 0x00, 0x3c};
  for (int j = 0; j < 4; ++j) {
    q4_k[4 + j] = 1;
    q4_k[8 + j] = 2;
    q4_k[12 + j] = 0x21;
  }
  for (int j = 0; j < 128; ++j) q4_k[16 + j] = uint8_t((j % 16) | ((j % 16) << 4));
  float yk[256];
  dequantize_row(GgmlType::Q4_K, q4_k, yk, 256);
  for (int e = 0; e < 256; ++e) EXPECT_EQ(yk[e], float(e % 32 % 16 - 2)) << e;
  EXPECT_THROW(dequantize_row(GgmlType::Q4_0, q4_0, y, 31), Error);
  EXPECT_THROW(dequantize_row(GgmlType::Q8_K, q4_k, yk, 256), Error);
}

TEST(GgufDequant, QuantizeRoundTripsWithinHalfAStep) {
  std::mt19937 rng(std::random_device{}());
  const int n = 32 * 64;
  const auto x = random_floats(n, rng, 3.0f);
  for (GgmlType type : {GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0,
                        GgmlType::Q5_1, GgmlType::F16, GgmlType::BF16}) {
    std::vector<uint8_t> q(row_bytes(type, n));
    quantize_row(type, x.data(), q.data(), n);
    std::vector<float> y(n);
    dequantize_row(type, q.data(), y.data(), n);
    const int levels = type == GgmlType::Q8_0                             ? 254
                       : type == GgmlType::Q4_0                           ? 15
                       : type == GgmlType::Q4_1                           ? 15
                       : type == GgmlType::Q5_0 || type == GgmlType::Q5_1 ? 31
                       : type == GgmlType::F16                            ? 1 << 10
                                                                          : 1 << 7;
    for (int b = 0; b < n / 32; ++b) {
      float lo = x[b * 32], hi = x[b * 32];
      for (int j = 0; j < 32; ++j) {
        lo = std::min(lo, x[b * 32 + j]);
        hi = std::max(hi, x[b * 32 + j]);
      }
      const float amax = std::max(std::fabs(lo), std::fabs(hi));
      const float step =
          type == GgmlType::Q4_1 || type == GgmlType::Q5_1 ? (hi - lo) / levels : 2 * amax / levels;
      for (int j = 0; j < 32; ++j) {
        // One step of slack covers the f16 rounding of the scale and the clipped top code.
        EXPECT_LE(std::fabs(y[b * 32 + j] - x[b * 32 + j]), step * 1.01f + 1e-6f)
            << type_name(type) << " block " << b;
      }
    }
  }
  // Q4_K has a quantizer (gguf_kquant.h); the other K-quants do not.
  std::vector<uint8_t> q(row_bytes(GgmlType::Q6_K, 256));
  EXPECT_THROW(quantize_row(GgmlType::Q6_K, x.data(), q.data(), 256), Error);
}

TEST(GgufWriter, RefusesInconsistentInput) {
  const fs::path path = temp_path("bad_writer");
  GgufWriter w(path);
  w.add_uint32("a", 1);
  EXPECT_THROW(w.add_uint32("a", 2), Error);
  EXPECT_THROW(w.add("b", {ValueType::UINT8, ValueType::UINT32, 300}), Error);
  EXPECT_THROW(w.add("c", {ValueType::STRING, ValueType::UINT32, 3}), Error);
  EXPECT_THROW(w.set_alignment(3), Error);
  EXPECT_THROW(w.add_tensor("t", GgmlType::Q4_0, {2, 31}, std::vector<uint8_t>(36)), Error);
  EXPECT_THROW(w.add_tensor("t", GgmlType::F32, {4}, std::vector<uint8_t>(15)), Error);
  w.add_tensor("t", GgmlType::F32, {4}, std::vector<uint8_t>(16, 1));
  EXPECT_THROW(w.add_tensor("t", GgmlType::F32, {4}, std::vector<uint8_t>(16)), Error);
  w.set_alignment(64);
  w.add_tensor("u", GgmlType::F32, {4}, std::vector<uint8_t>(16, 2));
  w.write();
  const auto file = GgufFile::open(path);
  EXPECT_EQ(file->alignment(), 64u);
  EXPECT_EQ(file->find_tensor("u")->offset, 64u);
  EXPECT_EQ(file->data_offset() % 64, 0u);
  fs::remove(path);
}

}  // namespace
}  // namespace nibble::gguf
