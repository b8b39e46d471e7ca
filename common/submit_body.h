// Reading the body of a SUBMIT message (schema/wire_protocol.md) into
// JobSpecs. The broker reads every job it is given once; parsing a chunk of
// 10,000 jobs into a nlohmann::json document, reading the specs out of it
// and freeing it took about a tenth of its time in bench/e2e_throughput.sh.
// parse_submit reads the text with simdjson instead; submit_from_document
// reads a document (what the broker falls back to for text simdjson does
// not take, such as an integer beyond 64 bits). Both validate each job with
// parse_job_spec's one implementation and give the same WireSubmit.
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/job.h"

namespace pacer::protocol {

struct WireSubmit {
  nlohmann::json req;                // its "req", null when absent
  bool jobs_is_array = false;        // "jobs" is an array
  std::size_t job_count = 0;         // its entries
  std::optional<std::string> group;  // "group" when a string
  // The jobs in order up to the first invalid one; none are read when
  // job_count is above the reader's max_jobs.
  std::vector<JobSpec> specs;
  // Why job number specs.size() is invalid (parse_job_spec's error).
  std::optional<std::string> invalid;
};

// Reads a SUBMIT body's text; empty when it is not a JSON object simdjson
// parses (invalid JSON, not an object, or valid JSON simdjson does not take):
// the caller then decodes it as a document, which reports what is wrong as
// for any other message.
std::optional<WireSubmit> parse_submit(std::string_view body,
                                       std::size_t max_jobs);

// The same from a document.
WireSubmit submit_from_document(const nlohmann::json& body,
                                std::size_t max_jobs);

}  // namespace pacer::protocol
