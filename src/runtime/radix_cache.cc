#include "runtime/radix_cache.h"

#include <algorithm>
#include <queue>

#include "core/error.h"

namespace nibble {

struct RadixCache::Node {
  std::vector<int32_t> key;  // the block's tokens
  int32_t block = -1;
  int64_t ref_count = 0;
  uint64_t last_access = 0;
  Node* parent = nullptr;
  std::map<std::vector<int32_t>, std::unique_ptr<Node>> children;
};

RadixCache::RadixCache(int64_t block_size) : block_size_(block_size), root_(new Node) {
  NIBBLE_CHECK(block_size > 0, "RadixCache: block_size must be positive, got {}", block_size);
}

RadixCache::~RadixCache() = default;

RadixCache::Node* RadixCache::find_child(Node* parent, std::span<const int32_t> key) const {
  auto it = parent->children.find(std::vector<int32_t>(key.begin(), key.end()));
  return it == parent->children.end() ? nullptr : it->second.get();
}

RadixCache::Match RadixCache::match(std::span<const int32_t> tokens) {
  Match result;
  Node* node = root_.get();
  const uint64_t now = ++clock_;
  const size_t n_blocks = tokens.size() / size_t(block_size_);
  for (size_t i = 0; i < n_blocks; ++i) {
    Node* child = find_child(node, tokens.subspan(i * size_t(block_size_), size_t(block_size_)));
    if (child == nullptr) break;
    child->last_access = now;
    result.blocks.push_back(child->block);
    result.last = child;
    node = child;
  }
  return result;
}

RadixCache::Match RadixCache::insert(std::span<const int32_t> tokens,
                                     std::span<const int32_t> blocks) {
  NIBBLE_CHECK(tokens.size() == blocks.size() * size_t(block_size_),
               "RadixCache::insert: {} tokens do not fill {} blocks of {}", tokens.size(),
               blocks.size(), block_size_);
  Match result;
  Node* node = root_.get();
  const uint64_t now = ++clock_;
  for (size_t i = 0; i < blocks.size(); ++i) {
    auto key = tokens.subspan(i * size_t(block_size_), size_t(block_size_));
    Node* child = find_child(node, key);
    if (child == nullptr) {
      auto fresh = std::make_unique<Node>();
      fresh->key.assign(key.begin(), key.end());
      fresh->block = blocks[i];
      fresh->parent = node;
      child = fresh.get();
      node->children.emplace(child->key, std::move(fresh));
      ++n_nodes_;
    }
    child->last_access = now;
    result.blocks.push_back(child->block);
    result.last = child;
    node = child;
  }
  return result;
}

void RadixCache::lock(Node* node) {
  for (; node != nullptr && node != root_.get(); node = node->parent) {
    if (node->ref_count++ == 0) ++n_locked_;
  }
}

void RadixCache::unlock(Node* node) {
  for (; node != nullptr && node != root_.get(); node = node->parent) {
    NIBBLE_CHECK(node->ref_count > 0, "RadixCache::unlock: block {} is not locked", node->block);
    if (--node->ref_count == 0) --n_locked_;
  }
}

int64_t RadixCache::evictable_blocks() const { return n_nodes_ - n_locked_; }

int64_t RadixCache::evict(int64_t n_blocks, const std::function<void(int32_t)>& release) {
  if (n_blocks <= 0) return 0;
  // Oldest leaf first; a parent becomes a candidate once its last child is gone.
  auto older = [](const Node* a, const Node* b) { return a->last_access > b->last_access; };
  std::priority_queue<Node*, std::vector<Node*>, decltype(older)> leaves(older);
  std::vector<Node*> stack{root_.get()};
  while (!stack.empty()) {
    Node* node = stack.back();
    stack.pop_back();
    for (auto& [key, child] : node->children) stack.push_back(child.get());
    if (node != root_.get() && node->children.empty() && node->ref_count == 0) leaves.push(node);
  }
  int64_t freed = 0;
  while (freed < n_blocks && !leaves.empty()) {
    Node* node = leaves.top();
    leaves.pop();
    Node* parent = node->parent;
    release(node->block);
    const std::vector<int32_t> key = node->key;  // erasing destroys the node and its key
    parent->children.erase(key);
    --n_nodes_;
    ++freed;
    if (parent != root_.get() && parent->children.empty() && parent->ref_count == 0)
      leaves.push(parent);
  }
  return freed;
}

}  // namespace nibble
