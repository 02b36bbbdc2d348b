// `nibble tokenize` / `nibble detokenize`: developer commands that expose the tokenizer, used by
// the parity tests against `tokenizers` / transformers.
#include <climits>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "command.h"
#include "core/error.h"
#include "tokenizer/incremental_detokenizer.h"
#include "tokenizer/tokenizer.h"

namespace nibble::cli {
namespace {

std::string read_file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("--file {}: cannot open", path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

std::string ids_json(const std::vector<int32_t>& ids) { return nlohmann::json(ids).dump(); }

std::vector<int32_t> parse_ids(const std::string& text) {
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t comma = text.find(',', pos);
    if (comma == std::string::npos) comma = text.size();
    std::string item = text.substr(pos, comma - pos);
    size_t used = 0;
    long long value = 0;
    try {
      value = std::stoll(item, &used);
    } catch (const std::exception&) {
      fail("--ids: '{}' is not an integer", item);
    }
    if (used != item.size() || value < INT32_MIN || value > INT32_MAX)
      fail("--ids: '{}' is not a 32-bit integer", item);
    ids.push_back(static_cast<int32_t>(value));
    pos = comma + 1;
  }
  return ids;
}

std::function<int()> setup_tokenize(CLI::App& app) {
  app.description("Text to token ids (JSON array). Invalid UTF-8 is replaced by U+FFFD first.");
  auto model_path = std::make_shared<std::string>();
  auto text = std::make_shared<std::string>();
  auto file = std::make_shared<std::string>();
  auto no_special = std::make_shared<bool>(false);
  auto lines = std::make_shared<bool>(false);
  auto json_lines = std::make_shared<bool>(false);
  auto export_dir = std::make_shared<std::string>();
  app.add_option("--model-path", *model_path, "GGUF file, HF directory or tokenizer.json")
      ->required();
  auto* text_option = app.add_option("--text", *text, "text to tokenize");
  auto* file_option = app.add_option("--file", *file, "file whose bytes are tokenized");
  text_option->excludes(file_option);
  app.add_flag("--no-special", *no_special, "do not add the post-processor's special tokens");
  app.add_flag("--lines", *lines,
               "tokenize each line separately (split at \\n; a \\r before it is kept); one JSON "
               "array per line");
  app.add_flag("--json-lines", *json_lines,
               "with --file: each line is a JSON string to tokenize (for text with newlines)");
  app.add_option("--export-hf", *export_dir,
                 "write the tokenizer as tokenizer.json + tokenizer_config.json into this "
                 "directory");
  return [=, &app]() {
    auto tokenizer = Tokenizer::from_path(*model_path);
    if (!export_dir->empty()) {
      std::filesystem::create_directories(*export_dir);
      std::ofstream(std::filesystem::path(*export_dir) / "tokenizer.json")
          << tokenizer->to_hf_json().dump(2);
      std::ofstream(std::filesystem::path(*export_dir) / "tokenizer_config.json")
          << tokenizer->to_hf_tokenizer_config().dump(2);
      if (app.count("--text") == 0 && app.count("--file") == 0) return 0;
    }
    if (app.count("--text") == 0 && app.count("--file") == 0)
      fail("tokenize: give --text or --file");
    std::string input = app.count("--file") ? read_file_bytes(*file) : *text;
    bool add_special = !*no_special;
    if (*json_lines) {
      std::istringstream in(input);
      std::string line;
      size_t number = 0;
      while (std::getline(in, line)) {
        ++number;
        if (line.empty()) continue;
        auto parsed = nlohmann::json::parse(line, nullptr, false);
        if (parsed.is_discarded() || !parsed.is_string())
          fail("--file {}: line {} is not a JSON string", *file, number);
        std::printf("%s\n",
                    ids_json(tokenizer->encode(parsed.get<std::string>(), add_special)).c_str());
      }
      return 0;
    }
    if (!*lines) {
      std::printf("%s\n", ids_json(tokenizer->encode(input, add_special)).c_str());
      return 0;
    }
    size_t pos = 0;
    while (pos < input.size()) {
      size_t newline = input.find('\n', pos);
      size_t end = newline == std::string::npos ? input.size() : newline;
      std::string out =
          ids_json(tokenizer->encode(std::string_view(input).substr(pos, end - pos), add_special));
      std::fwrite(out.data(), 1, out.size(), stdout);
      std::fputc('\n', stdout);
      pos = end + 1;
    }
    return 0;
  };
}

std::function<int()> setup_detokenize(CLI::App& app) {
  app.description("Token ids to text, as `tokenizers` decode returns it.");
  auto model_path = std::make_shared<std::string>();
  auto ids_text = std::make_shared<std::string>();
  auto skip_special = std::make_shared<bool>(false);
  auto stream = std::make_shared<bool>(false);
  auto ids_file = std::make_shared<std::string>();
  app.add_option("--model-path", *model_path, "GGUF file, HF directory or tokenizer.json")
      ->required();
  auto* ids_option = app.add_option("--ids", *ids_text, "comma-separated token ids");
  app.add_option("--ids-file", *ids_file,
                 "a file with one JSON array of ids per line; prints one JSON line per input "
                 "line: [decoded text, text streamed by the incremental detokenizer]")
      ->excludes(ids_option);
  app.add_flag("--skip-special", *skip_special, "leave special tokens out");
  app.add_flag("--stream", *stream,
               "decode one id at a time with the incremental detokenizer; print the JSON array "
               "of the text pieces it returns");
  return [=, &app]() {
    auto tokenizer = Tokenizer::from_path(*model_path);
    if (app.count("--ids-file")) {
      std::istringstream in(read_file_bytes(*ids_file));
      std::string line;
      size_t number = 0;
      while (std::getline(in, line)) {
        ++number;
        if (line.empty()) continue;
        auto parsed = nlohmann::json::parse(line, nullptr, false);
        if (parsed.is_discarded() || !parsed.is_array())
          fail("--ids-file {}: line {} is not a JSON array", *ids_file, number);
        std::vector<int32_t> ids;
        for (const auto& id : parsed) {
          if (!id.is_number_integer())
            fail("--ids-file {}: line {}: ids must be integers", *ids_file, number);
          ids.push_back(id.get<int32_t>());
        }
        IncrementalDetokenizer detokenizer(*tokenizer, *skip_special);
        std::string streamed;
        for (int32_t id : ids) streamed += detokenizer.push(id);
        streamed += detokenizer.finish();
        nlohmann::json out = {tokenizer->decode_text(ids, *skip_special), streamed};
        std::printf("%s\n", out.dump().c_str());
      }
      return 0;
    }
    if (app.count("--ids") == 0) fail("detokenize: give --ids or --ids-file");
    auto ids = parse_ids(*ids_text);
    if (*stream) {
      IncrementalDetokenizer detokenizer(*tokenizer, *skip_special);
      nlohmann::json pieces = nlohmann::json::array();
      for (int32_t id : ids) pieces.push_back(detokenizer.push(id));
      pieces.push_back(detokenizer.finish());
      std::printf("%s\n", pieces.dump().c_str());
      return 0;
    }
    std::string text = tokenizer->decode_text(ids, *skip_special);
    std::fwrite(text.data(), 1, text.size(), stdout);
    return 0;
  };
}

}  // namespace

NIBBLE_COMMAND(tokenize, setup_tokenize);
NIBBLE_COMMAND(detokenize, setup_detokenize);

}  // namespace nibble::cli
