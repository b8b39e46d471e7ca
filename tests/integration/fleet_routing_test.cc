// Fleets: workers that serve only some APIs get only those APIs' jobs, and
// lanes share workers fairly. Real processes on loopback.
#include <doctest/doctest.h>
#include <sqlite3.h>

#include "tests/support/fleet.h"

using namespace pacer::testing;
using pacer::protocol::Command;
using json = nlohmann::json;

namespace {
// The rows of a query on the database, every column as text.
std::vector<std::vector<std::string>> query(const std::string& db,
                                            const std::string& sql) {
  std::vector<std::vector<std::string>> out;
  sqlite3* h = nullptr;
  REQUIRE(sqlite3_open_v2(db.c_str(), &h, SQLITE_OPEN_READONLY, nullptr) ==
          SQLITE_OK);
  sqlite3_busy_timeout(h, 5000);
  sqlite3_stmt* st = nullptr;
  REQUIRE(sqlite3_prepare_v2(h, sql.c_str(), -1, &st, nullptr) == SQLITE_OK);
  while (sqlite3_step(st) == SQLITE_ROW) {
    std::vector<std::string> row;
    for (int c = 0; c < sqlite3_column_count(st); ++c)
      row.emplace_back(static_cast<const char*>(sqlite3_column_blob(st, c)),
                       static_cast<std::size_t>(sqlite3_column_bytes(st, c)));
    out.push_back(std::move(row));
  }
  sqlite3_finalize(st);
  sqlite3_close(h);
  return out;
}

std::vector<std::pair<std::string, std::string>> workers_by_api(
    const std::string& db) {
  std::vector<std::pair<std::string, std::string>> out;
  for (auto& row :
       query(db, "SELECT DISTINCT api, worker FROM attempts ORDER BY 1, 2"))
    out.emplace_back(row[0], row[1]);
  return out;
}

// Sends frames (header, command byte, body text) as they stand from a DEALER
// of its own; the answer, decoded.
pacer::protocol::Message raw_exchange(const std::string& endpoint,
                                      const std::string& header,
                                      std::uint8_t command,
                                      const std::string& body) {
  zmq::context_t ctx;
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 0);
  s.connect(endpoint);
  s.send(zmq::buffer(header), zmq::send_flags::sndmore);
  s.send(zmq::buffer(&command, 1), zmq::send_flags::sndmore);
  s.send(zmq::buffer(body), zmq::send_flags::none);
  zmq::pollitem_t item{s.handle(), 0, ZMQ_POLLIN, 0};
  zmq::poll(&item, 1, std::chrono::milliseconds(10000));
  auto frames = pacer::protocol::recv_frames(s, false, nullptr);
  REQUIRE(frames);
  auto d = pacer::protocol::decode(*frames);
  REQUIRE(d.message);
  return std::move(*d.message);
}

// Sends one SUBMIT whose body is `text` as it stands; the broker's answer.
json submit_text(const std::string& endpoint, const std::string& text) {
  auto m = raw_exchange(endpoint, "PACER1", 0x10, text);
  json out = m.body;
  out["command"] = m.command == Command::kReply ? "reply" : "error";
  return out;
}
}  // namespace

TEST_CASE("SUBMIT bodies are read as documents would read them") {
  Fleet f({.workers = 0});
  f.start_broker();
  const auto ep = f.client_endpoint();
  // A job the lanes refuse ranks before a later job that is malformed.
  auto r = submit_text(ep, R"({"req":"a","jobs":[{"api":"nope"},
      {"api":"echo","path":"no-slash"}]})");
  CHECK(r["command"] == "error");
  CHECK(r["code"] == "unknown_api");
  CHECK(r["index"] == 0);
  CHECK(r["req"] == "a");
  r = submit_text(ep, R"({"req":{"n":[1]},"jobs":[{"api":"echo"},
      {"api":"echo","cost":0}]})");
  CHECK(r["code"] == "invalid");
  CHECK(r["index"] == 1);
  CHECK(r["req"] == json{{"n", {1}}});
  CHECK(r["message"] == "job 1: 'cost' must be an integer of at least 1");
  // Not an object, not JSON: refused as malformed, as any message.
  CHECK(submit_text(ep, "[]")["code"] == "malformed");
  CHECK(submit_text(ep, R"({"jobs":[)")["code"] == "malformed");
  // Stored bodies are written as a document writes them: keys sorted, the
  // last of repeated keys kept; an integer beyond 64 bits (which simdjson
  // does not take) goes through the document reading.
  r = submit_text(ep, R"({"req":"b","group":"g","jobs":[
      {"api":"echo","body":{"b":1,"a":{"y":2,"x":1},"b":3}}]})");
  REQUIRE(r["command"] == "reply");
  CHECK(r["req"] == "b");
  CHECK(r["group"] == "g");
  REQUIRE(r["ids"].size() == 1);
  r = submit_text(ep, R"({"req":"c","jobs":[
      {"api":"echo","body":{"n":123456789012345678901234567890}}]})");
  REQUIRE(r["command"] == "reply");
  CHECK(r["ids"].size() == 1);
  auto bodies = query(f.db_path(), "SELECT body FROM jobs ORDER BY id");
  REQUIRE(bodies.size() == 2);
  CHECK(bodies[0][0] == R"({"a":{"x":1,"y":2},"b":3})");
  CHECK(bodies[1][0] == R"({"n":1.2345678901234568e+29})");
}

TEST_CASE("a worker serving some APIs gets only their jobs") {
  FleetOptions o;
  o.mock_args = {"--latency", "2"};
  o.api_toml = "concurrency = 8\n";
  o.extra_toml = "[api.other]\nbase_url = \"{mock}\"\n";
  Fleet f(o);
  f.start_broker();
  f.start_worker(0, {"--apis", "echo"});
  f.start_worker(1, {"--apis", "other"});
  REQUIRE(f.wait_workers(2));

  json jobs = json::array();
  for (int i = 0; i < 200; ++i)
    jobs.push_back({{"api", i % 2 ? "other" : "echo"},
                    {"path", "/v1/echo"},
                    {"body", {{"i", i}}}});
  auto r = f.request(Command::kSubmit, {{"jobs", jobs}});
  REQUIRE(r);
  REQUIRE(r->value("ok", false));
  std::vector<std::int64_t> ids = (*r)["ids"].get<std::vector<std::int64_t>>();
  REQUIRE(f.wait_done(ids, 60s));
  CHECK(f.progress(ids)["succeeded"] == 200);
  auto pairs = workers_by_api(f.db_path());
  REQUIRE(pairs.size() == 2);
  CHECK(pairs[0] == std::pair<std::string, std::string>{"echo", "worker-0"});
  CHECK(pairs[1] == std::pair<std::string, std::string>{"other", "worker-1"});
}

TEST_CASE(
    "an unknown API, a bad job and a wrong protocol version get clear errors") {
  Fleet f({.workers = 0});
  f.start_broker();
  auto r =
      f.request(Command::kSubmit, {{"jobs", json::array({{{"api", "nope"}}})}});
  REQUIRE(r);
  CHECK_FALSE(r->value("ok", true));
  CHECK((*r)["code"] == "unknown_api");
  CHECK((*r)["message"].get<std::string>().find("unknown api 'nope'") !=
        std::string::npos);

  // A bad job anywhere in a SUBMIT refuses all of it.
  json jobs = json::array({{{"api", "echo"}, {"path", "/ok"}},
                           {{"api", "echo"}, {"path", "no-slash"}}});
  r = f.request(Command::kSubmit, {{"jobs", jobs}});
  REQUIRE(r);
  CHECK((*r)["code"] == "invalid");
  CHECK((*r)["index"] == 1);
  auto p = f.request(Command::kProgress, {{"all", true}});
  REQUIRE(p);
  CHECK((*p)["total"] == 0);

  // Another protocol version: an ERROR naming both, and the broker lives on.
  auto refused =
      raw_exchange(f.client_endpoint(), "PACER2", 0x15, "{\"req\":\"x\"}");
  CHECK(refused.command == Command::kError);
  CHECK(refused.body["code"] == "version");
  // Garbage is survived too.
  zmq::context_t ctx;
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 0);
  s.connect(f.client_endpoint());
  s.send(zmq::buffer(std::string("hello")), zmq::send_flags::none);
  auto again = f.request(Command::kApis, json::object());
  REQUIRE(again);
  CHECK(again->value("ok", false));
  CHECK(f.broker().running());
}

TEST_CASE("JSON nested 100,000 deep from a client or a worker is refused, "
          "and the broker lives on") {
  Fleet f({.workers = 0});
  f.start_broker();
  const std::string nest =
      std::string(100'000, '[') + std::string(100'000, ']');
  // Deep in a job's body, which the broker copies into its document.
  const std::string deep = "{\"req\":\"d\",\"jobs\":[{\"api\":\"echo\","
                           "\"method\":\"POST\",\"path\":\"/v1/echo\","
                           "\"body\":" + nest + "}]}";
  auto r = raw_exchange(f.client_endpoint(), "PACER1", 0x10, deep);
  CHECK(r.command == Command::kError);
  CHECK(r.body["code"] == "malformed");
  CHECK(f.broker().running());
  // A worker's READY and RESULTS as deep: no answer, no crash.
  zmq::context_t ctx;
  zmq::socket_t w(ctx, zmq::socket_type::dealer);
  w.set(zmq::sockopt::linger, 0);
  w.connect("ipc://" + f.dir().file("workers.sock"));
  const std::string ready = "{\"worker\":\"w\",\"capacity\":1,\"apis\":" +
                            nest + "}";
  const std::string results =
      "{\"results\":[{\"id\":1,\"attempt\":1,\"status\":200,"
      "\"observation\":" + nest + "}]}";
  for (auto [cmd, body] : {std::pair<std::uint8_t, const std::string*>{
                               0x01, &ready},
                           {0x04, &results}}) {
    w.send(zmq::buffer(std::string("PACER1")), zmq::send_flags::sndmore);
    w.send(zmq::buffer(&cmd, 1), zmq::send_flags::sndmore);
    w.send(zmq::buffer(*body), zmq::send_flags::none);
  }
  auto s = f.request(Command::kStats, json::object());
  REQUIRE(s);
  CHECK(s->value("ok", false));
  CHECK(f.broker().running());
}

TEST_CASE(
    "a worker sending fields of the wrong type cannot take the broker down") {
  Fleet f({.workers = 0});
  f.start_broker();
  zmq::context_t ctx;
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 0);
  s.connect("ipc://" + f.dir().file("workers.sock"));
  auto send = [&](Command c, const json& body) {
    REQUIRE(pacer::protocol::send(s, {c, body}, nullptr, false));
  };
  send(Command::kReady,
       {{"worker", 5}, {"capacity", 2}, {"apis", json::array()}});
  send(Command::kResults, {{"results", json::array({{{"id", 1},
                                                     {"attempt", 1},
                                                     {"status", nullptr},
                                                     {"error", nullptr},
                                                     {"duration_ms", "12"},
                                                     {"headers", "x"},
                                                     {"outcome", 7}}})}});
  send(Command::kResults, {{"results", "not an array"}});
  send(Command::kReady, {{"capacity", "many"}});
  // A client-socket message with an optional-body command and no body.
  zmq::socket_t c(ctx, zmq::socket_type::dealer);
  c.set(zmq::sockopt::linger, 0);
  c.connect(f.client_endpoint());
  REQUIRE(
      pacer::protocol::send(c, {Command::kHeartbeat, nullptr}, nullptr, false));
  // The broker still answers, and still runs.
  auto r = f.request(Command::kStats, json::object());
  REQUIRE(r);
  CHECK(r->value("ok", false));
  CHECK(f.broker().running());
}

TEST_CASE(
    "a result counts only from the worker its attempt was sent to: forged "
    "ones are dropped and counted") {
  // A slow upstream keeps the job running at the real worker meanwhile.
  Fleet f({.mock_args = {"--latency", "1500"}, .workers = 1});
  f.start_broker();
  f.start_worker(0);
  REQUIRE(f.wait_workers(1));
  auto ids = f.submit_echo(1, "bound");
  REQUIRE(ids.size() == 1);
  auto in_flight = [&] {
    auto s = f.request(Command::kStats, json::object());
    return s ? (*s)["broker"].value("in_flight", -1) : -1;
  };
  REQUIRE(wait_until([&] { return in_flight() == 1; }, 10s));

  const json forged = {{"results", json::array({{{"id", ids[0]},
                                                  {"attempt", 1},
                                                  {"outcome", "success"},
                                                  {"status", 200},
                                                  {"body", "FORGED"}}})}};
  zmq::context_t ctx;
  // A peer that never sent READY, and one that did (a registered worker,
  // but not the one the attempt went to).
  zmq::socket_t stranger(ctx, zmq::socket_type::dealer);
  stranger.set(zmq::sockopt::linger, 0);
  stranger.connect("ipc://" + f.dir().file("workers.sock"));
  REQUIRE(pacer::protocol::send(stranger, {Command::kResults, forged},
                                nullptr, false));
  zmq::socket_t rogue(ctx, zmq::socket_type::dealer);
  rogue.set(zmq::sockopt::linger, 0);
  rogue.connect("ipc://" + f.dir().file("workers.sock"));
  REQUIRE(pacer::protocol::send(
      rogue,
      {Command::kReady,
       {{"worker", "worker-0"}, {"capacity", 1}, {"apis", json::array()}}},
      nullptr, false));
  REQUIRE(pacer::protocol::send(rogue, {Command::kResults, forged}, nullptr,
                                false));

  // Both dropped and counted; the job still runs at its worker.
  REQUIRE(wait_until(
      [&] {
        auto s = f.request(Command::kStats, json::object());
        return s && (*s)["broker"].value("results_refused_total", 0) == 2;
      },
      10s));
  CHECK(in_flight() == 1);
  CHECK(f.progress(ids).value("succeeded", -1) == 0);
  // Nor does STATS tell any client where the broker keeps its database.
  auto stats = f.request(Command::kStats, json::object());
  REQUIRE(stats);
  CHECK(stats->dump().find(f.db_path()) == std::string::npos);
  // Then the real answer lands.
  REQUIRE(f.wait_done(ids, 30s));
  CHECK(f.progress(ids).value("succeeded", 0) == 1);
  auto r = f.request(Command::kResult, {{"id", ids[0]}});
  REQUIRE(r);
  const std::string body = (*r)["job"]["body"].get<std::string>();
  CHECK(body.find("FORGED") == std::string::npos);
  CHECK(json::parse(body)["echo"]["n"] == 0);
}
