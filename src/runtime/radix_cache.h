#pragma once
// Prefix cache over full KV blocks: a tree whose edges are block-sized token runs and whose
// nodes own the KV block holding those tokens' keys and values. A request whose prompt starts
// with a cached run of whole blocks reuses them instead of recomputing. Only whole blocks are
// shared, so a block is never written by two sequences.
//
// Reference counting: a request locks the deepest node of the path it uses, which pins every
// ancestor too (their counts go up together). Nodes with a zero count and no children are
// evictable, least recently used first.
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <vector>

namespace nibble {

class RadixCache {
 public:
  struct Node;

  struct Match {
    std::vector<int32_t> blocks;  // KV blocks of the matched prefix, in order
    Node* last = nullptr;         // deepest matched node; null when nothing matched
  };

  explicit RadixCache(int64_t block_size);
  ~RadixCache();
  RadixCache(const RadixCache&) = delete;
  RadixCache& operator=(const RadixCache&) = delete;

  int64_t block_size() const { return block_size_; }

  // The longest run of whole cached blocks that `tokens` starts with. Marks it recently used.
  Match match(std::span<const int32_t> tokens);

  // Records that blocks[i] holds tokens [i * block_size, (i + 1) * block_size); `tokens` holds
  // whole blocks only. Where the tree already holds a block for the same tokens, it keeps its
  // own: the result lists the tree's block for every position (a position whose result differs
  // from the input is a duplicate that the caller still owns and must free).
  Match insert(std::span<const int32_t> tokens, std::span<const int32_t> blocks);

  // Pins `node` and its ancestors (null is a no-op).
  void lock(Node* node);
  void unlock(Node* node);

  // Frees up to `n_blocks` unreferenced blocks, least recently used leaves first, handing each
  // to `release`. Returns how many were freed.
  int64_t evict(int64_t n_blocks, const std::function<void(int32_t)>& release);

  int64_t cached_blocks() const { return n_nodes_; }   // blocks owned by the tree
  int64_t evictable_blocks() const;                    // with no lock on them
  int64_t locked_blocks() const { return n_locked_; }  // pinned by some request

 private:
  Node* find_child(Node* parent, std::span<const int32_t> key) const;

  int64_t block_size_;
  std::unique_ptr<Node> root_;
  int64_t n_nodes_ = 0;
  int64_t n_locked_ = 0;  // nodes with a positive reference count
  uint64_t clock_ = 0;    // LRU time
};

}  // namespace nibble
