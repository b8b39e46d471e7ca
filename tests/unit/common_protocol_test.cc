// The wire protocol codec (schema/wire_protocol.md): round trips of every
// command, every kind of malformed message, version and foreign headers, and
// real ROUTER/DEALER sockets over loopback TCP. Waits use zmq::poll with a
// deadline; nothing sleeps.
#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "common/protocol.h"
#include "tests/support/process.h"

using nlohmann::json;
using pacer::protocol::Command;
using pacer::protocol::decode;
using pacer::protocol::Decoded;
using pacer::protocol::encode;
using pacer::protocol::Message;

namespace {

zmq::message_t frame(const std::string& s) {
  return zmq::message_t(s.data(), s.size());
}

zmq::message_t byte_frame(std::uint8_t b) { return zmq::message_t(&b, 1); }

std::vector<zmq::message_t> frames(std::vector<std::string> parts) {
  std::vector<zmq::message_t> out;
  for (auto& p : parts) out.push_back(frame(p));
  return out;
}

std::string as_string(const zmq::message_t& m) {
  return std::string(static_cast<const char*>(m.data()), m.size());
}

// Frames of a message with the given header, command byte and body text.
std::vector<zmq::message_t> raw(const std::string& header, std::uint8_t cmd,
                                const std::optional<std::string>& body) {
  std::vector<zmq::message_t> out;
  out.push_back(frame(header));
  out.push_back(byte_frame(cmd));
  if (body) out.push_back(frame(*body));
  return out;
}

const pacer::protocol::DecodeError& error_of(const Decoded& d) {
  REQUIRE_FALSE(d.message.has_value());
  REQUIRE(d.error.has_value());
  return *d.error;
}

// Every command with a body as the spec shows it.
std::vector<Message> sample_messages() {
  json job = {{"id", 42},
              {"attempt", 3},
              {"api", "echo"},
              {"method", "POST"},
              {"path", "/v1/echo"},
              {"headers", {{"X-Trace", "abc"}}},
              {"body", "{\"n\":1}"},
              {"timeout_ms", 30000}};
  json result = {{"id", 42},
                 {"attempt", 3},
                 {"outcome", "success"},
                 {"status", 200},
                 {"error", ""},
                 {"headers", {{"content-type", "application/json"}}},
                 {"body", "..."},
                 {"body_truncated", false},
                 {"started_ms", 1764286000123},
                 {"duration_ms", 12.5},
                 {"observation", nullptr}};
  return {
      {Command::kReady,
       {{"worker", "w-1"},
        {"capacity", 64},
        {"apis", json::array()},
        {"heartbeat_ms", 1000},
        {"version", "0.1.0"}}},
      {Command::kWelcome, {{"heartbeat_ms", 1000}, {"liveness", 3}}},
      {Command::kHeartbeat, json::object()},
      {Command::kJobs, {{"jobs", json::array({job, job})}}},
      {Command::kResults, {{"results", json::array({result})}}},
      {Command::kDisconnect, {{"reason", "unknown worker"}}},
      {Command::kSubmit,
       {{"req", "r1"},
        {"jobs", json::array({{{"api", "echo"}, {"body", {{"n", 1}}}}})},
        {"group", "g"}}},
      {Command::kStatus, {{"req", "r2"}, {"ids", {1, 2, 3}}}},
      {Command::kResult, {{"req", "r3"}, {"id", 1}}},
      {Command::kList,
       {{"req", "r4"},
        {"state", "queued"},
        {"api", "echo"},
        {"limit", 10},
        {"after", 5}}},
      {Command::kCancel, {{"req", "r5"}, {"ids", {1}}}},
      {Command::kStats, {{"req", "r6"}}},
      {Command::kProgress, {{"req", "r7"}, {"all", true}}},
      {Command::kApis, {{"req", "r8"}}},
      {Command::kDeadList, {{"req", "r9"}}},
      {Command::kDeadReplay, {{"req", "r10"}}},
      {Command::kReply,
       {{"req", "r1"}, {"ok", true}, {"ids", {1}}, {"duplicates", 0}}},
      {Command::kError,
       {{"code", "invalid"}, {"message", "bad"}, {"req", "r1"}}},
  };
}

// Waits until `socket` has a message to read, up to `timeout`.
bool readable(zmq::socket_t& socket,
              std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  zmq::pollitem_t items[] = {{socket.handle(), 0, ZMQ_POLLIN, 0}};
  zmq::poll(items, 1, timeout);
  return (items[0].revents & ZMQ_POLLIN) != 0;
}

}  // namespace

TEST_CASE("command names and the known-byte set") {
  int known = 0;
  for (int b = 0; b < 256; ++b) {
    bool k = pacer::protocol::is_known(static_cast<std::uint8_t>(b));
    if (k) {
      ++known;
      CHECK(pacer::protocol::to_string(static_cast<Command>(b)) != "?");
    }
  }
  CHECK(known == 6 + 10 + 1 + 1);  // worker, client, REPLY, ERROR
  CHECK_FALSE(pacer::protocol::is_known(0x00));
  CHECK_FALSE(pacer::protocol::is_known(0x07));
  CHECK_FALSE(pacer::protocol::is_known(0x1A));
  CHECK_FALSE(pacer::protocol::is_known(0x21));
  CHECK_FALSE(pacer::protocol::is_known(0xFF));
  CHECK(pacer::protocol::to_string(Command::kReady) == "READY");
  CHECK(pacer::protocol::to_string(Command::kDeadReplay) == "DEAD_REPLAY");
  CHECK(pacer::protocol::to_string(Command::kError) == "ERROR");
  CHECK(pacer::protocol::kHeader == "PACER1");
}

TEST_CASE("every command with a body survives encode and decode") {
  for (const Message& m : sample_messages()) {
    CAPTURE(std::string(pacer::protocol::to_string(m.command)));
    auto f = encode(m);
    REQUIRE(f.size() == 3);
    CHECK(as_string(f[0]) == "PACER1");
    REQUIRE(f[1].size() == 1);
    CHECK(*static_cast<const std::uint8_t*>(f[1].data()) ==
          static_cast<std::uint8_t>(m.command));
    Decoded d = decode(f);
    REQUIRE_MESSAGE(d.message.has_value(),
                    (d.error ? d.error->message : std::string()));
    CHECK_FALSE(d.error.has_value());
    CHECK(d.message->command == m.command);
    CHECK(d.message->body == m.body);
  }
}

TEST_CASE("HEARTBEAT and DISCONNECT may travel without a body") {
  for (Command c : {Command::kHeartbeat, Command::kDisconnect}) {
    auto f = encode(Message{c, nullptr});
    REQUIRE(f.size() == 2);
    Decoded d = decode(f);
    REQUIRE(d.message.has_value());
    CHECK(d.message->command == c);
    CHECK(d.message->body.is_null());
    // An empty third frame is the same as no body.
    Decoded e =
        decode(raw("PACER1", static_cast<std::uint8_t>(c), std::string()));
    REQUIRE(e.message.has_value());
    CHECK(e.message->body.is_null());
  }
}

TEST_CASE("a body with invalid UTF-8 is encoded, not thrown") {
  Message m{Command::kResults,
            {{"results", json::array({{{"body", "bad \xFF\xFE"}}})}}};
  std::vector<zmq::message_t> f;
  CHECK_NOTHROW(f = encode(m));
  Decoded d = decode(f);
  REQUIRE(d.message.has_value());
  CHECK(d.message->body["results"][0]["body"] ==
        "bad \xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST_CASE("malformed messages are refused with code malformed") {
  auto malformed = [](const std::vector<zmq::message_t>& f,
                      const std::string& needle) {
    Decoded d = decode(f);
    const auto& e = error_of(d);
    CHECK(e.code == "malformed");
    CHECK_MESSAGE(e.message.find(needle) != std::string::npos, e.message);
    CHECK_FALSE(e.peer_version.has_value());
  };
  malformed({}, "empty message");
  malformed(frames({"PACER1"}), "expected 2 or 3 frames, got 1");
  {
    auto f = raw("PACER1", 0x03, std::string("{}"));
    f.push_back(frame("{}"));
    malformed(f, "expected 2 or 3 frames, got 4");
  }
  malformed(frames({"PACER1", "\x01\x01", "{}"}), "exactly one byte");
  malformed(frames({"PACER1", "", "{}"}), "exactly one byte");
  malformed(raw("PACER1", 0x07, std::string("{}")), "unknown command 0x07");
  malformed(raw("PACER1", 0x00, std::string("{}")), "unknown command 0x00");
  malformed(raw("PACER1", 0xFF, std::string("{}")), "unknown command 0xFF");
  malformed(raw("PACER1", 0x10, std::string("{\"jobs\": [")),
            "SUBMIT: the body is not valid JSON");
  malformed(raw("PACER1", 0x01, std::string("not json")),
            "READY: the body is not valid JSON");
  malformed(raw("PACER1", 0x10, std::string("[1, 2]")),
            "SUBMIT: the body must be a JSON object");
  malformed(raw("PACER1", 0x11, std::string("\"ids\"")),
            "must be a JSON object");
  malformed(raw("PACER1", 0x11, std::string("null")), "must be a JSON object");
  malformed(raw("PACER1", 0x10, std::nullopt), "SUBMIT: a body is required");
  malformed(raw("PACER1", 0x01, std::string()), "READY: a body is required");
  malformed(raw("PACER1", 0x7F, std::nullopt), "ERROR: a body is required");
  // The header must be PACER<digit>: these start with PACER but are not ours.
  malformed(raw("PACERX", 0x03, std::nullopt), "header");
  malformed(raw("PACER", 0x03, std::nullopt), "header");
  malformed(raw("PACER12", 0x03, std::nullopt), "header");
}

TEST_CASE("another protocol version is code version with the peer's version") {
  Decoded d = decode(raw("PACER2", 0x01, std::string("{}")));
  const auto& e = error_of(d);
  CHECK(e.code == "version");
  REQUIRE(e.peer_version.has_value());
  CHECK(*e.peer_version == 2);
  CHECK(e.message.find("PACER1") != std::string::npos);
  CHECK(e.message.find("PACER2") != std::string::npos);

  // The version is judged before the rest: a newer peer's frames may differ.
  Decoded f = decode(frames({"PACER9"}));
  CHECK(error_of(f).code == "version");
  CHECK(error_of(f).peer_version == std::optional<int>(9));
  Decoded z = decode(raw("PACER0", 0x01, std::string("{}")));
  CHECK(error_of(z).peer_version == std::optional<int>(0));
}

TEST_CASE("a header that is not PACER is foreign") {
  for (const char* header :
       {"HTTP/1.1", "GET / HTTP/1.1", "", "PACE", "pacer1", "XPACER1"}) {
    CAPTURE(std::string(header));
    Decoded d = decode(raw(header, 0x01, std::string("{}")));
    CHECK(error_of(d).code == "foreign");
    CHECK_FALSE(error_of(d).peer_version.has_value());
  }
}

TEST_CASE("make_error builds the ERROR body") {
  Message m =
      pacer::protocol::make_error("invalid", "index 3: bad path", "r-7");
  CHECK(m.command == Command::kError);
  CHECK(m.body == json{{"code", "invalid"},
                       {"message", "index 3: bad path"},
                       {"req", "r-7"}});
  Message n = pacer::protocol::make_error("malformed", "x");
  CHECK(n.body == json{{"code", "malformed"}, {"message", "x"}});
  Decoded d = decode(encode(m));
  REQUIRE(d.message.has_value());
  CHECK(d.message->body == m.body);
}

TEST_CASE("ROUTER and DEALER exchange messages over loopback TCP") {
  zmq::context_t ctx;
  zmq::socket_t router(ctx, zmq::socket_type::router);
  router.set(zmq::sockopt::router_mandatory, 1);
  router.set(zmq::sockopt::linger, 0);
  int port = pacer::testing::free_port();
  std::string endpoint = "tcp://127.0.0.1:" + std::to_string(port);
  router.bind(endpoint);

  zmq::socket_t dealer(ctx, zmq::socket_type::dealer);
  dealer.set(zmq::sockopt::routing_id, "worker-1");
  dealer.set(zmq::sockopt::linger, 0);
  dealer.connect(endpoint);

  // Nothing to read yet: recv_frames does not block.
  std::string rid = "unchanged";
  CHECK_FALSE(pacer::protocol::recv_frames(router, true, &rid).has_value());
  CHECK(rid == "unchanged");
  CHECK_FALSE(pacer::protocol::recv_frames(dealer, false, nullptr).has_value());

  Message ready{Command::kReady,
                {{"worker", "worker-1"},
                 {"capacity", 4},
                 {"apis", {"echo"}},
                 {"heartbeat_ms", 1000},
                 {"version", "test"}}};
  REQUIRE(pacer::protocol::send(dealer, ready));

  REQUIRE(readable(router));
  auto in = pacer::protocol::recv_frames(router, true, &rid);
  REQUIRE(in.has_value());
  CHECK(rid == "worker-1");
  REQUIRE(in->size() == 3);  // the routing id is split off
  Decoded d = decode(*in);
  REQUIRE(d.message.has_value());
  CHECK(d.message->command == Command::kReady);
  CHECK(d.message->body == ready.body);

  // The reply goes back through the routing id; a blocking send works too.
  Message welcome{Command::kWelcome, {{"heartbeat_ms", 500}, {"liveness", 3}}};
  REQUIRE(pacer::protocol::send(router, welcome, &rid, /*dontwait=*/false));
  Message hb{Command::kHeartbeat, nullptr};
  REQUIRE(pacer::protocol::send(router, hb, &rid));

  REQUIRE(readable(dealer));
  auto back = pacer::protocol::recv_frames(dealer, false, nullptr);
  REQUIRE(back.has_value());
  Decoded w = decode(*back);
  REQUIRE(w.message.has_value());
  CHECK(w.message->command == Command::kWelcome);
  CHECK(w.message->body == welcome.body);

  REQUIRE(readable(dealer));
  back = pacer::protocol::recv_frames(dealer, false, nullptr);
  REQUIRE(back.has_value());
  CHECK(back->size() == 2);
  Decoded h = decode(*back);
  REQUIRE(h.message.has_value());
  CHECK(h.message->command == Command::kHeartbeat);
  CHECK(h.message->body.is_null());

  // A body written as JSON text arrives as the same message would.
  const std::string results = R"({"results":[{"id":7,"attempt":1}]})";
  REQUIRE(pacer::protocol::send_text(dealer, Command::kResults, results));
  REQUIRE(readable(router));
  in = pacer::protocol::recv_frames(router, true, &rid);
  REQUIRE(in.has_value());
  CHECK(rid == "worker-1");
  Decoded r = decode(*in);
  REQUIRE(r.message.has_value());
  CHECK(r.message->command == Command::kResults);
  CHECK(r.message->body == json::parse(results));

  // ROUTER_MANDATORY: a send to a peer that is not connected fails as a
  // value, it does not throw and does not vanish silently.
  std::string ghost = "nobody";
  CHECK_FALSE(pacer::protocol::send(router, welcome, &ghost));
  CHECK_FALSE(pacer::protocol::send_text(router, Command::kJobs, "{}", &ghost));
}

TEST_CASE("recv_frames keeps message boundaries after an oversized message") {
  zmq::context_t ctx;
  zmq::socket_t router(ctx, zmq::socket_type::router);
  router.set(zmq::sockopt::linger, 0);
  std::string endpoint =
      "tcp://127.0.0.1:" + std::to_string(pacer::testing::free_port());
  router.bind(endpoint);
  zmq::socket_t dealer(ctx, zmq::socket_type::dealer);
  dealer.set(zmq::sockopt::linger, 0);
  dealer.connect(endpoint);

  // Twelve frames in one message, then a well-formed one.
  for (int i = 0; i < 12; ++i) {
    std::string part = i == 0 ? "PACER1" : "x";
    REQUIRE(dealer.send(frame(part), i < 11 ? zmq::send_flags::sndmore
                                            : zmq::send_flags::none));
  }
  REQUIRE(
      pacer::protocol::send(dealer, Message{Command::kStats, {{"req", "s"}}}));

  std::string rid;
  REQUIRE(readable(router));
  auto big = pacer::protocol::recv_frames(router, true, &rid);
  REQUIRE(big.has_value());
  CHECK(big->size() <= 8);  // bounded, whatever the peer sends
  Decoded bad = decode(*big);
  CHECK(error_of(bad).code == "malformed");

  REQUIRE(readable(router));
  auto next = pacer::protocol::recv_frames(router, true, &rid);
  REQUIRE(next.has_value());
  Decoded ok = decode(*next);
  REQUIRE(ok.message.has_value());
  CHECK(ok.message->command == Command::kStats);
  CHECK(ok.message->body == json{{"req", "s"}});
}
