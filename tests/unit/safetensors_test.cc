#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/dtype.h"
#include "core/error.h"
#include "formats/hf/hf_checkpoint.h"
#include "formats/safetensors/safetensors_file.h"
#include "formats/safetensors/safetensors_writer.h"

namespace nibble {
namespace {

namespace fs = std::filesystem;

const DType kAllDTypes[] = {DType::F64,     DType::F32,     DType::F16, DType::BF16,
                            DType::F8_E4M3, DType::F8_E5M2, DType::I64, DType::I32,
                            DType::I16,     DType::I8,      DType::U8,  DType::BOOL};

class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = fs::temp_directory_path() / fmt::format("nibble_st_test_{:08x}{:08x}", rd(), rd());
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
};

std::vector<uint8_t> random_bytes(size_t n, std::mt19937& rng) {
  std::vector<uint8_t> out(n);
  for (auto& b : out) b = static_cast<uint8_t>(rng());
  return out;
}

void write_bytes(const fs::path& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

// A file image with an explicit header text and `data_size` data bytes; the length field is
// the header's real length unless `length_field` overrides it.
std::vector<uint8_t> make_image(const std::string& header, size_t data_size,
                                std::optional<uint64_t> length_field = std::nullopt) {
  const uint64_t n = length_field.value_or(header.size());
  std::vector<uint8_t> out(8 + header.size() + data_size);
  for (size_t i = 0; i < 8; ++i) out[i] = static_cast<uint8_t>(n >> (8 * i));
  for (size_t i = 0; i < header.size(); ++i) out[8 + i] = static_cast<uint8_t>(header[i]);
  for (size_t i = 0; i < data_size; ++i)
    out[8 + header.size() + i] = static_cast<uint8_t>(i * 37 + 1);
  return out;
}

// Opens the image from disk and returns the error message ("" if it loaded).
std::string open_error(const TempDir& dir, const std::vector<uint8_t>& image) {
  const fs::path path = dir / "bad.safetensors";
  write_bytes(path, image);
  try {
    SafetensorsFile::open(path);
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find(path.string()), std::string::npos) << "message lacks file: " << message;
    return message;
  }
  return "";
}

#define EXPECT_REJECTED(image, ...)                       \
  do {                                                    \
    const std::string message = open_error(dir, image);   \
    ASSERT_FALSE(message.empty()) << "file was accepted"; \
    for (const char* part : {__VA_ARGS__})                \
      EXPECT_NE(message.find(part), std::string::npos)    \
          << "'" << part << "' missing in: " << message;  \
  } while (0)

std::string entry(const std::string& name, const std::string& dtype, const std::string& shape,
                  uint64_t begin, uint64_t end) {
  return fmt::format(R"("{}":{{"dtype":"{}","shape":{},"data_offsets":[{},{}]}})", name, dtype,
                     shape, begin, end);
}

TEST(SafetensorsRoundTrip, EveryDTypeBitExact) {
  TempDir dir;
  std::mt19937 rng(std::random_device{}());
  std::vector<std::vector<uint8_t>> buffers;
  std::vector<SafetensorsTensorData> tensors;
  const std::vector<std::vector<int64_t>> shapes = {{3, 5}, {7}, {2, 3, 4}, {}, {0, 4}};
  for (DType t : kAllDTypes) {
    for (size_t s = 0; s < shapes.size(); ++s) {
      SafetensorsTensorSpec spec{fmt::format("t.{}.{}", dtype_name(t), s), t, shapes[s]};
      buffers.push_back(random_bytes(spec.nbytes(), rng));
      if (t == DType::BOOL)
        for (auto& b : buffers.back()) b &= 1;
    }
  }
  size_t k = 0;
  for (DType t : kAllDTypes)
    for (size_t s = 0; s < shapes.size(); ++s, ++k)
      tensors.push_back({{fmt::format("t.{}.{}", dtype_name(t), s), t, shapes[s]}, buffers[k]});

  const fs::path path = dir / "all.safetensors";
  write_safetensors(path, tensors, {{"origin", "unit-test"}});
  const auto file = SafetensorsFile::open(path);
  EXPECT_EQ(file->metadata().at("format"), "pt");
  EXPECT_EQ(file->metadata().at("origin"), "unit-test");
  EXPECT_EQ(file->header_size() % 8, 0u);
  ASSERT_EQ(file->tensors().size(), tensors.size());
  for (const auto& expected : tensors) {
    const SafetensorsTensor* t = file->find(expected.spec.name);
    ASSERT_NE(t, nullptr) << expected.spec.name;
    EXPECT_EQ(t->dtype, expected.spec.dtype);
    EXPECT_EQ(t->shape, expected.spec.shape);
    ASSERT_EQ(t->nbytes, expected.data.size());
    EXPECT_TRUE(std::equal(expected.data.begin(), expected.data.end(), t->data)) << t->name;
    // The canonical order puts wider elements first, so every tensor is naturally aligned.
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t->data) % dtype_size(t->dtype), 0u) << t->name;
  }
  // The header starts with the metadata, as the reference writer does.
  std::ifstream in(path, std::ios::binary);
  std::string head(24, '\0');
  in.read(head.data(), 24);
  EXPECT_EQ(head.substr(8, 16), R"({"__metadata__":)");
}

TEST(SafetensorsRoundTrip, WriterIsDeterministicAndRewritesIdentically) {
  TempDir dir;
  std::mt19937 rng(std::random_device{}());
  auto a = random_bytes(12, rng), b = random_bytes(6, rng);
  std::vector<SafetensorsTensorData> one = {{{"b", DType::F16, {3}}, b},
                                            {{"a", DType::F32, {3}}, a}};
  std::vector<SafetensorsTensorData> two = {one[1], one[0]};
  write_safetensors(dir / "1.safetensors", one);
  write_safetensors(dir / "2.safetensors", two);
  auto read_all = [](const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  EXPECT_EQ(read_all(dir / "1.safetensors"), read_all(dir / "2.safetensors"));
  // Nothing else (no temporary file) is left behind.
  size_t files = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir.path())) ++files;
  EXPECT_EQ(files, 2u);
}

TEST(SafetensorsRoundTrip, WriterRejectsBadInput) {
  TempDir dir;
  std::vector<uint8_t> four(4);
  std::vector<SafetensorsTensorData> dup = {{{"x", DType::F32, {1}}, four},
                                            {{"x", DType::F32, {1}}, four}};
  EXPECT_THROW(write_safetensors(dir / "d.safetensors", dup), Error);
  std::vector<SafetensorsTensorData> wrong = {{{"x", DType::F32, {2}}, four}};
  EXPECT_THROW(write_safetensors(dir / "w.safetensors", wrong), Error);
  std::vector<SafetensorsTensorData> reserved = {{{"__metadata__", DType::F32, {1}}, four}};
  EXPECT_THROW(write_safetensors(dir / "r.safetensors", reserved), Error);
  EXPECT_FALSE(fs::exists(dir / "w.safetensors"));

  // The streaming writer refuses out-of-order tensors and leaves nothing when not committed.
  {
    SafetensorsWriter writer(dir / "s.safetensors",
                             {{"a", DType::F32, {1}}, {"b", DType::F32, {1}}});
    EXPECT_THROW(writer.write("b", four), Error);
    writer.write("a", four);
    EXPECT_THROW(writer.commit(), Error);
  }
  EXPECT_FALSE(fs::exists(dir / "s.safetensors"));
}

TEST(SafetensorsValidation, AcceptsScalarsAndZeroSizeTensors) {
  TempDir dir;
  const std::string header = "{" + entry("empty", "F32", "[0,5]", 0, 0) + "," +
                             entry("scalar", "F64", "[]", 0, 8) + "," +
                             entry("empty2", "BF16", "[3,0]", 8, 8) + "}";
  const fs::path path = dir / "ok.safetensors";
  write_bytes(path, make_image(header, 8));
  const auto file = SafetensorsFile::open(path);
  ASSERT_EQ(file->tensors().size(), 3u);
  EXPECT_EQ(file->find("scalar")->nbytes, 8u);
  EXPECT_EQ(file->find("empty")->nbytes, 0u);
  EXPECT_TRUE(file->metadata().empty());
}

TEST(SafetensorsValidation, AcceptsSpacePaddedHeaderAndNullMetadata) {
  TempDir dir;
  const std::string header = "{\"__metadata__\":null," + entry("w", "U8", "[4]", 0, 4) + "}     ";
  const fs::path path = dir / "ok.safetensors";
  write_bytes(path, make_image(header, 4));
  EXPECT_EQ(SafetensorsFile::open(path)->tensors().size(), 1u);
}

TEST(SafetensorsValidation, RejectsTruncatedFiles) {
  TempDir dir;
  const std::string header = "{" + entry("w", "F32", "[4]", 0, 16) + "}";
  auto image = make_image(header, 16);
  image.resize(image.size() - 5);
  EXPECT_REJECTED(image, "'w'", "run past the end", "truncated");
  EXPECT_REJECTED(std::vector<uint8_t>(5, 0), "too short");
  EXPECT_REJECTED(std::vector<uint8_t>(), "too short");
}

TEST(SafetensorsValidation, RejectsLyingHeaderLength) {
  TempDir dir;
  const std::string header = "{" + entry("w", "F32", "[1]", 0, 4) + "}";
  EXPECT_REJECTED(make_image(header, 4, 1000), "header length 1000", "exceeds");
  EXPECT_REJECTED(make_image(header, 4, uint64_t{1} << 63), "100000000-byte limit");
  EXPECT_REJECTED(make_image(header, 4, ~uint64_t{0}), "100000000-byte limit");
  // Length that cuts the JSON short: the rest is misread as data.
  EXPECT_REJECTED(make_image(header, 4, header.size() - 3), "not valid JSON");
}

TEST(SafetensorsValidation, RejectsNonJsonAndNonObjectHeaders) {
  TempDir dir;
  EXPECT_REJECTED(make_image("{\"w\": {\"dtype\": ", 0), "not valid JSON");
  EXPECT_REJECTED(make_image("{\"w\": nope}", 0), "not valid JSON");
  EXPECT_REJECTED(make_image("[1, 2, 3]  ", 0), "JSON object");
  EXPECT_REJECTED(make_image("\"string\"", 0), "JSON object");
  EXPECT_REJECTED(make_image("{\"\xff\xfe\": 1}", 0), "not valid JSON");  // invalid UTF-8
  EXPECT_REJECTED(make_image("{\"w\": 5}", 0), "'w'", "JSON object");
  std::string deep = "{\"w\":" + std::string(100, '[') + std::string(100, ']') + "}";
  EXPECT_REJECTED(make_image(deep, 0), "nests deeper");
}

TEST(SafetensorsValidation, RejectsBadMetadata) {
  TempDir dir;
  const std::string tensor = entry("w", "U8", "[1]", 0, 1);
  EXPECT_REJECTED(make_image("{\"__metadata__\":{\"format\":1}," + tensor + "}", 1),
                  "__metadata__['format']", "string");
  EXPECT_REJECTED(make_image("{\"__metadata__\":[1]," + tensor + "}", 1), "__metadata__");
}

TEST(SafetensorsValidation, RejectsOverlapGapAndTrailingBytes) {
  TempDir dir;
  EXPECT_REJECTED(
      make_image("{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("b", "F32", "[2]", 4, 12) + "}",
                 12),
      "'b'", "overlap", "'a'");
  // Two tensors aliasing the same bytes are an overlap too.
  EXPECT_REJECTED(
      make_image("{" + entry("k", "F32", "[2]", 0, 8) + "," + entry("v", "F32", "[2]", 0, 8) + "}",
                 8),
      "overlap");
  EXPECT_REJECTED(
      make_image(
          "{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("b", "F32", "[2]", 12, 20) + "}", 20),
      "'b'", "gap of 4 bytes", "'a'");
  EXPECT_REJECTED(make_image("{" + entry("a", "F32", "[2]", 4, 12) + "}", 12), "'a'", "gap");
  EXPECT_REJECTED(make_image("{" + entry("a", "F32", "[2]", 0, 8) + "}", 12), "4 trailing bytes");
}

TEST(SafetensorsValidation, RejectsSizeShapeMismatchAndBadShapes) {
  TempDir dir;
  EXPECT_REJECTED(make_image("{" + entry("w", "F32", "[3]", 0, 8) + "}", 8), "'w'", "needs 12");
  EXPECT_REJECTED(make_image("{" + entry("w", "F32", "[-1]", 0, 4) + "}", 4), "'w'", "negative");
  EXPECT_REJECTED(make_image("{" + entry("w", "F32", "[2.5]", 0, 8) + "}", 8), "'w'", "shape[0]",
                  "integer");
  EXPECT_REJECTED(make_image("{" + entry("w", "F32", "[2.0]", 0, 8) + "}", 8), "'w'", "integer");
  EXPECT_REJECTED(make_image("{" + entry("w", "F32", "\"2\"", 0, 8) + "}", 8), "'w'", "shape");
  EXPECT_REJECTED(make_image("{" + entry("w", "F32", "[4294967296,4294967296,2]", 0, 8) + "}", 8),
                  "'w'", "overflows");
  EXPECT_REJECTED(make_image("{" + entry("w", "F64", "[2305843009213693952]", 0, 8) + "}", 8),
                  "'w'", "overflows");
  EXPECT_REJECTED(make_image("{" + entry("w", "F32", "[18446744073709551615]", 0, 8) + "}", 8),
                  "'w'", "too large");
}

TEST(SafetensorsValidation, RejectsUnknownDTypeAndMissingFields) {
  TempDir dir;
  EXPECT_REJECTED(make_image("{" + entry("w", "F4", "[2]", 0, 1) + "}", 1), "'w'",
                  "unsupported dtype 'F4'");
  EXPECT_REJECTED(make_image("{" + entry("w", "Q4_K", "[2]", 0, 1) + "}", 1), "'Q4_K'");
  EXPECT_REJECTED(make_image(R"({"w":{"shape":[1],"data_offsets":[0,4]}})", 4), "'w'",
                  "missing field 'dtype'");
  EXPECT_REJECTED(make_image(R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", 4), "'w'",
                  "missing field 'shape'");
  EXPECT_REJECTED(make_image(R"({"w":{"dtype":"F32","shape":[1]}})", 4), "'w'",
                  "missing field 'data_offsets'");
  EXPECT_REJECTED(make_image(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", 4), "'w'",
                  "data_offsets");
  EXPECT_REJECTED(make_image(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", 4), "'w'",
                  "end before they begin");
  EXPECT_REJECTED(make_image(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", 4),
                  "'w'", "non-negative");
}

TEST(SafetensorsValidation, RejectsDuplicateNames) {
  TempDir dir;
  EXPECT_REJECTED(
      make_image("{" + entry("w", "F32", "[1]", 0, 4) + "," + entry("w", "F32", "[1]", 4, 8) + "}",
                 8),
      "duplicate tensor name 'w'");
  EXPECT_REJECTED(
      make_image(R"({"w":{"dtype":"F32","dtype":"U8","shape":[4],"data_offsets":[0,4]}})", 4),
      "duplicate key 'dtype'", "'w'");
}

TEST(SafetensorsValidation, RejectsOffsetsPastTheEnd) {
  TempDir dir;
  EXPECT_REJECTED(make_image("{" + entry("w", "F32", "[2]", 0, 8) + "}", 4), "'w'",
                  "run past the end");
  EXPECT_REJECTED(
      make_image("{" + entry("w", "U8", "[1]", 0, 1) + "," + entry("x", "U8", "[5]", 1, 6) + "}",
                 3),
      "'x'", "run past the end");
  EXPECT_REJECTED(make_image(std::string("{\"a\\u0000b\":") +
                                 R"({"dtype":"U8","shape":[1],"data_offsets":[0,1]}})",
                             1),
                  "NUL");
}

TEST(SafetensorsValidation, RandomCorruptionNeverCrashes) {
  // Flip bytes of a valid file: every outcome must be a clean load or an nibble::Error.
  TempDir dir;
  std::mt19937 rng(std::random_device{}());
  std::vector<uint8_t> a = random_bytes(24, rng);
  std::vector<SafetensorsTensorData> tensors = {{{"a", DType::F32, {2, 3}}, a}};
  write_safetensors(dir / "good.safetensors", tensors);
  std::ifstream in(dir / "good.safetensors", std::ios::binary);
  const std::vector<uint8_t> good(std::istreambuf_iterator<char>(in), {});
  for (int round = 0; round < 300; ++round) {
    std::vector<uint8_t> image = good;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) image[rng() % image.size()] = static_cast<uint8_t>(rng());
    if (rng() % 4 == 0) image.resize(rng() % image.size());
    try {
      const auto file = SafetensorsFile::from_memory(image, "fuzz");
      for (const auto& t : file->tensors()) {
        ASSERT_GE(t.data, image.data());
        ASSERT_LE(t.data + t.nbytes, image.data() + image.size());
      }
    } catch (const Error&) {
    }
  }
}

TEST(SafetensorsCheckpoint, SingleAndShardedDirectoriesLoad) {
  TempDir dir;
  std::mt19937 rng(std::random_device{}());
  std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
  std::vector<std::vector<float>> values;
  std::vector<std::vector<uint8_t>> bytes;
  std::vector<SafetensorsTensorData> tensors;
  for (int i = 0; i < 5; ++i) {
    std::vector<float> v(6 + i);
    for (auto& x : v) x = dist(rng);
    values.push_back(v);
    bytes.emplace_back(v.size() * 4);
    std::memcpy(bytes.back().data(), v.data(), bytes.back().size());
  }
  for (int i = 0; i < 5; ++i)
    tensors.push_back(
        {{fmt::format("layers.{}.weight", i), DType::F32, {static_cast<int64_t>(values[i].size())}},
         bytes[i]});

  write_hf_safetensors(dir / "single", tensors);
  EXPECT_TRUE(fs::exists(dir / "single" / "model.safetensors"));
  write_hf_safetensors(dir / "sharded", tensors, /*max_shard_bytes=*/64);
  EXPECT_TRUE(fs::exists(dir / "sharded" / "model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(dir / "sharded" / "model.safetensors"));

  for (const char* name : {"single", "sharded"}) {
    const auto checkpoint = open_hf_checkpoint(dir / name);
    ASSERT_EQ(checkpoint->tensors().size(), 5u) << name;
    for (int i = 0; i < 5; ++i) {
      const std::string tname = fmt::format("layers.{}.weight", i);
      const CheckpointTensor* t = checkpoint->find(tname);
      ASSERT_NE(t, nullptr);
      EXPECT_EQ(t->type, "F32");
      EXPECT_EQ(checkpoint->load_f32(tname), values[i]);
    }
    EXPECT_EQ(checkpoint->find("nope"), nullptr);
    EXPECT_THROW(checkpoint->load_f32("nope"), Error);
  }
}

TEST(SafetensorsCheckpoint, LoadF32ConvertsHalfTypes) {
  TempDir dir;
  // 1.0, -2.0, 0.5 in f16 and bf16.
  const uint16_t f16[] = {0x3c00, 0xc000, 0x3800};
  const uint16_t bf16[] = {0x3f80, 0xc000, 0x3f00};
  std::vector<SafetensorsTensorData> tensors = {
      {{"h", DType::F16, {3}}, {reinterpret_cast<const uint8_t*>(f16), 6}},
      {{"b", DType::BF16, {3}}, {reinterpret_cast<const uint8_t*>(bf16), 6}}};
  write_hf_safetensors(dir.path(), tensors);
  const auto checkpoint = open_hf_checkpoint(dir.path());
  const std::vector<float> expected = {1.0f, -2.0f, 0.5f};
  EXPECT_EQ(checkpoint->load_f32("h"), expected);
  EXPECT_EQ(checkpoint->load_f32("b"), expected);
  EXPECT_EQ(checkpoint->find("b")->type, "BF16");
}

std::string checkpoint_error(const fs::path& dir) {
  try {
    open_hf_checkpoint(dir);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(SafetensorsCheckpoint, IndexErrorsNameTensorAndShard) {
  TempDir dir;
  std::vector<uint8_t> four(4, 1);
  std::vector<SafetensorsTensorData> tensors = {{{"a", DType::F32, {1}}, four},
                                                {{"b", DType::F32, {1}}, four}};
  write_hf_safetensors(dir.path(), tensors, 4);
  const fs::path index = dir / "model.safetensors.index.json";
  auto rewrite_index = [&](const nlohmann::json& j) { std::ofstream(index) << j.dump(); };
  nlohmann::json good = nlohmann::json::parse(std::ifstream(index));
  ASSERT_EQ(good["weight_map"].size(), 2u);

  nlohmann::json missing_tensor = good;
  missing_tensor["weight_map"]["c"] = "model-00001-of-00002.safetensors";
  rewrite_index(missing_tensor);
  std::string message = checkpoint_error(dir.path());
  EXPECT_NE(message.find("'c'"), std::string::npos) << message;
  EXPECT_NE(message.find("model-00001-of-00002.safetensors"), std::string::npos) << message;

  nlohmann::json missing_shard = good;
  missing_shard["weight_map"]["a"] = "model-00009-of-00009.safetensors";
  rewrite_index(missing_shard);
  message = checkpoint_error(dir.path());
  EXPECT_NE(message.find("'a'"), std::string::npos) << message;
  EXPECT_NE(message.find("model-00009-of-00009.safetensors"), std::string::npos) << message;
  EXPECT_NE(message.find("does not exist"), std::string::npos) << message;

  nlohmann::json escape = good;
  escape["weight_map"]["a"] = "../model-00001-of-00002.safetensors";
  rewrite_index(escape);
  EXPECT_NE(checkpoint_error(dir.path()).find("plain file name"), std::string::npos);

  rewrite_index(nlohmann::json::parse("{\"metadata\":{}}"));
  EXPECT_NE(checkpoint_error(dir.path()).find("weight_map"), std::string::npos);

  std::ofstream(index) << "{not json";
  message = checkpoint_error(dir.path());
  EXPECT_NE(message.find(index.string()), std::string::npos) << message;

  // The same tensor in two files of an index-less directory.
  TempDir dup;
  write_safetensors(dup / "x.safetensors", std::vector<SafetensorsTensorData>{tensors[0]});
  write_safetensors(dup / "y.safetensors", std::vector<SafetensorsTensorData>{tensors[0]});
  message = checkpoint_error(dup.path());
  EXPECT_NE(message.find("appears in both"), std::string::npos) << message;

  TempDir empty;
  EXPECT_NE(checkpoint_error(empty.path()).find("model.safetensors"), std::string::npos);
}

}  // namespace
}  // namespace nibble
