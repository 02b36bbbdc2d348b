#pragma once
// Per-layer scales of an fp8 KV cache (stored = fp8(x / scale), read = code * scale), from the
// two places SGLang takes them: the checkpoint's attention tensors, or the JSON file given by
// --quantization-param-path.
#include <filesystem>
#include <utility>
#include <vector>

#include "formats/checkpoint.h"
#include "runtime/kv_cache.h"

namespace nibble {

using KvScales = std::vector<std::pair<float, float>>;  // (k_scale, v_scale) per layer

// Tensors on each attention module, in the spellings of the exporters:
// `self_attn.k_scale`/`v_scale` (compressed-tensors; per-head [H_kv, 1, 1] scales are reduced to
// their max, which never overflows the fp8 range), `self_attn.kv_scale` (deprecated, both),
// `self_attn.k_proj.k_scale`/`v_proj.v_scale` (ModelOpt) and `k_proj.output_scale`/
// `v_proj.output_scale` (AutoFP8). Empty when the checkpoint has none; an Error when only some
// layers have them.
KvScales checkpoint_kv_scales(const Checkpoint& checkpoint, int64_t n_layers);

// {"kv_cache": {"dtype": "float8_e4m3fn", "scaling_factor": {"0": {"<layer>": s, ...}}}}: one
// scale per layer for both K and V, under tensor-parallel rank "0". Errors name the file and
// the missing or malformed field.
KvScales read_kv_scales_json(const std::filesystem::path& path, int64_t n_layers);

// What a KV cache is made of: its element type and, for fp8, the per-layer scales.
struct KvCacheSpec {
  KvDType dtype = KvDType::F32;
  KvScales scales;  // empty: 1.0 everywhere
  void apply(KvCache& cache) const;
};

// --kv-cache-dtype and --quantization-param-path for a model: an fp8 cache takes its scales from
// the file, else from the checkpoint (`raw` holds the tensors as stored), else 1.0 with a
// warning (as SGLang does). A scales file without an fp8 cache is an Error.
KvCacheSpec resolve_kv_cache(const std::string& kv_cache_dtype, const std::string& param_path,
                             const Checkpoint* raw, int64_t n_layers);

}  // namespace nibble
