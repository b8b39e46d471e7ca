#include "broker/webhook.h"

#include <curl/curl.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <limits>
#include <mutex>
#include <system_error>
#include <thread>
#include <utility>

#include "common/backoff.h"
#include "common/log.h"

namespace pacer {
namespace {

using SteadyClock = std::chrono::steady_clock;

// Enough of a rejected answer's body to say why (Slack answers
// "invalid_payload", "no_text", ...), not enough to flood the log.
constexpr std::size_t kReplyLogBytes = 200;

// The broker has no other libcurl user, so the sender initializes it, once,
// before the first easy handle; it is never cleaned up (the process exits).
std::once_flag curl_once;
bool curl_ready = false;  // written once under curl_once

void init_curl() {
  std::call_once(curl_once, [] {
    curl_ready = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
    if (!curl_ready) log::error("alert_webhook_curl_init_failed");
  });
}

// What one POST came to.
struct Attempt {
  CURLcode code = CURLE_OK;
  long status = 0;     // when code is CURLE_OK
  std::string error;   // curl's name for `code`
  std::string detail;  // curl's error buffer (host and port, never the path)
  std::string reply;   // the answer's first kReplyLogBytes
  Millis retry_after_ms = 0;
};

enum class Verdict { kDelivered, kRetry, kPermanent };

Verdict classify(const Attempt& a) {
  switch (a.code) {
    case CURLE_OK:
      break;
    // The request itself cannot be made: trying again makes it no better.
    case CURLE_FAILED_INIT:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
    case CURLE_NOT_BUILT_IN:
    case CURLE_BAD_FUNCTION_ARGUMENT:
      return Verdict::kPermanent;
    default:  // connection errors, timeouts, resets, TLS handshakes
      return Verdict::kRetry;
  }
  if (a.status >= 200 && a.status < 300) return Verdict::kDelivered;
  if (a.status == 408 || a.status == 429 || a.status >= 500)
    return Verdict::kRetry;
  return Verdict::kPermanent;
}

// The attempt's outcome as log fields.
void describe(const Attempt& a, nlohmann::json& f) {
  if (a.code != CURLE_OK) {
    f["error"] = a.error;
    if (!a.detail.empty()) f["detail"] = a.detail;
    return;
  }
  f["status"] = a.status;
  if (!a.reply.empty()) f["reply"] = a.reply;
}

}  // namespace

std::string webhook_log_origin(std::string_view url) {
  constexpr std::string_view kUnparsed = "[unparsed url]";
  const std::size_t sep = url.find("://");
  if (sep == std::string_view::npos || sep == 0) return std::string(kUnparsed);
  const std::string_view scheme = url.substr(0, sep);
  for (char c : scheme) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    (c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.';
    if (!ok) return std::string(kUnparsed);
  }
  // The authority ends where the path, query or fragment begins; userinfo
  // ends at its last '@' (a password may contain one, percent-encoded or
  // not).
  std::string_view authority = url.substr(sep + 3);
  authority = authority.substr(0, authority.find_first_of("/?#"));
  if (const std::size_t at = authority.rfind('@'); at != std::string_view::npos)
    authority.remove_prefix(at + 1);
  std::string out(scheme);
  out += "://";
  out += authority;
  return out;
}

struct WebhookSender::Impl {
  explicit Impl(Options o)
      : opt(std::move(o)), origin(webhook_log_origin(opt.url)) {
    opt.max_attempts = std::max(opt.max_attempts, 1);
    opt.max_queue = std::max<std::size_t>(opt.max_queue, 1);
    opt.timeout_ms = std::max<Millis>(opt.timeout_ms, 1);
    opt.backoff_base_ms = std::max<Millis>(opt.backoff_base_ms, 0);
    opt.backoff_cap_ms = std::max<Millis>(opt.backoff_cap_ms, 0);
    // Bounded so that now + drain cannot overflow the clock.
    opt.drain_ms = std::clamp<Millis>(opt.drain_ms, 0, 86'400'000);
  }

  Options opt;
  const std::string origin;  // what the logs say instead of the URL

  mutable std::mutex mu;
  std::condition_variable cv;             // queue, stopping
  std::deque<nlohmann::json> queue;       // guarded by mu
  Counts counts;                          // guarded by mu
  bool stopping = false;                  // guarded by mu
  SteadyClock::time_point drain_deadline  // guarded by mu; set with stopping
      = SteadyClock::time_point::max();
  // drain_deadline again, for the transfer's abort check, which runs in
  // libcurl's progress callback without the mutex.
  std::atomic<SteadyClock::rep> abort_at{
      std::numeric_limits<SteadyClock::rep>::max()};

  std::mutex join_mu;  // stop() may be called from several threads
  std::thread thread;

  // The sender thread's own. One easy handle for every POST, so that the
  // connection to the receiver is kept alive between alerts.
  CURL* easy = nullptr;
  curl_slist* headers = nullptr;
  char errbuf[CURL_ERROR_SIZE] = {};
  std::string reply;
  Backoff backoff;

  enum class Outcome { kDelivered, kFailed, kAbandoned };

  void run();
  bool setup();
  Outcome deliver(const nlohmann::json& doc);
  Attempt post_once(const std::string& body);
  bool wait_backoff(Millis delay);

  static size_t on_reply(char* data, size_t size, size_t n, void* user) {
    auto* out = static_cast<std::string*>(user);
    const size_t len = size * n;
    if (out->size() < kReplyLogBytes)
      out->append(data, std::min(len, kReplyLogBytes - out->size()));
    return len;
  }

  // Aborts the transfer once stop()'s drain deadline has passed.
  static int on_progress(void* user, curl_off_t, curl_off_t, curl_off_t,
                         curl_off_t) {
    auto* impl = static_cast<Impl*>(user);
    return SteadyClock::now().time_since_epoch().count() >=
                   impl->abort_at.load(std::memory_order_acquire)
               ? 1
               : 0;
  }
};

bool WebhookSender::Impl::setup() {
  if (!curl_ready) return false;
  easy = curl_easy_init();
  if (!easy) return false;
  for (const char* line : {"Content-Type: application/json",
                           // No 100-continue round trip for bodies over 1 KiB.
                           "Expect:"}) {
    curl_slist* next = curl_slist_append(headers, line);
    if (!next) return false;
    headers = next;
  }
  CURLcode rc = CURLE_OK;
  auto set = [&](CURLoption option, auto value) {
    if (rc == CURLE_OK) rc = curl_easy_setopt(easy, option, value);
  };
  set(CURLOPT_URL, opt.url.c_str());
  set(CURLOPT_PROTOCOLS_STR, "http,https");
  // Signals belong to the broker's loop; libcurl must not install handlers
  // or use alarm() for its timeouts from this thread.
  set(CURLOPT_NOSIGNAL, 1L);
  // A redirect is an answer (a 3xx, permanent): following it would send the
  // alert somewhere nobody configured.
  set(CURLOPT_FOLLOWLOCATION, 0L);
  set(CURLOPT_TIMEOUT_MS, static_cast<long>(opt.timeout_ms));
  set(CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(opt.timeout_ms));
  set(CURLOPT_USERAGENT, "pacer-broker");
  set(CURLOPT_HTTPHEADER, headers);
  set(CURLOPT_POST, 1L);
  set(CURLOPT_ERRORBUFFER, errbuf);
  set(CURLOPT_WRITEFUNCTION, &Impl::on_reply);
  set(CURLOPT_WRITEDATA, static_cast<void*>(&reply));
  set(CURLOPT_NOPROGRESS, 0L);
  set(CURLOPT_XFERINFOFUNCTION, &Impl::on_progress);
  set(CURLOPT_XFERINFODATA, static_cast<void*>(this));
  if (rc != CURLE_OK) {
    log::error("alert_webhook_setup_failed",
               {{"webhook", origin}, {"error", curl_easy_strerror(rc)}});
    return false;
  }
  return true;
}

void WebhookSender::Impl::run() {
  if (!setup()) {
    // Every document will fail with CURLE_FAILED_INIT, and say so.
    if (easy) curl_easy_cleanup(easy);
    easy = nullptr;
  }
  std::int64_t abandoned = 0;
  for (;;) {
    nlohmann::json doc;
    {
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return stopping || !queue.empty(); });
      if (queue.empty()) break;
      if (stopping && SteadyClock::now() >= drain_deadline) break;
      doc = std::move(queue.front());
      queue.pop_front();
    }
    const Outcome outcome = deliver(doc);
    std::lock_guard lock(mu);
    if (outcome == Outcome::kDelivered) {
      ++counts.delivered;
    } else if (outcome == Outcome::kFailed) {
      ++counts.failed;
    } else {
      abandoned = 1;  // cut short by stop(); nothing after it is tried
      break;
    }
  }

  std::deque<nlohmann::json> left;  // destroyed outside the lock
  std::int64_t total = 0;
  {
    std::lock_guard lock(mu);
    left.swap(queue);
    counts.dropped += abandoned + static_cast<std::int64_t>(left.size());
    total = counts.dropped;
  }
  const std::int64_t n = abandoned + static_cast<std::int64_t>(left.size());
  if (n > 0)
    log::warn("alert_webhook_dropped", {{"webhook", origin},
                                        {"reason", "stopped"},
                                        {"dropped", n},
                                        {"dropped_total", total}});
  if (easy) curl_easy_cleanup(easy);
  easy = nullptr;
  curl_slist_free_all(headers);
  headers = nullptr;
}

WebhookSender::Impl::Outcome WebhookSender::Impl::deliver(
    const nlohmann::json& doc) {
  // Invalid UTF-8 in an alert (an API's error text, say) must not cost the
  // whole alert: replace it rather than throw.
  const std::string body =
      doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  for (int attempt = 1;; ++attempt) {
    if (attempt > 1) {
      std::lock_guard lock(mu);
      ++counts.retries;
    }
    const Attempt a = post_once(body);
    if (a.code == CURLE_ABORTED_BY_CALLBACK) return Outcome::kAbandoned;
    const Verdict verdict = classify(a);
    if (verdict == Verdict::kDelivered) return Outcome::kDelivered;

    const bool retry = verdict == Verdict::kRetry && attempt < opt.max_attempts;
    Millis delay = 0;
    if (retry)
      delay = backoff.next(attempt, opt.backoff_base_ms, opt.backoff_cap_ms,
                           std::min(a.retry_after_ms, opt.backoff_cap_ms));
    nlohmann::json f = {{"webhook", origin},
                        {"attempt", attempt},
                        {"max_attempts", opt.max_attempts},
                        {"retry", retry}};
    describe(a, f);
    if (retry) f["retry_in_ms"] = delay;
    log::warn("alert_webhook_failed", f);
    if (!retry) {
      nlohmann::json g = {
          {"webhook", origin},
          {"attempts", attempt},
          {"reason", verdict == Verdict::kPermanent ? "permanent" : "retries"}};
      describe(a, g);
      log::error("alert_webhook_gave_up", g);
      return Outcome::kFailed;
    }
    if (!wait_backoff(delay)) return Outcome::kAbandoned;
  }
}

Attempt WebhookSender::Impl::post_once(const std::string& body) {
  Attempt a;
  if (!easy) {
    a.code = CURLE_FAILED_INIT;
    a.error = curl_easy_strerror(a.code);
    return a;
  }
  reply.clear();
  errbuf[0] = '\0';
  curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE,
                   static_cast<curl_off_t>(body.size()));
  curl_easy_setopt(easy, CURLOPT_POSTFIELDS, body.data());
  a.code = curl_easy_perform(easy);
  if (a.code != CURLE_OK) {
    a.error = curl_easy_strerror(a.code);
    a.detail = errbuf;
    return a;
  }
  curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &a.status);
  curl_off_t retry_after = 0;  // seconds, from either of its forms
  if (curl_easy_getinfo(easy, CURLINFO_RETRY_AFTER, &retry_after) == CURLE_OK &&
      retry_after > 0)
    a.retry_after_ms = std::min<curl_off_t>(retry_after, 86'400) * 1000;
  a.reply = reply;
  return a;
}

bool WebhookSender::Impl::wait_backoff(Millis delay) {
  const auto until = SteadyClock::now() + std::chrono::milliseconds(delay);
  std::unique_lock lock(mu);
  // Give up at once when stop()'s deadline comes before the retry would:
  // waiting for it would only delay the broker's exit.
  return !cv.wait_until(lock, until,
                        [&] { return stopping && drain_deadline < until; });
}

WebhookSender::WebhookSender(Options o)
    : impl_(std::make_unique<Impl>(std::move(o))) {
  init_curl();
  // The broker's SIGINT and SIGTERM must reach its loop, not this thread;
  // SIGPIPE stays pending here rather than kill the broker should a TLS
  // write hit a closed connection (NOSIGNAL stops libcurl from ignoring it).
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGINT);
  sigaddset(&block, SIGTERM);
  sigaddset(&block, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &block, &old);
  try {
    impl_->thread = std::thread([impl = impl_.get()] { impl->run(); });
  } catch (const std::system_error&) {
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    throw;
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

WebhookSender::~WebhookSender() { stop(); }

void WebhookSender::post(nlohmann::json doc) {
  nlohmann::json dropped;  // destroyed outside the lock
  const char* reason = nullptr;
  bool full = false;
  std::int64_t total = 0;
  {
    std::lock_guard lock(impl_->mu);
    if (impl_->stopping) {
      dropped = std::move(doc);
      reason = "stopped";
    } else {
      impl_->queue.push_back(std::move(doc));
      if (impl_->queue.size() > impl_->opt.max_queue) {
        dropped = std::move(impl_->queue.front());
        impl_->queue.pop_front();
        reason = "queue_full";
        full = true;
      }
    }
    if (reason) total = ++impl_->counts.dropped;
  }
  impl_->cv.notify_one();
  if (!reason) return;
  nlohmann::json f = {{"webhook", impl_->origin},
                      {"reason", reason},
                      {"dropped", 1},
                      {"dropped_total", total}};
  if (full) f["max_queue"] = impl_->opt.max_queue;
  log::warn("alert_webhook_dropped", std::move(f));
}

WebhookSender::Counts WebhookSender::counts() const {
  std::lock_guard lock(impl_->mu);
  return impl_->counts;
}

void WebhookSender::stop() {
  {
    std::lock_guard lock(impl_->mu);
    if (!impl_->stopping) {
      impl_->stopping = true;
      impl_->drain_deadline =
          SteadyClock::now() + std::chrono::milliseconds(impl_->opt.drain_ms);
      impl_->abort_at.store(impl_->drain_deadline.time_since_epoch().count(),
                            std::memory_order_release);
    }
  }
  impl_->cv.notify_all();
  std::lock_guard join(impl_->join_mu);
  if (impl_->thread.joinable()) impl_->thread.join();
}

}  // namespace pacer
