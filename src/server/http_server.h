#pragma once
// A small asynchronous HTTP/1.1 server on Boost.Beast: one strand per connection, no thread
// per request or per stream. Route handlers get an Exchange, answer it at once or later from
// any thread (through post), and may stream Server-Sent Events.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <nlohmann/json.hpp>

namespace nibble::server {

struct HttpLimits {
  uint64_t max_body_bytes = 32ull << 20;
  uint32_t max_header_bytes = 16u << 10;
  // Slow clients must not pin a connection: headers and body each have a deadline, and an
  // idle keep-alive connection is closed after the header timeout.
  std::chrono::milliseconds header_timeout{10'000};
  std::chrono::milliseconds body_timeout{30'000};
  int64_t max_connections = 1024;
};

using HttpMessage = boost::beast::http::request<boost::beast::http::string_body>;
using HeaderList = std::vector<std::pair<std::string, std::string>>;

// One request and its response. Methods must run on the connection's strand; use post()
// to get there from another thread (the engine's).
class Exchange {
 public:
  virtual ~Exchange() = default;
  virtual const HttpMessage& request() const = 0;
  virtual std::string_view path() const = 0;  // target without the query
  virtual std::chrono::steady_clock::time_point arrival() const = 0;

  virtual void respond(int status, std::string body, std::string_view content_type,
                       const HeaderList& headers = {}) = 0;
  void respond_json(int status, const nlohmann::json& body, const HeaderList& headers = {});

  // Server-Sent Events: headers, then `data: <payload>\n\n` events, then the end.
  virtual void start_events() = 0;
  virtual void send_event(std::string_view payload) = 0;
  virtual void end_events() = 0;

  // Runs `fn` on this exchange's strand.
  virtual void post(std::function<void()> fn) = 0;
  // Called (on the strand) if the client goes away before the response is complete.
  virtual void on_disconnect(std::function<void()> fn) = 0;
  virtual bool disconnected() const = 0;
};

using Handler = std::function<void(std::shared_ptr<Exchange>)>;

class HttpServer {
 public:
  HttpServer(boost::asio::io_context& io, const std::string& host, uint16_t port, HttpLimits limits,
             Handler handler);
  uint16_t port() const;
  void stop_accepting();
  int64_t open_connections() const { return *connections_; }

 private:
  void accept();

  boost::asio::io_context& io_;
  boost::asio::ip::tcp::acceptor acceptor_;
  HttpLimits limits_;
  Handler handler_;
  std::shared_ptr<std::atomic<int64_t>> connections_;
};

// JSON text that never throws on invalid UTF-8 (it is replaced by U+FFFD).
std::string dump_json(const nlohmann::json& value);

}  // namespace nibble::server
