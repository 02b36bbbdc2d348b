#pragma once
// LLM Compressor recipes in YAML, read into the same Recipe as the JSON recipes:
//
//   quant_stage:
//     quant_modifiers:
//       GPTQModifier:            # or QuantizationModifier (RTN), AWQModifier
//         targets: ["Linear"]
//         scheme: W4A16          # a preset name
//         ignore: ["lm_head"]
//       SmoothQuantModifier:     # optional, before GPTQ/RTN: smoothquant(+gptq)
//         smoothing_strength: 0.8
//
// GPTQModifier also takes dampening_frac, block_size, actorder (sequential_update and
// offload_hessians are accepted: nibble always works layer by layer). Any other key, a target
// other than Linear or a scheme given as config_groups is an Error naming the key.
#include <filesystem>

#include "quantize/recipe.h"

namespace nibble::quantize {

// Fills `recipe` (scheme, method, ignore, GPTQ options, SmoothQuant strength) from the file.
void read_llm_compressor_recipe(const std::filesystem::path& path, Recipe& recipe);

}  // namespace nibble::quantize
