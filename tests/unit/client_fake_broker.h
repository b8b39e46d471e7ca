// FakeBroker: a stand-in for pacer-broker in the client's tests. A ZeroMQ
// ROUTER bound on 127.0.0.1 (a port the OS picks), answered from its own
// thread by a handler that maps each decoded request to the raw messages to
// send back (so a test can send stale, foreign or other-version replies).
// The thread owns the ROUTER; `received()` is safe from any thread. The
// destructor stops the thread through an inproc socket and joins it.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "common/protocol.h"

namespace pacer::testing {

using Frames = std::vector<std::string>;  // one message, without routing id

// A REPLY to `request` with `body` (req echoed, "ok": true).
inline Frames reply_to(const protocol::Message& request, nlohmann::json body) {
  body["req"] = request.body.value("req", std::string());
  body["ok"] = true;
  return {std::string(protocol::kHeader), std::string(1, '\x20'), body.dump()};
}

// An ERROR answering `request`.
inline Frames error_to(const protocol::Message& request,
                       const std::string& code, const std::string& message,
                       nlohmann::json extra = {}) {
  nlohmann::json body = {{"code", code},
                         {"message", message},
                         {"req", request.body.value("req", std::string())}};
  if (extra.is_object()) body.update(extra);
  return {std::string(protocol::kHeader), std::string(1, '\x7F'), body.dump()};
}

class FakeBroker {
 public:
  using Handler = std::function<std::vector<Frames>(const protocol::Message&)>;

  explicit FakeBroker(Handler handler)
      : handler_(std::move(handler)),
        router_(ctx_, zmq::socket_type::router),
        stop_tx_(ctx_, zmq::socket_type::pair),
        stop_rx_(ctx_, zmq::socket_type::pair) {
    router_.set(zmq::sockopt::linger, 0);
    router_.bind("tcp://127.0.0.1:*");
    endpoint_ = router_.get(zmq::sockopt::last_endpoint);
    std::string inproc = "inproc://fake-broker-stop-" +
                         std::to_string(reinterpret_cast<std::uintptr_t>(this));
    stop_rx_.bind(inproc);
    stop_tx_.connect(inproc);
    thread_ = std::thread([this] { loop(); });
  }

  ~FakeBroker() {
    stop_tx_.send(zmq::str_buffer("stop"), zmq::send_flags::none);
    thread_.join();
  }

  FakeBroker(const FakeBroker&) = delete;
  FakeBroker& operator=(const FakeBroker&) = delete;

  const std::string& endpoint() const { return endpoint_; }

  std::vector<protocol::Message> received() const {
    std::lock_guard<std::mutex> lock(mu_);
    return received_;
  }
  std::size_t count(protocol::Command c) const {
    std::lock_guard<std::mutex> lock(mu_);
    std::size_t n = 0;
    for (const auto& m : received_) n += m.command == c ? 1 : 0;
    return n;
  }

 private:
  void loop() {
    while (true) {
      zmq::pollitem_t items[] = {{router_.handle(), 0, ZMQ_POLLIN, 0},
                                 {stop_rx_.handle(), 0, ZMQ_POLLIN, 0}};
      zmq::poll(items, 2, std::chrono::milliseconds(-1));
      if (items[1].revents & ZMQ_POLLIN) return;
      if (!(items[0].revents & ZMQ_POLLIN)) continue;
      std::string peer;
      while (auto frames = protocol::recv_frames(router_, true, &peer)) {
        auto d = protocol::decode(*frames);
        if (!d.message) continue;
        {
          std::lock_guard<std::mutex> lock(mu_);
          received_.push_back(*d.message);
        }
        for (const auto& out : handler_(*d.message)) {
          router_.send(zmq::buffer(peer), zmq::send_flags::sndmore);
          for (std::size_t i = 0; i < out.size(); ++i)
            router_.send(zmq::buffer(out[i]), i + 1 == out.size()
                                                  ? zmq::send_flags::none
                                                  : zmq::send_flags::sndmore);
        }
      }
    }
  }

  Handler handler_;
  zmq::context_t ctx_;
  zmq::socket_t router_;
  zmq::socket_t stop_tx_;
  zmq::socket_t stop_rx_;
  std::string endpoint_;
  mutable std::mutex mu_;
  std::vector<protocol::Message> received_;
  std::thread thread_;
};

}  // namespace pacer::testing
