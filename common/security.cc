#include "common/security.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

namespace pacer {

namespace {

bool valid_z85_key(std::string_view k) {
  if (k.size() != kZ85KeyChars) return false;
  std::uint8_t raw[32];
  const std::string text(k);
  return zmq_z85_decode(raw, text.c_str()) != nullptr;
}

Result<std::string> read_key(const std::string& path, const char* what) {
  std::ifstream in(path);
  if (!in) return Error{path + ": cannot read the " + std::string(what) +
                        " key file (" + std::strerror(errno) + ")"};
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  const auto b = text.find_first_not_of(" \t\r\n");
  const auto e = text.find_last_not_of(" \t\r\n");
  text = b == std::string::npos ? "" : text.substr(b, e - b + 1);
  if (!valid_z85_key(text))
    return Error{path + ": not a " + std::string(what) +
                 " key (40 characters of Z85, as `pacer keygen` writes)"};
  return text;
}

Result<Ok> write_file(const std::string& path, const std::string& text,
                      mode_t mode) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
                        mode);
  if (fd < 0)
    return Error{path + ": cannot create (" + std::strerror(errno) + ")"};
  const std::string line = text + "\n";
  const bool ok = ::write(fd, line.data(), line.size()) ==
                  static_cast<ssize_t>(line.size());
  const bool closed = ::close(fd) == 0;
  if (!ok || !closed)
    return Error{path + ": cannot write (" + std::strerror(errno) + ")"};
  return Ok{};
}

}  // namespace

Result<CurveKeyPair> make_curve_keypair() {
  char pub[41], sec[41];
  if (zmq_curve_keypair(pub, sec) != 0)
    return Error{std::string("cannot make a CURVE key pair: ") +
                 zmq_strerror(zmq_errno()) +
                 " (libzmq was built without CURVE?)"};
  return CurveKeyPair{pub, sec};
}

Result<std::string> write_keypair(const std::string& dir,
                                  const std::string& name) {
  if (name.empty() || name.find('/') != std::string::npos || name[0] == '.')
    return Error{"key name '" + name +
                 "' must be a file name (no '/', not starting with '.')"};
  std::error_code ec;
  if (!std::filesystem::exists(dir, ec)) {
    std::filesystem::create_directories(dir, ec);
    if (ec) return Error{dir + ": cannot create the folder (" + ec.message() + ")"};
    std::filesystem::permissions(dir, std::filesystem::perms::owner_all, ec);
  }
  auto pair = make_curve_keypair();
  if (!pair) return Error{pair.error()};
  const std::string base = (std::filesystem::path(dir) / name).string();
  if (std::filesystem::exists(base + ".public", ec))
    return Error{base + ".public: already exists (keys are never overwritten)"};
  if (auto w = write_file(base + ".secret", pair->secret_key, 0600); !w)
    return Error{w.error()};
  if (auto w = write_file(base + ".public", pair->public_key, 0644); !w)
    return Error{w.error()};
  return pair->public_key;
}

Result<std::string> read_public_key(const std::string& path) {
  return read_key(path, "public");
}

Result<std::string> read_secret_key(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o",
                  static_cast<unsigned>(st.st_mode & 07777));
    return Error{path + ": the secret key file is readable by others (mode " +
                 mode + "); chmod 600 it"};
  }
  return read_key(path, "secret");
}

Result<std::string> public_of(const std::string& secret_z85) {
  char pub[41];
  if (zmq_curve_public(pub, secret_z85.c_str()) != 0)
    return Error{"not a secret key"};
  return std::string(pub);
}

Result<std::set<std::string>> read_key_folder(const std::string& dir) {
  std::error_code ec;
  std::filesystem::directory_iterator it(dir, ec);
  if (ec) return Error{dir + ": cannot read the key folder (" + ec.message() + ")"};
  std::set<std::string> keys;
  for (const auto& entry : it) {
    if (entry.path().extension() != ".public") continue;
    auto k = read_public_key(entry.path().string());
    if (!k) return Error{k.error()};
    keys.insert(*k);
  }
  return keys;
}

std::string key_fingerprint(std::string_view public_z85) {
  return std::string(public_z85.substr(0, 8));
}

bool loopback_endpoint(std::string_view ep) {
  if (ep.starts_with("ipc://") || ep.starts_with("inproc://")) return true;
  if (!ep.starts_with("tcp://")) return false;
  std::string_view host = ep.substr(6);
  // tcp://source;host:port connects from a source: judge the host.
  if (const auto semi = host.find(';'); semi != std::string_view::npos)
    host = host.substr(semi + 1);
  if (host.starts_with("[::1]:")) return true;
  const auto colon = host.rfind(':');
  if (colon == std::string_view::npos) return false;
  host = host.substr(0, colon);
  if (host == "localhost") return true;
  // 127.a.b.c, digits and dots only.
  if (!host.starts_with("127.")) return false;
  int dots = 0;
  for (char c : host) {
    if (c == '.') ++dots;
    else if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  }
  return dots == 3;
}

Result<std::optional<CurveClient>> curve_client(const SecurityConfig& s) {
  if (!s.enabled) return std::optional<CurveClient>{};
  if (s.broker_public_key.empty())
    return Error{"security.broker_public_key: required to reach a broker "
                 "with [security] (the broker's .public file)"};
  if (s.secret_key.empty())
    return Error{"security.secret_key: required to reach a broker with "
                 "[security] (this peer's .secret file, from `pacer keygen`)"};
  auto server = read_public_key(s.broker_public_key);
  if (!server) return Error{"security.broker_public_key: " + server.error()};
  auto secret = read_secret_key(s.secret_key);
  if (!secret) return Error{"security.secret_key: " + secret.error()};
  auto pub = public_of(*secret);
  if (!pub) return Error{"security.secret_key: " + pub.error()};
  return std::optional<CurveClient>{CurveClient{*server, *pub, *secret}};
}

void apply_curve_client(zmq::socket_t& socket, const CurveClient& c) {
  socket.set(zmq::sockopt::curve_serverkey, c.server_public);
  socket.set(zmq::sockopt::curve_publickey, c.public_key);
  socket.set(zmq::sockopt::curve_secretkey, c.secret_key);
}

}  // namespace pacer
