#include "common/json_view.h"

#include <algorithm>
#include <charconv>

#include "common/json_text.h"

namespace pacer::json_view {

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

std::vector<std::pair<std::string_view, element>> members(element object) {
  std::vector<std::pair<std::string_view, element>> fields;
  for (auto field : object_of(object))
    fields.emplace_back(field.key, field.value);
  std::stable_sort(
      fields.begin(), fields.end(),
      [](const auto& a, const auto& b) { return a.first < b.first; });
  // Of a run of equal keys, the last (stable sort kept their order) stays.
  std::size_t out = 0;
  for (std::size_t i = 0; i < fields.size(); ++i) {
    if (i + 1 < fields.size() && fields[i + 1].first == fields[i].first)
      continue;
    fields[out++] = fields[i];
  }
  fields.resize(out);
  return fields;
}

std::optional<element> find(element object, std::string_view key) {
  std::optional<element> found;
  for (auto field : object_of(object))
    if (field.key == key) found = field.value;
  return found;
}

nlohmann::json to_document(element e) {
  switch (e.type()) {
    case element_type::ARRAY: {
      nlohmann::json a = nlohmann::json::array();
      for (element x : array_of(e)) a.push_back(to_document(x));
      return a;
    }
    case element_type::OBJECT: {
      nlohmann::json o = nlohmann::json::object();
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

void append_dumped(std::string& out, element e) {
  switch (e.type()) {
    case element_type::ARRAY: {
      out += '[';
      bool first = true;
      for (element x : array_of(e)) {
        if (!first) out += ',';
        first = false;
        append_dumped(out, x);
      }
      out += ']';
      return;
    }
    case element_type::OBJECT: {
      out += '{';
      bool first = true;
      for (const auto& [key, value] : members(e)) {
        if (!first) out += ',';
        first = false;
        json_text::append_key(out, key);
        append_dumped(out, value);
      }
      out += '}';
      return;
    }
    case element_type::INT64:
      json_text::append_number(out, e.get_int64().value_unsafe());
      return;
    case element_type::UINT64: {
      char buf[24];
      auto r =
          std::to_chars(buf, buf + sizeof buf, e.get_uint64().value_unsafe());
      out.append(buf, r.ptr);
      return;
    }
    case element_type::DOUBLE:
      // simdjson writes a double as nlohmann's dump does (both use Grisu2
      // with the same exponent and ".0" rules).
      out += simdjson::minify(e);
      return;
    case element_type::STRING:
      json_text::append_string(out, e.get_string().value_unsafe());
      return;
    case element_type::BOOL:
      out += e.get_bool().value_unsafe() ? "true" : "false";
      return;
    case element_type::NULL_VALUE:
      out += "null";
      return;
  }
}

Parsed::Parsed(std::string_view text) {
  thread_local simdjson::dom::parser reused;
  thread_local bool reused_in_use = false;
  simdjson::dom::parser* parser = &reused;
  if (text.size() > kReusedParserBytes || reused_in_use) {
    own_ = std::make_unique<simdjson::dom::parser>();
    parser = own_.get();
  } else {
    reused_in_use = true;
    holds_reused_ = &reused_in_use;
  }
  error_ = parser->parse(text.data(), text.size()).get(root_);
}

Parsed::~Parsed() {
  if (holds_reused_) *holds_reused_ = false;
}

}  // namespace pacer::json_view
