#include <doctest/doctest.h>

#include <atomic>
#include <chrono>

#include "client/broker_client.h"
#include "client/commands.h"
#include "tests/support/process.h"
#include "tests/unit/client_fake_broker.h"

using namespace pacer;
using client::BrokerClient;
using client::Reply;
using protocol::Command;
using testing::FakeBroker;
using testing::Frames;

namespace {

BrokerClient connect(const std::string& endpoint, Millis timeout_ms = 5000) {
  auto c = BrokerClient::connect(endpoint, timeout_ms);
  REQUIRE(c.ok());
  return std::move(c).value();
}

}  // namespace

TEST_CASE("a request carries a fresh req and returns the matching REPLY body") {
  FakeBroker broker([](const protocol::Message& m) -> std::vector<Frames> {
    return {testing::reply_to(m, {{"apis", {{{"name", "echo"}}}}})};
  });
  auto c = connect(broker.endpoint());
  auto r1 = c.request(Command::kApis, nlohmann::json::object());
  REQUIRE(r1.ok());
  CHECK((*r1)["apis"][0]["name"] == "echo");
  auto r2 = c.request(Command::kApis, nlohmann::json::object());
  REQUIRE(r2.ok());
  auto got = broker.received();
  REQUIRE(got.size() == 2);
  CHECK(got[0].command == Command::kApis);
  REQUIRE(got[0].body["req"].is_string());
  CHECK(got[0].body["req"] != got[1].body["req"]);
}

TEST_CASE("a body sent as text gets its req put in first, members kept") {
  FakeBroker broker([](const protocol::Message& m) -> std::vector<Frames> {
    return {testing::reply_to(m, {{"ok", true}})};
  });
  auto c = connect(broker.endpoint());
  REQUIRE(
      c.call_text(Command::kSubmit, "{\"jobs\":[{\"api\":\"echo\"}]}").ok());
  REQUIRE(c.call_text(Command::kStats, "{}").ok());
  REQUIRE(c.call_text(Command::kStats, "{ }").ok());
  REQUIRE(c.call_text(Command::kStats, "{\n  \"x\": 1 }").ok());
  auto got = broker.received();
  REQUIRE(got.size() == 4);
  CHECK(got[0].command == Command::kSubmit);
  CHECK(got[0].body["jobs"] == nlohmann::json::parse("[{\"api\":\"echo\"}]"));
  for (const auto& m : got) {
    REQUIRE(m.body.is_object());
    CHECK(m.body["req"].is_string());
  }
  CHECK(got[1].body.size() == 1);
  CHECK(got[2].body.size() == 1);
  CHECK(got[3].body["x"] == 1);
}

TEST_CASE("no broker: the request times out with the 'not reachable' error") {
  int port = testing::free_port();
  std::string endpoint = "tcp://127.0.0.1:" + std::to_string(port);
  auto c = connect(endpoint, 200);
  auto start = std::chrono::steady_clock::now();
  auto r = c.request(Command::kStats, nlohmann::json::object());
  auto took = std::chrono::steady_clock::now() - start;
  REQUIRE_FALSE(r.ok());
  CHECK(r.error() ==
        "broker not reachable at " + endpoint + " (no reply within 200ms)");
  CHECK(took >= std::chrono::milliseconds(190));
  CHECK(took < std::chrono::seconds(5));
  CHECK(client::describe_timeout(10'000) == "10s");
  CHECK(client::describe_timeout(1'500) == "1.5s");
}

TEST_CASE(
    "a broker that never answers gives the timeout error, then a later request "
    "works") {
  std::atomic<int> seen{0};
  FakeBroker broker([&](const protocol::Message& m) -> std::vector<Frames> {
    if (seen++ == 0) return {};  // swallow the first request
    return {testing::reply_to(m, {{"n", 2}})};
  });
  auto c = connect(broker.endpoint(), 300);
  auto r1 = c.call(Command::kStats, nlohmann::json::object());
  CHECK(r1.status == Reply::Status::kTimeout);
  CHECK(r1.error.find("no reply within 300ms") != std::string::npos);
  auto r2 = c.call(Command::kStats, nlohmann::json::object());
  REQUIRE(r2.ok());
  CHECK(r2.body["n"] == 2);
}

TEST_CASE("stale, req-less, foreign and non-reply messages are ignored") {
  FakeBroker broker([](const protocol::Message& m) -> std::vector<Frames> {
    nlohmann::json stale = {
        {"req", "someone-else"}, {"ok", true}, {"which", "stale"}};
    Frames old = {std::string(protocol::kHeader), std::string(1, '\x20'),
                  stale.dump()};
    Frames no_req = {std::string(protocol::kHeader), std::string(1, '\x20'),
                     R"({"ok": true, "which": "no req"})"};
    Frames foreign = {"HELLO", "x"};
    nlohmann::json welcome = {{"req", m.body.value("req", "")},
                              {"heartbeat_ms", 1000}};
    Frames not_a_reply = {std::string(protocol::kHeader),
                          std::string(1, '\x02'), welcome.dump()};
    return {old, no_req, foreign, not_a_reply,
            testing::reply_to(m, {{"which", "right"}})};
  });
  auto c = connect(broker.endpoint());
  auto r = c.request(Command::kStats, nlohmann::json::object());
  REQUIRE(r.ok());
  CHECK((*r)["which"] == "right");
}

TEST_CASE("the first reply with our req wins after stale ones") {
  FakeBroker broker([](const protocol::Message& m) -> std::vector<Frames> {
    nlohmann::json stale = {{"req", "old-1"}, {"ok", true}, {"which", "stale"}};
    Frames old = {std::string(protocol::kHeader), std::string(1, '\x20'),
                  stale.dump()};
    auto stale_error = testing::error_to(m, "not_found", "stale error");
    nlohmann::json e = nlohmann::json::parse(stale_error[2]);
    e["req"] = "old-2";
    stale_error[2] = e.dump();
    return {old, stale_error, testing::reply_to(m, {{"which", "right"}}),
            testing::reply_to(m, {{"which", "late duplicate"}})};
  });
  auto c = connect(broker.endpoint());
  auto r = c.request(Command::kStats, nlohmann::json::object());
  REQUIRE(r.ok());
  CHECK((*r)["which"] == "right");
  // The late duplicate is still queued; the next request must not take it.
  auto r2 = c.request(Command::kStats, nlohmann::json::object());
  REQUIRE(r2.ok());
  CHECK((*r2)["which"] == "right");
}

TEST_CASE("an ERROR reply is surfaced with its message and code") {
  FakeBroker broker([](const protocol::Message& m) -> std::vector<Frames> {
    return {testing::error_to(m, "not_found", "job 99 not found")};
  });
  auto c = connect(broker.endpoint());
  auto r = c.call(Command::kResult, {{"id", 99}});
  CHECK(r.status == Reply::Status::kRefused);
  CHECK(r.code() == "not_found");
  CHECK(r.error == "job 99 not found");
  CHECK(client::exit_code_for(r) == client::kExitNo);
  auto rr = c.request(Command::kResult, {{"id", 99}});
  REQUIRE_FALSE(rr.ok());
  CHECK(rr.error() == "job 99 not found");
}

TEST_CASE("a PACER2 reply gives a clear version error") {
  FakeBroker broker([](const protocol::Message& m) -> std::vector<Frames> {
    nlohmann::json body = {{"req", m.body.value("req", "")}, {"ok", true}};
    return {{"PACER2", std::string(1, '\x20'), body.dump()}};
  });
  auto c = connect(broker.endpoint());
  auto start = std::chrono::steady_clock::now();
  auto r = c.call(Command::kStats, nlohmann::json::object());
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(4));
  CHECK(r.status == Reply::Status::kVersion);
  CHECK(r.error ==
        "protocol version mismatch: the broker at " + broker.endpoint() +
            " speaks PACER2, this pacer speaks PACER1 (use a pacer built "
            "for that broker)");
  CHECK(client::exit_code_for(r) == client::kExitError);
}

TEST_CASE("an ERROR with code version is a version error whatever its req") {
  FakeBroker broker([](const protocol::Message&) -> std::vector<Frames> {
    nlohmann::json body = {
        {"code", "version"},
        {"message", "this broker speaks PACER3, the message says PACER1"}};
    return {{"PACER1", std::string(1, '\x7F'), body.dump()}};
  });
  auto c = connect(broker.endpoint());
  auto r = c.call(Command::kStats, nlohmann::json::object());
  CHECK(r.status == Reply::Status::kVersion);
  CHECK(r.error.find("protocol version mismatch") == 0);
  CHECK(r.error.find("PACER3") != std::string::npos);
}

TEST_CASE("an unparsable endpoint is refused up front") {
  auto c = BrokerClient::connect("nonsense", 1000);
  REQUIRE_FALSE(c.ok());
  CHECK(c.error().find("invalid broker endpoint 'nonsense'") == 0);
}

TEST_CASE("idle() waits about the asked time and drops what arrives") {
  FakeBroker broker([](const protocol::Message& m) -> std::vector<Frames> {
    return {testing::reply_to(m, {{"which", "first"}}),
            testing::reply_to(m, {{"which", "dup"}})};
  });
  auto c = connect(broker.endpoint());
  REQUIRE(c.request(Command::kStats, nlohmann::json::object()).ok());
  auto start = std::chrono::steady_clock::now();
  c.idle(100);
  auto took = std::chrono::steady_clock::now() - start;
  CHECK(took >= std::chrono::milliseconds(95));
  CHECK(took < std::chrono::seconds(3));
  auto r = c.request(Command::kStats, nlohmann::json::object());
  REQUIRE(r.ok());
  CHECK((*r)["which"] == "first");
}
