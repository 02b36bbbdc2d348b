#pragma once
// This process's memory as the kernel counts it (/proc/self/status), and a sampler that tracks
// its peak while some work runs. Anonymous memory is what the process allocated itself; file
// pages (memory-mapped checkpoints) count in RSS too but are reclaimable, so "how much memory
// does loading need" is answered by the anonymous peak.
#include <atomic>
#include <cstdint>
#include <thread>

namespace nibble {

struct MemoryUsage {
  int64_t rss_bytes = 0;
  int64_t anon_bytes = 0;
  int64_t file_bytes = 0;
};

// Zeros where /proc is unavailable.
MemoryUsage current_memory();

// Samples current_memory() every `interval_ms` on a background thread until stop().
class PeakMemorySampler {
 public:
  explicit PeakMemorySampler(int interval_ms = 5);
  ~PeakMemorySampler();
  PeakMemorySampler(const PeakMemorySampler&) = delete;
  PeakMemorySampler& operator=(const PeakMemorySampler&) = delete;

  // Takes a last sample and stops; the peaks below are final afterwards.
  void stop();
  int64_t peak_rss_bytes() const { return peak_rss_.load(); }
  int64_t peak_anon_bytes() const { return peak_anon_.load(); }

 private:
  void sample();
  std::atomic<bool> running_{true};
  std::atomic<int64_t> peak_rss_{0}, peak_anon_{0};
  int interval_ms_;
  std::thread thread_;
};

}  // namespace nibble
