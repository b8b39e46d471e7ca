// Batch request building and response splitting: every documented shape,
// every malformed response, and hostile input that must fail cleanly.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "common/batch.h"

using pacer::batch_envelope_bytes;
using pacer::batch_member_bytes;
using pacer::BatchConfig;
using pacer::BatchItemResult;
using pacer::build_batch_body;
using pacer::split_batch_response;
using Bodies = std::vector<std::optional<std::string>>;

namespace {

// The example of the issue and the docs: {"inputs": [...]} -> {"results":
// [...]}
BatchConfig echo() {
  BatchConfig c;
  c.path = "/v1/batch";
  c.max_items = 50;
  c.max_wait_ms = 200;
  c.request_array = "/inputs";
  c.response_array = "/results";
  return c;
}

std::string built(const BatchConfig& c, const Bodies& bodies) {
  auto r = build_batch_body(c, bodies);
  REQUIRE_MESSAGE(r.ok(), r.error());
  return *r;
}

std::string build_error(const BatchConfig& c, const Bodies& bodies) {
  auto r = build_batch_body(c, bodies);
  REQUIRE_FALSE(r.ok());
  return r.error();
}

std::vector<BatchItemResult> split(const BatchConfig& c, std::size_t members,
                                   const std::string& body, int status = 200) {
  auto r = split_batch_response(c, members, status, body);
  REQUIRE_MESSAGE(r.ok(), r.error());
  REQUIRE(r->size() == members);
  return *r;
}

std::string split_error(const BatchConfig& c, std::size_t members,
                        const std::string& body, int status = 200) {
  auto r = split_batch_response(c, members, status, body);
  REQUIRE_FALSE(r.ok());
  return r.error();
}

// What the accumulator would predict for these bodies.
std::size_t predicted(const BatchConfig& c, const Bodies& bodies) {
  std::size_t n = batch_envelope_bytes(c);
  for (const auto& b : bodies) {
    auto m = batch_member_bytes(c, b);
    REQUIRE_MESSAGE(m.ok(), m.error());
    n += *m;
  }
  return n - 1;
}

}  // namespace

TEST_CASE("build: whole member bodies become the array, in order") {
  BatchConfig c = echo();
  Bodies bodies = {R"({"text": "a", "n": 1})", R"( [1, 2] )", R"("s")", "3"};
  std::string body = built(c, bodies);
  CHECK(body == R"({"inputs":[{"text":"a","n":1},[1,2],"s",3]})");
  CHECK(body.size() == predicted(c, bodies));
  CHECK(batch_envelope_bytes(c) == std::string(R"({"inputs":[]})").size());
}

TEST_CASE("build: member_pointer picks part of each body") {
  BatchConfig c = echo();
  c.member_pointer = "/input/text";
  Bodies bodies = {R"({"input": {"text": "first"}, "model": "m"})",
                   R"({"input": {"text": {"rich": true}}})"};
  std::string body = built(c, bodies);
  CHECK(body == R"({"inputs":["first",{"rich":true}]})");
  CHECK(body.size() == predicted(c, bodies));

  c.member_pointer = "/items/1";
  CHECK(built(c, {R"({"items": [10, 20]})"}) == R"({"inputs":[20]})");

  c.member_pointer = "/a~1b/c~0d";  // escaped '/' and '~'
  CHECK(built(c, {R"({"a/b": {"c~d": 7}})"}) == R"({"inputs":[7]})");
}

TEST_CASE("build: the template keeps its keys and order; nested arrays") {
  BatchConfig c = echo();
  c.body_template = nlohmann::ordered_json::parse(
      R"({"model": "embed-small", "options": {"dims": 256}})");
  Bodies bodies = {R"("a")", R"("b")"};
  std::string body = built(c, bodies);
  CHECK(body ==
        R"({"model":"embed-small","options":{"dims":256},"inputs":["a","b"]})");
  CHECK(body.size() == predicted(c, bodies));

  // Intermediate objects are created, existing ones are extended.
  c.request_array = "/options/batch/items";
  body = built(c, bodies);
  CHECK(
      body ==
      R"({"model":"embed-small","options":{"dims":256,"batch":{"items":["a","b"]}}})");
  CHECK(body.size() == predicted(c, bodies));

  c.body_template = nlohmann::ordered_json::object();
  c.request_array = "/a/b/c";
  CHECK(built(c, {"1"}) == R"({"a":{"b":{"c":[1]}}})");

  // "" is the whole body: a bare array.
  c.request_array = "";
  CHECK(built(c, {"1", "2"}) == "[1,2]");
  CHECK(batch_envelope_bytes(c) == 2);
}

TEST_CASE("build: a template that cannot hold the array is refused") {
  using pacer::check_batch_template;
  auto t = nlohmann::ordered_json::parse(R"({"inputs": [], "x": 5})");
  CHECK(check_batch_template(t, "/inputs").value().find("already has") !=
        std::string::npos);
  CHECK(check_batch_template(t, "/x/y").value().find("non-object") !=
        std::string::npos);
  CHECK(check_batch_template(t, "").has_value());
  CHECK(check_batch_template(t, "inputs").has_value());
  CHECK_FALSE(check_batch_template(t, "/other").has_value());
  CHECK_FALSE(
      check_batch_template(nlohmann::ordered_json::object(), "").has_value());

  BatchConfig c = echo();
  c.body_template = t;
  CHECK(build_error(c, {"1"}).find("the template already has /inputs") !=
        std::string::npos);
}

TEST_CASE("build: absent bodies") {
  BatchConfig c = echo();
  Bodies bodies = {std::nullopt, "1", std::nullopt};
  CHECK(built(c, bodies) == R"({"inputs":[null,1,null]})");
  CHECK(built(c, bodies).size() == predicted(c, bodies));

  c.member_pointer = "/text";
  CHECK(build_error(c, {R"({"text": 1})", std::nullopt}) ==
        "batch member 1 has no body, and member_pointer /text needs one");
}

TEST_CASE("build: a member that is not JSON or lacks the pointer is named") {
  BatchConfig c = echo();
  std::string e = build_error(c, {"1", "2", "not json"});
  CHECK(e.starts_with("batch member 2 body is not JSON: "));
  CHECK(e.find("'not json'") != std::string::npos);
  CHECK(build_error(c, {"{\"a\": 1"})
            .starts_with("batch member 0 body is not JSON: malformed JSON"));
  CHECK(build_error(c, {""}).starts_with(
      "batch member 0 body is not JSON: an empty body"));
  CHECK(build_error(c, {"1 2"}).starts_with("batch member 0 body is not JSON"));

  c.member_pointer = "/text";
  e = build_error(c, {R"({"text": "x"})", R"({"txt": "y"})"});
  CHECK(
      e.starts_with("batch member 1 body has nothing at member_pointer /text"));
  CHECK(build_error(c, {"[1]"}).starts_with("batch member 0 body has nothing"));

  auto m = batch_member_bytes(c, std::string("nope"));
  REQUIRE_FALSE(m.ok());
  CHECK(m.error().starts_with("body is not JSON"));
}

TEST_CASE("build: member count and max_bytes") {
  BatchConfig c = echo();
  CHECK(build_error(c, {}) == "a batch needs at least one member");
  c.max_items = 2;
  CHECK(build_error(c, {"1", "2", "3"}) == "3 members exceed max_items 2");

  c = echo();
  // {"inputs":[]} is 13 bytes; "1234" adds 4, each further one 5.
  c.max_bytes = 13 + 4 + 5;
  CHECK(built(c, {"1234", "5678"}).size() == 22);
  CHECK(build_error(c, {"1234", "5678", "9"}) ==
        "batch member 2 takes the body to 24 bytes, over max_bytes 22");
  c.max_bytes = 10;
  CHECK(build_error(c, {"1"}) ==
        "batch member 0 takes the body to 14 bytes, over max_bytes 10");
}

TEST_CASE("build: the predicted size is exact for many shapes") {
  BatchConfig c = echo();
  c.body_template = nlohmann::ordered_json::parse(R"({"m": "x"})");
  c.max_items = 1000;
  Bodies bodies;
  for (int i = 0; i < 200; ++i)
    bodies.push_back(i % 7 == 0 ? std::nullopt
                                : std::optional<std::string>(
                                      "{ \"i\": " + std::to_string(i) +
                                      ", \"s\": \"caf\u00e9 \\u00e9\\n\" }"));
  std::string body = built(c, bodies);
  CHECK(body.size() == predicted(c, bodies));
  auto parsed = nlohmann::json::parse(body);
  REQUIRE(parsed["inputs"].size() == 200);
  CHECK(parsed["inputs"][1]["i"] == 1);
  CHECK(parsed["inputs"][7].is_null());
}

TEST_CASE("split: success, one slice per member in order") {
  BatchConfig c = echo();
  auto items =
      split(c, 3, R"({"results": [{"v": 1}, [2], "three"], "usage": 9})");
  CHECK(items[0].ok);
  CHECK(items[0].body == R"({"v":1})");
  CHECK(items[1].body == "[2]");
  CHECK(items[2].body == R"("three")");
  for (const auto& i : items) {
    CHECK(i.ok);
    CHECK(i.error.empty());
    CHECK_FALSE(i.status.has_value());
  }
  // Any 2xx; keys keep their order in the slices.
  items = split(c, 1, R"({"results": [{"z": 1, "a": 2}]})", 207);
  CHECK(items[0].body == R"({"z":1,"a":2})");

  c.response_array = "/data/0/out";
  items = split(c, 2, R"({"data": [{"out": [null, false]}]})");
  CHECK(items[0].body == "null");
  CHECK(items[1].body == "false");

  c.response_array = "";
  items = split(c, 2, "[1, 2]");
  CHECK(items[1].body == "2");
}

TEST_CASE("split: a per-item error marks only that item failed") {
  BatchConfig c = echo();
  c.item_error = "/error";
  auto items = split(c, 5, R"({"results": [
      {"v": 1},
      {"error": "input too long"},
      {"v": 3, "error": null},
      {"error": {"code": 7, "message": "bad"}},
      {"v": 5, "error": false}]})");
  CHECK(items[0].ok);
  CHECK_FALSE(items[1].ok);
  CHECK(items[1].error == "input too long");
  CHECK(items[1].body == R"({"error":"input too long"})");
  CHECK(items[2].ok);
  CHECK_FALSE(items[3].ok);
  CHECK(items[3].error == R"({"code":7,"message":"bad"})");
  CHECK(items[4].ok);

  // A scalar item has no error field.
  items = split(c, 1, R"({"results": ["plain"]})");
  CHECK(items[0].ok);

  items = split(c, 1, R"({"results": [{"error": ""}]})");
  CHECK_FALSE(items[0].ok);
  CHECK(items[0].error == "error at /error");

  // Long messages are clipped on a character boundary.
  std::string longer(499, 'x');
  longer += "\u00e9\u00e9";
  items = split(c, 1, R"({"results": [{"error": ")" + longer + "\"}]}");
  CHECK_FALSE(items[0].ok);
  CHECK(items[0].error == std::string(499, 'x') + "\u2026");
}

TEST_CASE("split: a per-item status") {
  BatchConfig c = echo();
  c.item_status = "/status";
  c.item_error = "/error/message";
  auto items = split(c, 5, R"({"results": [
      {"status": 201, "id": "a"},
      {"status": 429, "error": {"message": "slow down"}},
      {"status": 404},
      {"id": "d"},
      {"status": "ok"}]})");
  CHECK(items[0].ok);
  CHECK(items[0].status == 201);
  CHECK_FALSE(items[1].ok);
  CHECK(items[1].status == 429);
  CHECK(items[1].error == "status 429: slow down");
  CHECK_FALSE(items[2].ok);
  CHECK(items[2].status == 404);
  CHECK(items[2].error == "status 404");
  CHECK(items[3].ok);
  CHECK_FALSE(items[3].status.has_value());
  CHECK_FALSE(items[4].ok);
  CHECK_FALSE(items[4].status.has_value());
  CHECK(items[4].error ==
        "expected an HTTP status at /status of the item; got '\"ok\"'");

  items = split(c, 2, R"({"results": [{"status": 99}, {"status": 200.5}]})");
  CHECK_FALSE(items[0].ok);
  CHECK_FALSE(items[1].ok);
}

TEST_CASE("split: a body that is not JSON says what came") {
  BatchConfig c = echo();
  CHECK(split_error(c, 2, "abc") ==
        "expected a JSON body with an array at /results; got "
        "text/plain-looking 'abc'");
  std::string long_text(200, 'a');
  CHECK(split_error(c, 2, long_text) ==
        "expected a JSON body with an array at /results; got "
        "text/plain-looking '" +
            std::string(80, 'a') + "\u2026' (first 80 bytes)");
  CHECK(split_error(c, 2, "<html><body>Bad Gateway</body></html>") ==
        "expected a JSON body with an array at /results; got HTML-looking "
        "'<html><body>Bad Gateway</body></html>'");
  CHECK(split_error(c, 2, "") ==
        "expected a JSON body with an array at /results; got an empty body");
  CHECK(split_error(c, 2, " \r\n") ==
        "expected a JSON body with an array at /results; got a blank body");
  CHECK(split_error(c, 2, std::string("\x89PNG\r\n\x1a\n", 8)) ==
        "expected a JSON body with an array at /results; got binary-looking "
        "'\\x89PNG\\x0d\\x0a\\x1a\\x0a'");
  CHECK(split_error(c, 2, R"({"results": [1, 2)") ==
        "expected a JSON body with an array at /results; got malformed JSON "
        "(parse error at byte 18) '{\"results\": [1, 2'");
}

TEST_CASE("split: a missing array, or something else there") {
  BatchConfig c = echo();
  CHECK(split_error(c, 2, R"({"error": "overloaded"})") ==
        "expected a JSON body with an array at /results; got an object "
        "without /results: '{\"error\": \"overloaded\"}'");
  CHECK(split_error(c, 2, "[1, 2]") ==
        "expected a JSON body with an array at /results; got an array "
        "without /results: '[1, 2]'");
  CHECK(split_error(c, 2, "42").find("got a number without /results") !=
        std::string::npos);
  CHECK(split_error(c, 2, R"({"results": {"0": 1}})") ==
        "expected an array at /results; got an object: '{\"0\":1}'");
  CHECK(split_error(c, 2, R"({"results": null})") ==
        "expected an array at /results; got null: 'null'");
  CHECK(split_error(c, 2, R"({"results": "12"})") ==
        "expected an array at /results; got a string: '\"12\"'");

  c.response_array = "";
  CHECK(split_error(c, 2, R"({"results": []})") ==
        "expected an array at the top level; got an object: "
        "'{\"results\":[]}'");
}

TEST_CASE("split: the array must have one item per member") {
  BatchConfig c = echo();
  std::string items49 = "[";
  for (int i = 0; i < 49; ++i) items49 += (i ? ",{}" : "{}");
  items49 += "]";
  CHECK(split_error(c, 50, R"({"results": )" + items49 + "}") ==
        "expected 50 results at /results, got 49");
  CHECK(split_error(c, 2, R"({"results": [1, 2, 3]})") ==
        "expected 2 results at /results, got 3");
  CHECK(split_error(c, 1, R"({"results": []})") ==
        "expected 1 result at /results, got 0");
}

TEST_CASE("split: an empty batch and a non-2xx status") {
  BatchConfig c = echo();
  auto r = split_batch_response(c, 0, 200, R"({"results": []})");
  REQUIRE(r.ok());
  CHECK(r->empty());
  for (int status : {0, 199, 300, 429, 500, 503}) {
    CAPTURE(status);
    CHECK(split_error(c, 1, R"({"results": [1]})", status) ==
          "a batch response is split only on a 2xx status; got " +
              std::to_string(status));
  }
}

TEST_CASE("hostile input fails cleanly and never crashes") {
  BatchConfig c = echo();
  c.item_error = "/error";
  c.item_status = "/status";

  // Deep nesting, in a response and in a member.
  std::string deep = std::string(1'000'000, '[') + std::string(1'000'000, ']');
  CHECK(split_error(c, 1, deep).find("nested deeper than 256 levels") !=
        std::string::npos);
  CHECK(split_error(c, 1, R"({"results": [)" + deep + "]}")
            .find("nested deeper") != std::string::npos);
  CHECK(build_error(c, {deep}).starts_with(
      "batch member 0 body nests deeper than 256 levels"));
  // Brackets inside strings do not count.
  std::string in_string = "\"" + std::string(10'000, '[') + "\\\"\"";
  CHECK(built(c, {in_string}).size() > 10'000);

  // Invalid UTF-8 is not JSON; NUL bytes are shown escaped.
  CHECK(split_error(c, 1, "{\"results\": [\"\xff\"]}").find("malformed JSON") !=
        std::string::npos);
  CHECK(split_error(c, 1, std::string("a\0b", 3)).find("'a\\x00b'") !=
        std::string::npos);

  // A large valid response.
  std::string big = R"({"results": [)";
  for (int i = 0; i < 10'000; ++i)
    big += (i ? "," : "") + std::string(R"({"status": 200, "v": ")") +
           std::string(100, 'x') + "\"}";
  big += "]}";
  auto items = split(c, 10'000, big);
  CHECK(items[9'999].ok);
  CHECK(items[9'999].status == 200);

  // Random bytes and random mutations of a valid response.
  std::mt19937 rng(12345);
  const std::string valid =
      R"({"results": [{"status": 200}, {"error": "x"}, [1, {"a": null}]]})";
  for (int round = 0; round < 20'000; ++round) {
    std::string body = valid;
    int edits = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < edits; ++k) {
      std::size_t at = rng() % (body.size() + 1);
      switch (rng() % 3) {
        case 0:
          body.insert(at, 1, static_cast<char>(rng() % 256));
          break;
        case 1:
          if (at < body.size()) body.erase(at, 1);
          break;
        default:
          if (at < body.size()) body[at] = static_cast<char>(rng() % 256);
      }
    }
    auto r = split_batch_response(c, 3, 200, body);
    if (r.ok()) {
      CHECK(r->size() == 3);
    } else {
      CHECK_FALSE(r.error().empty());
    }
    auto b = build_batch_body(c, {body});
    if (!b.ok()) CHECK(b.error().starts_with("batch member 0"));
  }
}

TEST_CASE("spec: the wire form carries what a worker needs, and round-trips") {
  BatchConfig c = echo();
  c.member_pointer = "/input";
  c.body_template =
      nlohmann::ordered_json::parse(R"({"model": "m", "options": {"n": 1}})");
  c.item_error = "/error";
  c.item_status = "/status";
  c.max_bytes = 4096;
  c.method = "PUT";  // not in a spec
  c.cost = pacer::BatchCost::kPerItem;

  nlohmann::json spec = pacer::batch_spec_json(c);
  CHECK(spec == nlohmann::json::parse(R"({
      "request_array": "/inputs", "member_pointer": "/input",
      "body_template": {"model": "m", "options": {"n": 1}},
      "response_array": "/results", "item_error": "/error",
      "item_status": "/status", "max_items": 50, "max_bytes": 4096})"));

  // Through the wire's text, as a worker reads it.
  auto back = pacer::batch_spec_from_json(nlohmann::json::parse(spec.dump()));
  REQUIRE_MESSAGE(back.ok(), back.error());
  CHECK(back->request_array == c.request_array);
  CHECK(back->member_pointer == c.member_pointer);
  CHECK(back->body_template == c.body_template);
  CHECK(back->response_array == c.response_array);
  CHECK(back->item_error == c.item_error);
  CHECK(back->item_status == c.item_status);
  CHECK(back->max_items == c.max_items);
  CHECK(back->max_bytes == c.max_bytes);
  CHECK(back->method == "POST");  // the defaults: not the spec's business
  CHECK(back->cost == pacer::BatchCost::kRequest);
  // Both sides build the same body from it.
  Bodies bodies = {R"({"input": "a"})", R"({"input": [2]})"};
  CHECK(built(*back, bodies) == built(c, bodies));

  // The defaults of a spec without the optional fields.
  auto minimal = pacer::batch_spec_from_json(
      {{"request_array", ""}, {"response_array", ""}, {"max_items", 3}});
  REQUIRE_MESSAGE(minimal.ok(), minimal.error());
  CHECK(minimal->member_pointer.empty());
  CHECK(minimal->item_error.empty());
  CHECK(minimal->body_template == nlohmann::ordered_json::object());
  CHECK(minimal->max_bytes == 1 << 20);
  CHECK(built(*minimal, {"1", "2"}) == "[1,2]");
}

TEST_CASE("spec: a bad spec is refused with the field's name") {
  const nlohmann::json good = pacer::batch_spec_json(echo());
  auto error = [&](const char* field, nlohmann::json value) {
    nlohmann::json spec = good;
    if (value.is_discarded())
      spec.erase(field);
    else
      spec[field] = std::move(value);
    auto r = pacer::batch_spec_from_json(spec);
    REQUIRE_FALSE(r.ok());
    return r.error();
  };
  const nlohmann::json absent =
      nlohmann::json(nlohmann::json::value_t::discarded);
  CHECK(pacer::batch_spec_from_json(good).ok());
  CHECK_FALSE(pacer::batch_spec_from_json(nlohmann::json::array()).ok());
  CHECK(pacer::batch_spec_from_json(nullptr).error() ==
        "spec must be a JSON object");

  CHECK(error("response_array", 5) ==
        "spec.response_array must be a JSON pointer string");
  CHECK(error("response_array", "results") ==
        "spec.response_array must be a JSON pointer string");
  CHECK(error("response_array", absent) ==
        "spec.response_array must be a JSON pointer string");
  CHECK(error("request_array", absent) ==
        "spec.request_array must be a JSON pointer string");
  CHECK(error("member_pointer", "/a~2") ==
        "spec.member_pointer must be a JSON pointer string");
  CHECK(error("item_error", nullptr) ==
        "spec.item_error must be a JSON pointer string");
  CHECK(error("item_status", "x") ==
        "spec.item_status must be a JSON pointer string");

  CHECK(error("body_template", "{}") ==
        "spec.body_template must be a JSON object");
  CHECK(error("body_template", {{"inputs", 1}}) ==
        "spec.body_template: the template already has /inputs");
  CHECK(error("body_template", {{"inputs", {{"x", 1}}}}) ==
        "spec.body_template: the template already has /inputs");

  const std::string items = "spec.max_items must be an integer in 1..10000";
  CHECK(error("max_items", 0) == items);
  CHECK(error("max_items", -1) == items);
  CHECK(error("max_items", 10'001) == items);
  CHECK(error("max_items", 2.5) == items);
  CHECK(error("max_items", "50") == items);
  CHECK(error("max_items", absent) == items);
  CHECK(error("max_items", std::uint64_t{1} << 63) == items);
  nlohmann::json most = good;
  most["max_items"] = pacer::kMaxBatchItems;
  CHECK(pacer::batch_spec_from_json(most).ok());

  const std::string bytes = "spec.max_bytes must be a positive integer";
  CHECK(error("max_bytes", 0) == bytes);
  CHECK(error("max_bytes", -5) == bytes);
  CHECK(error("max_bytes", "1MiB") == bytes);
  CHECK(error("max_bytes", std::uint64_t{1} << 63) == bytes);
}
