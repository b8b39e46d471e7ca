// Two readers of one JSON value with the same interface, so one template
// validates a message whether it arrives as a nlohmann::json document or as
// simdjson elements (common/job_spec_reader.h for SUBMIT's jobs, the
// worker's reading of JOBS), and both give the same answer. Internal to
// pacer's own libraries: it includes simdjson.
//
// Interface (both cheap to copy; views of a value that must outlive them):
//   bool is_object(), is_null(), is_string(), is_integer() const;
//   std::string string() const;                  // when is_string()
//   std::optional<std::int64_t> int64() const;   // an integer that fits
//   std::vector<std::pair<std::string_view, V>> members() const;
//       // sorted by key, the last of repeated keys kept (a document's view)
//   std::optional<V> find(std::string_view key) const;  // the last such key
//   std::string dump() const;  // as nlohmann::json's dump() writes it
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/json_view.h"

namespace pacer::json_reader {

using json_view::element;
using json_view::element_type;

// A document.
class DocumentValue {
 public:
  explicit DocumentValue(const nlohmann::json& v) : v_(&v) {}
  bool is_object() const { return v_->is_object(); }
  bool is_null() const { return v_->is_null(); }
  bool is_string() const { return v_->is_string(); }
  bool is_integer() const { return v_->is_number_integer(); }
  std::string string() const { return v_->get<std::string>(); }
  // nlohmann's get<> would wrap an unsigned 2^64-1 to -1.
  std::optional<std::int64_t> int64() const {
    if (v_->is_number_unsigned()) {
      auto u = v_->get<std::uint64_t>();
      if (u > static_cast<std::uint64_t>(INT64_MAX)) return std::nullopt;
      return static_cast<std::int64_t>(u);
    }
    if (v_->is_number_integer()) return v_->get<std::int64_t>();
    return std::nullopt;
  }
  std::vector<std::pair<std::string_view, DocumentValue>> members() const {
    std::vector<std::pair<std::string_view, DocumentValue>> out;
    for (auto it = v_->begin(); it != v_->end(); ++it)
      out.emplace_back(it.key(), DocumentValue(it.value()));
    return out;
  }
  std::optional<DocumentValue> find(std::string_view key) const {
    auto it = v_->find(key);
    if (it == v_->end()) return std::nullopt;
    return DocumentValue(*it);
  }
  std::string dump() const { return v_->dump(); }

 private:
  const nlohmann::json* v_;
};

// A simdjson element, read as a document of the same text would be.
class ElementValue {
 public:
  explicit ElementValue(element e) : e_(e) {}
  bool is_object() const { return e_.type() == element_type::OBJECT; }
  bool is_null() const { return e_.type() == element_type::NULL_VALUE; }
  bool is_string() const { return e_.type() == element_type::STRING; }
  bool is_integer() const {
    return e_.type() == element_type::INT64 ||
           e_.type() == element_type::UINT64;
  }
  std::string string() const {
    return std::string(e_.get_string().value_unsafe());
  }
  std::optional<std::int64_t> int64() const {
    if (e_.type() == element_type::INT64) return e_.get_int64().value_unsafe();
    if (e_.type() == element_type::UINT64) {
      auto u = e_.get_uint64().value_unsafe();
      if (u <= static_cast<std::uint64_t>(INT64_MAX))
        return static_cast<std::int64_t>(u);
    }
    return std::nullopt;
  }
  std::vector<std::pair<std::string_view, ElementValue>> members() const {
    std::vector<std::pair<std::string_view, ElementValue>> out;
    for (const auto& [key, value] : json_view::members(e_))
      out.emplace_back(key, ElementValue(value));
    return out;
  }
  std::optional<ElementValue> find(std::string_view key) const {
    if (auto v = json_view::find(e_, key)) return ElementValue(*v);
    return std::nullopt;
  }
  std::string dump() const {
    std::string out;
    json_view::append_dumped(out, e_);
    return out;
  }

 private:
  element e_;
};

}  // namespace pacer::json_reader
