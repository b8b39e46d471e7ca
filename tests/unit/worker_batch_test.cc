// The worker's side of batch jobs: reading a batch job off the wire, building
// its one request, and turning the call's response into the batch result.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "worker/request.h"

using namespace pacer;
using namespace pacer::worker;
using Json = nlohmann::json;

namespace {

// The protocol's example batch job.
Json example() {
  return Json::parse(R"({
    "batch": 17, "api": "echo", "method": "POST", "path": "/v1/batch",
    "timeout_ms": 30000, "headers": {"X-Trace": "abc"},
    "spec": {"request_array": "/inputs", "member_pointer": "",
             "body_template": {}, "response_array": "/results",
             "item_error": "", "item_status": "", "max_items": 50,
             "max_bytes": 1048576},
    "members": [{"id": 42, "attempt": 3, "body": "{\"n\":1}"},
                {"id": 43, "attempt": 1, "body": "{\"n\":2}"}]})");
}

std::string parse_error(const Json& j) {
  auto r = parse_batch_job(j);
  REQUIRE_FALSE(r.ok());
  return r.error();
}

ApiRoute route(const std::string& base = "http://127.0.0.1:8080") {
  ApiConfig api;
  api.name = "echo";
  api.base_url = base;
  api.headers = {{"Authorization", "Bearer s"}};
  api.timeout_ms = 1234;
  auto made = make_route(api);
  REQUIRE(made.ok());
  return *made;
}

BatchCall call(std::size_t members, const std::string& item_error = "",
               const std::string& item_status = "") {
  BatchCall c;
  c.id = 17;
  c.spec.max_items = 50;
  c.spec.request_array = "/inputs";
  c.spec.response_array = "/results";
  c.spec.item_error = item_error;
  c.spec.item_status = item_status;
  for (std::size_t i = 0; i < members; ++i)
    c.members.push_back({static_cast<JobId>(100 + i), 1});
  return c;
}

// A completed call's result before settle_batch.
JobResult response(int status, std::string body, bool truncated = false) {
  JobResult r;
  r.status = status;
  r.outcome = classify_status(status);
  r.body = std::move(body);
  r.body_truncated = truncated;
  r.started_ms = 1000;
  return r;
}

}  // namespace

TEST_CASE("parse_batch_job reads the protocol's example") {
  const Json j = example();
  CHECK(is_batch_job(j));
  CHECK(batch_id(j) == std::optional<std::int64_t>(17));
  auto b = parse_batch_job(j);
  REQUIRE_MESSAGE(b.ok(), b.error());
  CHECK(b->batch.id == 17);
  CHECK(b->call.api == "echo");
  CHECK(b->call.method == "POST");
  CHECK(b->call.path == "/v1/batch");
  CHECK(b->call.timeout_ms == std::optional<Millis>(30000));
  REQUIRE(b->call.headers.size() == 1);
  CHECK(b->call.headers[0] ==
        std::make_pair(std::string("X-Trace"), std::string("abc")));
  CHECK_FALSE(b->call.body.has_value());
  CHECK(b->batch.spec.request_array == "/inputs");
  CHECK(b->batch.spec.response_array == "/results");
  CHECK(b->batch.spec.max_items == 50);
  REQUIRE(b->batch.members.size() == 2);
  CHECK(b->batch.members[0].id == 42);
  CHECK(b->batch.members[0].attempt == 3);
  CHECK(b->batch.members[1].id == 43);
  CHECK(b->batch.members[1].attempt == 1);
  CHECK(b->bodies ==
        std::vector<std::optional<std::string>>{"{\"n\":1}", "{\"n\":2}"});

  // An absent or null body is an absent member body; POST is the default.
  Json k = example();
  k.erase("method");
  k["members"][0].erase("body");
  k["members"][1]["body"] = nullptr;
  auto absent = parse_batch_job(k);
  REQUIRE_MESSAGE(absent.ok(), absent.error());
  CHECK(absent->call.method == "POST");
  CHECK(absent->bodies == std::vector<std::optional<std::string>>(2));
}

TEST_CASE("a single job is not a batch job, even with \"batch\": null") {
  CHECK_FALSE(is_batch_job({{"id", 1}, {"attempt", 1}, {"api", "a"}}));
  CHECK_FALSE(is_batch_job({{"id", 1}, {"batch", nullptr}}));
  CHECK_FALSE(is_batch_job(Json::array()));
  CHECK(is_batch_job({{"batch", "x"}}));  // a batch job, malformed
}

TEST_CASE("batch_id is usable only when it is a positive integer") {
  CHECK(batch_id({{"batch", 1}}) == std::optional<std::int64_t>(1));
  CHECK_FALSE(batch_id({{"batch", 0}}));
  CHECK_FALSE(batch_id({{"batch", -3}}));
  CHECK_FALSE(batch_id({{"batch", "17"}}));
  CHECK_FALSE(batch_id({{"batch", 1.5}}));
  CHECK_FALSE(batch_id({{"batch", std::uint64_t{1} << 63}}));
  CHECK_FALSE(batch_id(Json(5)));
}

TEST_CASE("parse_batch_job names what is wrong") {
  auto with = [](const char* key, Json value) {
    Json j = example();
    if (value.is_discarded())
      j.erase(key);
    else
      j[key] = std::move(value);
    return j;
  };
  const Json absent(Json::value_t::discarded);
  CHECK(parse_error(Json::array()) == "a batch job must be a JSON object");
  CHECK(parse_error(with("batch", 0)) == "'batch' must be a positive integer");
  CHECK(parse_error(with("api", absent)) == "'api' must be a non-empty string");
  CHECK(parse_error(with("method", "GET /")) ==
        "'method' is not a valid HTTP method");
  CHECK(parse_error(with("headers", {{"X", 1}})) ==
        "'headers.X' must be a string");
  CHECK(parse_error(with("timeout_ms", -1)) ==
        "'timeout_ms' must be a positive integer");
  CHECK(parse_error(with("spec", absent)) == "'spec' is required");
  CHECK(parse_error(with("spec", "x")) == "spec must be a JSON object");
  Json spec = example()["spec"];
  spec["response_array"] = 3;
  CHECK(parse_error(with("spec", spec)) ==
        "spec.response_array must be a JSON pointer string");

  const std::string count =
      "'members' must be an array of 1..50 members (spec.max_items)";
  CHECK(parse_error(with("members", absent)) == count);
  CHECK(parse_error(with("members", Json::array())) == count);
  CHECK(parse_error(with("members", Json::object())) == count);
  Json many = Json::array();
  for (int i = 0; i < 51; ++i) many.push_back({{"id", i}, {"attempt", 1}});
  CHECK(parse_error(with("members", many)) == count);
  many.erase(many.size() - 1);
  CHECK(parse_batch_job(with("members", many)).ok());

  CHECK(parse_error(with("members", {7})) == "'members[0]' must be an object");
  CHECK(parse_error(with("members", {{{"id", 1}, {"attempt", 1}},
                                     {{"id", "2"}, {"attempt", 1}}})) ==
        "'members[1].id' must be an integer");
  CHECK(parse_error(with("members", {{{"id", 1}}})) ==
        "'members[0].attempt' must be an integer");
  CHECK(parse_error(
            with("members", {{{"id", 1}, {"attempt", 1}, {"body", {1}}}})) ==
        "'members[0].body' must be a string");
}

TEST_CASE("prepare_batch_request: one request with the built body") {
  auto b = parse_batch_job(example());
  REQUIRE(b.ok());
  auto r = prepare_batch_request(std::move(*b), route());
  REQUIRE_MESSAGE(r.ok(), r.error());
  CHECK(url_text(r->url.get()) == "http://127.0.0.1:8080/v1/batch");
  CHECK(r->method == "POST");
  CHECK(r->body ==
        std::optional<std::string>(R"({"inputs":[{"n":1},{"n":2}]})"));
  CHECK(r->timeout_ms == 30000);
  auto has = [&](const std::string& line) {
    return std::find(r->header_lines.begin(), r->header_lines.end(), line) !=
           r->header_lines.end();
  };
  CHECK(has("X-Trace: abc"));
  CHECK(has("Authorization: Bearer s"));
  CHECK(has("Content-Type: application/json"));
  REQUIRE(r->batch.has_value());
  CHECK(r->batch->id == 17);
  CHECK(r->batch->members.size() == 2);
  CHECK(r->batch->spec.response_array == "/results");

  // A failed request answers the batch, not a job.
  r->session = 4;
  auto refused = refusal(*r, Outcome::kTransient, "worker shutting down", 5);
  CHECK(refused.batch == std::optional<std::int64_t>(17));
  CHECK(refused.session == 4);
  auto wire = refused.to_json();
  CHECK(wire["batch"] == 17);
  CHECK_FALSE(wire.contains("id"));
  CHECK(wire["outcome"] == "transient");
  CHECK(wire["error"] == "worker shutting down");
  CHECK_FALSE(wire.contains("members"));
  CHECK_FALSE(wire.contains("split_error"));
}

TEST_CASE("prepare_batch_request: build and path errors are refusals") {
  Json j = example();
  j["members"][1]["body"] = "not json";
  auto bad = parse_batch_job(j);
  REQUIRE(bad.ok());
  auto r = prepare_batch_request(std::move(*bad), route());
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().starts_with("batch body: batch member 1 body is not JSON"));

  j = example();
  j["spec"]["max_bytes"] = 20;
  auto big = parse_batch_job(j);
  REQUIRE(big.ok());
  auto over = prepare_batch_request(std::move(*big), route());
  REQUIRE_FALSE(over.ok());
  CHECK(over.error().starts_with("batch body: batch member 1 takes the body"));

  j = example();
  j["path"] = "/../admin";
  auto escape = parse_batch_job(j);
  REQUIRE(escape.ok());
  auto esc = prepare_batch_request(std::move(*escape), route("http://h/v1"));
  REQUIRE_FALSE(esc.ok());
  CHECK(esc.error() == "path escapes the API base URL");
}

TEST_CASE("settle_batch: a 2xx response split into the members, in order") {
  BatchCall c = call(3, "/error", "/status");
  JobResult r = response(200, R"({"results": [
      {"echo": 1}, {"error": "bad input", "status": 422}, {"status": 201}],
      "usage": {"total_tokens": 9}})");
  r.actual_cost = 9;
  settle_batch(r, c, 1 << 20);
  CHECK(r.batch == std::optional<std::int64_t>(17));
  CHECK_FALSE(r.split_error);
  REQUIRE(r.members);
  REQUIRE(r.members->size() == 3);
  CHECK(r.body.empty());

  const Json wire = r.to_json();
  CHECK(wire == Json::parse(R"({
      "batch": 17, "outcome": "success", "status": 200, "error": "",
      "headers": {}, "observation": null, "started_ms": 1000,
      "duration_ms": 0.0, "actual_cost": 9.0,
      "members": [
        {"id": 100, "attempt": 1, "ok": true, "body": "{\"echo\":1}",
         "body_truncated": false},
        {"id": 101, "attempt": 1, "ok": false,
         "body": "{\"error\":\"bad input\",\"status\":422}",
         "body_truncated": false, "error": "status 422: bad input",
         "status": 422},
        {"id": 102, "attempt": 1, "ok": true, "body": "{\"status\":201}",
         "body_truncated": false, "status": 201}]})"));
}

TEST_CASE("settle_batch: member bodies are capped, on a character boundary") {
  BatchCall c = call(2);
  // "é" is two bytes: a cut inside it must not leave half of it.
  const std::string item = "\"" + std::string(9, 'a') + "\xc3\xa9zz\"";
  JobResult r = response(200, "{\"results\": [" + item + ", 1]}");
  settle_batch(r, c, 11);
  REQUIRE(r.members);
  CHECK((*r.members)[0].item.body == "\"" + std::string(9, 'a'));
  CHECK((*r.members)[0].body_truncated);
  CHECK((*r.members)[1].item.body == "1");
  CHECK_FALSE((*r.members)[1].body_truncated);

  // The other cap: 32 MiB shared by the members.
  BatchCall many = call(4096);
  const std::size_t share = kMaxBatchResponseBytes / 4096;  // 8 KiB
  std::string body = "{\"results\": [";
  for (int i = 0; i < 4096; ++i)
    body += (i ? ",\"" : "\"") + std::string(share + 10, 'x') + "\"";
  body += "]}";
  JobResult big = response(200, body);
  settle_batch(big, many, 1 << 20);
  REQUIRE(big.members);
  CHECK((*big.members)[0].item.body.size() == share);
  CHECK((*big.members)[4095].body_truncated);
}

TEST_CASE("settle_batch: a response that does not split says why") {
  BatchCall c = call(3);
  SUBCASE("a result short") {
    JobResult r = response(200, R"({"results": [1, 2]})");
    settle_batch(r, c, 1 << 20);
    CHECK_FALSE(r.members);
    CHECK(r.split_error == "expected 3 results at /results, got 2");
    CHECK(r.body == R"({"results": [1, 2]})");
    const Json wire = r.to_json();
    CHECK(wire["split_error"] == "expected 3 results at /results, got 2");
    CHECK(wire["body"] == R"({"results": [1, 2]})");
    CHECK(wire["body_truncated"] == false);
    CHECK(wire["outcome"] == "success");  // the call itself was 2xx
    CHECK_FALSE(wire.contains("members"));
  }
  SUBCASE("not JSON: the body is capped at max_body_bytes") {
    JobResult r = response(200, "upstream hiccup: not JSON at all");
    settle_batch(r, c, 8);
    REQUIRE(r.split_error);
    CHECK(r.split_error->find("text/plain-looking 'upstream hiccup") !=
          std::string::npos);
    CHECK(r.body == "upstream");
    CHECK(r.body_truncated);
  }
  SUBCASE("over the batch response cap") {
    JobResult r = response(200, std::string(100, '['), /*truncated=*/true);
    settle_batch(r, c, 10);
    CHECK(r.split_error ==
          "expected a response of at most 33554432 bytes to "
          "split; got more");
    CHECK(r.body.size() == 10);
    CHECK(r.body_truncated);
  }
}

TEST_CASE("settle_batch: a whole-call failure is left whole") {
  BatchCall c = call(2);
  JobResult limited = response(429, std::string(50, 'x'));
  limited.error = "HTTP 429";
  settle_batch(limited, c, 20);
  CHECK_FALSE(limited.members);
  CHECK_FALSE(limited.split_error);
  CHECK(limited.body == std::string(20, 'x'));
  CHECK(limited.body_truncated);
  const Json wire = limited.to_json();
  CHECK(wire["batch"] == 17);
  CHECK(wire["status"] == 429);
  CHECK(wire["outcome"] == "rate_limited");
  CHECK_FALSE(wire.contains("members"));
  CHECK_FALSE(wire.contains("split_error"));

  JobResult none = response(0, "");
  none.outcome = Outcome::kTransient;
  none.error = "connection refused";
  settle_batch(none, c, 20);
  CHECK_FALSE(none.members);
  CHECK_FALSE(none.split_error);
  CHECK(none.to_json()["error"] == "connection refused");
}

TEST_CASE("settle_batch: members too big for a RESULTS message split_error") {
  // Quotes double on the wire: 4 members of 6 MiB each would take ~48 MiB.
  BatchCall c = call(4);
  const std::string item = "\"" + std::string(3 << 20, '\'') + "\"";
  std::string quotes;
  quotes.reserve(6 << 20);
  for (int i = 0; i < (3 << 20); ++i) quotes += "\\\"";
  std::string body = "{\"results\": [";
  for (int i = 0; i < 4; ++i) body += (i ? ",\"" : "\"") + quotes + "\"";
  body += "]}";
  JobResult r = response(200, body);
  settle_batch(r, c, 8 << 20);
  CHECK_FALSE(r.members);
  REQUIRE(r.split_error);
  CHECK(r.split_error->find("over " +
                            std::to_string(kMaxBatchMembersWireBytes)) !=
        std::string::npos);
  CHECK(r.body.size() == (8u << 20));

  // The same volume without quotes fits.
  body = "{\"results\": [";
  for (int i = 0; i < 4; ++i) body += (i ? "," : "") + item;
  body += "]}";
  JobResult plain = response(200, body);
  settle_batch(plain, c, 8 << 20);
  CHECK(plain.members);
}

TEST_CASE("pack_results counts members' bodies") {
  BatchCall c = call(10);
  std::string body = "{\"results\": [";
  for (int i = 0; i < 10; ++i)
    body += (i ? ",\"" : "\"") + std::string(3000, 'y') + "\"";
  body += "]}";
  JobResult r = response(200, body);
  settle_batch(r, c, 1 << 20);
  REQUIRE(r.members);
  JobResult single = refusal(1, 1, Outcome::kPermanent, "nope", 1);
  auto packed = pack_results({r, single, r}, 40'000);
  std::size_t batches = 0;
  for (const auto& p : packed) {
    CHECK(p.size() <= 40'000);
    const Json body = Json::parse(p);
    for (const auto& e : body["results"]) batches += e.contains("batch");
  }
  CHECK(packed.size() > 1);
  CHECK(batches == 2);
}

TEST_CASE("addressee: whom a JOBS entry's refusal answers") {
  auto job = addressee({{"id", 7}, {"attempt", 2}, {"api", 5}});
  REQUIRE(job);
  CHECK(job->id == 7);
  CHECK(job->attempt == 2);
  CHECK_FALSE(job->batch);
  CHECK(job->to_json().contains("id"));

  auto batch = addressee({{"batch", 17}, {"members", "junk"}});
  REQUIRE(batch);
  CHECK(batch->batch == std::optional<std::int64_t>(17));
  CHECK(batch->to_json()["batch"] == 17);
  CHECK_FALSE(batch->to_json().contains("id"));

  // Unanswerable: logged and dropped by the worker.
  CHECK_FALSE(addressee({{"batch", "17"}, {"id", 1}, {"attempt", 1}}));
  CHECK_FALSE(addressee({{"batch", 0}}));
  CHECK_FALSE(addressee({{"api", "echo"}}));
  CHECK_FALSE(addressee(Json(5)));
}
