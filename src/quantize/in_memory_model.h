#pragma once
// The quantized model as nibble runs it straight from the pipeline's results, without a round
// trip through files: the source's dense tensors (with the pipeline's overrides) and, for each
// fused projection, the stacked QuantizedTensors — the same objects the loaders produce from
// the export, so the two give the same logits.
#include <memory>

#include "model/model.h"
#include "quantize/pipeline.h"

namespace nibble {
struct ModelSource;
}

namespace nibble::quantize {

std::unique_ptr<Model> build_in_memory_model(const ModelSource& source, const QuantizedModel& model,
                                             ComputeType compute);

}  // namespace nibble::quantize
