#include "broker/zap.h"

#include <zmq.h>

#include <vector>

#include "common/log.h"
#include "common/security.h"

namespace pacer {

ZapHandler::ZapHandler(std::map<std::string, std::string> folders)
    : folders_(std::move(folders)) {}

Result<std::unique_ptr<ZapHandler>> ZapHandler::start(
    zmq::context_t& ctx, std::map<std::string, std::string> folders) {
  std::unique_ptr<ZapHandler> z(new ZapHandler(std::move(folders)));
  for (const auto& [domain, folder] : z->folders_) {
    auto keys = read_key_folder(folder);
    if (!keys) return Error{keys.error()};
    z->keys_[domain] = std::move(*keys);
  }
  // Bound here, before any CURVE socket binds: libzmq refuses handshakes
  // with no handler listening.
  zmq::socket_t socket(ctx, zmq::socket_type::rep);
  socket.set(zmq::sockopt::linger, 0);
  socket.bind("inproc://zeromq.zap.01");
  z->thread_ = std::thread(&ZapHandler::serve, z.get(), std::move(socket));
  return z;
}

ZapHandler::~ZapHandler() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

Result<Ok> ZapHandler::reload() {
  std::optional<Error> first;
  for (const auto& [domain, folder] : folders_) {
    auto keys = read_key_folder(folder);
    if (!keys) {
      if (!first) first = Error{keys.error()};
      continue;
    }
    std::lock_guard lock(mu_);
    keys_[domain] = std::move(*keys);
  }
  {
    std::lock_guard lock(mu_);
    refused_logged_.clear();
  }
  if (first) return *first;
  return Ok{};
}

std::map<std::string, std::size_t> ZapHandler::sizes() const {
  std::lock_guard lock(mu_);
  std::map<std::string, std::size_t> out;
  for (const auto& [d, k] : keys_) out[d] = k.size();
  return out;
}

bool ZapHandler::allowed(const std::string& domain,
                         const std::string& key_z85) {
  std::lock_guard lock(mu_);
  auto it = keys_.find(domain);
  if (it != keys_.end() && it->second.count(key_z85)) return true;
  if (refused_logged_.size() < 10'000 &&
      refused_logged_.emplace(domain, key_z85).second)
    log::warn("peer_refused",
              {{"endpoint", domain},
               {"key", key_fingerprint(key_z85)},
               {"reason", it == keys_.end()
                              ? "no allowlist for this endpoint"
                              : "the key is not in the endpoint's allowlist"},
               {"detail", "logged once per key until the keys are reloaded"}});
  return false;
}

void ZapHandler::serve(zmq::socket_t socket) {
  while (!stop_) {
    zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
    try {
      if (zmq::poll(&item, 1, std::chrono::milliseconds(100)) == 0) continue;
    } catch (const zmq::error_t&) {
      break;  // the context is going away
    }
    std::vector<zmq::message_t> frames;
    try {
      while (true) {
        zmq::message_t m;
        if (!socket.recv(m, zmq::recv_flags::dontwait)) break;
        const bool more = m.more();
        frames.push_back(std::move(m));
        if (!more) break;
      }
    } catch (const zmq::error_t&) {
      break;
    }
    // version, request id, domain, address, identity, mechanism, key.
    std::string status = "400", text = "refused";
    std::string request_id = frames.size() > 1 ? frames[1].to_string() : "";
    if (frames.size() >= 7 && frames[0].to_string_view() == "1.0" &&
        frames[5].to_string_view() == "CURVE" && frames[6].size() == 32) {
      char z85[41];
      zmq_z85_encode(z85, static_cast<const std::uint8_t*>(frames[6].data()),
                     32);
      if (allowed(frames[2].to_string(), z85)) {
        status = "200";
        text = "OK";
      }
    }
    try {
      socket.send(zmq::buffer(std::string_view("1.0")), zmq::send_flags::sndmore);
      socket.send(zmq::buffer(request_id), zmq::send_flags::sndmore);
      socket.send(zmq::buffer(status), zmq::send_flags::sndmore);
      socket.send(zmq::buffer(text), zmq::send_flags::sndmore);
      socket.send(zmq::buffer(std::string_view("")), zmq::send_flags::sndmore);
      socket.send(zmq::buffer(std::string_view("")), zmq::send_flags::none);
    } catch (const zmq::error_t&) {
      break;
    }
  }
}

}  // namespace pacer
