#pragma once
// Owning device allocation (plain cudaMalloc: the device may be shared, so no managed memory).
#include <cuda_runtime.h>

#include <cstddef>
#include <utility>

#include "backend/cuda/cuda_check.h"

namespace nibble::cuda {

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes) { resize(bytes); }
  ~DeviceBuffer() { release(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      release();
      data_ = std::exchange(other.data_, nullptr);
      bytes_ = std::exchange(other.bytes_, 0);
    }
    return *this;
  }

  // Discards the contents.
  void resize(size_t bytes) {
    release();
    if (bytes > 0) NIBBLE_CUDA_CHECK(cudaMalloc(&data_, bytes));
    bytes_ = bytes;
  }
  // Grows (discarding the contents) only when smaller than `bytes`; true if it reallocated.
  bool ensure(size_t bytes) {
    if (bytes <= bytes_) return false;
    resize(bytes);
    return true;
  }
  void upload(const void* host, size_t bytes) {
    if (bytes > 0) NIBBLE_CUDA_CHECK(cudaMemcpy(data_, host, bytes, cudaMemcpyHostToDevice));
  }

  template <typename T = void>
  T* get() const {
    return static_cast<T*>(data_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void release() noexcept {
    if (data_ != nullptr) cudaFree(data_);
    data_ = nullptr;
    bytes_ = 0;
  }
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace nibble::cuda
