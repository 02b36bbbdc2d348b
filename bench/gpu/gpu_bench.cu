// Kernel benchmarks of the CUDA backend on Llama-3-8B's linear shapes.
//
// Protocol: per (K×N, M, kernel), the weights exist in enough copies to exceed 200 MB (so no
// call finds its weight in the 50 MB L2), calls rotate through the copies; one sample = 20
// back-to-back calls between two CUDA events; the figure is the median of 15 samples after 3
// warm-up samples, divided by 20. Weight TB/s counts the bytes the kernel must stream (codes,
// scales, zeros); TFLOP/s counts 2·M·N·K. Paged attention (bench_attention): K = context,
// N = batch, bytes = K and V read. Output: CSV lines on stdout (kernel,K,N,M,us,weight_bytes,path).
#include <cuda_bf16.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda/fp8_linear.h"
#include "backend/cuda/int8_linear.h"
#include "backend/cuda/lt_gemm.h"
#include "backend/cuda/paged_attention.h"
#include "backend/cuda/paged_attention_rows.h"
#include "backend/cuda/wxa16_linear.h"
#include "quant/reference/dequantize.h"

namespace nibble::cuda {
namespace {

constexpr size_t kRotateBytes = size_t(200) << 20;

uint64_t next_random(uint64_t& state) {
  state ^= state << 13;
  state ^= state >> 7;
  state ^= state << 17;
  return state;
}

void fill_random(std::vector<uint8_t>& bytes, uint64_t seed) {
  uint64_t state = seed | 1;
  size_t i = 0;
  for (; i + 8 <= bytes.size(); i += 8) {
    const uint64_t r = next_random(state);
    std::memcpy(bytes.data() + i, &r, 8);
  }
  for (; i < bytes.size(); ++i) bytes[i] = uint8_t(next_random(state));
}

// Random bf16 in [-1, 1) on the device.
DeviceBuffer random_bf16(size_t count, uint64_t seed) {
  std::vector<uint16_t> host(count);
  uint64_t state = seed | 1;
  for (auto& v : host) {
    const float f = float(int64_t(next_random(state) % 2000001) - 1000000) * 1e-6f;
    const __nv_bfloat16 b = __float2bfloat16_rn(f);
    std::memcpy(&v, &b, 2);
  }
  DeviceBuffer buffer(count * 2);
  buffer.upload(host.data(), buffer.bytes());
  return buffer;
}

// An int (4- or 8-bit, symmetric) weight with random codes and f16-exact scales.
quant::QuantizedTensor random_int_weight(int bits, int64_t n, int64_t k, int64_t group,
                                         uint64_t seed) {
  quant::QuantizedTensor t;
  t.elem = bits == 4 ? quant::ElemType::Int4 : quant::ElemType::Int8;
  t.rows = n;
  t.cols = k;
  quant::allocate_codes(t);
  fill_random(t.codes, seed);
  quant::set_scale_layout(t, 1, group < 0 ? k : group);
  uint64_t state = seed * 7 + 1;
  for (float& s : t.scales) s = float(1 + next_random(state) % 1000) / 65536.0f;
  t.scale_dtype = quant::ScaleDType::F16;
  return t;
}

quant::QuantizedTensor random_fp8_weight(int64_t n, int64_t k, bool per_channel, uint64_t seed) {
  quant::QuantizedTensor t;
  t.elem = quant::ElemType::Fp8E4M3;
  t.rows = n;
  t.cols = k;
  quant::allocate_codes(t);
  fill_random(t.codes, seed);
  // Avoid NaN codes (0x7F / 0xFF): random finite e4m3 values.
  for (auto& c : t.codes) {
    if ((c & 0x7F) == 0x7F) c &= 0xFE;
  }
  if (per_channel) {
    quant::set_scale_layout(t, 1, k);
  } else {
    quant::set_scale_layout(t, n, k);
  }
  for (float& s : t.scales) s = 1.0f / 64;
  return t;
}

size_t copies_for(size_t bytes) { return std::max<size_t>(1, (kRotateBytes + bytes - 1) / bytes); }

float median_us(const std::function<void(size_t)>& call, size_t copies) {
  constexpr int kCalls = 20, kSamples = 15, kWarmup = 3;
  cudaEvent_t start, stop;
  NIBBLE_CUDA_CHECK(cudaEventCreate(&start));
  NIBBLE_CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<float> samples;
  size_t next = 0;
  for (int s = 0; s < kWarmup + kSamples; ++s) {
    NIBBLE_CUDA_CHECK(cudaEventRecord(start));
    for (int c = 0; c < kCalls; ++c) call(next++ % copies);
    NIBBLE_CUDA_CHECK(cudaEventRecord(stop));
    NIBBLE_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0.0f;
    NIBBLE_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    if (s >= kWarmup) samples.push_back(ms * 1000.0f / kCalls);
  }
  NIBBLE_CUDA_CHECK(cudaGetLastError());
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(samples.begin(), samples.end());
  return samples[samples.size() / 2];
}

void report(const char* kernel, int64_t k, int64_t n, int64_t m, float us, size_t weight_bytes,
            const char* path) {
  std::printf("%s,%lld,%lld,%lld,%.2f,%zu,%s\n", kernel, (long long)k, (long long)n, (long long)m,
              us, weight_bytes, path);
  std::fflush(stdout);
}

std::vector<int64_t> parse_list(const char* text) {
  std::vector<int64_t> out;
  for (const char* p = text; *p;) {
    out.push_back(std::strtoll(p, const_cast<char**>(&p), 10));
    while (*p == ',' || *p == 'x') ++p;
  }
  return out;
}

// A device copy of a repacked weight (the benchmarks rotate copies to defeat the L2 cache).
WxA16Weight copy_of(const WxA16Weight& first) {
  WxA16Weight copy;
  copy.bits = first.bits;
  copy.rows = first.rows;
  copy.cols = first.cols;
  copy.n_tiles = first.n_tiles;
  copy.k_units = first.k_units;
  copy.group_size = first.group_size;
  copy.n_groups = first.n_groups;
  copy.scale_type = first.scale_type;
  copy.symmetric_zero = first.symmetric_zero;
  copy.fp8 = first.fp8;
  for (auto [dst, src] : {std::pair{&copy.codes, &first.codes},
                          {&copy.scales, &first.scales},
                          {&copy.zeros, &first.zeros}}) {
    dst->resize(src->bytes());
    if (src->bytes() > 0) {
      NIBBLE_CUDA_CHECK(cudaMemcpy(dst->get(), src->get(), src->bytes(), cudaMemcpyDeviceToDevice));
    }
  }
  return copy;
}

void bench_shape(LtGemm& lt, int64_t k, int64_t n, const std::vector<int64_t>& ms,
                 const std::string& only, bool sweep) {
  const int64_t max_m = *std::max_element(ms.begin(), ms.end());
  DeviceBuffer x = random_bf16(size_t(max_m * k), 1);
  DeviceBuffer y(size_t(max_m * n) * 2);
  auto wanted = [&](const char* name) {
    return only.empty() || only.find(name) != std::string::npos;
  };

  if (wanted("bf16")) {
    const size_t bytes = size_t(n * k) * 2;
    std::vector<DeviceBuffer> w;
    for (size_t c = 0; c < copies_for(bytes); ++c) w.push_back(random_bf16(size_t(n * k), 7 + c));
    for (int64_t m : ms) {
      const float us = median_us(
          [&](size_t c) { dense_gemm_bf16(lt, x.get(), w[c].get(), y.get(), m, n, k, nullptr); },
          w.size());
      report("nibble_bf16", k, n, m, us, bytes, "cublasLt");
    }
  }
  struct IntVariant {
    const char* name;
    const char* key;  // for --only
    int bits;
    int64_t group;
  };
  // GGUF Q4_0 / Q8_0 run as what they are repacked into (gguf_weight.h): int4 / int8, group 32,
  // f16 scales.
  const IntVariant variants[] = {{"nibble_w4a16_g128", "w4a16", 4, 128},
                                 {"nibble_w8a16_channel", "w8a16", 8, -1},
                                 {"nibble_gguf_q4_0", "gguf", 4, 32},
                                 {"nibble_gguf_q8_0", "gguf", 8, 32}};
  for (const IntVariant& variant : variants) {
    const char* name = variant.name;
    const int bits = variant.bits;
    if (!wanted(variant.key)) continue;
    const WxA16Weight first =
        prepare_wxa16_weight(random_int_weight(bits, n, k, variant.group, 11), name);
    // Copies made on the device: a host repack per copy would dominate the run.
    std::vector<WxA16Weight> w;
    for (size_t c = 0; c < copies_for(first.stream_bytes()); ++c) {
      WxA16Weight copy = copy_of(first);
      w.push_back(std::move(copy));
    }
    WxA16Workspace ws;
    for (int64_t m : ms) {
      if (wxa16_bulk_gemv_supports(first, m)) {
        // The bulk-copy decode kernel: units per consumer warp × ring stages × CTAs per SM.
        const WxA16GemvTuning defaults = wxa16_gemv_tuning();
        std::vector<std::array<int, 3>> shapes{
            {defaults.bulk_units_per_warp, defaults.bulk_stages, defaults.bulk_ctas_per_sm}};
        if (sweep) {
          shapes = {{4, 3, 1}, {1, 4, 2}, {2, 3, 2}, {2, 4, 2}, {4, 2, 2},
                    {1, 6, 3}, {2, 3, 3}, {1, 4, 4}, {2, 2, 4}};
        }
        for (const auto [upw, stages, ctas] : shapes) {
          WxA16GemvTuning t = defaults;
          t.bulk_units_per_warp = upw;
          t.bulk_stages = stages;
          t.bulk_ctas_per_sm = ctas;
          wxa16_gemv_tuning() = t;
          if (!wxa16_bulk_gemv_supports(first, m)) continue;
          const float us = median_us(
              [&](size_t c) {
                wxa16_linear(lt, w[c], x.get(), m, y.get(), ws, nullptr, WxA16Path::BulkGemv);
              },
              w.size());
          const std::string path = "bulk w" + std::to_string(upw) + " s" + std::to_string(stages) +
                                   " c" + std::to_string(ctas);
          report(name, k, n, m, us, first.stream_bytes(), path.c_str());
        }
        wxa16_gemv_tuning() = defaults;
      }
      if (wxa16_gemv_supports(first, m)) {
        // The decode kernel's variants: units loaded per batch × CTAs per SM that split-K aims at.
        const WxA16GemvTuning defaults = wxa16_gemv_tuning();
        std::vector<WxA16GemvTuning> tunings{defaults};
        if (sweep) {
          // units per batch × CTAs per SM × the short-split rule (max units per split, 0 = off)
          tunings.clear();
          for (const auto [batch, ctas, units] : std::vector<std::array<int, 3>>{
                   {4, 1, 0}, {4, 2, 0}, {4, 3, 0}, {4, 4, 0}, {4, 8, 0}, {8, 2, 0}, {4, 2, 4}}) {
            WxA16GemvTuning t = defaults;
            t.batch_units = batch;
            t.ctas_per_sm = ctas;
            t.max_units_per_split = units;
            tunings.push_back(t);
          }
        }
        for (const WxA16GemvTuning& tuning : tunings) {
          wxa16_gemv_tuning() = tuning;
          const float us = median_us(
              [&](size_t c) {
                wxa16_linear(lt, w[c], x.get(), m, y.get(), ws, nullptr, WxA16Path::Gemv);
              },
              w.size());
          const std::string path = "gemv b" + std::to_string(tuning.batch_units) + " c" +
                                   std::to_string(tuning.ctas_per_sm) + " u" +
                                   std::to_string(tuning.max_units_per_split);
          report(name, k, n, m, us, first.stream_bytes(), path.c_str());
        }
        wxa16_gemv_tuning() = defaults;
      }
      for (auto path : {WxA16Path::Stream, WxA16Path::DequantGemm}) {
        if (path == WxA16Path::DequantGemm && m < 64) continue;
        if (path == WxA16Path::Stream && m > 256) continue;
        const float us = median_us(
            [&](size_t c) { wxa16_linear(lt, w[c], x.get(), m, y.get(), ws, nullptr, path); },
            w.size());
        report(name, k, n, m, us, first.stream_bytes(),
               path == WxA16Path::Stream ? "stream" : "dequant+lt");
      }
    }
  }
  if (wanted("int8")) {
    // W8A8 int8 (per-channel weights, per-token activations quantized in the call).
    const Int8Weight first = prepare_int8_weight(random_int_weight(8, n, k, -1, 17), "int8");
    std::vector<Int8Weight> w;
    for (size_t c = 0; c < copies_for(first.codes.bytes()); ++c) {
      w.push_back(prepare_int8_weight(random_int_weight(8, n, k, -1, 17), "int8"));
    }
    Int8Workspace ws;
    for (int64_t m : ms) {
      const float us = median_us(
          [&](size_t c) { int8_linear(lt, w[c], x.get(), m, y.get(), ws, nullptr); }, w.size());
      report("nibble_w8a8_int8_with_act_quant", k, n, m, us, first.codes.bytes(),
             "quant+gemm+scale");
    }
  }
  if (wanted("fp8")) {
    for (bool rowwise : {false, true}) {
      const Fp8Weight first = prepare_fp8_weight(random_fp8_weight(n, k, rowwise, 13), "fp8");
      std::vector<Fp8Weight> w;
      for (size_t c = 0; c < copies_for(first.codes.bytes()); ++c) {
        Fp8Weight copy;
        copy.rows = first.rows;
        copy.cols = first.cols;
        copy.padded_cols = first.padded_cols;
        copy.padded_rows = first.padded_rows;
        copy.per_channel = first.per_channel;
        copy.codes.resize(first.codes.bytes());
        NIBBLE_CUDA_CHECK(cudaMemcpy(copy.codes.get(), first.codes.get(), first.codes.bytes(),
                                     cudaMemcpyDeviceToDevice));
        copy.scales.resize(first.scales.bytes());
        NIBBLE_CUDA_CHECK(cudaMemcpy(copy.scales.get(), first.scales.get(), first.scales.bytes(),
                                     cudaMemcpyDeviceToDevice));
        w.push_back(std::move(copy));
      }
      if (rowwise) {
        // The same codes on the bulk-copy GEMV (activation quantization inside the kernel).
        const WxA16Weight bulk_first =
            prepare_wxa16_weight(random_fp8_weight(n, k, rowwise, 13), "fp8 bulk");
        std::vector<WxA16Weight> bulk;
        for (size_t c = 0; c < copies_for(bulk_first.stream_bytes()); ++c) {
          bulk.push_back(copy_of(bulk_first));
        }
        for (int64_t m : ms) {
          if (!wxa16_bulk_gemv_supports(bulk_first, m)) continue;
          const float us =
              median_us([&](size_t c) { wxa16_bulk_gemv(bulk[c], x.get(), m, y.get(), nullptr); },
                        bulk.size());
          report("nibble_fp8_rowwise_with_act_quant", k, n, m, us, bulk_first.stream_bytes(),
                 "bulk gemv (quantize inside)");
        }
      }
      Fp8Workspace ws;
      for (int64_t m : ms) {
        ws.x_codes.ensure(size_t(m * first.padded_cols));
        ws.x_scales.ensure(size_t(m) * 4);
        quantize_fp8_per_token(x.get(), m, k, first.padded_cols, ws.x_codes.get<uint8_t>(),
                               ws.x_scales.get<float>(), nullptr);
        for (bool fast : {false, true}) {
          bool lt_scaled = true;
          const float us = median_us(
              [&](size_t c) {
                lt_scaled = fp8_gemm(lt, w[c], ws.x_codes.get<uint8_t>(), ws.x_scales.get<float>(),
                                     rowwise, m, y.get(), fast, ws, nullptr);
              },
              w.size());
          std::string kernel = rowwise ? "nibble_fp8_rowwise" : "nibble_fp8_tensor";
          if (fast) kernel += "_fast";
          report(kernel.c_str(), k, n, m, us, first.codes.bytes(),
                 lt_scaled ? "cublasLt" : "cublasLt+scale-kernel");
        }
        if (rowwise) {
          Fp8Options options;
          const float us = median_us(
              [&](size_t c) { fp8_linear(lt, w[c], x.get(), m, y.get(), ws, options, nullptr); },
              w.size());
          report("nibble_fp8_rowwise_with_act_quant", k, n, m, us, first.codes.bytes(),
                 "quant+gemm");
        }
      }
    }
  }
}

// Paged decode attention, Llama-3-8B heads (32 query, 8 KV, head_dim 128), bf16 KV: per
// (batch, context) the KV pool holds enough disjoint copies of every sequence's blocks to exceed
// 200 MB and calls rotate through the copies' block tables. Bytes = the K and V rows read.
void bench_attention(const std::vector<int64_t>& batches, const std::vector<int64_t>& contexts) {
  constexpr int kHeads = 32, kKvHeads = 8, kDim = 128, kBlock = kPagedAttentionBlockSize;
  for (int64_t batch : batches) {
    for (int64_t context : contexts) {
      const int64_t blocks_per_seq = (context + kBlock - 1) / kBlock;
      const size_t bytes = size_t(batch * context) * kKvHeads * kDim * 2 * 2;
      const size_t copies = copies_for(bytes);
      const int64_t n_blocks = int64_t(copies) * batch * blocks_per_seq;
      const size_t cache_elems = size_t(n_blocks) * kKvHeads * kBlock * kDim;
      DeviceBuffer k_cache = random_bf16(cache_elems, 21), v_cache = random_bf16(cache_elems, 22);
      DeviceBuffer q = random_bf16(size_t(batch) * kHeads * kDim, 23);
      DeviceBuffer out(size_t(batch) * kHeads * kDim * 2);
      std::vector<int32_t> tables(static_cast<size_t>(n_blocks));
      for (int64_t i = 0; i < n_blocks; ++i) tables[size_t(i)] = int32_t(i);
      DeviceBuffer table_buffer(tables.size() * 4);
      table_buffer.upload(tables.data(), table_buffer.bytes());
      std::vector<int32_t> lens(static_cast<size_t>(batch), static_cast<int32_t>(context));
      DeviceBuffer len_buffer(lens.size() * 4);
      len_buffer.upload(lens.data(), len_buffer.bytes());
      PagedAttentionWorkspace ws;
      PagedAttentionArgs args;
      args.q = q.get();
      args.k_cache = k_cache.get();
      args.v_cache = v_cache.get();
      args.seq_lens = len_buffer.get<int32_t>();
      args.out = out.get();
      args.num_seqs = int(batch);
      args.n_heads = kHeads;
      args.n_kv_heads = kKvHeads;
      args.head_dim = kDim;
      args.max_blocks_per_seq = int(blocks_per_seq);
      args.max_seq_len = int(context);
      args.scale = 0.088f;
      const float us = median_us(
          [&](size_t c) {
            args.block_tables = table_buffer.get<int32_t>() + c * size_t(batch * blocks_per_seq);
            paged_attention_decode(args, ws, nullptr);
          },
          copies);
      report("nibble_paged_attention_decode", context, batch, 1, us, bytes, "bf16 kv 32q/8kv d128");

      // The batch forward's tensor-core kernel on the same step: one row (tile) per sequence.
      std::vector<RowTile> tiles;
      for (int64_t s = 0; s < batch; ++s) tiles.push_back({int32_t(s), 1, int32_t(context - 1)});
      DeviceBuffer tile_buffer(tiles.size() * sizeof(RowTile));
      tile_buffer.upload(tiles.data(), tile_buffer.bytes());
      PagedRowsAttentionArgs rows;
      rows.q = q.get();
      rows.k_cache = k_cache.get();
      rows.v_cache = v_cache.get();
      rows.max_blocks_per_row = int(blocks_per_seq);
      rows.tiles = tile_buffer.get<RowTile>();
      rows.n_tiles = int(batch);
      rows.out = out.get();
      rows.n_heads = kHeads;
      rows.n_kv_heads = kKvHeads;
      rows.head_dim = kDim;
      rows.scale = 0.088f;
      const float rows_us = median_us(
          [&](size_t c) {
            rows.block_tables = table_buffer.get<int32_t>() + c * size_t(batch * blocks_per_seq);
            paged_attention_rows(rows, nullptr);
          },
          copies);
      report("nibble_paged_attention_rows", context, batch, 1, rows_us, bytes,
             "bf16 kv 32q/8kv d128, decode rows");
    }
  }
}

// Prefill attention of `batch` whole prompts of `context` tokens (16-row tiles, causal): TFLOP/s
// of the causal products, 4·context²/2·head_dim per head and prompt.
void bench_prefill_attention(const std::vector<int64_t>& batches,
                             const std::vector<int64_t>& contexts) {
  constexpr int kHeads = 32, kKvHeads = 8, kDim = 128, kBlock = kPagedAttentionBlockSize;
  for (int64_t batch : batches) {
    for (int64_t context : contexts) {
      const int64_t rows = batch * context;
      if (rows > 65536) continue;
      const int64_t blocks_per_seq = (context + kBlock - 1) / kBlock;
      const size_t cache_elems = size_t(batch * blocks_per_seq) * kKvHeads * kBlock * kDim;
      DeviceBuffer k_cache = random_bf16(cache_elems, 24), v_cache = random_bf16(cache_elems, 25);
      const int64_t q_stride = (kHeads + 2 * kKvHeads) * kDim;
      DeviceBuffer q = random_bf16(size_t(rows * q_stride), 26);
      DeviceBuffer out(size_t(rows) * kHeads * kDim * 2);
      std::vector<int32_t> tables(static_cast<size_t>(rows * blocks_per_seq));
      std::vector<int32_t> seq(static_cast<size_t>(rows)), position(static_cast<size_t>(rows));
      for (int64_t r = 0; r < rows; ++r) {
        seq[size_t(r)] = int32_t(r / context);
        position[size_t(r)] = int32_t(r % context);
        for (int64_t b = 0; b < blocks_per_seq; ++b) {
          tables[size_t(r * blocks_per_seq + b)] = int32_t(r / context * blocks_per_seq + b);
        }
      }
      const std::vector<RowTile> tiles = make_row_tiles(seq, position);
      DeviceBuffer table_buffer(tables.size() * 4), tile_buffer(tiles.size() * sizeof(RowTile));
      table_buffer.upload(tables.data(), table_buffer.bytes());
      tile_buffer.upload(tiles.data(), tile_buffer.bytes());
      PagedRowsAttentionArgs args;
      args.q = q.get();
      args.q_stride = q_stride;
      args.k_cache = k_cache.get();
      args.v_cache = v_cache.get();
      args.block_tables = table_buffer.get<int32_t>();
      args.max_blocks_per_row = int(blocks_per_seq);
      args.tiles = tile_buffer.get<RowTile>();
      args.n_tiles = int(tiles.size());
      args.out = out.get();
      args.n_heads = kHeads;
      args.n_kv_heads = kKvHeads;
      args.head_dim = kDim;
      args.scale = 0.088f;
      const float us = median_us([&](size_t) { paged_attention_rows(args, nullptr); }, 1);
      const double flops =
          4.0 * double(batch) * kHeads * kDim * double(context) * double(context + 1) / 2.0;
      std::printf("nibble_paged_attention_rows_prefill,%lld,%lld,%lld,%.2f,0,%.1f TFLOP/s\n",
                  static_cast<long long>(context), static_cast<long long>(batch),
                  static_cast<long long>(context), us, flops / (us * 1e-6) / 1e12);
    }
  }
}

}  // namespace
}  // namespace nibble::cuda

int main(int argc, char** argv) {
  // nibble_gpu_bench [--shapes 4096x6144,...] [--ms 1,16,...] [--only w4a16,gguf,fp8,...]
  //                  [--sweep] [--batches 1,8,...] [--contexts 1024,...]
  std::string shapes = "4096x6144,4096x4096,4096x28672,14336x4096", ms_text = "1,16,64,256,2048",
              only;
  std::string batches = "1,8,32", contexts = "1024,4096,16384";
  bool sweep = false;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--sweep") {
      sweep = true;
      continue;
    }
    if (i + 1 >= argc) break;
    if (flag == "--shapes") shapes = argv[i + 1];
    if (flag == "--ms") ms_text = argv[i + 1];
    if (flag == "--only") only = argv[i + 1];
    if (flag == "--batches") batches = argv[i + 1];
    if (flag == "--contexts") contexts = argv[i + 1];
    ++i;
  }
  try {
    const auto dims = nibble::cuda::parse_list(shapes.c_str());
    const auto ms = nibble::cuda::parse_list(ms_text.c_str());
    nibble::cuda::LtGemm lt;
    std::printf("kernel,K,N,M,us,weight_bytes,path\n");
    for (size_t i = 0; i + 1 < dims.size(); i += 2) {
      nibble::cuda::bench_shape(lt, dims[i], dims[i + 1], ms, only, sweep);
    }
    if (only.empty() || only.find("attention") != std::string::npos) {
      nibble::cuda::bench_attention(nibble::cuda::parse_list(batches.c_str()),
                                    nibble::cuda::parse_list(contexts.c_str()));
      nibble::cuda::bench_prefill_attention(nibble::cuda::parse_list(batches.c_str()),
                                            nibble::cuda::parse_list(contexts.c_str()));
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nibble_gpu_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
