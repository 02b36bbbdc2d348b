// The HTTP client against nibble's own HTTP server class, in process on a loopback port.
#include "net/http_client.h"

#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <mutex>
#include <thread>
#include <vector>

#include "core/error.h"
#include "server/http_server.h"

namespace nibble::net {
namespace {

using namespace std::chrono_literals;

TEST(HttpClientUrl, ParsesHostPortAndPrefix) {
  const Url a = Url::parse("http://127.0.0.1:30000");
  EXPECT_EQ(a.host, "127.0.0.1");
  EXPECT_EQ(a.port, 30000);
  EXPECT_EQ(a.base_path, "");
  EXPECT_EQ(a.full("/v1/models"), "http://127.0.0.1:30000/v1/models");
  const Url b = Url::parse("http://example.com/api/");
  EXPECT_EQ(b.port, 80);
  EXPECT_EQ(b.full("/v1/models"), "http://example.com:80/api/v1/models");
  const Url c = Url::parse("http://[::1]:8000");
  EXPECT_EQ(c.host, "::1");
  EXPECT_EQ(c.origin(), "http://[::1]:8000");
}

TEST(HttpClientUrl, RejectsBadUrlsNamingThem) {
  for (const char* bad : {"https://x", "127.0.0.1:30000", "http://", "http://h:0", "http://h:99999",
                          "http://h:12a", "http://[::1"}) {
    try {
      Url::parse(bad);
      ADD_FAILURE() << bad << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
    }
  }
}

TEST(SseParserTest, SplitsEventsAcrossReads) {
  SseParser parser;
  std::vector<std::string> got;
  const auto collect = [&](std::string&& data) {
    got.push_back(std::move(data));
    return true;
  };
  EXPECT_TRUE(parser.feed("data: {\"a\":1}\n", collect));
  EXPECT_TRUE(got.empty());
  EXPECT_TRUE(parser.feed("\ndata: tw", collect));
  EXPECT_TRUE(parser.feed("o\r\n\r\n: a comment\n\ndata:x\ndata: y\n\ndata: [DONE]\n\n", collect));
  EXPECT_EQ(got, (std::vector<std::string>{"{\"a\":1}", "two", "x\ny", "[DONE]"}));
}

TEST(SseParserTest, StopsWhenTheCallbackSaysSo) {
  SseParser parser;
  int calls = 0;
  EXPECT_FALSE(parser.feed("data: 1\n\ndata: 2\n\n", [&](std::string&&) { return ++calls < 1; }));
  EXPECT_EQ(calls, 1);
}

// A server on a free loopback port whose handler the test supplies.
class TestServer {
 public:
  explicit TestServer(server::Handler handler, server::HttpLimits limits = {})
      : server_(io_, "127.0.0.1", 0, limits, std::move(handler)), thread_([this] { io_.run(); }) {}
  ~TestServer() { stop(); }
  void stop() {
    io_.stop();
    if (thread_.joinable()) thread_.join();
  }
  int64_t open_connections() const { return server_.open_connections(); }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(server_.port()); }

 private:
  boost::asio::io_context io_;
  server::HttpServer server_;
  std::thread thread_;
};

TEST(HttpClientTest, PostsJsonWithBearerKeyAndReusesTheConnection) {
  TestServer srv([](std::shared_ptr<server::Exchange> x) {
    const auto& request = x->request();
    nlohmann::json echo = {
        {"path", std::string(x->path())},
        {"auth", std::string(request["Authorization"])},
        {"body",
         request.body().empty() ? nlohmann::json() : nlohmann::json::parse(request.body())}};
    x->respond_json(200, echo);
  });
  HttpClient client(srv.url(), {.api_key = "k123", .connect_timeout = 5s, .read_timeout = 5s});
  for (int i = 0; i < 3; ++i) {
    const HttpResponse r = client.post_json("/v1/completions", {{"prompt", "hi"}, {"i", i}});
    ASSERT_EQ(r.status, 200) << r.body;
    const auto j = r.json();
    EXPECT_EQ(j["path"], "/v1/completions");
    EXPECT_EQ(j["auth"], "Bearer k123");
    EXPECT_EQ(j["body"]["i"], i);
  }
  const HttpResponse g = client.get("/health");
  EXPECT_EQ(g.status, 200);
  EXPECT_EQ(g.content_type, "application/json");
  EXPECT_EQ(srv.open_connections(), 1);  // keep-alive: all four went over one connection
}

TEST(HttpClientTest, ReturnsErrorStatusesWithTheirBodies) {
  TestServer srv([](std::shared_ptr<server::Exchange> x) {
    x->respond_json(503, {{"error", {{"message", "busy"}}}}, {{"Retry-After", "1"}});
  });
  HttpClient client(srv.url());
  const HttpResponse r = client.post_json("/v1/completions", nlohmann::json::object());
  EXPECT_EQ(r.status, 503);
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.json()["error"]["message"], "busy");
  const SseResult s = client.post_json_stream("/v1/completions", {{"stream", true}},
                                              [](const SseEvent&) { return true; });
  EXPECT_EQ(s.response.status, 503);
  EXPECT_EQ(s.events, 0);
  EXPECT_NE(s.response.body.find("busy"), std::string::npos);
}

TEST(HttpClientTest, StreamsEventsWithTheirArrivalTimes) {
  std::vector<std::thread> senders;
  std::mutex mutex;
  {
    TestServer srv([&](std::shared_ptr<server::Exchange> x) {
      x->start_events();
      std::lock_guard lock(mutex);
      senders.emplace_back([x] {
        for (int i = 0; i < 3; ++i) {
          std::this_thread::sleep_for(60ms);
          x->post([x, i] { x->send_event(nlohmann::json{{"i", i}}.dump()); });
        }
        x->post([x] {
          x->send_event("[DONE]");
          x->end_events();
        });
      });
    });
    HttpClient client(srv.url(), {.api_key = "", .connect_timeout = 5s, .read_timeout = 5s});
    for (int round = 0; round < 2; ++round) {  // the second stream reuses the connection
      std::vector<SseEvent> events;
      const auto start = std::chrono::steady_clock::now();
      const SseResult r =
          client.post_json_stream("/v1/completions", {{"stream", true}}, [&](const SseEvent& e) {
            events.push_back(e);
            return true;
          });
      ASSERT_EQ(r.response.status, 200);
      EXPECT_EQ(r.response.content_type, "text/event-stream");
      EXPECT_TRUE(r.saw_done);
      EXPECT_FALSE(r.cancelled);
      ASSERT_EQ(r.events, 3);
      ASSERT_EQ(events.size(), 3u);
      auto previous = start;
      for (int i = 0; i < 3; ++i) {
        EXPECT_EQ(nlohmann::json::parse(events[size_t(i)].data)["i"], i);
        // Each event was read when it was sent, not when the stream ended.
        EXPECT_GE(events[size_t(i)].arrival - previous, 40ms) << "event " << i;
        previous = events[size_t(i)].arrival;
      }
    }
    std::lock_guard lock(mutex);
    for (auto& t : senders) t.join();
  }
}

TEST(HttpClientTest, CallbackCanCancelAStream) {
  std::atomic<bool> disconnected{false};
  TestServer srv([&](std::shared_ptr<server::Exchange> x) {
    x->on_disconnect([&] { disconnected = true; });
    x->start_events();
    for (int i = 0; i < 5; ++i) x->send_event("tick");
  });
  HttpClient client(srv.url(), {.api_key = "", .connect_timeout = 5s, .read_timeout = 2s});
  int seen = 0;
  const SseResult r = client.post_json_stream("/x", nlohmann::json::object(),
                                              [&](const SseEvent&) { return ++seen < 2; });
  EXPECT_TRUE(r.cancelled);
  EXPECT_EQ(seen, 2);
  for (int i = 0; i < 200 && !disconnected; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_TRUE(disconnected);
}

TEST(HttpClientTest, ConnectionRefusedNamesTheUrl) {
  std::string url;
  {
    TestServer srv([](std::shared_ptr<server::Exchange> x) { x->respond(200, "", "text/plain"); });
    url = srv.url();
  }  // closed: nothing listens on the port now
  HttpClient client(url, {.api_key = "", .connect_timeout = 2s, .read_timeout = 2s});
  try {
    client.post_json("/v1/completions", nlohmann::json::object());
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("POST " + url + "/v1/completions"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("cannot connect"), std::string::npos) << e.what();
  }
}

TEST(HttpClientTest, ReadTimeoutNamesTheUrl) {
  std::vector<std::shared_ptr<server::Exchange>> held;  // never answered
  std::mutex mutex;
  TestServer srv([&](std::shared_ptr<server::Exchange> x) {
    std::lock_guard lock(mutex);
    held.push_back(std::move(x));
  });
  HttpClient client(srv.url(), {.api_key = "", .connect_timeout = 2s, .read_timeout = 200ms});
  const auto start = std::chrono::steady_clock::now();
  try {
    client.get("/slow");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("GET " + srv.url() + "/slow"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("timed out"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  srv.stop();  // the held exchanges go while their io_context still exists
  held.clear();
}

}  // namespace
}  // namespace nibble::net
