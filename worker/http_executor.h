// HttpExecutor: many HTTP transfers at once on one libcurl multi handle,
// driven by the caller's event loop (curl's socket/timer API). It owns the
// multi handle, a pool of reusable easy handles (keep-alive connections live
// in the multi's pool), and every running transfer with the buffers curl
// points into. Each start() yields exactly one JobResult, in completed().
// Not thread-safe: one thread, the event loop, calls everything.
#pragma once

#include <curl/curl.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/result.h"
#include "worker/request.h"

namespace pacer::worker {

class HttpExecutor {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;

  struct Options {
    int max_connections = 64;               // total and per host
    std::int64_t max_body_bytes = 1 << 20;  // response body cap
    Millis connect_timeout_ms = 10'000;
  };

  static Result<std::unique_ptr<HttpExecutor>> create(const Options& options);
  ~HttpExecutor();
  HttpExecutor(const HttpExecutor&) = delete;
  HttpExecutor& operator=(const HttpExecutor&) = delete;

  // Starts a transfer. A setup failure becomes a `transient` result at once.
  void start(HttpRequest request);
  std::size_t running() const { return transfers_.size(); }

  // One descriptor standing for every socket curl wants watched (an epoll
  // set): readable when at least one of them is ready. The event loop polls
  // it beside its own descriptors and calls on_ready() when it is readable,
  // so a turn costs the same with 1 or 10,000 transfers running.
  int poll_fd() const { return epoll_fd_; }
  // Runs curl on every watched socket that is ready now (never blocks).
  void on_ready();
  // When curl wants on_timer(), if at all.
  std::optional<TimePoint> deadline() const { return deadline_; }
  // Runs curl's timeout processing if its deadline has passed.
  void on_timer(TimePoint now);

  // Ends every running transfer now with `transient`, status 0 and `error`.
  void abort_all(const std::string& error);

  // Results finished since the last call.
  std::vector<JobResult> take_completed() {
    return std::exchange(completed_, {});
  }

 private:
  struct Transfer;

  explicit HttpExecutor(const Options& options);
  std::size_t max_body_bytes() const {
    return static_cast<std::size_t>(
        std::max<std::int64_t>(0, options_.max_body_bytes));
  }
  static int socket_callback(CURL* easy, curl_socket_t fd, int what, void* self,
                             void* socket_data);
  static curl_socket_t open_socket(void* self, curlsocktype purpose,
                                   curl_sockaddr* address);
  static int close_socket(void* self, curl_socket_t fd);
  static int timer_callback(CURLM* multi, long timeout_ms, void* self);
  void collect_done();
  // Detaches the transfer from curl and recycles its easy handle.
  std::unique_ptr<Transfer> release(CURL* easy);

  Options options_;
  CURLM* multi_ = nullptr;
  std::vector<CURL*> idle_;  // reset easy handles ready for reuse
  std::unordered_map<CURL*, std::unique_ptr<Transfer>> transfers_;
  int epoll_fd_ = -1;
  // The sockets in the epoll set. A keep-alive connection stays in it while
  // idle (curl says CURL_POLL_REMOVE between two transfers on it), so the
  // next transfer on it costs no epoll_ctl; an event on an idle socket (the
  // server closed it) takes it out. Sockets are opened and closed through
  // open_socket/close_socket, so a descriptor number never stands for an
  // old socket's entry.
  struct Watch {
    std::uint32_t events = 0;  // as registered
    bool wanted = false;       // curl watches it now
  };
  std::unordered_map<curl_socket_t, Watch> sockets_;
  std::optional<TimePoint> deadline_;
  std::vector<JobResult> completed_;
};

}  // namespace pacer::worker
