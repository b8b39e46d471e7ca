#include "worker/http_executor.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

namespace pacer::worker {
namespace {

Millis epoch_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

struct HttpExecutor::Transfer {
  HttpRequest request;
  curl_slist* header_list = nullptr;
  char errbuf[CURL_ERROR_SIZE] = {};
  std::string body;
  bool truncated = false;
  std::size_t max_body = 0;
  bool connected = false;
  ResponseHeaders response_headers;
  Millis started_ms = 0;
  TimePoint started;

  ~Transfer() { curl_slist_free_all(header_list); }

  static std::size_t on_body(char* data, std::size_t size, std::size_t n,
                             void* p) {
    auto* t = static_cast<Transfer*>(p);
    std::size_t bytes = size * n;
    std::size_t room = t->max_body - std::min(t->max_body, t->body.size());
    if (bytes > room) t->truncated = true;
    t->body.append(data, std::min(bytes, room));
    return bytes;  // the excess is read and discarded, not an error
  }
  static std::size_t on_header(char* data, std::size_t size, std::size_t n,
                               void* p) {
    static_cast<Transfer*>(p)->response_headers.on_line({data, size * n});
    return size * n;
  }
  static int on_connected(void* p, char*, char*, int, int) {
    static_cast<Transfer*>(p)->connected = true;
    return CURL_PREREQFUNC_OK;
  }
};

HttpExecutor::HttpExecutor(const Options& options) : options_(options) {}

Result<std::unique_ptr<HttpExecutor>> HttpExecutor::create(
    const Options& options) {
  std::unique_ptr<HttpExecutor> ex(new HttpExecutor(options));
  ex->epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (ex->epoll_fd_ < 0)
    return Error{std::string("epoll_create1: ") + std::strerror(errno)};
  ex->multi_ = curl_multi_init();
  if (!ex->multi_) return Error{"curl_multi_init failed"};
  const long conns = std::max(1, options.max_connections);
  CURLMcode rc = CURLM_OK;
  auto set = [&](CURLMoption opt, auto value) {
    if (rc == CURLM_OK) rc = curl_multi_setopt(ex->multi_, opt, value);
  };
  set(CURLMOPT_SOCKETFUNCTION, &HttpExecutor::socket_callback);
  set(CURLMOPT_SOCKETDATA, static_cast<void*>(ex.get()));
  set(CURLMOPT_TIMERFUNCTION, &HttpExecutor::timer_callback);
  set(CURLMOPT_TIMERDATA, static_cast<void*>(ex.get()));
  set(CURLMOPT_MAX_TOTAL_CONNECTIONS, conns);
  set(CURLMOPT_MAX_HOST_CONNECTIONS, conns);
  set(CURLMOPT_MAXCONNECTS, conns);  // idle keep-alive connections kept
  if (rc != CURLM_OK)
    return Error{std::string("curl multi setup: ") + curl_multi_strerror(rc)};
  return ex;
}

HttpExecutor::~HttpExecutor() {
  for (auto& [easy, transfer] : transfers_) {
    curl_multi_remove_handle(multi_, easy);
    curl_easy_cleanup(easy);
  }
  transfers_.clear();
  for (CURL* easy : idle_) curl_easy_cleanup(easy);
  if (multi_) curl_multi_cleanup(multi_);
  if (epoll_fd_ >= 0) ::close(epoll_fd_);
}

int HttpExecutor::socket_callback(CURL*, curl_socket_t fd, int what, void* self,
                                  void*) {
  auto* ex = static_cast<HttpExecutor*>(self);
  if (what == CURL_POLL_REMOVE) {
    // Left in the epoll set while idle; on_ready() takes it out should an
    // event come before curl wants it again.
    if (auto it = ex->sockets_.find(fd); it != ex->sockets_.end())
      it->second.wanted = false;
    return 0;
  }
  std::uint32_t events = 0;
  if (what == CURL_POLL_IN || what == CURL_POLL_INOUT) events |= EPOLLIN;
  if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT) events |= EPOLLOUT;
  auto [it, fresh] = ex->sockets_.try_emplace(fd);
  it->second.wanted = true;
  if (!fresh && it->second.events == events) return 0;
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  int rc =
      epoll_ctl(ex->epoll_fd_, fresh ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &ev);
  // Neither should happen (every socket is opened through open_socket), but
  // a wrong guess must not lose the socket.
  if (rc != 0 && errno == ENOENT)
    rc = epoll_ctl(ex->epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
  else if (rc != 0 && errno == EEXIST)
    rc = epoll_ctl(ex->epoll_fd_, EPOLL_CTL_MOD, fd, &ev);
  if (rc != 0) {
    ex->sockets_.erase(it);
    return -1;  // makes curl fail the transfer, not hang
  }
  it->second.events = events;
  return 0;
}

curl_socket_t HttpExecutor::open_socket(void* self, curlsocktype,
                                        curl_sockaddr* address) {
  auto* ex = static_cast<HttpExecutor*>(self);
  const int fd = ::socket(address->family, address->socktype | SOCK_CLOEXEC,
                          address->protocol);
  if (fd < 0) return CURL_SOCKET_BAD;
  // Closing a socket took it out of the epoll set; whatever entry its
  // number had is stale.
  ex->sockets_.erase(fd);
  return fd;
}

int HttpExecutor::close_socket(void* self, curl_socket_t fd) {
  static_cast<HttpExecutor*>(self)->sockets_.erase(fd);
  return ::close(fd);
}

int HttpExecutor::timer_callback(CURLM*, long timeout_ms, void* self) {
  auto* ex = static_cast<HttpExecutor*>(self);
  if (timeout_ms < 0) {
    ex->deadline_.reset();
  } else {
    ex->deadline_ = std::chrono::steady_clock::now() +
                    std::chrono::milliseconds(timeout_ms);
  }
  return 0;
}

void HttpExecutor::start(HttpRequest request) {
  auto t = std::make_unique<Transfer>();
  t->request = std::move(request);
  t->max_body = max_body_bytes();
  // A batch response is read whole, up to its own cap, to be split.
  if (t->request.batch)
    t->max_body = std::max(t->max_body, kMaxBatchResponseBytes);
  t->started_ms = epoch_ms();
  t->started = std::chrono::steady_clock::now();
  auto fail = [&](const std::string& why) {
    completed_.push_back(refusal(t->request, Outcome::kTransient,
                                 "cannot start the request: " + why,
                                 t->started_ms));
  };

  CURL* easy = nullptr;
  if (!idle_.empty()) {
    easy = idle_.back();
    idle_.pop_back();
  } else {
    easy = curl_easy_init();
  }
  if (!easy) return fail("curl_easy_init failed");

  for (const auto& line : t->request.header_lines) {
    curl_slist* next = curl_slist_append(t->header_list, line.c_str());
    if (!next) {
      idle_.push_back(easy);
      return fail("out of memory");
    }
    t->header_list = next;
  }

  const HttpRequest& req = t->request;
  const bool https = req.https;
  CURLcode rc = CURLE_OK;
  auto set = [&](CURLoption opt, auto value) {
    if (rc == CURLE_OK) rc = curl_easy_setopt(easy, opt, value);
  };
  set(CURLOPT_CURLU, req.url.get());  // the very URL confine() checked
  set(CURLOPT_PROTOCOLS_STR, "http,https");
  set(CURLOPT_NOSIGNAL, 1L);
  set(CURLOPT_FOLLOWLOCATION, 0L);
  set(CURLOPT_TIMEOUT_MS, static_cast<long>(req.timeout_ms));
  set(CURLOPT_CONNECTTIMEOUT_MS,
      static_cast<long>(options_.connect_timeout_ms));
  set(CURLOPT_HTTP_VERSION, https ? static_cast<long>(CURL_HTTP_VERSION_2TLS)
                                  : static_cast<long>(CURL_HTTP_VERSION_1_1));
  if (https)
    set(CURLOPT_PIPEWAIT, 1L);  // prefer multiplexing over new connections
  set(CURLOPT_HTTPHEADER, t->header_list);
  set(CURLOPT_ERRORBUFFER, t->errbuf);
  set(CURLOPT_WRITEFUNCTION, &Transfer::on_body);
  set(CURLOPT_WRITEDATA, static_cast<void*>(t.get()));
  set(CURLOPT_HEADERFUNCTION, &Transfer::on_header);
  set(CURLOPT_HEADERDATA, static_cast<void*>(t.get()));
  set(CURLOPT_PREREQFUNCTION, &Transfer::on_connected);
  set(CURLOPT_PREREQDATA, static_cast<void*>(t.get()));
  set(CURLOPT_PRIVATE, static_cast<void*>(t.get()));
  set(CURLOPT_OPENSOCKETFUNCTION, &HttpExecutor::open_socket);
  set(CURLOPT_OPENSOCKETDATA, static_cast<void*>(this));
  set(CURLOPT_CLOSESOCKETFUNCTION, &HttpExecutor::close_socket);
  set(CURLOPT_CLOSESOCKETDATA, static_cast<void*>(this));
  const std::string& m = req.method;
  if (req.body) {
    set(CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(req.body->size()));
    set(CURLOPT_POSTFIELDS, req.body->data());  // owned by the transfer
    if (m != "POST") set(CURLOPT_CUSTOMREQUEST, m.c_str());
  } else if (m == "HEAD") {
    set(CURLOPT_NOBODY, 1L);
  } else if (m == "POST" || m == "PUT" || m == "PATCH") {
    set(CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(0));
    set(CURLOPT_POSTFIELDS, "");  // Content-Length: 0
    if (m != "POST") set(CURLOPT_CUSTOMREQUEST, m.c_str());
  } else if (m != "GET") {
    set(CURLOPT_CUSTOMREQUEST, m.c_str());
  }
  if (rc != CURLE_OK) {
    curl_easy_reset(easy);
    idle_.push_back(easy);
    return fail(curl_easy_strerror(rc));
  }
  if (CURLMcode mrc = curl_multi_add_handle(multi_, easy); mrc != CURLM_OK) {
    curl_easy_reset(easy);
    idle_.push_back(easy);
    return fail(curl_multi_strerror(mrc));
  }
  transfers_.emplace(easy, std::move(t));
}

void HttpExecutor::on_ready() {
  std::array<epoll_event, 64> events;
  int n =
      epoll_wait(epoll_fd_, events.data(), static_cast<int>(events.size()), 0);
  for (int i = 0; i < n; ++i) {
    const std::uint32_t e = events[i].events;
    const int fd = events[i].data.fd;
    if (auto it = sockets_.find(fd);
        it != sockets_.end() && !it->second.wanted) {
      // An idle keep-alive connection the server closed (or wrote to):
      // curl finds out when it next looks at it; until then the socket
      // must not wake the loop again.
      epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
      sockets_.erase(it);
      continue;
    }
    int bits = 0;
    if (e & EPOLLIN) bits |= CURL_CSELECT_IN;
    if (e & EPOLLOUT) bits |= CURL_CSELECT_OUT;
    if (e & (EPOLLERR | EPOLLHUP)) bits |= CURL_CSELECT_ERR;
    // A socket an earlier action in this loop closed is unknown to curl,
    // which then does nothing with it.
    int still_running = 0;
    curl_multi_socket_action(multi_, fd, bits, &still_running);
  }
  collect_done();
}

void HttpExecutor::on_timer(TimePoint now) {
  if (!deadline_ || *deadline_ > now) return;
  deadline_.reset();  // one-shot; curl sets the next one through the callback
  int still_running = 0;
  curl_multi_socket_action(multi_, CURL_SOCKET_TIMEOUT, 0, &still_running);
  collect_done();
}

std::unique_ptr<HttpExecutor::Transfer> HttpExecutor::release(CURL* easy) {
  auto it = transfers_.find(easy);
  std::unique_ptr<Transfer> t;
  if (it != transfers_.end()) {
    t = std::move(it->second);
    transfers_.erase(it);
  }
  curl_multi_remove_handle(multi_, easy);
  if (idle_.size() <
      static_cast<std::size_t>(std::max(1, options_.max_connections))) {
    curl_easy_reset(easy);
    idle_.push_back(easy);
  } else {
    curl_easy_cleanup(easy);
  }
  return t;
}

void HttpExecutor::collect_done() {
  int queued = 0;
  while (CURLMsg* msg = curl_multi_info_read(multi_, &queued)) {
    if (msg->msg != CURLMSG_DONE) continue;
    CURL* easy = msg->easy_handle;
    const CURLcode code = msg->data.result;
    long status = 0;
    long os_errno = 0;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(easy, CURLINFO_OS_ERRNO, &os_errno);
    auto t = release(easy);
    if (!t) continue;
    JobResult r = result_for(t->request, t->started_ms);
    r.duration_ms = std::chrono::duration<double, std::milli>(
                        std::chrono::steady_clock::now() - t->started)
                        .count();
    if (code != CURLE_OK) {
      r.outcome = Outcome::kTransient;
      r.error =
          describe_failure({code, t->errbuf, static_cast<int>(os_errno),
                            t->connected, t->request.timeout_ms,
                            options_.connect_timeout_ms, t->request.origin});
    } else if (status <= 0) {
      r.outcome = Outcome::kTransient;
      r.error = "no HTTP response";
    } else {
      r.status = static_cast<int>(status);
      r.outcome = classify_status(r.status);
      if (r.outcome != Outcome::kSuccess)
        r.error = "HTTP " + std::to_string(status);
      r.observation = observe(r.status, t->response_headers.all(), t->body,
                              epoch_ms(), t->request.dialect);
      if (r.outcome == Outcome::kSuccess && !t->truncated)
        r.actual_cost = read_actual_cost(t->body, t->request.actual_cost);
      r.headers = std::move(t->response_headers.headers());
      r.body = std::move(t->body);
      r.body_truncated = t->truncated;
    }
    if (t->request.batch) settle_batch(r, *t->request.batch, max_body_bytes());
    completed_.push_back(std::move(r));
  }
}

void HttpExecutor::abort_all(const std::string& error) {
  std::vector<CURL*> easies;
  easies.reserve(transfers_.size());
  for (auto& [easy, t] : transfers_) easies.push_back(easy);
  for (CURL* easy : easies) {
    auto t = release(easy);
    JobResult r =
        refusal(t->request, Outcome::kTransient, error, t->started_ms);
    r.duration_ms = std::chrono::duration<double, std::milli>(
                        std::chrono::steady_clock::now() - t->started)
                        .count();
    completed_.push_back(std::move(r));
  }
}

}  // namespace pacer::worker
