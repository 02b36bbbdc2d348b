#pragma once
// Paged KV cache: fixed-size blocks of `block_size` token slots; a sequence owns a list of
// blocks (its block table) and its token at position p lives in block table[p / block_size],
// slot p % block_size. K and V are laid out [layer][block][kv_head][slot][head_dim] so that the
// keys of one head within one block are contiguous for the attention kernel.
//
// Elements are f32, bf16 or fp8 (--kv-cache-dtype). An fp8 cache stores fp8(x / scale) with one
// k and one v scale per layer (from the checkpoint or --quantization-param-path; 1.0 otherwise)
// and reads code * scale, as SGLang's fp8 KV cache does.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace nibble {

enum class KvDType : uint8_t { F32, BF16, Fp8E4M3, Fp8E5M2 };

// "auto" (f32 on the CPU), "float32", "bf16"/"bfloat16", "fp8_e4m3", "fp8_e5m2"; an Error
// names --kv-cache-dtype and the choices otherwise.
KvDType parse_kv_cache_dtype(const std::string& name);
const char* kv_dtype_name(KvDType dtype);
int64_t kv_dtype_bytes(KvDType dtype);

class KvCache {
 public:
  KvCache(int64_t n_layers, int64_t n_kv_heads, int64_t head_dim, int64_t block_size,
          int64_t n_blocks, KvDType dtype = KvDType::F32);

  KvDType dtype() const { return dtype_; }
  // Per-layer scales of an fp8 cache (stored = fp8(x / scale)); must be finite and positive.
  void set_scales(int64_t layer, float k_scale, float v_scale);
  float k_scale(int64_t layer) const { return k_scales_[size_t(layer)]; }
  float v_scale(int64_t layer) const { return v_scales_[size_t(layer)]; }

  // Writes one head's key and value (head_dim f32 each) at `element_offset` (block *
  // block_stride() + slot * head_dim()), converting to the cache's dtype.
  void store(int64_t layer, int64_t kv_head, int64_t element_offset, const float* key,
             const float* value);
  // Reads `count` consecutive slots of one head and block as f32 into key/value rows.
  void load(int64_t layer, int64_t kv_head, int64_t element_offset, int64_t count, float* key,
            float* value) const;

  int64_t n_layers() const { return n_layers_; }
  int64_t n_kv_heads() const { return n_kv_heads_; }
  int64_t head_dim() const { return head_dim_; }
  int64_t block_size() const { return block_size_; }
  int64_t n_blocks() const { return n_blocks_; }
  int64_t free_blocks() const { return int64_t(free_list_.size()); }
  size_t nbytes() const { return size_t(2 * n_layers_ * layer_stride_ * kv_dtype_bytes(dtype_)); }

  // nullopt when every block is in use.
  std::optional<int32_t> allocate_block();
  // Throws nibble::Error for an out-of-range or already free block.
  void free_block(int32_t block);

  // Elements between the same (kv_head, slot) of consecutive blocks.
  int64_t block_stride() const { return n_kv_heads_ * block_size_ * head_dim_; }
  // Start of (layer, block 0, kv_head, slot 0) of an f32 cache; add block * block_stride() +
  // slot * head_dim(). Other dtypes go through store()/load().
  float* keys(int64_t layer, int64_t kv_head) { return f32(key_data_) + offset(layer, kv_head); }
  float* values(int64_t layer, int64_t kv_head) {
    return f32(value_data_) + offset(layer, kv_head);
  }
  const float* keys(int64_t layer, int64_t kv_head) const {
    return f32(key_data_) + offset(layer, kv_head);
  }
  const float* values(int64_t layer, int64_t kv_head) const {
    return f32(value_data_) + offset(layer, kv_head);
  }

 private:
  struct AlignedFree {
    void operator()(uint8_t* p) const;
  };
  using Storage = std::unique_ptr<uint8_t, AlignedFree>;
  float* f32(const Storage& s) const { return reinterpret_cast<float*>(s.get()); }
  int64_t offset(int64_t layer, int64_t kv_head) const {
    return layer * layer_stride_ + kv_head * block_size_ * head_dim_;
  }

  int64_t n_layers_, n_kv_heads_, head_dim_, block_size_, n_blocks_;
  int64_t layer_stride_;
  KvDType dtype_;
  Storage key_data_;
  Storage value_data_;
  std::vector<float> k_scales_, v_scales_;
  std::vector<int32_t> free_list_;
  std::vector<bool> in_use_;
};

}  // namespace nibble
