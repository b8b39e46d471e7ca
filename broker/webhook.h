// Webhook: delivers the broker's alerts as JSON POSTs to one URL.
//
// The broker loop must never wait on the network, so post() only queues the
// document and a thread of its own sends them with libcurl, one at a time and
// in order: a document is retried before the next one is tried, so the
// receiver sees alerts in the order they were raised.
//
// What counts as what:
//   2xx                                 delivered
//   no answer (connection error, timeout), 5xx, 408, 429
//                                       retried with backoff, up to
//                                       max_attempts; then failed
//   any other status (4xx, and 3xx, as redirects are not followed)
//                                       failed at once: the same request
//                                       would get the same answer
// The backoff has full jitter (common/backoff.h): the delay before attempt
// k+1 is uniform in [0, min(cap, base * 2^(k-1))]. An answer that carries
// Retry-After (a 429 or 503, typically) is waited for at least that long,
// but never more than the cap, so a receiver cannot stall the alerts behind
// it indefinitely.
//
// The queue is bounded: a receiver that is down for long loses the oldest
// alerts rather than growing the broker's memory; the newest say most about
// the present. Every failure and drop is logged, with the URL reduced to
// scheme://host[:port] (webhook URLs often carry their secret in the path or
// query, Slack and Discord style).
//
// Thread-safe: post(), counts() and stop() may be called from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "common/clock.h"

namespace pacer {

// Delivers JSON documents by HTTP POST to one URL, in order, from a thread of
// its own.
class WebhookSender {
 public:
  struct Options {
    std::string url;  // http:// or https:// (already validated by the config)
    Millis timeout_ms = 5000;       // per POST (connect + transfer)
    int max_attempts = 5;           // per document; values below 1 mean 1
    Millis backoff_base_ms = 1000;  // see the top of this file
    Millis backoff_cap_ms = 30000;
    // Documents waiting (the one being sent is not counted); when full, the
    // oldest is dropped. Values below 1 mean 1.
    std::size_t max_queue = 1000;
    // At stop: how long queued documents may still be tried. An attempt
    // still in flight at that deadline is aborted, and a backoff that would
    // end after it is cut short; what is left counts as dropped.
    Millis drain_ms = 2000;
  };
  struct Counts {
    std::int64_t delivered = 0;
    // Gave up after max_attempts, or at once on a permanent answer.
    std::int64_t failed = 0;
    // Queue full, left at stop, or posted after it.
    std::int64_t dropped = 0;
    std::int64_t retries = 0;  // attempts after a document's first
  };

  // Starts the thread. Does no I/O: the first connection is made for the
  // first document.
  explicit WebhookSender(Options o);
  ~WebhookSender();  // stop()
  WebhookSender(const WebhookSender&) = delete;
  WebhookSender& operator=(const WebhookSender&) = delete;

  // Queues `doc`; never blocks beyond a short mutex (and, when the queue is
  // full, the log line saying so).
  void post(nlohmann::json doc);
  Counts counts() const;
  // Stops the thread after letting queued documents be tried for drain_ms.
  // Returns within drain_ms and about a second (libcurl looks at the abort
  // about once a second while it waits), never later than drain_ms and one
  // timeout_ms. Idempotent. Afterwards counts() is final and post()
  // only counts the document dropped; the broker can log the totals.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// `url` reduced to scheme://host[:port] for logs: no userinfo, path, query
// or fragment, where webhook secrets live. "[unparsed url]" when there is no
// "scheme://".
std::string webhook_log_origin(std::string_view url);

}  // namespace pacer
