// GGUF: header, metadata (every key through every typed getter), tensor infos and the layout
// plan, the reference dequantization of every tensor, and then the whole GGUF model path that
// `nibble serve model.gguf` takes: model config, tokenizer, chat template and the HF-named
// checkpoint view (with llama.cpp's q/k row permutation undone on load).
//
// The reader maps a path, so the input is written to an in-memory file (memfd) and opened
// through /proc/self/fd: no disk traffic per input.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/error.h"
#include "formats/gguf/gguf_dequant.h"
#include "formats/gguf/gguf_file.h"
#include "formats/gguf/gguf_model_config.h"
#include "model/loader.h"
#include "tokenizer/tokenizer.h"

namespace {

// Dequantizing more than this per tensor only costs time: every block type is covered by
// the first few blocks.
constexpr uint64_t kMaxDequantElements = 1u << 16;

const std::string& memfd_path() {
  static const std::string path = [] {
    const int fd = memfd_create("fuzz.gguf", 0);
    if (fd < 0) std::abort();
    return "/proc/self/fd/" + std::to_string(fd);
  }();
  return path;
}

void write_input(const uint8_t* data, size_t size) {
  const int fd = std::stoi(memfd_path().substr(sizeof("/proc/self/fd/") - 1));
  if (ftruncate(fd, 0) != 0 || ftruncate(fd, static_cast<off_t>(size)) != 0) std::abort();
  for (size_t done = 0; done < size;) {
    const ssize_t n = pwrite(fd, data + done, size - done, static_cast<off_t>(done));
    if (n <= 0) std::abort();
    done += static_cast<size_t>(n);
  }
}

template <typename Fn>
void expect_error_or_value(Fn&& fn) {
  try {
    fn();
  } catch (const nibble::Error&) {
  }
}

void read_all_metadata(const nibble::gguf::GgufFile& file) {
  for (const auto& entry : file.metadata()) {
    const std::string& key = entry.first;  // clang 14 cannot capture a structured binding
    expect_error_or_value([&] { (void)file.get_string(key); });
    expect_error_or_value([&] { (void)file.get_int(key); });
    expect_error_or_value([&] { (void)file.get_float(key); });
    expect_error_or_value([&] { (void)file.get_bool(key); });
    expect_error_or_value([&] { (void)file.get_string_array(key); });
    expect_error_or_value([&] { (void)file.get_int_array(key); });
    expect_error_or_value([&] { (void)file.get_float_array(key); });
    expect_error_or_value([&] { (void)file.get_array_size(key); });
  }
}

void dequantize_all(const nibble::gguf::GgufFile& file) {
  std::vector<float> out;
  for (const auto& tensor : file.tensors()) {
    if (file.find_tensor(tensor.name) != &tensor) __builtin_trap();
    if (!nibble::gguf::can_dequantize(tensor.type)) continue;
    const uint64_t n = tensor.n_elements();
    if (n > kMaxDequantElements) continue;
    out.resize(n);
    expect_error_or_value([&] {
      nibble::gguf::dequantize_row(tensor.type, tensor.data, out.data(), static_cast<int64_t>(n));
    });
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  write_input(data, size);
  const std::string& path = memfd_path();
  try {
    const auto file = nibble::gguf::GgufFile::open(path);
    read_all_metadata(*file);
    dequantize_all(*file);
    expect_error_or_value([&] { (void)nibble::gguf::model_config_from_gguf(*file); });
    expect_error_or_value([&] {
      const auto tokenizer = nibble::Tokenizer::from_gguf(*file);
      const auto ids = tokenizer->encode("Hello world, <|im_start|> 123 \xff", true);
      (void)tokenizer->decode_text(ids, false);
    });
  } catch (const nibble::Error&) {
    return 0;
  }
  try {
    const nibble::ModelSource source = nibble::open_model_source(path);
    for (const auto& tensor : source.checkpoint->tensors()) {
      uint64_t n = 1;
      for (int64_t d : tensor.shape) n *= static_cast<uint64_t>(d);
      if (n > kMaxDequantElements) continue;
      expect_error_or_value([&] { (void)source.checkpoint->load_f32(tensor.name); });
    }
  } catch (const nibble::Error&) {
  }
  return 0;
}
