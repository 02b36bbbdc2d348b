#pragma once
// Runtime ISA dispatch of the CPU kernels. The best ISA the CPU supports is chosen once:
// avx512 (needs AVX-512 F/BW/VL/DQ/BF16/VNNI), else avx2 (needs AVX2+FMA+F16C), else the scalar
// reference. NIBBLE_CPU_ISA=scalar|avx2|avx512 forces a lower one (a higher one than the CPU
// supports is an error).
#include <string>
#include <string_view>
#include <vector>

#include "backend/cpu/kernel_table.h"

namespace nibble::cpu {

// The kernels in use.
const KernelTable& kernels();
// Name of the ISA in use ("avx512", "avx2" or "scalar"), for `nibble bench` output.
const char* isa_name();
// Every ISA this CPU can run, best first; the scalar reference is always last.
std::vector<std::string> available_isas();
// The table of one ISA; nullptr when the CPU cannot run it or the name is unknown.
const KernelTable* kernels_for_isa(std::string_view name);

}  // namespace nibble::cpu
