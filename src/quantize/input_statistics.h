#pragma once
// What offline quantization learns about one linear layer's inputs X[n, K] from calibration:
// the Hessian H = 2·XᵀX/n (GPTQ), the per-channel mean |x| (AWQ), mean x² (the importance of
// importance-weighted GGUF quantization) and max |x| (SmoothQuant, static activation scales), and
// an evenly spread subset of the rows themselves for searches that need real inputs (AWQ's scale
// and clipping searches, error logs).
#include <cstdint>
#include <vector>

namespace nibble::quantize {

class InputStatistics {
 public:
  // `keep_every`: keep one row in this many (0 keeps none), up to `keep_max` rows.
  InputStatistics(int64_t k, bool want_hessian, int64_t keep_every = 0, int64_t keep_max = 0);

  // x is [m, K] row-major.
  void add(const float* x, int64_t m);

  int64_t cols() const { return k_; }
  int64_t count() const { return n_; }
  bool has_hessian() const { return !xtx_.empty(); }
  // 2·XᵀX/n, [K, K] row-major.
  std::vector<double> hessian() const;
  std::vector<float> mean_abs() const;
  // Per-channel mean x² (llama.cpp's imatrix values). Statistics restored from a file that
  // predates it fall back to the Hessian's diagonal / 2 (the same number); Error without either.
  std::vector<float> mean_square() const;
  const std::vector<float>& max_abs() const { return max_abs_; }
  const std::vector<float>& kept_rows() const { return kept_; }
  int64_t kept_count() const { return k_ > 0 ? int64_t(kept_.size()) / k_ : 0; }

  // The group's input becomes x / s (per channel) after a rescaling folded into the op in front
  // of it (SmoothQuant, AWQ): every statistic is transformed to describe the new input.
  void rescale_inputs(const std::vector<float>& s);

  // Restores a saved state (--load-calibration).
  void restore(int64_t n, std::vector<double> hessian_sum, std::vector<double> abs_sum,
               std::vector<float> max_abs, std::vector<float> kept,
               std::vector<double> square_sum = {});
  const std::vector<double>& hessian_sum() const { return xtx_; }
  const std::vector<double>& abs_sum() const { return abs_sum_; }
  const std::vector<double>& square_sum() const { return square_sum_; }

 private:
  int64_t k_ = 0;
  int64_t n_ = 0;
  int64_t keep_every_ = 0, keep_max_ = 0;
  std::vector<double> xtx_;  // Σ x·xᵀ
  std::vector<double> abs_sum_;
  std::vector<double> square_sum_;
  std::vector<float> max_abs_;
  std::vector<float> kept_;
};

}  // namespace nibble::quantize
