// Quantized linear layers on the CPU. For now every scheme takes the dequantize-to-dense path;
// the packed kernels replace it scheme by scheme.
#include "backend/cpu/linear_weight.h"
#include "quant/reference/dequantize.h"
#include "quant/scheme.h"

namespace nibble::cpu {

std::unique_ptr<LinearWeight> make_quantized_linear(const quant::QuantizedTensor& weight,
                                                    const quant::ActQuant& act,
                                                    WeightType fallback) {
  (void)act;
  const std::vector<float> dense = quant::dequantize(weight);
  return make_dense_linear(DenseMatrix(fallback, weight.rows, weight.cols, dense));
}

}  // namespace nibble::cpu
