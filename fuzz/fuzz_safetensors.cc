// safetensors: the 8-byte header length, the JSON header and the tensor table (dtype, shape,
// data_offsets, tiling of the data section), from an image held in memory. Every tensor the
// parser accepts must lie inside the image: its bytes are read end to end.
#include <cstddef>
#include <cstdint>
#include <span>

#include "core/error.h"
#include "formats/safetensors/safetensors_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto file = nibble::SafetensorsFile::from_memory({data, size}, "fuzz.safetensors");
    uint64_t checksum = 0;
    for (const auto& tensor : file->tensors()) {
      // ASan flags a read outside the input buffer.
      for (uint8_t byte : tensor.bytes()) checksum += byte;
      checksum += tensor.num_elements();
      if (file->find(tensor.name) != &tensor) __builtin_trap();
    }
    for (const auto& [key, value] : file->metadata()) checksum += key.size() + value.size();
    volatile uint64_t sink = checksum;
    (void)sink;
  } catch (const nibble::Error&) {
  }
  return 0;
}
