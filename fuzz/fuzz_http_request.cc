// HTTP request bodies of every route that reads one: POST /v1/completions,
// /v1/chat/completions and /generate, through the real route handlers (JSON parse, field
// validation, tokenization, chat template, context-length checks, engine request building)
// but without sockets. The server is put in its draining state, so a request that passes
// every check ends in the admission check's 503 instead of running the model: every input
// must end in an ApiError of status 400, 404 or 503, and never in any other exception.
// Input: one byte choosing the route, then the body.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <string>

#include "core/error.h"
#include "formats/memory_checkpoint.h"
#include "fuzz_common.h"
#include "model/loader.h"
#include "nibble/engine.h"
#include "server/api_error.h"
#include "server/routes.h"
#include "server/server_context.h"
#include "tokenizer/synthetic_tokenizer.h"
#include "tokenizer/tokenizer.h"

namespace {

namespace server = nibble::server;

// Random f32 weights held in memory: the routes only need a model to exist.
void add_random(nibble::MemoryCheckpoint& ck, const std::string& name, std::vector<int64_t> shape) {
  static std::mt19937 rng(7);
  std::normal_distribution<float> dist(0.0f, 0.1f);
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = dist(rng);
  ck.add_f32(name, std::move(shape), v);
}

nibble::ModelSource tiny_model() {
  nibble::ModelConfig c;
  c.model_type = "llama";
  c.vocab_size = 267;  // 5 specials, 256 bytes, 6 pieces
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.head_dim = 16;
  c.max_position_embeddings = 256;
  c.eos_token_ids = {2};
  auto ck = std::make_shared<nibble::MemoryCheckpoint>("memory://fuzz-model");
  add_random(*ck, "model.embed_tokens.weight", {c.vocab_size, c.hidden_size});
  add_random(*ck, "lm_head.weight", {c.vocab_size, c.hidden_size});
  add_random(*ck, "model.norm.weight", {c.hidden_size});
  const std::string p = "model.layers.0.";
  const int64_t q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim;
  add_random(*ck, p + "self_attn.q_proj.weight", {q, c.hidden_size});
  add_random(*ck, p + "self_attn.k_proj.weight", {kv, c.hidden_size});
  add_random(*ck, p + "self_attn.v_proj.weight", {kv, c.hidden_size});
  add_random(*ck, p + "self_attn.o_proj.weight", {c.hidden_size, q});
  add_random(*ck, p + "mlp.gate_proj.weight", {c.intermediate_size, c.hidden_size});
  add_random(*ck, p + "mlp.up_proj.weight", {c.intermediate_size, c.hidden_size});
  add_random(*ck, p + "mlp.down_proj.weight", {c.hidden_size, c.intermediate_size});
  add_random(*ck, p + "input_layernorm.weight", {c.hidden_size});
  add_random(*ck, p + "post_attention_layernorm.weight", {c.hidden_size});

  nibble::ModelSource s;
  s.path = "memory/fuzz-model";
  s.format = "hf";
  s.config = c;
  s.checkpoint = ck;
  s.raw_checkpoint = ck;
  s.tokenizer = nibble::Tokenizer::from_json(
      nibble::byte_fallback_tokenizer_json({"<s>", "</s>", "<|im_start|>", "<|im_end|>"}),
      "fuzz-tokenizer.json");
  s.chat_template =
      "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
      "message['content'] + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}"
      "{{ '<|im_start|>assistant\\n' }}{% endif %}";
  s.bos_token = "<s>";
  s.eos_token = "</s>";
  s.stop_ids = {2, 4};
  return s;
}

// An exchange that records nothing: with the server draining, no handler gets far enough to
// answer or stream.
class FuzzExchange : public server::Exchange {
 public:
  explicit FuzzExchange(server::HttpMessage request) : request_(std::move(request)) {}
  const server::HttpMessage& request() const override { return request_; }
  std::string_view path() const override { return {}; }
  std::chrono::steady_clock::time_point arrival() const override { return {}; }
  void respond(int, std::string, std::string_view, const server::HeaderList&) override {}
  void start_events() override {}
  void send_event(std::string_view) override {}
  void end_events() override {}
  void post(std::function<void()>) override {}
  void on_disconnect(std::function<void()>) override {}
  bool disconnected() const override { return false; }

 private:
  server::HttpMessage request_;
};

struct Server {
  Server() : engine(args(), tiny_model()), context(engine, server::ServerConfig{}) {
    context.set_draining();
  }
  static nibble::EngineArgs args() {
    nibble::EngineArgs a;
    a.max_total_tokens = 1024;
    a.threads = 1;
    a.served_model_name = "fuzz-model";
    return a;
  }
  nibble::Engine engine;
  server::ServerContext context;
};

Server& shared_server() {
  static Server* s = new Server();  // never destroyed: the engine thread outlives the fuzzer
  return *s;
}

using Handler = void (*)(server::ServerContext&, const std::shared_ptr<server::Exchange>&);
constexpr Handler kHandlers[] = {server::handle_completions, server::handle_chat_completions,
                                 server::handle_generate};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  shared_server();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  Server& s = shared_server();
  server::HttpMessage message;
  message.method(boost::beast::http::verb::post);
  message.body().assign(reinterpret_cast<const char*>(data + 1), size - 1);
  auto exchange = std::make_shared<FuzzExchange>(std::move(message));
  const Handler handler = kHandlers[data[0] % std::size(kHandlers)];
  try {
    handler(s.context, exchange);
  } catch (const server::ApiError& error) {
    if (error.status() != 400 && error.status() != 404 && error.status() != 503) __builtin_trap();
  }
  return 0;
}
