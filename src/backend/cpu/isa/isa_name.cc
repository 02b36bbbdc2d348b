// Compiled once per ISA (see src/CMakeLists.txt); each copy lives in its own namespace.
namespace nibble::cpu::NIBBLE_ISA {

const char* isa_name() {
#define NIBBLE_STRINGIFY2(x) #x
#define NIBBLE_STRINGIFY(x) NIBBLE_STRINGIFY2(x)
  return NIBBLE_STRINGIFY(NIBBLE_ISA);
}

}  // namespace nibble::cpu::NIBBLE_ISA
