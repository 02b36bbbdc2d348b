# The CUDA backend (src/backend/cuda), its GPU tests (tests/gpu) and kernel benchmarks (bench/gpu).
# Included by the top-level CMakeLists.txt when NIBBLE_CUDA or NIBBLE_CUDA_ONLY is on.
#
# The GPU programs need only the CUDA toolkit, fmt (headers are enough) and nlohmann/json's header
# (through the GGUF block table) plus the scalar quant reference, compiled here again. So a GPU
# machine without nibble's other -dev packages builds them with -DNIBBLE_CUDA_ONLY=ON, pointing
# NIBBLE_GPU_DEPS at a folder whose include/ holds fmt/ and nlohmann/ when they are not installed.
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
  set(CMAKE_CUDA_ARCHITECTURES "80;89;90a")
endif()
enable_language(CUDA)
# fmt 9's consteval format-string checks do not compile under nvcc in C++20 mode.
set(CMAKE_CUDA_STANDARD 17)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)
find_package(CUDAToolkit REQUIRED)
find_program(NIBBLE_CUDA_CCACHE ccache)
if(NIBBLE_CUDA_CCACHE AND NOT CMAKE_CUDA_COMPILER_LAUNCHER)
  set(CMAKE_CUDA_COMPILER_LAUNCHER ${NIBBLE_CUDA_CCACHE})
endif()

set(NIBBLE_GPU_DEPS "" CACHE PATH "Folder with include/fmt and include/nlohmann for GPU-only builds")
add_library(nibble_gpu_headers INTERFACE)
find_package(fmt QUIET)
if(TARGET fmt::fmt-header-only)
  target_link_libraries(nibble_gpu_headers INTERFACE fmt::fmt-header-only)
else()
  find_path(NIBBLE_FMT_INCLUDE_DIR fmt/format.h PATHS ${NIBBLE_GPU_DEPS}/include REQUIRED)
  target_include_directories(nibble_gpu_headers INTERFACE ${NIBBLE_FMT_INCLUDE_DIR})
  target_compile_definitions(nibble_gpu_headers INTERFACE FMT_HEADER_ONLY=1)
endif()
find_package(nlohmann_json 3.10 QUIET)
if(TARGET nlohmann_json::nlohmann_json)
  target_link_libraries(nibble_gpu_headers INTERFACE nlohmann_json::nlohmann_json)
else()
  find_path(NIBBLE_JSON_INCLUDE_DIR nlohmann/json.hpp PATHS ${NIBBLE_GPU_DEPS}/include REQUIRED)
  target_include_directories(nibble_gpu_headers INTERFACE ${NIBBLE_JSON_INCLUDE_DIR})
endif()

set(NIBBLE_CUDA_WARNINGS $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra>
    $<$<AND:$<COMPILE_LANGUAGE:CUDA>,$<BOOL:${NIBBLE_WERROR}>>:--Werror=all-warnings>
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow>)

# The scalar truth the GPU tests compare with (the same sources nibble_lib compiles).
add_library(nibble_quant_reference STATIC
  ${PROJECT_SOURCE_DIR}/src/quant/types.cc
  ${PROJECT_SOURCE_DIR}/src/quant/reference/dequantize.cc
  ${PROJECT_SOURCE_DIR}/src/quant/reference/quantize.cc
  ${PROJECT_SOURCE_DIR}/src/quant/reference/fp8.cc
  ${PROJECT_SOURCE_DIR}/src/formats/gguf/gguf_dequant.cc
  ${PROJECT_SOURCE_DIR}/src/formats/gguf/gguf_kquant.cc
  ${PROJECT_SOURCE_DIR}/src/formats/gguf/gguf_types.cc
  ${PROJECT_SOURCE_DIR}/src/quantize/linear_algebra.cc
  ${PROJECT_SOURCE_DIR}/src/quantize/vector_ops.cc)
target_include_directories(nibble_quant_reference PUBLIC ${PROJECT_SOURCE_DIR}/src)
target_link_libraries(nibble_quant_reference PUBLIC nibble_gpu_headers)

file(GLOB NIBBLE_CUDA_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/backend/cuda/*.cu)
add_library(nibble_cuda STATIC ${NIBBLE_CUDA_SOURCES})
target_include_directories(nibble_cuda PUBLIC ${PROJECT_SOURCE_DIR}/src)
target_link_libraries(nibble_cuda PUBLIC nibble_quant_reference CUDA::cudart CUDA::cublasLt
                      CUDA::cublas CUDA::cusolver)
target_compile_options(nibble_cuda PRIVATE ${NIBBLE_CUDA_WARNINGS})

file(GLOB NIBBLE_GPU_TEST_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/tests/gpu/*.cu
     ${PROJECT_SOURCE_DIR}/tests/gpu/*.cc)
add_executable(nibble_gpu_tests ${NIBBLE_GPU_TEST_SOURCES})
target_link_libraries(nibble_gpu_tests PRIVATE nibble_cuda)
target_compile_options(nibble_gpu_tests PRIVATE ${NIBBLE_CUDA_WARNINGS})
set_target_properties(nibble_gpu_tests PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR})

file(GLOB NIBBLE_GPU_BENCH_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/bench/gpu/*.cu)
add_executable(nibble_gpu_bench ${NIBBLE_GPU_BENCH_SOURCES})
target_link_libraries(nibble_gpu_bench PRIVATE nibble_cuda)
target_compile_options(nibble_gpu_bench PRIVATE ${NIBBLE_CUDA_WARNINGS})
set_target_properties(nibble_gpu_bench PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR})

# End-to-end batch-1 decode of a Llama safetensors checkpoint on the GPU (bench/gpu/decode).
add_executable(nibble_gpu_decode ${PROJECT_SOURCE_DIR}/bench/gpu/decode/nibble_gpu_decode.cc
  ${PROJECT_SOURCE_DIR}/bench/gpu/decode/batch_throughput.cc
  ${PROJECT_SOURCE_DIR}/bench/gpu/decode/gptq_scheme.cc
  ${PROJECT_SOURCE_DIR}/src/formats/safetensors/safetensors_file.cc
  ${PROJECT_SOURCE_DIR}/src/core/mapped_file.cc ${PROJECT_SOURCE_DIR}/src/core/dtype.cc)
target_link_libraries(nibble_gpu_decode PRIVATE nibble_cuda)
target_compile_options(nibble_gpu_decode PRIVATE ${NIBBLE_CUDA_WARNINGS})
set_target_properties(nibble_gpu_decode PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR})
