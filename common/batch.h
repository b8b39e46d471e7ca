// Batching (DESIGN §7): the [api.NAME.batch] configuration, building one
// request body from the bodies of a batch's members, and splitting a batch
// response back into one result per member. Pure functions, no I/O; the
// broker's accumulator and the worker build on them. Values; thread-safe.
//
// Body building: each member's body (JSON text) is parsed, `member_pointer`
// picks the part of it that becomes the element (the whole body by default),
// and the elements, in member order, form the array at `request_array` inside
// a copy of `body_template` (intermediate objects are created). An absent body
// is a JSON null element. Key order is kept as written.
//
// Response splitting: for a 2xx response only. The array at `response_array`
// must have exactly one item per member, matched by index. An item whose
// `item_error` is present and not null, or whose `item_status` is not 2xx,
// is a failed item; the others succeed. Anything else (a body that is not
// JSON, no array there, a wrong length) fails the whole call with a message
// saying what was expected and what came. A non-2xx response to a whole
// batch is not split: the broker requeues its members individually (429 ->
// waiting for quota, transient -> retrying) and may batch them again.
#pragma once

#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/result.h"

namespace pacer {

// What one batch counts against the lane's request limits. Unit limits
// (tokens, credits, ...) are always charged the sum of the members' costs.
enum class BatchCost : std::uint8_t {
  kRequest = 0,  // the batch is one request
  kPerItem = 1,  // every member is one request
};

inline constexpr int kMaxBatchItems = 10'000;
// Nesting deeper than this in a member body or a response is refused (keeps
// recursive serialization far from the stack's end on hostile input).
inline constexpr int kMaxBatchJsonDepth = 256;

// [api.NAME.batch]; see docs/configuration.md. JSON pointers are valid
// (checked at load); an empty pointer is the whole document.
struct BatchConfig {
  std::string method = "POST";
  std::string path;                  // starts with '/', relative to base_url
  int max_items = 0;                 // 1 .. kMaxBatchItems
  Millis max_wait_ms = 0;            // oldest member's wait before a flush
  std::int64_t max_bytes = 1 << 20;  // request body bytes
  std::string request_array;         // where the elements go; "" = the body
  std::string member_pointer;        // element = this part of a member body
  nlohmann::ordered_json body_template = nlohmann::ordered_json::object();
  std::string response_array;  // per-item results; "" = the body
  std::string item_error;      // relative to an item; "" = none
  std::string item_status;     // relative to an item; "" = none
  BatchCost cost = BatchCost::kRequest;
};

// Why `body_template` cannot hold an array at `request_array`, if it cannot:
// the target already exists, an intermediate is not an object, or a template
// is given while `request_array` is the whole body. Config loading uses it.
std::optional<std::string> check_batch_template(
    const nlohmann::ordered_json& body_template,
    const std::string& request_array);

// Whether `pointer` is a valid JSON pointer ("" or "/a/0/b").
bool is_json_pointer(const std::string& pointer);

// The `spec` of a batch job on the wire (schema/wire_protocol.md "Batch
// jobs"): how to build and split, which is all a worker needs. method, path,
// max_wait and cost stay with the broker. item_error and item_status are ""
// when not configured. JSON objects are unordered on the wire: the template's
// keys arrive sorted.
nlohmann::json batch_spec_json(const BatchConfig& config);

// The spec of a batch job, validated: pointers, the template, max_items in
// 1..kMaxBatchItems, max_bytes > 0. Errors name the field ("spec.max_items
// must be ..."). request_array, response_array and max_items are required,
// as in [api.NAME.batch]; the other fields default as there. Unknown fields
// are ignored; method, path, max_wait and cost keep BatchConfig's defaults.
Result<BatchConfig> batch_spec_from_json(const nlohmann::json& spec);

// The request body of a batch, serialized compactly. Errors name the member
// (0-based): a body that is not JSON, a member_pointer that is not in it, an
// absent body when member_pointer is set; also no members, more than
// max_items, and a body over max_bytes.
Result<std::string> build_batch_body(
    const BatchConfig& config,
    const std::vector<std::optional<std::string>>& member_bodies);

// Bytes of the body with no members (the template with an empty array).
std::size_t batch_envelope_bytes(const BatchConfig& config);

// Bytes one member adds to the body: its element, serialized, plus one for
// the separator. A body of members m1..mn is exactly
// batch_envelope_bytes + sum(batch_member_bytes) - 1 bytes (n >= 1), so an
// accumulator flushes before that sum would pass max_bytes. Errors as
// build_batch_body's for that member (without the index).
Result<std::size_t> batch_member_bytes(const BatchConfig& config,
                                       const std::optional<std::string>& body);

// One member's share of a batch response.
struct BatchItemResult {
  bool ok = true;
  std::string body;   // the item, serialized JSON (also for failed items)
  std::string error;  // failed items: what the item says went wrong
  std::optional<int> status;  // the item's item_status, when present
};

// Splits a 2xx batch response into `members` results, in member order. An
// Error is a whole-call failure (every member fails with its message); a
// non-2xx `http_status` is refused (not this function's business, above).
Result<std::vector<BatchItemResult>> split_batch_response(
    const BatchConfig& config, std::size_t members, int http_status,
    std::string_view body);

}  // namespace pacer
