#pragma once
// Random tensors for in-memory test checkpoints: a per-process random engine (fresh inputs
// every run) and normally distributed tensors added by name.
#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "formats/memory_checkpoint.h"

namespace nibble::test_util {

inline std::mt19937& rng() {
  static std::mt19937 gen(std::random_device{}());
  return gen;
}

// Normal(offset, scale) values for a tensor of `shape`.
inline void add_random(MemoryCheckpoint& ck, const std::string& name, std::vector<int64_t> shape,
                       float scale, float offset = 0.0f) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = offset + scale * dist(rng());
  ck.add_f32(name, std::move(shape), v);
}

}  // namespace nibble::test_util
