#include "net/http_client.h"

#include <fmt/format.h>

#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <limits>
#include <optional>

#include "core/error.h"

namespace nibble::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using boost::system::error_code;

Url Url::parse(std::string_view text) {
  constexpr std::string_view kScheme = "http://";
  if (text.substr(0, kScheme.size()) != kScheme) {
    if (text.substr(0, 8) == "https://") {
      fail("{}: https is not supported; use http:// (e.g. through a local proxy)", text);
    }
    fail("{}: expected a URL of the form http://host[:port][/path]", text);
  }
  std::string_view rest = text.substr(kScheme.size());
  const size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  Url url;
  if (slash != std::string_view::npos) url.base_path = std::string(rest.substr(slash));
  while (!url.base_path.empty() && url.base_path.back() == '/') url.base_path.pop_back();
  // "[::1]:8000": the brackets keep the IPv6 address's colons apart from the port's.
  size_t host_end = authority.size();
  if (!authority.empty() && authority.front() == '[') {
    host_end = authority.find(']');
    NIBBLE_CHECK(host_end != std::string_view::npos, "{}: unterminated '[' in the host", text);
    url.host = std::string(authority.substr(1, host_end - 1));
    ++host_end;
  } else {
    host_end = authority.find(':');
    if (host_end == std::string_view::npos) host_end = authority.size();
    url.host = std::string(authority.substr(0, host_end));
  }
  NIBBLE_CHECK(!url.host.empty(), "{}: the host is empty", text);
  if (host_end < authority.size()) {
    NIBBLE_CHECK(authority[host_end] == ':', "{}: unexpected text after the host", text);
    const std::string_view port = authority.substr(host_end + 1);
    int value = 0;
    NIBBLE_CHECK(!port.empty() && port.size() <= 5, "{}: the port must be a number in 1..65535",
                 text);
    for (const char c : port) {
      NIBBLE_CHECK(c >= '0' && c <= '9', "{}: the port must be a number in 1..65535", text);
      value = value * 10 + (c - '0');
    }
    NIBBLE_CHECK(value >= 1 && value <= 65535, "{}: the port must be a number in 1..65535", text);
    url.port = static_cast<uint16_t>(value);
  }
  return url;
}

std::string Url::origin() const {
  const bool ipv6 = host.find(':') != std::string::npos;
  return ipv6 ? fmt::format("http://[{}]:{}", host, port) : fmt::format("http://{}:{}", host, port);
}

nlohmann::json HttpResponse::json() const {
  try {
    return nlohmann::json::parse(body);
  } catch (const nlohmann::json::exception& e) {
    fail("the response (HTTP {}) is not JSON: {}: {}", status, e.what(), body.substr(0, 200));
  }
}

bool SseParser::feed(std::string_view bytes, const std::function<bool(std::string&&)>& on_data) {
  pending_.append(bytes);
  size_t start = 0;
  for (;;) {
    // Events end with a blank line; servers may use "\n" or "\r\n" line ends.
    size_t end = std::string::npos, separator = 0;
    for (size_t i = start; i + 1 < pending_.size(); ++i) {
      if (pending_[i] != '\n') continue;
      if (pending_[i + 1] == '\n') {
        end = i, separator = 2;
        break;
      }
      if (pending_[i + 1] == '\r' && i + 2 < pending_.size() && pending_[i + 2] == '\n') {
        end = i, separator = 3;
        break;
      }
    }
    if (end == std::string::npos) break;
    std::string data;
    bool has_data = false;
    size_t line_start = start;
    while (line_start <= end) {
      size_t line_end = pending_.find('\n', line_start);
      if (line_end == std::string::npos || line_end > end) line_end = end;
      std::string_view line(pending_.data() + line_start, line_end - line_start);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (line.substr(0, 5) == "data:") {
        line.remove_prefix(5);
        if (!line.empty() && line.front() == ' ') line.remove_prefix(1);
        if (has_data) data += '\n';
        data.append(line);
        has_data = true;
      }
      line_start = line_end + 1;
    }
    start = end + separator;
    if (has_data && !on_data(std::move(data))) {
      pending_.erase(0, start);
      return false;
    }
  }
  pending_.erase(0, start);
  return true;
}

struct HttpClient::Impl {
  asio::io_context io;
  std::optional<beast::tcp_stream> stream;
  beast::flat_buffer buffer;
  bool reusable = false;  // the last response left the connection open and in sync

  // Runs one asynchronous operation to completion on the private io_context: the
  // tcp_stream's expiry gives the synchronous calls their timeouts.
  template <typename Start>
  error_code run(Start&& start) {
    error_code result;
    start([&result](error_code ec, auto&&...) { result = ec; });
    io.restart();
    io.run();
    return result;
  }

  void close() {
    if (stream) {
      error_code ignored;
      stream->socket().shutdown(tcp::socket::shutdown_both, ignored);
      stream->close();
    }
    stream.reset();
    buffer.clear();
    reusable = false;
  }
};

namespace {

std::string describe(const error_code& ec) {
  if (ec == beast::error::timeout) return "timed out";
  return ec.message();
}

bool stale_connection_error(const error_code& ec) {
  return ec == http::error::end_of_stream || ec == asio::error::eof ||
         ec == asio::error::connection_reset || ec == asio::error::broken_pipe;
}

}  // namespace

HttpClient::HttpClient(std::string base_url, HttpClientOptions options)
    : url_(Url::parse(base_url)), options_(std::move(options)), impl_(std::make_unique<Impl>()) {}

HttpClient::~HttpClient() = default;

namespace {

struct Target {
  Url url;
  const HttpClientOptions& options;
  std::string method, path;

  std::string where() const { return fmt::format("{} {}", method, url.full(path)); }
};

http::request<http::string_body> make_request(const Target& x, http::verb verb, std::string body,
                                              bool stream) {
  http::request<http::string_body> request{verb, x.url.base_path + x.path, 11};
  request.set(http::field::host, fmt::format("{}:{}", x.url.host, x.url.port));
  request.set(http::field::user_agent, "nibble");
  request.set(http::field::accept, stream ? "text/event-stream" : "application/json");
  if (!x.options.api_key.empty()) {
    request.set(http::field::authorization, "Bearer " + x.options.api_key);
  }
  if (verb == http::verb::post) {
    request.set(http::field::content_type, "application/json");
    request.body() = std::move(body);
  }
  request.keep_alive(true);
  request.prepare_payload();
  return request;
}

// Connects (or reuses the open connection), sends the request and reads the response header
// into `parser`. A reused keep-alive connection the server has meanwhile closed is retried
// once on a fresh one: nothing of the request reached the server then.
template <typename Parser>
void send_and_read_header(HttpClient::Impl& impl, const Target& x,
                          http::request<http::string_body>& request,
                          std::optional<Parser>& parser) {
  for (int attempt = 0;; ++attempt) {
    parser.emplace();
    // Not boost::none: Boost 1.74 compares a Content-Length against an empty optional as
    // "over the limit".
    parser->body_limit(std::numeric_limits<uint64_t>::max());
    const bool reused = impl.stream && impl.reusable;
    if (!reused) {
      impl.close();
      tcp::resolver resolver(impl.io);
      error_code ec;
      const auto endpoints = resolver.resolve(x.url.host, std::to_string(x.url.port), ec);
      if (ec) fail("{}: cannot resolve host '{}': {}", x.where(), x.url.host, ec.message());
      impl.stream.emplace(impl.io);
      impl.stream->expires_after(x.options.connect_timeout);
      ec = impl.run([&](auto handler) { impl.stream->async_connect(endpoints, handler); });
      if (ec) {
        impl.close();
        fail("{}: cannot connect: {}", x.where(), describe(ec));
      }
    }
    impl.reusable = false;
    impl.stream->expires_after(x.options.read_timeout);
    error_code ec =
        impl.run([&](auto handler) { http::async_write(*impl.stream, request, handler); });
    if (!ec) {
      ec = impl.run([&](auto handler) {
        http::async_read_header(*impl.stream, impl.buffer, *parser, handler);
      });
    }
    if (!ec) return;
    impl.close();
    if (reused && attempt == 0 && stale_connection_error(ec)) continue;
    fail("{}: {} (while waiting for the response header)", x.where(), describe(ec));
  }
}

}  // namespace

namespace {

HttpResponse plain_exchange(HttpClient::Impl& impl, const Target& x,
                            http::request<http::string_body> request) {
  std::optional<http::response_parser<http::string_body>> parser;
  send_and_read_header(impl, x, request, parser);
  const error_code ec = impl.run(
      [&](auto handler) { http::async_read(*impl.stream, impl.buffer, *parser, handler); });
  if (ec) {
    impl.close();
    fail("{}: {} (while reading the response body)", x.where(), describe(ec));
  }
  const auto& message = parser->get();
  impl.reusable = message.keep_alive();
  if (!impl.reusable) impl.close();
  return {.status = static_cast<int>(message.result_int()),
          .content_type = std::string(message[http::field::content_type]),
          .body = message.body()};
}

std::string dump_body(const nlohmann::json& body) {
  // Random benchmark prompts can hold broken UTF-8; replace it rather than throw.
  return body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace

HttpResponse HttpClient::get(std::string_view path) {
  const Target x{url_, options_, "GET", std::string(path)};
  return plain_exchange(*impl_, x, make_request(x, http::verb::get, {}, false));
}

HttpResponse HttpClient::post_json(std::string_view path, const nlohmann::json& body) {
  const Target x{url_, options_, "POST", std::string(path)};
  return plain_exchange(*impl_, x, make_request(x, http::verb::post, dump_body(body), false));
}

SseResult HttpClient::post_json_stream(std::string_view path, const nlohmann::json& body,
                                       const SseCallback& on_event) {
  const Target x{url_, options_, "POST", std::string(path)};
  auto request = make_request(x, http::verb::post, dump_body(body), true);
  std::optional<http::response_parser<http::buffer_body>> parser;
  send_and_read_header(*impl_, x, request, parser);
  SseResult result;
  result.response.status = static_cast<int>(parser->get().result_int());
  result.response.content_type = std::string(parser->get()[http::field::content_type]);
  const bool ok = result.response.ok();
  SseParser sse;
  std::array<char, 16384> chunk{};
  while (!parser->is_done()) {
    parser->get().body().data = chunk.data();
    parser->get().body().size = chunk.size();
    std::chrono::steady_clock::time_point arrival;
    impl_->stream->expires_after(options_.read_timeout);
    error_code ec = impl_->run([&](auto handler) {
      http::async_read_some(*impl_->stream, impl_->buffer, *parser,
                            [&arrival, handler](error_code e, size_t n) mutable {
                              arrival = std::chrono::steady_clock::now();
                              handler(e, n);
                            });
    });
    if (ec == http::error::need_buffer) ec = {};
    if (ec) {
      impl_->close();
      fail("{}: {} after {} events (while reading the event stream)", x.where(), describe(ec),
           result.events);
    }
    const std::string_view bytes(chunk.data(), chunk.size() - parser->get().body().size);
    if (!ok) {
      result.response.body.append(bytes);
      continue;
    }
    const bool go_on = sse.feed(bytes, [&](std::string&& data) {
      if (data == "[DONE]") {
        result.saw_done = true;
        return true;
      }
      ++result.events;
      return on_event(SseEvent{.data = std::move(data), .arrival = arrival});
    });
    if (!go_on) {
      result.cancelled = true;
      impl_->close();
      return result;
    }
  }
  impl_->reusable = parser->get().keep_alive();
  if (!impl_->reusable) impl_->close();
  return result;
}

}  // namespace nibble::net
