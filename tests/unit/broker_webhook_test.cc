// The alert webhook sender against a real HTTP receiver on loopback: order
// and body of what arrives, which answers are retried and which are final,
// an unreachable receiver, the queue bound, stopping with work pending (in
// flight and in a backoff), and the URL as the logs show it. Waits are on
// conditions with deadlines; nothing asserts how long anything took.
#include <doctest/doctest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "broker/webhook.h"
#include "tests/support/process.h"

using nlohmann::json;
using pacer::WebhookSender;

namespace {

// Long enough for a sanitizer build on a busy machine; a passing test never
// waits for it.
constexpr auto kPatience = std::chrono::seconds(30);

// The path carries a secret, as Slack's and Discord's do.
constexpr const char* kPath = "/services/T000/B000/s3cr3t";

// A webhook receiver on 127.0.0.1, on a port of its own: records every POST
// and answers the n-th with statuses[n] (200 past the end). With hold_first,
// the first request is held unanswered until release().
class Receiver {
 public:
  struct Hit {
    std::string body, content_type, user_agent;
  };

  explicit Receiver(std::vector<int> statuses = {}, bool hold_first = false,
                    std::string retry_after = "")
      : statuses_(std::move(statuses)),
        hold_first_(hold_first),
        retry_after_(std::move(retry_after)) {
    // httplib's defaults add SO_REUSEPORT, which could let two tests share a
    // port; SO_REUSEADDR alone is enough for ephemeral ports.
    server_.set_socket_options([](socket_t fd) {
      int yes = 1;
      setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    });
    server_.set_keep_alive_timeout(1);
    // Without it, Nagle and delayed ACKs add ~40 ms to each answer on a
    // kept-alive connection.
    server_.set_tcp_nodelay(true);
    server_.Post(
        kPath, [this](const httplib::Request& req, httplib::Response& res) {
          std::unique_lock lock(mu_);
          const std::size_t n = hits_.size();
          hits_.push_back({req.body, req.get_header_value("Content-Type"),
                           req.get_header_value("User-Agent")});
          cv_.notify_all();
          if (n == 0 && hold_first_) cv_.wait(lock, [&] { return released_; });
          res.status = n < statuses_.size() ? statuses_[n] : 200;
          if (!retry_after_.empty())
            res.set_header("Retry-After", retry_after_);
          res.set_content(res.status == 200 ? "ok" : "invalid_payload",
                          "text/plain");
        });
    // The listening socket exists (and queues connections) once bound.
    port_ = server_.bind_to_any_port("127.0.0.1");
    REQUIRE(port_ > 0);
    thread_ = std::thread([this] { server_.listen_after_bind(); });
  }

  ~Receiver() {
    release();
    // stop() does nothing until the accept loop has started.
    while (!server_.is_running()) std::this_thread::yield();
    server_.stop();
    thread_.join();
  }

  int port() const { return port_; }
  std::string url() const {
    return "http://127.0.0.1:" + std::to_string(port_) + kPath;
  }

  // True once n requests have arrived; false at the deadline.
  bool wait_hits(std::size_t n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, kPatience, [&] { return hits_.size() >= n; });
  }

  std::vector<Hit> hits() {
    std::lock_guard lock(mu_);
    return hits_;
  }

  void release() {
    std::lock_guard lock(mu_);
    released_ = true;
    cv_.notify_all();
  }

 private:
  const std::vector<int> statuses_;
  const bool hold_first_;
  const std::string retry_after_;
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Hit> hits_;  // guarded by mu_
  bool released_ = false;  // guarded by mu_
};

// Polls the sender's counts until `done` holds; false at the deadline.
bool wait_counts(
    const WebhookSender& sender,
    const std::function<bool(const WebhookSender::Counts&)>& done) {
  return pacer::testing::wait_until([&] { return done(sender.counts()); },
                                    kPatience, std::chrono::milliseconds(1));
}

WebhookSender::Options options_for(const Receiver& r) {
  WebhookSender::Options o;
  o.url = r.url();
  o.timeout_ms = 30'000;  // no test depends on a timeout
  o.backoff_base_ms = 10;
  o.backoff_cap_ms = 100;
  return o;
}

json alert(int seq) {
  return {{"alert", "quota_near_exhaustion"},
          {"seq", seq},
          {"api", "echo"},
          {"text", "90% of \"50/s\" used — ünïcødé"}};
}

std::vector<int> seqs(const std::vector<Receiver::Hit>& hits) {
  std::vector<int> out;
  for (const auto& h : hits) out.push_back(json::parse(h.body).at("seq"));
  return out;
}

}  // namespace

TEST_CASE("documents arrive in order, bodies and content type intact") {
  Receiver r;
  WebhookSender sender(options_for(r));
  for (int i = 0; i < 5; ++i) sender.post(alert(i));
  REQUIRE(wait_counts(sender, [](const auto& c) { return c.delivered == 5; }));

  const auto hits = r.hits();
  REQUIRE(hits.size() == 5);
  for (int i = 0; i < 5; ++i) {
    CHECK(json::parse(hits[i].body) == alert(i));
    CHECK(hits[i].content_type == "application/json");
    CHECK(hits[i].user_agent == "pacer-broker");
  }
  const auto c = sender.counts();
  CHECK(c.failed == 0);
  CHECK(c.dropped == 0);
  CHECK(c.retries == 0);
}

TEST_CASE("a string that is not UTF-8 is replaced, and the alert still sent") {
  Receiver r;
  WebhookSender sender(options_for(r));
  sender.post({{"text", std::string("bad \xff byte")}});
  REQUIRE(wait_counts(sender, [](const auto& c) { return c.delivered == 1; }));
  CHECK(json::parse(r.hits().at(0).body).at("text") == "bad \xEF\xBF\xBD byte");
}

TEST_CASE("500 twice then 200: delivered once, after three attempts") {
  Receiver r({500, 500, 200});
  WebhookSender sender(options_for(r));
  sender.post(alert(7));
  REQUIRE(wait_counts(sender, [](const auto& c) { return c.delivered == 1; }));

  const auto hits = r.hits();
  REQUIRE(hits.size() == 3);
  for (const auto& h : hits) CHECK(json::parse(h.body) == alert(7));
  const auto c = sender.counts();
  CHECK(c.retries == 2);
  CHECK(c.failed == 0);
  CHECK(c.dropped == 0);
}

TEST_CASE("408, 429 and 503 are retried") {
  Receiver r({408, 429, 503, 200});
  WebhookSender sender(options_for(r));
  sender.post(alert(1));
  REQUIRE(wait_counts(sender, [](const auto& c) { return c.delivered == 1; }));
  CHECK(r.hits().size() == 4);
  CHECK(sender.counts().retries == 3);
  CHECK(sender.counts().failed == 0);
}

TEST_CASE("a 400 fails after one attempt, and the next document goes on") {
  Receiver r({400, 200});
  WebhookSender sender(options_for(r));
  sender.post(alert(1));
  sender.post(alert(2));
  REQUIRE(wait_counts(
      sender, [](const auto& c) { return c.failed == 1 && c.delivered == 1; }));
  CHECK(seqs(r.hits()) == std::vector<int>{1, 2});
  CHECK(sender.counts().retries == 0);
}

TEST_CASE("other 4xx and a 3xx are permanent: one attempt each") {
  // Redirects are not followed, so a 301 is an answer like a 404.
  Receiver r({401, 404, 410, 301});
  WebhookSender sender(options_for(r));
  for (int i = 0; i < 4; ++i) sender.post(alert(i));
  REQUIRE(wait_counts(sender, [](const auto& c) { return c.failed == 4; }));
  CHECK(seqs(r.hits()) == std::vector<int>{0, 1, 2, 3});
  const auto c = sender.counts();
  CHECK(c.retries == 0);
  CHECK(c.delivered == 0);
}

TEST_CASE("an unreachable receiver fails after max_attempts") {
  int port = 0;
  {
    Receiver gone;  // binds a port, then closes it
    port = gone.port();
  }
  WebhookSender::Options o;
  o.url = "http://127.0.0.1:" + std::to_string(port) + kPath;
  o.timeout_ms = 30'000;
  o.max_attempts = 3;
  o.backoff_base_ms = 10;
  o.backoff_cap_ms = 100;
  WebhookSender sender(o);
  sender.post(alert(1));
  REQUIRE(wait_counts(sender, [](const auto& c) { return c.failed == 1; }));
  const auto c = sender.counts();
  CHECK(c.retries == 2);
  CHECK(c.delivered == 0);
  CHECK(c.dropped == 0);
}

TEST_CASE("a full queue drops the oldest documents, and counts them") {
  // The first document is held by the receiver, so the sender is busy while
  // the rest are posted: the queue holds max_queue of them, no more.
  Receiver r({}, /*hold_first=*/true);
  auto o = options_for(r);
  o.max_queue = 4;
  WebhookSender sender(o);
  sender.post(alert(0));
  REQUIRE(r.wait_hits(1));  // in flight: no longer in the queue
  for (int i = 1; i <= 7; ++i) sender.post(alert(i));
  CHECK(sender.counts().dropped == 3);  // 1, 2 and 3: the oldest

  r.release();
  REQUIRE(wait_counts(sender, [](const auto& c) { return c.delivered == 5; }));
  CHECK(seqs(r.hits()) == std::vector<int>{0, 4, 5, 6, 7});
  const auto c = sender.counts();
  CHECK(c.dropped == 3);
  CHECK(c.failed == 0);
}

TEST_CASE("stopping with documents pending returns and counts them dropped") {
  // The receiver never answers the first request until the end, so the
  // attempt in flight is aborted at the drain deadline.
  Receiver r({}, /*hold_first=*/true);
  auto o = options_for(r);
  o.drain_ms = 0;
  {
    WebhookSender sender(o);
    sender.post(alert(0));
    REQUIRE(r.wait_hits(1));
    for (int i = 1; i <= 3; ++i) sender.post(alert(i));
    sender.stop();
    auto c = sender.counts();
    CHECK(c.dropped == 4);  // the one in flight and the three queued
    CHECK(c.delivered == 0);
    CHECK(c.failed == 0);

    sender.post(alert(4));  // after stop: dropped at once
    CHECK(sender.counts().dropped == 5);
    sender.stop();  // idempotent
  }
  {
    // The same by destruction alone.
    Receiver held({}, /*hold_first=*/true);
    auto p = options_for(held);
    p.drain_ms = 0;
    {
      WebhookSender sender(p);
      sender.post(alert(0));
      REQUIRE(held.wait_hits(1));
      sender.post(alert(1));
    }
    CHECK(held.hits().size() == 1);
  }
  CHECK(r.hits().size() == 1);
}

TEST_CASE("stopping interrupts a backoff; Retry-After sets its floor") {
  // base 0 would retry at once; Retry-After (capped at a minute) makes the
  // sender wait, and stop() cuts the wait short: the retry would come after
  // the drain deadline, so the document is dropped without another attempt.
  Receiver r({429}, /*hold_first=*/false, /*retry_after=*/"3600");
  auto o = options_for(r);
  o.backoff_base_ms = 0;
  o.backoff_cap_ms = 60'000;
  o.drain_ms = 2'000;
  WebhookSender sender(o);
  sender.post(alert(1));
  REQUIRE(r.wait_hits(1));
  sender.stop();
  const auto c = sender.counts();
  CHECK(c.dropped == 1);
  CHECK(c.retries == 0);
  CHECK(c.failed == 0);
  CHECK(r.hits().size() == 1);
}

TEST_CASE("the logs' origin strips userinfo, path, query and fragment") {
  using pacer::webhook_log_origin;
  CHECK(webhook_log_origin("https://hooks.slack.com/services/T0/B0/XXXX") ==
        "https://hooks.slack.com");
  CHECK(webhook_log_origin("http://127.0.0.1:8080/hook") ==
        "http://127.0.0.1:8080");
  CHECK(webhook_log_origin("https://user:p@ss@example.com:8443/a?b=c#d") ==
        "https://example.com:8443");
  CHECK(webhook_log_origin("https://example.com?token=secret") ==
        "https://example.com");
  CHECK(webhook_log_origin("https://example.com#secret") ==
        "https://example.com");
  CHECK(webhook_log_origin("http://[::1]:9000/x/y") == "http://[::1]:9000");
  CHECK(webhook_log_origin("https://discord.com") == "https://discord.com");
  CHECK(webhook_log_origin("HTTPS://Example.COM/Path") ==
        "HTTPS://Example.COM");
  // No scheme, or something else before "://": nothing of it is shown.
  CHECK(webhook_log_origin("example.com/secret") == "[unparsed url]");
  CHECK(webhook_log_origin("://example.com/secret") == "[unparsed url]");
  CHECK(webhook_log_origin("see http://x/secret") == "[unparsed url]");
  CHECK(webhook_log_origin("") == "[unparsed url]");
}
