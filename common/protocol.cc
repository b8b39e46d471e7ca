#include "common/protocol.h"

#include <cctype>

#include "common/json_limits.h"

namespace pacer::protocol {

std::string_view to_string(Command c) {
  switch (c) {
    case Command::kReady:
      return "READY";
    case Command::kWelcome:
      return "WELCOME";
    case Command::kHeartbeat:
      return "HEARTBEAT";
    case Command::kJobs:
      return "JOBS";
    case Command::kResults:
      return "RESULTS";
    case Command::kDisconnect:
      return "DISCONNECT";
    case Command::kSubmit:
      return "SUBMIT";
    case Command::kStatus:
      return "STATUS";
    case Command::kResult:
      return "RESULT";
    case Command::kList:
      return "LIST";
    case Command::kCancel:
      return "CANCEL";
    case Command::kStats:
      return "STATS";
    case Command::kProgress:
      return "PROGRESS";
    case Command::kApis:
      return "APIS";
    case Command::kDeadList:
      return "DEAD_LIST";
    case Command::kDeadReplay:
      return "DEAD_REPLAY";
    case Command::kReply:
      return "REPLY";
    case Command::kError:
      return "ERROR";
  }
  return "?";
}

bool is_known(std::uint8_t b) {
  return (b >= 0x01 && b <= 0x06) || (b >= 0x10 && b <= 0x19) || b == 0x20 ||
         b == 0x7F;
}

namespace {
bool body_optional(Command c) {
  return c == Command::kHeartbeat || c == Command::kDisconnect;
}

Decoded decode_frames(const std::vector<zmq::message_t>& frames,
                      std::optional<Command> raw) {
  Decoded d;
  auto fail = [&](std::string code, std::string msg) {
    d.error = DecodeError{std::move(code), std::move(msg), std::nullopt};
    return d;
  };
  if (frames.empty()) return fail("malformed", "empty message");
  std::string_view header(static_cast<const char*>(frames[0].data()),
                          frames[0].size());
  if (header.substr(0, 5) != "PACER")
    return fail("foreign", "not a pacer message (bad protocol header)");
  // Starts like ours but is not PACER<digit>: malformed, not another version.
  if (header.size() != 6 ||
      !std::isdigit(static_cast<unsigned char>(header[5])))
    return fail("malformed", "bad protocol header (expected PACER<digit>)");
  if (header != kHeader) {
    d.error = DecodeError{"version",
                          "protocol version mismatch: this peer speaks " +
                              std::string(kHeader) + ", the message says " +
                              std::string(header),
                          header[5] - '0'};
    return d;
  }
  if (frames.size() < 2 || frames.size() > 3)
    return fail("malformed",
                "expected 2 or 3 frames, got " + std::to_string(frames.size()));
  if (frames[1].size() != 1)
    return fail("malformed", "the command frame must be exactly one byte");
  auto byte = *static_cast<const std::uint8_t*>(frames[1].data());
  if (!is_known(byte)) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "0x%02X", byte);
    return fail("malformed", std::string("unknown command ") + buf);
  }
  Message m;
  m.command = static_cast<Command>(byte);
  if (frames.size() == 3 && frames[2].size() > 0 &&
      json_depth(std::string_view(static_cast<const char*>(frames[2].data()),
                                  frames[2].size())) > kMaxJsonDepth)
    return fail("malformed",
                std::string(to_string(m.command)) +
                    ": the body nests deeper than " +
                    std::to_string(kMaxJsonDepth) + " levels");
  if (frames.size() == 3 && frames[2].size() > 0 && m.command == raw) {
    d.raw_body = std::string_view(static_cast<const char*>(frames[2].data()),
                                  frames[2].size());
  } else if (frames.size() == 3 && frames[2].size() > 0) {
    const char* p = static_cast<const char*>(frames[2].data());
    m.body = nlohmann::json::parse(p, p + frames[2].size(), nullptr, false);
    if (m.body.is_discarded())
      return fail("malformed", std::string(to_string(m.command)) +
                                   ": the body is not valid JSON");
    if (!m.body.is_object())
      return fail("malformed", std::string(to_string(m.command)) +
                                   ": the body must be a JSON object");
  } else if (!body_optional(m.command)) {
    return fail("malformed",
                std::string(to_string(m.command)) + ": a body is required");
  }
  d.message = std::move(m);
  return d;
}

}  // namespace

Decoded decode(const std::vector<zmq::message_t>& frames) {
  return decode_frames(frames, std::nullopt);
}

Decoded decode(const std::vector<zmq::message_t>& frames, Command raw) {
  return decode_frames(frames, raw);
}

namespace {

std::vector<zmq::message_t> frames_of(Command c, const std::string* body) {
  std::vector<zmq::message_t> frames;
  frames.emplace_back(kHeader.data(), kHeader.size());
  auto byte = static_cast<std::uint8_t>(c);
  frames.emplace_back(&byte, 1);
  if (body) frames.emplace_back(body->data(), body->size());
  return frames;
}

bool send_frames(zmq::socket_t& socket, std::vector<zmq::message_t> frames,
                 const std::string* routing_id, bool dontwait) {
  const auto last_flags =
      dontwait ? zmq::send_flags::dontwait : zmq::send_flags::none;
  const auto more = last_flags | zmq::send_flags::sndmore;
  try {
    if (routing_id) {
      zmq::message_t id(routing_id->data(), routing_id->size());
      if (!socket.send(id, more)) return false;
    }
    for (std::size_t i = 0; i < frames.size(); ++i) {
      bool last = i + 1 == frames.size();
      // Once the first frame is queued the rest of the message always goes.
      auto flags = last ? zmq::send_flags::none : zmq::send_flags::sndmore;
      if (i == 0 && !routing_id) flags = last ? last_flags : more;
      if (!socket.send(frames[i], flags)) return false;
    }
  } catch (const zmq::error_t&) {
    return false;  // EHOSTUNREACH with ROUTER_MANDATORY, or a closed context
  }
  return true;
}

}  // namespace

std::vector<zmq::message_t> encode(const Message& m) {
  if (m.body.is_null()) return frames_of(m.command, nullptr);
  std::string s =
      m.body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return frames_of(m.command, &s);
}

bool send(zmq::socket_t& socket, const Message& m,
          const std::string* routing_id, bool dontwait) {
  return send_frames(socket, encode(m), routing_id, dontwait);
}

bool send_text(zmq::socket_t& socket, Command command, const std::string& body,
               const std::string* routing_id, bool dontwait) {
  return send_frames(socket, frames_of(command, &body), routing_id, dontwait);
}

std::optional<std::vector<zmq::message_t>> recv_frames(
    zmq::socket_t& socket, bool with_routing_id, std::string* routing_id) {
  std::vector<zmq::message_t> frames;
  try {
    zmq::message_t first;
    if (!socket.recv(first, zmq::recv_flags::dontwait)) return std::nullopt;
    bool more = first.more();
    if (with_routing_id) {
      if (routing_id) routing_id->assign(first.data<char>(), first.size());
    } else {
      frames.push_back(std::move(first));
    }
    while (more) {
      zmq::message_t part;
      if (!socket.recv(part, zmq::recv_flags::none)) break;
      more = part.more();
      if (frames.size() < 8) frames.push_back(std::move(part));
    }
  } catch (const zmq::error_t&) {
    return std::nullopt;
  }
  return frames;
}

Message make_error(std::string_view code, std::string_view message,
                   const nlohmann::json& req) {
  Message m{Command::kError,
            {{"code", std::string(code)}, {"message", std::string(message)}}};
  if (!req.is_null()) m.body["req"] = req;
  return m;
}

}  // namespace pacer::protocol
