// bitsandbytes 4-bit (NF4 / FP4) layers as transformers serializes them
// (checkpoint-formats.md §6; bitsandbytes QuantState.as_dict(packed=True)):
//   <p>.weight                                U8 [N·K/2, 1], row-major W, element 2i in the HIGH
//                                             nibble of byte i (the opposite of ours)
//   <p>.weight.absmax                         F32 [blocks], or U8 codes when nested
//   <p>.weight.quant_map                      F32 [16] code table
//   <p>.weight.nested_absmax                  F32 [⌈blocks/256⌉] (nested only)
//   <p>.weight.nested_quant_map               F32 [256] (nested only)
//   <p>.weight.quant_state.bitsandbytes__nf4  U8 JSON {quant_type, blocksize, shape, dtype,
//                                             nested_blocksize, nested_offset, ...} (or __fp4)
#include <cmath>
#include <nlohmann/json.hpp>

#include "quant/formats/loaders.h"
#include "quant/formats/tensor_access.h"
#include "quant/reference/dequantize.h"
#include "quant/reference/fp8.h"
#include "quant/reference/online_quantize.h"
#include "quant/types.h"

namespace nibble::quant {
namespace {

struct BnbState {
  bool fp4 = false;
  int64_t blocksize = 64;
  int64_t rows = 0, cols = 0;
  bool nested = false;
  int64_t nested_blocksize = 256;
  float nested_offset = 0.0f;
};

const CheckpointTensor* find_state_blob(const LayerTensors& L, bool* fp4) {
  if (const CheckpointTensor* t = L.find("weight.quant_state.bitsandbytes__nf4")) {
    *fp4 = false;
    return t;
  }
  if (const CheckpointTensor* t = L.find("weight.quant_state.bitsandbytes__fp4")) {
    *fp4 = true;
    return t;
  }
  return nullptr;
}

BnbState read_state(const LayerTensors& L) {
  BnbState s;
  const CheckpointTensor* blob = find_state_blob(L, &s.fp4);
  if (blob == nullptr)
    L.fail_layer(
        "missing '{}' (or '__fp4'): the JSON quant state of a bitsandbytes 4-bit weight; an "
        "8-bit (LLM.int8) layer or a non-bitsandbytes tensor is stored here",
        L.name("weight.quant_state.bitsandbytes__nf4"));
  L.check_type(*blob, {"U8"});
  if (blob->data == nullptr) L.fail_layer("'{}' has no data", blob->name);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(blob->data, blob->data + blob->nbytes);
  } catch (const nlohmann::json::exception& e) {
    L.fail_layer("'{}' is not valid JSON: {}", blob->name, e.what());
  }
  try {
    const std::string type = j.at("quant_type").get<std::string>();
    if (type != (s.fp4 ? "fp4" : "nf4"))
      L.fail_layer("'{}' says quant_type '{}'", blob->name, type);
    s.blocksize = j.at("blocksize").get<int64_t>();
    const auto shape = j.at("shape").get<std::vector<int64_t>>();
    if (shape.size() != 2)
      L.fail_layer("'{}' shape has {} dimensions, expected 2", blob->name, shape.size());
    s.rows = shape[0];
    s.cols = shape[1];
    s.nested = j.contains("nested_offset") || j.contains("nested_blocksize");
    if (s.nested) {
      s.nested_blocksize = j.value("nested_blocksize", int64_t{256});
      s.nested_offset = static_cast<float>(j.at("nested_offset").get<double>());
    }
  } catch (const nlohmann::json::exception& e) {
    L.fail_layer("'{}': {}", blob->name, e.what());
  }
  if (s.rows <= 0 || s.cols <= 0 || s.blocksize <= 0 || s.nested_blocksize <= 0)
    L.fail_layer("quant state shape [{}, {}], blocksize {}, nested blocksize {}", s.rows, s.cols,
                 s.blocksize, s.nested_blocksize);
  return s;
}

// The stored 16-entry table must be the one nibble decodes with.
void check_quant_map(const LayerTensors& L, const BnbState& s) {
  const CheckpointTensor& map = L.require("weight.quant_map");
  L.check_type(map, {"F32"});
  const std::vector<float> values = L.floats(map);
  if (values.size() != 16)
    L.fail_layer("'{}' holds {} values, expected 16", map.name, values.size());
  for (int c = 0; c < 16; ++c) {
    const float m = kBnbFp4Magnitudes12[c & 7] / 12.0f;
    const float expected = s.fp4 ? ((c & 8) ? -m : m) : kNf4Values[c];
    // FP4's table is built in float32 by a division, so allow its last bit.
    const float tolerance = s.fp4 ? 1e-6f : 0.0f;
    if (!(std::fabs(values[size_t(c)] - expected) <= tolerance))
      L.fail_layer(
          "'{}'[{}] = {} but bitsandbytes' {} table has {}: a custom code table is not "
          "supported",
          map.name, c, values[size_t(c)], s.fp4 ? "FP4" : "NF4", expected);
  }
}

std::vector<float> read_absmax(const LayerTensors& L, const BnbState& s, int64_t blocks) {
  const CheckpointTensor& absmax = L.require("weight.absmax");
  if (L.numel(absmax) != blocks)
    L.fail_layer("'{}' holds {} values, expected {} ({} blocks of {})", absmax.name,
                 L.numel(absmax), blocks, blocks, s.blocksize);
  if (!s.nested) {
    L.check_type(absmax, {"F32"});
    return L.floats(absmax);
  }
  L.check_type(absmax, {"U8"});
  const CheckpointTensor& nested_absmax = L.require("weight.nested_absmax");
  const CheckpointTensor& nested_map = L.require("weight.nested_quant_map");
  L.check_type(nested_absmax, {"F32"});
  L.check_type(nested_map, {"F32"});
  const int64_t nested_blocks = (blocks + s.nested_blocksize - 1) / s.nested_blocksize;
  if (L.numel(nested_absmax) != nested_blocks)
    L.fail_layer("'{}' holds {} values, expected {}", nested_absmax.name, L.numel(nested_absmax),
                 nested_blocks);
  if (L.numel(nested_map) != 256)
    L.fail_layer("'{}' holds {} values, expected 256", nested_map.name, L.numel(nested_map));
  const std::vector<float> outer = L.floats(nested_absmax);
  const std::vector<float> code = L.floats(nested_map);
  if (absmax.data == nullptr || absmax.nbytes != uint64_t(blocks))
    L.fail_layer("'{}' holds {} bytes, expected {}", absmax.name, absmax.nbytes, blocks);
  std::vector<float> out(static_cast<size_t>(blocks));
  for (int64_t b = 0; b < blocks; ++b) {
    // dequantize_blockwise, then `absmax += offset`: two f32 roundings, in this order.
    const float inner = code[absmax.data[b]] * outer[size_t(b / s.nested_blocksize)];
    out[size_t(b)] = inner + s.nested_offset;
  }
  return out;
}

}  // namespace

bool is_bnb_4bit_layer(const Checkpoint& ckpt, const std::string& prefix) {
  return ckpt.find(prefix + ".weight.quant_state.bitsandbytes__nf4") != nullptr ||
         ckpt.find(prefix + ".weight.quant_state.bitsandbytes__fp4") != nullptr;
}

std::vector<int64_t> bnb_4bit_shape(const Checkpoint& ckpt, const std::string& prefix) {
  const LayerTensors L(ckpt, prefix, "bitsandbytes");
  const BnbState s = read_state(L);
  return {s.rows, s.cols};
}

QuantizedTensor load_bnb_4bit(const Checkpoint& ckpt, const std::string& prefix,
                              const BnbParams& p) {
  const LayerTensors L(ckpt, prefix, "bitsandbytes");
  const BnbState s = read_state(L);
  if (s.fp4 != p.fp4)
    L.fail_layer("is stored as {} but the config's bnb_4bit_quant_type is {}",
                 s.fp4 ? "fp4" : "nf4", p.fp4 ? "fp4" : "nf4");
  const int64_t N = s.rows, K = s.cols;
  if (K % s.blocksize != 0)
    L.fail_layer(
        "K={} is not a multiple of the blocksize {}: its absmax blocks straddle rows, which the "
        "per-row group layout cannot express",
        K, s.blocksize);
  const CheckpointTensor& weight = L.require("weight");
  // quant_storage may be any dtype viewing the same packed bytes.
  if (weight.data == nullptr || weight.nbytes != uint64_t(N * K / 2))
    L.fail_layer("'{}' holds {} bytes, expected {} for a 4-bit [{}, {}] weight", weight.name,
                 weight.nbytes, N * K / 2, N, K);
  check_quant_map(L, s);
  const int64_t blocks = N * K / s.blocksize;
  const std::vector<float> absmax = read_absmax(L, s, blocks);

  QuantizedTensor t;
  t.rows = N;
  t.cols = K;
  // bitsandbytes' FP4 is not E2M1 (its smallest magnitude is 0.0625/12): its values are 12 × an
  // e4m3 number, so FP4 layers hold e4m3 codes with the scale divided by 12.
  t.elem = s.fp4 ? ElemType::Fp8E4M3 : ElemType::Nf4;
  allocate_codes(t);
  set_scale_layout(t, 1, s.blocksize);
  for (int64_t i = 0; i < N * K / 2; ++i) {
    const uint8_t byte = weight.data[i];
    const uint32_t even = byte >> 4, odd = byte & 0xFu;
    const int64_t flat = 2 * i;
    if (!s.fp4) {
      t.codes[size_t(i)] = static_cast<uint8_t>(even | (odd << 4));
      continue;
    }
    for (const auto& [code, at] : {std::pair{even, flat}, std::pair{odd, flat + 1}}) {
      const float m = kBnbFp4Magnitudes12[code & 7];
      set_code(t, at / K, at % K, f32_to_fp8_e4m3((code & 8) ? -m : m));
    }
  }
  for (int64_t b = 0; b < blocks; ++b)
    t.scales[size_t(b)] = s.fp4 ? absmax[size_t(b)] / 12.0f : absmax[size_t(b)];
  return t;
}

}  // namespace nibble::quant
