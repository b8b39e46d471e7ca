// BrokerClient: the command line's one connection to the broker, a ZeroMQ
// DEALER on the client endpoint, and its request/reply exchange in the Lazy
// Pirate style of the ZeroMQ guide: every request carries a fresh `req` id,
// replies that carry another id are stale and dropped, and after a timeout the
// socket is replaced so neither a late reply nor a request still queued for an
// absent broker leaks into the next exchange.
//
// Nothing is resent automatically: only a SUBMIT whose jobs all carry
// idempotency keys is safe to repeat, and that is the caller's decision.
// Owns its ZeroMQ context and socket; movable, not copyable, not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <zmq.hpp>

#include "common/security.h"
#include "common/clock.h"
#include "common/protocol.h"
#include "common/result.h"

namespace pacer::client {

// How one request ended.
struct Reply {
  enum class Status {
    kOk,       // REPLY: `body` is its body
    kRefused,  // ERROR with our req: `body` is the ERROR body {code, message,
               // ...}
    kTimeout,  // no matching reply before the deadline
    kVersion,  // the broker speaks another protocol version
    kFailed,   // the request could not be sent
  };
  Status status = Status::kFailed;
  nlohmann::json body;
  std::string error;  // one line for the user when status != kOk

  bool ok() const { return status == Status::kOk; }
  // The ERROR code ("not_found", "invalid", ...) when refused, else "".
  std::string code() const;
};

class BrokerClient {
 public:
  // Connects (ZeroMQ connects lazily: this succeeds without a broker).
  // Fails only for an endpoint ZeroMQ cannot parse.
  // With `curve`, the broker must prove the pinned key (docs/operations.md,
  // "A fleet across hosts").
  static Result<BrokerClient> connect(const std::string& endpoint,
                                      Millis timeout_ms,
                                      std::optional<CurveClient> curve = {});

  BrokerClient(BrokerClient&&) noexcept = default;
  BrokerClient& operator=(BrokerClient&&) noexcept = default;
  BrokerClient(const BrokerClient&) = delete;
  BrokerClient& operator=(const BrokerClient&) = delete;
  ~BrokerClient() = default;

  // Sends `command` with `body` plus a fresh "req" and waits up to the
  // timeout for the REPLY or ERROR that echoes it.
  Reply call(protocol::Command command, nlohmann::json body);
  // The same for a body already written as JSON text: `object` must be one
  // JSON object, "{...}" with nothing around it (the "req" goes in first).
  Reply call_text(protocol::Command command, std::string_view object);

  // call() reduced to the reply body or one error line: "broker not
  // reachable at ENDPOINT (no reply within 10s)", the broker's ERROR message,
  // or a protocol version mismatch.
  Result<nlohmann::json> request(protocol::Command command,
                                 nlohmann::json body);

  // Waits `ms` on the socket (the CLI's timer: polling PROGRESS waits here,
  // never in a sleep), dropping whatever stale replies arrive meanwhile.
  void idle(Millis ms);

  const std::string& endpoint() const { return endpoint_; }
  Millis timeout_ms() const { return timeout_ms_; }

 private:
  BrokerClient(std::string endpoint, Millis timeout_ms);
  void open_socket();      // throws zmq::error_t for a bad endpoint
  void reopen() noexcept;  // open_socket(), leaving no socket on failure
  std::string next_req();
  // Sends `text` (a whole body, "req" included) and waits for its answer.
  Reply exchange(protocol::Command command, const std::string& text,
                 const std::string& req);

  std::string endpoint_;
  Millis timeout_ms_;
  std::optional<CurveClient> curve_;
  std::string req_prefix_;
  std::uint64_t counter_ = 0;
  // The context outlives the socket (members are destroyed in reverse order).
  std::unique_ptr<zmq::context_t> context_;
  std::unique_ptr<zmq::socket_t> socket_;
};

// "10s", "250ms", "1.5s": a timeout as people write it.
std::string describe_timeout(Millis ms);

}  // namespace pacer::client
