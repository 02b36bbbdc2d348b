#include "quantize/pipeline.h"

#include <fmt/format.h>

#include <time.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <optional>

#include "core/error.h"
#include "core/numeric.h"
#include "core/thread_pool.h"
#include "formats/gguf/gguf_dequant.h"
#include "formats/gguf/gguf_file.h"
#include "formats/gguf/gguf_kquant.h"
#include "formats/gguf/gguf_weighted_quant.h"
#include "model/linear_builder.h"
#include "model/loader.h"
#include "quant/reference/dequantize.h"
#include "quant/reference/quantize.h"
#include "quantize/activation_scaling.h"
#include "quantize/calibration_store.h"
#include "quantize/decoder_layer.h"
#include "quantize/input_statistics.h"
#include "quantize/int_quantizer.h"
#include "quantize/nvfp4_quantizer.h"

namespace nibble::quantize {
namespace {

using Clock = std::chrono::steady_clock;

// Rows of each group's inputs kept for AWQ's searches and the error log.
constexpr int64_t kKeptRows = 512;

bool uses_gptq(Method m) { return m == Method::Gptq || m == Method::SmoothQuantGptq; }
bool uses_smoothquant(Method m) { return m == Method::SmoothQuant || m == Method::SmoothQuantGptq; }

IntQuantOptions int_options(const Recipe& r, quant::ScaleDType scale_dtype) {
  IntQuantOptions o;
  o.bits = r.bits;
  o.group_size = r.group_size;
  o.symmetric = r.symmetric;
  o.scale_dtype = scale_dtype;
  o.min_zero = (r.format == "gptq" && !r.symmetric) ? 1 : 0;
  return o;
}

// `importance`: per input column (--method imatrix), or empty for the reference quantizers.
quant::QuantizedTensor quantize_gguf(const std::vector<float>& w, int64_t rows, int64_t cols,
                                     int type, const std::vector<float>& importance,
                                     const std::string& module) {
  // Rows that do not fill K-quant super-blocks take llama.cpp's fallback type.
  const auto t = gguf::kquant_row_type(static_cast<gguf::GgmlType>(type), cols);
  NIBBLE_CHECK(gguf::can_quantize(t), "{}: nibble has no quantizer for GGUF type {}", module,
               gguf::type_name(t));
  NIBBLE_CHECK(importance.empty() || gguf::can_quantize_weighted(t),
               "{}: GGUF type {} has no importance-weighted quantizer (Q4_0, Q5_0, Q4_K)", module,
               gguf::type_name(t));
  const auto traits = gguf::type_traits(t);
  NIBBLE_CHECK(traits && cols % traits->block_elems == 0,
               "{}: {} input features do not fill whole {} blocks", module, cols,
               gguf::type_name(t));
  quant::QuantizedTensor q;
  q.elem = quant::ElemType::GgufBlock;
  q.gguf_type = int(t);
  q.rows = rows;
  q.cols = cols;
  q.row_bytes = int64_t(gguf::row_bytes(t, cols));
  q.codes.resize(size_t(rows * q.row_bytes));
  const float* weights = importance.empty() ? nullptr : importance.data();
  // Rows are independent: split them over the pool (the weighted search costs ~20 reference
  // quantizations per block).
  ThreadPool::global().parallel_for(rows, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t n = r0; n < r1; ++n)
      gguf::quantize_row_weighted(t, w.data() + n * cols, weights, q.codes.data() + n * q.row_bytes,
                                  cols);
  });
  return q;
}

GptqOptions gptq_options(const Recipe& r) {
  GptqOptions go;
  go.damp_percent = r.damp_percent;
  go.act_order = r.act_order;
  go.static_groups = r.static_groups;
  go.block_size = r.gptq_block_size;
  return go;
}

quant::LinearScheme quantize_linear(const Recipe& r, const PipelineOptions& o,
                                    const std::vector<float>& w, int64_t rows, int64_t cols,
                                    const InputStatistics* stats, const GptqHessian* hessian,
                                    float group_amax, const std::string& module) {
  quant::LinearScheme s;
  s.method = r.format;
  s.act.kind = r.act;
  switch (r.kind) {
    case WeightKind::Int: {
      const IntQuantOptions io = int_options(r, o.int_scale_dtype);
      if (uses_gptq(r.method)) {
        NIBBLE_CHECK(hessian != nullptr, "{}: GPTQ needs a Hessian from calibration", module);
        s.weight = quantize_int_gptq(w, rows, cols, *hessian, io, gptq_options(r));
      } else {
        s.weight = quantize_int_rtn(w, rows, cols, io);
      }
      break;
    }
    case WeightKind::Fp8: {
      const auto g = r.fp8_per_tensor ? quant::Fp8Granularity::PerTensor
                     : r.fp8_block    ? quant::Fp8Granularity::Block
                                      : quant::Fp8Granularity::PerChannel;
      s.weight = quant::quantize_fp8_e4m3(w, rows, cols, g, r.fp8_block, r.fp8_block);
      if (r.act == quant::ActQuantKind::StaticPerTensorFp8) {
        NIBBLE_CHECK(stats != nullptr, "{}: static FP8 needs calibrated input scales", module);
        float amax = 0.0f;
        for (float v : stats->max_abs()) amax = std::max(amax, v);
        s.act.input_scale = amax > 0.0f ? amax / 448.0f : 1.0f;
      }
      if (r.act == quant::ActQuantKind::DynamicPerTokenGroupFp8)
        s.act.group_size = r.act_group_size;
      break;
    }
    case WeightKind::Gguf: {
      std::vector<float> importance;
      if (r.method == Method::Imatrix) {
        NIBBLE_CHECK(stats != nullptr, "{}: --method imatrix needs calibration statistics", module);
        importance = stats->mean_square();
      }
      s.weight = quantize_gguf(w, rows, cols, r.gguf_type, importance, module);
      break;
    }
    case WeightKind::Nvfp4: {
      s.weight = quantize_nvfp4(w, rows, cols, group_amax);
      s.act.group_size = r.act_group_size;
      NIBBLE_CHECK(stats != nullptr, "{}: NVFP4 needs calibrated input scales", module);
      float amax = 0.0f;
      for (float v : stats->max_abs()) amax = std::max(amax, v);
      // ModelOpt's input_scale: the activations' second-level scale, amax / (6·448).
      s.act.input_scale = amax > 0.0f ? amax / (6.0f * 448.0f) : 1.0f;
      break;
    }
    default: fail("{}: unknown weight kind", module);
  }
  return s;
}

// The dtype a dense tensor is exported in: as stored when it is a plain float type, else bf16.
DType export_dtype(const Checkpoint& ckpt, const std::string& name) {
  const CheckpointTensor* t = ckpt.find(name);
  if (t && (t->type == "F32" || t->type == "F16"))
    return t->type == "F32" ? DType::F32 : DType::F16;
  return DType::BF16;
}

// Divides a norm weight by s (1/s moves into the op that produces the group's input), rounded
// to its export dtype; returns the effective per-channel factor the rounded norm applies, so
// the weights can be multiplied by exactly what the norm divides.
std::vector<float> fold_into_norm(std::vector<float>& norm, const std::vector<float>& s,
                                  DType dtype) {
  std::vector<float> effective(s.size());
  for (size_t j = 0; j < s.size(); ++j) {
    const float old = norm[j];
    norm[j] = old / s[j];
    if (dtype == DType::BF16) norm[j] = bf16_to_f32(f32_to_bf16(norm[j]));
    if (dtype == DType::F16) norm[j] = f16_to_f32(f32_to_f16(norm[j]));
    effective[j] = (norm[j] != 0.0f && old != 0.0f) ? old / norm[j] : 1.0f;
  }
  return effective;
}

double relative_error(const std::vector<float>& w, const std::vector<float>& w_hat, int64_t rows,
                      int64_t cols, const InputStatistics* stats) {
  if (!stats || stats->kept_count() == 0) return std::numeric_limits<double>::quiet_NaN();
  const std::vector<float> zero(w.size(), 0.0f);
  const double ref = output_error(w, zero, rows, cols, stats->kept_rows(), stats->kept_count());
  const double err = output_error(w, w_hat, rows, cols, stats->kept_rows(), stats->kept_count());
  return ref > 0.0 ? err / ref : 0.0;
}

double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

// Wall and process CPU time (all threads): on a shared machine the CPU time is what the work
// costs, the wall time also measures the neighbours.
struct Stamp {
  Clock::time_point wall = Clock::now();
  double cpu = process_cpu_seconds();
};
struct Span {
  double wall = 0.0, cpu = 0.0;
};
Span since(const Stamp& t0) {
  return {std::chrono::duration<double>(Clock::now() - t0.wall).count(),
          process_cpu_seconds() - t0.cpu};
}
void add_stage(QuantizedModel& m, const char* stage, Span s) {
  m.stage_seconds[stage] += s.wall;
  m.stage_cpu_seconds[stage] += s.cpu;
}

std::string format_duration(double seconds) {
  const int64_t s = int64_t(std::llround(seconds));
  return s >= 60 ? fmt::format("{}m{:02d}s", s / 60, s % 60) : fmt::format("{}s", s);
}

}  // namespace

std::string linear_module(int64_t layer, const char* suffix) {
  return fmt::format("model.layers.{}.{}", layer, suffix);
}

bool needs_calibration(const Recipe& r) {
  return r.method != Method::Rtn || r.act == quant::ActQuantKind::StaticPerTensorFp8 ||
         r.act == quant::ActQuantKind::Nvfp4 || !r.kv_cache_scheme.empty();
}

QuantizedModel run_quantization(const ModelSource& source, const Recipe& r,
                                const PipelineOptions& o) {
  const ModelConfig& config = source.config;
  const Checkpoint& ckpt = *source.checkpoint;
  NIBBLE_CHECK(config.model_type == "llama" || config.model_type == "mistral" ||
                   config.model_type == "qwen2" || config.model_type == "qwen3",
               "quantize: model_type '{}' is not supported (llama, mistral, qwen2, qwen3)",
               config.model_type);
  QuantizedModel result;
  const bool calibrate = needs_calibration(r);
  const bool loading = !o.load_calibration.empty();
  const int64_t n_layers = config.num_hidden_layers;
  const LayerDims dims(config);

  std::vector<std::vector<int32_t>> samples;
  if (calibrate && !loading) samples = load_calibration_samples(source, o.calibration);
  const int64_t n_samples = int64_t(samples.size());
  const int64_t seqlen = samples.empty() ? 0 : int64_t(samples.front().size());
  result.calibration_samples = n_samples;
  result.calibration_seqlen = seqlen;
  const bool run_model = calibrate && !loading;
  // K/V maxima come from the forward itself; saved statistics hold only the linears' inputs.
  NIBBLE_CHECK(r.kv_cache_scheme.empty() || !loading,
               "--kv-cache-scheme {} needs the calibration forward; it cannot be combined with "
               "--load-calibration",
               r.kv_cache_scheme);

  // Layer input activations: the embedded calibration tokens.
  std::vector<float> x, next;
  std::unique_ptr<DecoderLayerRunner> runner;
  if (run_model) {
    runner = std::make_unique<DecoderLayerRunner>(config, n_samples, seqlen);
    const int64_t hidden = dims.hidden;
    const std::vector<float> embed =
        load_checked(ckpt, "model.embed_tokens.weight", {config.vocab_size, hidden});
    x.resize(size_t(n_samples * seqlen * hidden));
    for (int64_t s = 0; s < n_samples; ++s)
      for (int64_t t = 0; t < seqlen; ++t)
        std::copy_n(embed.data() + int64_t(samples[size_t(s)][size_t(t)]) * hidden, hidden,
                    x.data() + (s * seqlen + t) * hidden);
  }
  if (o.progress && run_model) {
    std::fprintf(stderr, "quantize: %s %s, %lld calibration samples of %lld tokens, %lld layers\n",
                 method_name(r.method).c_str(), r.scheme.c_str(), static_cast<long long>(n_samples),
                 static_cast<long long>(seqlen), static_cast<long long>(n_layers));
  }

  const auto start = Clock::now();
  for (int64_t layer = 0; layer < n_layers; ++layer) {
    LayerWeights w = load_layer_weights(ckpt, config, layer);
    LayerStatistics stats;
    if (loading) stats = load_layer_statistics(o.load_calibration, layer, dims);
    const std::string prefix = fmt::format("model.layers.{}.", layer);
    std::string layer_log;

    for (InputGroup group : kAllGroups) {
      std::vector<LinearName> names;
      for (LinearName n : kAllLinears)
        if (input_group(n) == group) names.push_back(n);
      const int64_t k = dims.cols(names.front());
      // Observe this group's inputs (its predecessors in the layer are already quantized).
      if (run_model) {
        const int64_t tokens = runner->tokens();
        // Kept rows feed AWQ's searches and the error log; without either none are kept.
        const int64_t keep = o.error_log || r.method == Method::Awq ? kKeptRows : 0;
        auto st = std::make_unique<InputStatistics>(k, uses_gptq(r.method),
                                                    std::max<int64_t>(1, tokens / kKeptRows), keep);
        Span sink_time;
        const InputSink sink = [&](InputGroup g, const float* in, int64_t m) {
          const Stamp t0;
          if (g == group) st->add(in, m);
          const Span s = since(t0);
          sink_time.wall += s.wall;
          sink_time.cpu += s.cpu;
        };
        const Stamp t0;
        switch (group) {
          case InputGroup::Qkv: runner->observe_qkv(w, x, sink); break;
          case InputGroup::O:
            runner->run_attention(w, x, sink);
            if (!r.kv_cache_scheme.empty()) {
              // fp8 e4m3's largest finite value is 448; an all-zero tensor keeps scale 1.
              const auto scale = [](float amax) { return amax > 0.0f ? amax / 448.0f : 1.0f; };
              result.kv_scales.emplace_back(scale(runner->k_amax()), scale(runner->v_amax()));
              layer_log +=
                  fmt::format(" |k|={:.3g} |v|={:.3g}", runner->k_amax(), runner->v_amax());
            }
            break;
          case InputGroup::GateUp: runner->run_o(w, x, sink); break;
          case InputGroup::Down: runner->run_gate_up(w, sink); break;
        }
        const Span total = since(t0);
        add_stage(result, "forward", {total.wall - sink_time.wall, total.cpu - sink_time.cpu});
        add_stage(result, "statistics", sink_time);
        stats[group] = std::move(st);
      }
      InputStatistics* st = stats.count(group) ? stats[group].get() : nullptr;
      if (o.keep_importance && st && st->count() > 0) {
        const std::vector<float> mean_square = st->mean_square();
        for (LinearName n : names)
          if (!r.ignored(prefix + linear_suffix(n)))
            result.importance[prefix + linear_suffix(n)] = {mean_square, st->count()};
      }

      std::vector<GroupWeight> group_weights;
      for (LinearName n : names)
        if (!r.ignored(prefix + linear_suffix(n))) group_weights.push_back({&w[n], dims.rows(n)});
      // Scales folded into the RMSNorm in front of the group: q/k/v and gate/up.
      const bool foldable = group == InputGroup::Qkv || group == InputGroup::GateUp;
      const bool whole_group = group_weights.size() == names.size();
      const Stamp search_start;
      if (st && foldable && whole_group &&
          (uses_smoothquant(r.method) || r.method == Method::Awq)) {
        std::vector<float> s;
        float alpha = r.smoothquant_alpha;
        if (uses_smoothquant(r.method)) {
          s = smoothquant_scales(st->max_abs(), group_weights, k, r.smoothquant_alpha);
        } else {
          s = awq_search_scales(st->kept_rows(), st->kept_count(), st->mean_abs(), group_weights, k,
                                int_options(r, o.int_scale_dtype), r.awq_grid, alpha);
        }
        const std::string norm_name =
            prefix + (group == InputGroup::Qkv ? "input_layernorm.weight"
                                               : "post_attention_layernorm.weight");
        std::vector<float>& norm = group == InputGroup::Qkv ? w.attn_norm : w.mlp_norm;
        const std::vector<float> eff = fold_into_norm(norm, s, export_dtype(ckpt, norm_name));
        scale_weight_columns(group_weights, k, eff);
        result.overrides[norm_name] = norm;
        // The statistics describe x; the group now sees x / s.
        st->rescale_inputs(eff);
        layer_log += fmt::format(" {}:α={:.2f}", group_name(group), alpha);
      }
      add_stage(result, "scale_search", since(search_start));

      // One factorisation of the group's Hessian serves all its linears.
      std::optional<GptqHessian> hessian;
      if (uses_gptq(r.method) && st && st->has_hessian() && !group_weights.empty()) {
        const Stamp t0;
        hessian = prepare_gptq_hessian(st->hessian(), k, gptq_options(r));
        add_stage(result, "quantize", since(t0));
      }
      // Fused layers share NVFP4's second-level scale: the amax of the whole group.
      float group_amax = 0.0f;
      for (const GroupWeight& g : group_weights)
        for (float v : *g.w) group_amax = std::max(group_amax, std::fabs(v));
      for (LinearName n : names) {
        const std::string module = prefix + linear_suffix(n);
        if (r.ignored(module)) continue;
        const int64_t rows = dims.rows(n);
        std::vector<float>& wn = w[n];
        const Stamp clip_start;
        if (r.method == Method::Awq && st && st->kept_count() > 0 && n != LinearName::Q &&
            n != LinearName::K) {
          // AWQ leaves q/k unclipped: their errors are amplified by the attention softmax.
          awq_clip(wn, rows, k, st->kept_rows(), st->kept_count(),
                   int_options(r, o.int_scale_dtype));
        }
        add_stage(result, "clip_search", since(clip_start));
        Stamp t0;
        quant::LinearScheme scheme = quantize_linear(
            r, o, wn, rows, k, st, hessian ? &*hessian : nullptr, group_amax, module);
        add_stage(result, "quantize", since(t0));
        t0 = Stamp();
        std::vector<float> deq = quant::dequantize(scheme.weight);
        const double rel = relative_error(wn, deq, rows, k, st);
        add_stage(result, "error_log", since(t0));
        result.report.push_back({module, rel});
        if (!std::isnan(rel)) {
          const std::string_view suffix = linear_suffix(n);
          layer_log += fmt::format(" {}={:.2e}", suffix.substr(suffix.find('.') + 1), rel);
        }
        wn = std::move(deq);
        result.linears.emplace(module, std::move(scheme));
      }
    }
    if (run_model) {
      const Stamp t0;
      runner->run_down(w, next);
      x.swap(next);
      add_stage(result, "forward", since(t0));
    }
    if (!o.save_calibration.empty() && run_model)
      save_layer_statistics(o.save_calibration, layer, stats);
    if (o.progress) {
      const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
      const double left = elapsed / double(layer + 1) * double(n_layers - layer - 1);
      std::fprintf(stderr, "quantize: layer %lld of %lld (%s elapsed, %s left)%s\n",
                   static_cast<long long>(layer + 1), static_cast<long long>(n_layers),
                   format_duration(elapsed).c_str(), format_duration(left).c_str(),
                   layer_log.c_str());
    }
  }
  return result;
}

}  // namespace nibble::quantize
