// What the client shows of batching, run in-process against a fake broker:
// `pacer status` names the batch of a job's latest dispatch, `pacer stats`
// prints a lane's batch counters.
#include <doctest/doctest.h>

#include <sstream>
#include <string>
#include <vector>

#include "client/cli.h"
#include "tests/support/process.h"
#include "tests/unit/client_fake_broker.h"

using namespace pacer;
using protocol::Command;
using testing::FakeBroker;
using testing::Frames;

namespace {

struct Run {
  int code = -1;
  std::string out;
  std::string err;
};

Run pacer_cli(const std::string& endpoint, std::vector<std::string> args) {
  testing::TempDir dir;
  dir.write("pacer.toml", "");  // keeps $PACER_CONFIG and ./pacer.toml out
  std::vector<std::string> argv = {
      "pacer",     "--config", dir.file("pacer.toml"), "--broker", endpoint,
      "--timeout", "5s"};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<const char*> ptrs;
  for (const auto& a : argv) ptrs.push_back(a.c_str());
  std::ostringstream out, err;
  client::Io io{out, err, false};
  Run r;
  r.code = client::run_cli(static_cast<int>(ptrs.size()), ptrs.data(), io);
  r.out = out.str();
  r.err = err.str();
  return r;
}

nlohmann::json job(std::int64_t id, nlohmann::json batch) {
  return {{"id", id},        {"api", "echo"},       {"state", "succeeded"},
          {"attempts", 1},   {"max_attempts", 5},   {"status", 200},
          {"created_ms", 0}, {"finished_ms", 1000}, {"batch", batch}};
}

}  // namespace

TEST_CASE("status shows the batch a job went in, when any did") {
  FakeBroker b([](const protocol::Message& m) -> std::vector<Frames> {
    return {testing::reply_to(
        m,
        {{"jobs", {job(41, {{"id", 17}, {"size", 50}}), job(42, nullptr)}}})};
  });
  auto r = pacer_cli(b.endpoint(), {"status", "41", "42"});
  CHECK(r.code == 0);
  INFO(r.out);
  CHECK(r.out.find("BATCH") != std::string::npos);
  CHECK(r.out.find("17 (50 jobs)") != std::string::npos);

  FakeBroker plain([](const protocol::Message& m) -> std::vector<Frames> {
    return {testing::reply_to(m, {{"jobs", {job(42, nullptr)}}})};
  });
  auto p = pacer_cli(plain.endpoint(), {"status", "42"});
  CHECK(p.code == 0);
  CHECK(p.out.find("BATCH") == std::string::npos);
}

TEST_CASE("stats prints the batch counters of a batching lane") {
  FakeBroker b([](const protocol::Message& m) -> std::vector<Frames> {
    nlohmann::json lanes = {{{"api", "embed"},
                             {"limits", {"10/1s"}},
                             {"states", nlohmann::json::object()},
                             {"batching", true},
                             {"batches_total", 40},
                             {"mean_batch_size", 50.0},
                             {"items_per_request", 50.0}},
                            {{"api", "echo"},
                             {"limits", {"10/1s"}},
                             {"states", nlohmann::json::object()},
                             {"batching", false}}};
    return {testing::reply_to(m, {{"lanes", lanes},
                                  {"states", nlohmann::json::object()},
                                  {"workers", nlohmann::json::array()}})};
  });
  auto r = pacer_cli(b.endpoint(), {"stats"});
  CHECK(r.code == 0);
  INFO(r.out);
  CHECK(r.out.find("embed:\n  batches: 40 sent, mean size 50.0; 50.0 jobs "
                   "per request") != std::string::npos);
  CHECK(r.out.find("echo:\n") == std::string::npos);
}
