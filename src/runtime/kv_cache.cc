#include "runtime/kv_cache.h"

#include <array>
#include <cmath>
#include <cstring>
#include <new>

#include "core/error.h"
#include "core/numeric.h"
#include "quant/reference/fp8.h"

namespace nibble {
namespace {
uint8_t* allocate_bytes(int64_t count) {
  // Not value-initialised: pages are only committed when a block is first written.
  return new (std::align_val_t(64)) uint8_t[size_t(count)];
}

// e5m2 is the top byte of an f16: round the f16 to 2 mantissa bits, nearest-even, saturating
// at ±57344 (the largest finite e5m2) rather than overflowing to infinity.
uint8_t f32_to_fp8_e5m2(float x) {
  const float clamped = std::fmax(-57344.0f, std::fmin(57344.0f, x));
  const uint16_t h = f32_to_f16(clamped);
  if ((h & 0x7C00) == 0x7C00) return uint8_t(h >> 8);  // NaN stays NaN
  const uint16_t rounded = uint16_t(h + 0x7F + ((h >> 8) & 1));
  return uint8_t(rounded >> 8);
}
}  // namespace

KvDType parse_kv_cache_dtype(const std::string& name) {
  if (name == "auto" || name == "float32" || name == "f32") return KvDType::F32;
  if (name == "bf16" || name == "bfloat16") return KvDType::BF16;
  if (name == "fp8_e4m3" || name == "fp8") return KvDType::Fp8E4M3;
  if (name == "fp8_e5m2") return KvDType::Fp8E5M2;
  fail("--kv-cache-dtype: unknown value '{}' (expected auto, float32, bf16, fp8_e4m3 or fp8_e5m2)",
       name);
}

const char* kv_dtype_name(KvDType dtype) {
  switch (dtype) {
    case KvDType::F32: return "float32";
    case KvDType::BF16: return "bf16";
    case KvDType::Fp8E4M3: return "fp8_e4m3";
    case KvDType::Fp8E5M2: return "fp8_e5m2";
  }
  return "?";
}

int64_t kv_dtype_bytes(KvDType dtype) {
  switch (dtype) {
    case KvDType::F32: return 4;
    case KvDType::BF16: return 2;
    case KvDType::Fp8E4M3:
    case KvDType::Fp8E5M2: return 1;
  }
  return 4;
}

void KvCache::AlignedFree::operator()(uint8_t* p) const {
  ::operator delete[](p, std::align_val_t(64));
}

KvCache::KvCache(int64_t n_layers, int64_t n_kv_heads, int64_t head_dim, int64_t block_size,
                 int64_t n_blocks, KvDType dtype)
    : n_layers_(n_layers),
      n_kv_heads_(n_kv_heads),
      head_dim_(head_dim),
      block_size_(block_size),
      n_blocks_(n_blocks),
      layer_stride_(0),
      dtype_(dtype) {
  NIBBLE_CHECK(n_layers > 0 && n_kv_heads > 0 && head_dim > 0 && block_size > 0 && n_blocks > 0,
               "KvCache: layers={} kv_heads={} head_dim={} block_size={} n_blocks={} must all be "
               "positive",
               n_layers, n_kv_heads, head_dim, block_size, n_blocks);
  NIBBLE_CHECK(n_blocks <= INT32_MAX, "KvCache: n_blocks={} exceeds the int32 block id range",
               n_blocks);
  layer_stride_ = n_blocks * block_stride();
  key_data_.reset(allocate_bytes(n_layers * layer_stride_ * kv_dtype_bytes(dtype)));
  value_data_.reset(allocate_bytes(n_layers * layer_stride_ * kv_dtype_bytes(dtype)));
  k_scales_.assign(size_t(n_layers), 1.0f);
  v_scales_.assign(size_t(n_layers), 1.0f);
  // Handed out lowest id first.
  free_list_.reserve(size_t(n_blocks));
  for (int64_t b = n_blocks - 1; b >= 0; --b) free_list_.push_back(int32_t(b));
  in_use_.assign(size_t(n_blocks), false);
}

void KvCache::set_scales(int64_t layer, float k_scale, float v_scale) {
  NIBBLE_CHECK(layer >= 0 && layer < n_layers_, "KV cache scales: layer {} outside [0, {})", layer,
               n_layers_);
  NIBBLE_CHECK(std::isfinite(k_scale) && k_scale > 0 && std::isfinite(v_scale) && v_scale > 0,
               "KV cache scales of layer {}: k_scale={} v_scale={} must be finite and positive",
               layer, k_scale, v_scale);
  k_scales_[size_t(layer)] = k_scale;
  v_scales_[size_t(layer)] = v_scale;
}

namespace {

void encode(KvDType dtype, const float* x, int64_t n, float inv_scale, uint8_t* out) {
  switch (dtype) {
    case KvDType::F32: std::memcpy(out, x, size_t(n) * sizeof(float)); return;
    case KvDType::BF16: {
      auto* o = reinterpret_cast<uint16_t*>(out);
      for (int64_t i = 0; i < n; ++i) o[i] = f32_to_bf16(x[i]);
      return;
    }
    case KvDType::Fp8E4M3:
      for (int64_t i = 0; i < n; ++i) out[i] = quant::f32_to_fp8_e4m3(x[i] * inv_scale);
      return;
    case KvDType::Fp8E5M2:
      for (int64_t i = 0; i < n; ++i) out[i] = f32_to_fp8_e5m2(x[i] * inv_scale);
      return;
  }
}

void decode(KvDType dtype, const uint8_t* in, int64_t n, float scale, float* out) {
  switch (dtype) {
    case KvDType::F32: std::memcpy(out, in, size_t(n) * sizeof(float)); return;
    case KvDType::BF16: {
      const auto* h = reinterpret_cast<const uint16_t*>(in);
      for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_f32(h[i]);
      return;
    }
    case KvDType::Fp8E4M3: {
      // 256-entry table: one load per element instead of bit surgery.
      static const auto table = [] {
        std::array<float, 256> t{};
        for (int c = 0; c < 256; ++c) t[size_t(c)] = fp8_e4m3_to_f32(uint8_t(c));
        return t;
      }();
      for (int64_t i = 0; i < n; ++i) out[i] = table[in[i]] * scale;
      return;
    }
    case KvDType::Fp8E5M2:
      for (int64_t i = 0; i < n; ++i) out[i] = fp8_e5m2_to_f32(in[i]) * scale;
      return;
  }
}

}  // namespace

void KvCache::store(int64_t layer, int64_t kv_head, int64_t element_offset, const float* key,
                    const float* value) {
  const int64_t bytes = kv_dtype_bytes(dtype_);
  const int64_t at = (offset(layer, kv_head) + element_offset) * bytes;
  encode(dtype_, key, head_dim_, 1.0f / k_scales_[size_t(layer)], key_data_.get() + at);
  encode(dtype_, value, head_dim_, 1.0f / v_scales_[size_t(layer)], value_data_.get() + at);
}

void KvCache::load(int64_t layer, int64_t kv_head, int64_t element_offset, int64_t count,
                   float* key, float* value) const {
  const int64_t bytes = kv_dtype_bytes(dtype_);
  const int64_t at = (offset(layer, kv_head) + element_offset) * bytes;
  decode(dtype_, key_data_.get() + at, count * head_dim_, k_scales_[size_t(layer)], key);
  decode(dtype_, value_data_.get() + at, count * head_dim_, v_scales_[size_t(layer)], value);
}

std::optional<int32_t> KvCache::allocate_block() {
  if (free_list_.empty()) return std::nullopt;
  const int32_t block = free_list_.back();
  free_list_.pop_back();
  in_use_[size_t(block)] = true;
  return block;
}

void KvCache::free_block(int32_t block) {
  NIBBLE_CHECK(block >= 0 && block < n_blocks_,
               "KvCache::free_block: block {} out of range [0, {})", block, n_blocks_);
  NIBBLE_CHECK(in_use_[size_t(block)], "KvCache::free_block: block {} is already free", block);
  in_use_[size_t(block)] = false;
  free_list_.push_back(block);
}

}  // namespace nibble
