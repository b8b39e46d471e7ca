// pacer-bench-store: the broker's storage cost of one job's life, alone.
// Drives the real Store (broker/store.h) on a real SQLite file the way a
// broker turn does: per transaction, insert N jobs, claim them, end each
// attempt with a 200 and a small body, commit. Prints microseconds per job
// for each step, so bench/README.md can say how much of the broker's CPU per
// job is SQLite's.
//   pacer-bench-store NEW_DB_FILE [JOBS] [PER_TRANSACTION] [normal|full]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "broker/store.h"

namespace {

using Clock = std::chrono::steady_clock;

double us_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr,
                 "usage: pacer-bench-store DB_FILE [JOBS] [PER_TRANSACTION] "
                 "[normal|full]\n");
    return 2;
  }
  const std::string path = argv[1];
  const long jobs = argc > 2 ? std::atol(argv[2]) : 100'000;
  const long per_tx = argc > 3 ? std::atol(argv[3]) : 64;
  const bool full = argc > 4 && std::string(argv[4]) == "full";
  if (jobs < 1 || per_tx < 1) {
    std::fprintf(stderr, "JOBS and PER_TRANSACTION must be positive\n");
    return 2;
  }
  if (std::filesystem::exists(path)) {
    std::fprintf(stderr, "%s exists: the benchmark wants a new file\n",
                 path.c_str());
    return 2;
  }
  pacer::Store store(path, full);

  pacer::JobSpec spec;
  spec.api = "echo";
  spec.method = "POST";
  spec.path = "/v1/echo";
  double insert_us = 0, claim_us = 0, end_us = 0, commit_us = 0;
  std::vector<pacer::JobId> ids;
  pacer::Millis now = 1'000'000;
  const auto start = Clock::now();
  for (long done = 0; done < jobs; done += per_tx) {
    const long n = std::min(per_tx, jobs - done);
    ++now;
    auto t = Clock::now();
    store.begin();
    ids.clear();
    for (long i = 0; i < n; ++i) {
      spec.body = "{\"n\":" + std::to_string(done + i) + "}";
      ids.push_back(store.insert_job(spec, "bench", 5, 30'000, now).id);
    }
    insert_us += us_since(t);
    t = Clock::now();
    std::vector<int> attempts;
    for (auto id : ids) {
      auto c = store.claim(id, "echo", "bench-worker", now, 5'000);
      if (!c) {
        std::fprintf(stderr, "claim of job %lld failed\n",
                     static_cast<long long>(id));
        return 1;
      }
      attempts.push_back(c->attempt);
    }
    claim_us += us_since(t);
    t = Clock::now();
    for (std::size_t i = 0; i < ids.size(); ++i) {
      pacer::AttemptEnd e;
      e.id = ids[i];
      e.attempt = attempts[i];
      e.status = 200;
      e.body = "{\"ok\":true}";
      e.duration_ms = 0.2;
      e.run_at = now;
      if (!store.end_attempt(e, now)) {
        std::fprintf(stderr, "end of job %lld failed\n",
                     static_cast<long long>(ids[i]));
        return 1;
      }
    }
    end_us += us_since(t);
    t = Clock::now();
    store.commit();
    commit_us += us_since(t);
  }
  const double total = us_since(start);
  std::printf("jobs=%ld per_transaction=%ld synchronous=%s\n", jobs, per_tx,
              full ? "full" : "normal");
  std::printf(
      "per job: insert %.1f us, claim %.1f us, end %.1f us, commit %.1f us; "
      "total %.1f us (%.0f job lives/s)\n",
      insert_us / jobs, claim_us / jobs, end_us / jobs, commit_us / jobs,
      total / jobs, jobs / (total / 1e6));
  return 0;
}
