#include "core/atomic_file.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "core/atomic_output.h"
#include "core/error.h"

namespace nibble {

AtomicFileWriter::AtomicFileWriter(std::filesystem::path target) : target_(std::move(target)) {
  temp_ = partial_file_path(target_);
  file_ = std::fopen(temp_.c_str(), "wb");
  if (file_ == nullptr) fail("{}: cannot create: {}", temp_.string(), std::strerror(errno));
}

AtomicFileWriter::~AtomicFileWriter() {
  if (file_ != nullptr) std::fclose(file_);
  if (!committed_) {
    std::error_code ec;
    std::filesystem::remove(temp_, ec);
  }
}

void AtomicFileWriter::write(const void* data, size_t size) {
  if (size == 0) return;
  if (std::fwrite(data, 1, size, file_) != size)
    fail("{}: write failed: {}", temp_.string(), std::strerror(errno));
  written_ += size;
}

void AtomicFileWriter::write_zeros(size_t size) {
  static const std::vector<char> zeros(4096, 0);
  while (size > 0) {
    const size_t n = std::min(size, zeros.size());
    write(zeros.data(), n);
    size -= n;
  }
}

void AtomicFileWriter::commit() {
  if (std::fflush(file_) != 0 || ::fsync(fileno(file_)) != 0)
    fail("{}: flush failed: {}", temp_.string(), std::strerror(errno));
  std::fclose(file_);
  file_ = nullptr;
  std::error_code ec;
  std::filesystem::rename(temp_, target_, ec);
  if (ec) fail("{}: cannot rename into place: {}", target_.string(), ec.message());
  committed_ = true;
  fsync_path(target_.parent_path().empty() ? std::filesystem::path(".") : target_.parent_path());
}

void write_file_atomic(const std::filesystem::path& target, std::string_view contents) {
  AtomicFileWriter w(target);
  w.write(contents);
  w.commit();
}

}  // namespace nibble
