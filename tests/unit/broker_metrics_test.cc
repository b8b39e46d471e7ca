// Metrics: the Prometheus text a snapshot renders to (HELP and TYPE once per
// family, label escaping, cumulative histograms), what a lane's snapshot
// reads from its limiter and quota state, and the validation of
// broker.metrics_address.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "broker/lane.h"
#include "broker/metrics.h"
#include "common/config.h"

namespace pacer::metrics {
namespace {

bool contains(const std::string& text, const std::string& needle) {
  return text.find(needle) != std::string::npos;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// The value of the sample line that starts with `series` followed by a
// space; NaN when there is none.
double value_of(const std::string& text, const std::string& series) {
  for (const auto& line : lines_of(text))
    if (line.rfind(series + " ", 0) == 0)
      return std::stod(line.substr(series.size() + 1));
  return std::nan("");
}

LaneSnapshot lane(const std::string& api) {
  LaneSnapshot l;
  l.api = api;
  return l;
}

Snapshot snapshot() {
  Snapshot s;
  s.version = "1.2.3";
  s.started_ms = 1'700'000'000'000;
  s.published_ms = 1'700'000'010'000;
  s.workers_connected = 2;
  s.database_bytes = 4096;
  return s;
}

TEST_CASE("label values are escaped: backslash, double quote, newline") {
  CHECK(escape_label_value("plain") == "plain");
  CHECK(escape_label_value(R"(a\b)") == R"(a\\b)");
  CHECK(escape_label_value(R"(say "hi")") == R"(say \"hi\")");
  CHECK(escape_label_value("two\nlines") == R"(two\nlines)");
  TextWriter w;
  w.family("m", "gauge", "help with \\ and\nnewline");
  w.sample("m", {{"api", "we\"ird\\api\n"}}, 1);
  CHECK(w.text() ==
        "# HELP m help with \\\\ and\\nnewline\n"
        "# TYPE m gauge\n"
        "m{api=\"we\\\"ird\\\\api\\n\"} 1\n");
}

TEST_CASE("numbers: integers plain, fractions shortest, infinities") {
  TextWriter w;
  w.sample("a", {}, 42);
  w.sample("b", {}, 0.25);
  w.sample("c", {}, std::numeric_limits<double>::infinity());
  w.sample("d", {{"x", "1"}, {"y", "2"}}, 1e21);
  CHECK(w.text() == "a 42\nb 0.25\nc +Inf\nd{x=\"1\",y=\"2\"} 1e+21\n");
}

TEST_CASE("a histogram renders cumulative buckets, +Inf, _sum and _count") {
  // Binary fractions, so the sum prints exactly; 0.25 is on a bound and
  // falls in its bucket (le: less than or equal).
  Histogram h({0.25, 1, 10});
  for (double v : {0.125, 0.25, 0.5, 2.0, 2.0, 100.0}) h.observe(v);
  CHECK(h.count() == 6);
  CHECK(h.counts() == std::vector<std::uint64_t>{2, 1, 2, 1});
  TextWriter w;
  w.histogram("x_seconds", {{"api", "echo"}}, h);
  CHECK(w.text() ==
        "x_seconds_bucket{api=\"echo\",le=\"0.25\"} 2\n"
        "x_seconds_bucket{api=\"echo\",le=\"1\"} 3\n"
        "x_seconds_bucket{api=\"echo\",le=\"10\"} 5\n"
        "x_seconds_bucket{api=\"echo\",le=\"+Inf\"} 6\n"
        "x_seconds_sum{api=\"echo\"} 104.875\n"
        "x_seconds_count{api=\"echo\"} 6\n");
}

TEST_CASE(
    "render: every family has one HELP and one TYPE, before its samples") {
  Snapshot s = snapshot();
  LaneSnapshot echo = lane("echo");
  echo.batching = true;
  echo.counters.on_answer(200, false, 20);
  echo.counters.on_answer(429, true, 5);
  echo.counters.on_answer(0, false, 30'000);
  echo.counters.on_dispatch(1000, 1250);
  echo.counters.on_batch(7);
  echo.limits.push_back({"50/1s", "configured", 50, 12});
  echo.upstream.push_back({"x-ratelimit/default/requests", 3.0, 100, 0.5});
  s.lanes.push_back(echo);
  s.lanes.push_back(lane("other"));
  s.alerts.push_back({"echo", "usage_critical", "50/1s", true, 2});
  s.alerts.push_back({"echo", "circuit_open", "", false, 1});
  s.webhook = pacer::metrics::WebhookSample{7, 1, 2};
  const std::string text = render(s, s.published_ms + 1500);

  std::map<std::string, int> help, type;
  std::set<std::string> typed;  // families whose TYPE line came already
  for (const auto& line : lines_of(text)) {
    REQUIRE(!line.empty());
    if (line.rfind("# HELP ", 0) == 0) {
      ++help[line.substr(7, line.find(' ', 7) - 7)];
    } else if (line.rfind("# TYPE ", 0) == 0) {
      auto name = line.substr(7, line.find(' ', 7) - 7);
      ++type[name];
      typed.insert(name);
    } else {
      // A sample belongs to the last family announced: its name is that
      // family's, or a histogram's _bucket/_sum/_count of it.
      std::string name = line.substr(0, line.find_first_of("{ "));
      bool known = typed.count(name) > 0;
      for (const char* suffix : {"_bucket", "_sum", "_count"})
        if (name.size() > std::strlen(suffix) && name.ends_with(suffix) &&
            typed.count(name.substr(0, name.size() - std::strlen(suffix))))
          known = true;
      CHECK_MESSAGE(known, line);
    }
  }
  for (auto& [name, n] : type) {
    CHECK_MESSAGE(n == 1, name);
    CHECK_MESSAGE(help[name] == 1, name);
    CHECK(name.rfind("pacer_", 0) == 0);
  }
  CHECK(contains(text, "# TYPE pacer_dispatches_total counter\n"));
  CHECK(contains(text, "# TYPE pacer_job_duration_seconds histogram\n"));
  CHECK(contains(text, "# TYPE pacer_jobs gauge\n"));

  CHECK(value_of(text, "pacer_up") == 1);
  CHECK(value_of(text, R"(pacer_build_info{version="1.2.3"})") == 1);
  CHECK(value_of(text, "pacer_workers_connected") == 2);
  CHECK(value_of(text, "pacer_database_bytes") == 4096);
  CHECK(value_of(text, "pacer_snapshot_age_seconds") == 1.5);
  CHECK(value_of(text, R"(pacer_responses_total{api="echo",code="0"})") == 1);
  CHECK(value_of(text, R"(pacer_responses_total{api="echo",code="429"})") == 1);
  CHECK(value_of(text, R"(pacer_rate_limited_total{api="echo"})") == 1);
  CHECK(value_of(text, R"(pacer_rate_limited_total{api="other"})") == 0);
  CHECK(
      value_of(text,
               R"(pacer_job_duration_seconds_bucket{api="echo",le="0.025"})") ==
      2);
  CHECK(value_of(
            text,
            R"(pacer_job_duration_seconds_bucket{api="echo",le="+Inf"})") == 3);
  CHECK(value_of(text, R"(pacer_job_duration_seconds_sum{api="echo"})") ==
        doctest::Approx(30.025));
  CHECK(value_of(text, R"(pacer_dispatch_delay_seconds_count{api="echo"})") ==
        1);
  CHECK(value_of(text, R"(pacer_dispatch_delay_seconds_sum{api="echo"})") ==
        0.25);
  CHECK(value_of(text, R"(pacer_batch_size_count{api="echo"})") == 1);
  // Batch sizes only for lanes that batch.
  CHECK(!contains(text, R"(pacer_batch_size_count{api="other"})"));
  CHECK(value_of(
            text,
            R"(pacer_limit{api="echo",policy="50/1s",source="configured"})") ==
        50);
  CHECK(
      value_of(
          text,
          R"(pacer_limit_used{api="echo",policy="50/1s",source="configured"})") ==
      12);
  CHECK(
      value_of(
          text,
          R"(pacer_upstream_remaining{api="echo",policy="x-ratelimit/default/requests"})") ==
      3);
  CHECK(
      value_of(
          text,
          R"(pacer_upstream_limit{api="echo",policy="x-ratelimit/default/requests"})") ==
      100);
  CHECK(value_of(text, R"(pacer_circuit_state{api="echo",state="closed"})") ==
        1);
  CHECK(value_of(text, R"(pacer_circuit_state{api="echo",state="open"})") == 0);
  CHECK(value_of(text, R"(pacer_lane_paused{api="echo"})") == 0);
  CHECK(
      value_of(
          text,
          R"(pacer_alert{api="echo",alert="usage_critical",policy="50/1s"})") ==
      1);
  CHECK(value_of(text,
                 R"(pacer_alert{api="echo",alert="circuit_open",policy=""})") ==
        0);
  CHECK(
      value_of(
          text,
          R"(pacer_alerts_fired_total{api="echo",alert="usage_critical",policy="50/1s"})") ==
      2);
  CHECK(
      value_of(text,
               R"(pacer_alert_webhook_deliveries_total{result="delivered"})") ==
      7);
  CHECK(value_of(text,
                 R"(pacer_alert_webhook_deliveries_total{result="failed"})") ==
        1);
  CHECK(value_of(text,
                 R"(pacer_alert_webhook_deliveries_total{result="dropped"})") ==
        2);
  CHECK(text.back() == '\n');
}

TEST_CASE("render: job counts by state, every state shown, queue depth") {
  Snapshot s = snapshot();
  LaneSnapshot echo = lane("echo");
  echo.jobs = {{"queued", 5},
               {"retrying", 2},
               {"waiting_quota", 1},
               {"running", 4},
               {"succeeded", 100}};
  s.lanes.push_back(echo);
  // Jobs of an API the configuration no longer has: counts only.
  LaneSnapshot gone = lane("gone");
  gone.configured = false;
  gone.jobs = {{"queued", 3}};
  s.lanes.push_back(gone);
  const std::string text = render(s, s.published_ms);
  CHECK(value_of(text, R"(pacer_jobs{api="echo",state="succeeded"})") == 100);
  CHECK(value_of(text, R"(pacer_jobs{api="echo",state="dead"})") == 0);
  CHECK(value_of(text, R"(pacer_jobs{api="echo",state="canceled"})") == 0);
  CHECK(value_of(text, R"(pacer_queue_depth{api="echo"})") == 8);
  CHECK(value_of(text, R"(pacer_jobs{api="gone",state="queued"})") == 3);
  CHECK(value_of(text, R"(pacer_queue_depth{api="gone"})") == 3);
  CHECK(!contains(text, R"(pacer_in_flight{api="gone"})"));
  CHECK(!contains(text, R"(pacer_dispatches_total{api="gone"})"));
}

TEST_CASE("a lane's snapshot: dispatches, pause, circuit, limits and use") {
  ApiConfig api;
  api.name = "echo";
  api.base_url = "http://127.0.0.1:1";
  api.limits = {*parse_limit("50/s"), *parse_limit("1000 tokens/min")};
  Lane l(api, 64);
  const Millis t = 1'700'000'000'000;
  l.on_start(30, t);
  l.started();
  l.count_dispatch(t, 1, false);
  l.on_start(10, t + 10);
  l.started();
  l.count_dispatch(t + 10, 4, true);
  LaneCounters c;
  c.on_answer(200, false, 12);
  LaneSnapshot s = lane_snapshot(l, c, t + 20);
  CHECK(s.api == "echo");
  CHECK(s.in_flight == 2);
  CHECK(s.dispatches == 2);
  CHECK(s.dispatched_jobs == 5);
  CHECK(s.batches == 1);
  CHECK(s.batch_items == 4);
  CHECK_FALSE(s.paused);
  CHECK(s.circuit == "closed");
  CHECK(s.counters.responses.at(200) == 1);
  REQUIRE(s.limits.size() == 2);
  for (const auto& lim : s.limits) {
    CHECK(lim.source == "configured");
    if (lim.policy == "50/1s") {
      CHECK(lim.limit == 50);
      CHECK(lim.used == 2);
    } else {
      CHECK(lim.policy == "1000 tokens/1m0s");
      CHECK(lim.limit == 1000);
      CHECK(lim.used == 40);
    }
  }

  // A 429 with Retry-After pauses the lane: paused, with the time left.
  QuotaObservation o;
  o.retry_after_ms = 3000;
  QuotaState::Answer a;
  a.obs = &o;
  a.at = l.quota().mark();
  a.rate_limited = true;
  l.quota().on_answer(a, t + 100);
  s = lane_snapshot(l, c, t + 1100);
  CHECK(s.paused);
  CHECK(s.paused_seconds == doctest::Approx(2.0).epsilon(0.2));
}

TEST_CASE("broker.metrics_address: off by default, host:port when given") {
  auto c = parse_config("[broker]\n");
  REQUIRE(c);
  CHECK(c->broker.metrics_address.empty());
  c = parse_config("[broker]\nmetrics_address = \"\"\n");
  REQUIRE(c);
  CHECK(c->broker.metrics_address.empty());
  for (const char* ok : {"127.0.0.1:9464", "localhost:9464", "[::1]:9464",
                         "0.0.0.0:1", "metrics-host.internal:65535"}) {
    auto r = parse_config(std::string("[broker]\nmetrics_address = \"") + ok +
                          "\"\n");
    CHECK_MESSAGE(r, ok);
    if (r) CHECK(r->broker.metrics_address == ok);
  }
  auto hp = parse_host_port("[::1]:9464");
  REQUIRE(hp);
  CHECK(hp->host == "::1");
  CHECK(hp->port == 9464);
}

TEST_CASE("broker.metrics_address: a bad value names the key and the value") {
  for (const char* bad :
       {"9464", "127.0.0.1", "127.0.0.1:", ":9464", "127.0.0.1:0",
        "127.0.0.1:65536", "127.0.0.1:94x4", "::1:9464",
        "http://127.0.0.1:9464", "127.0.0.1:9464/metrics", "host name:9464"}) {
    auto r = parse_config(
        std::string("[broker]\nmetrics_address = \"") + bad + "\"\n",
        "pacer.toml");
    REQUIRE_MESSAGE(!r, bad);
    INFO(r.error());
    CHECK(contains(r.error(), "pacer.toml:2: broker.metrics_address: "));
    CHECK(contains(r.error(), std::string("'") + bad + "'"));
  }
  auto r = parse_config("[broker]\nmetrics_address = 9464\n", "pacer.toml");
  REQUIRE(!r);
  CHECK(r.error() == "pacer.toml:2: broker.metrics_address: must be a string");
}

}  // namespace
}  // namespace pacer::metrics
