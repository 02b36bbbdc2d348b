#include "server/server.h"

#include <csignal>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include "server/api_error.h"
#include "server/routes.h"

namespace nibble::server {

namespace net = boost::asio;

namespace {

using RouteFn = void (*)(ServerContext&, const std::shared_ptr<Exchange>&);

struct Route {
  std::string_view method;
  std::string_view path;
  RouteFn fn;
  bool is_public;  // served without an API key
};

constexpr Route kRoutes[] = {
    {"POST", "/v1/completions", handle_completions, false},
    {"POST", "/v1/chat/completions", handle_chat_completions, false},
    {"GET", "/v1/models", handle_models, false},
    {"POST", "/generate", handle_generate, false},
    {"GET", "/health", handle_health, true},
    {"GET", "/health_generate", handle_health_generate, false},
    {"GET", "/get_model_info", handle_model_info, false},
    {"GET", "/get_server_info", handle_server_info, false},
    {"POST", "/flush_cache", handle_flush_cache, false},
    {"GET", "/metrics", handle_metrics, false},
};

void dispatch(ServerContext& context, const std::shared_ptr<Exchange>& exchange) {
  const std::string_view path = exchange->path();
  const auto method_text = exchange->request().method_string();
  std::string_view method(method_text.data(), method_text.size());
  if (method == "HEAD") method = "GET";
  std::string allowed;
  try {
    for (const Route& route : kRoutes) {
      if (route.path != path) continue;
      if (route.method != method) {
        allowed += allowed.empty() ? route.method : ", " + std::string(route.method);
        continue;
      }
      if (!route.is_public) context.auth().check(exchange->request());
      route.fn(context, exchange);
      return;
    }
    if (!allowed.empty()) {
      ApiError error(405, "invalid_request_error",
                     fmt::format("method {} is not allowed on {}; use {}", method, path, allowed));
      error.headers.emplace_back("Allow", allowed);
      throw error;
    }
    throw ApiError(404, "invalid_request_error", fmt::format("no route for {} {}", method, path),
                   "", "not_found");
  } catch (const ApiError&) {
    context.metrics().count_http_error();
    throw;
  }
}

}  // namespace

namespace {

// Everything the engine's callbacks may still reach: kept on the heap so that it can outlive
// serve() when a request ignores its abort (its callback would otherwise post into a dead
// io_context).
struct ServerState {
  ServerState(Engine& engine, const ServerConfig& config)
      : io(std::max(1, config.io_threads)),
        context(engine, config),
        http(io, config.host, config.port, config.http,
             [this](std::shared_ptr<Exchange> exchange) { dispatch(context, exchange); }),
        signals(io, SIGINT, SIGTERM),
        drain_timer(io) {}

  void on_signal(boost::system::error_code ec, int signal) {
    if (ec) return;
    if (context.draining()) {
      spdlog::warn("second signal: exiting now");
      return io.stop();
    }
    spdlog::info("signal {}: refusing new requests; draining {} in flight (up to {} ms)", signal,
                 context.active_jobs().load(), context.config().shutdown_timeout.count());
    context.set_draining();
    http.stop_accepting();
    drain_deadline = std::chrono::steady_clock::now() + context.config().shutdown_timeout;
    poll_drain();
    signals.async_wait([this](boost::system::error_code e, int s) { on_signal(e, s); });
  }

  void poll_drain() {
    const auto now = std::chrono::steady_clock::now();
    if (context.active_jobs() == 0) {
      spdlog::info("all requests finished; exiting");
      return io.stop();
    }
    if (now >= drain_deadline) {
      if (aborted) {
        spdlog::warn("{} request(s) did not end after the abort; exiting",
                     context.active_jobs().load());
        return io.stop();
      }
      spdlog::warn("drain timeout: aborting {} request(s)", context.active_jobs().load());
      context.abort_all_jobs();
      aborted = true;
      drain_deadline = now + std::chrono::seconds(3);
    }
    drain_timer.expires_after(std::chrono::milliseconds(50));
    drain_timer.async_wait([this](boost::system::error_code ec) {
      if (!ec) poll_drain();
    });
  }

  net::io_context io;
  ServerContext context;
  HttpServer http;
  net::signal_set signals;
  net::steady_timer drain_timer;
  std::chrono::steady_clock::time_point drain_deadline;
  bool aborted = false;
};

// A handler that throws must not take the server down: log it and keep running.
void run_io(net::io_context& io) {
  for (;;) {
    try {
      io.run();
      return;
    } catch (const std::exception& error) {
      spdlog::error("uncaught error in an HTTP handler: {}", error.what());
    }
  }
}

}  // namespace

int serve(Engine& engine, const ServerConfig& config,
          const std::function<void(uint16_t port)>& on_listening) {
  auto state = std::make_unique<ServerState>(engine, config);
  if (on_listening) on_listening(state->http.port());
  state->signals.async_wait([raw = state.get()](boost::system::error_code ec, int signal) {
    raw->on_signal(ec, signal);
  });
  std::vector<std::thread> threads;
  for (int i = 1; i < config.io_threads; ++i) {
    threads.emplace_back([raw = state.get()] { run_io(raw->io); });
  }
  run_io(state->io);
  for (auto& thread : threads) thread.join();
  if (state->context.active_jobs() > 0) {
    (void)state.release();  // deliberately leaked: see ServerState
  }
  return 0;
}

}  // namespace nibble::server
