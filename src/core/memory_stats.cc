#include "core/memory_stats.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>

namespace nibble {

MemoryUsage current_memory() {
  MemoryUsage usage;
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) return usage;
  char line[256];
  while (std::fgets(line, sizeof line, f) != nullptr) {
    long long kb = 0;
    if (std::sscanf(line, "VmRSS: %lld kB", &kb) == 1) usage.rss_bytes = kb * 1024;
    if (std::sscanf(line, "RssAnon: %lld kB", &kb) == 1) usage.anon_bytes = kb * 1024;
    if (std::sscanf(line, "RssFile: %lld kB", &kb) == 1) usage.file_bytes = kb * 1024;
  }
  std::fclose(f);
  return usage;
}

PeakMemorySampler::PeakMemorySampler(int interval_ms) : interval_ms_(interval_ms) {
  sample();
  thread_ = std::thread([this] {
    while (running_.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(interval_ms_));
      sample();
    }
  });
}

PeakMemorySampler::~PeakMemorySampler() { stop(); }

void PeakMemorySampler::stop() {
  if (!running_.exchange(false)) return;
  if (thread_.joinable()) thread_.join();
  sample();
}

void PeakMemorySampler::sample() {
  const MemoryUsage now = current_memory();
  int64_t prev = peak_rss_.load();
  while (now.rss_bytes > prev && !peak_rss_.compare_exchange_weak(prev, now.rss_bytes)) {
  }
  prev = peak_anon_.load();
  while (now.anon_bytes > prev && !peak_anon_.compare_exchange_weak(prev, now.anon_bytes)) {
  }
}

}  // namespace nibble
