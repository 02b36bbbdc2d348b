#include "server/http_server.h"

#include <deque>
#include <optional>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/status.hpp>

#include "core/error.h"
#include "server/api_error.h"

namespace nibble::server {

namespace net = boost::asio;
namespace http = boost::beast::http;
using tcp = net::ip::tcp;
using boost::system::error_code;

std::string dump_json(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

void Exchange::respond_json(int status, const nlohmann::json& body, const HeaderList& headers) {
  respond(status, dump_json(body), "application/json", headers);
}

namespace {

std::string_view reason_phrase(int status) {
  const auto text = http::obsolete_reason(static_cast<http::status>(status));
  return {text.data(), text.size()};
}

class Connection final : public Exchange, public std::enable_shared_from_this<Connection> {
 public:
  Connection(tcp::socket socket, const HttpLimits& limits, const Handler& handler,
             std::shared_ptr<std::atomic<int64_t>> counter)
      : socket_(std::move(socket)),
        deadline_(socket_.get_executor()),
        limits_(limits),
        handler_(handler),
        counter_(std::move(counter)) {
    ++*counter_;
  }
  ~Connection() override { --*counter_; }

  void start() { read_header(); }

  const HttpMessage& request() const override { return message_; }
  std::string_view path() const override { return path_; }
  std::chrono::steady_clock::time_point arrival() const override { return arrival_; }

  void respond(int status, std::string body, std::string_view content_type,
               const HeaderList& headers) override {
    if (state_ != State::kHandling) return;
    std::string head = status_line(status);
    head += fmt::format("Content-Type: {}\r\nContent-Length: {}\r\n", content_type, body.size());
    for (const auto& [name, value] : headers) head += fmt::format("{}: {}\r\n", name, value);
    head += keep_alive_ ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n";
    if (message_.method() != http::verb::head) head += body;
    state_ = State::kDone;
    queue_write(std::move(head));
  }

  void start_events() override {
    if (state_ != State::kHandling) return;
    // HTTP/1.0 has no chunked encoding: the stream then ends by closing the connection.
    chunked_ = message_.version() >= 11;
    if (!chunked_) keep_alive_ = false;
    std::string head = status_line(200);
    head += "Content-Type: text/event-stream\r\nCache-Control: no-cache\r\n";
    if (chunked_) head += "Transfer-Encoding: chunked\r\n";
    head += keep_alive_ ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n";
    state_ = State::kStreaming;
    queue_write(std::move(head));
  }

  void send_event(std::string_view payload) override {
    if (state_ != State::kStreaming) return;
    std::string event = fmt::format("data: {}\n\n", payload);
    queue_write(chunked_ ? fmt::format("{:x}\r\n{}\r\n", event.size(), event) : std::move(event));
  }

  void end_events() override {
    if (state_ != State::kStreaming) return;
    state_ = State::kDone;
    queue_write(chunked_ ? "0\r\n\r\n" : "");
  }

  void post(std::function<void()> fn) override {
    net::post(socket_.get_executor(), [self = shared_from_this(), fn = std::move(fn)] {
      try {
        fn();
      } catch (const std::exception& error) {
        self->fail_internal(error.what());
      }
    });
  }

  // A handler failed after the request was accepted: answer 500, or end an open stream with
  // an error event, so the client never hangs.
  void fail_internal(const std::string& message) {
    spdlog::error("{}: internal error: {}", path_, message);
    if (state_ == State::kHandling) {
      respond_json(500, error_json(500, "internal_error", message));
    } else if (state_ == State::kStreaming) {
      send_event(dump_json(error_json(500, "internal_error", message)));
      send_event("[DONE]");
      end_events();
    }
  }

  void on_disconnect(std::function<void()> fn) override {
    disconnect_callbacks_.push_back(std::move(fn));
  }
  bool disconnected() const override { return peer_gone_; }

 private:
  enum class State { kReading, kHandling, kStreaming, kDone, kClosed };

  std::string status_line(int status) const {
    return fmt::format("HTTP/1.1 {} {}\r\nServer: nibble\r\n", status, reason_phrase(status));
  }

  void arm_deadline(std::chrono::milliseconds timeout) {
    deadline_.expires_after(timeout);
    deadline_.async_wait([self = shared_from_this()](error_code ec) {
      if (!ec) self->close();  // the client was too slow: drop it
    });
  }

  void read_header() {
    state_ = State::kReading;
    message_ = {};
    disconnect_callbacks_.clear();
    parser_.emplace();
    parser_->header_limit(limits_.max_header_bytes);
    parser_->body_limit(limits_.max_body_bytes);
    arm_deadline(limits_.header_timeout);
    http::async_read_header(
        socket_, buffer_, *parser_,
        [self = shared_from_this()](error_code ec, size_t) { self->on_header(ec); });
  }

  void on_header(error_code ec) {
    if (state_ == State::kClosed) return;
    arrival_ = std::chrono::steady_clock::now();
    if (ec == http::error::header_limit) {
      return reject(431, "request headers exceed the limit of {} bytes", limits_.max_header_bytes);
    }
    if (ec == http::error::body_limit) return reject_body_too_large();
    if (ec) {
      if (ec != http::error::end_of_stream && ec != net::error::eof &&
          ec != net::error::operation_aborted && ec != net::error::connection_reset) {
        return reject(400, "malformed HTTP request: {}", ec.message());
      }
      return close();
    }
    const auto& header = parser_->get();
    const auto length = parser_->content_length();
    if (length && *length > limits_.max_body_bytes) return reject_body_too_large();
    if (boost::beast::iequals(header[http::field::expect], "100-continue")) {
      queue_write("HTTP/1.1 100 Continue\r\n\r\n");
    }
    arm_deadline(limits_.body_timeout);
    http::async_read(
        socket_, buffer_, *parser_,
        [self = shared_from_this()](error_code read_ec, size_t) { self->on_body(read_ec); });
  }

  void on_body(error_code ec) {
    if (state_ == State::kClosed) return;
    deadline_.cancel();
    if (ec == http::error::body_limit) return reject_body_too_large();
    if (ec) {
      if (ec == net::error::operation_aborted || ec == net::error::eof ||
          ec == http::error::end_of_stream || ec == http::error::partial_message) {
        return close();
      }
      return reject(400, "malformed HTTP request: {}", ec.message());
    }
    message_ = parser_->release();
    keep_alive_ = message_.keep_alive();
    const std::string_view target(message_.target().data(), message_.target().size());
    path_ = std::string(target.substr(0, target.find('?')));
    state_ = State::kHandling;
    watch_for_disconnect();
    try {
      handler_(shared_from_this());
    } catch (const ApiError& error) {
      if (state_ == State::kHandling) respond_json(error.status(), error.to_json(), error.headers);
    } catch (const std::exception& error) {
      const auto method = message_.method_string();
      spdlog::error("{} {}: {}", std::string_view(method.data(), method.size()), path_,
                    error.what());
      if (state_ == State::kHandling) {
        respond_json(500, error_json(500, "internal_error", error.what()));
      }
    }
  }

  // While a response is pending, a read tells us when the client hangs up, so its request
  // can be cancelled instead of running to the end for nobody.
  void watch_for_disconnect() {
    if (watching_) return;
    watching_ = true;
    socket_.async_read_some(
        buffer_.prepare(4096),
        [self = shared_from_this()](error_code ec, size_t n) { self->on_watch(ec, n); });
  }

  void on_watch(error_code ec, size_t n) {
    watching_ = false;
    if (state_ == State::kClosed) return;
    if (ec) {
      if (state_ == State::kHandling || state_ == State::kStreaming) client_gone();
      return close();
    }
    buffer_.commit(n);  // a pipelined request: keep its bytes for the next parse
    if (resume_after_watch_) {
      resume_after_watch_ = false;
      read_header();
    }
  }

  void client_gone() {
    peer_gone_ = true;
    auto callbacks = std::move(disconnect_callbacks_);
    disconnect_callbacks_.clear();
    for (auto& fn : callbacks) fn();
  }

  template <typename... Args>
  void reject(int status, fmt::format_string<Args...> format, Args&&... args) {
    const std::string message = fmt::format(format, std::forward<Args>(args)...);
    keep_alive_ = false;
    state_ = State::kHandling;
    respond_json(status, error_json(status, "invalid_request_error", message));
  }

  void reject_body_too_large() {
    reject(413, "request body exceeds the limit of {} bytes", limits_.max_body_bytes);
  }

  void queue_write(std::string data) {
    writes_.push_back(std::move(data));
    if (!writing_) write_next();
  }

  void write_next() {
    if (writes_.empty()) {
      writing_ = false;
      if (state_ == State::kDone) response_complete();
      return;
    }
    writing_ = true;
    net::async_write(socket_, net::buffer(writes_.front()),
                     [self = shared_from_this()](error_code ec, size_t) {
                       self->writes_.pop_front();
                       if (ec) {
                         if (self->state_ != State::kClosed) {
                           self->client_gone();
                           self->close();
                         }
                         return;
                       }
                       self->write_next();
                     });
  }

  void response_complete() {
    if (!keep_alive_) return linger_close();
    // Idle keep-alive connections get the header deadline too.
    if (watching_) {
      state_ = State::kReading;
      resume_after_watch_ = true;
      arm_deadline(limits_.header_timeout);
    } else {
      read_header();
    }
  }

  // Closing with unread request bytes makes the kernel send a reset that can destroy the
  // response in flight (a 413 in particular); half-close and drain briefly instead.
  void linger_close() {
    state_ = State::kClosed;
    error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_send, ignored);
    deadline_.expires_after(std::chrono::seconds(2));
    deadline_.async_wait([self = shared_from_this()](error_code ec) {
      if (!ec) self->hard_close();
    });
    if (!watching_) drain();
  }

  void drain() {
    watching_ = true;
    socket_.async_read_some(net::buffer(drain_buffer_),
                            [self = shared_from_this()](error_code ec, size_t) {
                              self->watching_ = false;
                              if (ec) return self->hard_close();
                              self->drain();
                            });
  }

  void close() {
    if (state_ == State::kClosed) return hard_close();
    state_ = State::kClosed;
    hard_close();
  }

  void hard_close() {
    error_code ignored;
    deadline_.cancel();
    socket_.close(ignored);
  }

  tcp::socket socket_;
  net::steady_timer deadline_;
  const HttpLimits& limits_;
  const Handler& handler_;
  std::shared_ptr<std::atomic<int64_t>> counter_;
  boost::beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  HttpMessage message_;
  std::string path_;
  std::chrono::steady_clock::time_point arrival_;
  State state_ = State::kReading;
  bool keep_alive_ = true;
  bool chunked_ = true;
  bool writing_ = false;
  bool watching_ = false;
  bool resume_after_watch_ = false;
  bool peer_gone_ = false;
  std::deque<std::string> writes_;
  std::vector<std::function<void()>> disconnect_callbacks_;
  std::array<char, 16384> drain_buffer_{};
};

}  // namespace

HttpServer::HttpServer(net::io_context& io, const std::string& host, uint16_t port,
                       HttpLimits limits, Handler handler)
    : io_(io),
      acceptor_(io),
      limits_(limits),
      handler_(std::move(handler)),
      connections_(std::make_shared<std::atomic<int64_t>>(0)) {
  error_code ec;
  const auto address = net::ip::make_address(host, ec);
  NIBBLE_CHECK(!ec, "--host: '{}' is not an IP address", host);
  const tcp::endpoint endpoint(address, port);
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
  NIBBLE_CHECK(!ec, "cannot listen on {}:{}: {}", host, port, ec.message());
  accept();
}

uint16_t HttpServer::port() const { return acceptor_.local_endpoint().port(); }

void HttpServer::stop_accepting() {
  error_code ignored;
  acceptor_.close(ignored);
}

void HttpServer::accept() {
  acceptor_.async_accept(net::make_strand(io_), [this](error_code ec, tcp::socket socket) {
    if (ec == net::error::operation_aborted || !acceptor_.is_open()) return;
    if (!ec) {
      if (*connections_ >= limits_.max_connections) {
        error_code ignored;
        socket.close(ignored);  // over the cap: refuse rather than run out of descriptors
      } else {
        std::make_shared<Connection>(std::move(socket), limits_, handler_, connections_)->start();
      }
    }
    accept();
  });
}

}  // namespace nibble::server
