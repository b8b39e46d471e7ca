// Reading the body of a RESULTS message (schema/wire_protocol.md) straight
// into plain structs, without building a nlohmann::json document: the broker
// reads one result per job it runs, and building that document (a map node
// and a string per field), reading it and freeing it took about a sixth of
// its time; nlohmann's SAX parser alone still cost ~7 us per result, simdjson
// ~0.5 us. simdjson parses and validates the text (UTF-8 included); only the
// fields the broker reads are kept, each only when it has the type the
// protocol gives it, the last of repeated keys winning: what the document
// reading found.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace pacer::protocol {

// One entry of a batch result's "members".
struct WireMember {
  bool is_object = false;  // false: the entry was not an object (ignored)
  std::optional<std::int64_t> id;       // when an integer
  std::optional<std::int64_t> attempt;  // when an integer
  std::optional<bool> ok;               // when a boolean
  std::optional<std::int64_t> status;   // when an integer
  std::optional<std::string> body;      // when a string
  std::optional<std::string> error;     // when a string
};

// One entry of "results": a job's Result or a batch result.
struct WireResult {
  bool is_object = false;  // false: the entry was not an object
  bool has_batch = false;  // a "batch" key of any type: a batch result
  std::optional<std::int64_t> batch;       // when an integer
  std::optional<std::int64_t> id;          // when an integer
  std::optional<std::int64_t> attempt;     // when an integer
  std::optional<std::int64_t> status;      // when an integer
  std::optional<std::string> outcome;      // when a string
  std::optional<std::string> error;        // when a string
  std::optional<std::string> body;         // when a string
  std::optional<std::string> split_error;  // when a string
  std::optional<double> duration_ms;       // when a number
  std::optional<double> actual_cost;       // when a number
  // "headers" when an object: written again as compact JSON with its keys
  // sorted and repeated keys dropped (the last kept), as a document's dump
  // would write it; empty when absent, not an object, or empty.
  std::string headers_json;
  // The headers' "retry-after" when it is a string.
  std::optional<std::string> retry_after;
  // "observation" unless absent or null (then null).
  nlohmann::json observation;
  bool has_members = false;  // "members" is an array
  std::vector<WireMember> members;
};

// Parses a RESULTS body: an object whose "results" is an array. The error
// names what is wrong ("RESULTS: ..."), as the decoder's would.
Result<std::vector<WireResult>> parse_results(std::string_view body);

}  // namespace pacer::protocol
