// SHA-256 of a byte string, as lower-case hex. `pacer run` names a run by its
// input file's content hash, so that a changed file is a new run and an
// unchanged one resumes. OpenSSL's libcrypto computes it (it is on every
// machine pacer builds on: cpp-httplib's package depends on it). Pure
// function; thread-safe.
#pragma once

#include <string>
#include <string_view>

namespace pacer::client {

// The 64 hex digits of SHA-256(data).
std::string sha256_hex(std::string_view data);

}  // namespace pacer::client
