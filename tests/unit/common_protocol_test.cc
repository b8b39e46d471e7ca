// The wire protocol codec (schema/wire_protocol.md): round trips of every
// command, every kind of malformed message, version and foreign headers, and
// real ROUTER/DEALER sockets over loopback TCP. Waits use zmq::poll with a
// deadline; nothing sleeps.
#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "common/json_limits.h"
#include "common/protocol.h"
#include "common/results_body.h"
#include "common/submit_body.h"
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

TEST_CASE("a body nested deeper than 64 levels is refused before parsing") {
  auto nested = [](int depth) {
    return "{\"a\":" + std::string(depth - 1, '[') +
           std::string(depth - 1, ']') + "}";
  };
  // 100,000 levels (~200 KB) had overflowed the stack of the reader.
  for (auto cmd : {0x10, 0x01, 0x15}) {
    Decoded d = decode(raw("PACER1", static_cast<std::uint8_t>(cmd),
                           nested(100'000)));
    const auto& e = error_of(d);
    CHECK(e.code == "malformed");
    CHECK(e.message.find("deeper than 64 levels") != std::string::npos);
  }
  // The same for bodies read raw (SUBMIT, RESULTS).
  Decoded r = decode(raw("PACER1", 0x10, nested(65)), Command::kSubmit);
  CHECK(error_of(r).message.find("deeper than 64") != std::string::npos);
  // 64 is fine; brackets inside strings do not count.
  CHECK(decode(raw("PACER1", 0x10, nested(64))).message);
  CHECK(decode(raw("PACER1", 0x10,
                   "{\"s\":\"" + std::string(1000, '[') + "\"}"))
            .message);
  CHECK(pacer::json_depth("{\"a\":[1,{\"b\":\"]]]\\\"[[[\"}]}") == 3);
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

// ------------------------------------------------- RESULTS read without a DOM

namespace {

using pacer::protocol::parse_results;
using pacer::protocol::WireMember;
using pacer::protocol::WireResult;

// What the broker read from a RESULTS entry when it built a document: each
// field only when it has the protocol's type. parse_results must agree.
WireResult reference_entry(const json& r) {
  WireResult w;
  if (!r.is_object()) return w;
  w.is_object = true;
  auto int_of = [](const json& o, const char* k) {
    std::optional<std::int64_t> v;
    if (auto it = o.find(k); it != o.end() && it->is_number_integer())
      v = it->get<std::int64_t>();
    return v;
  };
  auto string_of = [](const json& o, const char* k) {
    std::optional<std::string> v;
    if (auto it = o.find(k); it != o.end() && it->is_string())
      v = it->get<std::string>();
    return v;
  };
  auto number_of = [](const json& o, const char* k) {
    std::optional<double> v;
    if (auto it = o.find(k); it != o.end() && it->is_number())
      v = it->get<double>();
    return v;
  };
  w.has_batch = r.contains("batch");
  w.batch = int_of(r, "batch");
  w.id = int_of(r, "id");
  w.attempt = int_of(r, "attempt");
  w.status = int_of(r, "status");
  w.outcome = string_of(r, "outcome");
  w.error = string_of(r, "error");
  w.body = string_of(r, "body");
  w.split_error = string_of(r, "split_error");
  w.duration_ms = number_of(r, "duration_ms");
  w.actual_cost = number_of(r, "actual_cost");
  if (auto h = r.find("headers"); h != r.end() && h->is_object()) {
    if (!h->empty()) w.headers_json = h->dump();
    w.retry_after = string_of(*h, "retry-after");
  }
  if (auto o = r.find("observation"); o != r.end()) w.observation = *o;
  if (auto m = r.find("members"); m != r.end() && m->is_array()) {
    w.has_members = true;
    for (const auto& s : *m) {
      WireMember x;
      if (s.is_object()) {
        x.is_object = true;
        x.id = int_of(s, "id");
        x.attempt = int_of(s, "attempt");
        x.status = int_of(s, "status");
        x.body = string_of(s, "body");
        x.error = string_of(s, "error");
        if (auto ok = s.find("ok"); ok != s.end() && ok->is_boolean())
          x.ok = ok->get<bool>();
      }
      w.members.push_back(std::move(x));
    }
  }
  return w;
}

template <typename T>
json opt(const std::optional<T>& v) {
  return v ? json(*v) : json("<unset>");
}

// Every field as one document, so a difference shows which one.
json describe(const WireResult& w) {
  json members = json::array();
  for (const auto& m : w.members)
    members.push_back({{"is_object", m.is_object},
                       {"id", opt(m.id)},
                       {"attempt", opt(m.attempt)},
                       {"ok", opt(m.ok)},
                       {"status", opt(m.status)},
                       {"body", opt(m.body)},
                       {"error", opt(m.error)}});
  return {{"is_object", w.is_object},
          {"has_batch", w.has_batch},
          {"batch", opt(w.batch)},
          {"id", opt(w.id)},
          {"attempt", opt(w.attempt)},
          {"status", opt(w.status)},
          {"outcome", opt(w.outcome)},
          {"error", opt(w.error)},
          {"body", opt(w.body)},
          {"split_error", opt(w.split_error)},
          {"duration_ms", opt(w.duration_ms)},
          {"actual_cost", opt(w.actual_cost)},
          {"headers_json", w.headers_json},
          {"retry_after", opt(w.retry_after)},
          {"observation", w.observation},
          {"has_members", w.has_members},
          {"members", members}};
}

json describe_all(const std::vector<WireResult>& v) {
  json out = json::array();
  for (const auto& w : v) out.push_back(describe(w));
  return out;
}

// parse_results(text) against the reference reading of the same text.
void check_agrees(const std::string& text) {
  auto parsed = parse_results(text);
  REQUIRE_MESSAGE(parsed.ok(), text << ": " << parsed.error());
  const json doc = json::parse(text);
  std::vector<WireResult> want;
  for (const auto& r : doc["results"]) want.push_back(reference_entry(r));
  CHECK_MESSAGE(describe_all(*parsed) == describe_all(want), text);
}

class RandomValues {
 public:
  explicit RandomValues(std::uint64_t seed) : rng_(seed) {}
  int pick(int n) {
    return static_cast<int>(rng_() % static_cast<unsigned>(n));
  }
  std::string text() {
    static const std::vector<std::string> parts = {"a",
                                                   "Z",
                                                   "0",
                                                   " ",
                                                   "\"",
                                                   "\\",
                                                   "/",
                                                   "\n",
                                                   "\t",
                                                   std::string(1, '\x01'),
                                                   "\xc3\xa9",
                                                   "\xe2\x82\xac",
                                                   "\xf0\x9f\x98\x80",
                                                   "retry-after",
                                                   "{}"};
    std::string s;
    for (int n = pick(6); n > 0; --n) s += parts[pick(parts.size())];
    return s;
  }
  // Any JSON value, nested up to `depth`.
  json value(int depth) {
    switch (pick(depth > 0 ? 9 : 7)) {
      case 0:
        return nullptr;
      case 1:
        return pick(2) == 0;
      case 2:
        return static_cast<std::int64_t>(rng_() % 2000) - 1000;
      case 3:
        return std::uint64_t{18'000'000'000'000'000'000u};
      case 4:
        return (static_cast<double>(rng_() % 100000) - 500) / 7.0;
      case 5:
      case 6:
        return text();
      case 7: {
        json a = json::array();
        for (int n = pick(4); n > 0; --n) a.push_back(value(depth - 1));
        return a;
      }
      default: {
        json o = json::object();
        for (int n = pick(4); n > 0; --n) o[text()] = value(depth - 1);
        return o;
      }
    }
  }
  // A value of the protocol's type for `key` most of the time.
  json field(const std::string& key) {
    if (pick(5) == 0) return value(2);
    if (key == "id" || key == "attempt" || key == "status" || key == "batch")
      return static_cast<std::int64_t>(rng_() % 1000);
    if (key == "duration_ms" || key == "actual_cost")
      return pick(2) ? json(12.5) : json(std::int64_t{7});
    if (key == "ok") return pick(2) == 0;
    if (key == "headers") {
      json h = json::object();
      for (int n = pick(5); n > 0; --n)
        h[pick(3) == 0 ? "retry-after" : text()] =
            pick(6) ? json(text()) : value(1);
      return h;
    }
    if (key == "observation") return pick(2) ? json(nullptr) : value(3);
    if (key == "members") {
      json m = json::array();
      for (int n = pick(4); n > 0; --n) m.push_back(entry(true));
      return m;
    }
    return text();
  }
  json entry(bool member) {
    if (pick(8) == 0) return value(1);
    static const std::vector<std::string> keys = {
        "id",          "attempt", "status",      "outcome",
        "error",       "body",    "split_error", "duration_ms",
        "actual_cost", "headers", "observation", "members",
        "batch",       "ok",      "started_ms",  "body_truncated",
        "unknown"};
    json e = json::object();
    for (int n = pick(10); n > 0; --n) {
      const std::string& k = keys[pick(keys.size())];
      if (member && (k == "members" || k == "headers")) continue;
      e[k] = field(k);
    }
    return e;
  }

 private:
  std::mt19937_64 rng_;
};

}  // namespace

TEST_CASE("parse_results reads what a document of the same text holds") {
  // A worker's usual result and a batch result, as the protocol writes them.
  check_agrees(R"({"results":[{"id":42,"attempt":3,"outcome":"success",
    "status":200,"error":"","headers":{"date":"x","content-type":"a/b"},
    "body":"{\"n\":1}","body_truncated":false,"started_ms":1764286000123,
    "duration_ms":12.5,"observation":null}]})");
  check_agrees(R"({"results":[{"batch":17,"outcome":"success","status":200,
    "error":"","headers":{"retry-after":"3"},"observation":{"verdict":"ok",
    "limits":[{"limit":10,"remaining":9}]},"started_ms":1,"duration_ms":41.0,
    "actual_cost":120,"members":[{"id":42,"attempt":3,"ok":true,
    "body":"{\"echo\":1}","body_truncated":false},{"id":43,"attempt":1,
    "ok":false,"body":"{}","error":"x","status":500}, 7]}]})");
  // Entries that are not objects, fields of the wrong type, unknown fields,
  // top-level fields besides "results".
  check_agrees(R"({"v":[1,{"results":2}],"results":[1,"x",null,[],{},
    {"id":"1","attempt":1.5,"status":null,"headers":[],"members":{},
    "observation":7,"x":{"id":5,"results":[]}}],"w":{}})");

  RandomValues random(20261128);
  for (int i = 0; i < 3000; ++i) {
    json body = json::object();
    json results = json::array();
    for (int n = random.pick(5); n > 0; --n)
      results.push_back(random.entry(false));
    body["results"] = results;
    if (random.pick(4) == 0) body["extra"] = random.value(2);
    check_agrees(body.dump());
    check_agrees(body.dump(1));
  }
}

TEST_CASE("parse_results keeps the last of repeated keys, as a document does") {
  check_agrees(R"({"results":[{"id":1,"id":2,"body":"a","body":7,
    "headers":{"b":"1","a":"2","b":"3","retry-after":"5","retry-after":1},
    "status":200,"status":"x","observation":{"a":1},"observation":null}]})");
  check_agrees(R"({"results":[{"id":1}],"results":[{"id":2},{"attempt":3}]})");
  // A later value of the wrong type unsets the field, a container too.
  check_agrees(R"({"results":[{"id":1,"id":[],"batch":2,"batch":{},
    "error":"e","error":{"a":1},"members":[{"id":1,"id":{},"ok":true,
    "ok":[true]}],"duration_ms":1,"duration_ms":[2]}]})");
  check_agrees(R"({"results":[{"headers":{"a":"1"},"headers":{"b":"2"},
    "members":[{"id":1}],"members":[{"id":2,"ok":true,"ok":1}]}]})");
  // Headers come out sorted and compact whatever their order on the wire.
  auto r = parse_results(
      R"({"results":[{"headers":{"z":"1","a":{"x":[1,2.5]},"m":true}}]})");
  REQUIRE(r.ok());
  CHECK((*r)[0].headers_json == R"({"a":{"x":[1,2.5]},"m":true,"z":"1"})");
}

TEST_CASE("parse_results refuses what is not a RESULTS body") {
  auto error_of = [](const std::string& text) {
    auto r = parse_results(text);
    return r.ok() ? std::string("ok") : r.error();
  };
  CHECK(error_of("") == "RESULTS: the body is not valid JSON");
  CHECK(error_of(R"({"results":[{"id":1})") ==
        "RESULTS: the body is not valid JSON");
  CHECK(error_of(R"({"results":[{"id":1}]} x)") ==
        "RESULTS: the body is not valid JSON");
  CHECK(error_of("\"\xff\"") == "RESULTS: the body is not valid JSON");
  CHECK(error_of("[]") == "RESULTS: the body must be a JSON object");
  CHECK(error_of("5") == "RESULTS: the body must be a JSON object");
  CHECK(error_of("{}") == "RESULTS: 'results' must be an array");
  CHECK(error_of(R"({"results":{}})") == "RESULTS: 'results' must be an array");
  CHECK(error_of(R"({"results":[],"results":3})") ==
        "RESULTS: 'results' must be an array");
  CHECK(error_of(R"({"results":[]})") == "ok");
}

TEST_CASE("decode leaves the body of the raw command unparsed") {
  auto f = frames({"PACER1", std::string(1, '\x05'), R"({"results":[]})"});
  Decoded d = decode(f, Command::kResults);
  REQUIRE(d.message);
  CHECK(d.message->body.is_null());
  CHECK(d.raw_body == R"({"results":[]})");
  // Another command is parsed as ever; a missing body is still refused.
  auto g = frames({"PACER1", std::string(1, '\x03'), R"({"a":1})"});
  Decoded e = decode(g, Command::kResults);
  REQUIRE(e.message);
  CHECK(e.message->body == json{{"a", 1}});
  auto h = frames({"PACER1", std::string(1, '\x05')});
  Decoded none = decode(h, Command::kResults);
  REQUIRE(none.error);
  CHECK(none.error->message == "RESULTS: a body is required");
}

// ---- SUBMIT bodies -------------------------------------------------------

namespace {

using pacer::protocol::parse_submit;
using pacer::protocol::submit_from_document;
using pacer::protocol::WireSubmit;

json describe(const WireSubmit& w) {
  json specs = json::array();
  for (const auto& s : w.specs) specs.push_back(s.to_json());
  return {{"req", w.req},
          {"jobs_is_array", w.jobs_is_array},
          {"job_count", w.job_count},
          {"group", w.group ? json(*w.group) : json()},
          {"specs", specs},
          {"invalid", w.invalid ? json(*w.invalid) : json()}};
}

// parse_submit(text) against the reading of a document of the same text.
void check_submit_agrees(const std::string& text, std::size_t max_jobs = 100) {
  auto fast = parse_submit(text, max_jobs);
  REQUIRE_MESSAGE(fast, text);
  const auto slow = submit_from_document(json::parse(text), max_jobs);
  CHECK_MESSAGE(describe(*fast) == describe(slow), text);
}

// A job object: the protocol's fields, mostly of their types, sometimes not,
// and now and then a field the protocol does not know.
json random_job(RandomValues& r) {
  static const std::vector<std::string> keys = {
      "api",       "method",       "path",    "headers", "body",
      "body_text", "priority",     "delay",   "cost",    "key",
      "batch_key", "max_attempts", "timeout", "id",      "unknown"};
  json j = json::object();
  if (r.pick(10)) j["api"] = r.pick(8) ? json("echo") : r.value(1);
  for (int n = r.pick(7); n > 0; --n) {
    const std::string& k = keys[r.pick(keys.size())];
    if (r.pick(6) == 0) {
      j[k] = r.value(2);
    } else if (k == "method") {
      j[k] = r.pick(2) ? "post" : "GE T";
    } else if (k == "path") {
      j[k] = r.pick(3) ? "/v1/" + r.text() : "//x";
    } else if (k == "headers") {
      json h = json::object();
      for (int m = r.pick(4); m > 0; --m)
        h[r.pick(4) ? "X-" + std::to_string(r.pick(100))
                    : (r.pick(2) ? "Host" : r.text())] =
            r.pick(5) ? json(r.text()) : r.value(1);
      j[k] = h;
    } else if (k == "body") {
      j[k] = r.value(3);
    } else if (k == "priority" || k == "cost" || k == "max_attempts") {
      j[k] = static_cast<std::int64_t>(r.pick(3000)) - 5;
    } else if (k == "delay" || k == "timeout") {
      j[k] = r.pick(2) ? json(std::to_string(r.pick(90)) + "s")
                       : json(r.pick(100000));
    } else {
      j[k] = r.text();
    }
  }
  return j;
}

}  // namespace

TEST_CASE("parse_submit reads the jobs a document of the same text holds") {
  check_submit_agrees(R"({"req":"c-1","group":"g-1","jobs":[
    {"api":"echo","method":"POST","path":"/v1/echo","body":{"n":1},
     "key":"g-1:1"},
    {"api":"echo","body":{"z":[1,2.5,-0.0,1e100,"\u0001\u00e9"],"a":null},
     "headers":{"X-B":"2","X-A":"1"},"priority":-3,"delay":"250ms",
     "cost":7,"batch_key":"k","max_attempts":3,"timeout":1500},
    {"api":"echo","body_text":"raw \"text\""}]})");
  // The first invalid job stops the reading; the ones before it are kept.
  check_submit_agrees(R"({"jobs":[{"api":"echo"},{"api":"echo","x":1},
    {"api":"echo"}]})");
  // Not an array, empty, too many to read, a group that is not a string.
  check_submit_agrees(R"({"jobs":{},"group":7})");
  check_submit_agrees(R"({"jobs":[]})");
  check_submit_agrees(R"({"jobs":[{"api":"echo"},{"api":"echo"}]})", 1);
  check_submit_agrees(R"({"req":{"a":[1]}})");

  RandomValues random(20261129);
  for (int i = 0; i < 3000; ++i) {
    json body = json::object();
    json jobs = json::array();
    for (int n = random.pick(6); n > 0; --n) jobs.push_back(random_job(random));
    body["jobs"] = jobs;
    if (random.pick(3)) body["req"] = random.value(1);
    if (random.pick(3))
      body["group"] = random.pick(4) ? json(random.text()) : random.value(1);
    check_submit_agrees(body.dump());
    check_submit_agrees(body.dump(2));
  }
}

TEST_CASE("parse_submit keeps the last of repeated keys and sorts the body") {
  check_submit_agrees(R"({"jobs":[{"api":"x","api":"echo","cost":0,"cost":2,
    "body":{"b":1,"a":2,"b":3},"headers":{"X-A":7,"X-A":"ok"}}],
    "jobs":[{"api":"echo","path":"/a","path":"/b"}],"group":"a","group":"b"})");
  // The stored body is the document's dump: keys sorted, repeats dropped.
  auto w = parse_submit(
      R"({"jobs":[{"api":"echo","body":{"b":[{"d":1,"c":2}],"a":"\t","b":[]}}]})",
      10);
  REQUIRE(w);
  REQUIRE(w->specs.size() == 1);
  CHECK(w->specs[0].body == std::string(R"({"a":"\t","b":[]})"));
}

TEST_CASE("parse_submit leaves to the document what simdjson does not take") {
  // Not JSON, not an object, and valid JSON with an integer beyond 64 bits.
  CHECK_FALSE(parse_submit("", 10));
  CHECK_FALSE(parse_submit(R"({"jobs":[)", 10));
  CHECK_FALSE(parse_submit("[]", 10));
  const std::string big =
      R"({"jobs":[{"api":"echo","body":{"n":123456789012345678901234567890}}]})";
  CHECK_FALSE(parse_submit(big, 10));
  const auto doc = submit_from_document(json::parse(big), 10);
  REQUIRE(doc.specs.size() == 1);
  CHECK(doc.specs[0].body == std::string(R"({"n":1.2345678901234568e+29})"));
}
