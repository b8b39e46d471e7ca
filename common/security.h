// CURVE security for the ZeroMQ endpoints: key files, allowlists and the
// socket options each side sets (docs/architecture.md, "Threat model").
//
// Keys are libzmq CURVE keys written as Z85 text (40 characters), one per
// file: NAME.secret (mode 0600) and NAME.public, as `pacer keygen` writes
// them. The broker is a CURVE server on both endpoints and admits a peer
// only if its public key is in the endpoint's allowlist (a folder of
// *.public files: worker_keys for the worker endpoint, client_keys for the
// client endpoint). Workers and clients are CURVE clients that pin the
// broker's public key: a fake broker cannot complete the handshake.
#pragma once

#include <set>
#include <string>
#include <string_view>
#include <zmq.hpp>

#include "common/config.h"
#include "common/result.h"

namespace pacer {

inline constexpr std::size_t kZ85KeyChars = 40;

// A key pair as Z85 text.
struct CurveKeyPair {
  std::string public_key;
  std::string secret_key;
};

// A fresh key pair (zmq_curve_keypair).
Result<CurveKeyPair> make_curve_keypair();
// Writes DIR/NAME.secret (0600, created anew: an existing file is an
// error) and DIR/NAME.public; creates DIR (0700) if missing. Returns the
// public key.
Result<std::string> write_keypair(const std::string& dir,
                                  const std::string& name);

// Reads a Z85 key from a file (surrounding white space ignored). A secret
// key file readable by group or others is refused: chmod 600 it.
Result<std::string> read_public_key(const std::string& path);
Result<std::string> read_secret_key(const std::string& path);
// The public key of a secret one.
Result<std::string> public_of(const std::string& secret_z85);

// The public keys of every *.public file in `dir`. An unreadable folder or
// a file that holds no key is an error that names it.
Result<std::set<std::string>> read_key_folder(const std::string& dir);

// A short fingerprint of a public key for logs: its first 8 characters.
std::string key_fingerprint(std::string_view public_z85);

// True for endpoints only this host can reach: ipc://, inproc://, and tcp://
// on 127.0.0.0/8, [::1] or localhost.
bool loopback_endpoint(std::string_view endpoint);

// What a worker or client sets on its DEALER to reach a CURVE broker.
struct CurveClient {
  std::string server_public;  // the broker's
  std::string public_key;     // this peer's
  std::string secret_key;
};
// From [security] (broker_public_key and secret_key); nullopt without the
// table. An error names the key and file.
Result<std::optional<CurveClient>> curve_client(const SecurityConfig& s);
void apply_curve_client(zmq::socket_t& socket, const CurveClient& c);

}  // namespace pacer
