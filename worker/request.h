// The worker's pure request logic: the wire Job and Result and their batch
// forms (building a batch's request, splitting its response), the URL
// confinement check (a job may only reach its API's base URL), the header
// merge that keeps credentials out of the job's reach, the filter for
// response headers worth keeping, the rate-limit observation of a response,
// and the texts of transfer errors.
// Values and free functions, no I/O; thread-safe.
#pragma once

#include <curl/curl.h>

#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/redact.h"
#include "common/batch.h"
#include "common/clock.h"
#include "common/config.h"
#include "common/job.h"
#include "common/result.h"

namespace pacer::json_reader {
class ElementValue;
}

namespace pacer::worker {

// Header name/value pairs in the order they are sent.
using HeaderList = std::vector<std::pair<std::string, std::string>>;

// One HTTP call as the broker sends it (schema/wire_protocol.md §4).
struct Job {
  JobId id = 0;
  std::int64_t attempt = 0;
  std::string api;
  std::string method;
  std::string path;
  HeaderList headers;
  std::optional<std::string> body;
  std::optional<Millis> timeout_ms;  // absent: the API's configured timeout
};

// Parses a wire Job; errors name the field. Unknown fields are ignored. The
// same reading of a document or of simdjson elements (JOBS as the worker
// reads it, common/json_reader.h): one template behind both.
Result<Job> parse_job(const nlohmann::json& j);
Result<Job> parse_job_element(const json_reader::ElementValue& j);
// The id and attempt of a Job that failed to parse, when they are readable,
// so the refusal can still be answered.
std::optional<std::pair<JobId, std::int64_t>> job_ids(const nlohmann::json& j);
std::optional<std::pair<JobId, std::int64_t>> job_ids_element(
    const json_reader::ElementValue& j);

// A batch job (schema/wire_protocol.md "Batch jobs"): one HTTP call that
// answers several member jobs, and one credit.
struct BatchMember {
  JobId id = 0;
  std::int64_t attempt = 0;
};
// What answering a batch takes: its id, how to split, whom to answer.
struct BatchCall {
  std::int64_t id = 0;
  BatchConfig spec;
  std::vector<BatchMember> members;  // in batch order
};
struct BatchJob {
  Job call;  // api, method, path, headers, timeout; no id, attempt or body
  BatchCall batch;
  std::vector<std::optional<std::string>> bodies;  // one per member
};

// Whether a JOBS entry is a batch job: it has a "batch" that is not null.
bool is_batch_job(const nlohmann::json& j);
// Parses a batch job: a positive batch id, the call's fields as in a Job
// (method defaults to POST), a valid spec, and 1..max_items members with
// integer id and attempt and an optional string body. Errors name the field.
Result<BatchJob> parse_batch_job(const nlohmann::json& j);
// The batch id of a batch job that failed to parse, when it is a positive
// integer, so the refusal can still be answered.
std::optional<std::int64_t> batch_id(const nlohmann::json& j);

// One member's share of a batch result.
struct MemberResult {
  BatchMember member;
  BatchItemResult item;
  bool body_truncated = false;
};

// The bytes of a batch response read for splitting (whatever max_body_bytes
// is), and of all members' bodies in its result together.
inline constexpr std::size_t kMaxBatchResponseBytes = 32u << 20;
// The members of one batch result stay under this on the wire, so it fits
// in a RESULTS message (a hostile response could escape to more).
inline constexpr std::size_t kMaxBatchMembersWireBytes = 40u << 20;

// One wire Result, or a batch result when `batch` is set (then id and attempt
// are not sent). `session` is not sent: it tags the broker session the job
// arrived in, for credit accounting.
struct JobResult {
  JobId id = 0;
  std::int64_t attempt = 0;
  std::optional<std::int64_t> batch;
  Outcome outcome = Outcome::kTransient;
  int status = 0;
  std::string error;
  std::map<std::string, std::string> headers;
  std::string body;
  bool body_truncated = false;
  Millis started_ms = 0;
  double duration_ms = 0;
  std::uint64_t session = 0;
  // The rate-limit observation (common/ratelimit.h) as JSON; null when the
  // response held nothing worth reporting.
  nlohmann::json observation;
  // The call's real cost read from the response ([api.NAME] actual_cost).
  std::optional<double> actual_cost;
  // A batch result's split: members, or why the response did not split.
  // Neither when the call failed as a whole.
  std::optional<std::vector<MemberResult>> members;
  std::optional<std::string> split_error;

  // Appends the Result's JSON text (schema/wire_protocol.md "RESULTS").
  void write_json(std::string& out) const;
  // The same text read back as a document (what the broker will see).
  nlohmann::json to_json() const;
};

// An empty Result addressed to a JOBS entry's job (its id and attempt) or
// batch (its id), when that much of the entry is readable.
std::optional<JobResult> addressee(const nlohmann::json& j);

// The number at `pointer` in a JSON response body: the call's real cost.
// Empty when the body is not JSON or holds no non-negative number there.
std::optional<double> read_actual_cost(std::string_view body,
                                       const std::string& pointer);

// A Result for a job that was not sent (refused, over capacity, shutdown).
JobResult refusal(JobId id, std::int64_t attempt, Outcome outcome,
                  std::string error, Millis now_ms);

// A parsed URL of curl's (CURLU). The handle that was checked is the one
// handed to curl (CURLOPT_CURLU), so what is sent is what was checked.
struct UrlDeleter {
  void operator()(CURLU* u) const { curl_url_cleanup(u); }
};
using UrlHandle = std::unique_ptr<CURLU, UrlDeleter>;
// The full (normalized) text of a URL handle.
std::string url_text(const CURLU* url);

// An API base URL parsed once (by curl's URL API): what every job's URL is
// checked against.
struct BaseUrl {
  std::string url;  // as configured
  std::string scheme, host, port;
  std::string prefix;  // its path without the trailing '/'; "" for none
  std::string origin;  // scheme://host:port, for error texts
  bool has_userinfo = false;
};
Result<BaseUrl> parse_base_url(std::string_view url);

// An API this worker serves, with its credentials already expanded.
struct ApiRoute {
  std::string name;
  BaseUrl base;
  HeaderList credentials;
  // The values among them that are secrets, for the Redactor: a header
  // named like a credential (authorization, *key*, *token*, *secret*,
  // cookie, password, signature) or whose configured value reads an
  // environment variable. Others ("anthropic-version: 2023-06-01") are not.
  std::vector<std::string> secrets;
  Millis timeout_ms = 30'000;
  std::string dialect = "auto";  // rate-limit header profile
  std::string actual_cost;       // JSON pointer to the real cost, or empty
};

// Expands the ${ENV} references of the API's [api.NAME.headers]. Errors read
// "api.NAME.headers.KEY: environment variable X is not set". Values are never
// part of an error message.
Result<HeaderList> expand_credentials(const ApiConfig& api);

// The route for a configured API: credentials expanded, base URL parsed.
Result<ApiRoute> make_route(const ApiConfig& api);

inline constexpr std::string_view kEscapeError =
    "path escapes the API base URL";

// base_url + path, parsed and normalized by curl's URL API (dot segments
// removed, %2e decoded first), and accepted only if its scheme, host and port
// equal the base URL's and its path lies under the base URL's path. Returns
// the parsed URL, which must be the one sent.
Result<UrlHandle> confine(const BaseUrl& base, std::string_view path);
// The same as text, parsing the base URL first (tests, tools).
Result<std::string> confine_url(std::string_view base_url,
                                std::string_view path);

// The request header lines for curl ("Name: value"): the job's headers minus
// any whose name matches a credential (case-insensitive) or is a framing
// header curl owns (Host, Content-Length, Transfer-Encoding, Connection,
// Upgrade, Expect), then the credentials, then Content-Type:
// application/json when there is a body and no content type. A header name
// that is not a token or a value with CR, LF or NUL is an error.
Result<std::vector<std::string>> request_header_lines(
    const HeaderList& job_headers, const HeaderList& credentials,
    bool has_body);

// True for an HTTP method: an RFC 9110 token of at most 32 characters.
bool valid_method(std::string_view method);

// Whether a response header (lower-case name) goes into the Result.
bool keep_response_header(std::string_view lower_name);

// Collects the headers of the final response from curl's header lines: a
// status line starts a new response (1xx, redirects). headers() holds the
// kept ones (lower-case, repeated names joined with ", "); all() holds every
// line in order with repeats, for the rate-limit parser. Both are capped.
class ResponseHeaders {
 public:
  static constexpr std::size_t kMaxBytes = 64 << 10;
  static constexpr std::size_t kMaxAllBytes = 64 << 10;
  static constexpr std::size_t kMaxAllLines = 200;
  void on_line(std::string_view line);
  std::map<std::string, std::string>& headers() { return headers_; }
  HeaderList& all() { return all_; }

 private:
  std::map<std::string, std::string> headers_;
  std::string last_kept_;  // name of the last kept header, for folded lines
  std::size_t bytes_ = 0;
  HeaderList all_;
  bool last_in_all_ = false;  // the previous line went into all_
  std::size_t all_bytes_ = 0;
};

// The observation of a response for its Result: the rate-limit parser run
// with the API's dialect over every header line and at most
// kMaxObservedBodyBytes of the body. Null unless worth_reporting().
nlohmann::json observe(int status, const HeaderList& headers,
                       std::string_view body, Millis received_unix_ms,
                       std::string_view dialect);

// What is known about a failed transfer, for its error text.
struct TransferFailure {
  CURLcode code = CURLE_OK;
  std::string_view detail;  // CURLOPT_ERRORBUFFER contents
  int os_errno = 0;
  bool connected = false;  // a connection was established for the request
  Millis timeout_ms = 0;
  Millis connect_timeout_ms = 0;
  std::string origin;  // scheme://host:port
};
// "timeout after 30000 ms", "connection refused (http://127.0.0.1:8080)", ...
std::string describe_failure(const TransferFailure& f);

// A job ready for curl: the confined URL and the final header lines.
struct HttpRequest {
  JobId id = 0;
  std::int64_t attempt = 0;
  std::uint64_t session = 0;  // copied into the JobResult
  UrlHandle url;              // confined to the API; sent as is
  std::string origin;         // scheme://host:port, for error texts
  bool https = false;
  std::string method;
  std::vector<std::string> header_lines;
  std::optional<std::string> body;
  Millis timeout_ms = 30'000;
  std::string dialect = "auto";    // the API's rate-limit header profile
  std::string actual_cost;         // JSON pointer to the real cost, or empty
  std::optional<BatchCall> batch;  // set for a batch call
};

// Confines the job to its API and merges its headers with the credentials.
// An error is the text of a `permanent` refusal.
Result<HttpRequest> prepare_request(const Job& job, const ApiRoute& route);
// The same for a batch: its body built from the members' bodies (an error
// reads "batch body: ..."), then as prepare_request.
Result<HttpRequest> prepare_batch_request(BatchJob job, const ApiRoute& route);

// An empty Result that answers the request's job or batch, in its session.
JobResult result_for(const HttpRequest& request, Millis started_ms);
// A Result for a request that was not completed (not started, aborted).
JobResult refusal(const HttpRequest& request, Outcome outcome,
                  std::string error, Millis now_ms);

// Makes the Result of a batch call (its body read up to
// kMaxBatchResponseBytes, `body_truncated` if cut there) the batch result: a
// 2xx response is split into `members`, each body capped at max_body_bytes
// and at kMaxBatchResponseBytes / members, and the call's body is dropped; a
// 2xx response that does not split gets `split_error`. Without members the
// body is capped at max_body_bytes, as a single job's; a non-2xx response or
// none is a whole-call failure.
void settle_batch(JobResult& r, const BatchCall& call,
                  std::size_t max_body_bytes);

// Replaces the credentials of the APIs a worker serves wherever a response
// repeats them (an upstream that echoes the request, an error page that
// quotes the Authorization header) before a Result leaves the worker: the
// broker stores results and serves them to clients, and credentials must
// never reach it. Each secret (ApiRoute::secrets) of at least
// kMinSecretBytes is replaced, and so is its last word when that is as long (the token of
// "Bearer TOKEN"), by "[redacted]": in the body, the kept headers' values,
// the error text and every batch member's body and error (a body cut at
// the size cap loses a trailing start of one too). Shorter values are left
// alone: they would match ordinary text.
class Redactor {
 public:
  static constexpr std::size_t kMinSecretBytes = 8;
  static constexpr std::string_view kMark = kRedactedMark;
  Redactor() = default;
  explicit Redactor(const std::map<std::string, ApiRoute>& routes);
  // Replaces every secret in `text`; returns whether anything was.
  bool scrub(std::string& text) const;
  // Scrubs every text field of `r`; returns whether anything was.
  bool scrub(JobResult& r) const;
  bool empty() const { return secrets_.empty(); }

 private:
  // A cut text's tail that begins a secret (this many bytes or more) goes
  // too.
  static constexpr std::size_t kMinCutBytes = 4;
  bool scrub_cut(std::string& text) const;
  std::vector<std::string> secrets_;  // longest first
};

// Splits results into RESULTS bodies ({"results": [...]}, as JSON text)
// that stay under `max_bytes`; a single result larger than that goes in a
// body of its own. One body unless the results are huge.
std::vector<std::string> pack_results(const std::vector<JobResult>& results,
                                      std::size_t max_bytes);

}  // namespace pacer::worker
