#include <cuda_fp16.h>

#include <algorithm>
#include <numeric>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/gptq_solver.h"
#include "quant/formats/int_codes.h"

#define NIBBLE_CUSOLVER_CHECK(expr)                              \
  do {                                                           \
    const cusolverStatus_t nibble_cusolver_status_ = (expr);     \
    if (nibble_cusolver_status_ != CUSOLVER_STATUS_SUCCESS) {    \
      ::nibble::fail("{} failed: cuSOLVER status {}", #expr,     \
                     static_cast<int>(nibble_cusolver_status_)); \
    }                                                            \
  } while (0)

namespace nibble::cuda {
namespace {

constexpr int kRowsPerCta = 64;
constexpr int kMaxBlock = 128;

struct Grid {
  int maxq, mid, min_zero;
  bool symmetric;
  int scale_dtype;  // quant::ScaleDType
};

__device__ float round_scale(float v, int dtype) {
  if (dtype == int(quant::ScaleDType::F16)) return __half2float(__float2half_rn(v));
  if (dtype == int(quant::ScaleDType::BF16)) return __bfloat162float(__float2bfloat16_rn(v));
  return v;
}

// int_quantizer.cc's find_params, value for value: min/max with 0, the scale rounded to its
// dtype and kept ≥ the smallest positive value of that dtype.
template <typename Value>
__device__ void find_params(int64_t count, const Grid& g, const Value& value, float& scale,
                            int& zero) {
  double lo = 0.0, hi = 0.0;
  for (int64_t c = 0; c < count; ++c) {
    const double v = value(c);
    lo = fmin(lo, v);
    hi = fmax(hi, v);
  }
  const float smallest =
      g.scale_dtype == int(quant::ScaleDType::F16) ? 6.103515625e-05f : 1.1754944e-38f;
  if (g.symmetric) {
    double amax = fmax(-lo, hi);
    if (amax == 0.0) amax = 1.0;
    scale = fmaxf(round_scale(float(2.0 * amax / g.maxq), g.scale_dtype), smallest);
    zero = g.mid;
    return;
  }
  if (lo == 0.0 && hi == 0.0) lo = -1.0, hi = 1.0;
  scale = fmaxf(round_scale(float((hi - lo) / g.maxq), g.scale_dtype), smallest);
  zero = min(max(int(rint(-lo / double(scale))), g.min_zero), g.maxq);
}

// a[i][j] = H'[K−1−i][K−1−j] (the reversal J·H'·J), H' = H permuted, dead diagonals set to 1
// and `damp` added to the diagonal. Symmetric, so it reads the same in either major order.
__global__ void reversed_damped_kernel(const float* h, const int32_t* perm, const uint8_t* dead,
                                       int64_t k, double damp, double* a) {
  const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t i = blockIdx.y;
  if (j >= k) return;
  const int32_t pi = perm[k - 1 - i], pj = perm[k - 1 - j];
  double v = double(h[int64_t(pi) * k + pj]);
  if (i == j) v = (dead[pi] ? 1.0 : v) + damp;
  a[i * k + j] = v;
}

__global__ void identity_kernel(int64_t k, double* x) {
  const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t i = blockIdx.y;
  if (j < k) x[i * k + j] = i == j ? 1.0 : 0.0;
}

// With J·H'·J = L·Lᵀ and X = L⁻¹ (column-major), U = J·X·J is the upper Cholesky factor of
// H'⁻¹ (quantize/linear_algebra.h): u[i][j] = X(K−1−i, K−1−j).
__global__ void reverse_to_upper_kernel(const double* x, int64_t k, double* u) {
  const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t i = blockIdx.y;
  if (j >= k) return;
  u[i * k + j] = j >= i ? x[(k - 1 - j) * k + (k - 1 - i)] : 0.0;
}

// wt[i][n] = w[n][perm[i]] in double (0 for dead columns): each processed column contiguous.
__global__ void permute_transpose_kernel(const __nv_bfloat16* w, const int32_t* perm,
                                         const uint8_t* dead, int64_t rows, int64_t cols,
                                         double* wt) {
  const int64_t n = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t i = blockIdx.y;
  if (n >= rows) return;
  const int32_t k = perm[i];
  wt[i * rows + n] = dead[k] ? 0.0 : double(__bfloat162float(w[n * cols + k]));
}

// Static groups and per-row grids: parameters from the natural (dead-zeroed) weights up front.
__global__ void static_params_kernel(const __nv_bfloat16* w, const uint8_t* dead, int64_t rows,
                                     int64_t cols, int64_t group, int64_t n_groups, Grid grid,
                                     float* scales, int* zeros) {
  const int64_t n = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t g = blockIdx.y;
  if (n >= rows) return;
  const int64_t k0 = g * group, count = min(cols, k0 + group) - k0;
  const __nv_bfloat16* row = w + n * cols;
  find_params(
      count, grid,
      [&](int64_t c) { return dead[k0 + c] ? 0.0 : double(__bfloat162float(row[k0 + c])); },
      scales[n * n_groups + g], zeros[n * n_groups + g]);
}

struct BlockArgs {
  double* wt;  // [K][N]
  int64_t rows, cols;
  int64_t i1, i2;
  const double* u;  // [K][K]
  double* err;      // [i2 − i1][N]
  const int32_t* perm;
  float* scales;
  int* zeros;
  int64_t group, n_groups;
  bool grouped, static_groups;
  Grid grid;
  uint8_t* codes;        // [N][K], natural column order
  __nv_bfloat16* w_hat;  // [N][K] or null
};

// Columns [i1, i2) of GPTQ's loop for 64 rows, one row per thread. Every update of a weight comes
// from earlier columns in column order, as in the host loop.
__global__ void __launch_bounds__(kRowsPerCta) gptq_block_kernel(BlockArgs a) {
  extern __shared__ double w_block[];  // [i2 − i1][kRowsPerCta]
  const int t = threadIdx.x;
  const int64_t n = int64_t(blockIdx.x) * kRowsPerCta + t;
  if (n >= a.rows) return;  // rows never share data: no barrier below
  const int64_t width = a.i2 - a.i1;
  for (int64_t b = 0; b < width; ++b) w_block[b * kRowsPerCta + t] = a.wt[(a.i1 + b) * a.rows + n];
  float scale = 1.0f;
  int zero = 0;
  int64_t loaded_group = -1;
  for (int64_t i = a.i1; i < a.i2; ++i) {
    const int32_t k = a.perm[i];
    int64_t g = 0;
    if (a.grouped) g = a.static_groups ? k / a.group : i / a.group;
    if (a.grouped && !a.static_groups && i % a.group == 0) {
      // The group's columns as they stand: this block's with its earlier columns' updates, later
      // blocks' with every earlier block's.
      const int64_t count = min(a.group, a.cols - i);
      find_params(
          count, a.grid,
          [&](int64_t c) {
            const int64_t col = i + c;
            return col < a.i2 ? w_block[(col - a.i1) * kRowsPerCta + t] : a.wt[col * a.rows + n];
          },
          scale, zero);
      a.scales[n * a.n_groups + g] = scale;
      a.zeros[n * a.n_groups + g] = zero;
      loaded_group = g;
    } else if (g != loaded_group) {
      scale = a.scales[n * a.n_groups + g];
      zero = a.zeros[n * a.n_groups + g];
      loaded_group = g;
    }
    double* wi = w_block + (i - a.i1) * kRowsPerCta + t;
    const int q = min(max(int(rint(*wi / double(scale))) + zero, 0), a.grid.maxq);
    const double deq = double(scale) * double(q - zero);
    a.codes[n * a.cols + k] = uint8_t(q);
    if (a.w_hat != nullptr) a.w_hat[n * a.cols + k] = __float2bfloat16(float(deq));
    const double* ui = a.u + i * a.cols;
    const double e = (*wi - deq) / __ldg(ui + i);
    a.err[(i - a.i1) * a.rows + n] = e;
    for (int64_t j = i + 1; j < a.i2; ++j)
      w_block[(j - a.i1) * kRowsPerCta + t] -= e * __ldg(ui + j);
  }
}

unsigned blocks_for(int64_t n, int threads) { return unsigned((n + threads - 1) / threads); }

}  // namespace

quant::QuantizedTensor GptqLinearResult::to_tensor(const GptqSolverOptions& options) const {
  return quant::int_tensor_from_codes(rows, cols, group, options.bits, options.scale_dtype, codes,
                                      scales, zeros, g_idx);
}

CudaGptqSolver::CudaGptqSolver(cudaStream_t stream) : stream_(stream) {
  NIBBLE_CUBLAS_CHECK(cublasCreate(&cublas_));
  NIBBLE_CUBLAS_CHECK(cublasSetStream(cublas_, stream_));
  NIBBLE_CUSOLVER_CHECK(cusolverDnCreate(&cusolver_));
  NIBBLE_CUSOLVER_CHECK(cusolverDnSetStream(cusolver_, stream_));
  info_.resize(sizeof(int));
}

CudaGptqSolver::~CudaGptqSolver() {
  if (cusolver_ != nullptr) cusolverDnDestroy(cusolver_);
  if (cublas_ != nullptr) cublasDestroy(cublas_);
}

void CudaGptqSolver::accumulate_hessian(const __nv_bfloat16* x, int64_t m, int64_t k, float* h) {
  NIBBLE_CHECK(m > 0 && k > 0 && k <= INT32_MAX && m <= INT32_MAX,
               "GPTQ Hessian: {} rows of {} inputs", m, k);
  const float one = 1.0f;
  // Row-major x[m][K] is column-major xᵀ (K × m): H += xᵀ·(xᵀ)ᵀ.
  NIBBLE_CUBLAS_CHECK(cublasGemmEx(cublas_, CUBLAS_OP_N, CUBLAS_OP_T, int(k), int(k), int(m), &one,
                                   x, CUDA_R_16BF, int(k), x, CUDA_R_16BF, int(k), &one, h,
                                   CUDA_R_32F, int(k), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

double CudaGptqSolver::prepare_hessian(const float* h, int64_t k, const GptqSolverOptions& o,
                                       std::vector<int32_t>& perm, std::vector<uint8_t>& dead) {
  std::vector<float> diag(size_t(k), 0.0f);
  NIBBLE_CUDA_CHECK(cudaMemcpy2DAsync(diag.data(), sizeof(float), h, size_t(k + 1) * sizeof(float),
                                      sizeof(float), size_t(k), cudaMemcpyDeviceToHost, stream_));
  NIBBLE_CUDA_CHECK(cudaStreamSynchronize(stream_));
  perm.resize(size_t(k));
  std::iota(perm.begin(), perm.end(), 0);
  if (o.act_order) {
    std::stable_sort(perm.begin(), perm.end(),
                     [&](int32_t a, int32_t b) { return diag[size_t(a)] > diag[size_t(b)]; });
  }
  dead.assign(size_t(k), 0);
  double mean_diag = 0.0;
  for (int64_t c = 0; c < k; ++c) {
    dead[size_t(c)] = diag[size_t(c)] == 0.0f;
    mean_diag += dead[size_t(c)] ? 1.0 : double(diag[size_t(c)]);
  }
  mean_diag /= double(k);
  perm_dead_.ensure(size_t(k) * (sizeof(int32_t) + 1));
  auto* perm_dev = perm_dead_.get<int32_t>();
  auto* dead_dev = reinterpret_cast<uint8_t*>(perm_dev + k);
  NIBBLE_CUDA_CHECK(cudaMemcpyAsync(perm_dev, perm.data(), size_t(k) * sizeof(int32_t),
                                    cudaMemcpyHostToDevice, stream_));
  NIBBLE_CUDA_CHECK(
      cudaMemcpyAsync(dead_dev, dead.data(), size_t(k), cudaMemcpyHostToDevice, stream_));

  const size_t square = size_t(k) * size_t(k) * sizeof(double);
  u_.ensure(square);
  x_.ensure(square);
  auto* a = u_.get<double>();  // the factor first, U at the end
  auto* x = x_.get<double>();
  int lwork = 0;
  NIBBLE_CUSOLVER_CHECK(
      cusolverDnDpotrf_bufferSize(cusolver_, CUBLAS_FILL_MODE_LOWER, int(k), a, int(k), &lwork));
  solver_work_.ensure(size_t(lwork) * sizeof(double));
  const dim3 grid{blocks_for(k, 256), unsigned(k), 1u};
  // As the host quantizer: a rank-deficient H may need more than 1% dampening.
  double damp = o.damp_percent;
  for (int attempt = 0;; ++attempt) {
    reversed_damped_kernel<<<grid, 256, 0, stream_>>>(h, perm_dev, dead_dev, k, damp * mean_diag,
                                                      a);
    NIBBLE_CUDA_CHECK_LAUNCH("reversed_damped_kernel");
    NIBBLE_CUSOLVER_CHECK(cusolverDnDpotrf(cusolver_, CUBLAS_FILL_MODE_LOWER, int(k), a, int(k),
                                           solver_work_.get<double>(), lwork, info_.get<int>()));
    int info = 0;
    NIBBLE_CUDA_CHECK(
        cudaMemcpyAsync(&info, info_.get(), sizeof(int), cudaMemcpyDeviceToHost, stream_));
    NIBBLE_CUDA_CHECK(cudaStreamSynchronize(stream_));
    if (info == 0) break;
    NIBBLE_CHECK(attempt < 6, "GPTQ: Hessian not positive definite even with damp {}", damp);
    damp = damp == 0.0 ? 0.01 : damp * 4.0;
  }
  identity_kernel<<<grid, 256, 0, stream_>>>(k, x);
  NIBBLE_CUDA_CHECK_LAUNCH("identity_kernel");
  const double one = 1.0;
  NIBBLE_CUBLAS_CHECK(cublasDtrsm(cublas_, CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N,
                                  CUBLAS_DIAG_NON_UNIT, int(k), int(k), &one, a, int(k), x,
                                  int(k)));
  reverse_to_upper_kernel<<<grid, 256, 0, stream_>>>(x, k, a);
  NIBBLE_CUDA_CHECK_LAUNCH("reverse_to_upper_kernel");
  return damp;
}

GptqLinearResult CudaGptqSolver::quantize(const __nv_bfloat16* w, int64_t rows, int64_t cols,
                                          const float* h, const GptqSolverOptions& o,
                                          __nv_bfloat16* w_hat) {
  NIBBLE_CHECK(o.bits == 2 || o.bits == 3 || o.bits == 4 || o.bits == 8,
               "GPTQ: bits={} (expected 2, 3, 4 or 8)", o.bits);
  NIBBLE_CHECK(o.group_size == -1 || o.group_size > 0, "GPTQ: group size {}", o.group_size);
  NIBBLE_CHECK(o.block_size >= 1 && o.block_size <= kMaxBlock, "GPTQ: block size {} (1 .. {})",
               o.block_size, kMaxBlock);
  NIBBLE_CHECK(o.damp_percent >= 0.0, "GPTQ: damp {}", o.damp_percent);
  // The permutation and factor kernels put one column (one Hessian row) per grid row.
  NIBBLE_CHECK(rows > 0 && cols > 0 && cols <= 65535 && rows <= INT32_MAX,
               "GPTQ: a [{}, {}] weight (at most 65535 input columns)", rows, cols);
  GptqLinearResult r;
  r.rows = rows;
  r.cols = cols;
  r.group = o.group_size == -1 ? cols : std::min(o.group_size, cols);
  const bool grouped = o.group_size != -1;
  const int64_t n_groups = (cols + r.group - 1) / r.group;
  std::vector<int32_t> perm;
  std::vector<uint8_t> dead;
  r.damp_percent = prepare_hessian(h, cols, o, perm, dead);
  const auto* perm_dev = perm_dead_.get<int32_t>();
  const auto* dead_dev = reinterpret_cast<const uint8_t*>(perm_dev + cols);

  wt_.ensure(size_t(rows * cols) * sizeof(double));
  err_.ensure(size_t(rows) * kMaxBlock * sizeof(double));
  codes_.ensure(size_t(rows * cols));
  scales_.ensure(size_t(rows * n_groups) * sizeof(float));
  zeros_.ensure(size_t(rows * n_groups) * sizeof(int));
  permute_transpose_kernel<<<dim3{blocks_for(rows, 256), unsigned(cols), 1u}, 256, 0, stream_>>>(
      w, perm_dev, dead_dev, rows, cols, wt_.get<double>());
  NIBBLE_CUDA_CHECK_LAUNCH("permute_transpose_kernel");
  const Grid grid{(1 << o.bits) - 1, 1 << (o.bits - 1), o.min_zero, o.symmetric,
                  int(o.scale_dtype)};
  if (o.static_groups || !grouped) {
    static_params_kernel<<<dim3{blocks_for(rows, 128), unsigned(n_groups), 1u}, 128, 0, stream_>>>(
        w, dead_dev, rows, cols, r.group, n_groups, grid, scales_.get<float>(), zeros_.get<int>());
    NIBBLE_CUDA_CHECK_LAUNCH("static_params_kernel");
  }
  // w and w_hat may alias: w is read above (the permuted copy, the static parameters) before
  // the first block writes w_hat.
  BlockArgs a{};
  a.wt = wt_.get<double>();
  a.rows = rows;
  a.cols = cols;
  a.u = u_.get<double>();
  a.err = err_.get<double>();
  a.perm = perm_dev;
  a.scales = scales_.get<float>();
  a.zeros = zeros_.get<int>();
  a.group = r.group;
  a.n_groups = n_groups;
  a.grouped = grouped;
  a.static_groups = o.static_groups;
  a.grid = grid;
  a.codes = codes_.get<uint8_t>();
  a.w_hat = w_hat;
  const int smem = kMaxBlock * kRowsPerCta * int(sizeof(double));
  NIBBLE_CUDA_CHECK(
      cudaFuncSetAttribute(gptq_block_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const double minus_one = -1.0, one = 1.0;
  for (int64_t i1 = 0; i1 < cols; i1 += o.block_size) {
    const int64_t i2 = std::min(cols, i1 + o.block_size);
    a.i1 = i1;
    a.i2 = i2;
    gptq_block_kernel<<<blocks_for(rows, kRowsPerCta), kRowsPerCta,
                        size_t((i2 - i1) * kRowsPerCta) * sizeof(double), stream_>>>(a);
    NIBBLE_CUDA_CHECK_LAUNCH("gptq_block_kernel");
    if (i2 == cols) break;
    // wt[i2..K)[n] −= Σ_b u[i1 + b][i2..K) · err[b][n]: column-major C(N × rest) −= E(N × B) ·
    // Bᵀ with B(rest × B) = u's rows i1.. from column i2, leading dimension K.
    NIBBLE_CUBLAS_CHECK(cublasDgemm(
        cublas_, CUBLAS_OP_N, CUBLAS_OP_T, int(rows), int(cols - i2), int(i2 - i1), &minus_one,
        a.err, int(rows), a.u + i1 * cols + i2, int(cols), &one, a.wt + i2 * rows, int(rows)));
  }
  r.codes.resize(size_t(rows * cols));
  r.scales.resize(size_t(rows * n_groups));
  r.zeros.resize(size_t(rows * n_groups));
  NIBBLE_CUDA_CHECK(cudaMemcpyAsync(r.codes.data(), codes_.get(), r.codes.size(),
                                    cudaMemcpyDeviceToHost, stream_));
  NIBBLE_CUDA_CHECK(cudaMemcpyAsync(r.scales.data(), scales_.get(), r.scales.size() * 4,
                                    cudaMemcpyDeviceToHost, stream_));
  NIBBLE_CUDA_CHECK(cudaMemcpyAsync(r.zeros.data(), zeros_.get(), r.zeros.size() * 4,
                                    cudaMemcpyDeviceToHost, stream_));
  NIBBLE_CUDA_CHECK(cudaStreamSynchronize(stream_));
  if (grouped) {
    r.g_idx.assign(size_t(cols), 0);
    for (int64_t i = 0; i < cols; ++i) {
      const int32_t k = perm[size_t(i)];
      r.g_idx[size_t(k)] = int32_t(o.static_groups ? k / r.group : i / r.group);
    }
  }
  return r;
}

}  // namespace nibble::cuda
