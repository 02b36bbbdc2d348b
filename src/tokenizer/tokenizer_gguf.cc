// GGUF tokenizer.ggml.* metadata -> the tokenizer.json that transformers builds from the same
// file (AutoTokenizer.from_pretrained(dir, gguf_file=...)), so that ids match it exactly.
#include <algorithm>
#include <map>
#include <set>
#include <unordered_map>

#include "formats/gguf/gguf_file.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/hf_tokenizer.h"
#include "tokenizer/unicode_text.h"

namespace nibble {

namespace {
using nlohmann::json;

constexpr int kTokenTypeControl = 3;
constexpr int kTokenTypeUserDefined = 4;

// Split regexes by tokenizer.ggml.pre, as transformers' GGUF integration maps them. Files whose
// name is not listed ("smollm", "gpt-2", "default", ...) keep GPT-2's ByteLevel split.
constexpr const char* kLlama3Split =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kQwen2Split =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kQwen35Split =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kTekkenSplit =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kGpt4oSplit =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

const char* split_regex_for(const std::string& pre) {
  static const std::map<std::string, const char*> table = {
      {"llama3", kLlama3Split},       {"llama-v3", kLlama3Split},
      {"llama-bpe", kLlama3Split},    {"falcon3", kLlama3Split},
      {"falcon-h1", kLlama3Split},    {"pixtral", kLlama3Split},
      {"midm-2.0", kLlama3Split},     {"lfm2", kLlama3Split},
      {"jina-v5-nano", kLlama3Split}, {"dbrx", kLlama3Split},
      {"smaug-bpe", kLlama3Split},    {"tekken", kTekkenSplit},
      {"qwen2", kQwen2Split},         {"deepseek-r1-qwen", kQwen2Split},
      {"kormo", kQwen2Split},         {"f2llmv2", kQwen2Split},
      {"megrez", kQwen2Split},        {"qwen35", kQwen35Split},
      {"gpt-4o", kGpt4oSplit},        {"llama4", kGpt4oSplit},
      {"kanana2", kGpt4oSplit},       {"talkie", kGpt4oSplit},
      {"minimax-m2", kGpt4oSplit},
  };
  auto it = table.find(pre);
  return it == table.end() ? nullptr : it->second;
}

struct GgufVocab {
  std::string source;
  std::string model;  // tokenizer.ggml.model
  std::string pre;    // tokenizer.ggml.pre
  std::string architecture;
  std::vector<std::string> tokens;
  std::vector<int64_t> token_types;  // empty when absent
  std::vector<double> scores;        // empty when absent
  std::optional<std::vector<std::string>> merges;
  std::optional<int32_t> bos, eos, unk, pad;
  std::optional<bool> add_bos, add_eos;
};

bool is_integer_type(gguf::ValueType type) {
  using gguf::ValueType;
  return type == ValueType::UINT8 || type == ValueType::INT8 || type == ValueType::UINT16 ||
         type == ValueType::INT16 || type == ValueType::UINT32 || type == ValueType::INT32 ||
         type == ValueType::UINT64 || type == ValueType::INT64;
}

// An array's elements, after checking the declared element type (a file may lie about it:
// the type is checked, never assumed).
const json& array_of(const gguf::GgufFile& file, const char* key, bool (*type_ok)(gguf::ValueType),
                     const char* expected) {
  const gguf::MetaValue* value = file.find(key);
  if (value->type != gguf::ValueType::ARRAY || !type_ok(value->elem_type) ||
      !value->value.is_array())
    fail("{}: metadata {} must be an array of {}", file.path().string(), key, expected);
  return value->value;
}

GgufVocab read_vocab(const gguf::GgufFile& file) {
  GgufVocab vocab;
  vocab.source = file.path().string();
  auto model = file.get_string("tokenizer.ggml.model");
  if (!model)
    fail("{}: no tokenizer.ggml.model metadata (the file has no tokenizer)", vocab.source);
  vocab.model = *model;
  vocab.pre = file.get_string("tokenizer.ggml.pre").value_or("");
  vocab.architecture = file.get_string("general.architecture").value_or("");
  if (!file.find("tokenizer.ggml.tokens"))
    fail("{}: no tokenizer.ggml.tokens metadata", vocab.source);

  const auto& tokens = array_of(
      file, "tokenizer.ggml.tokens", [](gguf::ValueType t) { return t == gguf::ValueType::STRING; },
      "strings");
  if (tokens.empty()) fail("{}: tokenizer.ggml.tokens is empty", vocab.source);
  if (static_cast<int64_t>(tokens.size()) > tokenizer_json::kMaxTokenId)
    fail("{}: tokenizer.ggml.tokens has {} entries, more than nibble accepts", vocab.source,
         tokens.size());
  vocab.tokens.reserve(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    const auto& token = tokens[i].get_ref<const std::string&>();
    if (!text::is_valid_utf8(token))
      fail("{}: tokenizer.ggml.tokens[{}] is not valid UTF-8", vocab.source, i);
    vocab.tokens.push_back(token);
  }
  if (file.find("tokenizer.ggml.token_type")) {
    const auto& types = array_of(file, "tokenizer.ggml.token_type", is_integer_type, "integers");
    if (types.size() != tokens.size())
      fail("{}: tokenizer.ggml.token_type has {} entries, tokenizer.ggml.tokens {}", vocab.source,
           types.size(), tokens.size());
    for (const auto& type : types) vocab.token_types.push_back(type.get<int64_t>());
  }
  if (file.find("tokenizer.ggml.scores")) {
    const auto& scores = array_of(
        file, "tokenizer.ggml.scores",
        [](gguf::ValueType t) {
          return t == gguf::ValueType::FLOAT32 || t == gguf::ValueType::FLOAT64;
        },
        "floats");
    if (scores.size() != tokens.size())
      fail("{}: tokenizer.ggml.scores has {} entries, tokenizer.ggml.tokens {}", vocab.source,
           scores.size(), tokens.size());
    for (const auto& score : scores) vocab.scores.push_back(score.get<double>());
  }
  if (file.find("tokenizer.ggml.merges")) {
    const auto& merges = array_of(
        file, "tokenizer.ggml.merges",
        [](gguf::ValueType t) { return t == gguf::ValueType::STRING; }, "strings");
    vocab.merges.emplace();
    for (const auto& merge : merges) vocab.merges->push_back(merge.get<std::string>());
  }
  auto read_id = [&](const char* key) -> std::optional<int32_t> {
    auto id = file.get_int(key);
    if (!id) return std::nullopt;
    if (*id < 0 || *id >= static_cast<int64_t>(vocab.tokens.size()))
      fail("{}: {} = {} is out of range (vocabulary of {} tokens)", vocab.source, key, *id,
           vocab.tokens.size());
    return static_cast<int32_t>(*id);
  };
  vocab.bos = read_id("tokenizer.ggml.bos_token_id");
  vocab.eos = read_id("tokenizer.ggml.eos_token_id");
  vocab.unk = read_id("tokenizer.ggml.unknown_token_id");
  vocab.pad = read_id("tokenizer.ggml.padding_token_id");
  vocab.add_bos = file.get_bool("tokenizer.ggml.add_bos_token");
  vocab.add_eos = file.get_bool("tokenizer.ggml.add_eos_token");
  return vocab;
}

size_t char_count(const std::string& s) {
  size_t count = 0;
  for (char c : s) count += (static_cast<uint8_t>(c) & 0xC0) != 0x80;
  return count;
}

// transformers' generate_merges: every split of a token into two vocabulary tokens, ordered by
// the score of the merged token (best first when scores are given, else by id), ties by the
// lengths of the parts, then by discovery order (Python's sort is stable).
json merges_from_vocab(const std::vector<std::string>& tokens,
                       const std::unordered_map<std::string, int32_t>& vocab,
                       const std::vector<double>* scores) {
  struct Candidate {
    std::string left, right;
    double score;
    size_t left_chars, right_chars;
  };
  // Python's dict(zip(tokens, scores)): first-seen key order, last-seen value.
  std::vector<std::string> order;
  std::unordered_map<std::string, double> score_of;
  for (size_t i = 0; i < tokens.size(); ++i) {
    double score = scores ? (*scores)[i] : static_cast<double>(vocab.at(tokens[i]));
    if (!score_of.count(tokens[i])) order.push_back(tokens[i]);
    score_of[tokens[i]] = score;
  }
  std::vector<Candidate> merges;
  for (const auto& token : order) {
    std::vector<Candidate> local;
    size_t pos = 0;
    text::next_code_point(token, pos);
    while (pos < token.size()) {
      std::string left = token.substr(0, pos), right = token.substr(pos);
      if (vocab.count(left) && vocab.count(right))
        local.push_back({left, right, score_of[token], char_count(left), char_count(right)});
      text::next_code_point(token, pos);
    }
    std::stable_sort(local.begin(), local.end(), [&](const Candidate& a, const Candidate& b) {
      auto ka = std::make_pair(vocab.at(a.left), vocab.at(a.right));
      auto kb = std::make_pair(vocab.at(b.left), vocab.at(b.right));
      return ka < kb;
    });
    merges.insert(merges.end(), local.begin(), local.end());
  }
  bool descending = scores != nullptr;
  std::stable_sort(merges.begin(), merges.end(), [&](const Candidate& a, const Candidate& b) {
    auto ka = std::make_tuple(a.score, a.left_chars, a.right_chars);
    auto kb = std::make_tuple(b.score, b.left_chars, b.right_chars);
    return descending ? kb < ka : ka < kb;
  });
  json out = json::array();
  for (const auto& merge : merges) out.push_back(json::array({merge.left, merge.right}));
  return out;
}

json merges_from_file(const GgufVocab& vocab) {
  json out = json::array();
  for (size_t i = 0; i < vocab.merges->size(); ++i) {
    const auto& merge = (*vocab.merges)[i];
    size_t space = merge.find(' ');
    if (space == std::string::npos || merge.find(' ', space + 1) != std::string::npos)
      fail("{}: tokenizer.ggml.merges[{}] = \"{}\" is not \"left right\"", vocab.source, i, merge);
    out.push_back(json::array({merge.substr(0, space), merge.substr(space + 1)}));
  }
  return out;
}

json added_token(int32_t id, const std::string& content, bool special) {
  return {{"id", id},        {"content", content},  {"single_word", false}, {"lstrip", false},
          {"rstrip", false}, {"normalized", false}, {"special", special}};
}

json special_template(const GgufVocab& vocab, const std::vector<std::string>& names, bool add_bos,
                      bool add_eos) {
  json single = json::array(), pair = json::array(), specials = json::object();
  auto special = [&](int32_t id, int type_id) {
    const auto& name = names[static_cast<size_t>(id)];
    specials[name] = {{"id", name}, {"ids", json::array({id})}, {"tokens", json::array({name})}};
    return json{{"SpecialToken", {{"id", name}, {"type_id", type_id}}}};
  };
  auto sequence = [](const char* id, int type_id) {
    return json{{"Sequence", {{"id", id}, {"type_id", type_id}}}};
  };
  if (add_bos && vocab.bos) single.push_back(special(*vocab.bos, 0));
  single.push_back(sequence("A", 0));
  if (add_eos && vocab.eos) single.push_back(special(*vocab.eos, 0));
  pair = single;
  if (add_bos && vocab.bos) pair.push_back(special(*vocab.bos, 1));
  pair.push_back(sequence("B", 1));
  if (add_eos && vocab.eos) pair.push_back(special(*vocab.eos, 1));
  return {{"type", "TemplateProcessing"},
          {"single", single},
          {"pair", pair},
          {"special_tokens", specials}};
}

json bpe_model(json vocab, json merges, bool byte_fallback, std::optional<std::string> unk) {
  return {{"type", "BPE"},
          {"dropout", nullptr},
          {"unk_token", unk ? json(*unk) : json(nullptr)},
          {"continuing_subword_prefix", byte_fallback ? json(nullptr) : json("")},
          {"end_of_word_suffix", byte_fallback ? json(nullptr) : json("")},
          {"fuse_unk", byte_fallback},
          {"byte_fallback", byte_fallback},
          {"ignore_merges", false},
          {"vocab", std::move(vocab)},
          {"merges", std::move(merges)}};
}

json replace_decoder() {
  return {{"type", "Replace"}, {"pattern", {{"String", "\u2581"}}}, {"content", " "}};
}
}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::from_gguf(const gguf::GgufFile& file) {
  GgufVocab vocab = read_vocab(file);
  const bool byte_level = vocab.model == "gpt2";
  const bool sentencepiece = vocab.model == "llama";
  if (!byte_level && !sentencepiece)
    fail("{}: tokenizer.ggml.model '{}' is not supported (nibble reads 'gpt2' and 'llama')",
         vocab.source, vocab.model);
  const bool gemma =
      sentencepiece && (vocab.architecture == "gemma" || vocab.architecture == "gemma2" ||
                        vocab.architecture == "gemma3");
  const bool phi3 = sentencepiece && vocab.architecture == "phi3";

  // Vocabulary spelling: byte-level files sometimes store a token in plain UTF-8; transformers
  // respells those in the byte alphabet. Gemma stores runs of spaces as spaces.
  std::vector<std::string> names = vocab.tokens;
  for (auto& name : names) {
    if (byte_level && !byte_level::in_alphabet(name)) name = byte_level::encode(name);
    if (gemma && name.find(' ') != std::string::npos &&
        name.find_first_not_of(' ') == std::string::npos) {
      std::string respelled;
      for (size_t i = 0; i < name.size(); ++i) respelled += "\u2581";
      name = respelled;
    }
  }
  std::unordered_map<std::string, int32_t> index;
  json vocab_json = json::object();
  for (size_t i = 0; i < names.size(); ++i) index[names[i]] = static_cast<int32_t>(i);
  for (size_t i = 0; i < names.size(); ++i)
    if (index[names[i]] == static_cast<int32_t>(i)) vocab_json[names[i]] = i;

  json merges;
  if (vocab.merges) {
    merges = merges_from_file(vocab);
  } else if (gemma) {
    std::vector<double> positions(names.size());
    for (size_t i = 0; i < names.size(); ++i) positions[i] = -static_cast<double>(i);
    merges = merges_from_vocab(names, index, &positions);
  } else if (sentencepiece) {
    if (vocab.scores.empty())
      fail("{}: a 'llama' tokenizer needs tokenizer.ggml.scores or tokenizer.ggml.merges",
           vocab.source);
    merges = merges_from_vocab(names, index, &vocab.scores);
  } else {
    merges = merges_from_vocab(names, index, nullptr);
  }

  // Added tokens: control tokens are special, user-defined ones plain; the bos/eos/unk/pad the
  // file names are special too.
  std::map<int32_t, json> added;
  auto add = [&](const std::string& content, bool special) {
    auto it = index.find(content);
    if (it == index.end() || added.count(it->second)) return;
    added[it->second] = added_token(it->second, content, special);
  };
  for (size_t i = 0; i < vocab.token_types.size(); ++i) {
    const auto& token = vocab.tokens[i];
    if (vocab.token_types[i] == kTokenTypeControl &&
        (!byte_level || byte_level::in_alphabet(token)))
      add(token, true);
  }
  for (auto id : {vocab.bos, vocab.eos, vocab.unk, vocab.pad})
    if (id) add(vocab.tokens[static_cast<size_t>(*id)], true);
  for (size_t i = 0; i < vocab.token_types.size(); ++i)
    if (vocab.token_types[i] == kTokenTypeUserDefined) add(vocab.tokens[i], false);
  json added_json = json::array();
  for (auto& [id, token] : added) added_json.push_back(std::move(token));

  bool add_bos = vocab.add_bos.value_or(sentencepiece);
  bool add_eos = vocab.add_eos.value_or(false);

  json spec = {{"version", "1.0"},
               {"truncation", nullptr},
               {"padding", nullptr},
               {"added_tokens", added_json},
               {"normalizer", nullptr}};
  if (byte_level) {
    const char* split = split_regex_for(vocab.pre);
    if (split) {
      spec["pre_tokenizer"] = {{"type", "Sequence"},
                               {"pretokenizers", json::array({{{"type", "Split"},
                                                               {"pattern", {{"Regex", split}}},
                                                               {"behavior", "Isolated"},
                                                               {"invert", false}},
                                                              {{"type", "ByteLevel"},
                                                               {"add_prefix_space", false},
                                                               {"trim_offsets", true},
                                                               {"use_regex", false}}})}};
    } else {
      spec["pre_tokenizer"] = {{"type", "ByteLevel"},
                               {"add_prefix_space", false},
                               {"trim_offsets", true},
                               {"use_regex", true}};
    }
    spec["post_processor"] = special_template(vocab, names, add_bos, add_eos);
    spec["decoder"] = {{"type", "ByteLevel"},
                       {"add_prefix_space", true},
                       {"trim_offsets", true},
                       {"use_regex", true}};
    spec["model"] = bpe_model(std::move(vocab_json), std::move(merges), false, std::nullopt);
  } else if (gemma) {
    spec["normalizer"] = {
        {"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\u2581"}};
    spec["pre_tokenizer"] = {{"type", "Split"},
                             {"pattern", {{"String", " "}}},
                             {"behavior", "MergedWithPrevious"},
                             {"invert", false}};
    spec["post_processor"] = special_template(vocab, names, add_bos, add_eos);
    spec["decoder"] = {
        {"type", "Sequence"},
        {"decoders",
         json::array({replace_decoder(), {{"type", "ByteFallback"}}, {{"type", "Fuse"}}})}};
    std::optional<std::string> unk;
    if (index.count("<unk>")) unk = "<unk>";
    spec["model"] = bpe_model(std::move(vocab_json), std::move(merges), true, unk);
  } else {
    if (phi3) {
      spec["normalizer"] = {
          {"type", "Sequence"},
          {"normalizers",
           json::array(
               {{{"type", "Prepend"}, {"prepend", "\u2581"}},
                {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\u2581"}}})}};
      spec["pre_tokenizer"] = nullptr;
    } else {
      spec["pre_tokenizer"] = {{"type", "Metaspace"},
                               {"replacement", "\u2581"},
                               {"prepend_scheme", "first"},
                               {"split", false}};
    }
    spec["post_processor"] = special_template(vocab, names, add_bos, add_eos);
    spec["decoder"] = {
        {"type", "Sequence"},
        {"decoders",
         json::array({replace_decoder(),
                      {{"type", "ByteFallback"}},
                      {{"type", "Fuse"}},
                      {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}})}};
    spec["model"] = bpe_model(std::move(vocab_json), std::move(merges), true, std::nullopt);
  }

  json config = json::object();
  auto name_of = [&](std::optional<int32_t> id) {
    return id ? json(names[static_cast<size_t>(*id)]) : json(nullptr);
  };
  config["bos_token"] = name_of(vocab.bos);
  config["eos_token"] = name_of(vocab.eos);
  config["unk_token"] = name_of(vocab.unk);
  config["pad_token"] = name_of(vocab.pad);
  config["add_bos_token"] = add_bos;
  config["add_eos_token"] = add_eos;
  return std::make_unique<HfTokenizer>(std::move(spec), vocab.source, std::move(config));
}

}  // namespace nibble

namespace nibble {

std::optional<std::string> gguf_pre_tokenizer_name(const nlohmann::json& tokenizer_json) {
  const json& pre =
      tokenizer_json.contains("pre_tokenizer") ? tokenizer_json["pre_tokenizer"] : json();
  if (!pre.is_object()) return std::nullopt;
  const std::string type = pre.value("type", "");
  // GPT-2's own split is the ByteLevel pre-tokenizer with use_regex.
  if (type == "ByteLevel" && pre.value("use_regex", true)) return std::string("gpt-2");
  if (type != "Sequence" || !pre.contains("pretokenizers")) return std::nullopt;
  const json& steps = pre["pretokenizers"];
  if (!steps.is_array() || steps.size() != 2 || !steps[0].is_object() || !steps[1].is_object() ||
      steps[0].value("type", "") != "Split" || steps[1].value("type", "") != "ByteLevel")
    return std::nullopt;
  const json& pattern = steps[0].contains("pattern") ? steps[0]["pattern"] : json();
  if (!pattern.is_object() || !pattern.contains("Regex") || !pattern["Regex"].is_string())
    return std::nullopt;
  const std::string regex = pattern["Regex"].get<std::string>();
  // The canonical llama.cpp name of each distinct split.
  for (const char* name : {"llama-bpe", "qwen2", "qwen35", "tekken", "gpt-4o"}) {
    if (regex == split_regex_for(name)) return std::string(name);
  }
  return std::nullopt;
}

}  // namespace nibble
