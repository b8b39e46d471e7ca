// `pacer run`: submit every line of a JSONL file, wait, and write one result
// line per input line to an output file, resumably.
//
// A run is named by its input's content: the group is "run:" + the first 16
// hex digits of the file's SHA-256, and each line's idempotency key is
// "<group>:<line>". Running the same command again therefore submits nothing
// twice (the broker answers existing keys with the first job), and the output
// file says which lines already have their result, so only the others are
// fetched and appended. A changed file is a new run.
//
// The pure parts (names, resume parsing, result lines, the progress line) are
// declared here for the tests; run_file() drives the broker. Not thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "client/commands.h"
#include "client/jobs_file.h"
#include "common/clock.h"
#include "common/result.h"

namespace pacer::client {

// Exit code of a run stopped by SIGINT (the shell's 128 + 2).
inline constexpr int kExitInterrupted = 130;

// "run:" + the first 16 hex digits of SHA-256(content): the group of every
// job of this input, and the prefix of their keys (derive_key(group, line)).
std::string run_group(std::string_view content);

// How a line becomes a job. Without `api` the line is a JobSpec object whose
// own "id" is taken out (it names the line for the user; the broker has no
// use for it). With `api` the line is the request body, sent whole.
struct RunInput {
  std::string api = {};     // --api: lines are bare request bodies
  std::string path = {};    // --path, default "/"
  std::string method = {};  // --method, default POST
};
LineToJob run_line_to_job(const RunInput& input);

// What an existing output file already holds.
struct OutputState {
  std::size_t keep_bytes = 0;  // complete lines; anything after is cut
  bool partial = false;        // a trailing line without '\n' was found
  std::map<int, std::string> outcomes;  // input line -> outcome
  std::map<int, std::int64_t> jobs;     // input line -> job id
};
// Parses `text` (the output file's content, `name` for messages). Every
// complete line must be a result line (an object with a positive integer
// "line"); a last line without '\n' was cut short by an interruption and is
// dropped.
Result<OutputState> parse_output(std::string_view text,
                                 const std::string& name);

// One output line (no '\n'): line, id (when the input line had one), job,
// outcome, status, body or error, attempts. `job` is RESULT's "job" object.
// A body that is JSON is embedded as JSON, any other body as a string.
std::string result_line(int line, const std::string& ref_id, std::int64_t id,
                        const nlohmann::json& job);

// The 429 answers among a RESULT reply's attempts.
std::int64_t rate_limited_attempts(const nlohmann::json& result_reply);

// A lane as the progress line shows it (from STATS).
struct LaneView {
  std::string api = {};
  double rate_per_s = 0;
  std::string limits = {};                     // "10/1s, 600/1m0s"; "" for none
  std::optional<Millis> paused_until_ms = {};  // wall clock
  std::int64_t waiting_quota = 0;  // the lane's jobs waiting on a 429
};
// The lanes named in `apis` from a STATS reply body.
std::vector<LaneView> lane_views(const nlohmann::json& stats,
                                 const std::vector<std::string>& apis);

struct RunCounts {
  std::int64_t total = 0;         // job lines in the input
  std::int64_t done = 0;          // lines with a result in the output
  std::int64_t succeeded = 0;     // of `done`
  std::int64_t failed = 0;        // of `done`: dead or canceled
  std::int64_t rate_limited = 0;  // 429s among the results fetched so far
};

// The progress line's text. The clock is injected so tests can drive it;
// the ETA is the remaining lines at the pace of the lines done since the
// meter started.
class ProgressMeter {
 public:
  ProgressMeter(Clock& clock, std::int64_t done_at_start);
  std::string line(const RunCounts& c, const std::vector<LaneView>& lanes);
  // For a stderr that is not a terminal: true every `every_ms`.
  bool plain_due(Millis every_ms);

 private:
  Clock& clock_;
  Millis start_ms_;
  Millis last_plain_ms_;
  std::int64_t done_at_start_;
};

struct RunOptions {
  std::string file;    // the JSONL input; "-" for stdin
  std::string output;  // -o: results, appended to
  RunInput input;
  Millis poll_ms = 500;          // PROGRESS/STATUS interval (at least 250)
  Millis plain_every_ms = 5000;  // progress lines when stderr is no terminal
};
int run_file(Session& s, const RunOptions& o);

}  // namespace pacer::client
