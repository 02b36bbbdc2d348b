#include "backend/cpu/kernels.h"

#include <cstdlib>

#include "backend/cpu/quant/reference_kernels.h"
#include "backend/cpu/reference.h"
#include "core/error.h"

namespace nibble::cpu {
namespace avx2 {
void fill_kernel_table(KernelTable& t);
}
namespace avx512 {
void fill_kernel_table(KernelTable& t);
}

namespace {

bool cpu_has_avx2() {
#if defined(__clang__) && __clang_major__ < 15
  // clang 14 (the fuzz build) does not know the "f16c" feature name; every AVX2 CPU has F16C.
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c");
#endif
}

bool cpu_has_avx512() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512vnni");
}

const KernelTable& avx2_table() {
  static const KernelTable table = [] {
    KernelTable t;
    avx2::fill_kernel_table(t);
    return t;
  }();
  return table;
}

const KernelTable& avx512_table() {
  static const KernelTable table = [] {
    KernelTable t;
    avx512::fill_kernel_table(t);
    return t;
  }();
  return table;
}

// The scalar reference table plus the quantized reference kernels (kept in their own file).
const KernelTable& scalar_table() {
  static const KernelTable table = [] {
    KernelTable t = reference_kernels();
    t.quant_matmul_a16 = quant_matmul_a16_reference;
    t.quant_matmul_a8 = quant_matmul_a8_reference;
    return t;
  }();
  return table;
}

const KernelTable& choose() {
  const char* forced = std::getenv("NIBBLE_CPU_ISA");
  if (forced && *forced) {
    const KernelTable* t = kernels_for_isa(forced);
    if (!t) {
      fail("NIBBLE_CPU_ISA={}: not one of scalar, avx2, avx512 that this CPU supports", forced);
    }
    return *t;
  }
  if (cpu_has_avx512()) return avx512_table();
  if (cpu_has_avx2()) return avx2_table();
  return scalar_table();
}

}  // namespace

const KernelTable& kernels() {
  static const KernelTable& table = choose();
  return table;
}

const char* isa_name() { return kernels().name; }

std::vector<std::string> available_isas() {
  std::vector<std::string> names;
  if (cpu_has_avx512()) names.emplace_back("avx512");
  if (cpu_has_avx2()) names.emplace_back("avx2");
  names.emplace_back("scalar");
  return names;
}

const KernelTable* kernels_for_isa(std::string_view name) {
  if (name == "scalar") return &scalar_table();
  if (name == "avx2" && cpu_has_avx2()) return &avx2_table();
  if (name == "avx512" && cpu_has_avx512()) return &avx512_table();
  return nullptr;
}

}  // namespace nibble::cpu
