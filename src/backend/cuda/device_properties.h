#pragma once
// What the kernels size their launches by, read from the current device once per process (the
// backend runs on one device).
#include <cuda_runtime.h>

namespace nibble::cuda {

struct DeviceProperties {
  int sm_count = 0;
  int major = 0;            // compute capability major (9 on Hopper)
  int max_smem_optin = 0;   // shared memory per CTA with the opt-in attribute
  int max_smem_per_sm = 0;  // what the CTAs of an SM share
};

const DeviceProperties& device_properties();

}  // namespace nibble::cuda
