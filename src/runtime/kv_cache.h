#pragma once
// Paged KV cache: fixed-size blocks of `block_size` token slots; a sequence owns a list of
// blocks (its block table) and its token at position p lives in block table[p / block_size],
// slot p % block_size. K and V are stored in f32, laid out [layer][block][kv_head][slot][head_dim]
// so that the keys of one head within one block are contiguous for the attention kernel.
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

namespace nibble {

class KvCache {
 public:
  KvCache(int64_t n_layers, int64_t n_kv_heads, int64_t head_dim, int64_t block_size,
          int64_t n_blocks);

  int64_t n_layers() const { return n_layers_; }
  int64_t n_kv_heads() const { return n_kv_heads_; }
  int64_t head_dim() const { return head_dim_; }
  int64_t block_size() const { return block_size_; }
  int64_t n_blocks() const { return n_blocks_; }
  int64_t free_blocks() const { return int64_t(free_list_.size()); }
  size_t nbytes() const { return size_t(2 * n_layers_ * layer_stride_) * sizeof(float); }

  // nullopt when every block is in use.
  std::optional<int32_t> allocate_block();
  // Throws nibble::Error for an out-of-range or already free block.
  void free_block(int32_t block);

  // Elements between the same (kv_head, slot) of consecutive blocks.
  int64_t block_stride() const { return n_kv_heads_ * block_size_ * head_dim_; }
  // Start of (layer, block 0, kv_head, slot 0); add block * block_stride() + slot * head_dim().
  float* keys(int64_t layer, int64_t kv_head) { return key_data_.get() + offset(layer, kv_head); }
  float* values(int64_t layer, int64_t kv_head) {
    return value_data_.get() + offset(layer, kv_head);
  }
  const float* keys(int64_t layer, int64_t kv_head) const {
    return key_data_.get() + offset(layer, kv_head);
  }
  const float* values(int64_t layer, int64_t kv_head) const {
    return value_data_.get() + offset(layer, kv_head);
  }

 private:
  struct AlignedFree {
    void operator()(float* p) const;
  };
  int64_t offset(int64_t layer, int64_t kv_head) const {
    return layer * layer_stride_ + kv_head * block_size_ * head_dim_;
  }

  int64_t n_layers_, n_kv_heads_, head_dim_, block_size_, n_blocks_;
  int64_t layer_stride_;
  std::unique_ptr<float, AlignedFree> key_data_;
  std::unique_ptr<float, AlignedFree> value_data_;
  std::vector<int32_t> free_list_;
  std::vector<bool> in_use_;
};

}  // namespace nibble
