#include "gptq_scheme.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <random>
#include <thread>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/gptq_llama.h"
#include "core/error.h"

namespace nibble::cuda {

nlohmann::json apply_gptq_scheme(CudaLlama& model, const GptqSchemeOptions& o) {
  const CudaLlamaConfig& c = model.config();
  GptqCalibration cal;
  cal.samples = o.samples;
  cal.seqlen = o.seqlen;
  cal.samples_per_chunk = o.samples_per_chunk;
  std::vector<int32_t> tokens(static_cast<size_t>(o.samples * o.seqlen));
  std::mt19937_64 rng(o.seed);
  std::uniform_int_distribution<int32_t> pick(0, int32_t(c.vocab) - 1);
  for (int32_t& t : tokens) t = pick(rng);
  GptqSolverOptions solver;
  solver.bits = 4;
  solver.group_size = o.group_size;
  solver.symmetric = true;
  solver.act_order = o.act_order;
  std::fprintf(stderr, "GPTQ: %lld layers, %lld samples of %lld tokens\n",
               static_cast<long long>(c.n_layers), static_cast<long long>(o.samples),
               static_cast<long long>(o.seqlen));
  const GptqModelResult r = gptq_quantize_llama(model, tokens, cal, solver, [](int64_t layer) {
    std::fprintf(stderr, "GPTQ: layer %lld done\n", static_cast<long long>(layer));
  });

  // Repack on the host's cores (the canonical tensor, then the kernel layout), then free the
  // dense copies.
  const auto repack_start = std::chrono::steady_clock::now();
  std::vector<CudaLinear*> targets;
  for (CudaLlamaLayer& layer : model.layers) {
    targets.insert(targets.end(), {&layer.qkv, &layer.o, &layer.gate_up, &layer.down});
  }
  std::atomic<size_t> next{0};
  std::vector<std::unique_ptr<WxA16Weight>> packed(targets.size());
  std::exception_ptr error;
  std::mutex error_mutex;
  auto work = [&] {
    NIBBLE_CUDA_CHECK(cudaSetDevice(0));
    for (size_t i = next++; i < targets.size(); i = next++) {
      try {
        packed[i] = std::make_unique<WxA16Weight>(
            prepare_wxa16_weight(r.linears[i].to_tensor(solver), "GPTQ linear"));
      } catch (...) {
        std::lock_guard lock(error_mutex);
        error = std::current_exception();
      }
    }
  };
  std::vector<std::thread> threads;
  const unsigned workers = std::clamp(std::thread::hardware_concurrency(), 1u, 12u);
  for (unsigned t = 1; t < workers; ++t) threads.emplace_back(work);
  work();
  for (std::thread& t : threads) t.join();
  if (error) std::rethrow_exception(error);
  double max_damp = 0.0;
  for (size_t i = 0; i < targets.size(); ++i) {
    targets[i]->quantized = std::move(packed[i]);
    targets[i]->dense.resize(0);
    max_damp = std::max(max_damp, r.linears[i].damp_percent);
  }
  const double repack_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - repack_start).count();
  return {{"seconds", r.seconds},
          {"forward_seconds", r.forward_seconds},
          {"solve_seconds", r.solve_seconds},
          {"repack_seconds", repack_s},
          {"samples", o.samples},
          {"seqlen", o.seqlen},
          {"samples_per_chunk", o.samples_per_chunk},
          {"group_size", o.group_size},
          {"act_order", o.act_order},
          {"max_damp_percent", max_damp}};
}

}  // namespace nibble::cuda
