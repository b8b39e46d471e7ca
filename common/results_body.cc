#include "common/results_body.h"

#include <simdjson.h>

#include <algorithm>
#include <memory>
#include <utility>

#include "common/json_text.h"

namespace pacer::protocol {

namespace {

using json = nlohmann::json;
using simdjson::dom::element;
using simdjson::dom::element_type;

// Bodies up to this size reuse the thread's parser (which keeps its buffers
// as large as the largest body it parsed); larger ones get a parser of
// their own, freed with it.
constexpr std::size_t kReusedParserBytes = 4u << 20;

// The element as an array or object, as a named value: a range-for over
// the value inside a temporary simdjson_result would outlive it. Callers
// check the element's type first.
simdjson::dom::array array_of(element e) {
  simdjson::dom::array a;
  [[maybe_unused]] auto error = e.get_array().get(a);
  return a;
}
simdjson::dom::object object_of(element e) {
  simdjson::dom::object o;
  [[maybe_unused]] auto error = e.get_object().get(o);
  return o;
}

// An element as a document (an observation, or a header's value that is
// not a string).
json to_document(element e) {
  switch (e.type()) {
    case element_type::ARRAY: {
      json a = json::array();
      for (element x : array_of(e)) a.push_back(to_document(x));
      return a;
    }
    case element_type::OBJECT: {
      json o = json::object();
      for (auto field : object_of(e))
        o[std::string(field.key)] = to_document(field.value);
      return o;
    }
    case element_type::INT64:
      return e.get_int64().value_unsafe();
    case element_type::UINT64:
      return e.get_uint64().value_unsafe();
    case element_type::DOUBLE:
      return e.get_double().value_unsafe();
    case element_type::STRING:
      return std::string(e.get_string().value_unsafe());
    case element_type::BOOL:
      return e.get_bool().value_unsafe();
    case element_type::NULL_VALUE:
      return nullptr;
  }
  return nullptr;
}

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
void read_headers(WireResult& r, simdjson::dom::object headers) {
  std::vector<std::pair<std::string_view, element>> fields;
  for (auto field : headers) fields.emplace_back(field.key, field.value);
  std::stable_sort(
      fields.begin(), fields.end(),
      [](const auto& a, const auto& b) { return a.first < b.first; });
  std::string& out = r.headers_json;
  out.clear();
  r.retry_after.reset();
  for (std::size_t i = 0; i < fields.size(); ++i) {
    if (i + 1 < fields.size() && fields[i + 1].first == fields[i].first)
      continue;
    out += out.empty() ? '{' : ',';
    json_text::append_key(out, fields[i].first);
    element v = fields[i].second;
    if (v.type() == element_type::STRING) {
      const std::string_view s = v.get_string().value_unsafe();
      json_text::append_string(out, s);
      if (fields[i].first == "retry-after") r.retry_after = std::string(s);
    } else {
      out += to_document(v).dump();
    }
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
        read_headers(r, object_of(v));
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
  thread_local simdjson::dom::parser reused;
  std::unique_ptr<simdjson::dom::parser> own;
  simdjson::dom::parser* parser = &reused;
  if (body.size() > kReusedParserBytes) {
    own = std::make_unique<simdjson::dom::parser>();
    parser = own.get();
  }
  element doc;
  if (parser->parse(body.data(), body.size()).get(doc) != simdjson::SUCCESS)
    return Error{"RESULTS: the body is not valid JSON"};
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
