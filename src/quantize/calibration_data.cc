#include "quantize/calibration_data.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "model/loader.h"
#include "runtime/chat_prompt.h"

namespace nibble::quantize {
namespace {

std::string read_all(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  NIBBLE_CHECK(in.good(), "--calib {}: cannot open", path.string());
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// One document: either text to tokenize or a chat to render.
struct Document {
  std::string text;
  nlohmann::json messages;
};

std::vector<Document> read_jsonl(const std::filesystem::path& path) {
  std::ifstream in(path);
  NIBBLE_CHECK(in.good(), "--calib {}: cannot open", path.string());
  std::vector<Document> docs;
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      fail("--calib {}: line {} is not valid JSON: {}", path.string(), line_no, e.what());
    }
    Document d;
    if (j.is_object() && j.contains("messages") && j["messages"].is_array()) {
      d.messages = j["messages"];
    } else if (j.is_object() && j.contains("passage") && j["passage"].is_string()) {
      d.text = j["passage"].get<std::string>();
    } else if (j.is_object() && j.contains("text") && j["text"].is_string()) {
      d.text = j["text"].get<std::string>();
    } else if (j.is_object() && j.contains("query") && j["query"].is_string()) {
      d.text = j["query"].get<std::string>();
      constexpr std::string_view kPrefix = "Passage: ";
      if (d.text.rfind(kPrefix, 0) == 0) d.text.erase(0, kPrefix.size());
    } else {
      fail("--calib {}: line {} has no \"passage\", \"text\", \"query\" or \"messages\" field",
           path.string(), line_no);
    }
    docs.push_back(std::move(d));
  }
  return docs;
}

std::vector<Document> read_text(const std::filesystem::path& path) {
  const std::string all = read_all(path);
  std::vector<Document> docs;
  std::string current;
  std::istringstream lines(all);
  std::string line;
  while (std::getline(lines, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) {
      if (!current.empty()) docs.push_back({std::move(current), {}});
      current.clear();
      continue;
    }
    current += line;
    current += '\n';
  }
  if (!current.empty()) docs.push_back({std::move(current), {}});
  return docs;
}

}  // namespace

std::filesystem::path default_calibration_path() {
  const std::filesystem::path rel = std::filesystem::path("text") / "boolq.jsonl";
  std::vector<std::filesystem::path> candidates;
  if (const char* env = std::getenv("NIBBLE_SHARED_DATA")) candidates.push_back(env / rel);
  std::error_code ec;
  candidates.push_back(std::filesystem::current_path(ec) / ".." / "shared" / "data" / rel);
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    for (auto dir = exe.parent_path(); !dir.empty() && dir != dir.root_path();
         dir = dir.parent_path()) {
      candidates.push_back(dir / ".." / "shared" / "data" / rel);
    }
  }
  for (const auto& c : candidates)
    if (std::filesystem::exists(c, ec)) return std::filesystem::weakly_canonical(c, ec);
  fail(
      "no calibration data: ../shared/data/text/boolq.jsonl was not found (set "
      "NIBBLE_SHARED_DATA or pass --calib FILE)");
}

std::vector<std::vector<int32_t>> load_calibration_samples(const ModelSource& source,
                                                           const CalibrationOptions& o) {
  NIBBLE_CHECK(o.nsamples > 0 && o.seqlen > 0, "--nsamples {} and --seqlen {} must be positive",
               o.nsamples, o.seqlen);
  const std::filesystem::path path = o.path.empty() ? default_calibration_path() : o.path;
  const std::string name = path.filename().string();
  NIBBLE_CHECK(name.find("wikitext") == std::string::npos,
               "--calib {}: wikitext is the perplexity evaluation text; calibrating on it would "
               "leak the test set into the quantized model",
               path.string());
  const int64_t wanted = o.nsamples * o.seqlen;
  std::vector<int32_t> stream;

  if (path.extension() == ".json") {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(read_all(path));
    } catch (const nlohmann::json::exception& e) {
      fail("--calib {}: not valid JSON: {}", path.string(), e.what());
    }
    NIBBLE_CHECK(j.is_array(), "--calib {}: expected an array of token-id arrays", path.string());
    for (const auto& sample : j) {
      NIBBLE_CHECK(sample.is_array(), "--calib {}: expected an array of token-id arrays",
                   path.string());
      for (const auto& id : sample) stream.push_back(id.get<int32_t>());
    }
  } else {
    std::vector<Document> docs = path.extension() == ".jsonl" ? read_jsonl(path) : read_text(path);
    NIBBLE_CHECK(!docs.empty(), "--calib {}: no documents", path.string());
    NIBBLE_CHECK(source.tokenizer != nullptr,
                 "--calib {}: the model has no tokenizer; pass token ids as a .json file of "
                 "arrays",
                 path.string());
    std::mt19937_64 rng(o.seed);
    std::shuffle(docs.begin(), docs.end(), rng);
    for (const Document& d : docs) {
      if (int64_t(stream.size()) >= wanted) break;
      std::vector<int32_t> ids;
      if (!d.messages.is_null()) {
        ids = chat_prompt_ids(source, d.messages, /*add_generation_prompt=*/false);
      } else {
        ids = source.tokenizer->encode(d.text + "\n\n", /*add_special_tokens=*/false);
      }
      stream.insert(stream.end(), ids.begin(), ids.end());
    }
  }
  const int64_t vocab = source.config.vocab_size;
  for (int32_t id : stream)
    NIBBLE_CHECK(id >= 0 && id < vocab, "--calib {}: token id {} is outside the vocabulary [0, {})",
                 path.string(), id, vocab);
  const int64_t n = std::min<int64_t>(o.nsamples, int64_t(stream.size()) / o.seqlen);
  NIBBLE_CHECK(n > 0, "--calib {}: {} tokens cannot fill one sample of --seqlen {}", path.string(),
               stream.size(), o.seqlen);
  if (n < o.nsamples) {
    std::fprintf(stderr, "quantize: %s holds %zu tokens: %lld samples of %lld instead of %lld\n",
                 path.string().c_str(), stream.size(), static_cast<long long>(n),
                 static_cast<long long>(o.seqlen), static_cast<long long>(o.nsamples));
  }
  std::vector<std::vector<int32_t>> samples(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    samples[size_t(i)].assign(stream.begin() + i * o.seqlen, stream.begin() + (i + 1) * o.seqlen);
  return samples;
}

}  // namespace nibble::quantize
