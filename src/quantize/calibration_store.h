#pragma once
// --save-calibration / --load-calibration: the statistics of every linear group of every layer
// (Hessian sums, |x| sums and maxima, kept input rows), one safetensors file per layer in a
// directory, so another scheme or format can be exported without running the model again.
// The statistics are those of the run that saved them (true-sequential: a layer's inputs came
// from the layers quantized before it by that run's method).
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>

#include "quantize/decoder_layer.h"
#include "quantize/input_statistics.h"

namespace nibble::quantize {

using LayerStatistics = std::map<InputGroup, std::unique_ptr<InputStatistics>>;

void save_layer_statistics(const std::filesystem::path& dir, int64_t layer,
                           const LayerStatistics& stats);
// Errors name the file when it is missing or its tensors do not fit `dims`.
LayerStatistics load_layer_statistics(const std::filesystem::path& dir, int64_t layer,
                                      const LayerDims& dims);

}  // namespace nibble::quantize
