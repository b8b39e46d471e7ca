#include <doctest/doctest.h>

#include <cerrno>
#include <cstdlib>
#include <random>

#include "common/json_reader.h"
#include "common/ratelimit.h"
#include "worker/request.h"

using namespace pacer;
using namespace pacer::worker;

namespace {

std::string confined(std::string_view base, std::string_view path) {
  auto r = confine_url(base, path);
  return r ? *r : "ERROR: " + r.error();
}

bool escapes(std::string_view base, std::string_view path) {
  auto r = confine_url(base, path);
  return !r && r.error() == kEscapeError;
}

bool refused(std::string_view base, std::string_view path) {
  return !confine_url(base, path).ok();
}

bool has_line(const std::vector<std::string>& lines, const std::string& line) {
  return std::find(lines.begin(), lines.end(), line) != lines.end();
}

int count_prefix_ci(const std::vector<std::string>& lines, std::string prefix) {
  int n = 0;
  for (auto l : lines) {
    for (auto& c : l)
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    for (auto& c : prefix)
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (l.starts_with(prefix)) ++n;
  }
  return n;
}

}  // namespace

TEST_CASE("confine_url: ordinary paths stay on the API") {
  CHECK(confined("http://127.0.0.1:8080", "/v1/echo") ==
        "http://127.0.0.1:8080/v1/echo");
  CHECK(confined("http://127.0.0.1:8080", "/v1/echo?x=1&y=/../z") ==
        "http://127.0.0.1:8080/v1/echo?x=1&y=/../z");
  CHECK(confined("https://api.example.com/v1", "/chat") ==
        "https://api.example.com/v1/chat");
  CHECK(confined("https://api.example.com/v1", "/") ==
        "https://api.example.com/v1/");
  // Dot segments that stay under the prefix are normalized, not refused.
  CHECK(confined("https://api.example.com/v1", "/a/../b") ==
        "https://api.example.com/v1/b");
  CHECK(confined("https://api.example.com/v1", "/a/%2e%2e/b") ==
        "https://api.example.com/v1/b");
}

TEST_CASE("confine_url: dot segments cannot leave the base path") {
  const std::string base = "https://api.example.com/v1";
  CHECK(escapes(base, "/../x"));
  CHECK(escapes(base, "/../../../etc/passwd"));
  CHECK(escapes(base, "/a/../../x"));
  CHECK(escapes(base, "/%2e%2e/x"));
  CHECK(escapes(base, "/%2E%2e/x"));
  CHECK(escapes(base, "/.%2e/x"));
  // Encoded or back slashes that some servers split on.
  CHECK(escapes(base, "/..%2fadmin"));
  CHECK(escapes(base, "/%2e%2e%2Fadmin"));
  CHECK(escapes(base, "/..%5cadmin"));
  CHECK(escapes(base, "/..\\admin"));
  // Without a prefix ".." at the root is just "/".
  CHECK(confined("http://127.0.0.1:8080", "/../x") ==
        "http://127.0.0.1:8080/x");
  CHECK(confined("http://127.0.0.1:8080", "/%2e%2e/x") ==
        "http://127.0.0.1:8080/x");
}

TEST_CASE("confine_url: the prefix is matched by whole segments") {
  CHECK(escapes("https://api.example.com/v1", "x"));  // no leading '/'
  CHECK(confined("https://api.example.com/v1", "/x") ==
        "https://api.example.com/v1/x");
  // "/v1" + "/../v10/x" -> "/v10/x": shares the text prefix, not the segment.
  CHECK(escapes("https://api.example.com/v1", "/../v10/x"));
  CHECK(confined("https://api.example.com/v1", "/../v1/x") ==
        "https://api.example.com/v1/x");
}

TEST_CASE("confine_url: another host, port, scheme or user is refused") {
  const std::string base = "http://127.0.0.1:8080";
  // "//evil.com/x" is a path on our host, never a host switch.
  CHECK(confined(base, "//evil.com/x") == "http://127.0.0.1:8080//evil.com/x");
  CHECK(confined("https://api.example.com/v1", "//evil.com/x") ==
        "https://api.example.com/v1//evil.com/x");
  CHECK(escapes(base, "@evil.com/x"));
  CHECK(escapes("https://api.example.com", "@evil.com/x"));
  CHECK(escapes("https://api.example.com", ".evil.com/x"));
  CHECK(escapes("https://api.example.com", ":8443/x"));
  // Absolute URLs are not paths.
  CHECK(escapes(base, "http://evil.com/x"));
  CHECK(escapes(base, "https://127.0.0.1:8080/x"));
  CHECK(escapes(base, "file:///etc/passwd"));
  // Junk is refused as an invalid URL.
  CHECK(refused(base, "/a b"));
  CHECK(refused(base, std::string("/a\r\nHost: evil.com")));
  // The default port equals the explicit one.
  CHECK(confined("http://127.0.0.1:80", "/x") == "http://127.0.0.1:80/x");
  CHECK(confined("http://127.0.0.1", "/x") == "http://127.0.0.1/x");
}

TEST_CASE("parse_base_url: origin and prefix") {
  auto a = parse_base_url("http://127.0.0.1:8080/v1/x");
  REQUIRE(a.ok());
  CHECK(a->origin == "http://127.0.0.1:8080");
  CHECK(a->prefix == "/v1/x");
  auto b = parse_base_url("HTTPS://API.example.com");
  REQUIRE(b.ok());
  CHECK(b->origin == "https://api.example.com:443");
  CHECK(b->prefix == "");
  CHECK_FALSE(parse_base_url("ftp://example.com").ok());
  CHECK_FALSE(parse_base_url("not a url").ok());
}

TEST_CASE("request_header_lines: a job cannot set or override a credential") {
  HeaderList creds = {{"Authorization", "Bearer secret"}, {"X-Api-Key", "k"}};
  HeaderList job = {{"authorization", "Bearer evil"},
                    {"X-API-KEY", "evil"},
                    {"X-Trace", "abc"}};
  auto lines = request_header_lines(job, creds, false);
  REQUIRE(lines.ok());
  CHECK(has_line(*lines, "Authorization: Bearer secret"));
  CHECK(has_line(*lines, "X-Api-Key: k"));
  CHECK(has_line(*lines, "X-Trace: abc"));
  CHECK(count_prefix_ci(*lines, "authorization:") == 1);
  CHECK(count_prefix_ci(*lines, "x-api-key:") == 1);
  CHECK(count_prefix_ci(*lines, "content-type") == 0);
  for (const auto& l : *lines) CHECK(l.find("evil") == std::string::npos);
}

TEST_CASE("request_header_lines: framing headers dropped, injection refused") {
  HeaderList job = {{"Host", "evil.com"},
                    {"Content-Length", "5"},
                    {"Transfer-Encoding", "chunked"},
                    {"X-Empty", ""}};
  auto lines = request_header_lines(job, {}, false);
  REQUIRE(lines.ok());
  CHECK(count_prefix_ci(*lines, "host") == 0);
  CHECK(count_prefix_ci(*lines, "content-length") == 0);
  CHECK(count_prefix_ci(*lines, "transfer-encoding") == 0);
  CHECK(has_line(*lines, "X-Empty;"));
  CHECK(has_line(*lines, "Expect:"));

  CHECK_FALSE(
      request_header_lines({{"X-A", "b\r\nAuthorization: evil"}}, {}, false)
          .ok());
  CHECK_FALSE(request_header_lines({{"X-A", "b\nc"}}, {}, false).ok());
  CHECK_FALSE(request_header_lines({{"Bad Name", "v"}}, {}, false).ok());
  CHECK_FALSE(request_header_lines({{"X-Colon:", "v"}}, {}, false).ok());
  CHECK_FALSE(
      request_header_lines({{"X-Big", std::string(9000, 'a')}}, {}, false)
          .ok());
}

TEST_CASE("request_header_lines: JSON content type for bodies") {
  auto with_body = request_header_lines({}, {}, true);
  REQUIRE(with_body.ok());
  CHECK(has_line(*with_body, "Content-Type: application/json"));

  auto own = request_header_lines({{"content-type", "text/plain"}}, {}, true);
  REQUIRE(own.ok());
  CHECK(has_line(*own, "content-type: text/plain"));
  CHECK(count_prefix_ci(*own, "content-type") == 1);

  auto configured =
      request_header_lines({{"Content-Type", "text/plain"}},
                           {{"content-type", "application/x-ndjson"}}, true);
  REQUIRE(configured.ok());
  CHECK(count_prefix_ci(*configured, "content-type") == 1);
  CHECK(has_line(*configured, "content-type: application/x-ndjson"));
}

TEST_CASE("keep_response_header keeps retry and rate-limit headers only") {
  for (const char* n :
       {"retry-after", "retry-after-ms", "x-ms-retry-after-ms", "content-type",
        "date", "x-ratelimit-remaining", "ratelimit-policy", "ratelimit",
        "x-rate-limit-reset", "anthropic-ratelimit-tokens-remaining"})
    CHECK_MESSAGE(keep_response_header(n), n);
  for (const char* n : {"set-cookie", "server", "content-length",
                        "authorization", "x-request-id", "rate", "retry"})
    CHECK_MESSAGE(!keep_response_header(n), n);
}

TEST_CASE(
    "ResponseHeaders keeps the final response's headers, joined and "
    "lower-cased") {
  ResponseHeaders h;
  h.on_line("HTTP/1.1 100 Continue\r\n");
  h.on_line("X-RateLimit-Remaining: 99\r\n");
  h.on_line("\r\n");
  h.on_line("HTTP/1.1 429 Too Many Requests\r\n");
  h.on_line("Content-Type: application/json\r\n");
  h.on_line("Retry-After:  2 \r\n");
  h.on_line("RateLimit-Policy: 10;w=1\r\n");
  h.on_line("ratelimit-policy: 100;w=60\r\n");
  h.on_line("Set-Cookie: session=secret\r\n");
  h.on_line("X-Multi: a\r\n");
  h.on_line("\r\n");
  auto& m = h.headers();
  CHECK(m.count("x-ratelimit-remaining") == 0);  // belonged to the 100 response
  CHECK(m.at("content-type") == "application/json");
  CHECK(m.at("retry-after") == "2");
  CHECK(m.at("ratelimit-policy") == "10;w=1, 100;w=60");
  CHECK(m.count("set-cookie") == 0);
  CHECK(m.size() == 3);
}

TEST_CASE("ResponseHeaders caps the bytes it keeps") {
  ResponseHeaders h;
  h.on_line("HTTP/2 200\r\n");
  std::string line = "x-ratelimit-junk: " + std::string(1000, 'a') + "\r\n";
  for (int i = 0; i < 1000; ++i) h.on_line(line);
  CHECK(h.headers().at("x-ratelimit-junk").size() <=
        ResponseHeaders::kMaxBytes);
}

TEST_CASE("expand_credentials: ${ENV} references and their errors") {
  ApiConfig api;
  api.name = "openai";
  api.headers = {{"Authorization", "Bearer ${PACER_UNIT_TEST_TOKEN}"}};
  ::unsetenv("PACER_UNIT_TEST_TOKEN");
  auto missing = expand_credentials(api);
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error() ==
        "api.openai.headers.Authorization: environment variable "
        "PACER_UNIT_TEST_TOKEN is not set");

  ::setenv("PACER_UNIT_TEST_TOKEN", "sk-123", 1);
  auto ok = expand_credentials(api);
  REQUIRE(ok.ok());
  REQUIRE(ok->size() == 1);
  CHECK((*ok)[0].first == "Authorization");
  CHECK((*ok)[0].second == "Bearer sk-123");

  ::setenv("PACER_UNIT_TEST_TOKEN", "sk-1\r\nX-Evil: 1", 1);
  auto injected = expand_credentials(api);
  REQUIRE_FALSE(injected.ok());
  CHECK(injected.error().starts_with("api.openai.headers.Authorization: "));
  CHECK(injected.error().find("sk-1") == std::string::npos);  // never the value

  api.headers = {{"X-Key", "${UNTERMINATED"}};
  auto bad = expand_credentials(api);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().starts_with("api.openai.headers.X-Key: "));
  ::unsetenv("PACER_UNIT_TEST_TOKEN");
}

TEST_CASE("parse_job reads the wire Job and names bad fields") {
  auto j = nlohmann::json::parse(
      R"({"id": 42, "attempt": 3, "api": "echo", "method": "POST",
      "path": "/v1/echo", "headers": {"X-Trace": "abc"}, "body": "{\"n\":1}",
      "timeout_ms": 5000, "batch": null, "future_field": 1})");
  auto job = parse_job(j);
  REQUIRE(job.ok());
  CHECK(job->id == 42);
  CHECK(job->attempt == 3);
  CHECK(job->api == "echo");
  CHECK(job->method == "POST");
  CHECK(job->path == "/v1/echo");
  REQUIRE(job->headers.size() == 1);
  CHECK(job->body == std::optional<std::string>("{\"n\":1}"));
  CHECK(job->timeout_ms == std::optional<Millis>(5000));

  auto minimal = parse_job({{"id", 1}, {"attempt", 1}, {"api", "a"}});
  REQUIRE(minimal.ok());
  CHECK(minimal->method == "GET");
  CHECK(minimal->path == "/");

  CHECK_FALSE(parse_job({{"attempt", 1}, {"api", "a"}}).ok());
  CHECK_FALSE(parse_job({{"id", "1"}, {"attempt", 1}, {"api", "a"}}).ok());
  CHECK_FALSE(parse_job({{"id", 1}, {"attempt", 1}}).ok());
  CHECK_FALSE(
      parse_job({{"id", 1}, {"attempt", 1}, {"api", "a"}, {"method", "GET /x"}})
          .ok());
  CHECK_FALSE(
      parse_job(
          {{"id", 1}, {"attempt", 1}, {"api", "a"}, {"headers", {{"a", 1}}}})
          .ok());
  CHECK_FALSE(
      parse_job({{"id", 1}, {"attempt", 1}, {"api", "a"}, {"body", 5}}).ok());
  CHECK_FALSE(
      parse_job({{"id", 1}, {"attempt", 1}, {"api", "a"}, {"timeout_ms", 0}})
          .ok());
  CHECK_FALSE(
      parse_job(
          {{"id", 1}, {"attempt", 1}, {"api", "a"}, {"method", "GET\r\nX: y"}})
          .ok());
  CHECK(parse_job(
            {{"id", 1}, {"attempt", 1}, {"api", "a"}, {"method", "PROPFIND"}})
            .ok());
  CHECK(job_ids({{"id", 7}, {"attempt", 2}, {"api", 5}}) ==
        std::make_pair(JobId{7}, std::int64_t{2}));
  // An id past INT64_MAX must not wrap to a different job's id.
  CHECK_FALSE(
      job_ids({{"id", std::uint64_t{1} << 63}, {"attempt", 1}}).has_value());
  CHECK_FALSE(job_ids(nlohmann::json::array()).has_value());
}

TEST_CASE("prepare_request confines, merges and picks the timeout") {
  ApiConfig api;
  api.name = "echo";
  api.base_url = "http://127.0.0.1:8080/v1";
  api.headers = {{"Authorization", "Bearer s"}};
  api.timeout_ms = 1234;
  auto made = make_route(api);
  REQUIRE(made.ok());
  const ApiRoute& route = *made;
  CHECK(route.base.prefix == "/v1");
  CHECK(route.base.port == "8080");
  Job job;
  job.id = 5;
  job.attempt = 1;
  job.api = "echo";
  job.method = "POST";
  job.path = "/echo";
  job.headers = {{"Authorization", "x"}};
  job.body = "{}";
  auto r = prepare_request(job, route);
  REQUIRE(r.ok());
  CHECK(url_text(r->url.get()) == "http://127.0.0.1:8080/v1/echo");
  CHECK(r->origin == "http://127.0.0.1:8080");
  CHECK_FALSE(r->https);
  CHECK(r->timeout_ms == 1234);
  CHECK(r->dialect == "auto");
  CHECK(count_prefix_ci(r->header_lines, "authorization") == 1);
  CHECK(has_line(r->header_lines, "Authorization: Bearer s"));
  job.timeout_ms = 50;
  CHECK(prepare_request(job, route)->timeout_ms == 50);
  job.path = "/../admin";
  auto esc = prepare_request(job, route);
  REQUIRE_FALSE(esc.ok());
  CHECK(esc.error() == "path escapes the API base URL");

  api.dialect = "github";
  auto github = make_route(api);
  REQUIRE(github.ok());
  CHECK(github->dialect == "github");
  job.path = "/echo";
  CHECK(prepare_request(job, *github)->dialect == "github");
}

TEST_CASE("ResponseHeaders::all keeps every line of the final response") {
  ResponseHeaders h;
  h.on_line("HTTP/1.1 100 Continue\r\n");
  h.on_line("X-Early: 1\r\n");
  h.on_line("\r\n");
  h.on_line("HTTP/1.1 429 Too Many Requests\r\n");
  h.on_line("RateLimit: \"a\";r=0;t=5\r\n");
  h.on_line("Set-Cookie: s=1\r\n");
  h.on_line("ratelimit: \"b\";r=1\r\n");
  h.on_line("X-Folded: one\r\n");
  h.on_line("  two\r\n");
  h.on_line("\r\n");
  const HeaderList want = {{"ratelimit", "\"a\";r=0;t=5"},
                           {"set-cookie", "s=1"},
                           {"ratelimit", "\"b\";r=1"},
                           {"x-folded", "one two"}};
  CHECK(h.all() == want);
  // The kept map is unchanged by the second list.
  CHECK(h.headers().at("ratelimit") == "\"a\";r=0;t=5, \"b\";r=1");
  CHECK(h.headers().count("set-cookie") == 0);

  ResponseHeaders many;
  many.on_line("HTTP/2 200\r\n");
  for (int i = 0; i < 1000; ++i) many.on_line("x-a: " + std::to_string(i));
  CHECK(many.all().size() == ResponseHeaders::kMaxAllLines);
  ResponseHeaders big;
  big.on_line("HTTP/2 200\r\n");
  for (int i = 0; i < 100; ++i)
    big.on_line("x-big: " + std::string(5000, 'b') + "\r\n");
  std::size_t bytes = 0;
  for (const auto& [k, v] : big.all()) bytes += k.size() + v.size() + 2;
  CHECK(bytes <= ResponseHeaders::kMaxAllBytes);
  CHECK(big.all().size() < 100);
}

TEST_CASE("observe: attached when worth reporting, null otherwise") {
  const Millis now = 1'735'689'600'000;
  SUBCASE("a plain success has nothing to report") {
    CHECK(
        observe(200, {{"content-type", "application/json"}}, "{}", now, "auto")
            .is_null());
    CHECK(observe(204, {}, "", now, "auto").is_null());
  }
  SUBCASE("a 429 with Retry-After") {
    auto j =
        observe(429, {{"retry-after", "2"}}, "{\"error\":\"x\"}", now, "auto");
    REQUIRE(j.is_object());
    CHECK(j["verdict"] == "throttled");
    CHECK(j["blocking"] == true);
    CHECK(j["retry_after_ms"] == 2000);
    CHECK(j["wait_ms"] == 2000);
    CHECK(j["http_status"] == 429);
    CHECK(j["received_unix_ms"] == now);
  }
  SUBCASE("limits on a success, repeated lines all seen") {
    auto j = observe(200,
                     {{"x-ratelimit-limit", "100"},
                      {"x-ratelimit-remaining", "10"},
                      {"x-ratelimit-remaining", "5"}},
                     "", now, "auto");
    REQUIRE(j.is_object());
    CHECK(j["verdict"] == "ok");
    REQUIRE(j["limits"].size() == 1);
    CHECK(j["limits"][0]["remaining"] == 5);
    CHECK(j["limits"][0]["flags"] ==
          nlohmann::json::array({"multi_value_min"}));
  }
  SUBCASE("the API's dialect settles the unit") {
    const HeaderList h = {{"x-rate-limit-limit", "10"},
                          {"x-rate-limit-remaining", "0"},
                          {"x-rate-limit-reset", "600000"}};
    CHECK(observe(200, h, "", now, "prisjakt")["wait_ms"] == 600000);
    CHECK(observe(200, h, "", now, "auto")["wait_ms"] == 0);  // epoch: past
  }
  SUBCASE("only the first 64 KiB of a body are read") {
    std::string body = "{\"error\":{\"type\":\"insufficient_quota\"}}";
    CHECK(observe(429, {}, body, now, "auto")["verdict"] == "quota_exhausted");
    std::string padded(kMaxObservedBodyBytes, ' ');
    CHECK(observe(429, {}, padded + body, now, "auto")["verdict"] ==
          "throttled");
  }
}

TEST_CASE("describe_failure gives clear texts") {
  TransferFailure f;
  f.code = CURLE_OPERATION_TIMEDOUT;
  f.connected = true;
  f.timeout_ms = 30000;
  f.connect_timeout_ms = 10000;
  f.origin = "http://127.0.0.1:8080";
  CHECK(describe_failure(f) == "timeout after 30000 ms");
  f.connected = false;
  CHECK(describe_failure(f) ==
        "connect timeout after 10000 ms (http://127.0.0.1:8080)");
  f.code = CURLE_COULDNT_CONNECT;
  f.os_errno = ECONNREFUSED;
  CHECK(describe_failure(f) == "connection refused (http://127.0.0.1:8080)");
  f.code = CURLE_RECV_ERROR;
  f.os_errno = 0;
  f.detail = "Recv failure: Connection reset by peer";
  CHECK(describe_failure(f) ==
        std::string(curl_easy_strerror(CURLE_RECV_ERROR)) +
            ": Recv failure: Connection reset by peer (http://127.0.0.1:8080)");
}

TEST_CASE("JobResult wire form and pack_results") {
  JobResult r = refusal(9, 2, Outcome::kPermanent, "nope", 1000);
  auto j = r.to_json();
  CHECK(j["id"] == 9);
  CHECK(j["attempt"] == 2);
  CHECK(j["outcome"] == "permanent");
  CHECK(j["status"] == 0);
  CHECK(j["error"] == "nope");
  CHECK(j["headers"].is_object());
  CHECK(j["body"] == "");
  CHECK(j["body_truncated"] == false);
  CHECK(j["started_ms"] == 1000);
  CHECK(j["duration_ms"].is_number());
  CHECK(j["observation"].is_null());
  CHECK_FALSE(j.contains("session"));
  JobResult limited = r;
  limited.observation = observe(429, {{"retry-after", "1"}}, "", 1000, "auto");
  CHECK(limited.to_json()["observation"]["wait_ms"] == 1000);

  std::vector<JobResult> small(100, r);
  auto one = pack_results(small, 48u << 20);
  REQUIRE(one.size() == 1);
  CHECK(nlohmann::json::parse(one[0])["results"].size() == 100);

  JobResult big = r;
  big.body = std::string(4000, 'x');
  std::vector<JobResult> many(10, big);
  auto split = pack_results(many, 10'000);
  std::size_t total = 0;
  for (const auto& body : split) {
    CHECK(body.size() <= 10'000);
    total += nlohmann::json::parse(body)["results"].size();
  }
  CHECK(split.size() > 1);
  CHECK(total == 10);
  CHECK(pack_results({}, 100).empty());
  // One result over the limit still goes, alone.
  JobResult huge = r;
  huge.body = std::string(20'000, 'y');
  auto alone = pack_results({r, huge, r}, 10'000);
  REQUIRE(alone.size() == 3);
  CHECK(nlohmann::json::parse(alone[1])["results"][0]["body"] == huge.body);
}

TEST_CASE("the real cost is read from the response by JSON pointer") {
  CHECK(read_actual_cost(R"({"usage":{"total_tokens":812}})",
                         "/usage/total_tokens") == 812.0);
  CHECK(read_actual_cost(R"({"usage":{"total_tokens":1.5}})",
                         "/usage/total_tokens") == 1.5);
  CHECK_FALSE(read_actual_cost(R"({"usage":{}})", "/usage/total_tokens"));
  CHECK_FALSE(read_actual_cost(R"({"usage":{"total_tokens":"812"}})",
                               "/usage/total_tokens"));
  CHECK_FALSE(read_actual_cost(R"({"usage":{"total_tokens":-3}})",
                               "/usage/total_tokens"));
  CHECK_FALSE(read_actual_cost("not json", "/usage/total_tokens"));
  CHECK_FALSE(read_actual_cost(R"({"a":1})", ""));
  CHECK_FALSE(read_actual_cost(R"([1,2])", "/usage/total_tokens"));

  JobResult r;
  CHECK_FALSE(r.to_json().contains("actual_cost"));
  r.actual_cost = 40;
  CHECK(r.to_json()["actual_cost"] == 40.0);
}

// ---- JOBS entries read from simdjson elements -------------------------------

namespace {

nlohmann::json describe(const Result<Job>& r) {
  if (!r) return {{"error", r.error()}};
  nlohmann::json headers = nlohmann::json::array();
  for (const auto& [k, v] : r->headers) headers.push_back({k, v});
  return {{"id", r->id},
          {"attempt", r->attempt},
          {"api", r->api},
          {"method", r->method},
          {"path", r->path},
          {"headers", headers},
          {"body", r->body ? nlohmann::json(*r->body) : nlohmann::json()},
          {"timeout_ms",
           r->timeout_ms ? nlohmann::json(*r->timeout_ms) : nlohmann::json()}};
}

// parse_job_element and job_ids_element on `text` against the document
// reading of the same text.
void check_job_agrees(const std::string& text) {
  json_view::Parsed parsed(text);
  REQUIRE_MESSAGE(parsed.ok(), text);
  const json_reader::ElementValue e(parsed.root());
  const auto doc = nlohmann::json::parse(text);
  CHECK_MESSAGE(describe(parse_job_element(e)) == describe(parse_job(doc)),
                text);
  CHECK_MESSAGE(job_ids_element(e) == job_ids(doc), text);
}

}  // namespace

TEST_CASE("a JOBS entry reads the same from simdjson as from a document") {
  check_job_agrees(R"({"id":7,"attempt":2,"api":"echo","method":"PUT",
    "path":"/v1/x","headers":{"X-B":"2","X-A":"1","X-B":"3"},"body":"{}",
    "timeout_ms":1500,"unknown":[1]})");
  check_job_agrees(R"({"id":7,"attempt":2,"api":"echo"})");
  check_job_agrees(R"({"id":7,"api":"echo"})");
  check_job_agrees(R"({"id":18446744073709551615,"attempt":1,"api":"e"})");
  check_job_agrees(R"({"id":1,"attempt":1,"api":"e","id":2.5})");
  check_job_agrees(R"([1])");

  std::mt19937_64 rng(20261128);
  auto pick = [&](int n) { return static_cast<int>(rng() % n); };
  const std::vector<nlohmann::json> values = {
      nullptr,
      true,
      0,
      -3,
      7,
      2.5,
      "",
      "x",
      "/v1/echo",
      "GET",
      "po st",
      nlohmann::json::array(),
      nlohmann::json::object(),
      {{"X-A", "1"}, {"x-b", "2"}},
      {{"X-A", 1}},
      std::uint64_t{18'000'000'000'000'000'000u}};
  const std::vector<std::string> keys = {"id",     "attempt",    "api",
                                         "method", "path",       "headers",
                                         "body",   "timeout_ms", "other"};
  for (int i = 0; i < 4000; ++i) {
    nlohmann::json j = nlohmann::json::object();
    if (pick(8)) j["id"] = pick(1000);
    if (pick(8)) j["attempt"] = pick(5);
    if (pick(8)) j["api"] = "echo";
    for (int n = pick(6); n > 0; --n)
      j[keys[pick(keys.size())]] = values[pick(values.size())];
    check_job_agrees(j.dump());
  }
}

TEST_CASE("Redactor replaces the credentials a response repeats") {
  ApiConfig a;
  a.name = "a";
  a.base_url = "http://127.0.0.1:1";
  a.headers = {{"Authorization", "Bearer sk-live-0123456789"},
               {"X-Short-Key", "abc123"},
               {"Anthropic-Version", "2023-06-01"}};
  ApiConfig b = a;
  b.name = "b";
  ::setenv("PACER_TEST_TENANT", "tenant-b-987654321", 1);
  b.headers = {{"X-Tenant", "${PACER_TEST_TENANT}"}};
  std::map<std::string, ApiRoute> routes;
  routes["a"] = make_route(a).value();
  routes["b"] = make_route(b).value();
  // Named like a credential, or read from the environment: secrets.
  CHECK(routes["a"].secrets.size() == 2);
  CHECK(routes["b"].secrets == std::vector<std::string>{"tenant-b-987654321"});
  const Redactor redactor(routes);

  SUBCASE("the whole value and its token, in every text of a Result") {
    JobResult r;
    r.body = R"({"seen":"Bearer sk-live-0123456789","token":"sk-live-0123456789"})";
    r.error = "upstream said: bad tenant tenant-b-987654321";
    r.headers["x-echo"] = "sk-live-0123456789";
    MemberResult m;
    m.item.body = R"({"auth":"tenant-b-987654321"})";
    m.item.error = "tenant-b-987654321 rejected";
    r.members = std::vector<MemberResult>{m};
    CHECK(redactor.scrub(r));
    CHECK(r.body == R"({"seen":"[redacted]","token":"[redacted]"})");
    CHECK(r.error == "upstream said: bad tenant [redacted]");
    CHECK(r.headers["x-echo"] == "[redacted]");
    CHECK((*r.members)[0].item.body == R"({"auth":"[redacted]"})");
    CHECK((*r.members)[0].item.error == "[redacted] rejected");
  }
  SUBCASE("short values, headers that are not secrets, ordinary text") {
    JobResult r;
    r.body = R"({"code":"abc123","word":"Bearer","v":"2023-06-01"})";
    CHECK_FALSE(redactor.scrub(r));
    CHECK(r.body == R"({"code":"abc123","word":"Bearer","v":"2023-06-01"})");
  }
  SUBCASE("a body cut at the cap loses a trailing start of a secret") {
    JobResult r;
    r.body = R"({"token":"sk-live-01)";
    r.body_truncated = true;
    CHECK(redactor.scrub(r));
    CHECK(r.body == R"({"token":"[redacted])");
    // Not cut: the same tail is ordinary text.
    JobResult whole;
    whole.body = "sk-l";
    CHECK_FALSE(redactor.scrub(whole));
  }
  SUBCASE("no credentials: nothing to do") {
    JobResult r;
    r.body = "Bearer sk-live-0123456789";
    CHECK_FALSE(Redactor().scrub(r));
    CHECK(r.body == "Bearer sk-live-0123456789");
  }
}
