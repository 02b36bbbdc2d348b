#include "runtime/kv_cache.h"

#include <new>

#include "core/error.h"

namespace nibble {
namespace {
float* allocate_floats(int64_t count) {
  // Not value-initialised: pages are only committed when a block is first written.
  return new (std::align_val_t(64)) float[size_t(count)];
}
}  // namespace

void KvCache::AlignedFree::operator()(float* p) const {
  ::operator delete[](p, std::align_val_t(64));
}

KvCache::KvCache(int64_t n_layers, int64_t n_kv_heads, int64_t head_dim, int64_t block_size,
                 int64_t n_blocks)
    : n_layers_(n_layers),
      n_kv_heads_(n_kv_heads),
      head_dim_(head_dim),
      block_size_(block_size),
      n_blocks_(n_blocks),
      layer_stride_(0) {
  NIBBLE_CHECK(n_layers > 0 && n_kv_heads > 0 && head_dim > 0 && block_size > 0 && n_blocks > 0,
               "KvCache: layers={} kv_heads={} head_dim={} block_size={} n_blocks={} must all be "
               "positive",
               n_layers, n_kv_heads, head_dim, block_size, n_blocks);
  NIBBLE_CHECK(n_blocks <= INT32_MAX, "KvCache: n_blocks={} exceeds the int32 block id range",
               n_blocks);
  layer_stride_ = n_blocks * block_stride();
  key_data_.reset(allocate_floats(n_layers * layer_stride_));
  value_data_.reset(allocate_floats(n_layers * layer_stride_));
  // Handed out lowest id first.
  free_list_.reserve(size_t(n_blocks));
  for (int64_t b = n_blocks - 1; b >= 0; --b) free_list_.push_back(int32_t(b));
  in_use_.assign(size_t(n_blocks), false);
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
