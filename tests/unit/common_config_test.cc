// Config loading: the documented example parses to the expected values, every
// refusal names file, line and key, and ${NAME} expansion of header values.
#include <doctest/doctest.h>

#include <cstdlib>
#include <optional>
#include <string>

#include "common/config.h"
#include "tests/support/process.h"

using pacer::Config;
using pacer::LimitSpec;
using pacer::parse_config;

namespace {

// The example of docs/configuration.md, byte for byte (comments included).
const char* kExample = R"([broker]
database = "pacer.db"
worker_endpoint = "tcp://127.0.0.1:5555"
client_endpoint = "tcp://127.0.0.1:5556"

[api.echo]
base_url = "http://127.0.0.1:8080"
limits = ["50/s"]          # also "600/min", "1/50ms", "90000 tokens/min", several at once
concurrency = 16
margin = "2ms"             # optional: safety margin for network jitter
)";

// Returns the error of a config that must be refused.
std::string refusal(const std::string& text) {
  auto r = parse_config(text, "pacer.toml");
  REQUIRE_FALSE(r.ok());
  return r.error();
}

// An [api.echo] table with `extra` lines appended (base_url first, line 2).
std::string api_with(const std::string& extra) {
  return "[api.echo]\nbase_url = \"http://127.0.0.1:8080\"\n" + extra;
}

// Sets (or unsets) an environment variable for one scope.
class EnvVar {
 public:
  EnvVar(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value)
      setenv(name, value, 1);
    else
      unsetenv(name);
  }
  ~EnvVar() {
    if (old_)
      setenv(name_, old_->c_str(), 1);
    else
      unsetenv(name_);
  }
  EnvVar(const EnvVar&) = delete;
  EnvVar& operator=(const EnvVar&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

}  // namespace

TEST_CASE("the documented example parses to the expected values") {
  auto r = parse_config(kExample, "pacer.toml");
  REQUIRE_MESSAGE(r.ok(), r.error());
  const Config& c = *r;
  CHECK(c.source == "pacer.toml");
  CHECK(c.broker.database == "pacer.db");
  CHECK(c.broker.worker_endpoint == "tcp://127.0.0.1:5555");
  CHECK(c.broker.client_endpoint == "tcp://127.0.0.1:5556");
  CHECK(c.worker_broker() == "tcp://127.0.0.1:5555");
  CHECK(c.client_broker() == "tcp://127.0.0.1:5556");
  REQUIRE(c.apis.size() == 1);
  const pacer::ApiConfig* echo = c.api("echo");
  REQUIRE(echo != nullptr);
  CHECK(echo->name == "echo");
  CHECK(echo->base_url == "http://127.0.0.1:8080");
  REQUIRE(echo->limits.size() == 1);
  CHECK(echo->limits[0] == LimitSpec{50, 1000, "requests"});
  CHECK(echo->concurrency == 16);
  REQUIRE(echo->margin_ms.has_value());
  CHECK(*echo->margin_ms == 2);
  // Keys the example leaves out keep their defaults.
  CHECK(echo->timeout_ms == 30'000);
  CHECK(echo->max_attempts == 5);
  CHECK(echo->headers.empty());
  CHECK(c.broker.heartbeat_ms == 1000);
  CHECK(c.broker.liveness == 3);
  CHECK(c.broker.synchronous == "normal");
  CHECK(c.api("nope") == nullptr);
}

TEST_CASE("an empty file gives the defaults and no APIs") {
  auto r = parse_config("", "pacer.toml");
  REQUIRE(r.ok());
  CHECK(r->apis.empty());
  CHECK(r->broker.database == "pacer.db");
  CHECK(r->broker.window == 512);
  CHECK(r->worker.concurrency == 64);
  CHECK(r->client.timeout_ms == 10'000);
}

TEST_CASE("several limits, a single limit string, and every documented form") {
  auto r = parse_config(
      api_with("limits = [\"600/min\", \"1/50ms\", \"90000 tokens/min\"]\n"),
      "pacer.toml");
  REQUIRE_MESSAGE(r.ok(), r.error());
  const auto& l = r->api("echo")->limits;
  REQUIRE(l.size() == 3);
  CHECK(l[0] == LimitSpec{600, 60'000, "requests"});
  CHECK(l[1] == LimitSpec{1, 50, "requests"});
  CHECK(l[2] == LimitSpec{90'000, 60'000, "tokens"});
  CHECK_FALSE(l[2].counts_requests());

  auto one = parse_config(api_with("limits = \"10/s\"\n"), "pacer.toml");
  REQUIRE_MESSAGE(one.ok(), one.error());
  REQUIRE(one->api("echo")->limits.size() == 1);
  CHECK(one->api("echo")->limits[0] == LimitSpec{10, 1000, "requests"});

  auto none = parse_config(api_with(""), "pacer.toml");
  REQUIRE(none.ok());
  CHECK(none->api("echo")->limits.empty());
  CHECK_FALSE(none->api("echo")->margin_ms.has_value());
}

TEST_CASE("every section and key is read") {
  const char* text = R"([broker]
heartbeat = "500ms"
liveness = 5
synchronous = "full"
retention = "2d"
window = 64
lease_grace = "10s"

[worker]
broker = "tcp://10.0.0.1:5555"
concurrency = 8
apis = ["echo", "slow"]
max_body_bytes = "64KiB"
connect_timeout = "3s"

[client]
broker = "tcp://10.0.0.1:5556"
timeout = "1min"

[api.slow-one_2]
base_url = "https://api.example.com/v1/"
timeout = "5s"
max_attempts = 7
backoff_base = "100ms"
backoff_cap = "10s"
headers = { Authorization = "Bearer ${TOKEN}" }
)";
  auto r = parse_config(text, "pacer.toml");
  REQUIRE_MESSAGE(r.ok(), r.error());
  const Config& c = *r;
  CHECK(c.broker.heartbeat_ms == 500);
  CHECK(c.broker.liveness == 5);
  CHECK(c.broker.synchronous == "full");
  CHECK(c.broker.retention_ms == 2 * 86'400'000LL);
  CHECK(c.broker.window == 64);
  CHECK(c.broker.lease_grace_ms == 10'000);
  CHECK(c.worker.broker == "tcp://10.0.0.1:5555");
  CHECK(c.worker_broker() == "tcp://10.0.0.1:5555");
  CHECK(c.worker.concurrency == 8);
  CHECK(c.worker.apis == std::vector<std::string>{"echo", "slow"});
  CHECK(c.worker.max_body_bytes == 65'536);
  CHECK(c.worker.connect_timeout_ms == 3000);
  CHECK(c.client.broker == "tcp://10.0.0.1:5556");
  CHECK(c.client_broker() == "tcp://10.0.0.1:5556");
  CHECK(c.client.timeout_ms == 60'000);
  const auto* a = c.api("slow-one_2");
  REQUIRE(a != nullptr);
  CHECK(a->base_url == "https://api.example.com/v1");  // trailing '/' dropped
  CHECK(a->timeout_ms == 5000);
  CHECK(a->max_attempts == 7);
  CHECK(a->backoff_base_ms == 100);
  CHECK(a->backoff_cap_ms == 10'000);
  REQUIRE(a->headers.count("Authorization") == 1);
  // Not expanded at load time: only the worker expands credentials.
  CHECK(a->headers.at("Authorization") == "Bearer ${TOKEN}");

  auto bytes = parse_config("[worker]\nmax_body_bytes = 1000\n", "pacer.toml");
  REQUIRE(bytes.ok());
  CHECK(bytes->worker.max_body_bytes == 1000);
}

TEST_CASE("an unknown key is refused with file, line and key") {
  std::string typo = kExample;
  auto pos = typo.find("concurrency = 16");
  REQUIRE(pos != std::string::npos);
  typo.replace(pos, std::string("concurrency").size(), "concurency");
  // The typo is on line 9 of the example.
  CHECK(refusal(typo).find("pacer.toml:9: api.echo.concurency: unknown key") !=
        std::string::npos);

  CHECK(refusal("[broker]\n\ndatbase = \"x\"\n") ==
        "pacer.toml:3: broker.datbase: unknown key");
  CHECK(refusal("[worker]\nconcurrency = 2\nbrokr = \"x\"\n") ==
        "pacer.toml:3: worker.brokr: unknown key");
  CHECK(refusal("[client]\ntimeout = \"1s\"\n\n\nretries = 3\n") ==
        "pacer.toml:5: client.retries: unknown key");
  CHECK(refusal("title = \"x\"\n").find("pacer.toml:1: title: unknown key") !=
        std::string::npos);
}

TEST_CASE("a bad limit string is refused naming the key, line and text") {
  std::string e =
      refusal(api_with("\nlimits = [\"50/s\", \"50/fortnight\"]\n"));
  CHECK(e.find("pacer.toml:4: api.echo.limits: invalid limit '50/fortnight'") !=
        std::string::npos);
  e = refusal(api_with("limits = \"0/s\"\n"));
  CHECK(e.find("pacer.toml:3: api.echo.limits: invalid limit '0/s'") !=
        std::string::npos);
  e = refusal(api_with("limits = [50]\n"));
  CHECK(e.find("api.echo.limits: must be an array of strings") !=
        std::string::npos);
  e = refusal(api_with("limits = 50\n"));
  CHECK(e.find("pacer.toml:3: api.echo.limits: must be an array of strings") !=
        std::string::npos);
}

TEST_CASE("a value of the wrong type is refused") {
  CHECK(refusal(api_with("concurrency = \"16\"\n")) ==
        "pacer.toml:3: api.echo.concurrency: must be an integer");
  CHECK(refusal(api_with("concurrency = 16.0\n")) ==
        "pacer.toml:3: api.echo.concurrency: must be an integer");
  CHECK(refusal(api_with("concurrency = -1\n")) ==
        "pacer.toml:3: api.echo.concurrency: must be between 0 and 100000");
  CHECK(refusal("[broker]\ndatabase = 5\n") ==
        "pacer.toml:2: broker.database: must be a string");
  CHECK(refusal(api_with("margin = 2\n"))
            .find("pacer.toml:3: api.echo.margin: must be a duration string") !=
        std::string::npos);
  CHECK(
      refusal(api_with("margin = \"2 parsecs\"\n"))
          .find("pacer.toml:3: api.echo.margin: unknown time unit 'parsecs'") !=
      std::string::npos);
  CHECK(refusal(api_with("timeout = \"0s\"\n")) ==
        "pacer.toml:3: api.echo.timeout: must be positive");
  CHECK(refusal(api_with("max_attempts = 0\n")) ==
        "pacer.toml:3: api.echo.max_attempts: must be between 1 and 1000");
  CHECK(refusal(api_with("headers = { X-Key = 5 }\n")) ==
        "pacer.toml:3: api.echo.headers.X-Key: must be a string");
  CHECK(refusal(api_with("headers = \"x\"\n")) ==
        "pacer.toml:3: api.echo.headers: must be a table of strings");
  CHECK(refusal("broker = 1\n") == "pacer.toml:1: broker: must be a table");
  CHECK(refusal("[broker]\nsynchronous = \"off\"\n") ==
        "pacer.toml:2: broker.synchronous: must be \"normal\" or \"full\"");
  CHECK(refusal("[broker]\nheartbeat = \"10ms\"\n") ==
        "pacer.toml:2: broker.heartbeat: must be between 50ms and 60s");
  CHECK(refusal("[broker]\nliveness = 1\n") ==
        "pacer.toml:2: broker.liveness: must be between 2 and 100");
  CHECK(refusal("[worker]\napis = [\"a\", 1]\n") ==
        "pacer.toml:2: worker.apis: must be an array of strings");
  CHECK(refusal("[worker]\nmax_body_bytes = 0\n") ==
        "pacer.toml:2: worker.max_body_bytes: must be positive");
  CHECK(refusal("[worker]\nmax_body_bytes = \"lots\"\n")
            .find("pacer.toml:2: worker.max_body_bytes: invalid size 'lots'") !=
        std::string::npos);
  CHECK(refusal("api = 3\n").find("pacer.toml:1: api: must be a table") !=
        std::string::npos);
  CHECK(refusal("[api]\necho = 3\n") ==
        "pacer.toml:2: api.echo: must be a table");
  CHECK(refusal("[api.\"bad name\"]\nbase_url = \"http://h\"\n")
            .find("api.bad name: API names may use letters") !=
        std::string::npos);
}

TEST_CASE("base_url is required and must be an http(s) URL with a host") {
  CHECK(refusal("[broker]\n\n[api.echo]\nconcurrency = 1\n") ==
        "pacer.toml:3: api.echo.base_url: is required");
  for (const char* bad :
       {"ftp://127.0.0.1", "http://", "http:///path", "127.0.0.1:8080",
        "http://host name", "http://user@host", "http://h?x=1", "", "/"}) {
    CAPTURE(std::string(bad));
    std::string text = std::string("[api.echo]\nbase_url = \"") + bad + "\"\n";
    CHECK(refusal(text) ==
          "pacer.toml:2: api.echo.base_url: must be an http:// or https:// URL "
          "with a host");
  }
  CHECK(refusal("[api.echo]\nbase_url = 8080\n") ==
        "pacer.toml:2: api.echo.base_url: must be a string");
}

TEST_CASE("a TOML syntax error names the file and line") {
  std::string e =
      refusal("[broker]\ndatabase = \"pacer.db\"\nworker_endpoint = \n");
  CHECK(e.rfind("pacer.toml:3: ", 0) == 0);
  e = refusal("[broker\n");
  CHECK(e.rfind("pacer.toml:1: ", 0) == 0);
  e = refusal(
      "[api.echo]\nbase_url = \"http://h\"\n\n\nbase_url = \"http://h\"\n");
  CHECK(e.rfind("pacer.toml:5: ", 0) == 0);  // duplicate key
}

TEST_CASE("dialect: auto by default, a known profile, unknown names refused") {
  auto plain = parse_config(api_with(""), "pacer.toml");
  REQUIRE_MESSAGE(plain.ok(), plain.error());
  CHECK(plain->api("echo")->dialect == "auto");

  for (const char* name : {"auto", "generic", "github", "openai", "prisjakt"}) {
    auto r = parse_config(api_with("dialect = \"" + std::string(name) + "\"\n"),
                          "pacer.toml");
    REQUIRE_MESSAGE(r.ok(), r.error());
    CHECK(r->api("echo")->dialect == name);
  }

  CHECK(refusal(api_with("\ndialect = \"githbu\"\n")) ==
        "pacer.toml:4: api.echo.dialect: unknown dialect 'githbu' (known: "
        "auto, generic, github, x, discord, reddit, gitlab, ietf, openai, "
        "azure, groq, anthropic, shopify, akamai, prisjakt)");
  CHECK(refusal(api_with("dialect = \"GitHub\"\n"))
            .starts_with("pacer.toml:3: api.echo.dialect: unknown dialect "
                         "'GitHub'"));
  CHECK(refusal(api_with("dialect = 1\n")) ==
        "pacer.toml:3: api.echo.dialect: must be a string");
}

TEST_CASE("the feedback loop's keys: defaults, values, refusals") {
  auto plain = parse_config(api_with(""), "pacer.toml");
  REQUIRE_MESSAGE(plain.ok(), plain.error());
  const auto* d = plain->api("echo");
  CHECK(d->quota_wait_ms == 24LL * 3'600'000);
  CHECK(d->max_pause_ms == 3'600'000);
  CHECK(d->circuit_failures == 5);
  CHECK(d->circuit_cooldown_ms == 30'000);
  CHECK(d->learn);
  CHECK(d->actual_cost.empty());
  CHECK(d->statuses.empty());

  auto r =
      parse_config(api_with("quota_wait = \"1h\"\ncircuit_failures = 0\n"
                            "max_pause = \"10m\"\n"
                            "circuit_cooldown = \"5s\"\nlearn = false\n"
                            "actual_cost = \"/usage/total_tokens\"\n"
                            "[api.echo.statuses]\nrate_limited = [503, 420]\n"
                            "transient = [409]\npermanent = [500]\n"),
                   "pacer.toml");
  REQUIRE_MESSAGE(r.ok(), r.error());
  const auto* a = r->api("echo");
  CHECK(a->quota_wait_ms == 3'600'000);
  CHECK(a->max_pause_ms == 600'000);
  CHECK(a->circuit_failures == 0);
  CHECK(a->circuit_cooldown_ms == 5000);
  CHECK_FALSE(a->learn);
  CHECK(a->actual_cost == "/usage/total_tokens");
  CHECK(a->statuses.at(503) == pacer::Outcome::kRateLimited);
  CHECK(a->statuses.at(420) == pacer::Outcome::kRateLimited);
  CHECK(a->statuses.at(409) == pacer::Outcome::kTransient);
  CHECK(a->statuses.at(500) == pacer::Outcome::kPermanent);

  CHECK(refusal(api_with("actual_cost = \"usage\"\n"))
            .starts_with("pacer.toml:3: api.echo.actual_cost: must be a JSON "
                         "pointer"));
  CHECK(refusal(api_with("learn = \"yes\"\n")) ==
        "pacer.toml:3: api.echo.learn: must be true or false");
  CHECK(refusal(api_with("[api.echo.statuses]\nretry = [500]\n"))
            .starts_with("pacer.toml:4: api.echo.statuses.retry: unknown "
                         "class"));
  CHECK(refusal(api_with("[api.echo.statuses]\ntransient = [99]\n"))
            .starts_with("pacer.toml:4: api.echo.statuses.transient: "
                         "statuses are integers from 100 to 599"));
  CHECK(
      refusal(
          api_with(
              "[api.echo.statuses]\ntransient = [503]\nrate_limited = [503]\n"))
          .ends_with("status 503 is given more than one class"));
  CHECK(refusal(api_with("circuit_failures = -1\n"))
            .starts_with("pacer.toml:3: api.echo.circuit_failures: must be "
                         "between"));
}

TEST_CASE("load_config_file reads a file and names it in errors") {
  pacer::testing::TempDir dir;
  dir.write("pacer.toml", kExample);
  auto r = pacer::load_config_file(dir.file("pacer.toml"));
  REQUIRE_MESSAGE(r.ok(), r.error());
  CHECK(r->source == dir.file("pacer.toml"));
  CHECK(r->api("echo")->concurrency == 16);

  dir.write("bad.toml", "[broker]\nwindow = 1\n");
  auto bad = pacer::load_config_file(dir.file("bad.toml"));
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error() == dir.file("bad.toml") +
                           ":2: broker.window: must be between 16 and 100000");

  auto missing = pacer::load_config_file(dir.file("missing.toml"));
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error() ==
        dir.file("missing.toml") + ": cannot open the configuration file");
}

TEST_CASE("expand_env") {
  EnvVar a("PACER_TEST_A", "alpha");
  EnvVar b("PACER_TEST_B", "");
  EnvVar unset("PACER_TEST_UNSET", nullptr);

  auto r = pacer::expand_env("Bearer ${PACER_TEST_A}");
  REQUIRE(r.ok());
  CHECK(*r == "Bearer alpha");

  r = pacer::expand_env("${PACER_TEST_A}:${PACER_TEST_B}:${PACER_TEST_A}");
  REQUIRE(r.ok());
  CHECK(*r == "alpha::alpha");  // set but empty is allowed; it is not unset

  r = pacer::expand_env("no references, $PACER_TEST_A, {x}, $");
  REQUIRE(r.ok());
  CHECK(*r == "no references, $PACER_TEST_A, {x}, $");

  r = pacer::expand_env("");
  REQUIRE(r.ok());
  CHECK(r->empty());

  r = pacer::expand_env("key=${PACER_TEST_UNSET}");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().find("PACER_TEST_UNSET") != std::string::npos);
  CHECK(r.error().find("not set") != std::string::npos);

  r = pacer::expand_env("${PACER_TEST_A}${PACER_TEST_A");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().find("unterminated") != std::string::npos);

  // The value of a variable is not expanded again.
  EnvVar nested("PACER_TEST_NESTED", "${PACER_TEST_A}");
  r = pacer::expand_env("${PACER_TEST_NESTED}");
  REQUIRE(r.ok());
  CHECK(*r == "${PACER_TEST_A}");
}

TEST_CASE("[api.NAME.batch]: the documented example, defaults and every key") {
  auto plain = parse_config(api_with(""), "pacer.toml");
  REQUIRE_MESSAGE(plain.ok(), plain.error());
  CHECK_FALSE(plain->api("echo")->batch.has_value());

  auto r = parse_config(api_with(R"(
[api.echo.batch]
path = "/v1/batch"
max_items = 50
max_wait = "200ms"
request_array = "/inputs"     # members' bodies become the elements of this array
response_array = "/results"   # the per-item results, matched by index
)"),
                        "pacer.toml");
  REQUIRE_MESSAGE(r.ok(), r.error());
  REQUIRE(r->api("echo")->batch.has_value());
  const pacer::BatchConfig& b = *r->api("echo")->batch;
  CHECK(b.method == "POST");
  CHECK(b.path == "/v1/batch");
  CHECK(b.max_items == 50);
  CHECK(b.max_wait_ms == 200);
  CHECK(b.max_bytes == 1 << 20);
  CHECK(b.request_array == "/inputs");
  CHECK(b.response_array == "/results");
  CHECK(b.member_pointer.empty());
  CHECK(b.body_template == nlohmann::ordered_json::object());
  CHECK(b.item_error.empty());
  CHECK(b.item_status.empty());
  CHECK(b.cost == pacer::BatchCost::kRequest);

  r = parse_config(api_with(R"(
[api.echo.batch]
method = "PUT"
path = "/v1/embeddings"
max_items = 10000
max_wait = "0ms"
max_bytes = "256KiB"
request_array = "/input/items"
member_pointer = "/text"
template = { model = "small", options = { dims = 256, norm = true, w = 0.5, tags = ["a", 1] } }
response_array = ""
item_error = "/error"
item_status = "/status"
cost = "per_item"
)"),
                   "pacer.toml");
  REQUIRE_MESSAGE(r.ok(), r.error());
  const pacer::BatchConfig& all = *r->api("echo")->batch;
  CHECK(all.method == "PUT");
  CHECK(all.max_items == 10'000);
  CHECK(all.max_wait_ms == 0);
  CHECK(all.max_bytes == 256 * 1024);
  CHECK(all.request_array == "/input/items");
  CHECK(all.member_pointer == "/text");
  CHECK(
      all.body_template.dump() ==
      R"({"model":"small","options":{"dims":256,"norm":true,"tags":["a",1],"w":0.5}})");
  CHECK(all.response_array.empty());
  CHECK(all.item_error == "/error");
  CHECK(all.item_status == "/status");
  CHECK(all.cost == pacer::BatchCost::kPerItem);

  // The template as JSON object text; max_bytes as bytes.
  r = parse_config(
      api_with("[api.echo.batch]\npath = \"/b\"\nmax_items = 2\n"
               "request_array = \"/in\"\nresponse_array = \"/out\"\n"
               "template = '{\"z\": 1, \"a\": {\"b\": [null]}}'\n"
               "max_bytes = 4096\n"),
      "pacer.toml");
  REQUIRE_MESSAGE(r.ok(), r.error());
  CHECK(r->api("echo")->batch->body_template.dump() ==
        R"({"z":1,"a":{"b":[null]}})");
  CHECK(r->api("echo")->batch->max_bytes == 4096);
  CHECK(r->api("echo")->batch->max_wait_ms == 0);
}

TEST_CASE("[api.NAME.batch]: each bad key is refused with its line and key") {
  // The batch table starts on line 3; its first key is on line 4.
  auto batch = [](const std::string& lines) {
    return refusal(api_with("[api.echo.batch]\n" + lines));
  };
  const std::string ok =
      "path = \"/b\"\nmax_items = 5\nrequest_array = \"/in\"\n"
      "response_array = \"/out\"\n";  // lines 4-7; the next line is 8
  const std::string p = "pacer.toml:8: api.echo.batch.";

  CHECK(refusal(api_with("batch = 1\n")) ==
        "pacer.toml:3: api.echo.batch: must be a table");
  CHECK(batch(ok + "max_item = 3\n") == p + "max_item: unknown key");
  CHECK(batch("max_items = 5\nrequest_array = \"/in\"\n"
              "response_array = \"/out\"\n") ==
        "pacer.toml:3: api.echo.batch.path: is required");
  CHECK(batch("path = \"/b\"\nrequest_array = \"/in\"\n"
              "response_array = \"/out\"\n") ==
        "pacer.toml:3: api.echo.batch.max_items: is required");
  CHECK(batch("path = \"/b\"\nmax_items = 5\nresponse_array = \"/out\"\n") ==
        "pacer.toml:3: api.echo.batch.request_array: is required");
  CHECK(batch("path = \"/b\"\nmax_items = 5\nrequest_array = \"/in\"\n") ==
        "pacer.toml:3: api.echo.batch.response_array: is required");

  CHECK(batch(ok + "method = \"post\"\n")
            .starts_with(p + "method: must be an upper-case HTTP method"));
  CHECK(batch("path = \"v1/batch\"\nmax_items = 5\nrequest_array = \"/in\"\n"
              "response_array = \"/out\"\n") ==
        "pacer.toml:4: api.echo.batch.path: must start with one '/' and have "
        "no spaces or '#'");
  CHECK(batch("path = 5\nmax_items = 5\nrequest_array = \"/in\"\n"
              "response_array = \"/out\"\n") ==
        "pacer.toml:4: api.echo.batch.path: must be a string");
  CHECK(batch("path = \"/b\"\nmax_items = 0\nrequest_array = \"/in\"\n"
              "response_array = \"/out\"\n") ==
        "pacer.toml:5: api.echo.batch.max_items: must be between 1 and 10000");
  CHECK(batch("path = \"/b\"\nmax_items = 10001\nrequest_array = \"/in\"\n"
              "response_array = \"/out\"\n") ==
        "pacer.toml:5: api.echo.batch.max_items: must be between 1 and 10000");
  CHECK(batch(ok + "max_wait = 200\n")
            .starts_with(p + "max_wait: must be a duration string"));
  CHECK(batch(ok + "max_wait = \"-1s\"\n")
            .starts_with(p + "max_wait: invalid duration"));
  CHECK(batch(ok + "max_bytes = 0\n") == p + "max_bytes: must be positive");
  CHECK(batch(ok + "max_bytes = \"big\"\n")
            .starts_with(p + "max_bytes: invalid size 'big'"));
  CHECK(batch(ok + "max_bytes = 8\n") ==
        p + "max_bytes: leaves no room for members after the template");
  CHECK(batch("path = \"/b\"\nmax_items = 5\nrequest_array = \"in\"\n"
              "response_array = \"/out\"\n") ==
        "pacer.toml:6: api.echo.batch.request_array: must be a JSON pointer "
        "like \"/results\" (got 'in')");
  CHECK(batch("path = \"/b\"\nmax_items = 5\nrequest_array = \"/in\"\n"
              "response_array = \"/a~2\"\n") ==
        "pacer.toml:7: api.echo.batch.response_array: must be a JSON pointer "
        "like \"/results\" (got '/a~2')");
  CHECK(batch(ok + "member_pointer = \"text\"\n")
            .starts_with(p + "member_pointer: must be a JSON pointer"));
  CHECK(batch(ok + "item_error = \"\"\n")
            .starts_with(p + "item_error: must be a JSON pointer"));
  CHECK(batch(ok + "item_status = \"status\"\n")
            .starts_with(p + "item_status: must be a JSON pointer"));
  CHECK(batch(ok + "template = '{\"in\": []}'\n") ==
        p + "template: the template already has /in");
  CHECK(batch(ok + "template = { in = 1 }\n") ==
        p + "template: the template already has /in");
  CHECK(batch(ok + "template = '[1]'\n") ==
        p + "template: must be a JSON object");
  CHECK(batch(ok + "template = '{\"a\": '\n")
            .starts_with(p + "template: is not valid JSON: parse error"));
  CHECK(batch(ok + "template = 5\n") ==
        p + "template: must be a table or a string of JSON object text");
  CHECK(batch(ok + "template = { at = 1979-05-27 }\n") ==
        p + "template: dates and times have no JSON form; use a string");
  CHECK(batch("path = \"/b\"\nmax_items = 5\nrequest_array = \"/in/x\"\n"
              "response_array = \"/out\"\ntemplate = { in = \"s\" }\n") ==
        p + "template: the template has a non-object on the way to /in/x");
  CHECK(batch("path = \"/b\"\nmax_items = 5\nrequest_array = \"\"\n"
              "response_array = \"/out\"\ntemplate = { a = 1 }\n") ==
        p + "template: a template needs a request_array inside it");
  CHECK(batch(ok + "cost = \"per_call\"\n") ==
        p + "cost: must be \"request\" or \"per_item\"");
}

TEST_CASE("[alerts]: defaults, every key, per-API overrides") {
  SUBCASE("defaults without an [alerts] table") {
    auto r = parse_config(api_with(""), "pacer.toml");
    REQUIRE(r.ok());
    const auto& t = r->api("echo")->alerts;
    CHECK(t.usage_warning == doctest::Approx(0.8));
    CHECK(t.usage_critical == doctest::Approx(0.9));
    CHECK(t.usage_min_window_ms == 60'000);
    CHECK(t.rate_limited == 10);
    CHECK(t.rate_limited_window_ms == 60'000);
    CHECK(t.paused_ms == 60'000);
    CHECK(t.circuit_open);
    CHECK(t.dead_letters == 1);
    CHECK(t.dead_window_ms == 300'000);
    CHECK(t.unit_budget == doctest::Approx(0.05));
    CHECK(t.clear_after_ms == 30'000);
    CHECK(r->alerts.webhook.empty());
  }
  SUBCASE("[alerts] sets every API's base, [api.NAME.alerts] overrides it") {
    auto r = parse_config(R"([alerts]
webhook = "http://127.0.0.1:9000/hooks/abc"
webhook_timeout = "2s"
webhook_attempts = 3
usage_warning = "70%"
usage_critical = 0.95
usage_min_window = "0s"
rate_limited = 5
rate_limited_window = "30s"
paused_for = "10s"
circuit_open = false
dead_letters = 3
dead_window = "1m"
unit_budget = "10%"
clear_after = "5s"

[api.echo]
base_url = "http://127.0.0.1:8080"

[api.other]
base_url = "http://127.0.0.1:8081"
[api.other.alerts]
usage_warning = false
rate_limited = 0
paused_for = false
dead_letters = 20
)",
                          "pacer.toml");
    REQUIRE(r.ok());
    CHECK(r->alerts.webhook == "http://127.0.0.1:9000/hooks/abc");
    CHECK(r->alerts.webhook_timeout_ms == 2000);
    CHECK(r->alerts.webhook_attempts == 3);
    const auto& e = r->api("echo")->alerts;
    CHECK(e.usage_warning == doctest::Approx(0.7));
    CHECK(e.usage_critical == doctest::Approx(0.95));
    CHECK(e.usage_min_window_ms == 0);
    CHECK(e.rate_limited == 5);
    CHECK(e.rate_limited_window_ms == 30'000);
    CHECK(e.paused_ms == 10'000);
    CHECK_FALSE(e.circuit_open);
    CHECK(e.dead_letters == 3);
    CHECK(e.dead_window_ms == 60'000);
    CHECK(e.unit_budget == doctest::Approx(0.1));
    CHECK(e.clear_after_ms == 5'000);
    const auto& o = r->api("other")->alerts;
    CHECK(o.usage_warning == 0);
    CHECK(o.usage_critical == doctest::Approx(0.95));  // from [alerts]
    CHECK(o.rate_limited == 0);
    CHECK(o.paused_ms == -1);
    CHECK(o.dead_letters == 20);
    CHECK_FALSE(o.circuit_open);
  }
  SUBCASE("bad values are refused with file, line and key") {
    CHECK(refusal("[alerts]\nusage_warning = 1.5\n")
              .find("pacer.toml:2: alerts.usage_warning: must be a share") !=
          std::string::npos);
    CHECK(refusal("[alerts]\nusage_warning = \"eighty\"\n")
              .find("alerts.usage_warning: must be a share") !=
          std::string::npos);
    CHECK(refusal("[alerts]\nwebhook = \"ftp://x\"\n")
              .find("pacer.toml:2: alerts.webhook: must be an http") !=
          std::string::npos);
    CHECK(refusal("[alerts]\nwebhook_attempts = 0\n")
              .find("alerts.webhook_attempts: must be between 1 and 100") !=
          std::string::npos);
    CHECK(refusal("[alerts]\nrate_limited_window = \"0s\"\n")
              .find("alerts.rate_limited_window: must be longer than 0s") !=
          std::string::npos);
    CHECK(refusal("[alerts]\nusage_warning = 0.95\n")
              .find("alerts.usage_warning: must not be above usage_critical") !=
          std::string::npos);
    CHECK(refusal("[alerts]\ncircuit_open = 1\n")
              .find("alerts.circuit_open: must be true or false") !=
          std::string::npos);
    CHECK(refusal("[alerts]\nusage = 0.5\n")
              .find("pacer.toml:2: alerts.usage: unknown key") !=
          std::string::npos);
    CHECK(refusal(api_with("[api.echo.alerts]\nwebhook = \"http://x\"\n"))
              .find("pacer.toml:4: api.echo.alerts.webhook: unknown key") !=
          std::string::npos);
    CHECK(refusal(api_with("alerts = 3\n"))
              .find("api.echo.alerts: must be a table") != std::string::npos);
  }
}
