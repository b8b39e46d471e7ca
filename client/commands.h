// The `pacer` commands, one function each: build the request, ask the broker,
// print the answer, return the exit code. cli.cc parses arguments into the
// option structs below and calls them; tests can call them directly.
// A Session is one command's state; not thread-safe.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "client/broker_client.h"
#include "client/jobs_file.h"
#include "common/clock.h"
#include "common/job.h"
#include "common/result.h"

namespace pacer::client {

// Exit codes (docs/cli.md): 1 is "the command ran and the answer is no".
inline constexpr int kExitOk = 0;
inline constexpr int kExitNo = 1;
inline constexpr int kExitError = 2;
inline constexpr int kExitWaitTimeout = 124;

// A SUBMIT whose jobs all carry idempotency keys may be sent again after a
// timeout; this is how often in all.
inline constexpr int kSubmitTries = 3;

// Where output goes. `err_is_tty` enables live progress lines on `err`.
struct Io {
  std::ostream& out;
  std::ostream& err;
  bool err_is_tty = false;
};

class Session {
 public:
  Session(Io& io, std::string endpoint, Millis timeout_ms, bool json,
          std::optional<CurveClient> curve = {})
      : io_(io),
        endpoint_(std::move(endpoint)),
        timeout_ms_(timeout_ms),
        json_(json),
        curve_(std::move(curve)) {}

  Io& io() { return io_; }
  bool json() const { return json_; }
  // The connection, opened on first use (a command that fails validation
  // never talks to the broker).
  Result<BrokerClient*> broker();
  // Prints "pacer: MESSAGE" on stderr and returns `code`.
  int fail(int code, const std::string& message);

 private:
  Io& io_;
  std::string endpoint_;
  Millis timeout_ms_;
  bool json_;
  std::optional<CurveClient> curve_;
  std::optional<BrokerClient> client_;
};

// The exit code for a request that did not succeed: a broker's refusal of a
// well-formed request is an answer (1); everything else is an error (2).
int exit_code_for(const Reply& reply);

// Sends one SUBMIT (`body`: its JSON text), again after a timeout while tries
// remain (only for bodies whose jobs all have idempotency keys), saying so on
// stderr.
Reply submit_with_retry(Session& s, BrokerClient& broker,
                        const std::string& body, int tries,
                        const std::string& what);

// Prints the errors as "pacer: FILE:LINE: ..." lines (the first few, then a
// count of the rest) and "pacer: WHAT"; returns 1 (a bad line is an answer).
int report_line_errors(Session& s, const LineErrors& errors,
                       const std::string& what);

struct SubmitOptions {
  // One job.
  std::string api;
  std::string method;
  std::string path;
  std::vector<std::string> headers;  // "Name: value"
  std::optional<std::string> body;   // JSON text, or @FILE
  std::optional<std::int64_t> priority;
  std::optional<std::string> delay;
  std::optional<std::int64_t> cost;
  std::string key;
  std::string batch_key;
  std::optional<std::int64_t> max_attempts;
  std::optional<std::string> timeout;
  // Many jobs.
  std::string file;   // a JSONL file, "-" for stdin
  std::string group;  // default: a fresh id
};

// The JobSpec JSON for one job from the flags, validated with parse_job_spec.
Result<nlohmann::json> build_job(const SubmitOptions& o);

int submit_one(Session& s, const SubmitOptions& o);
int submit_file(Session& s, const SubmitOptions& o);
int status(Session& s, const std::vector<JobId>& ids);

struct WaitOptions {
  std::vector<JobId> ids;
  std::string group;
  bool all = false;
  std::optional<Millis> timeout_ms;  // --timeout-wait
  Millis poll_ms = 200;
};
int wait(Session& s, const WaitOptions& o);

int result(Session& s, JobId id);

struct ListOptions {
  std::string state;
  std::string api;
  std::string group;
  std::int64_t limit = 100;  // 0: no limit
};
int list(Session& s, const ListOptions& o);

int cancel(Session& s, const std::vector<JobId>& ids);
int stats(Session& s);
int apis(Session& s);

// ---- dead letters (`pacer dead ...`) ----

// --since: a duration ago ("2h"), milliseconds since the epoch, or an RFC 3339
// time ("2025-11-27T23:41:02Z", "2025-11-28T00:41:02.5+01:00"). Returns epoch
// milliseconds.
Result<Millis> parse_since(const std::string& text, Millis now_ms);

// The filters of `dead list` and `dead replay`, as typed.
struct DeadFilterOptions {
  std::string api;
  std::string failure_class;  // --class
  std::string since;
  bool any() const {
    return !api.empty() || !failure_class.empty() || !since.empty();
  }
};
// The filters as DEAD_LIST / DEAD_REPLAY body fields, validated.
Result<nlohmann::json> dead_filter_body(const DeadFilterOptions& f,
                                        Millis now_ms);

struct DeadListOptions {
  DeadFilterOptions filter;
  std::int64_t limit = 100;  // 0: no limit
};
int dead_list(Session& s, const DeadListOptions& o);
int dead_show(Session& s, JobId id);

struct DeadReplayOptions {
  std::vector<JobId> ids;
  bool all = false;
  DeadFilterOptions filter;
  bool dry_run = false;
};
int dead_replay(Session& s, const DeadReplayOptions& o);

}  // namespace pacer::client
