#include "quant/online.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <cctype>

#include "core/error.h"
#include "formats/gguf/gguf_dequant.h"
#include "formats/gguf/gguf_kquant.h"
#include "quant/reference/dequantize.h"
#include "quant/reference/online_quantize.h"
#include "quant/reference/quantize.h"
#include "quant/resolve.h"

namespace nibble::quant {
namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

bool contains(const std::vector<std::string>& list, const std::string& value) {
  return std::find(list.begin(), list.end(), value) != list.end();
}

ActQuant act_of(ActQuantKind kind) {
  ActQuant act;
  act.kind = kind;
  return act;
}

OnlineMethod make_quantization_method(const std::string& name) {
  OnlineMethod m;
  m.name = name;
  if (name == "fp8" || name == "w8a8_fp8") {
    m.kind = OnlineKind::Fp8PerRow;
    m.act = act_of(ActQuantKind::DynamicPerTokenFp8);
  } else if (name == "w8a8_int8") {
    m.kind = OnlineKind::Int8PerRowRtn;
    m.act = act_of(ActQuantKind::DynamicPerTokenInt8);
  } else if (name == "bitsandbytes") {
    m.kind = OnlineKind::BitsAndBytesNf4;
    m.group_size = 64;
  } else if (name == "int4") {
    m.kind = OnlineKind::RtnInt4;
    m.group_size = 128;
  } else if (name == "q4_0" || name == "q4_k" || name == "q8_0") {
    m.kind = OnlineKind::GgufBlocks;
    const gguf::GgmlType type = name == "q4_0"   ? gguf::GgmlType::Q4_0
                                : name == "q4_k" ? gguf::GgmlType::Q4_K
                                                 : gguf::GgmlType::Q8_0;
    m.gguf_type = static_cast<int>(type);
    m.group_size = name == "q4_k" ? gguf::kQ4KBlockElems : 32;
  }
  return m;
}

OnlineMethod make_torchao_method(const std::string& name) {
  OnlineMethod m;
  m.name = name;
  m.from_torchao = true;
  if (name == "int8wo" || name == "int8dq") {
    m.kind = OnlineKind::TorchaoInt8;
    // int8dq quantizes activations per token over [-127, 127] (scale amax / 127).
    if (name == "int8dq") m.act = act_of(ActQuantKind::DynamicPerTokenInt8);
  } else if (name == "fp8wo") {
    m.kind = OnlineKind::TorchaoFp8;
  } else if (name == "fp8dq-per_row" || name == "fp8dq-per_tensor") {
    m.kind = OnlineKind::TorchaoFp8;
    m.per_tensor = name == "fp8dq-per_tensor";
    // PerTensor() scales each activation tensor by its own amax; ActQuant has no dynamic
    // per-tensor kind, and a per-token scale is never coarser, so both run per token.
    m.act = act_of(ActQuantKind::DynamicPerTokenFp8);
  } else {
    m.kind = OnlineKind::TorchaoInt4;
    m.group_size = std::stoll(name.substr(std::string("int4wo-").size()));
  }
  return m;
}

}  // namespace

const std::vector<std::string>& online_quantization_names() {
  static const std::vector<std::string> names = {"fp8",  "w8a8_fp8", "w8a8_int8", "bitsandbytes",
                                                 "int4", "q4_0",     "q4_k",      "q8_0"};
  return names;
}

const std::vector<std::string>& torchao_config_names() {
  static const std::vector<std::string> names = {"int8dq",           "int8wo",        "fp8wo",
                                                 "fp8dq-per_tensor", "fp8dq-per_row", "int4wo-32",
                                                 "int4wo-64",        "int4wo-128",    "int4wo-256"};
  return names;
}

const std::vector<std::string>& online_method_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> all = online_quantization_names();
    for (const auto& n : torchao_config_names()) all.push_back(n);
    return all;
  }();
  return names;
}

std::optional<OnlineMethod> parse_online_method(const std::string& quantization,
                                                const std::string& torchao_config) {
  std::string q = lower(quantization);
  if (q == "unquant") q.clear();
  const std::string t = lower(torchao_config);
  if (q.empty() && t.empty()) return std::nullopt;
  if (!q.empty() && !t.empty())
    fail(
        "--quantization {} and --torchao-config {} both ask for online quantization: pass one "
        "of them (--quantization: {}; --torchao-config: {})",
        quantization, torchao_config, fmt::join(online_quantization_names(), ", "),
        fmt::join(torchao_config_names(), ", "));
  if (!t.empty()) {
    if (!contains(torchao_config_names(), t))
      fail("--torchao-config: unknown value '{}'; must be one of: {}", torchao_config,
           fmt::join(torchao_config_names(), ", "));
    return make_torchao_method(t);
  }
  if (contains(online_quantization_names(), q)) return make_quantization_method(q);
  if (contains(torchao_config_names(), q))
    fail("--quantization {}: this is a --torchao-config value; pass --torchao-config {}",
         quantization, q);
  if (contains(quantization_choices(), q))
    fail(
        "--quantization {}: not an online method; it loads a checkpoint already quantized with "
        "{} (none was found). Online methods for an unquantized checkpoint: {}; or "
        "--torchao-config {}",
        quantization, q, fmt::join(online_quantization_names(), ", "),
        fmt::join(torchao_config_names(), " | "));
  fail("--quantization: unknown method '{}'; online methods are: {} (and --torchao-config {})",
       quantization, fmt::join(online_quantization_names(), ", "),
       fmt::join(torchao_config_names(), " | "));
}

std::optional<std::string> online_shape_problem(const OnlineMethod& method, int64_t rows,
                                                int64_t cols) {
  if (rows <= 0 || cols <= 0) return fmt::format("an empty [{}, {}] weight", rows, cols);
  switch (method.kind) {
    case OnlineKind::TorchaoInt4:
    case OnlineKind::BitsAndBytesNf4:
    case OnlineKind::GgufBlocks:
      if (cols % method.group_size != 0)
        return fmt::format("{}: K={} is not a multiple of its {} of {}", method.name, cols,
                           method.kind == OnlineKind::GgufBlocks ? "ggml block" : "group size",
                           method.group_size);
      return std::nullopt;
    default: return std::nullopt;
  }
}

LinearScheme quantize_online(const OnlineMethod& method, std::span<const float> w, int64_t rows,
                             int64_t cols) {
  NIBBLE_CHECK(int64_t(w.size()) == rows * cols, "{}: {} values for a [{}, {}] weight", method.name,
               w.size(), rows, cols);
  if (auto problem = online_shape_problem(method, rows, cols))
    fail("online quantization {}: cannot quantize a [{}, {}] weight: {}", method.name, rows, cols,
         *problem);
  LinearScheme scheme;
  scheme.method = method.name;
  scheme.act = method.act;
  // SGLang keeps bf16 checkpoints in bf16, and torchao's ops round to it.
  constexpr TorchDType kTorchDType = TorchDType::BF16;
  switch (method.kind) {
    case OnlineKind::Fp8PerRow:
      scheme.weight = quantize_fp8_e4m3(w, rows, cols, Fp8Granularity::PerChannel);
      break;
    case OnlineKind::Int8PerRowRtn:
      scheme.weight = quantize_rtn_int(w, rows, cols, {8, -1, true});
      break;
    case OnlineKind::TorchaoInt8:
      scheme.weight = quantize_torchao_int8(w, rows, cols, kTorchDType);
      break;
    case OnlineKind::TorchaoInt4:
      scheme.weight = quantize_torchao_int4(w, rows, cols, method.group_size, kTorchDType);
      break;
    case OnlineKind::TorchaoFp8:
      scheme.weight = quantize_torchao_fp8(w, rows, cols, method.per_tensor, kTorchDType);
      break;
    case OnlineKind::BitsAndBytesNf4: {
      Bnb4bitOptions options;
      options.blocksize = method.group_size;
      scheme.weight = quantize_bnb_4bit(w, rows, cols, options);
      break;
    }
    case OnlineKind::RtnInt4:
      scheme.weight = quantize_rtn_int(w, rows, cols, {4, method.group_size, false});
      break;
    case OnlineKind::GgufBlocks: {
      QuantizedTensor& t = scheme.weight;
      t.rows = rows;
      t.cols = cols;
      t.elem = ElemType::GgufBlock;
      t.gguf_type = method.gguf_type;
      allocate_codes(t);
      const auto type = static_cast<gguf::GgmlType>(method.gguf_type);
      for (int64_t n = 0; n < rows; ++n) {
        uint8_t* dst = t.codes.data() + n * t.row_bytes;
        if (type == gguf::GgmlType::Q4_K)
          gguf::quantize_row_q4_k(w.data() + n * cols, dst, cols);
        else
          gguf::quantize_row(type, w.data() + n * cols, dst, cols);
      }
      break;
    }
  }
  return scheme;
}

}  // namespace nibble::quant
