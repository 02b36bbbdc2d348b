// `nibble gguf`: developer tools over GGUF files (inspect, dequantize to .npy, rewrite).
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "command.h"
#include "core/atomic_file.h"
#include "core/error.h"
#include "formats/gguf/gguf_checkpoint.h"
#include "formats/gguf/gguf_dequant.h"
#include "formats/gguf/gguf_file.h"
#include "formats/gguf/gguf_writer.h"

namespace nibble::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::ordered_json;

// NumPy .npy format version 1.0: magic, version, u16 header length, then a Python dict
// literal padded with spaces so the data starts on a 64-byte boundary.
std::string npy_header(const std::vector<int64_t>& shape) {
  std::string dims;
  for (int64_t d : shape) dims += fmt::format("{}, ", d);
  if (shape.size() > 1) dims.resize(dims.size() - 2);  // (3,) keeps its comma, (3, 4) does not
  if (shape.size() == 1) dims.pop_back();
  std::string dict =
      fmt::format("{{'descr': '<f4', 'fortran_order': False, 'shape': ({}), }}", dims);
  const size_t unpadded = 10 + dict.size() + 1;
  dict.append((64 - unpadded % 64) % 64, ' ');
  dict.push_back('\n');
  std::string header = "\x93NUMPY";
  header.push_back('\x01');
  header.push_back('\x00');
  const uint16_t length = static_cast<uint16_t>(dict.size());
  header.push_back(static_cast<char>(length & 0xff));
  header.push_back(static_cast<char>(length >> 8));
  return header + dict;
}

// A tensor name from a file must not escape the output directory.
std::string safe_file_name(const std::string& name) {
  std::string out = name;
  for (char& c : out) {
    if (c == '/' || c == '\\' || c == '\0') c = '_';
  }
  if (out.empty() || out[0] == '.') out.insert(out.begin(), '_');
  return out;
}

ordered_json describe_value(const gguf::MetaValue& value, size_t max_items) {
  ordered_json j;
  j["type"] = gguf::value_type_name(value.type);
  if (value.type != gguf::ValueType::ARRAY) {
    j["value"] = value.value;
    return j;
  }
  j["elem_type"] = gguf::value_type_name(value.elem_type);
  j["count"] = value.value.size();
  if (value.value.size() <= max_items) {
    j["value"] = value.value;
  } else {
    ordered_json head = ordered_json::array();
    for (size_t i = 0; i < max_items; ++i) head.push_back(ordered_json(value.value[i]));
    j["value"] = head;
    j["truncated"] = true;
  }
  return j;
}

int run_dump(const std::string& path, size_t max_items) {
  const auto file = gguf::GgufFile::open(path);
  ordered_json out;
  out["path"] = path;
  out["version"] = file->version();
  out["alignment"] = file->alignment();
  out["data_offset"] = file->data_offset();
  ordered_json metadata = ordered_json::object();
  for (const auto& [key, value] : file->metadata())
    metadata[key] = describe_value(value, max_items);
  out["metadata"] = metadata;
  ordered_json tensors = ordered_json::array();
  for (const auto& t : file->tensors()) {
    ordered_json tj;
    tj["name"] = t.name;
    tj["type"] = gguf::type_name(t.type);
    tj["shape"] = std::vector<uint64_t>(t.ne.rbegin(), t.ne.rend());
    tj["ne"] = t.ne;
    tj["offset"] = t.offset;
    tj["nbytes"] = t.nbytes;
    tensors.push_back(tj);
  }
  out["tensors"] = tensors;
  // Strings in a GGUF file need not be valid UTF-8; replace bad bytes rather than fail.
  std::puts(out.dump(2, ' ', false, ordered_json::error_handler_t::replace).c_str());
  return 0;
}

int run_dequant(const std::string& path, const std::string& outdir) {
  const auto checkpoint = gguf::open_gguf_checkpoint(path);
  fs::create_directories(outdir);
  for (const auto& t : checkpoint->tensors()) {
    const std::vector<float> values = checkpoint->load_f32(t.name);
    AtomicFileWriter writer(fs::path(outdir) / (safe_file_name(t.name) + ".npy"));
    writer.write(npy_header(t.shape));
    writer.write(values.data(), values.size() * sizeof(float));
    writer.commit();
  }
  return 0;
}

// Rewrites a file with nibble's writer; with a quantize type, F32 matrices whose rows
// are whole blocks are quantized with the reference quantizer on the way.
int run_copy(const std::string& in, const std::string& out, const std::string& quantize) {
  const auto file = gguf::GgufFile::open(in);
  std::optional<gguf::GgmlType> target;
  if (!quantize.empty()) {
    target = gguf::type_from_name(quantize);
    if (!target || !gguf::can_quantize(*target)) {
      fail("--quantize {}: not a ggml type nibble can quantize to", quantize);
    }
  }
  gguf::GgufWriter writer(out);
  for (const auto& [key, value] : file->metadata()) writer.add(key, value);
  for (const auto& t : file->tensors()) {
    std::vector<int64_t> shape(t.ne.rbegin(), t.ne.rend());
    const int64_t block = gguf::type_traits(target.value_or(t.type))->block_elems;
    if (target && t.type == gguf::GgmlType::F32 && t.ne.size() >= 2 &&
        int64_t(t.ne[0]) % block == 0) {
      const gguf::TensorInfo* info = &t;
      const gguf::GgmlType type = *target;
      writer.add_tensor_lazy(t.name, type, shape, [info, type] {
        const auto n = int64_t(info->n_elements());
        std::vector<float> values(static_cast<size_t>(n));
        gguf::dequantize_row(gguf::GgmlType::F32, info->data, values.data(), n);
        std::vector<uint8_t> bytes(gguf::row_bytes(type, n));
        gguf::quantize_row(type, values.data(), bytes.data(), n);
        return bytes;
      });
    } else {
      writer.add_tensor_view(t.name, t.type, shape, {t.data, size_t(t.nbytes)});
    }
  }
  writer.write();
  return 0;
}

std::function<int()> setup_gguf(CLI::App& app) {
  app.description("GGUF developer tools: dump, dequant, copy");
  app.require_subcommand(1);
  struct Options {
    std::string file, outdir, out, quantize;
    size_t max_items = 8;
  };
  auto options = std::make_shared<Options>();
  auto* dump = app.add_subcommand("dump", "print metadata and the tensor table as JSON");
  dump->add_option("file", options->file, "GGUF file")->required();
  dump->add_option("--max-items", options->max_items, "array elements shown before '...'")
      ->capture_default_str();
  auto* dequant =
      app.add_subcommand("dequant", "write every tensor dequantized to f32 as OUTDIR/<name>.npy");
  dequant->add_option("file", options->file, "GGUF file")->required();
  dequant->add_option("outdir", options->outdir, "output directory")->required();
  auto* copy = app.add_subcommand("copy", "rewrite a GGUF file with nibble's writer");
  copy->add_option("file", options->file, "GGUF file")->required();
  copy->add_option("out", options->out, "output GGUF file")->required();
  copy->add_option("--quantize", options->quantize, "quantize F32 matrices to this type (Q8_0…)");
  return [=]() -> int {
    if (dump->parsed()) return run_dump(options->file, options->max_items);
    if (dequant->parsed()) return run_dequant(options->file, options->outdir);
    return run_copy(options->file, options->out, options->quantize);
  };
}

}  // namespace
}  // namespace nibble::cli

NIBBLE_COMMAND(gguf, nibble::cli::setup_gguf);
