#pragma once
// Writes a file so that it is either complete or absent: data goes to a temporary file
// in the same directory (<target>.partial-<pid>-<random>, see core/atomic_output.h), is
// flushed to disk, and only then renamed over the target; the directory is synced after.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <span>
#include <string_view>

namespace nibble {

class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::filesystem::path target);
  ~AtomicFileWriter();  // removes the temporary file unless commit() succeeded
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const void* data, size_t size);
  void write(std::string_view s) { write(s.data(), s.size()); }
  void write_zeros(size_t size);
  uint64_t bytes_written() const { return written_; }
  // Flushes, fsyncs and renames onto the target. Throws nibble::Error on failure.
  void commit();

 private:
  std::filesystem::path target_;
  std::filesystem::path temp_;
  std::FILE* file_ = nullptr;
  uint64_t written_ = 0;
  bool committed_ = false;
};

// Writes a whole small file (JSON, text) atomically.
void write_file_atomic(const std::filesystem::path& target, std::string_view contents);

}  // namespace nibble
