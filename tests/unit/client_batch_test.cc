// What the client shows of batching, run in-process against a fake broker:
// `pacer status` names the batch of a job's latest dispatch, `pacer stats`
// prints a lane's batch counters.
#include <doctest/doctest.h>

#include <sstream>
#include <string>
#include <vector>

#include "client/cli.h"
#include "tests/support/process.h"
#include "tests/unit/client_cli_runner.h"
#include "tests/unit/client_fake_broker.h"

using namespace pacer;
using protocol::Command;
using testing::FakeBroker;
using testing::Frames;

namespace {

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
  auto r = testing::run_pacer(b.endpoint(), {"status", "41", "42"});
  CHECK(r.code == 0);
  INFO(r.out);
  CHECK(r.out.find("BATCH") != std::string::npos);
  CHECK(r.out.find("17 (50 jobs)") != std::string::npos);

  FakeBroker plain([](const protocol::Message& m) -> std::vector<Frames> {
    return {testing::reply_to(m, {{"jobs", {job(42, nullptr)}}})};
  });
  auto p = testing::run_pacer(plain.endpoint(), {"status", "42"});
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
  auto r = testing::run_pacer(b.endpoint(), {"stats"});
  CHECK(r.code == 0);
  INFO(r.out);
  CHECK(r.out.find("embed:\n  batches: 40 sent, mean size 50.0; 50.0 jobs "
                   "per request") != std::string::npos);
  CHECK(r.out.find("echo:\n") == std::string::npos);
}
