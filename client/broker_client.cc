#include "client/broker_client.h"

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <random>

#include "common/units.h"

namespace pacer::client {
namespace {

using Clock = std::chrono::steady_clock;

std::string random_hex(int digits) {
  std::random_device rd;
  std::mt19937_64 rng((static_cast<std::uint64_t>(rd()) << 32) ^ rd());
  std::string out;
  static constexpr char kHex[] = "0123456789abcdef";
  for (int i = 0; i < digits; ++i) out += kHex[rng() & 0xF];
  return out;
}

std::string version_message(const std::string& endpoint,
                            const protocol::DecodeError& e) {
  std::string theirs = e.peer_version
                           ? "PACER" + std::to_string(*e.peer_version)
                           : std::string("another version");
  return "protocol version mismatch: the broker at " + endpoint + " speaks " +
         theirs + ", this pacer speaks " + std::string(protocol::kHeader) +
         " (use a pacer built for that broker)";
}

}  // namespace

std::string Reply::code() const {
  if (status != Status::kRefused || !body.is_object()) return "";
  auto it = body.find("code");
  return it != body.end() && it->is_string() ? it->get<std::string>() : "";
}

std::string describe_timeout(Millis ms) {
  if (ms > 0 && ms % 1000 == 0 && ms < 60'000)
    return std::to_string(ms / 1000) + "s";
  return format_duration(ms);
}

BrokerClient::BrokerClient(std::string endpoint, Millis timeout_ms)
    : endpoint_(std::move(endpoint)),
      timeout_ms_(timeout_ms),
      req_prefix_(random_hex(8)),
      context_(std::make_unique<zmq::context_t>(1)) {}

Result<BrokerClient> BrokerClient::connect(const std::string& endpoint,
                                           Millis timeout_ms,
                                           std::optional<CurveClient> curve) {
  if (endpoint.empty()) return Error{"no broker endpoint given"};
  try {
    BrokerClient c(endpoint, timeout_ms);
    c.curve_ = std::move(curve);
    c.open_socket();
    return Result<BrokerClient>(std::move(c));
  } catch (const zmq::error_t& e) {
    return Error{"invalid broker endpoint '" + endpoint + "': " + e.what()};
  }
}

void BrokerClient::open_socket() {
  socket_.reset();  // LINGER 0: whatever the old socket still queued is dropped
  auto s = std::make_unique<zmq::socket_t>(*context_, zmq::socket_type::dealer);
  s->set(zmq::sockopt::linger, 0);
  // A send never blocks longer than a whole request may take.
  s->set(zmq::sockopt::sndtimeo,
         static_cast<int>(std::min<Millis>(timeout_ms_, 1 << 30)));
  s->set(zmq::sockopt::maxmsgsize, protocol::kMaxMessageBytes);
  if (curve_) apply_curve_client(*s, *curve_);
  s->connect(endpoint_);
  socket_ = std::move(s);
}

void BrokerClient::reopen() noexcept {
  try {
    open_socket();
  } catch (const zmq::error_t&) {
    socket_.reset();  // the next call() tries again and reports why
  }
}

std::string BrokerClient::next_req() {
  return req_prefix_ + "-" + std::to_string(++counter_);
}

Reply BrokerClient::call(protocol::Command command, nlohmann::json body) {
  if (!body.is_object()) body = nlohmann::json::object();
  const std::string req = next_req();
  body["req"] = req;
  return exchange(
      command,
      body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), req);
}

Reply BrokerClient::call_text(protocol::Command command,
                              std::string_view object) {
  const std::string req = next_req();
  std::string text = "{\"req\":" + nlohmann::json(req).dump();
  // `object` is "{...}": its members follow the req, with a comma unless none.
  std::string_view rest = object.substr(1);
  const auto first = rest.find_first_not_of(" \t\r\n");
  if (first != std::string_view::npos && rest[first] != '}') text += ',';
  text += rest;
  return exchange(command, text, req);
}

Reply BrokerClient::exchange(protocol::Command command, const std::string& text,
                             const std::string& req) {
  Reply r;
  try {
    if (!socket_) open_socket();
  } catch (const zmq::error_t& e) {
    r.error = "cannot open a socket to " + endpoint_ + ": " + e.what();
    return r;
  }
  if (!protocol::send_text(*socket_, command, text, nullptr,
                           /*dontwait=*/false)) {
    r.status = Reply::Status::kTimeout;
    r.error = "broker not reachable at " + endpoint_ +
              " (could not send within " + describe_timeout(timeout_ms_) + ")";
    reopen();
    return r;
  }

  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms_);
  std::string ignored;  // the last undecodable reply, for the timeout message
  while (true) {
    auto left =
        std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) break;
    zmq::pollitem_t items[] = {{socket_->handle(), 0, ZMQ_POLLIN, 0}};
    try {
      zmq::poll(items, 1, left);
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      r.error = std::string("polling the broker socket failed: ") + e.what();
      reopen();
      return r;
    }
    if (!(items[0].revents & ZMQ_POLLIN)) continue;
    while (auto frames = protocol::recv_frames(*socket_, false, nullptr)) {
      auto d = protocol::decode(*frames);
      if (d.error) {
        if (d.error->code == "version") {
          r.status = Reply::Status::kVersion;
          r.error = version_message(endpoint_, *d.error);
          reopen();
          return r;
        }
        ignored = d.error->message;
        continue;
      }
      auto& m = *d.message;
      if (!m.body.is_object()) continue;
      // A version refusal ends every exchange, whichever request it answers.
      if (m.command == protocol::Command::kError &&
          m.body.value("code", std::string()) == "version") {
        r.status = Reply::Status::kVersion;
        r.body = std::move(m.body);
        r.error = "protocol version mismatch: the broker at " + endpoint_ +
                  " refused this pacer (" + std::string(protocol::kHeader) +
                  "): " + r.body.value("message", std::string("no details"));
        reopen();
        return r;
      }
      auto it = m.body.find("req");
      if (it == m.body.end() || !it->is_string() || *it != req)
        continue;  // stale
      if (m.command == protocol::Command::kReply) {
        r.status = Reply::Status::kOk;
        r.body = std::move(m.body);
        return r;
      }
      if (m.command == protocol::Command::kError) {
        r.status = Reply::Status::kRefused;
        r.body = std::move(m.body);
        auto msg = r.body.find("message");
        r.error = msg != r.body.end() && msg->is_string() && !msg->empty()
                      ? msg->get<std::string>()
                      : "the broker refused the request (" + r.code() + ")";
        return r;
      }
      // Any other command is not an answer to a client request; keep waiting.
    }
  }
  r.status = Reply::Status::kTimeout;
  r.error = "broker not reachable at " + endpoint_ + " (no reply within " +
            describe_timeout(timeout_ms_) + ")";
  if (!ignored.empty()) r.error += "; ignored an unreadable reply: " + ignored;
  reopen();
  return r;
}

Result<nlohmann::json> BrokerClient::request(protocol::Command command,
                                             nlohmann::json body) {
  Reply r = call(command, std::move(body));
  if (!r.ok()) return Error{r.error};
  return std::move(r.body);
}

void BrokerClient::idle(Millis ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(ms);
  while (socket_) {
    auto left =
        std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return;
    zmq::pollitem_t items[] = {{socket_->handle(), 0, ZMQ_POLLIN, 0}};
    try {
      zmq::poll(items, 1, left);
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      return;
    }
    if (items[0].revents & ZMQ_POLLIN)
      while (protocol::recv_frames(*socket_, false, nullptr)) {
      }
  }
}

}  // namespace pacer::client
