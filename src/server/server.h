#pragma once
// The HTTP server of `nibble serve`: routes, auth, limits and graceful shutdown over an Engine.
#include <cstdint>
#include <functional>

#include "nibble/engine.h"
#include "server/server_context.h"

namespace nibble::server {

// Serves until SIGINT or SIGTERM, then stops accepting, lets in-flight requests finish for up
// to config.shutdown_timeout, aborts the rest, and returns 0. `on_listening` gets the bound
// port (useful with port 0).
int serve(Engine& engine, const ServerConfig& config,
          const std::function<void(uint16_t port)>& on_listening = {});

}  // namespace nibble::server
