// nibble_gpu_decode: batch-1 greedy decode of a Llama-architecture safetensors checkpoint with
// every weight on the GPU (src/backend/cuda/cuda_llama.h), for end-to-end checks and the
// gpt-fast protocol (a 5-token prompt, 200 new tokens).
//
//   nibble_gpu_decode --model DIR [--scheme bf16|w4a16|w4a16-ref|w4a16-gptq|w8a16|fp8|w8a8-int8]
//       [--group-size 128] [--gptq-samples 128 --gptq-seqlen 2048 --gptq-chunk 8]
//       [--gptq-act-order]
//       [--prompt-tokens 1,2,3,4,5] [--new-tokens 200] [--runs 3] [--disable-cuda-graph]
//       [--dump-logits FILE --dump-steps 32] [--json FILE]
//       [--gemv-ctas-per-sm N] [--gemv-units-per-split N] [--attention-min-partition N]
//       [--gemv-programmatic-launch 0|1] [--profile-steps N] [--sweep-gemv-ctas 1,2,4,8]
//       [--sweep-gemv-units 0,4] [--sweep-attention-partition 64,32,16] [--sweep-gemv-pdl 0,1]
//       [--sweep-gemv-bulk 0,1] [--sweep-bulk-units 1,2,4] [--sweep-bulk-stages 4,6,8]
//       [--sweep-bulk-ctas 1,2,3] [--sweep-fusion 0,1]
//       [--throughput-requests 64 --throughput-prompt 1024 --throughput-new 256
//        --prefill-rows 4096]
//
// Schemes: bf16 keeps the checkpoint's weights (cuBLASLt); w4a16 quantizes every linear,
// lm_head included, at load with symmetric RTN int4 (per-group scales, group 128:
// quant::quantize_rtn_int) into the W4A16 kernel layout; w4a16-ref runs the same int4 weights
// dequantized to bf16 through the dense path (the reference the w4a16 kernels must match);
// w4a16-gptq quantizes the decoder linears with GPTQ on the GPU instead (gptq_scheme.h; lm_head
// as w4a16) and reports its time under "gptq"; w8a16 is symmetric RTN int8 with one scale per
// output row (torchao's int8wo) on the W8A16 kernels; fp8 is e4m3 weights with one scale per output
// row and dynamic per-token e4m3 activations (nibble's --quantization fp8): the bulk-copy GEMV on
// Hopper (which quantizes the activations itself), cuBLASLt otherwise; both copies of the codes are
// held.
//
// Prints one JSON object: the generated tokens and timings (CUDA events; the first run is a
// warm-up that also captures the graph; tokens/s = new tokens / the median run's time, prefill
// included, as gpt-fast reports; decode_tokens_per_s counts the steps after the prompt only;
// eager_* is one more generation without the graph).
// --dump-logits writes f32 logits [prompt + dump-steps][vocab] from a separate greedy run.
// --profile-steps N adds "profile": N eager steps from the middle of the generation (prompt, then
// half the new tokens through the graph, so attention sees a typical context) with a CUDA
// event after every operation (CudaLlama::profile_step), GPU ms per step for each kind of operation
// summed over the layers, with weight GB/s for the linears. The sweeps rerun the timed generation
// (one run after a warm-up, graph recaptured) and the profile for each value of a kernel tuning
// knob: the W4A16 decode kernel's CTAs-per-SM target and short-split rule (its split-K;
// WxA16GemvTuning) and attention's smallest partition.
// --throughput-requests N adds "throughput": N concurrent requests of random prompts through the
// batched forward (batch_throughput.h: prefill, then all N decoding together).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <fmt/ranges.h>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <numbers>
#include <string>
#include <thread>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_llama.h"
#include "batch_throughput.h"
#include "core/error.h"
#include "formats/safetensors/safetensors_file.h"
#include "gptq_scheme.h"
#include "quant/reference/quantize.h"

namespace nibble::cuda {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

struct Options {
  fs::path model;
  std::string scheme = "bf16";
  int64_t group_size = 128;
  std::vector<int32_t> prompt{1, 2, 3, 4, 5};
  int64_t new_tokens = 200;
  int runs = 3;
  bool use_graph = true;
  fs::path dump_logits;
  int64_t dump_steps = 32;
  fs::path json_out;
  int gemv_ctas_per_sm = 0;       // 0: the kernel's default
  int gemv_units_per_split = -1;  // -1: the kernel's default
  int gemv_programmatic_launch = -1;
  int attention_min_partition = 0;
  int profile_steps = 0;
  std::vector<int32_t> sweep_gemv_ctas;
  std::vector<int32_t> sweep_gemv_units;
  std::vector<int32_t> sweep_gemv_pdl;
  std::vector<int32_t> sweep_gemv_bulk;
  std::vector<int32_t> sweep_bulk_units;
  std::vector<int32_t> sweep_bulk_stages;
  std::vector<int32_t> sweep_bulk_ctas;
  std::vector<int32_t> sweep_fusion;
  std::vector<int32_t> sweep_attention_partition;
  ThroughputOptions throughput{.requests = 0};  // requests 0: not run
  GptqSchemeOptions gptq;
};

std::vector<int32_t> parse_tokens(const std::string& text) {
  std::vector<int32_t> out;
  size_t begin = 0;
  while (begin <= text.size()) {
    const size_t end = std::min(text.find(',', begin), text.size());
    const std::string item = text.substr(begin, end - begin);
    NIBBLE_CHECK(!item.empty() && item.find_first_not_of("0123456789") == std::string::npos,
                 "--prompt-tokens: '{}' is not a token id", item);
    out.push_back(int32_t(std::stol(item)));
    begin = end + 1;
  }
  return out;
}

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      NIBBLE_CHECK(i + 1 < argc, "{} needs a value", arg);
      return argv[++i];
    };
    if (arg == "--model") {
      o.model = value();
    } else if (arg == "--scheme") {
      o.scheme = value();
    } else if (arg == "--gptq-samples") {
      o.gptq.samples = std::stoll(value());
    } else if (arg == "--gptq-seqlen") {
      o.gptq.seqlen = std::stoll(value());
    } else if (arg == "--gptq-act-order") {
      o.gptq.act_order = true;
    } else if (arg == "--gptq-chunk") {
      o.gptq.samples_per_chunk = std::stoll(value());
    } else if (arg == "--group-size") {
      o.group_size = std::stol(value());
    } else if (arg == "--prompt-tokens") {
      o.prompt = parse_tokens(value());
    } else if (arg == "--new-tokens") {
      o.new_tokens = std::stol(value());
    } else if (arg == "--runs") {
      o.runs = std::stoi(value());
    } else if (arg == "--disable-cuda-graph") {
      o.use_graph = false;
    } else if (arg == "--dump-logits") {
      o.dump_logits = value();
    } else if (arg == "--dump-steps") {
      o.dump_steps = std::stol(value());
    } else if (arg == "--json") {
      o.json_out = value();
    } else if (arg == "--gemv-ctas-per-sm") {
      o.gemv_ctas_per_sm = std::stoi(value());
    } else if (arg == "--gemv-units-per-split") {
      o.gemv_units_per_split = std::stoi(value());
    } else if (arg == "--gemv-programmatic-launch") {
      o.gemv_programmatic_launch = std::stoi(value());
    } else if (arg == "--sweep-gemv-pdl") {
      o.sweep_gemv_pdl = parse_tokens(value());
    } else if (arg == "--sweep-gemv-bulk") {
      o.sweep_gemv_bulk = parse_tokens(value());
    } else if (arg == "--sweep-bulk-units") {
      o.sweep_bulk_units = parse_tokens(value());
    } else if (arg == "--sweep-fusion") {
      o.sweep_fusion = parse_tokens(value());
    } else if (arg == "--sweep-bulk-ctas") {
      o.sweep_bulk_ctas = parse_tokens(value());
    } else if (arg == "--sweep-bulk-stages") {
      o.sweep_bulk_stages = parse_tokens(value());
    } else if (arg == "--sweep-gemv-units") {
      o.sweep_gemv_units = parse_tokens(value());
    } else if (arg == "--attention-min-partition") {
      o.attention_min_partition = std::stoi(value());
    } else if (arg == "--profile-steps") {
      o.profile_steps = std::stoi(value());
    } else if (arg == "--sweep-gemv-ctas") {
      o.sweep_gemv_ctas = parse_tokens(value());
    } else if (arg == "--throughput-requests") {
      o.throughput.requests = std::stoll(value());
    } else if (arg == "--throughput-prompt") {
      o.throughput.prompt_tokens = std::stoll(value());
    } else if (arg == "--throughput-new") {
      o.throughput.new_tokens = std::stoll(value());
    } else if (arg == "--prefill-rows") {
      o.throughput.prefill_rows = std::stoll(value());
    } else if (arg == "--sweep-attention-partition") {
      o.sweep_attention_partition = parse_tokens(value());
    } else {
      fail("unknown argument '{}' (see the header of bench/gpu/decode/nibble_gpu_decode.cc)", arg);
    }
  }
  NIBBLE_CHECK(!o.model.empty(), "--model DIR is required");
  NIBBLE_CHECK(o.scheme == "bf16" || o.scheme == "w4a16" || o.scheme == "w4a16-ref" ||
                   o.scheme == "w4a16-gptq" || o.scheme == "w8a16" || o.scheme == "fp8" ||
                   o.scheme == "w8a8-int8",
               "--scheme {} (bf16, w4a16, w4a16-ref, w4a16-gptq, w8a16, fp8 or w8a8-int8)",
               o.scheme);
  NIBBLE_CHECK(!o.prompt.empty() && o.new_tokens >= 1 && o.runs >= 1 && o.dump_steps >= 0,
               "need a prompt, --new-tokens ≥ 1, --runs ≥ 1 and --dump-steps ≥ 0");
  NIBBLE_CHECK(o.profile_steps >= 0 && o.profile_steps < o.new_tokens,
               "--profile-steps {} (0 .. --new-tokens - 1)", o.profile_steps);
  for (int32_t v : o.sweep_gemv_ctas) NIBBLE_CHECK(v >= 1, "--sweep-gemv-ctas: {} < 1", v);
  NIBBLE_CHECK(o.gemv_ctas_per_sm >= 0, "--gemv-ctas-per-sm {}", o.gemv_ctas_per_sm);
  return o;
}

// transformers' default / linear / llama3 RoPE frequencies, all in float32.
std::vector<float> rope_frequencies(const json& rope, double theta, int64_t head_dim) {
  std::vector<float> inv(size_t(head_dim / 2));
  for (size_t i = 0; i < inv.size(); ++i) {
    inv[i] = 1.0f / float(std::pow(theta, double(float(2 * i) / float(head_dim))));
  }
  if (rope.is_null()) return inv;
  const std::string type = rope.value("rope_type", rope.value("type", std::string("default")));
  if (type == "default") return inv;
  const float factor = rope.value("factor", 1.0f);
  NIBBLE_CHECK(factor > 0, "config.json: rope scaling factor {}", factor);
  if (type == "linear") {
    for (float& f : inv) f /= factor;
    return inv;
  }
  NIBBLE_CHECK(type == "llama3", "config.json: rope_type '{}' (default, linear or llama3)", type);
  const float low = rope.value("low_freq_factor", 1.0f),
              high = rope.value("high_freq_factor", 4.0f);
  const float old_len = rope.value("original_max_position_embeddings", 8192.0f);
  NIBBLE_CHECK(low > 0 && high != low && old_len > 0,
               "config.json: inconsistent llama3 rope scaling");
  const float low_wavelen = old_len / low, high_wavelen = old_len / high;
  for (float& f : inv) {
    const float wavelen = float(2.0 * std::numbers::pi) / f;
    const float scaled = wavelen > low_wavelen ? f / factor : f;
    if (wavelen < high_wavelen || wavelen > low_wavelen) {
      f = scaled;
    } else {
      const float smooth = (old_len / wavelen - low) / (high - low);
      f = (1.0f - smooth) * scaled / factor + smooth * scaled;
    }
  }
  return inv;
}

CudaLlamaConfig read_config(const fs::path& dir, bool& tied) {
  std::ifstream in(dir / "config.json");
  NIBBLE_CHECK(in.good(), "{}: cannot open config.json", dir.string());
  const json j = json::parse(in, nullptr, true, true);
  auto field = [&](const char* name) -> int64_t {
    NIBBLE_CHECK(j.contains(name) && j[name].is_number_integer(),
                 "{}/config.json: integer field '{}' is missing", dir.string(), name);
    return j[name].get<int64_t>();
  };
  CudaLlamaConfig c;
  c.hidden = field("hidden_size");
  c.n_layers = field("num_hidden_layers");
  c.n_heads = field("num_attention_heads");
  c.n_kv_heads = j.contains("num_key_value_heads") ? field("num_key_value_heads") : c.n_heads;
  c.head_dim = j.contains("head_dim") && j["head_dim"].is_number_integer()
                   ? j["head_dim"].get<int64_t>()
                   : c.hidden / c.n_heads;
  c.intermediate = field("intermediate_size");
  c.vocab = field("vocab_size");
  c.rms_eps = j.value("rms_norm_eps", 1e-5f);
  // transformers 5 keeps rope_theta and the scaling in rope_parameters; 4.x at the top level.
  json rope =
      j.contains("rope_parameters") ? j["rope_parameters"] : j.value("rope_scaling", json());
  double theta = j.value("rope_theta", 10000.0);
  if (rope.is_object() && rope.contains("rope_theta")) theta = rope["rope_theta"].get<double>();
  c.inv_freq = rope_frequencies(rope, theta, c.head_dim);
  tied = j.value("tie_word_embeddings", false);
  return c;
}

class Checkpoint {
 public:
  explicit Checkpoint(const fs::path& dir) {
    for (const auto& entry : fs::directory_iterator(dir)) {
      if (entry.path().extension() != ".safetensors") continue;
      files_.push_back(SafetensorsFile::open(entry.path()));
      for (const SafetensorsTensor& t : files_.back()->tensors()) tensors_[t.name] = &t;
    }
    NIBBLE_CHECK(!files_.empty(), "{}: no .safetensors files", dir.string());
  }
  const SafetensorsTensor& get(const std::string& name, std::vector<int64_t> shape) const {
    const auto it = tensors_.find(name);
    NIBBLE_CHECK(it != tensors_.end(), "checkpoint: tensor '{}' is missing", name);
    const SafetensorsTensor& t = *it->second;
    NIBBLE_CHECK(t.shape == shape, "checkpoint: '{}' has shape [{}], expected [{}]", name,
                 fmt::join(t.shape, ", "), fmt::join(shape, ", "));
    NIBBLE_CHECK(t.dtype == DType::BF16, "checkpoint: '{}' is {}, expected BF16", name,
                 dtype_name(t.dtype));
    return t;
  }
  bool has(const std::string& name) const { return tensors_.count(name) != 0; }

 private:
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, const SafetensorsTensor*> tensors_;
};

DeviceBuffer upload_vector(const SafetensorsTensor& t) {
  DeviceBuffer b(t.nbytes);
  b.upload(t.data, t.nbytes);
  return b;
}

// Rows of several bf16 tensors stacked into one linear (q|k|v, gate|up), in the chosen scheme.
CudaLinear make_linear(const std::vector<const SafetensorsTensor*>& parts, const Options& o,
                       const std::string& scheme) {
  CudaLinear w;
  w.cols = parts[0]->shape[1];
  for (const SafetensorsTensor* p : parts) w.rows += p->shape[0];
  if (scheme == "bf16") {
    w.dense.resize(size_t(w.rows * w.cols * 2));
    size_t offset = 0;
    for (const SafetensorsTensor* p : parts) {
      NIBBLE_CUDA_CHECK(
          cudaMemcpy(w.dense.get<uint8_t>() + offset, p->data, p->nbytes, cudaMemcpyHostToDevice));
      offset += p->nbytes;
    }
    return w;
  }
  std::vector<float> values(size_t(w.rows * w.cols));
  size_t at = 0;
  for (const SafetensorsTensor* p : parts) {
    const auto* bits = reinterpret_cast<const uint16_t*>(p->data);
    for (uint64_t i = 0; i < p->num_elements(); ++i) {
      const uint32_t word = uint32_t(bits[i]) << 16;
      std::memcpy(&values[at++], &word, sizeof(float));
    }
  }
  if (scheme == "fp8") {
    const quant::QuantizedTensor q =
        quant::quantize_fp8_e4m3(values, w.rows, w.cols, quant::Fp8Granularity::PerChannel);
    w.fp8 = std::make_unique<Fp8Weight>(prepare_fp8_weight(q, parts[0]->name.c_str()));
    // The same codes in the bulk-copy GEMV's layout for batch-1 steps (a second copy).
    w.fp8_gemv = std::make_unique<WxA16Weight>(prepare_wxa16_weight(q, parts[0]->name.c_str()));
    return w;
  }
  if (scheme == "w8a8-int8") {
    const quant::QuantizedTensor q = quant::quantize_rtn_int(
        values, w.rows, w.cols, quant::RtnIntOptions{.bits = 8, .group_size = -1});
    w.int8 = std::make_unique<Int8Weight>(prepare_int8_weight(q, parts[0]->name.c_str()));
    return w;
  }
  if (scheme == "w8a16") {
    const quant::QuantizedTensor q = quant::quantize_rtn_int(
        values, w.rows, w.cols, quant::RtnIntOptions{.bits = 8, .group_size = -1});
    w.quantized = std::make_unique<WxA16Weight>(prepare_wxa16_weight(q, parts[0]->name.c_str()));
    return w;
  }
  const quant::QuantizedTensor q = quant::quantize_rtn_int(
      values, w.rows, w.cols,
      quant::RtnIntOptions{.bits = 4, .group_size = o.group_size, .symmetric = true});
  values = {};
  auto packed = std::make_unique<WxA16Weight>(prepare_wxa16_weight(q, parts[0]->name.c_str()));
  if (scheme == "w4a16") {
    w.quantized = std::move(packed);
    return w;
  }
  // w4a16-ref: the kernel layout's exact bf16 dequantization, compacted to [rows][cols].
  const size_t padded_cols = size_t(packed->padded_cols());
  DeviceBuffer full(size_t(packed->n_tiles * 8) * padded_cols * 2);
  wxa16_dequantize(*packed, full.get(), nullptr);
  w.dense.resize(size_t(w.rows * w.cols * 2));
  NIBBLE_CUDA_CHECK(cudaMemcpy2D(w.dense.get(), size_t(w.cols) * 2, full.get(), padded_cols * 2,
                                 size_t(w.cols) * 2, size_t(w.rows), cudaMemcpyDeviceToDevice));
  return w;
}

void load(CudaLlama& model, const Checkpoint& ckpt, bool tied, const Options& o) {
  const CudaLlamaConfig& c = model.config();
  const int64_t q_rows = c.n_heads * c.head_dim, kv_rows = c.n_kv_heads * c.head_dim;
  model.embedding = upload_vector(ckpt.get("model.embed_tokens.weight", {c.vocab, c.hidden}));
  model.final_norm = upload_vector(ckpt.get("model.norm.weight", {c.hidden}));
  struct Job {
    CudaLinear* target;
    std::vector<const SafetensorsTensor*> parts;
  };
  std::vector<Job> jobs;
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    CudaLlamaLayer& layer = model.layers[size_t(l)];
    layer.attn_norm = upload_vector(ckpt.get(p + "input_layernorm.weight", {c.hidden}));
    layer.mlp_norm = upload_vector(ckpt.get(p + "post_attention_layernorm.weight", {c.hidden}));
    jobs.push_back({&layer.qkv,
                    {&ckpt.get(p + "self_attn.q_proj.weight", {q_rows, c.hidden}),
                     &ckpt.get(p + "self_attn.k_proj.weight", {kv_rows, c.hidden}),
                     &ckpt.get(p + "self_attn.v_proj.weight", {kv_rows, c.hidden})}});
    jobs.push_back({&layer.o, {&ckpt.get(p + "self_attn.o_proj.weight", {c.hidden, q_rows})}});
    jobs.push_back({&layer.gate_up,
                    {&ckpt.get(p + "mlp.gate_proj.weight", {c.intermediate, c.hidden}),
                     &ckpt.get(p + "mlp.up_proj.weight", {c.intermediate, c.hidden})}});
    jobs.push_back(
        {&layer.down, {&ckpt.get(p + "mlp.down_proj.weight", {c.hidden, c.intermediate})}});
  }
  const std::string head =
      tied || !ckpt.has("lm_head.weight") ? "model.embed_tokens.weight" : "lm_head.weight";
  jobs.push_back({&model.lm_head, {&ckpt.get(head, {c.vocab, c.hidden})}});
  // Quantization is host work (RTN + repack): spread over the cores.
  const unsigned workers =
      o.scheme == "bf16" ? 1u : std::clamp(std::thread::hardware_concurrency(), 1u, 12u);
  std::mutex mutex;
  size_t next = 0;
  std::string error;
  auto work = [&] {
    NIBBLE_CUDA_CHECK(cudaSetDevice(0));
    while (true) {
      size_t i;
      {
        std::lock_guard lock(mutex);
        if (next == jobs.size() || !error.empty()) return;
        i = next++;
      }
      try {
        // w4a16-gptq: the decoder linears stay bf16 for GPTQ; lm_head takes w4a16's RTN.
        const bool is_head = jobs[i].target == &model.lm_head;
        const std::string scheme = o.scheme != "w4a16-gptq" ? o.scheme
                                   : is_head                ? std::string("w4a16")
                                                            : std::string("bf16");
        *jobs[i].target = make_linear(jobs[i].parts, o, scheme);
      } catch (const std::exception& e) {
        std::lock_guard lock(mutex);
        error = e.what();
      }
    }
  };
  std::vector<std::thread> threads;
  for (unsigned t = 1; t < workers; ++t) threads.emplace_back(work);
  work();
  for (std::thread& t : threads) t.join();
  NIBBLE_CHECK(error.empty(), "{}", error);
  model.finish_loading();
}

struct RunResult {
  std::vector<int32_t> tokens;
  float total_ms = 0.0f;
  float decode_ms = 0.0f;
};

// The prompt, then new_tokens - 1 steps on the model's own picks (the last pick is not fed).
RunResult generate(CudaLlama& model, const Options& o, std::vector<float>* logits_dump) {
  cudaEvent_t start, prefilled, end;
  NIBBLE_CUDA_CHECK(cudaEventCreate(&start));
  NIBBLE_CUDA_CHECK(cudaEventCreate(&prefilled));
  NIBBLE_CUDA_CHECK(cudaEventCreate(&end));
  model.reset();
  NIBBLE_CUDA_CHECK(cudaEventRecord(start, model.stream()));
  auto keep_logits = [&](int64_t step) {
    if (logits_dump == nullptr || step >= int64_t(o.prompt.size()) + o.dump_steps) return;
    const std::vector<float> l = model.logits();
    logits_dump->insert(logits_dump->end(), l.begin(), l.end());
  };
  int64_t step = 0;
  for (int32_t token : o.prompt) {
    model.step(token, o.use_graph);
    keep_logits(step++);
  }
  NIBBLE_CUDA_CHECK(cudaEventRecord(prefilled, model.stream()));
  for (int64_t i = 1; i < o.new_tokens; ++i) {
    model.step(-1, o.use_graph);
    keep_logits(step++);
  }
  NIBBLE_CUDA_CHECK(cudaEventRecord(end, model.stream()));
  NIBBLE_CUDA_CHECK(cudaEventSynchronize(end));
  RunResult r;
  NIBBLE_CUDA_CHECK(cudaEventElapsedTime(&r.total_ms, start, end));
  NIBBLE_CUDA_CHECK(cudaEventElapsedTime(&r.decode_ms, prefilled, end));
  const std::vector<int32_t> history = model.history();
  r.tokens.assign(history.begin() + int64_t(o.prompt.size()) - 1, history.end());
  cudaEventDestroy(start);
  cudaEventDestroy(prefilled);
  cudaEventDestroy(end);
  return r;
}

// GPU ms per step by kind of operation (summed over the layers), averaged over `steps` eager
// steps that follow the prompt.
json profile(CudaLlama& model, const Options& o) {
  model.reset();
  for (int32_t token : o.prompt) model.step(token, o.use_graph);
  const int64_t lead = std::max<int64_t>(0, (o.new_tokens - 1) / 2 - o.profile_steps / 2);
  for (int64_t i = 0; i < lead; ++i) model.step(-1, o.use_graph);
  struct Sum {
    double ms = 0.0;
    size_t calls = 0, bytes = 0;
  };
  std::vector<std::string> order;
  std::map<std::string, Sum> sums;
  double total_ms = 0.0;
  for (int i = 0; i < o.profile_steps; ++i) {
    for (const CudaLlama::OpTime& t : model.profile_step(-1)) {
      if (!sums.count(t.op)) order.push_back(t.op);
      Sum& sum = sums[t.op];
      sum.ms += t.ms;
      sum.calls += 1;
      sum.bytes += t.weight_bytes;
      total_ms += t.ms;
    }
  }
  json ops = json::array();
  const double steps = double(o.profile_steps);
  for (const std::string& op : order) {
    const Sum& sum = sums[op];
    json entry;
    entry["op"] = op;
    entry["ms_per_step"] = sum.ms / steps;
    entry["calls_per_step"] = double(sum.calls) / steps;
    entry["us_per_call"] = sum.ms * 1e3 / double(sum.calls);
    entry["weight_bytes_per_step"] = double(sum.bytes) / steps;
    entry["weight_gb_per_s"] = sum.ms > 0 ? double(sum.bytes) / (sum.ms / 1e3) / 1e9 : 0.0;
    entry["share"] = sum.ms / total_ms;
    ops.push_back(entry);
  }
  json out;
  out["steps"] = o.profile_steps;
  out["first_position"] = int64_t(o.prompt.size()) + lead;
  out["step_ms"] = total_ms / steps;
  out["ops"] = ops;
  return out;
}

// One warm-up generation (graph capture) and one timed, for a sweep point.
json sweep_point(CudaLlama& model, const Options& o, const std::vector<int32_t>& reference) {
  model.discard_graph();
  generate(model, o, nullptr);
  const RunResult r = generate(model, o, nullptr);
  json out;
  out["tokens_per_s"] = double(o.new_tokens) / (r.total_ms / 1e3);
  out["step_ms"] = o.new_tokens > 1 ? r.decode_ms / double(o.new_tokens - 1) : 0.0;
  out["tokens_equal_default"] = r.tokens == reference;
  if (o.profile_steps > 0) out["profile"] = profile(model, o);
  return out;
}

int run(int argc, char** argv) {
  const Options o = parse_options(argc, argv);
  const auto load_start = std::chrono::steady_clock::now();
  bool tied = false;
  CudaLlamaConfig config = read_config(o.model, tied);
  const int64_t vocab = config.vocab;
  if (o.gemv_ctas_per_sm > 0) wxa16_gemv_tuning().ctas_per_sm = o.gemv_ctas_per_sm;
  if (o.gemv_programmatic_launch >= 0) {
    wxa16_gemv_tuning().programmatic_launch = o.gemv_programmatic_launch != 0;
  }
  if (o.gemv_units_per_split >= 0) {
    wxa16_gemv_tuning().max_units_per_split = o.gemv_units_per_split;
  }
  if (o.attention_min_partition > 0) {
    paged_attention_tuning().min_partition = o.attention_min_partition;
  }
  const Checkpoint ckpt(o.model);
  CudaLlama model(std::move(config), int64_t(o.prompt.size()) + o.new_tokens);
  for (int32_t t : o.prompt) NIBBLE_CHECK(t < vocab, "--prompt-tokens: {} ≥ vocab {}", t, vocab);
  load(model, ckpt, tied, o);
  NIBBLE_CUDA_CHECK(cudaDeviceSynchronize());
  const double load_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();
  json gptq;
  if (o.scheme == "w4a16-gptq") {
    GptqSchemeOptions g = o.gptq;
    g.group_size = o.group_size;
    gptq = apply_gptq_scheme(model, g);
  }

  json out;
  out["scheme"] = o.scheme;
  out["group_size"] = o.scheme.starts_with("w4a16") ? o.group_size : 0;
  if (!gptq.is_null()) out["gptq"] = gptq;
  out["cuda_graph"] = o.use_graph;
  out["load_s"] = load_s;
  out["step_weight_bytes"] = model.step_weight_bytes();
  out["prompt_tokens"] = o.prompt;
  out["new_tokens"] = o.new_tokens;
  if (!o.dump_logits.empty()) {
    std::vector<float> dump;
    const RunResult r = generate(model, o, &dump);
    std::ofstream f(o.dump_logits, std::ios::binary);
    f.write(reinterpret_cast<const char*>(dump.data()), std::streamsize(dump.size() * 4));
    NIBBLE_CHECK(f.good(), "{}: write failed", o.dump_logits.string());
    out["dump_tokens"] = r.tokens;
    out["dump_rows"] = dump.size() / size_t(vocab);
  }
  std::vector<RunResult> runs;
  for (int i = 0; i <= o.runs; ++i) runs.push_back(generate(model, o, nullptr));
  runs.erase(runs.begin());  // warm-up (and graph capture)
  std::sort(runs.begin(), runs.end(),
            [](const RunResult& a, const RunResult& b) { return a.total_ms < b.total_ms; });
  const RunResult& median = runs[runs.size() / 2];
  // Every path is deterministic (W4A16's split-K adds its partial sums in a fixed order), so
  // any difference here is a bug; reported rather than fatal so the timings still come out.
  bool runs_equal = true;
  for (const RunResult& r : runs) runs_equal = runs_equal && r.tokens == median.tokens;
  out["runs_tokens_equal"] = runs_equal;
  std::vector<float> all_ms;
  for (const RunResult& r : runs) all_ms.push_back(r.total_ms);
  out["tokens"] = median.tokens;
  out["run_ms"] = all_ms;
  out["total_ms"] = median.total_ms;
  out["decode_ms"] = median.decode_ms;
  out["tokens_per_s"] = double(o.new_tokens) / (median.total_ms / 1e3);
  out["decode_tokens_per_s"] =
      o.new_tokens > 1 ? double(o.new_tokens - 1) / (median.decode_ms / 1e3) : 0.0;
  out["step_ms"] = o.new_tokens > 1 ? median.decode_ms / double(o.new_tokens - 1) : 0.0;
  out["weight_gb_per_s"] = o.new_tokens > 1
                               ? double(model.step_weight_bytes()) /
                                     (median.decode_ms / 1e3 / double(o.new_tokens - 1)) / 1e9
                               : 0.0;
  if (o.use_graph) {
    // The same generation launched kernel by kernel: what the graph saves.
    Options eager = o;
    eager.use_graph = false;
    RunResult r = generate(model, eager, nullptr);
    r = generate(model, eager, nullptr);
    out["eager_tokens_equal"] = r.tokens == median.tokens;
    out["eager_tokens_per_s"] = double(o.new_tokens) / (r.total_ms / 1e3);
    out["eager_step_ms"] = o.new_tokens > 1 ? r.decode_ms / double(o.new_tokens - 1) : 0.0;
  }
  if (o.profile_steps > 0) out["profile"] = profile(model, o);
  if (o.throughput.requests > 0) out["throughput"] = batch_throughput(model, o.throughput);
  // Each sweep point changes one knob from the defaults, then restores them.
  auto sweep = [&](const char* key, const char* knob, const std::vector<int32_t>& values,
                   const std::function<void(int32_t)>& set) {
    if (values.empty()) return;
    const WxA16GemvTuning gemv = wxa16_gemv_tuning();
    const PagedAttentionTuning attention = paged_attention_tuning();
    const bool fuse = model.fuse_small_ops;
    json points = json::array();
    for (int32_t v : values) {
      set(v);
      json point;
      try {
        point = sweep_point(model, o, median.tokens);
      } catch (const std::exception& e) {
        point["error"] = e.what();  // recorded; the other points and the report still come out
        model.discard_graph();
      }
      point[knob] = v;
      points.push_back(point);
      wxa16_gemv_tuning() = gemv;
      paged_attention_tuning() = attention;
      model.fuse_small_ops = fuse;
    }
    out[key] = points;
  };
  sweep("sweep_gemv_ctas", "gemv_ctas_per_sm", o.sweep_gemv_ctas,
        [](int32_t v) { wxa16_gemv_tuning().ctas_per_sm = v; });
  sweep("sweep_gemv_units", "gemv_units_per_split", o.sweep_gemv_units,
        [](int32_t v) { wxa16_gemv_tuning().max_units_per_split = v; });
  sweep("sweep_attention_partition", "attention_min_partition", o.sweep_attention_partition,
        [](int32_t v) { paged_attention_tuning().min_partition = v; });
  sweep("sweep_gemv_pdl", "gemv_programmatic_launch", o.sweep_gemv_pdl,
        [](int32_t v) { wxa16_gemv_tuning().programmatic_launch = v != 0; });
  sweep("sweep_gemv_bulk", "gemv_bulk", o.sweep_gemv_bulk,
        [](int32_t v) { wxa16_gemv_tuning().bulk = v != 0; });
  sweep("sweep_bulk_units", "bulk_units_per_warp", o.sweep_bulk_units,
        [](int32_t v) { wxa16_gemv_tuning().bulk_units_per_warp = v; });
  sweep("sweep_bulk_stages", "bulk_stages", o.sweep_bulk_stages,
        [](int32_t v) { wxa16_gemv_tuning().bulk_stages = v; });
  sweep("sweep_fusion", "fuse_small_ops", o.sweep_fusion,
        [&](int32_t v) { model.fuse_small_ops = v != 0; });
  sweep("sweep_bulk_ctas", "bulk_ctas_per_sm", o.sweep_bulk_ctas,
        [](int32_t v) { wxa16_gemv_tuning().bulk_ctas_per_sm = v; });
  model.discard_graph();
  const std::string text = out.dump();
  std::printf("%s\n", text.c_str());
  if (!o.json_out.empty()) {
    std::ofstream f(o.json_out);
    f << text << "\n";
  }
  return 0;
}

}  // namespace
}  // namespace nibble::cuda

int main(int argc, char** argv) {
  try {
    return nibble::cuda::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nibble_gpu_decode: %s\n", e.what());
    return 1;
  }
}
