// Reading JSON text with simdjson where a nlohmann::json document per
// message costs too much (the broker's RESULTS and SUBMIT bodies, the
// worker's JOBS): helpers that read a parsed element the way the document
// reading did. It includes simdjson: only for sources of libraries that link
// it (pacer_common, pacer_worker_lib, unit tests).
#pragma once

#include <simdjson.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace pacer::json_view {

using simdjson::dom::element;
using simdjson::dom::element_type;

// The element as an array or object, as a named value: a range-for over
// the value inside a temporary simdjson_result would outlive it. Callers
// check the element's type first.
simdjson::dom::array array_of(element e);
simdjson::dom::object object_of(element e);

// An object's members as a document holds them: sorted by key, the last of
// repeated keys kept.
std::vector<std::pair<std::string_view, element>> members(element object);

// The last member named `key` (a document keeps the last of repeated keys).
std::optional<element> find(element object, std::string_view key);

// The element as a document.
nlohmann::json to_document(element e);

// Appends the element as to_document(e).dump() writes it, without building
// the document: keys sorted, the last of repeated keys kept, compact.
void append_dumped(std::string& out, element e);

// Parses text with the thread's parser, or with a parser of its own when the
// text is larger than kReusedParserBytes (a parser keeps its buffers as large
// as the largest text it parsed) or the thread's parser is in use by another
// Parsed. The element lives as long as the Parsed and the text.
class Parsed {
 public:
  static constexpr std::size_t kReusedParserBytes = 4u << 20;
  explicit Parsed(std::string_view text);
  ~Parsed();
  Parsed(const Parsed&) = delete;
  Parsed& operator=(const Parsed&) = delete;

  bool ok() const { return error_ == simdjson::SUCCESS; }
  element root() const { return root_; }

 private:
  std::unique_ptr<simdjson::dom::parser> own_;
  bool* holds_reused_ = nullptr;  // the thread's "in use" flag, when taken
  element root_;
  simdjson::error_code error_ = simdjson::SUCCESS;
};

}  // namespace pacer::json_view
