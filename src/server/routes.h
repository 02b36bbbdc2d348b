#pragma once
// Route handlers. Each runs on the connection's strand, answers at once or later, and throws
// ApiError for a client error.
#include <memory>

#include "server/http_server.h"
#include "server/server_context.h"

namespace nibble::server {

// OpenAI: POST /v1/completions, POST /v1/chat/completions, GET /v1/models.
void handle_completions(ServerContext& context, const std::shared_ptr<Exchange>& exchange);
void handle_chat_completions(ServerContext& context, const std::shared_ptr<Exchange>& exchange);
void handle_models(ServerContext& context, const std::shared_ptr<Exchange>& exchange);

// SGLang native: POST /generate, GET /health, GET /health_generate, GET /get_model_info,
// GET /get_server_info, POST /flush_cache; and GET /metrics.
void handle_generate(ServerContext& context, const std::shared_ptr<Exchange>& exchange);
void handle_health(ServerContext& context, const std::shared_ptr<Exchange>& exchange);
void handle_health_generate(ServerContext& context, const std::shared_ptr<Exchange>& exchange);
void handle_model_info(ServerContext& context, const std::shared_ptr<Exchange>& exchange);
void handle_server_info(ServerContext& context, const std::shared_ptr<Exchange>& exchange);
void handle_flush_cache(ServerContext& context, const std::shared_ptr<Exchange>& exchange);
void handle_metrics(ServerContext& context, const std::shared_ptr<Exchange>& exchange);

}  // namespace nibble::server
