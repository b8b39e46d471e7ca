// pacer-bench-worker: a stand-in for pacer-worker that answers every job at
// once with a canned 200, without any HTTP. It speaks the real protocol over
// the real socket, so bench/broker_ceiling.sh measures the broker alone:
// its jobs/s and CPU per job with the HTTP leg taken out. Not for production.
//   pacer-bench-worker ENDPOINT [CAPACITY]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <zmq.hpp>

#include "common/protocol.h"

namespace {

using pacer::protocol::Command;
using pacer::protocol::Message;
using Clock = std::chrono::steady_clock;

std::int64_t epoch_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: pacer-bench-worker ENDPOINT [CAPACITY]\n");
    return 2;
  }
  const int capacity = argc > 2 ? std::atoi(argv[2]) : 64;
  zmq::context_t ctx(1);
  zmq::socket_t sock(ctx, zmq::socket_type::dealer);
  sock.set(zmq::sockopt::linger, 0);
  sock.set(zmq::sockopt::sndhwm, 0);
  sock.set(zmq::sockopt::rcvhwm, 0);
  sock.connect(argv[1]);
  auto send = [&](const Message& m) {
    if (!pacer::protocol::send(sock, m)) {
      std::fprintf(stderr, "pacer-bench-worker: send failed\n");
      std::exit(1);
    }
  };
  send(Message{Command::kReady,
               {{"worker", "bench"},
                {"capacity", capacity},
                {"apis", nlohmann::json::array()}}});
  auto last_send = Clock::now();
  long answered = 0;
  while (true) {
    zmq::pollitem_t item{sock.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, std::chrono::milliseconds(200));
    nlohmann::json results = nlohmann::json::array();
    while (auto frames = pacer::protocol::recv_frames(sock, false, nullptr)) {
      auto d = pacer::protocol::decode(*frames);
      if (!d.message) continue;
      if (d.message->command == Command::kDisconnect) {
        std::printf("answered %ld\n", answered);
        return 0;
      }
      if (d.message->command != Command::kJobs) continue;
      for (const auto& j : d.message->body["jobs"]) {
        // What pacer-worker sends for a plain 200 without rate-limit headers.
        results.push_back({{"id", j["id"]},
                           {"attempt", j["attempt"]},
                           {"outcome", "success"},
                           {"status", 200},
                           {"error", ""},
                           {"headers", nlohmann::json::object()},
                           {"started_ms", epoch_ms()},
                           {"duration_ms", 0.1},
                           {"observation", nullptr},
                           {"body", "{\"ok\":true}"},
                           {"body_truncated", false}});
        ++answered;
      }
    }
    if (!results.empty()) {
      send(Message{Command::kResults, {{"results", std::move(results)}}});
      last_send = Clock::now();
    } else if (Clock::now() - last_send > std::chrono::milliseconds(300)) {
      send(Message{Command::kHeartbeat, nullptr});
      last_send = Clock::now();
    }
  }
}
