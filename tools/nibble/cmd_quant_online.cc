// `nibble quant-online`: quantizes one f32 matrix with an online method and writes its
// canonical form (developer tool; tests/python/test_quant_online.py compares it with torch
// re-implementations of SGLang / torchao / bitsandbytes and with gguf-py).
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "command.h"
#include "core/error.h"
#include "formats/npy.h"
#include "quant/online.h"
#include "quant/reference/dequantize.h"
#include "quant/types.h"

namespace nibble::cli {
namespace {

struct OnlineArgs {
  std::string input;
  std::string output;
  std::string quantization;
  std::string torchao_config;
  int64_t rows = 0;
  int64_t cols = 0;
};

std::vector<float> read_f32(const std::string& path, int64_t count) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open", path);
  std::vector<float> values(static_cast<size_t>(count));
  in.read(reinterpret_cast<char*>(values.data()), std::streamsize(count * 4));
  if (in.gcount() != std::streamsize(count * 4) || in.peek() != EOF)
    fail("{}: expected exactly {} little-endian f32 values ({} bytes)", path, count, count * 4);
  return values;
}

int run(const OnlineArgs& args) {
  const auto method = quant::parse_online_method(args.quantization, args.torchao_config);
  if (!method) fail("quant-online: pass --quantization or --torchao-config");
  const std::vector<float> w = read_f32(args.input, args.rows * args.cols);
  const quant::LinearScheme scheme = quant::quantize_online(*method, w, args.rows, args.cols);
  const quant::QuantizedTensor& t = scheme.weight;
  const std::filesystem::path out(args.output);
  std::filesystem::create_directories(out);
  write_npy_f32(out / "dequant.npy", quant::dequantize(t), {t.rows, t.cols});
  std::ofstream(out / "codes.bin", std::ios::binary)
      .write(reinterpret_cast<const char*>(t.codes.data()), std::streamsize(t.codes.size()));
  if (!t.scales.empty()) write_npy_f32(out / "scales.npy", t.scales, {t.scale_rows, t.scale_cols});
  if (!t.float_zeros.empty())
    write_npy_f32(out / "float_zeros.npy", t.float_zeros, {t.scale_rows, t.scale_cols});
  if (!t.int_zeros.empty())
    write_npy_i32(out / "int_zeros.npy", t.int_zeros, {t.scale_rows, t.scale_cols});
  nlohmann::ordered_json info = {{"method", scheme.method},
                                 {"elem", quant::elem_name(t.elem)},
                                 {"gguf_type", t.gguf_type},
                                 {"row_bytes", t.row_bytes},
                                 {"scale_block", {t.scale_block_rows, t.scale_block_cols}},
                                 {"scale_dtype", quant::scale_dtype_name(t.scale_dtype)},
                                 {"act", static_cast<int>(scheme.act.kind)}};
  std::ofstream(out / "info.json") << info.dump(2) << "\n";
  return 0;
}

std::function<int()> setup(CLI::App& app) {
  app.description(
      "quantize one f32 matrix (raw little-endian file) with an online method and write "
      "dequant.npy, codes.bin, scales.npy, *_zeros.npy and info.json (developer tool)");
  auto args = std::make_shared<OnlineArgs>();
  app.add_option("input", args->input, "raw f32 file of rows x cols values")->required();
  app.add_option("outdir", args->output, "output directory")->required();
  app.add_option("--rows", args->rows, "rows (N)")->required();
  app.add_option("--cols", args->cols, "columns (K)")->required();
  app.add_option("--quantization", args->quantization, "an online --quantization method");
  app.add_option("--torchao-config", args->torchao_config, "a --torchao-config value");
  return [args]() { return run(*args); };
}

}  // namespace

NIBBLE_COMMAND(quant_online, setup);

}  // namespace nibble::cli
