#include "common/results_body.h"

#include <algorithm>
#include <utility>

#include "common/json_text.h"
#include "common/json_view.h"

namespace pacer::protocol {

namespace {

using json = nlohmann::json;
using json_view::array_of;
using json_view::element;
using json_view::element_type;
using json_view::object_of;
using json_view::to_document;

// The field setters: a value of another type leaves the field unset (a
// repeated key replaces what the earlier one set, as in a document).
void set_int(std::optional<std::int64_t>& out, element v) {
  out.reset();
  if (v.type() == element_type::INT64)
    out = v.get_int64().value_unsafe();
  else if (v.type() == element_type::UINT64)
    out = static_cast<std::int64_t>(v.get_uint64().value_unsafe());
}

void set_string(std::optional<std::string>& out, element v) {
  out.reset();
  if (v.type() == element_type::STRING)
    out = std::string(v.get_string().value_unsafe());
}

void set_number(std::optional<double>& out, element v) {
  out.reset();
  switch (v.type()) {
    case element_type::INT64:
      out = static_cast<double>(v.get_int64().value_unsafe());
      break;
    case element_type::UINT64:
      out = static_cast<double>(v.get_uint64().value_unsafe());
      break;
    case element_type::DOUBLE:
      out = v.get_double().value_unsafe();
      break;
    default:
      break;
  }
}

// The headers as a document's dump writes them: keys in order, the last of
// a repeated key kept.
void read_headers(WireResult& r, element headers) {
  std::string& out = r.headers_json;
  out.clear();
  r.retry_after.reset();
  for (const auto& [key, value] : json_view::members(headers)) {
    out += out.empty() ? '{' : ',';
    json_text::append_key(out, key);
    json_view::append_dumped(out, value);
    if (key == "retry-after" && value.type() == element_type::STRING)
      r.retry_after = std::string(value.get_string().value_unsafe());
  }
  if (!out.empty()) out += '}';
}

WireMember read_member(element e) {
  WireMember m;
  if (e.type() != element_type::OBJECT) return m;
  m.is_object = true;
  for (auto field : object_of(e)) {
    const std::string_view k = field.key;
    if (k == "id") {
      set_int(m.id, field.value);
    } else if (k == "attempt") {
      set_int(m.attempt, field.value);
    } else if (k == "status") {
      set_int(m.status, field.value);
    } else if (k == "body") {
      set_string(m.body, field.value);
    } else if (k == "error") {
      set_string(m.error, field.value);
    } else if (k == "ok") {
      m.ok.reset();
      if (field.value.type() == element_type::BOOL)
        m.ok = field.value.get_bool().value_unsafe();
    }
  }
  return m;
}

WireResult read_result(element e) {
  WireResult r;
  if (e.type() != element_type::OBJECT) return r;
  r.is_object = true;
  for (auto field : object_of(e)) {
    const std::string_view k = field.key;
    element v = field.value;
    if (k == "id") {
      set_int(r.id, v);
    } else if (k == "attempt") {
      set_int(r.attempt, v);
    } else if (k == "status") {
      set_int(r.status, v);
    } else if (k == "body") {
      set_string(r.body, v);
    } else if (k == "outcome") {
      set_string(r.outcome, v);
    } else if (k == "error") {
      set_string(r.error, v);
    } else if (k == "headers") {
      if (v.type() == element_type::OBJECT) {
        read_headers(r, v);
      } else {
        r.headers_json.clear();
        r.retry_after.reset();
      }
    } else if (k == "duration_ms") {
      set_number(r.duration_ms, v);
    } else if (k == "observation") {
      r.observation = to_document(v);  // null stays null
    } else if (k == "batch") {
      r.has_batch = true;
      set_int(r.batch, v);
    } else if (k == "actual_cost") {
      set_number(r.actual_cost, v);
    } else if (k == "split_error") {
      set_string(r.split_error, v);
    } else if (k == "members") {
      r.members.clear();
      r.has_members = v.type() == element_type::ARRAY;
      if (r.has_members)
        for (element m : array_of(v)) r.members.push_back(read_member(m));
    }
  }
  return r;
}

}  // namespace

Result<std::vector<WireResult>> parse_results(std::string_view body) {
  json_view::Parsed parsed(body);
  if (!parsed.ok()) return Error{"RESULTS: the body is not valid JSON"};
  const element doc = parsed.root();
  if (doc.type() != element_type::OBJECT)
    return Error{"RESULTS: the body must be a JSON object"};
  // The last "results" counts, as in a document.
  std::optional<element> results;
  for (auto field : object_of(doc))
    if (field.key == "results") results = field.value;
  if (!results || results->type() != element_type::ARRAY)
    return Error{"RESULTS: 'results' must be an array"};
  std::vector<WireResult> out;
  for (element e : array_of(*results)) out.push_back(read_result(e));
  return out;
}

}  // namespace pacer::protocol
