#pragma once
// Programmatic dependent launch (Hopper, sm_90 and later). A kernel launched with
// cudaLaunchAttributeProgrammaticStreamSerialization may be scheduled while the kernel before it
// in the stream still runs, as soon as every CTA of that kernel has called
// allow_dependent_launch() (or exited). It must call wait_for_prerequisite_grid() before it reads
// anything the earlier kernel writes or writes anything the earlier kernel reads; the wait
// returns once that kernel has completed and its memory is visible. What comes before the wait
// may only touch constant data (weights): at batch 1 that hides the launch and the first weight
// loads of a GEMV behind the small kernel before it. Both are no-ops before sm_90 and in a kernel
// launched without the attribute.
#include <cuda_runtime.h>

namespace nibble::cuda {

__device__ __forceinline__ void allow_dependent_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ __forceinline__ void wait_for_prerequisite_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

}  // namespace nibble::cuda
