#include "backend/cuda/device_properties.h"

#include "backend/cuda/cuda_check.h"

namespace nibble::cuda {
namespace {

int device_attribute(cudaDeviceAttr attribute) {
  int device = 0, value = 0;
  NIBBLE_CUDA_CHECK(cudaGetDevice(&device));
  NIBBLE_CUDA_CHECK(cudaDeviceGetAttribute(&value, attribute, device));
  return value;
}

}  // namespace

const DeviceProperties& device_properties() {
  static const DeviceProperties properties{
      device_attribute(cudaDevAttrMultiProcessorCount),
      device_attribute(cudaDevAttrComputeCapabilityMajor),
      device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin),
      device_attribute(cudaDevAttrMaxSharedMemoryPerMultiprocessor)};
  return properties;
}

}  // namespace nibble::cuda
