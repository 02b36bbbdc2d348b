#pragma once
// An allocator for model weights that asks the kernel for transparent huge pages. Decode streams
// every weight once per token; with 4 KiB pages that is a TLB miss every 4 KiB on top of the
// DRAM read, and Linux's default THP mode ("madvise") only backs a region with 2 MiB pages when
// asked. Small buffers go to the ordinary allocator.
#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

namespace nibble {

inline constexpr size_t kHugePageBytes = size_t(2) << 20;

template <typename T>
struct HugePageAllocator {
  using value_type = T;
  // Whole 4 KiB pages: what mmap maps and munmap must be given back.
  static size_t round_up(size_t bytes) { return (bytes + 4095) / 4096 * 4096; }
  HugePageAllocator() = default;
  template <typename U>
  HugePageAllocator(const HugePageAllocator<U>&) noexcept {}

  T* allocate(size_t n) {
    const size_t bytes = n * sizeof(T);
    if (bytes < kHugePageBytes) return std::allocator<T>().allocate(n);
    // Mapped directly, 2 MiB-aligned by over-mapping and trimming: an aligned allocation from the
    // heap would leave up to 2 MiB of padding per buffer, resident once the heap had used it.
    const size_t rounded = round_up(bytes);
    void* raw = mmap(nullptr, rounded + kHugePageBytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) throw std::bad_alloc();
    const uintptr_t begin = reinterpret_cast<uintptr_t>(raw);
    const uintptr_t aligned = (begin + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes;
    if (aligned > begin) munmap(raw, aligned - begin);
    const size_t tail = begin + kHugePageBytes - aligned;
    if (tail > 0) munmap(reinterpret_cast<void*>(aligned + rounded), tail);
    // Only the whole 2 MiB pages the buffer fills are advised: a huge page under the partly
    // used tail would make its unused rest resident too. Advisory: where THP is off the region
    // simply stays on 4 KiB pages.
    (void)madvise(reinterpret_cast<void*>(aligned), bytes / kHugePageBytes * kHugePageBytes,
                  MADV_HUGEPAGE);
    return reinterpret_cast<T*>(aligned);
  }
  void deallocate(T* p, size_t n) noexcept {
    if (n * sizeof(T) < kHugePageBytes) {
      std::allocator<T>().deallocate(p, n);
    } else {
      munmap(p, round_up(n * sizeof(T)));
    }
  }
  template <typename U>
  bool operator==(const HugePageAllocator<U>&) const noexcept {
    return true;
  }
};

template <typename T>
using HugePageVector = std::vector<T, HugePageAllocator<T>>;

}  // namespace nibble
