// Owns the HTTP side of pacer-mock-api: binds a cpp-httplib server on
// loopback, routes requests to a MockApi and applies its reply (including
// the configured delay). Bind/Serve run on one thread; Stop may be called
// from any other thread.
#ifndef PACER_TESTS_MOCK_API_MOCK_SERVER_H_
#define PACER_TESTS_MOCK_API_MOCK_SERVER_H_

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "tests/mock_api/mock_api.h"

namespace httplib {
class Server;
struct Response;
}  // namespace httplib

namespace pacer::mock {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;  // 0 = ephemeral
  int threads = 64;
  int keep_alive_timeout_s = 5;
  int read_timeout_s = 10;
};

class MockServer {
 public:
  // `api` must outlive the server.
  MockServer(MockApi& api, ServerOptions options);
  ~MockServer();

  MockServer(const MockServer&) = delete;
  MockServer& operator=(const MockServer&) = delete;

  // Returns the bound port, or -1 if the address could not be bound.
  int Bind();
  // Accepts connections until Stop(); false if serving failed.
  bool Serve();
  // Stops accepting connections. Requests already being handled still get
  // their reply, but note that httplib 0.11 keeps serving each idle
  // keep-alive connection until its keep-alive timeout, so Serve may return
  // long after Stop; wait on InFlight() to know when nothing is owed.
  void Stop();
  bool IsRunning() const;
  // Requests currently between arrival and their reply being handed to
  // httplib for writing.
  int InFlight() const;

 private:
  void InstallRoutes();
  template <typename MakeReply>
  void Respond(httplib::Response& res, MakeReply make_reply);

  MockApi& api_;
  ServerOptions options_;
  std::unique_ptr<httplib::Server> server_;
  // POST handlers by exact path, shared by the normal routes and the
  // body-less POST workaround in InstallRoutes. Fixed after construction.
  std::map<std::string, std::function<Reply(std::string_view)>> post_routes_;
  std::atomic<int> in_flight_{0};
};

}  // namespace pacer::mock

#endif  // PACER_TESTS_MOCK_API_MOCK_SERVER_H_
