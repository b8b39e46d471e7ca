// pacer-worker end to end: the test plays the broker with its own ROUTER,
// the upstreams are a real pacer-mock-api and a small in-process httplib
// server (request headers, held requests, big bodies, 429, redirects), and
// the worker is the real binary.
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <deque>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>
#include <zmq.hpp>

#include "common/protocol.h"
#include "tests/support/process.h"

using namespace pacer;
using namespace pacer::testing;
using protocol::Command;
using protocol::Message;
using Json = nlohmann::json;

namespace {

// The broker's side of the worker protocol, just enough to drive a worker.
// Answers HEARTBEAT from a worker that sent READY on this binding, and
// DISCONNECT {"reason": "unknown worker"} to any other (as the real broker).
class FakeBroker {
 public:
  struct Incoming {
    std::string peer;
    Message message;
  };

  explicit FakeBroker(int port)
      : endpoint_("tcp://127.0.0.1:" + std::to_string(port)) {
    REQUIRE(bind());
  }

  const std::string& endpoint() const { return endpoint_; }

  // Binds (again); the port may take a moment to be released after close().
  bool bind() {
    return wait_until(
        [&] {
          try {
            socket_.emplace(ctx_, zmq::socket_type::router);
            socket_->set(zmq::sockopt::linger, 0);
            socket_->set(zmq::sockopt::router_mandatory, 1);
            // As the broker: a worker reconnects with its routing id.
            socket_->set(zmq::sockopt::router_handover, 1);
            socket_->bind(endpoint_);
            return true;
          } catch (const zmq::error_t&) {
            socket_.reset();
            return false;
          }
        },
        10s);
  }
  void close() {
    socket_.reset();
    known_.clear();
  }

  bool answer_heartbeats = true;

  // Next decodable message that is not a HEARTBEAT. Undecodable ones are
  // counted in `undecodable`.
  std::optional<Incoming> next(std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (socket_) {
      std::string peer;
      if (auto frames = protocol::recv_frames(*socket_, true, &peer)) {
        auto d = protocol::decode(*frames);
        if (!d.message) {
          ++undecodable;
          continue;
        }
        if (d.message->command == Command::kReady) known_.insert(peer);
        if (d.message->command == Command::kHeartbeat) {
          ++heartbeats;
          if (!known_.count(peer)) {
            send(peer, {Command::kDisconnect, {{"reason", "unknown worker"}}});
          } else if (answer_heartbeats) {
            send(peer, {Command::kHeartbeat, nullptr});
          }
          continue;
        }
        return Incoming{peer, std::move(*d.message)};
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::nullopt;
      zmq::pollitem_t item{socket_->handle(), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, left);
    }
    return std::nullopt;
  }

  // Skips everything until a message with command `c`; others are kept.
  std::optional<Incoming> expect(Command c,
                                 std::chrono::milliseconds timeout = 10s) {
    for (auto it = kept.begin(); it != kept.end(); ++it) {
      if (it->message.command == c) {
        Incoming in = std::move(*it);
        kept.erase(it);
        return in;
      }
    }
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::nullopt;
      auto in = next(left);
      if (!in) return std::nullopt;
      if (in->message.command == c) return in;
      kept.push_back(std::move(*in));
    }
  }

  bool send(const std::string& peer, const Message& m) {
    return socket_ && protocol::send(*socket_, m, &peer);
  }
  bool send_raw(const std::string& peer,
                const std::vector<std::string>& frames) {
    try {
      zmq::message_t id(peer.data(), peer.size());
      socket_->send(id, zmq::send_flags::sndmore);
      for (std::size_t i = 0; i < frames.size(); ++i) {
        zmq::message_t f(frames[i].data(), frames[i].size());
        socket_->send(f, i + 1 < frames.size() ? zmq::send_flags::sndmore
                                               : zmq::send_flags::none);
      }
      return true;
    } catch (const zmq::error_t&) {
      return false;
    }
  }

  // Collects results until `n` distinct job ids have answered.
  std::map<std::int64_t, Json> results(std::size_t n,
                                       std::chrono::milliseconds timeout = 20s,
                                       int* messages = nullptr) {
    std::map<std::int64_t, Json> out;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (out.size() < n) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      auto in = expect(Command::kResults, std::max(left, 0ms));
      if (!in) break;
      if (messages) ++*messages;
      for (auto& r : in->message.body["results"]) {
        if (r.contains("batch"))
          batch_results.push_back(r);
        else
          out[r["id"].get<std::int64_t>()] = r;
      }
    }
    return out;
  }

  // The result of batch `id`; single results that come first are kept in
  // `single_results`.
  std::optional<Json> batch_result(std::int64_t id,
                                   std::chrono::milliseconds timeout = 20s) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
      for (auto it = batch_results.begin(); it != batch_results.end(); ++it) {
        if ((*it)["batch"] == id) {
          Json r = std::move(*it);
          batch_results.erase(it);
          return r;
        }
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      auto in = expect(Command::kResults, std::max(left, 0ms));
      if (!in) return std::nullopt;
      for (auto& r : in->message.body["results"]) {
        if (r.contains("batch"))
          batch_results.push_back(r);
        else
          single_results.push_back(r);
      }
    }
  }

  int undecodable = 0;
  int heartbeats = 0;
  std::deque<Incoming> kept;
  std::vector<Json> batch_results;   // seen by results(), not yet asked for
  std::vector<Json> single_results;  // seen by batch_result()

 private:
  std::string endpoint_;
  zmq::context_t ctx_{1};
  std::optional<zmq::socket_t> socket_;
  std::set<std::string> known_;
};

// Debian's cpp-httplib listens with a backlog of 5: a burst of new
// connections overflows it and the dropped SYNs are retried a second later.
// listen() again on the listening socket raises the backlog.
void raise_listen_backlog(int port) {
  for (int fd = 3; fd < 4096; ++fd) {
    int accepting = 0;
    socklen_t len = sizeof accepting;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len) != 0 ||
        !accepting)
      continue;
    sockaddr_in addr{};
    socklen_t alen = sizeof addr;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &alen) == 0 &&
        addr.sin_family == AF_INET && ntohs(addr.sin_port) == port)
      ::listen(fd, SOMAXCONN);
  }
}

// A small upstream for what the mock API does not do: it records request
// headers, holds requests until released, sends big bodies, 429s and
// redirects.
class TestServer {
 public:
  TestServer() {
    server_.new_task_queue = [] { return new httplib::ThreadPool(48); };
    server_.set_keep_alive_timeout(2);
    server_.set_keep_alive_max_count(100000);
    auto record = [this](const httplib::Request& req, httplib::Response& res) {
      Json seen = Json::array();
      for (const auto& [k, v] : req.headers) seen.push_back({k, v});
      {
        std::lock_guard lock(mu_);
        last_headers_ = seen;
      }
      res.set_content(seen.dump(), "application/json");
    };
    server_.Get("/v1/headers", record);
    server_.Post("/v1/headers", record);
    server_.Get("/v1/port",
                [this](const httplib::Request& req, httplib::Response& res) {
                  {
                    std::lock_guard lock(mu_);
                    ports_.insert(req.remote_port);
                  }
                  res.set_content("{}", "application/json");
                });
    server_.Get("/v1/hold",
                [this](const httplib::Request&, httplib::Response& res) {
                  std::unique_lock lock(mu_);
                  ++in_flight_;
                  max_in_flight_ = std::max(max_in_flight_, in_flight_);
                  cv_.wait(lock, [&] { return released_; });
                  --in_flight_;
                  ++completed_;
                  res.set_content("{\"held\":true}", "application/json");
                });
    server_.Post("/v1/hold_batch", [this](const httplib::Request& req,
                                          httplib::Response& res) {
      std::unique_lock lock(mu_);
      ++in_flight_;
      cv_.wait(lock, [&] { return released_; });
      --in_flight_;
      ++completed_;
      const Json request = Json::parse(req.body);
      Json results = Json::array();
      for (const auto& input : request["inputs"])
        results.push_back({{"echo", input}});
      res.set_content(Json({{"results", results}}).dump(), "application/json");
    });
    server_.Get("/v1/slow",
                [this](const httplib::Request&, httplib::Response& res) {
                  std::unique_lock lock(mu_);
                  ++slow_in_flight_;
                  cv_.wait(lock, [&] { return closing_; });
                  --slow_in_flight_;
                  res.set_content("late", "text/plain");
                });
    server_.Get("/v1/big", [](const httplib::Request&, httplib::Response& res) {
      res.set_header("X-RateLimit-Remaining", "5");
      res.set_header("RateLimit-Policy", "10;w=1");
      res.set_header("RateLimit-Policy", "100;w=60");
      res.set_header("Set-Cookie", "session=should-not-be-kept");
      res.set_header("Server-Timing", "x");
      res.set_content(std::string(5000, 'x'), "text/plain");
    });
    server_.Get(
        "/v1/limited", [](const httplib::Request&, httplib::Response& res) {
          res.status = 429;
          res.set_header("Retry-After", "7");
          res.set_content("{\"error\":\"slow down\"}", "application/json");
        });
    server_.Get("/v1/redirect",
                [](const httplib::Request&, httplib::Response& res) {
                  res.status = 302;
                  res.set_header("Location", "http://127.0.0.1:1/elsewhere");
                });
    port_ = server_.bind_to_any_port("127.0.0.1");
    REQUIRE(port_ > 0);
    raise_listen_backlog(port_);
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    REQUIRE(wait_until([&] { return server_.is_running(); }, 10s));
  }
  ~TestServer() {
    {
      std::lock_guard lock(mu_);
      released_ = true;
      closing_ = true;
    }
    cv_.notify_all();
    server_.stop();
    thread_.join();
  }

  int port() const { return port_; }
  void release() {
    {
      std::lock_guard lock(mu_);
      released_ = true;
    }
    cv_.notify_all();
  }
  int in_flight() {
    std::lock_guard lock(mu_);
    return in_flight_;
  }
  std::size_t connections() {
    std::lock_guard lock(mu_);
    return ports_.size();
  }
  int slow_in_flight() {
    std::lock_guard lock(mu_);
    return slow_in_flight_;
  }
  int max_in_flight() {
    std::lock_guard lock(mu_);
    return max_in_flight_;
  }
  int completed() {
    std::lock_guard lock(mu_);
    return completed_;
  }
  Json last_headers() {
    std::lock_guard lock(mu_);
    return last_headers_;
  }

 private:
  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  bool released_ = false;
  bool closing_ = false;
  std::set<int> ports_;
  int in_flight_ = 0;
  int slow_in_flight_ = 0;
  int max_in_flight_ = 0;
  int completed_ = 0;
  Json last_headers_;
};

constexpr const char* kSecret = "it-secret-7f3a9";

std::string config_text(int echo_port, int test_port, int dead_port) {
  return "[worker]\n"
         "concurrency = 8\n"
         "max_body_bytes = 1000\n"
         "connect_timeout = \"2s\"\n"
         "[api.echo]\n"
         "base_url = \"http://127.0.0.1:" +
         std::to_string(echo_port) +
         "\"\n"
         "[api.test]\n"
         "base_url = \"http://127.0.0.1:" +
         std::to_string(test_port) +
         "/v1\"\n"
         "[api.test.headers]\n"
         "Authorization = \"Bearer ${PACER_IT_TOKEN}\"\n"
         "[api.down]\n"
         "base_url = \"http://127.0.0.1:" +
         std::to_string(dead_port) +
         "\"\n"
         "[api.other]\n"
         "base_url = \"http://127.0.0.1:" +
         std::to_string(dead_port) +
         "\"\n"
         "[api.other.headers]\n"
         "X-Key = \"${PACER_IT_OTHER_KEY}\"\n";
}

Json job(std::int64_t id, const std::string& api, const std::string& method,
         const std::string& path,
         std::optional<std::string> body = std::nullopt,
         Json headers = Json::object()) {
  Json j = {{"id", id},           {"attempt", 1}, {"api", api},
            {"method", method},   {"path", path}, {"headers", headers},
            {"timeout_ms", 10000}};
  if (body) j["body"] = *body;
  return j;
}

// A batch job for the mock's POST /v1/batch: members id0.. with bodies
// {"n": i}.
Json batch_job(std::int64_t batch, std::int64_t id0, int members,
               const std::string& api = "echo",
               const std::string& path = "/v1/batch") {
  Json spec = {{"request_array", "/inputs"},
               {"member_pointer", ""},
               {"body_template", Json::object()},
               {"response_array", "/results"},
               {"item_error", "/error"},
               {"item_status", ""},
               {"max_items", 50},
               {"max_bytes", 1 << 20}};
  Json list = Json::array();
  for (int i = 0; i < members; ++i)
    list.push_back(
        {{"id", id0 + i}, {"attempt", 1}, {"body", Json({{"n", i}}).dump()}});
  return {{"batch", batch},          {"api", api},
          {"method", "POST"},        {"path", path},
          {"timeout_ms", 10000},     {"headers", {{"X-Trace", "b1"}}},
          {"spec", std::move(spec)}, {"members", std::move(list)}};
}

Message jobs_message(const std::vector<Json>& jobs) {
  return {Command::kJobs, {{"jobs", jobs}}};
}

// Everything a test needs: upstreams, a broker, a worker and its config.
struct Setup {
  TempDir dir;
  TestServer upstream;
  MockApi mock;
  int dead_port = free_port();
  FakeBroker broker{free_port()};
  std::unique_ptr<Process> worker;
  std::string peer;

  explicit Setup(std::vector<std::string> mock_args = {}, int concurrency = 8,
                 const std::string& apis = "echo,test,down",
                 std::map<std::string, std::string> env = {})
      : mock(dir, std::move(mock_args)) {
    env["PACER_IT_TOKEN"] = kSecret;
    dir.write("pacer.toml",
              config_text(mock.port(), upstream.port(), dead_port));
    std::vector<std::string> argv = {binary("pacer-worker"),
                                     "--config",
                                     dir.file("pacer.toml"),
                                     "--broker",
                                     broker.endpoint(),
                                     "--id",
                                     "w1",
                                     "--concurrency",
                                     std::to_string(concurrency),
                                     "--log-level",
                                     "debug"};
    if (!apis.empty()) {
      argv.push_back("--apis");
      argv.push_back(apis);
    }
    worker = std::make_unique<Process>(argv, dir.path(), "worker", env);
  }

  // Waits for READY and answers WELCOME.
  Json handshake(int heartbeat_ms = 1000, int liveness = 3) {
    auto ready = broker.expect(Command::kReady, 15s);
    REQUIRE_MESSAGE(ready.has_value(), "no READY; worker stderr:\n"
                                           << worker->err());
    peer = ready->peer;
    REQUIRE(broker.send(
        peer, {Command::kWelcome,
               {{"heartbeat_ms", heartbeat_ms}, {"liveness", liveness}}}));
    return ready->message.body;
  }

  Json run_batch(const Json& j) {
    REQUIRE(broker.send(peer, jobs_message({j})));
    auto r = broker.batch_result(j["batch"].get<std::int64_t>());
    REQUIRE_MESSAGE(r.has_value(), "no batch result; worker stderr:\n"
                                       << worker->err());
    return *r;
  }

  void mock_config(const Json& keys) {
    auto applied = http_json(mock.port(), "POST", "/admin/config", keys.dump());
    REQUIRE_MESSAGE(applied.has_value(), "POST /admin/config failed");
    REQUIRE_MESSAGE(!applied->contains("error"), applied->dump());
  }

  Json run_one(const Json& j) {
    REQUIRE(broker.send(peer, jobs_message({j})));
    auto rs = broker.results(1);
    REQUIRE_MESSAGE(rs.count(j["id"].get<std::int64_t>()) == 1,
                    "no result; worker stderr:\n"
                        << worker->err());
    return rs.begin()->second;
  }
};

}  // namespace

TEST_CASE(
    "READY, WELCOME, and 200 echo jobs through the mock API within the "
    "credit") {
  Setup s({}, 16, "echo,test");
  Json ready = s.handshake();
  CHECK(ready["worker"] == "w1");
  CHECK(ready["capacity"] == 16);
  CHECK(ready["apis"] == Json::array({"echo", "test"}));
  CHECK(ready["heartbeat_ms"] == 1000);
  CHECK(ready["version"] == "0.1.0");

  const int total = 200;
  const int capacity = 16;
  int next_id = 1;
  int outstanding = 0;
  int max_outstanding = 0;
  int messages = 0;
  std::map<std::int64_t, Json> results;
  auto send_more = [&] {
    std::vector<Json> batch;
    while (outstanding < capacity && next_id <= total) {
      batch.push_back(job(next_id, "echo", "POST", "/v1/echo",
                          Json({{"i", next_id}}).dump()));
      ++next_id;
      ++outstanding;
    }
    max_outstanding = std::max(max_outstanding, outstanding);
    if (!batch.empty()) REQUIRE(s.broker.send(s.peer, jobs_message(batch)));
  };
  send_more();
  while (static_cast<int>(results.size()) < total) {
    auto in = s.broker.expect(Command::kResults, 20s);
    REQUIRE_MESSAGE(in.has_value(), "results stalled at " << results.size());
    ++messages;
    for (auto& r : in->message.body["results"]) {
      auto id = r["id"].get<std::int64_t>();
      CHECK(results.count(id) == 0);
      results[id] = r;
      --outstanding;
    }
    send_more();
  }
  CHECK(max_outstanding == capacity);
  CHECK(messages <= total);
  int ok = 0;
  for (auto& [id, r] : results) {
    CHECK(r["attempt"] == 1);
    CHECK(r["status"] == 200);
    CHECK(r["outcome"] == "success");
    CHECK(r["error"] == "");
    CHECK(r["headers"]["content-type"].get<std::string>().starts_with(
        "application/json"));
    CHECK(r["body_truncated"] == false);
    CHECK(r["observation"].is_null());
    CHECK(r["started_ms"].get<std::int64_t>() > 1'700'000'000'000);
    CHECK(r["duration_ms"].is_number());
    auto body = Json::parse(r["body"].get<std::string>());
    if (body["echo"] == Json({{"i", id}})) ++ok;
  }
  CHECK(ok == total);
  CHECK(s.mock.stats()["accepted"] == total);
  MESSAGE("200 jobs answered in " << messages << " RESULTS messages");
  CHECK(s.worker->stop() == 0);
}

TEST_CASE("refusals, credentials, failures and response capture") {
  Setup s;
  s.handshake();

  SUBCASE("a path that escapes the base URL is refused without a request") {
    for (const char* path :
         {"/../admin", "/%2e%2e/admin", "@evil.com/x", "/..%2fadmin"}) {
      auto r = s.run_one(job(1, "test", "GET", path));
      CHECK(r["outcome"] == "permanent");
      CHECK(r["status"] == 0);
      CHECK(r["error"] == "path escapes the API base URL");
    }
    CHECK(s.upstream.last_headers().is_null());  // nothing reached the upstream
  }

  SUBCASE("unknown and unserved APIs, invalid jobs") {
    auto unknown = s.run_one(job(2, "nope", "GET", "/"));
    CHECK(unknown["outcome"] == "permanent");
    CHECK(unknown["error"].get<std::string>().find("unknown api 'nope'") !=
          std::string::npos);
    auto unserved = s.run_one(job(3, "other", "GET", "/"));
    CHECK(unserved["outcome"] == "permanent");
    CHECK(unserved["error"] == "api 'other' is not served by this worker");
    auto invalid = s.run_one({{"id", 4}, {"attempt", 2}, {"method", "GET"}});
    CHECK(invalid["outcome"] == "permanent");
    CHECK(invalid["attempt"] == 2);
    CHECK(invalid["error"].get<std::string>().starts_with("invalid job"));
  }

  SUBCASE("the configured credential is sent and a job cannot override it") {
    auto r = s.run_one(job(5, "test", "POST", "/headers", "{\"a\":1}",
                           {{"AUTHORIZATION", "Bearer evil"},
                            {"X-Trace", "t1"},
                            {"Host", "evil.example"}}));
    CHECK(r["status"] == 200);
    Json seen = s.upstream.last_headers();
    int auth = 0;
    std::map<std::string, std::string> lower;
    for (auto& kv : seen) {
      std::string k = kv[0];
      for (auto& c : k)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (k == "authorization") ++auth;
      lower[k] = kv[1];
    }
    CHECK(auth == 1);
    CHECK(lower["authorization"] == std::string("Bearer ") + kSecret);
    CHECK(lower["x-trace"] == "t1");
    CHECK(lower["content-type"] == "application/json");
    CHECK(lower["host"] == "127.0.0.1:" + std::to_string(s.upstream.port()));
    CHECK(lower.count("expect") == 0);
    // The response echoes the request headers: the body goes to the broker
    // with the credential replaced, and it is never in the worker's log.
    const std::string body = r["body"];
    CHECK(body.find(kSecret) == std::string::npos);
    CHECK(body.find("[redacted]") != std::string::npos);
    CHECK(body.find("t1") != std::string::npos);  // the rest is kept
    CHECK(s.worker->err().find(kSecret) == std::string::npos);
    CHECK(s.worker->err().find("credentials_redacted") != std::string::npos);
  }

  SUBCASE("connection refused is transient with status 0") {
    auto r = s.run_one(job(6, "down", "GET", "/x"));
    CHECK(r["outcome"] == "transient");
    CHECK(r["status"] == 0);
    CHECK(r["error"] == "connection refused (http://127.0.0.1:" +
                            std::to_string(s.dead_port) + ")");
  }

  SUBCASE("body cap, kept headers, 429 and redirects") {
    auto big = s.run_one(job(7, "test", "GET", "/big"));
    CHECK(big["status"] == 200);
    CHECK(big["body"].get<std::string>() == std::string(1000, 'x'));
    CHECK(big["body_truncated"] == true);
    CHECK(big["headers"]["x-ratelimit-remaining"] == "5");
    CHECK(big["headers"]["ratelimit-policy"] == "10;w=1, 100;w=60");
    CHECK(big["headers"]["content-type"] == "text/plain");
    CHECK_FALSE(big["headers"].contains("set-cookie"));
    CHECK_FALSE(big["headers"].contains("server-timing"));

    auto limited = s.run_one(job(8, "test", "GET", "/limited"));
    CHECK(limited["status"] == 429);
    CHECK(limited["outcome"] == "rate_limited");
    CHECK(limited["headers"]["retry-after"] == "7");

    auto redirect = s.run_one(job(9, "test", "GET", "/redirect"));
    CHECK(redirect["status"] == 302);  // not followed
    CHECK(redirect["outcome"] == "permanent");

    auto head = s.run_one(job(10, "test", "HEAD", "/big"));
    CHECK(head["status"] == 200);
    CHECK(head["body"] == "");
  }

  SUBCASE("a job timeout is transient with a clear error") {
    Json j = job(11, "test", "GET", "/slow");
    j["timeout_ms"] = 300;
    auto r = s.run_one(j);
    CHECK(r["outcome"] == "transient");
    CHECK(r["status"] == 0);
    CHECK(r["error"] == "timeout after 300 ms");
    CHECK(r["duration_ms"].get<double>() >= 290);
  }
  CHECK(s.worker->stop() == 0);
}

TEST_CASE("never more than capacity transfers; the excess is refused at once") {
  Setup s({}, 4);
  s.handshake();
  std::vector<Json> jobs;
  for (int i = 1; i <= 6; ++i) jobs.push_back(job(i, "test", "GET", "/hold"));
  REQUIRE(s.broker.send(s.peer, jobs_message(jobs)));
  auto over = s.broker.results(2, 10s);
  REQUIRE(over.size() == 2);
  for (auto& [id, r] : over) {
    CHECK(id >= 5);
    CHECK(r["outcome"] == "transient");
    CHECK(r["error"] == "worker over capacity");
  }
  REQUIRE(wait_until([&] { return s.upstream.in_flight() == 4; }, 10s));
  s.upstream.release();
  auto held = s.broker.results(4);
  CHECK(held.size() == 4);
  for (auto& [id, r] : held) CHECK(r["status"] == 200);
  CHECK(s.upstream.max_in_flight() == 4);
  CHECK(s.worker->stop() == 0);
}

TEST_CASE(
    "keep-alive: connections are reused across jobs; serving all APIs "
    "announces []") {
  Setup s({}, 4, "", {{"PACER_IT_OTHER_KEY", "k"}});
  Json ready = s.handshake();
  CHECK(ready["apis"] == Json::array());
  int answered = 0;
  for (int round = 0; round < 10; ++round) {
    std::vector<Json> jobs;
    for (int i = 0; i < 4; ++i)
      jobs.push_back(job(round * 4 + i, "test", "GET", "/port"));
    REQUIRE(s.broker.send(s.peer, jobs_message(jobs)));
    auto rs = s.broker.results(4);
    REQUIRE(rs.size() == 4);
    for (auto& [id, r] : rs) answered += r["status"] == 200;
  }
  CHECK(answered == 40);
  CHECK(s.upstream.connections() <= 4);
  MESSAGE("40 requests over " << s.upstream.connections() << " connections");
  CHECK(s.worker->stop() == 0);
}

namespace {

// The process's user + system CPU time so far, in clock ticks.
long cpu_ticks(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)),
                   std::istreambuf_iterator<char>());
  // Fields after the command name, which is in parentheses.
  std::istringstream rest(text.substr(text.rfind(')') + 2));
  std::string field;
  long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::stol(field);
    if (i == 15) stime = std::stol(field);
  }
  return utime + stime;
}

// Sockets on loopback whose remote end is `port`, in TCP state CLOSE_WAIT
// (the peer closed, this side has not) and in any state.
std::pair<int, int> close_wait_to(int port) {
  std::ifstream in("/proc/net/tcp");
  std::string line;
  std::getline(in, line);  // header
  int close_wait = 0, all = 0;
  char want[8];
  std::snprintf(want, sizeof want, "%04X", port);
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string slot, local, remote, state;
    f >> slot >> local >> remote >> state;
    if (remote.substr(remote.find(':') + 1) != want) continue;
    ++all;
    if (state == "08") ++close_wait;
  }
  return {close_wait, all};
}

}  // namespace

TEST_CASE(
    "idle connections the server closes neither wake the worker nor fail "
    "the next jobs") {
  // The test upstream closes a connection idle for 2 s.
  Setup s({}, 4);
  s.handshake();
  auto round = [&](int first) {
    std::vector<Json> jobs;
    for (int i = 0; i < 4; ++i)
      jobs.push_back(job(first + i, "test", "GET", "/port"));
    REQUIRE(s.broker.send(s.peer, jobs_message(jobs)));
    auto rs = s.broker.results(4);
    REQUIRE(rs.size() == 4);
    for (auto& [id, r] : rs) CHECK(r["status"] == 200);
  };
  round(1);
  const auto before = s.upstream.connections();
  // The worker keeps its idle connections watched; once the server has
  // closed them all they are readable for good.
  REQUIRE(wait_until(
      [&] {
        auto [closing, all] = close_wait_to(s.upstream.port());
        return closing > 0 && closing == all;
      },
      20s));
  // Over two heartbeats the worker must be idle, not turning on sockets
  // that stay readable (spinning would take the whole interval).
  // Heartbeats queued while nobody read the socket are counted first; the
  // interval starts at the next one to arrive.
  const int queued = s.broker.heartbeats;
  REQUIRE(wait_until(
      [&] {
        s.broker.next(50ms);
        return s.broker.heartbeats > queued;
      },
      10s));
  while (s.broker.next(0ms)) {
  }
  const int beats = s.broker.heartbeats;
  const long cpu0 = cpu_ticks(s.worker->pid());
  const auto t0 = std::chrono::steady_clock::now();
  REQUIRE(wait_until(
      [&] {
        s.broker.next(50ms);
        return s.broker.heartbeats >= beats + 2;
      },
      10s));
  const double ticks = static_cast<double>(cpu_ticks(s.worker->pid()) - cpu0);
  const double elapsed_ticks =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
          .count() *
      static_cast<double>(sysconf(_SC_CLK_TCK));
  CAPTURE(ticks);
  CAPTURE(elapsed_ticks);
  CHECK(ticks < elapsed_ticks / 2);
  // curl finds the closed connections dead and opens new ones.
  round(11);
  CHECK(s.upstream.connections() > before);
  CHECK(s.worker->stop() == 0);
}

TEST_CASE(
    "reconnects after a broker restart, a DISCONNECT and broker silence") {
  Setup s;
  s.handshake(200, 3);

  // A transfer in flight across the restart.
  REQUIRE(
      s.broker.send(s.peer, jobs_message({job(1, "test", "GET", "/hold")})));
  REQUIRE(wait_until([&] { return s.upstream.in_flight() == 1; }, 10s));
  s.broker.close();
  REQUIRE(s.broker.bind());
  // The worker's old socket finds the new broker, which does not know it and
  // says so; or its liveness runs out. Either way: a fresh READY.
  auto ready = s.broker.expect(Command::kReady, 15s);
  REQUIRE(ready.has_value());
  CHECK(ready->message.body["capacity"] == 8);
  s.upstream.release();
  REQUIRE(wait_until([&] { return s.upstream.completed() == 1; }, 10s));
  REQUIRE(s.broker.send(
      ready->peer,
      {Command::kWelcome, {{"heartbeat_ms", 200}, {"liveness", 3}}}));
  s.peer = ready->peer;
  auto rs = s.broker.results(1);
  REQUIRE(rs.count(1) == 1);
  CHECK(rs[1]["status"] == 200);

  // DISCONNECT from the broker: reconnect and READY again.
  REQUIRE(s.broker.send(s.peer, {Command::kDisconnect, {{"reason", "test"}}}));
  auto again = s.broker.expect(Command::kReady, 10s);
  REQUIRE(again.has_value());
  // A new connection with the same routing id: the broker takes an
  // attempt's result only from the peer it sent the attempt to.
  CHECK(again->peer == s.peer);
  REQUIRE(s.broker.send(
      again->peer,
      {Command::kWelcome, {{"heartbeat_ms", 200}, {"liveness", 3}}}));
  s.peer = again->peer;
  auto r = s.run_one(
      job(2, "echo", "POST", "/v1/echo", "{\"after\":\"disconnect\"}"));
  CHECK(r["status"] == 200);

  // A broker that stays bound but goes silent: liveness runs out.
  s.broker.answer_heartbeats = false;
  auto silent = s.broker.expect(Command::kReady, 10s);
  REQUIRE(silent.has_value());
  CHECK(silent->peer == s.peer);
  CHECK(s.worker->err().find("\"event\":\"reconnecting\"") !=
        std::string::npos);
  CHECK(s.worker->stop() == 0);
}

TEST_CASE(
    "SIGTERM lets in-flight transfers finish, sends their results, then "
    "DISCONNECT") {
  Setup s({"--latency", "300"});
  s.handshake();
  std::vector<Json> jobs;
  for (int i = 1; i <= 8; ++i)  // the worker's capacity
    jobs.push_back(job(i, "echo", "POST", "/v1/echo", Json({{"i", i}}).dump()));
  REQUIRE(s.broker.send(s.peer, jobs_message(jobs)));
  REQUIRE(wait_until([&] { return s.mock.stats()["requests"] == 8; }, 10s));
  s.worker->signal(SIGTERM);
  auto rs = s.broker.results(8, 15s);
  CHECK(rs.size() == 8);
  for (auto& [id, r] : rs) {
    CHECK(r["status"] == 200);
    CHECK(r["outcome"] == "success");
  }
  auto bye = s.broker.expect(Command::kDisconnect, 15s);
  CHECK(bye.has_value());
  CHECK(s.worker->wait(15s) == std::optional<int>(0));
  CHECK(s.worker->err().find("\"phase\":\"done\"") != std::string::npos);
}

TEST_CASE("a second SIGTERM aborts transfers as 'worker shutting down'") {
  Setup s;
  s.handshake();
  REQUIRE(
      s.broker.send(s.peer, jobs_message({job(1, "test", "GET", "/slow"),
                                          job(2, "test", "GET", "/slow")})));
  REQUIRE(wait_until([&] { return s.upstream.slow_in_flight() == 2; }, 10s));
  s.worker->signal(SIGTERM);
  // The second signal only after the worker has begun draining.
  REQUIRE(wait_until(
      [&] {
        return s.worker->err().find("\"phase\":\"draining\"") !=
               std::string::npos;
      },
      10s));
  s.worker->signal(SIGTERM);
  auto rs = s.broker.results(2, 10s);
  REQUIRE(rs.size() == 2);
  for (auto& [id, r] : rs) {
    CHECK(r["outcome"] == "transient");
    CHECK(r["status"] == 0);
    CHECK(r["error"] == "worker shutting down");
  }
  CHECK(s.broker.expect(Command::kDisconnect, 10s).has_value());
  CHECK(s.worker->wait(10s) == std::optional<int>(0));
}

TEST_CASE(
    "malformed and foreign messages are answered or dropped, never fatal") {
  Setup s;
  s.handshake();
  std::string jobs_byte(1, static_cast<char>(Command::kJobs));
  // Another protocol version: an ERROR "version" reply.
  REQUIRE(s.broker.send_raw(s.peer, {"PACER9", jobs_byte, "{\"jobs\":[]}"}));
  auto version = s.broker.expect(Command::kError);
  REQUIRE(version.has_value());
  CHECK(version->message.body["code"] == "version");
  // Not our protocol at all: dropped.
  REQUIRE(s.broker.send_raw(s.peer, {"hello"}));
  REQUIRE(s.broker.send_raw(s.peer, {"GET / HTTP/1.1", "", ""}));
  // Malformed: ERROR "malformed" each.
  REQUIRE(s.broker.send_raw(s.peer, {"PACER1", "\x04\x04"}));
  REQUIRE(s.broker.send_raw(s.peer, {"PACER1", jobs_byte, "not json"}));
  REQUIRE(s.broker.send_raw(s.peer, {"PACER1", jobs_byte, "[1,2]"}));
  REQUIRE(s.broker.send_raw(s.peer, {"PACER1", jobs_byte, "{\"jobs\":7}"}));
  REQUIRE(s.broker.send_raw(s.peer, {"PACER1", std::string(1, '\x55'), "{}"}));
  REQUIRE(s.broker.send_raw(
      s.peer, {"PACER1", std::string(1, '\x05'), "{\"results\":[]}"}));
  REQUIRE(s.broker.send_raw(s.peer, {"PACER1", jobs_byte, "{}", "extra"}));
  for (int i = 0; i < 7; ++i) {
    auto e = s.broker.expect(Command::kError, 10s);
    REQUIRE_MESSAGE(e.has_value(), "missing ERROR #" << i);
    CHECK(e->message.body["code"] == "malformed");
  }
  // Jobs that cannot be answered (no id) are skipped; the worker goes on.
  REQUIRE(
      s.broker.send(s.peer, jobs_message({Json(5), Json({{"api", "echo"}})})));
  auto r =
      s.run_one(job(42, "echo", "POST", "/v1/echo", "{\"still\":\"alive\"}"));
  CHECK(r["status"] == 200);
  CHECK(s.worker->running());
  CHECK(s.worker->stop() == 0);
}

TEST_CASE("an ERROR 'version' from the broker makes the worker exit 3") {
  Setup s;
  s.handshake();
  REQUIRE(s.broker.send(
      s.peer, protocol::make_error("version", "broker speaks PACER2")));
  CHECK(s.worker->wait(10s) == std::optional<int>(3));
  CHECK(s.worker->err().find("broker speaks PACER2") != std::string::npos);
}

TEST_CASE("configuration errors exit 2 with one clear line") {
  TempDir dir;
  dir.write("bad.toml", "[worker]\nconcurrency = 4\nbogus = 1\n");
  auto bad = run_command(
      {binary("pacer-worker"), "--config", dir.file("bad.toml")}, 20s);
  CHECK(bad.exit_code == 2);
  CHECK(bad.err.find(dir.file("bad.toml") + ":3: worker.bogus: unknown key") !=
        std::string::npos);

  // --config defaults to $PACER_CONFIG.
  auto from_env =
      run_command({"/usr/bin/env", "PACER_CONFIG=" + dir.file("bad.toml"),
                   binary("pacer-worker")},
                  20s);
  CHECK(from_env.exit_code == 2);
  CHECK(from_env.err.find("bad.toml:3: worker.bogus: unknown key") !=
        std::string::npos);

  dir.write("empty.toml", "[worker]\nconcurrency = 4\n");
  auto no_apis = run_command(
      {binary("pacer-worker"), "--config", dir.file("empty.toml")}, 20s);
  CHECK(no_apis.exit_code == 2);
  CHECK(no_apis.err.find("no APIs configured") != std::string::npos);

  dir.write("ok.toml", config_text(1, 2, 3));
  auto unset = run_command({binary("pacer-worker"), "--config",
                            dir.file("ok.toml"), "--apis", "other"},
                           20s);
  CHECK(unset.exit_code == 2);
  CHECK(unset.err.find("api.other.headers.X-Key: environment variable "
                       "PACER_IT_OTHER_KEY is not set") != std::string::npos);

  auto unknown = run_command({binary("pacer-worker"), "--config",
                              dir.file("ok.toml"), "--apis", "echo,nope"},
                             20s);
  CHECK(unknown.exit_code == 2);
  CHECK(unknown.err.find("unknown API 'nope'") != std::string::npos);
}

TEST_CASE("a batch job is one call to the mock; its result has every member") {
  Setup s;
  s.handshake();

  SUBCASE("each member gets its own item, in order") {
    auto r = s.run_batch(batch_job(1, 100, 3));
    CHECK(r["outcome"] == "success");
    CHECK(r["status"] == 200);
    CHECK(r["error"] == "");
    CHECK(r["headers"]["content-type"].get<std::string>().starts_with(
        "application/json"));
    CHECK(r["observation"].is_null());
    CHECK(r["started_ms"].get<std::int64_t>() > 1'700'000'000'000);
    CHECK(r["duration_ms"].is_number());
    CHECK_FALSE(r.contains("id"));
    CHECK_FALSE(r.contains("split_error"));
    CHECK_FALSE(r.contains("body"));
    REQUIRE(r["members"].size() == 3);
    for (int i = 0; i < 3; ++i) {
      const Json& m = r["members"][i];
      CHECK(m["id"] == 100 + i);
      CHECK(m["attempt"] == 1);
      CHECK(m["ok"] == true);
      CHECK(m["body_truncated"] == false);
      CHECK_FALSE(m.contains("error"));
      CHECK(Json::parse(m["body"].get<std::string>()) ==
            Json({{"echo", {{"n", i}}}, {"i", i}}));
    }
    auto stats = s.mock.stats();
    CHECK(stats["batch_requests"] == 1);
    CHECK(stats["batch_items"] == 3);
    CHECK(stats["requests"] == 1);
  }

  SUBCASE("failed items fail only their members") {
    s.mock_config({{"batch_item_error_every", 2}});
    auto r = s.run_batch(batch_job(2, 200, 4));
    CHECK(r["outcome"] == "success");
    REQUIRE(r["members"].size() == 4);
    for (int i = 0; i < 4; ++i) {
      const Json& m = r["members"][i];
      CHECK(m["id"] == 200 + i);
      const bool fails = (i + 1) % 2 == 0;
      CHECK(m["ok"] == !fails);
      if (fails) {
        CHECK(Json::parse(m["error"].get<std::string>())["message"] ==
              "injected failure for item " + std::to_string(i));
        CHECK(Json::parse(m["body"].get<std::string>()).contains("error"));
        CHECK_FALSE(m.contains("status"));  // the spec has no item_status
      } else {
        CHECK_FALSE(m.contains("error"));
      }
    }
  }

  SUBCASE("a response short of a result is a split error") {
    s.mock_config({{"batch_short", true}});
    auto r = s.run_batch(batch_job(3, 300, 3));
    CHECK(r["status"] == 200);
    CHECK_FALSE(r.contains("members"));
    CHECK(r["split_error"] == "expected 3 results at /results, got 2");
    CHECK(r["body"].get<std::string>().starts_with("{\"results\":"));
    CHECK(r["body_truncated"] == false);
  }

  SUBCASE("a response that is not JSON is a split error") {
    s.mock_config({{"batch_non_json", true}});
    auto r = s.run_batch(batch_job(4, 400, 2));
    CHECK(r["status"] == 200);
    CHECK_FALSE(r.contains("members"));
    CHECK(r["split_error"].get<std::string>().find(
              "got text/plain-looking 'upstream hiccup") != std::string::npos);
    CHECK(r["body"].get<std::string>().starts_with("upstream hiccup"));
  }

  SUBCASE("a 429 answers the whole call: no members") {
    s.mock_config({{"limit", "1/min"}});
    CHECK(s.run_one(job(1, "echo", "POST", "/v1/echo", "{}"))["status"] == 200);
    auto r = s.run_batch(batch_job(5, 500, 3));
    CHECK(r["status"] == 429);
    CHECK(r["outcome"] == "rate_limited");
    CHECK(r["error"] == "HTTP 429");
    CHECK(r["headers"].contains("retry-after"));
    CHECK(r["observation"]["verdict"] == "throttled");
    CHECK_FALSE(r.contains("members"));
    CHECK_FALSE(r.contains("split_error"));
    CHECK(Json::parse(r["body"].get<std::string>())["error"] == "rate_limited");
    CHECK(s.mock.stats()["batch_requests"] == 0);
  }

  SUBCASE("a malformed batch is answered as a whole, or dropped") {
    Json bad_spec = batch_job(6, 600, 2);
    bad_spec["spec"]["response_array"] = "results";
    auto r = s.run_batch(bad_spec);
    CHECK(r["outcome"] == "permanent");
    CHECK(r["status"] == 0);
    CHECK(r["error"] ==
          "invalid batch job: spec.response_array must be a JSON pointer "
          "string");

    Json too_many = batch_job(7, 700, 3);
    too_many["spec"]["max_items"] = 2;
    CHECK(s.run_batch(too_many)["error"] ==
          "invalid batch job: 'members' must be an array of 1..2 members "
          "(spec.max_items)");

    Json not_json = batch_job(8, 800, 2);
    not_json["members"][1]["body"] = "not json";
    auto built = s.run_batch(not_json);
    CHECK(built["outcome"] == "permanent");
    CHECK(built["status"] == 0);
    CHECK(built["error"].get<std::string>().starts_with(
        "batch body: batch member 1 body is not JSON"));

    auto escape = s.run_batch(batch_job(9, 900, 2, "test", "/../admin"));
    CHECK(escape["outcome"] == "permanent");
    CHECK(escape["error"] == "path escapes the API base URL");
    auto unknown = s.run_batch(batch_job(10, 1000, 2, "nope"));
    CHECK(
        unknown["error"].get<std::string>().starts_with("unknown api 'nope'"));

    // No usable batch id: logged and dropped; the worker goes on.
    Json no_id = batch_job(11, 1100, 2);
    no_id["batch"] = "eleven";
    REQUIRE(s.broker.send(s.peer, jobs_message({no_id})));
    auto after = s.run_batch(batch_job(12, 1200, 1));
    CHECK(after["status"] == 200);
    CHECK(s.broker.batch_results.empty());
    CHECK(s.mock.stats()["batch_requests"] == 1);  // only the last one
  }
  CHECK(s.worker->stop() == 0);
}

TEST_CASE("a batch takes one unit of credit and its result returns it") {
  Setup s({}, 1);
  s.handshake();
  // With capacity 1 a batch of 5 is one transfer; a job beside it is over.
  REQUIRE(s.broker.send(
      s.peer, jobs_message({batch_job(1, 10, 5),
                            job(99, "echo", "POST", "/v1/echo", "{}")})));
  auto over = s.broker.results(1);
  REQUIRE(over.count(99) == 1);
  CHECK(over[99]["error"] == "worker over capacity");
  auto r = s.broker.batch_result(1);
  REQUIRE(r.has_value());
  REQUIRE((*r)["members"].size() == 5);
  for (const auto& m : (*r)["members"]) CHECK(m["ok"] == true);
  auto stats = s.mock.stats();
  CHECK(stats["batch_requests"] == 1);
  CHECK(stats["batch_items"] == 5);
  CHECK(stats["requests"] == 1);
  // The credit is back: the next job runs.
  CHECK(s.run_one(job(100, "echo", "POST", "/v1/echo", "{}"))["status"] == 200);
  CHECK(s.worker->stop() == 0);
}

TEST_CASE("a batch result outlives a broker restart and is sent after READY") {
  Setup s;
  s.handshake(200, 3);
  REQUIRE(s.broker.send(
      s.peer, jobs_message({batch_job(1, 10, 2, "test", "/hold_batch")})));
  REQUIRE(wait_until([&] { return s.upstream.in_flight() == 1; }, 10s));
  s.broker.close();
  REQUIRE(s.broker.bind());
  auto ready = s.broker.expect(Command::kReady, 15s);
  REQUIRE(ready.has_value());
  s.upstream.release();
  REQUIRE(wait_until([&] { return s.upstream.completed() == 1; }, 10s));
  REQUIRE(s.broker.send(
      ready->peer,
      {Command::kWelcome, {{"heartbeat_ms", 200}, {"liveness", 3}}}));
  auto r = s.broker.batch_result(1);
  REQUIRE(r.has_value());
  INFO(r->dump());
  CHECK((*r)["status"] == 200);
  REQUIRE((*r)["members"].size() == 2);
  CHECK(Json::parse((*r)["members"][1]["body"].get<std::string>()) ==
        Json({{"echo", {{"n", 1}}}}));
  CHECK(s.worker->stop() == 0);
}
