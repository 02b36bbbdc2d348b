#pragma once
// Calibration token samples for offline quantization. Inputs:
//  - .jsonl: one JSON object per line; the text is "passage", "text" or (the BoolQ export in
//    shared data) "query" with its leading "Passage: " dropped; a "messages" array (chat) is
//    rendered through the model's chat template;
//  - .json: an array of token-id arrays, used as given (models without a tokenizer);
//  - any other file: plain text, split into documents at blank lines.
// Documents are shuffled with the seed, tokenized, joined and cut into `nsamples` windows of
// `seqlen` tokens (GPTQ's recipe). wikitext-2 test text is refused: it is the evaluation set.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace nibble {
struct ModelSource;
}

namespace nibble::quantize {

struct CalibrationOptions {
  std::filesystem::path path;  // empty: default_calibration_path()
  int64_t nsamples = 128;
  int64_t seqlen = 512;
  uint64_t seed = 0;
};

// The BoolQ passages of the shared data: $NIBBLE_SHARED_DATA/text/boolq.jsonl, else
// ../shared/data/text/boolq.jsonl seen from the working directory or from the executable's
// folder and its parents. Error when none exists, saying to pass --calib.
std::filesystem::path default_calibration_path();

// nsamples × seqlen token ids (fewer samples, with a warning on stderr, when the file holds
// fewer tokens; Error when it cannot fill one).
std::vector<std::vector<int32_t>> load_calibration_samples(const ModelSource& source,
                                                           const CalibrationOptions& options);

}  // namespace nibble::quantize
