#pragma once
// Internal to backend/cpu/quant: builds a PackedQuantWeight row by row from per-element codes
// and per-group f32 parameters, then picks f16 storage for the parameters when it is exact.
#include <cstdint>
#include <functional>
#include <optional>

#include "backend/cpu/quant/packed_weight.h"
#include "quant/scheme.h"

namespace nibble::cpu {

// Fills one row: codes[k_padded] (a nibble for 4-bit kinds, a byte otherwise; padding is
// pre-zeroed), scales[n_groups] and mins[n_groups] (pre-zeroed; ignored without mins).
using PackRowFn = std::function<void(int64_t row, uint8_t* codes, float* scales, float* mins)>;

PackedQuantWeight build_packed_weight(QuantCodes kind, int64_t rows, int64_t cols,
                                      int64_t group_size, bool has_mins, const PackRowFn& fill_row);

// GGUF block types that map exactly onto the kernels' layout; nullopt for the others.
std::optional<PackedQuantWeight> pack_gguf_weight(const quant::QuantizedTensor& t);

}  // namespace nibble::cpu
