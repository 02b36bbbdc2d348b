#include "backend/cuda/int8_linear.h"

#include <cuda_bf16.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "quant/reference/dequantize.h"
#include "quant/types.h"

namespace nibble::cuda {
namespace {

constexpr int kQuantThreads = 256;

// One CTA per row: amax by warp shuffles, then the codes (the CPU's round_clamp: round half to
// even of the f32 quotient, clamped to ±127).
__global__ void quantize_int8_kernel(const __nv_bfloat16* x, int64_t k, int64_t ld_out,
                                     int8_t* codes, float* scales) {
  __shared__ float warp_max[kQuantThreads / 32];
  const int64_t row = blockIdx.x;
  const __nv_bfloat16* src = x + row * k;
  float amax = 0.0f;
  for (int64_t i = threadIdx.x; i < k; i += kQuantThreads) {
    amax = fmaxf(amax, fabsf(__bfloat162float(src[i])));
  }
  for (int offset = 16; offset > 0; offset /= 2) {
    amax = fmaxf(amax, __shfl_xor_sync(0xFFFFFFFFu, amax, offset));
  }
  if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = amax;
  __syncthreads();
  amax = 0.0f;
  for (int w = 0; w < kQuantThreads / 32; ++w) amax = fmaxf(amax, warp_max[w]);
  const float scale = amax / 127.0f;
  if (threadIdx.x == 0) scales[row] = scale;
  int8_t* dst = codes + row * ld_out;
  for (int64_t i = threadIdx.x; i < ld_out; i += kQuantThreads) {
    float q = 0.0f;
    if (i < k && scale != 0.0f)
      q = fminf(fmaxf(rintf(__bfloat162float(src[i]) / scale), -127.0f), 127.0f);
    dst[i] = int8_t(q);
  }
}

// y[m][n] = bf16(acc[m][n] · x_scale[m] · w_scale[n]) for n < N (acc rows of ld_acc).
__global__ void int8_epilogue_kernel(const int32_t* acc, int64_t m, int64_t n, int64_t ld_acc,
                                     const float* x_scale, const float* w_scale, __nv_bfloat16* y) {
  const int64_t total = m * n;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = i / n, col = i % n;
    y[i] = __float2bfloat16(float(acc[row * ld_acc + col]) * x_scale[row] * w_scale[col]);
  }
}

// The same, four columns a thread (16-byte loads of the sums; N a multiple of 4, one row per grid
// row): at M = 2048 the epilogue moves 1.5× the GEMM's output bytes.
__global__ void int8_epilogue_vec4_kernel(const int32_t* acc, int64_t n, int64_t ld_acc,
                                          const float* x_scale, const float* w_scale,
                                          __nv_bfloat16* y) {
  const int64_t row = blockIdx.y;
  const int64_t col = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) * 4;
  if (col >= n) return;
  const int4 a = *reinterpret_cast<const int4*>(acc + row * ld_acc + col);
  const float4 ws = *reinterpret_cast<const float4*>(w_scale + col);
  const float xs = x_scale[row];
  __nv_bfloat16 out[4] = {__float2bfloat16(float(a.x) * xs * ws.x),
                          __float2bfloat16(float(a.y) * xs * ws.y),
                          __float2bfloat16(float(a.z) * xs * ws.z),
                          __float2bfloat16(float(a.w) * xs * ws.w)};
  *reinterpret_cast<uint2*>(y + row * n + col) = *reinterpret_cast<const uint2*>(out);
}

}  // namespace

Int8Weight prepare_int8_weight(const quant::QuantizedTensor& t, const char* what) {
  quant::validate(t, what);
  NIBBLE_CHECK(t.elem == quant::ElemType::Int8 && t.zero_kind == quant::ZeroKind::None,
               "{}: the CUDA W8A8 int8 kernel takes symmetric int8 codes, not {}{}", what,
               quant::elem_name(t.elem),
               t.zero_kind == quant::ZeroKind::None ? "" : " with zero points");
  const auto granularity = t.granularity();
  NIBBLE_CHECK(granularity == quant::ScaleGranularity::PerTensor ||
                   granularity == quant::ScaleGranularity::PerChannel,
               "{}: {} int8 weight scales are not supported by the CUDA W8A8 kernel (per-tensor "
               "or per-channel)",
               what, quant::granularity_name(granularity));
  Int8Weight w;
  w.rows = t.rows;
  w.cols = t.cols;
  w.padded_cols = (t.cols + 15) / 16 * 16;
  w.padded_rows = (t.rows + 15) / 16 * 16;
  std::vector<int8_t> codes(size_t(w.padded_rows * w.padded_cols), 0);
  for (int64_t n = 0; n < t.rows; ++n) {
    std::memcpy(codes.data() + n * w.padded_cols, t.codes.data() + n * t.row_bytes, size_t(t.cols));
  }
  w.codes.resize(codes.size());
  w.codes.upload(codes.data(), codes.size());
  const bool per_channel = granularity == quant::ScaleGranularity::PerChannel;
  std::vector<float> scales(size_t(w.padded_rows), 0.0f);
  for (int64_t n = 0; n < t.rows; ++n) {
    scales[size_t(n)] = t.scales[per_channel ? size_t(n) : 0] * t.global_scale;
  }
  w.scales.resize(scales.size() * sizeof(float));
  w.scales.upload(scales.data(), w.scales.bytes());
  return w;
}

void quantize_int8_per_token(const void* x, int64_t m, int64_t k, int64_t ld_out, int8_t* codes,
                             float* scales, cudaStream_t stream) {
  NIBBLE_CHECK(m > 0 && m < (int64_t(1) << 31) && ld_out >= k,
               "quantize_int8_per_token: {} rows of {} into rows of {}", m, k, ld_out);
  quantize_int8_kernel<<<unsigned(m), kQuantThreads, 0, stream>>>(
      static_cast<const __nv_bfloat16*>(x), k, ld_out, codes, scales);
  NIBBLE_CUDA_CHECK_LAUNCH("quantize_int8_kernel");
}

void int8_linear(LtGemm& lt, const Int8Weight& w, const void* x, int64_t m, void* y,
                 Int8Workspace& ws, cudaStream_t stream) {
  NIBBLE_CHECK(m > 0, "int8_linear: {} rows of activations", m);
  ws.x_codes.ensure(size_t(m * w.padded_cols));
  ws.x_scales.ensure(size_t(m) * sizeof(float));
  ws.acc.ensure(size_t(m * w.padded_rows) * sizeof(int32_t));
  quantize_int8_per_token(x, m, w.cols, w.padded_cols, ws.x_codes.get<int8_t>(),
                          ws.x_scales.get<float>(), stream);
  LtProblem p;
  p.m = m;
  p.n = w.padded_rows;
  p.k = w.padded_cols;
  p.input_type = CUDA_R_8I;
  p.x = ws.x_codes.get();
  p.ldx = w.padded_cols;
  p.w = w.codes.get();
  p.ldw = w.padded_cols;
  p.y = ws.acc.get();
  p.ldy = w.padded_rows;
  lt.matmul(p, stream);
  if (w.rows % 4 == 0 && m <= 65535 && reinterpret_cast<uintptr_t>(y) % 8 == 0) {
    const dim3 grid{unsigned((w.rows / 4 + 255) / 256), unsigned(m), 1u};
    int8_epilogue_vec4_kernel<<<grid, 256, 0, stream>>>(
        ws.acc.get<int32_t>(), w.rows, w.padded_rows, ws.x_scales.get<float>(),
        w.scales.get<float>(), static_cast<__nv_bfloat16*>(y));
    NIBBLE_CUDA_CHECK_LAUNCH("int8_epilogue_vec4_kernel");
    return;
  }
  const int64_t total = m * w.rows;
  const unsigned blocks = unsigned(std::min<int64_t>((total + 255) / 256, 65535));
  int8_epilogue_kernel<<<blocks, 256, 0, stream>>>(ws.acc.get<int32_t>(), m, w.rows, w.padded_rows,
                                                   ws.x_scales.get<float>(), w.scales.get<float>(),
                                                   static_cast<__nv_bfloat16*>(y));
  NIBBLE_CUDA_CHECK_LAUNCH("int8_epilogue_kernel");
}

}  // namespace nibble::cuda
