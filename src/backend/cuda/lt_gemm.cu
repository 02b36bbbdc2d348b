#include "backend/cuda/lt_gemm.h"

namespace nibble::cuda {

struct LtGemm::Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t w_layout = nullptr, x_layout = nullptr, y_layout = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool supported = false;
  ~Plan() {
    if (y_layout) cublasLtMatrixLayoutDestroy(y_layout);
    if (x_layout) cublasLtMatrixLayoutDestroy(x_layout);
    if (w_layout) cublasLtMatrixLayoutDestroy(w_layout);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

namespace {

// cuBLASLt picks vectorized kernels only for pointers it is told are aligned.
int alignment_of(const void* p) {
  const auto v = reinterpret_cast<uintptr_t>(p);
  for (int a : {256, 128, 64, 32, 16, 8, 4}) {
    if (v % static_cast<uintptr_t>(a) == 0) return a;
  }
  return 2;
}

cublasLtMatmulMatrixScale_t scale_mode(LtScaleMode mode) {
  return mode == LtScaleMode::OuterVector ? CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F
                                          : CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F;
}

}  // namespace

LtGemm::LtGemm(size_t workspace_bytes) : workspace_(workspace_bytes) {
  NIBBLE_CUBLAS_CHECK(cublasLtCreate(&handle_));
}

LtGemm::~LtGemm() {
  plans_.clear();
  if (handle_) cublasLtDestroy(handle_);
}

LtGemm::Plan* LtGemm::plan_for(const LtProblem& p) {
  const Key key{p.m,
                p.n,
                p.k,
                static_cast<int>(p.input_type),
                p.ldx,
                p.ldw,
                p.ldy,
                static_cast<int>(p.x_scale_mode),
                static_cast<int>(p.w_scale_mode),
                p.fast_accum,
                alignment_of(p.x),
                alignment_of(p.w),
                alignment_of(p.y)};
  auto& slot = plans_[key];
  if (slot) return slot.get();
  auto plan = std::make_unique<Plan>();
  const bool int8 = p.input_type == CUDA_R_8I;
  NIBBLE_CUBLAS_CHECK(cublasLtMatmulDescCreate(
      &plan->desc, int8 ? CUBLAS_COMPUTE_32I : CUBLAS_COMPUTE_32F, int8 ? CUDA_R_32I : CUDA_R_32F));
  const cublasOperation_t transpose = CUBLAS_OP_T, no_transpose = CUBLAS_OP_N;
  NIBBLE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA,
                                                     &transpose, sizeof(transpose)));
  NIBBLE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB,
                                                     &no_transpose, sizeof(no_transpose)));
  if (p.input_type == CUDA_R_8F_E4M3) {
    const int8_t fast = p.fast_accum ? 1 : 0;
    NIBBLE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_FAST_ACCUM,
                                                       &fast, sizeof(fast)));
    // W is cuBLAS's A (its rows are the output rows of yᵀ), x is B.
    if (p.w_scale_mode != LtScaleMode::None) {
      const auto mode = scale_mode(p.w_scale_mode);
      NIBBLE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(
          plan->desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &mode, sizeof(mode)));
    }
    if (p.x_scale_mode != LtScaleMode::None) {
      const auto mode = scale_mode(p.x_scale_mode);
      NIBBLE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(
          plan->desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mode, sizeof(mode)));
    }
  }
  NIBBLE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->w_layout, p.input_type, uint64_t(p.k),
                                                 uint64_t(p.n), p.ldw));
  NIBBLE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->x_layout, p.input_type, uint64_t(p.k),
                                                 uint64_t(p.m), p.ldx));
  NIBBLE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->y_layout, int8 ? CUDA_R_32I : CUDA_R_16BF,
                                                 uint64_t(p.n), uint64_t(p.m), p.ldy));

  cublasLtMatmulPreference_t pref = nullptr;
  NIBBLE_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = workspace_.bytes();
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                       sizeof(ws));
  const uint32_t align_a = uint32_t(alignment_of(p.w)), align_b = uint32_t(alignment_of(p.x)),
                 align_cd = uint32_t(alignment_of(p.y));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a,
                                       sizeof(align_a));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b,
                                       sizeof(align_b));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_cd,
                                       sizeof(align_cd));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_cd,
                                       sizeof(align_cd));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t status =
      cublasLtMatmulAlgoGetHeuristic(handle_, plan->desc, plan->w_layout, plan->x_layout,
                                     plan->y_layout, plan->y_layout, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (status == CUBLAS_STATUS_SUCCESS && found > 0) {
    plan->algo = result.algo;
    plan->supported = true;
  } else if (status != CUBLAS_STATUS_SUCCESS && status != CUBLAS_STATUS_NOT_SUPPORTED &&
             status != CUBLAS_STATUS_INVALID_VALUE) {
    // INVALID_VALUE is how cuBLASLt 13.0 refuses outer-vector fp8 scales on sm_90: a fallback.
    fail("cublasLtMatmulAlgoGetHeuristic failed for [{} x {}] · [{} x {}]ᵀ: cuBLAS status {}", p.m,
         p.k, p.n, p.k, static_cast<int>(status));
  }
  slot = std::move(plan);
  return slot.get();
}

bool LtGemm::try_matmul(const LtProblem& p, cudaStream_t stream) {
  Plan* plan = plan_for(p);
  if (!plan->supported) return false;
  if (p.input_type == CUDA_R_8F_E4M3) {
    // Scale pointers change per call; the plan is shared, so they are set each time.
    if (p.w_scale_mode != LtScaleMode::None) {
      NIBBLE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(
          plan->desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &p.w_scale, sizeof(p.w_scale)));
    }
    if (p.x_scale_mode != LtScaleMode::None) {
      NIBBLE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(
          plan->desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &p.x_scale, sizeof(p.x_scale)));
    }
  }
  // The scale type follows the compute type: int32 for int8 products.
  const float alpha = 1.0f, beta = 0.0f;
  const int32_t alpha_i = 1, beta_i = 0;
  const bool int8 = p.input_type == CUDA_R_8I;
  const cublasStatus_t status = cublasLtMatmul(
      handle_, plan->desc, int8 ? static_cast<const void*>(&alpha_i) : &alpha, p.w, plan->w_layout,
      p.x, plan->x_layout, int8 ? static_cast<const void*>(&beta_i) : &beta, p.y, plan->y_layout,
      p.y, plan->y_layout, &plan->algo, workspace_.get(), workspace_.bytes(), stream);
  if (status == CUBLAS_STATUS_NOT_SUPPORTED) {
    plan->supported = false;
    return false;
  }
  NIBBLE_CUBLAS_CHECK(status);
  return true;
}

void LtGemm::matmul(const LtProblem& p, cudaStream_t stream) {
  NIBBLE_CHECK(try_matmul(p, stream),
               "cuBLASLt has no algorithm for [{} x {}] · [{} x {}]ᵀ (input type {})", p.m, p.k,
               p.n, p.k, static_cast<int>(p.input_type));
}

void dense_gemm_bf16(LtGemm& lt, const void* x, const void* w, void* y, int64_t m, int64_t n,
                     int64_t k, cudaStream_t stream) {
  LtProblem p;
  p.m = m;
  p.n = n;
  p.k = k;
  p.input_type = CUDA_R_16BF;
  p.x = x;
  p.ldx = k;
  p.w = w;
  p.ldw = k;
  p.y = y;
  p.ldy = n;
  lt.matmul(p, stream);
}

}  // namespace nibble::cuda
