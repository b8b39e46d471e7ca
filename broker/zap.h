// ZapHandler: the broker's ZeroMQ authentication (ZAP, RFC 27) for CURVE.
// Each endpoint has a ZAP domain ("workers", "clients") and an allowlist of
// public keys, read from a folder of *.public files; a peer whose key is
// not in its endpoint's list fails the handshake and gets nothing. Each
// refused key is logged once (event "peer_refused", with its fingerprint).
//
// It answers on its own thread (inproc://zeromq.zap.01 in the broker's
// context), so handshakes complete while the broker's loop is busy.
// reload() re-reads the folders (SIGHUP); a folder that cannot be read
// keeps its previous list and the error is returned.
#pragma once

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <zmq.hpp>

#include "common/result.h"

namespace pacer {

class ZapHandler {
 public:
  static constexpr const char* kWorkers = "workers";
  static constexpr const char* kClients = "clients";

  // `folders`: domain -> folder of allowed public keys. Reads them first:
  // an error is returned before any thread starts.
  static Result<std::unique_ptr<ZapHandler>> start(
      zmq::context_t& ctx, std::map<std::string, std::string> folders);
  ~ZapHandler();
  ZapHandler(const ZapHandler&) = delete;
  ZapHandler& operator=(const ZapHandler&) = delete;

  // Re-reads every folder; returns the first error (that domain keeps its
  // list). Thread-safe.
  Result<Ok> reload();
  // Keys allowed per domain now.
  std::map<std::string, std::size_t> sizes() const;

 private:
  explicit ZapHandler(std::map<std::string, std::string> folders);
  void serve(zmq::socket_t socket);
  bool allowed(const std::string& domain, const std::string& key_z85);

  const std::map<std::string, std::string> folders_;
  mutable std::mutex mu_;
  std::map<std::string, std::set<std::string>> keys_;
  std::set<std::pair<std::string, std::string>> refused_logged_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace pacer
