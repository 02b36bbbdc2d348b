#pragma once
// A small synchronous HTTP/1.1 client (Boost.Beast) for talking to OpenAI-compatible servers:
// JSON requests, plain responses and Server-Sent Event streams. One client holds one
// keep-alive connection and is not thread-safe; give each thread its own.
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace nibble::net {

// "http://host[:port][/prefix]". Only plain http: the servers measured are local or behind a
// proxy, and TLS would add a dependency this tool does not need.
struct Url {
  std::string host;
  uint16_t port = 80;
  std::string base_path;  // without a trailing '/'; "" for the root

  static Url parse(std::string_view text);  // throws nibble::Error naming the URL
  std::string origin() const;               // "http://host:port"
  std::string full(std::string_view path) const { return origin() + base_path + std::string(path); }
};

struct HttpClientOptions {
  std::string api_key;  // sent as "Authorization: Bearer <key>" when not empty
  std::chrono::milliseconds connect_timeout{10'000};
  // Longest wait for any progress once connected (headers, a body chunk, an SSE event).
  std::chrono::milliseconds read_timeout{600'000};
};

struct HttpResponse {
  int status = 0;
  std::string content_type;
  std::string body;  // for streams: the body only when the status is not 2xx
  bool ok() const { return status >= 200 && status < 300; }
  nlohmann::json json() const;  // throws nibble::Error when the body is not JSON
};

struct SseEvent {
  std::string data;  // the `data:` payload (multi-line data joined with '\n')
  std::chrono::steady_clock::time_point arrival;  // when its bytes were read off the socket
};

// Returning false from the callback stops reading and drops the connection (a cancel).
using SseCallback = std::function<bool(const SseEvent&)>;

struct SseResult {
  HttpResponse response;
  int64_t events = 0;      // events delivered to the callback
  bool saw_done = false;   // the stream ended with `data: [DONE]`
  bool cancelled = false;  // the callback returned false
};

class HttpClient {
 public:
  explicit HttpClient(std::string base_url, HttpClientOptions options = {});
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  const Url& url() const { return url_; }

  // Connection failures and timeouts throw nibble::Error naming the method and URL; an HTTP
  // error status is not an exception (see HttpResponse::status).
  HttpResponse get(std::string_view path);
  HttpResponse post_json(std::string_view path, const nlohmann::json& body);
  // Delivers each `data:` event except the final `[DONE]` to `on_event`.
  SseResult post_json_stream(std::string_view path, const nlohmann::json& body,
                             const SseCallback& on_event);

  struct Impl;  // the connection; defined in the .cc so that callers need no Boost headers

 private:
  Url url_;
  HttpClientOptions options_;
  std::unique_ptr<Impl> impl_;
};

// Splits SSE text into events as bytes arrive; kept separate so it can be tested alone.
class SseParser {
 public:
  // Appends bytes; calls `on_data` for every completed event's data (comments and events
  // without data are skipped). Returns false as soon as `on_data` does.
  bool feed(std::string_view bytes, const std::function<bool(std::string&&)>& on_data);

 private:
  std::string pending_;
};

}  // namespace nibble::net
