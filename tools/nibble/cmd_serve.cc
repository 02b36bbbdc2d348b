// `nibble serve`: the OpenAI-compatible and SGLang-native HTTP server, with
// sglang.launch_server's flags.
#include <cstdio>
#include <optional>

#include <spdlog/spdlog.h>

#include "command.h"
#include "common_options.h"
#include "core/error.h"
#include "nibble/engine.h"
#include "server/server.h"

namespace nibble::cli {
namespace {

struct ServeOptions {
  ModelOptions model;
  EngineArgs engine;
  server::ServerConfig server;
  std::optional<double> mem_fraction_static;
  bool disable_cuda_graph = false;
  int tp_size = 1;
  std::string log_level;
  double header_timeout_s = 10.0;
  double body_timeout_s = 30.0;
  double shutdown_timeout_s = 30.0;
  std::optional<uint64_t> random_seed;
};

std::chrono::milliseconds to_ms(double seconds, const char* flag) {
  NIBBLE_CHECK(seconds > 0 && seconds < 86400.0, "{} must be in (0, 86400) seconds, got {}", flag,
               seconds);
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000.0));
}

int run_serve(ServeOptions& o, CLI::App& app) {
  if (!app.remaining().empty()) {
    std::string valid;
    for (const CLI::Option* option : app.get_options()) {
      if (!option->get_lnames().empty()) valid += " --" + option->get_lnames().front();
    }
    fail("nibble serve: unknown argument '{}'; valid flags:{}", app.remaining().front(), valid);
  }
  if (!o.log_level.empty())
    spdlog::set_level(spdlog::level::from_str(o.log_level));
  else
    spdlog::set_level(spdlog::level::info);
  NIBBLE_CHECK(o.tp_size == 1,
               "--tp-size {}: tensor parallelism is not available on the CPU; use 1", o.tp_size);
  if (o.mem_fraction_static) {
    spdlog::info(
        "--mem-fraction-static {} is ignored on the CPU (size the KV cache with "
        "--max-total-tokens)",
        *o.mem_fraction_static);
  }
  if (o.disable_cuda_graph) spdlog::info("--disable-cuda-graph: no CUDA graphs on the CPU (no-op)");
  NIBBLE_CHECK(o.server.max_queued_requests >= 0, "--max-queued-requests must be >= 0");
  NIBBLE_CHECK(o.server.io_threads >= 1 && o.server.io_threads <= 64,
               "--io-threads must be in [1, 64], got {}", o.server.io_threads);
  NIBBLE_CHECK(o.server.http.max_body_bytes >= 1024, "--max-body-bytes must be >= 1024");
  o.server.http.header_timeout = to_ms(o.header_timeout_s, "--header-timeout");
  o.server.http.body_timeout = to_ms(o.body_timeout_s, "--body-timeout");
  NIBBLE_CHECK(o.shutdown_timeout_s >= 0, "--shutdown-timeout must be >= 0");
  o.server.shutdown_timeout =
      std::chrono::milliseconds(static_cast<int64_t>(o.shutdown_timeout_s * 1000.0));

  o.engine.model_path = o.model.model_path;
  o.engine.dtype = o.model.dtype;
  o.engine.threads = o.model.threads;
  o.engine.quantization = o.model.effective_quantization();
  o.engine.torchao_config = o.model.torchao_config;
  o.engine.kv_cache_dtype = o.model.kv_cache_dtype;
  o.engine.quantization_param_path = o.model.quantization_param_path;
  o.engine.modelopt_export_path = o.model.modelopt_export_path;
  o.engine.modelopt_checkpoint_save_path = o.model.modelopt_checkpoint_save_path;
  o.engine.modelopt_checkpoint_restore_path = o.model.modelopt_checkpoint_restore_path;
  o.engine.random_seed = o.random_seed;
  spdlog::info("loading {}", o.model.resolved_path().string());
  Engine engine(o.engine);
  return server::serve(engine, o.server, [&](uint16_t port) {
    const std::string url = fmt::format("http://{}:{}", o.server.host, port);
    const std::string auth = o.server.api_key.empty() ? "" : " -H 'Authorization: Bearer $API_KEY'";
    std::printf(
        "nibble serve: %s ready at %s (OpenAI API under /v1, SGLang /generate, /metrics)\n"
        "try: curl %s/v1/chat/completions -H 'Content-Type: application/json'%s -d "
        "'{\"messages\": [{\"role\": \"user\", \"content\": \"Hello!\"}], \"max_tokens\": 32}'\n",
        engine.args().served_model_name.c_str(), url.c_str(), url.c_str(), auth.c_str());
    std::fflush(stdout);
  });
}

std::function<int()> setup_serve(CLI::App& app) {
  auto o = std::make_shared<ServeOptions>();
  app.description("Serve a model over HTTP: OpenAI /v1 API, SGLang /generate, /metrics");
  app.allow_extras();  // reported by run_serve with the list of valid flags
  o->model.add(app);
  app.add_option("--host", o->server.host, "address to listen on")->capture_default_str();
  app.add_option("--port", o->server.port, "port (0: any free port)")->capture_default_str();
  app.add_option("--context-length", o->engine.context_length,
                 "max tokens per sequence (0: the model's)")
      ->capture_default_str();
  app.add_option("--mem-fraction-static", o->mem_fraction_static, "accepted; ignored on the CPU");
  app.add_option("--max-running-requests", o->engine.max_running_requests)->capture_default_str();
  app.add_option("--max-total-tokens", o->engine.max_total_tokens,
                 "KV-cache capacity in tokens (0: from memory)")
      ->capture_default_str();
  app.add_option("--chunked-prefill-size", o->engine.chunked_prefill_size)->capture_default_str();
  app.add_flag("--disable-radix-cache", o->engine.disable_radix_cache);
  app.add_flag("--disable-cuda-graph", o->disable_cuda_graph, "accepted; no-op on the CPU");
  app.add_option("--tp-size", o->tp_size, "tensor parallel size (1 on the CPU)")
      ->capture_default_str();
  app.add_option("--api-key", o->server.api_key, "require 'Authorization: Bearer KEY'");
  app.add_option("--served-model-name", o->engine.served_model_name);
  app.add_option("--chat-template", o->engine.chat_template, "a Jinja file overriding the model's");
  app.add_option("--log-level", o->log_level, "trace, debug, info (default), warn, error");
  app.add_option("--random-seed", o->random_seed, "seed for requests that give none");
  app.add_option("--max-queued-requests", o->server.max_queued_requests,
                 "waiting requests beyond this get 503")
      ->capture_default_str();
  app.add_option("--shutdown-timeout", o->shutdown_timeout_s,
                 "seconds to drain in-flight requests on SIGTERM")
      ->capture_default_str();
  app.add_option("--max-body-bytes", o->server.http.max_body_bytes)->capture_default_str();
  app.add_option("--header-timeout", o->header_timeout_s,
                 "seconds a client has to send its headers")
      ->capture_default_str();
  app.add_option("--body-timeout", o->body_timeout_s, "seconds a client has to send its body")
      ->capture_default_str();
  app.add_option("--max-connections", o->server.http.max_connections)->capture_default_str();
  app.add_option("--max-n", o->server.max_choices, "cap on n (choices per request)")
      ->capture_default_str();
  app.add_option("--io-threads", o->server.io_threads, "HTTP threads")->capture_default_str();
  return [o, &app] { return run_serve(*o, app); };
}

NIBBLE_COMMAND(serve, setup_serve);

}  // namespace
}  // namespace nibble::cli
