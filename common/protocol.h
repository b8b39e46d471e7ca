// The wire protocol's constants, encoder and decoder (schema/wire_protocol.md
// is the contract). This is the only place that knows how frames are laid out.
// Values and free functions; thread-safe. cppzmq exceptions do not escape:
// send/recv failures come back as values.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>
#include <zmq.hpp>

#include "common/result.h"

namespace pacer::protocol {

inline constexpr int kVersion = 1;
inline constexpr std::string_view kHeader = "PACER1";
inline constexpr std::int64_t kMaxMessageBytes = 64LL << 20;

enum class Command : std::uint8_t {
  // Worker protocol.
  kReady = 0x01,
  kWelcome = 0x02,
  kHeartbeat = 0x03,
  kJobs = 0x04,
  kResults = 0x05,
  kDisconnect = 0x06,
  // Client protocol.
  kSubmit = 0x10,
  kStatus = 0x11,
  kResult = 0x12,
  kList = 0x13,
  kCancel = 0x14,
  kStats = 0x15,
  kProgress = 0x16,
  kApis = 0x17,
  kDeadList = 0x18,
  kDeadReplay = 0x19,
  kReply = 0x20,
  // Both.
  kError = 0x7F,
};

std::string_view to_string(Command c);
bool is_known(std::uint8_t byte);

struct Message {
  Command command{};
  nlohmann::json body;  // null when the message has no body
};

// What went wrong decoding a message. `version` is set when the peer speaks
// another protocol version (so the reply can say which).
struct DecodeError {
  std::string code;  // "version", "malformed" or "foreign"
  std::string message;
  std::optional<int> peer_version;
};

// Decodes frames (without any routing-id frame).
struct Decoded {
  std::optional<Message> message;
  std::optional<DecodeError> error;
  // With decode(frames, raw) for a `raw` message: its body frame, unparsed
  // (the message's body is then null). Views `frames`.
  std::string_view raw_body;
};
Decoded decode(const std::vector<zmq::message_t>& frames);
// The same, except that the body of a message whose command is `raw` is
// left as text for a reader of its own (common/results_body.h); that it is
// there is still checked.
Decoded decode(const std::vector<zmq::message_t>& frames, Command raw);

// Encodes header, command and (if not null) the body as JSON.
std::vector<zmq::message_t> encode(const Message& m);

// Helpers that wrap cppzmq so callers never see its exceptions.
// `routing_id` is prepended for ROUTER sockets. Returns false when the send
// would block or the peer is unroutable.
bool send(zmq::socket_t& socket, const Message& m,
          const std::string* routing_id = nullptr, bool dontwait = true);

// The same for a body already written as JSON text (a JSON object; see
// common/json_text.h), which the receiver decodes like any other.
bool send_text(zmq::socket_t& socket, Command command, const std::string& body,
               const std::string* routing_id = nullptr, bool dontwait = true);

// Receives one whole multipart message without blocking; empty when none.
// With `with_routing_id`, the first frame is split off into `routing_id`.
std::optional<std::vector<zmq::message_t>> recv_frames(zmq::socket_t& socket,
                                                       bool with_routing_id,
                                                       std::string* routing_id);

// The ERROR body: {"code","message","req"?}.
Message make_error(std::string_view code, std::string_view message,
                   const nlohmann::json& req = nullptr);

}  // namespace pacer::protocol
