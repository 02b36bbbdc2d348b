#pragma once
// `nibble bench serve`: a load generator for OpenAI-compatible servers, wired under
// `nibble bench` (cmd_bench.cc).
#include <CLI/CLI.hpp>

#include <functional>

namespace nibble::cli {

struct BenchServeCommand {
  CLI::App* app = nullptr;  // parsed() says whether `serve` was given
  std::function<int()> run;
};

BenchServeCommand add_bench_serve(CLI::App& bench);

}  // namespace nibble::cli
