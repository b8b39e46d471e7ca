// Reading a JSONL file of job specs for `pacer submit --file`, and turning it
// into SUBMIT chunks: every line is validated before anything is sent, each
// job without its own idempotency key gets `<group>:<line>`, and chunks stay
// within the protocol's limits so a resent chunk never duplicates work.
// Pure functions over values; thread-safe.
#pragma once

#include <cstddef>
#include <functional>
#include <istream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "common/job.h"
#include "common/result.h"

namespace pacer::client {

// At most this many bad lines are listed; the rest are only counted.
inline constexpr std::size_t kMaxListedErrors = 10;
// A SUBMIT chunk's serialized jobs stay under this, well below the broker's
// 64 MiB message limit (one job alone may still exceed it and is sent alone).
inline constexpr std::size_t kMaxChunkBytes = 16u << 20;

// Errors tied to lines, formatted "NAME:LINE: reason".
struct LineErrors {
  std::vector<std::string> shown;  // the first kMaxListedErrors
  std::size_t count = 0;           // all of them

  void add(std::string message);
  bool empty() const { return count == 0; }
};

// One valid line. The text is kept instead of the parsed JSON (a parsed object
// costs several times its text) and parsed again when its chunk is built.
struct FileJob {
  int line = 0;
  std::string text;
  std::string api;
  bool has_key = false;  // carries its own non-empty "key"
  // Has a "key" member at all (an empty or null one is no key of its own, but
  // the derived key must replace it rather than be appended beside it).
  bool key_member = false;
  // The line's own top-level "id" (serialized), when it is an object that
  // has one: `pacer run` echoes it in the line's result. Empty otherwise.
  std::string ref_id;
};

struct JobsFile {
  std::string name;  // as the user named it; "<stdin>" for "-"
  std::vector<FileJob> jobs;
  LineErrors errors;
};

// How a line's JSON value becomes a JobSpec object, or why it cannot
// (`pacer run` wraps bare request bodies and takes out the line's "id").
using LineToJob = std::function<Result<nlohmann::json>(nlohmann::json line)>;

// Reads every line: blank lines and lines starting with '#' are skipped,
// every other line must be a JSON object that parse_job_spec accepts (after
// `to_job`, when given).
JobsFile read_jobs(std::istream& in, const std::string& name,
                   const LineToJob& to_job = {});

// The lines whose API is not in `known` ("NAME:LINE: unknown api 'x' ...").
LineErrors unknown_apis(const JobsFile& file,
                        const std::set<std::string>& known);

// The idempotency key of a file's job that has none: "<group>:<line>".
std::string derive_key(const std::string& group, int line);

// A fresh group id: "g-" and 12 random hex digits.
std::string new_group_id();

// A group must fit in a key with a line number: 1..200 printable characters
// without whitespace.
Result<Ok> check_group(const std::string& group);

// Half-open ranges [begin, end) of `jobs`, in order: at most `max_jobs` jobs
// and (unless a single job is bigger) `max_bytes` of job text per chunk.
struct ChunkRange {
  std::size_t begin = 0;
  std::size_t end = 0;
  std::size_t size() const { return end - begin; }
};
std::vector<ChunkRange> plan_chunks(const std::vector<FileJob>& jobs,
                                    std::size_t max_jobs = kMaxJobsPerSubmit,
                                    std::size_t max_bytes = kMaxChunkBytes);

// The SUBMIT body of one chunk as JSON text: {"jobs": [...], "group": group},
// keys derived where a job has none. Written from the lines' text, which
// read_jobs validated: a line without a "key" member gets the derived key
// appended before its closing brace; only a line whose "key" is there but
// empty is parsed again.
std::string chunk_body(const JobsFile& file, ChunkRange range,
                       const std::string& group);

// nlohmann's parse error without its "[json.exception...]" prefix.
std::string json_error_text(const std::string& what);

}  // namespace pacer::client
