// `nibble safetensors ...`: developer tools for the safetensors / HF-config code, used by
// tests/python/test_safetensors.py to check interoperability with the Python packages.
#include <cstdio>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "command.h"
#include "core/atomic_file.h"
#include "core/dtype.h"
#include "core/error.h"
#include "formats/hf/hf_checkpoint.h"
#include "formats/hf/hf_config.h"
#include "formats/safetensors/safetensors_file.h"
#include "formats/safetensors/safetensors_writer.h"

namespace nibble::cli {
namespace {

struct SafetensorsArgs {
  std::string input;
  std::string output;
  std::string tensor;
};

// A file is listed with its header layout; a directory through the checkpoint loader.
int run_check(const SafetensorsArgs& args) {
  nlohmann::ordered_json out;
  if (std::filesystem::is_directory(args.input)) {
    const auto checkpoint = open_hf_checkpoint(args.input);
    out["tensors"] = nlohmann::ordered_json::array();
    for (const auto& t : checkpoint->tensors())
      out["tensors"].push_back(
          {{"name", t.name}, {"dtype", t.type}, {"shape", t.shape}, {"nbytes", t.nbytes}});
  } else {
    const auto file = SafetensorsFile::open(args.input);
    out["header_size"] = file->header_size();
    out["metadata"] = file->metadata();
    out["tensors"] = nlohmann::ordered_json::array();
    for (const auto& t : file->tensors())
      out["tensors"].push_back({{"name", t.name},
                                {"dtype", dtype_name(t.dtype)},
                                {"shape", t.shape},
                                {"data_offsets", {t.offset, t.offset + t.nbytes}}});
  }
  std::printf("%s\n", out.dump(2).c_str());
  return 0;
}

int run_copy(const SafetensorsArgs& args) {
  const auto file = SafetensorsFile::open(args.input);
  std::vector<SafetensorsTensorData> tensors;
  for (const auto& t : file->tensors()) tensors.push_back({{t.name, t.dtype, t.shape}, t.bytes()});
  write_safetensors(args.output, tensors, file->metadata());
  return 0;
}

int run_dump(const SafetensorsArgs& args) {
  const auto file = SafetensorsFile::open(args.input);
  const SafetensorsTensor* t = file->find(args.tensor);
  if (t == nullptr) fail("{}: tensor '{}' not found", args.input, args.tensor);
  write_file_atomic(args.output, std::string_view(reinterpret_cast<const char*>(t->data),
                                                  static_cast<size_t>(t->nbytes)));
  return 0;
}

int run_config(const SafetensorsArgs& args) {
  const ModelConfig config = load_hf_config(args.input);
  write_file_atomic(args.output, hf_config_to_json(config).dump(2) + "\n");
  return 0;
}

std::function<int()> setup(CLI::App& app) {
  app.description("inspect, copy and convert safetensors files and HF configs (developer tool)");
  app.require_subcommand(1);
  auto args = std::make_shared<SafetensorsArgs>();
  auto* check = app.add_subcommand("check",
                                   "validate a .safetensors file or HF checkpoint "
                                   "directory and print its tensors as JSON");
  check->add_option("path", args->input)->required();
  auto* copy = app.add_subcommand("copy",
                                  "read a .safetensors file and rewrite it with nibble's "
                                  "writer");
  copy->add_option("input", args->input)->required();
  copy->add_option("output", args->output)->required();
  auto* dump = app.add_subcommand("dump", "write one tensor's raw bytes to a file");
  dump->add_option("input", args->input)->required();
  dump->add_option("tensor", args->tensor)->required();
  dump->add_option("output", args->output)->required();
  auto* config = app.add_subcommand("config",
                                    "parse a config.json into nibble's model config and "
                                    "write it back as config.json");
  config->add_option("input", args->input, "config.json or a model directory")->required();
  config->add_option("output", args->output)->required();
  return [args, check, copy, dump, config]() {
    if (check->parsed()) return run_check(*args);
    if (copy->parsed()) return run_copy(*args);
    if (dump->parsed()) return run_dump(*args);
    if (config->parsed()) return run_config(*args);
    return 1;
  };
}

}  // namespace

NIBBLE_COMMAND(safetensors, setup);

}  // namespace nibble::cli
