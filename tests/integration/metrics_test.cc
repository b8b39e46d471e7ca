// End-to-end metrics: real broker, workers and mock API processes on
// loopback. A scripted run (jobs that succeed, jobs that die with a
// permanent 422, 429s from a mock stricter than the lane), then GET /metrics
// over HTTP: the numbers must be what the run did, as the mock, the
// database and the broker's own accounting saw it. Also: batches, a worker
// leaving, other paths, and a metrics address that cannot be bound.
#include <doctest/doctest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <map>
#include <optional>
#include <sstream>
#include <string>

#include "tests/support/fleet.h"
#include "tests/support/sql.h"

using namespace pacer::testing;
using json = nlohmann::json;
using pacer::protocol::Command;

namespace {

struct Scrape {
  int status = 0;
  std::string content_type;
  std::string body;
  // Every sample: the series as written (name and labels) -> value.
  std::map<std::string, double> samples;

  double at(const std::string& series) const {
    auto it = samples.find(series);
    return it == samples.end() ? -1 : it->second;
  }
  // Sum of the samples of one metric name.
  double sum(const std::string& name) const {
    double total = 0;
    for (auto& [series, v] : samples)
      if (series.rfind(name + "{", 0) == 0 || series == name) total += v;
    return total;
  }
};

std::optional<Scrape> scrape(int port, const std::string& path = "/metrics") {
  httplib::Client cli("127.0.0.1", port);
  cli.set_connection_timeout(2, 0);
  cli.set_read_timeout(5, 0);
  auto res = cli.Get(path.c_str());
  if (!res) return std::nullopt;
  Scrape s;
  s.status = res->status;
  s.content_type = res->get_header_value("Content-Type");
  s.body = res->body;
  if (s.status != 200) return s;
  std::istringstream in(res->body);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    auto space = line.rfind(' ');
    s.samples[line.substr(0, space)] = std::stod(line.substr(space + 1));
  }
  return s;
}

std::string metrics_toml(int port) {
  return "metrics_address = \"127.0.0.1:" + std::to_string(port) + "\"\n";
}

void set_mock(Fleet& f, const json& config) {
  auto r = http_json(f.mock().port(), "POST", "/admin/config", config.dump());
  REQUIRE(r.has_value());
}

void start(Fleet& f) {
  f.start_broker();
  f.start_worker(0);
  f.start_worker(1);
  REQUIRE(f.wait_workers(2));
}

// A loopback TCP port held open (listening) until destruction.
class HeldPort {
 public:
  HeldPort() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(listen(fd_, 1) == 0);
    socklen_t len = sizeof addr;
    getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
  }
  ~HeldPort() { close(fd_); }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

}  // namespace

TEST_CASE("the scraped numbers are what the run did") {
  const int port = free_port();
  // The lane believes 40/s; the mock allows 20/s per fixed window, so some
  // calls are refused with 429 and their jobs wait for quota.
  Fleet f({.mock_args = {"--limit", "20/s", "--algorithm", "fixed", "--latency",
                         "5"},
           .api_toml = "limits = [\"40/s\"]\nconcurrency = 8\n"
                       "margin = \"50ms\"\nbackoff_base = \"50ms\"\n"
                       "backoff_cap = \"500ms\"\n",
           .broker_toml = metrics_toml(port)});
  start(f);

  // Five jobs die at once: the mock answers 422 (a permanent failure).
  set_mock(f, {{"fail_status", 422}});
  auto dead = f.submit_echo(5, "dead");
  REQUIRE(f.wait_done(dead, 60s));
  set_mock(f, {{"fail_status", nullptr}});
  auto ok = f.submit_echo(200, "ok");
  REQUIRE(f.wait_done(ok, 120s));
  REQUIRE(f.progress(ok)["succeeded"] == 200);
  REQUIRE(f.progress(dead)["dead"] == 5);

  const json mock = f.mock().stats();
  INFO(mock.dump());
  const json& codes = mock["status_counts"];
  REQUIRE(codes.value("429", 0) > 0);
  const std::int64_t calls = mock["requests"].get<std::int64_t>();
  const std::int64_t attempts =
      sql_count(f.db_path(), "SELECT COUNT(*) FROM attempts");
  REQUIRE(attempts == calls);

  // Job counts are read every few seconds and the snapshot is a publication
  // behind: wait for the run's final numbers to show.
  std::optional<Scrape> m;
  const std::string echo = R"({api="echo")";
  bool settled = wait_until(
      [&] {
        m = scrape(port);
        return m &&
               m->at(R"(pacer_jobs{api="echo",state="succeeded"})") == 200 &&
               m->at(R"(pacer_jobs{api="echo",state="dead"})") == 5 &&
               m->sum("pacer_responses_total") == static_cast<double>(calls);
      },
      30s, 100ms);
  REQUIRE(m.has_value());
  INFO(m->body);
  REQUIRE(settled);
  CHECK(m->status == 200);
  CHECK(m->content_type.rfind("text/plain; version=0.0.4", 0) == 0);

  CHECK(m->at("pacer_up") == 1);
  CHECK(m->at(R"(pacer_build_info{version="0.1.0"})") == 1);
  CHECK(m->at("pacer_workers_connected") == 2);
  CHECK(m->at("pacer_database_bytes") > 0);
  CHECK(m->at("pacer_snapshot_age_seconds") >= 0);
  CHECK(m->at("pacer_snapshot_age_seconds") < 5);

  // Jobs by state: everything finished.
  for (const char* state :
       {"queued", "running", "retrying", "waiting_quota", "canceled"})
    CHECK_MESSAGE(m->at(std::string(R"(pacer_jobs{api="echo",state=")") +
                        state + "\"}") == 0,
                  state);
  CHECK(m->at(R"(pacer_queue_depth{api="echo"})") == 0);
  CHECK(m->at(R"(pacer_in_flight{api="echo"})") == 0);

  // Every call the mock answered, by status, and nothing else.
  for (auto& [code, n] : codes.items())
    CHECK_MESSAGE(m->at(R"(pacer_responses_total{api="echo",code=")" + code +
                        "\"}") == n.get<double>(),
                  code);
  CHECK(m->at(R"(pacer_responses_total{api="echo",code="422"})") == 5);
  CHECK(m->at(R"(pacer_responses_total{api="echo",code="200"})") == 200);
  CHECK(m->at(R"(pacer_rate_limited_total{api="echo"})") ==
        codes["429"].get<double>());

  // One call per job attempt (no batching here), each with its delay and
  // its duration observed.
  CHECK(m->at(R"(pacer_dispatches_total{api="echo"})") == calls);
  CHECK(m->at(R"(pacer_dispatched_jobs_total{api="echo"})") == calls);
  CHECK(m->at(R"(pacer_batches_total{api="echo"})") == 0);
  CHECK(m->at(R"(pacer_dispatch_delay_seconds_count{api="echo"})") == calls);
  CHECK(m->at(R"(pacer_dispatch_delay_seconds_bucket{api="echo",le="+Inf"})") ==
        calls);
  CHECK(m->at(R"(pacer_job_duration_seconds_count{api="echo"})") == calls);
  // The mock adds 5 ms to each reply: no call took less.
  CHECK(m->at(R"(pacer_job_duration_seconds_bucket{api="echo",le="0.005"})") <
        calls);
  CHECK(m->at(R"(pacer_job_duration_seconds_sum{api="echo"})") >=
        0.004 * static_cast<double>(calls));

  // The lane's limit, its use (nothing ran in the last second), the pause
  // the 429s caused has ended, the circuit never opened.
  CHECK(
      m->at(R"(pacer_limit{api="echo",policy="40/1s",source="configured"})") ==
      40);
  CHECK(
      m->at(
          R"(pacer_limit_used{api="echo",policy="40/1s",source="configured"})") >=
      0);
  CHECK(m->at(R"(pacer_circuit_state{api="echo",state="closed"})") == 1);
  CHECK(m->at(R"(pacer_circuit_state{api="echo",state="open"})") == 0);
  CHECK(wait_until(
      [&] {
        auto again = scrape(port);
        return again && again->at(R"(pacer_lane_paused{api="echo"})") == 0 &&
               again->at(R"(pacer_lane_paused_seconds{api="echo"})") == 0;
      },
      10s, 100ms));

  // Only /metrics is served.
  for (const char* other : {"/", "/metrics/", "/stats"}) {
    auto r = scrape(port, other);
    REQUIRE(r.has_value());
    CHECK_MESSAGE(r->status == 404, other);
  }

  // A worker that leaves is no longer counted.
  f.worker(1).stop();
  CHECK(wait_until(
      [&] {
        auto again = scrape(port);
        return again && again->at("pacer_workers_connected") == 1;
      },
      10s, 50ms));
}

TEST_CASE("batches: calls, jobs and batch sizes") {
  const int port = free_port();
  Fleet f({.mock_args = {"--limit", "10/s", "--algorithm", "fixed"},
           .api_toml = "limits = [\"10/s\"]\nconcurrency = 4\n"
                       "margin = \"50ms\"\n",
           .broker_toml = metrics_toml(port),
           .extra_toml = "[api.echo.batch]\n"
                         "path = \"/v1/batch\"\n"
                         "max_items = 50\n"
                         "max_wait = \"200ms\"\n"
                         "request_array = \"/inputs\"\n"
                         "response_array = \"/results\"\n"});
  f.start_broker();
  // Submitted before any worker is there, so the batches are full.
  auto ids = f.submit_echo(300, "b", {{"batch_key", "k"}});
  f.start_worker(0);
  f.start_worker(1);
  REQUIRE(f.wait_workers(2));
  REQUIRE(f.wait_done(ids, 60s));
  REQUIRE(f.progress(ids)["succeeded"] == 300);
  const json mock = f.mock().stats();
  INFO(mock.dump());
  const double batches = mock["batch_requests"].get<double>();
  REQUIRE(batches >= 6);

  std::optional<Scrape> m;
  bool settled = wait_until(
      [&] {
        m = scrape(port);
        return m &&
               m->at(R"(pacer_jobs{api="echo",state="succeeded"})") == 300 &&
               m->at(R"(pacer_batch_items_total{api="echo"})") == 300;
      },
      30s, 100ms);
  REQUIRE(m.has_value());
  INFO(m->body);
  REQUIRE(settled);
  CHECK(m->at(R"(pacer_dispatched_jobs_total{api="echo"})") == 300);
  CHECK(m->at(R"(pacer_dispatches_total{api="echo"})") == batches);
  CHECK(m->at(R"(pacer_batches_total{api="echo"})") == batches);
  CHECK(m->at(R"(pacer_batch_size_count{api="echo"})") == batches);
  CHECK(m->at(R"(pacer_batch_size_sum{api="echo"})") == 300);
  CHECK(m->at(R"(pacer_batch_size_bucket{api="echo",le="+Inf"})") == batches);
  CHECK(m->at(R"(pacer_responses_total{api="echo",code="200"})") == batches);
  // Every member's wait is observed, not one per call.
  CHECK(m->at(R"(pacer_dispatch_delay_seconds_count{api="echo"})") == 300);
  CHECK(m->at(R"(pacer_job_duration_seconds_count{api="echo"})") == batches);
}

TEST_CASE(
    "a metrics address that cannot be bound stops the broker, saying so") {
  HeldPort held;
  Fleet f({.broker_toml = metrics_toml(held.port())});
  Process broker({binary("pacer-broker"), "--config", f.config_path()},
                 f.dir().path(), "broker-bind");
  auto code = broker.wait(20s);
  REQUIRE(code.has_value());
  CHECK(*code == 1);
  const std::string err = broker.err();
  INFO(err);
  CHECK(err.find("pacer-broker: cannot bind the metrics address 127.0.0.1:" +
                 std::to_string(held.port()) + ": Address already in use\n") !=
        std::string::npos);
}

TEST_CASE("a malformed metrics address is refused at load, naming the key") {
  Fleet f({.broker_toml = "metrics_address = \"127.0.0.1\"\n"});
  Process broker({binary("pacer-broker"), "--config", f.config_path()},
                 f.dir().path(), "broker-bad");
  auto code = broker.wait(20s);
  REQUIRE(code.has_value());
  CHECK(*code == 2);
  INFO(broker.err());
  CHECK(broker.err().find("broker.metrics_address: must be HOST:PORT") !=
        std::string::npos);
}

TEST_CASE("--metrics-address overrides the file's, and is checked the same") {
  HeldPort held;  // the file's address cannot be bound
  Fleet f({.broker_toml = metrics_toml(held.port())});

  SUBCASE("a usable address on the command line is served") {
    const int port = pacer::testing::free_port();
    Process broker({binary("pacer-broker"), "--config", f.config_path(),
                    "--metrics-address", "127.0.0.1:" + std::to_string(port)},
                   f.dir().path(), "broker-flag");
    // 503 until the loop has published its first snapshot.
    std::optional<Scrape> s;
    const bool served = wait_until(
        [&] {
          s = scrape(port);
          return s && s->status == 200;
        },
        20s);
    INFO(broker.err());
    REQUIRE(served);
    CHECK(s->samples.count("pacer_workers_connected") == 1);
    CHECK(broker.stop() == 0);
  }

  SUBCASE("an empty one turns metrics off") {
    Process broker({binary("pacer-broker"), "--config", f.config_path(),
                    "--metrics-address", ""},
                   f.dir().path(), "broker-off");
    // Answering clients, not stopped by the held port, is the proof.
    const bool answering = wait_until(
        [&] {
          return f.request(Command::kStats, json::object(), 1s).has_value();
        },
        20s);
    INFO(broker.err());
    REQUIRE(answering);
    CHECK(broker.running());
    CHECK(broker.stop() == 0);
  }

  SUBCASE("a malformed one is refused before anything starts") {
    Process broker({binary("pacer-broker"), "--config", f.config_path(),
                    "--metrics-address", "9464"},
                   f.dir().path(), "broker-bad-flag");
    auto code = broker.wait(20s);
    REQUIRE(code.has_value());
    CHECK(*code == 2);
    INFO(broker.err());
    CHECK(broker.err().find("pacer-broker: --metrics-address: must be "
                            "HOST:PORT like \"127.0.0.1:9464\" (got '9464')") !=
          std::string::npos);
  }
}
