#include "tests/mock_api/mock_server.h"

#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <exception>
#include <thread>
#include <utility>

namespace pacer::mock {
namespace {

// httplib closes a keep-alive connection after 5 requests by default, which
// turns every benchmark into a reconnect storm; this is "never" in practice.
constexpr size_t kKeepAliveMaxCount = size_t{1} << 30;

class InFlightGuard {
 public:
  explicit InFlightGuard(std::atomic<int>& count) : count_(count) {
    count_.fetch_add(1);
  }
  ~InFlightGuard() { count_.fetch_sub(1); }
  InFlightGuard(const InFlightGuard&) = delete;
  InFlightGuard& operator=(const InFlightGuard&) = delete;

 private:
  std::atomic<int>& count_;
};

}  // namespace

template <typename MakeReply>
void MockServer::Respond(httplib::Response& res, MakeReply make_reply) {
  // Counted from before admission so a shutdown never abandons a request
  // that /stats already shows as accepted.
  InFlightGuard guard(in_flight_);
  Reply reply = make_reply();
  // The delay happens here, on the worker thread, after MockApi has already
  // released its lock and recorded the arrival time.
  if (reply.delay.count() > 0) std::this_thread::sleep_for(reply.delay);
  api_.RefreshHeaders(reply);
  res.status = reply.status;
  for (const auto& [name, value] : reply.headers) res.set_header(name, value);
  res.set_content(reply.body, reply.content_type);
}

MockServer::MockServer(MockApi& api, ServerOptions options)
    : api_(api),
      options_(std::move(options)),
      server_(std::make_unique<httplib::Server>()) {
  // Without TCP_NODELAY, Nagle plus delayed ACKs add ~40 ms to every
  // request after the first on a keep-alive connection.
  server_->set_tcp_nodelay(true);
  // Replaces httplib's defaults, which add SO_REUSEPORT: with it a second
  // mock started on a busy port binds anyway and silently receives part of
  // the traffic. SO_REUSEADDR alone still allows restarting on a port whose
  // old connections are in TIME_WAIT.
  server_->set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  server_->set_keep_alive_max_count(kKeepAliveMaxCount);
  server_->set_keep_alive_timeout(options_.keep_alive_timeout_s);
  server_->set_read_timeout(options_.read_timeout_s, 0);
  server_->set_write_timeout(options_.read_timeout_s, 0);
  // httplib serves each connection on one pool thread for its whole
  // keep-alive lifetime; the default pool of 8 would cap concurrency far
  // below what the clients under test open.
  const size_t threads = static_cast<size_t>(options_.threads);
  server_->new_task_queue = [threads] {
    return new httplib::ThreadPool(threads);
  };
  InstallRoutes();
}

MockServer::~MockServer() = default;

void MockServer::InstallRoutes() {
  post_routes_["/v1/echo"] = [this](std::string_view body) {
    return api_.Echo(body);
  };
  post_routes_["/v1/batch"] = [this](std::string_view body) {
    return api_.Batch(body);
  };
  post_routes_["/admin/reset"] = [this](std::string_view) {
    return api_.Reset();
  };
  post_routes_["/admin/config"] = [this](std::string_view body) {
    return api_.Configure(body);
  };
  for (const auto& [path, route] : post_routes_) {
    server_->Post(path, [this, &route = route](const httplib::Request& req,
                                               httplib::Response& res) {
      Respond(res, [&] { return route(req.body); });
    });
  }
  server_->Get("/stats",
               [this](const httplib::Request&, httplib::Response& res) {
                 Respond(res, [&] { return api_.Stats(); });
               });
  server_->Get("/admin/config",
               [this](const httplib::Request&, httplib::Response& res) {
                 Respond(res, [&] { return api_.Config(); });
               });

  // httplib answers 400 to a POST that has neither Content-Length nor
  // Transfer-Encoding (what a bare `curl -X POST` sends), although HTTP/1.1
  // defines such a request as having an empty body. The pre-routing hook
  // runs before httplib tries to read a body, so serve those here.
  server_->set_pre_routing_handler(
      [this](const httplib::Request& req, httplib::Response& res) {
        using Result = httplib::Server::HandlerResponse;
        if (req.method != "POST" || req.has_header("Content-Length") ||
            req.has_header("Transfer-Encoding")) {
          return Result::Unhandled;
        }
        const auto it = post_routes_.find(req.path);
        Respond(res, [&] {
          return it != post_routes_.end() ? it->second(std::string_view())
                                          : api_.NotFound(req.method, req.path);
        });
        return Result::Handled;
      });

  // Catch-alls (registered last; httplib tries patterns in order) so unknown
  // routes get a JSON 404 and /v1/* ones are still counted.
  const auto not_found = [this](const httplib::Request& req,
                                httplib::Response& res) {
    Respond(res, [&] { return api_.NotFound(req.method, req.path); });
  };
  server_->Get(".*", not_found);
  server_->Post(".*", not_found);
  server_->Put(".*", not_found);
  server_->Patch(".*", not_found);
  server_->Delete(".*", not_found);
  server_->Options(".*", not_found);

  // httplib runs the error handler for every status >= 400, including the
  // ones our handlers produced; only fill in bodies httplib left empty
  // (its own 400/413/... for malformed requests).
  // Wrapped explicitly: the lambda would also convert to the void-returning
  // overload, making the call ambiguous.
  server_->set_error_handler(httplib::Server::HandlerWithResponse(
      [](const httplib::Request&, httplib::Response& res) {
        using Result = httplib::Server::HandlerResponse;
        if (!res.body.empty()) return Result::Unhandled;
        Json body = Json::object();
        body["error"] = "http_" + std::to_string(res.status);
        res.set_content(DumpJson(body), "application/json");
        return Result::Handled;
      }));
  server_->set_exception_handler([](const httplib::Request&,
                                    httplib::Response& res,
                                    std::exception_ptr ep) {
    Json body = Json::object();
    body["error"] = "internal";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      body["message"] = e.what();
    } catch (...) {
      body["message"] = "unknown exception";
    }
    res.status = 500;
    res.set_content(DumpJson(body), "application/json");
  });
}

namespace {

// Debian's libcpp-httplib 0.11.4 is compiled with a listen backlog of 5. When
// a fleet opens a few dozen keep-alive connections at once, the kernel drops
// the SYNs that overflow it and clients retry after a full second, so
// requests reach the mock a second late — which looks like a client that
// broke the limit. Find our listening socket and raise its backlog (calling
// listen() again on a listening socket only updates the backlog).
void RaiseListenBacklog(int port) {
  for (int fd = 3; fd < 4096; ++fd) {
    int accepting = 0;
    socklen_t len = sizeof accepting;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len) != 0 ||
        !accepting)
      continue;
    sockaddr_storage addr{};
    socklen_t alen = sizeof addr;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &alen) != 0)
      continue;
    int bound = 0;
    if (addr.ss_family == AF_INET)
      bound = ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
    else if (addr.ss_family == AF_INET6)
      bound = ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port);
    if (bound == port) ::listen(fd, SOMAXCONN);
  }
}

}  // namespace

int MockServer::Bind() {
  int port =
      options_.port == 0
          ? server_->bind_to_any_port(options_.host)
          : (server_->bind_to_port(options_.host, options_.port) ? options_.port
                                                                 : -1);
  if (port > 0) RaiseListenBacklog(port);
  return port;
}

bool MockServer::Serve() { return server_->listen_after_bind(); }

void MockServer::Stop() { server_->stop(); }

bool MockServer::IsRunning() const { return server_->is_running(); }

int MockServer::InFlight() const { return in_flight_.load(); }

}  // namespace pacer::mock
