#include "eval/eval_inputs.h"

#include <cstdlib>

#include "core/error.h"
#include "eval/bz2_file.h"
#include "tokenizer/tokenizer.h"

namespace nibble::eval {

std::filesystem::path resolve_data_dir(const std::string& flag) {
  if (!flag.empty()) return flag;
  if (const char* env = std::getenv("NIBBLE_DATA"); env != nullptr && *env != '\0') return env;
  fail(
      "no evaluation data folder: pass --data-dir or set $NIBBLE_DATA (the folder with "
      "text/wikitext-2-raw-test.txt and eval/*.jsonl)");
}

std::filesystem::path resolve_text_file(const std::string& file_flag,
                                        const std::string& data_dir_flag) {
  if (!file_flag.empty()) return file_flag;
  return resolve_data_dir(data_dir_flag) / "text" / "wikitext-2-raw-test.txt";
}

std::vector<int32_t> tokenize_file(const Tokenizer& tokenizer, const std::filesystem::path& path,
                                   bool add_special_tokens) {
  NIBBLE_CHECK(std::filesystem::exists(path), "{}: not found", path.string());
  const std::string text = read_text_file(path);
  NIBBLE_CHECK(!text.empty(), "{}: empty file", path.string());
  return tokenizer.encode(text, add_special_tokens);
}

}  // namespace nibble::eval
