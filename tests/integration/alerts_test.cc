// Alerts end to end: a real broker, workers and mock API on loopback, and a
// webhook receiver (a real HTTP server in this process) that refuses the
// first POST. A scripted run crosses each threshold in turn:
//   A. a backlog at the lane's limit: usage_warning and usage_critical of
//      a request limit, unit_budget of a token limit;
//   B. a mock stricter than the lane: 429s -> rate_limited;
//   C. the mock failing every call: dead jobs, the circuit opens and the
//      lane pauses -> dead_letters, circuit_open, paused; then the mock
//      recovers and everything clears.
// Checked: every expected alert arrives at the webhook, fires once per
// crossing and clears (firing and resolved alternate per alert), the
// refused POST was retried, the documents are complete, STATS lists a
// firing alert, the metrics count the alerts and the deliveries, and the
// log has the events without the webhook URL's secret path.
#include <doctest/doctest.h>
#include <httplib.h>

#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/fleet.h"

using namespace pacer::testing;
using json = nlohmann::json;
using pacer::protocol::Command;

namespace {

// Receives the broker's alert POSTs; answers 503 to the first one.
class Receiver {
 public:
  Receiver() {
    server_.Post("/hooks/s3cr3t-token",
                 [this](const httplib::Request& req, httplib::Response& res) {
                   std::lock_guard lock(mu_);
                   ++posts_;
                   if (posts_ == 1) {
                     res.status = 503;  // the broker must try it again
                     return;
                   }
                   content_types_.insert(req.get_header_value("Content-Type"));
                   docs_.push_back(json::parse(req.body, nullptr, false));
                   res.status = 200;
                 });
    port_ = server_.bind_to_any_port("127.0.0.1");
    REQUIRE(port_ > 0);
    // Bound and listening already: POSTs wait in the backlog until the
    // thread accepts them.
    thread_ = std::thread([this] { server_.listen_after_bind(); });
  }
  ~Receiver() {
    // stop() does nothing until listening has begun.
    wait_until([this] { return server_.is_running(); }, 10s, 1ms);
    server_.stop();
    thread_.join();
  }
  std::string url() const {
    return "http://127.0.0.1:" + std::to_string(port_) + "/hooks/s3cr3t-token";
  }
  std::vector<json> docs() {
    std::lock_guard lock(mu_);
    return docs_;
  }
  int posts() {
    std::lock_guard lock(mu_);
    return posts_;
  }
  std::set<std::string> content_types() {
    std::lock_guard lock(mu_);
    return content_types_;
  }

 private:
  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
  std::mutex mu_;
  int posts_ = 0;
  std::vector<json> docs_;
  std::set<std::string> content_types_;
};

std::string key_of(const json& d) {
  return d.value("alert", "") + "|" +
         (d["policy"].is_string() ? d["policy"].get<std::string>() : "");
}

// Per alert, its statuses in the order they arrived.
std::map<std::string, std::vector<std::string>> by_alert(
    const std::vector<json>& docs) {
  std::map<std::string, std::vector<std::string>> out;
  for (const auto& d : docs) out[key_of(d)].push_back(d.value("status", ""));
  return out;
}

bool fired(const std::vector<json>& docs, const std::string& key) {
  for (const auto& d : docs)
    if (key_of(d) == key && d.value("status", "") == "firing") return true;
  return false;
}

bool resolved(const std::vector<json>& docs, const std::string& key) {
  auto m = by_alert(docs);
  auto it = m.find(key);
  return it != m.end() && !it->second.empty() &&
         it->second.back() == "resolved";
}

void set_mock(Fleet& f, const json& config) {
  auto r = http_json(f.mock().port(), "POST", "/admin/config", config.dump());
  REQUIRE(r.has_value());
}

std::optional<std::string> metrics_body(int port) {
  httplib::Client cli("127.0.0.1", port);
  cli.set_connection_timeout(2, 0);
  cli.set_read_timeout(5, 0);
  auto res = cli.Get("/metrics");
  if (!res || res->status != 200) return std::nullopt;
  return res->body;
}

double sample(const std::string& body, const std::string& series) {
  std::istringstream in(body);
  for (std::string line; std::getline(in, line);)
    if (line.rfind(series + " ", 0) == 0)
      return std::stod(line.substr(series.size() + 1));
  return -1;
}

}  // namespace

TEST_CASE("a scripted run raises, delivers and clears each alert once") {
  Receiver hook;
  const int metrics_port = free_port();
  Fleet f({.mock_args = {"--latency", "2"},
           .api_toml = "limits = [\"20/2s\", \"500 tokens/10s\"]\n"
                       "concurrency = 8\nmax_attempts = 1\n"
                       "circuit_failures = 3\ncircuit_cooldown = \"4s\"\n"
                       "backoff_base = \"50ms\"\nbackoff_cap = \"200ms\"\n",
           .broker_toml = "metrics_address = \"127.0.0.1:" +
                          std::to_string(metrics_port) + "\"\n",
           .extra_toml = "[alerts]\nwebhook = \"" + hook.url() +
                         "\"\n"
                         "usage_min_window = \"1s\"\n"
                         "rate_limited = 3\nrate_limited_window = \"5s\"\n"
                         "paused_for = \"2s\"\n"
                         "dead_letters = 2\ndead_window = \"5s\"\n"
                         "clear_after = \"1s\"\n"});
  f.start_broker();
  f.start_worker(0);
  f.start_worker(1);
  REQUIRE(f.wait_workers(2));

  const std::string requests = "|20/2s";
  const std::string tokens = "|500 tokens/10s";

  // A. 48 jobs of 10 tokens at 10/s: the request limit runs full, and 480 of
  // the 500 tokens go within 10 s.
  auto a = f.submit_echo(48, "a", {{"cost", 10}});
  REQUIRE(f.wait_done(a, 60s));
  REQUIRE(f.progress(a)["succeeded"] == 48);
  REQUIRE(wait_until(
      [&] {
        auto d = hook.docs();
        return fired(d, "usage_warning" + requests) &&
               fired(d, "usage_critical" + requests) &&
               fired(d, "unit_budget" + tokens);
      },
      30s, 50ms));

  // B. The mock allows 3/s, the lane believes 10/s: 429s.
  set_mock(f, {{"limit", "3/s"}, {"algorithm", "fixed"}});
  auto b = f.submit_echo(15, "b");
  REQUIRE(f.wait_done(b, 60s));
  REQUIRE(f.progress(b)["succeeded"] == 15);
  REQUIRE(wait_until([&] { return fired(hook.docs(), "rate_limited|"); }, 30s,
                     50ms));

  // C. Every call fails: jobs die at once (max_attempts 1), three failures
  // open the circuit, the lane pauses for the cooldown.
  set_mock(f, {{"limit", nullptr}, {"fail_status", 500}});
  auto c = f.submit_echo(6, "c");
  INFO(json(hook.docs()).dump(1));
  INFO(f.broker().err());
  REQUIRE(wait_until(
      [&] {
        auto d = hook.docs();
        return fired(d, "circuit_open|") && fired(d, "dead_letters|") &&
               fired(d, "paused|");
      },
      30s, 50ms));
  // While it fires, STATS lists it on the lane.
  auto stats = f.request(Command::kStats, json::object());
  REQUIRE(stats.has_value());
  bool listed = false;
  for (const auto& lane : (*stats)["lanes"])
    if (lane["api"] == "echo")
      for (const auto& al : lane["alerts"])
        if (al["alert"] == "circuit_open") listed = true;
  CHECK(listed);

  // The mock recovers; the held jobs go through the half-open probe.
  set_mock(f, {{"fail_status", nullptr}});
  auto d2 = f.submit_echo(3, "d");
  REQUIRE(f.wait_done(d2, 60s));
  REQUIRE(f.wait_done(c, 60s));

  const std::vector<std::string> expected = {"usage_warning" + requests,
                                             "usage_critical" + requests,
                                             "unit_budget" + tokens,
                                             "rate_limited|",
                                             "circuit_open|",
                                             "paused|",
                                             "dead_letters|"};
  const bool all_cleared = wait_until(
      [&] {
        auto d = hook.docs();
        for (const auto& k : expected)
          if (!resolved(d, k)) return false;
        return true;
      },
      60s, 100ms);
  const auto docs = hook.docs();
  INFO(json(docs).dump(1));
  INFO(f.broker().err());
  REQUIRE(all_cleared);

  // Once per crossing: per alert, firing and resolved alternate.
  for (const auto& [key, statuses] : by_alert(docs)) {
    INFO(key);
    for (std::size_t i = 0; i < statuses.size(); ++i)
      CHECK(statuses[i] == (i % 2 == 0 ? "firing" : "resolved"));
  }
  // Every document is complete.
  for (const auto& d : docs) {
    CHECK(d["api"] == "echo");
    CHECK(d["source"] == "pacer-broker");
    CHECK((d["severity"] == "warning" || d["severity"] == "critical"));
    CHECK(d["message"].get<std::string>().rfind("echo: ", 0) == 0);
    CHECK(d["value"].is_number());
    CHECK(d["threshold"].is_number());
    CHECK(d["fired_at"].is_string());
    CHECK(d.contains("resolved_at") == (d["status"] == "resolved"));
  }
  CHECK(hook.content_types() == std::set<std::string>{"application/json"});
  // The first POST was refused and tried again: nothing was lost.
  CHECK(hook.posts() == static_cast<int>(docs.size()) + 1);

  // The metrics: each alert cleared, counted, and the deliveries.
  std::optional<std::string> m;
  REQUIRE(wait_until(
      [&] {
        m = metrics_body(metrics_port);
        return m &&
               sample(*m,
                      "pacer_alert_webhook_deliveries_total{result="
                      "\"delivered\"}") == static_cast<double>(docs.size());
      },
      30s, 100ms));
  INFO(*m);
  CHECK(
      sample(*m, R"(pacer_alert{api="echo",alert="circuit_open",policy=""})") ==
      0);
  CHECK(
      sample(
          *m,
          R"(pacer_alerts_fired_total{api="echo",alert="circuit_open",policy=""})") >=
      1);
  CHECK(
      sample(
          *m,
          R"(pacer_alert{api="echo",alert="unit_budget",policy="500 tokens/10s"})") ==
      0);
  CHECK(sample(*m, "pacer_alert_webhook_deliveries_total{result=\"failed\"}") ==
        0);

  // The log: each transition, the retried delivery, never the URL's path.
  const std::string log = f.broker().err();
  CHECK(log.find(R"("event":"alert")") != std::string::npos);
  CHECK(log.find(R"("event":"alert_cleared")") != std::string::npos);
  CHECK(log.find("alert_webhook_failed") != std::string::npos);
  CHECK(log.find("s3cr3t-token") == std::string::npos);
}

TEST_CASE("a webhook that is down costs nothing: jobs run, alerts still log") {
  // Nothing listens on this port.
  const int dead_port = free_port();
  Fleet f({.mock_args = {"--limit", "2/s", "--algorithm", "fixed"},
           .api_toml = "limits = [\"20/s\"]\nconcurrency = 4\n",
           .extra_toml = "[alerts]\nwebhook = \"http://127.0.0.1:" +
                         std::to_string(dead_port) +
                         "/hook\"\nwebhook_attempts = 2\n"
                         "rate_limited = 1\n"});
  f.start_broker();
  f.start_worker(0);
  REQUIRE(f.wait_workers(1));
  auto ids = f.submit_echo(20, "x");
  REQUIRE(f.wait_done(ids, 60s));
  CHECK(f.progress(ids)["succeeded"] == 20);
  auto logged = [&](const std::string& needle) {
    return wait_until(
        [&] { return f.broker().err().find(needle) != std::string::npos; }, 30s,
        50ms);
  };
  CHECK(logged(R"("event":"alert")"));
  CHECK(logged("alert_webhook_gave_up"));
  // Without metrics the broker counts only dead jobs: enough for their alert.
  set_mock(f, {{"limit", nullptr}, {"fail_status", 422}});
  auto dead = f.submit_echo(2, "dead");
  REQUIRE(f.wait_done(dead, 60s));
  CHECK(f.progress(dead)["dead"] == 2);
  CHECK(logged(R"("alert":"dead_letters")"));
}
