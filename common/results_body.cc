#include "common/results_body.h"

#include <algorithm>
#include <utility>

#include "common/json_text.h"

namespace pacer::protocol {

namespace {

using json = nlohmann::json;

// Builds a document for one value (an observation, or a header's value that
// is not a string), event by event.
class DomBuilder {
 public:
  void start() {
    root_ = nullptr;
    stack_.clear();
  }
  void value(json v) { *slot() = std::move(v); }
  void open(json v) {
    json* s = slot();
    *s = std::move(v);
    stack_.push_back(s);
  }
  void key(std::string k) { key_ = std::move(k); }
  // Closes the innermost container; true when that was the root.
  bool close() {
    stack_.pop_back();
    return stack_.empty();
  }
  json take() { return std::move(root_); }

 private:
  // Where the next value goes. The containers on the stack stay where they
  // are: a parent gains no element while a child of it is open.
  json* slot() {
    if (stack_.empty()) return &root_;
    json* top = stack_.back();
    if (top->is_array()) {
      top->push_back(nullptr);
      return &top->back();
    }
    return &(*top)[key_];
  }

  json root_;
  std::vector<json*> stack_;
  std::string key_;
};

class ResultsReader {
 public:
  using number_integer_t = json::number_integer_t;
  using number_unsigned_t = json::number_unsigned_t;
  using number_float_t = json::number_float_t;
  using string_t = json::string_t;
  using binary_t = json::binary_t;

  std::vector<WireResult> results;
  bool top_is_object = false;
  bool results_is_array = false;

  bool null() { return scalar(nullptr); }
  bool boolean(bool v) { return scalar(v); }
  bool number_integer(number_integer_t v) { return scalar(v); }
  bool number_unsigned(number_unsigned_t v) { return scalar(v); }
  bool number_float(number_float_t v, const string_t&) { return scalar(v); }
  bool string(string_t& v) { return scalar(std::move(v)); }
  bool binary(binary_t&) { return false; }  // not in JSON text

  bool start_object(std::size_t) { return open(true); }
  bool end_object() { return close(); }
  bool start_array(std::size_t) { return open(false); }
  bool end_array() { return close(); }

  bool key(string_t& k) {
    if (ctx_.back() == Ctx::kDom)
      dom_.key(std::move(k));
    else if (ctx_.back() != Ctx::kSkip)
      key_ = std::move(k);
    return true;
  }

  bool parse_error(std::size_t, const std::string&,
                   const nlohmann::detail::exception&) {
    return false;
  }

 private:
  // What the innermost open container is.
  enum class Ctx {
    kTop,      // the body
    kResults,  // the "results" array
    kResult,   // one result
    kHeaders,  // its "headers"
    kMembers,  // its "members"
    kMember,   // one member
    kDom,      // inside a value kept as a document
    kSkip,     // inside a value nothing is read from
  };
  // Which document is being built, and where it goes when done.
  enum class DomFor { kObservation, kHeader };

  WireResult& result() { return results.back(); }

  static bool as_int(const json& v, std::optional<std::int64_t>& out) {
    if (v.is_number_integer()) out = v.get<std::int64_t>();
    return true;
  }
  static bool as_string(json& v, std::optional<std::string>& out) {
    if (v.is_string()) out = std::move(v.get_ref<std::string&>());
    return true;
  }
  static bool as_number(const json& v, std::optional<double>& out) {
    if (v.is_number()) out = v.get<double>();
    return true;
  }

  template <typename T>
  bool scalar(T&& raw) {
    if (ctx_.empty()) return true;  // a body that is not an object
    switch (ctx_.back()) {
      case Ctx::kTop:
        if (key_ == "results") results_is_array = false;
        return true;
      case Ctx::kResults:
        results.emplace_back();  // not an object
        return true;
      case Ctx::kResult:
        return result_field(json(std::forward<T>(raw)));
      case Ctx::kHeaders: {
        json v(std::forward<T>(raw));
        std::string text;
        if (v.is_string())
          json_text::append_string(text, v.get_ref<const std::string&>());
        else
          text = v.dump();
        if (key_ == "retry-after") {
          if (v.is_string())
            result().retry_after = std::move(v.get_ref<std::string&>());
          else
            result().retry_after.reset();
        }
        headers_.emplace_back(std::move(key_), std::move(text));
        return true;
      }
      case Ctx::kMembers:
        result().members.emplace_back();  // not an object
        return true;
      case Ctx::kMember:
        return member_field(json(std::forward<T>(raw)));
      case Ctx::kDom:
        dom_.value(json(std::forward<T>(raw)));
        return true;
      case Ctx::kSkip:
        return true;
    }
    return true;
  }

  bool result_field(json v) {
    WireResult& r = result();
    if (key_ == "batch") {
      r.has_batch = true;
      r.batch.reset();
      return as_int(v, r.batch);
    }
    if (key_ == "id") return reset_and(r.id, [&] { return as_int(v, r.id); });
    if (key_ == "attempt")
      return reset_and(r.attempt, [&] { return as_int(v, r.attempt); });
    if (key_ == "status")
      return reset_and(r.status, [&] { return as_int(v, r.status); });
    if (key_ == "outcome")
      return reset_and(r.outcome, [&] { return as_string(v, r.outcome); });
    if (key_ == "error")
      return reset_and(r.error, [&] { return as_string(v, r.error); });
    if (key_ == "body")
      return reset_and(r.body, [&] { return as_string(v, r.body); });
    if (key_ == "split_error")
      return reset_and(r.split_error,
                       [&] { return as_string(v, r.split_error); });
    if (key_ == "duration_ms")
      return reset_and(r.duration_ms,
                       [&] { return as_number(v, r.duration_ms); });
    if (key_ == "actual_cost")
      return reset_and(r.actual_cost,
                       [&] { return as_number(v, r.actual_cost); });
    if (key_ == "observation") {
      r.observation = std::move(v);  // null stays null
      return true;
    }
    if (key_ == "headers") {
      // Not an object: as if absent.
      r.headers_json.clear();
      r.retry_after.reset();
      return true;
    }
    if (key_ == "members") {
      r.has_members = false;
      r.members.clear();
    }
    return true;
  }

  bool member_field(json v) {
    WireMember& m = result().members.back();
    if (key_ == "id") return reset_and(m.id, [&] { return as_int(v, m.id); });
    if (key_ == "attempt")
      return reset_and(m.attempt, [&] { return as_int(v, m.attempt); });
    if (key_ == "status")
      return reset_and(m.status, [&] { return as_int(v, m.status); });
    if (key_ == "body")
      return reset_and(m.body, [&] { return as_string(v, m.body); });
    if (key_ == "error")
      return reset_and(m.error, [&] { return as_string(v, m.error); });
    if (key_ == "ok") {
      m.ok.reset();
      if (v.is_boolean()) m.ok = v.get<bool>();
    }
    return true;
  }

  // A repeated key replaces what the earlier one set, even with a value of
  // the wrong type (which then leaves the field unset).
  template <typename T, typename F>
  static bool reset_and(std::optional<T>& field, F set) {
    field.reset();
    return set();
  }

  bool open(bool object) {
    if (ctx_.empty()) {
      top_is_object = object;
      ctx_.push_back(object ? Ctx::kTop : Ctx::kSkip);
      return true;
    }
    Ctx next = Ctx::kSkip;
    switch (ctx_.back()) {
      case Ctx::kTop:
        if (key_ == "results") {
          results_is_array = !object;
          results.clear();  // a repeated "results": the last one counts
          if (!object) next = Ctx::kResults;
        }
        break;
      case Ctx::kResults:
        results.emplace_back();
        if (object) {
          result().is_object = true;
          next = Ctx::kResult;
        }
        break;
      case Ctx::kResult:
        next = open_in_result(object);
        break;
      case Ctx::kHeaders:
        // A header whose value is not a string: kept as written.
        start_dom(DomFor::kHeader, object);
        next = Ctx::kDom;
        break;
      case Ctx::kMembers:
        result().members.emplace_back();
        if (object) {
          result().members.back().is_object = true;
          next = Ctx::kMember;
        }
        break;
      case Ctx::kMember:
        member_field(nullptr);  // a container where a scalar belongs
        break;
      case Ctx::kDom:
        dom_.open(object ? json::object() : json::array());
        next = Ctx::kDom;
        break;
      case Ctx::kSkip:
        break;
    }
    ctx_.push_back(next);
    return true;
  }

  Ctx open_in_result(bool object) {
    WireResult& r = result();
    if (key_ == "headers") {
      r.headers_json.clear();
      r.retry_after.reset();
      headers_.clear();
      if (object) return Ctx::kHeaders;
      return Ctx::kSkip;
    }
    if (key_ == "observation") {
      start_dom(DomFor::kObservation, object);
      return Ctx::kDom;
    }
    if (key_ == "members") {
      r.members.clear();
      r.has_members = !object;
      return object ? Ctx::kSkip : Ctx::kMembers;
    }
    // Any other field: a container where the protocol has a scalar (or a
    // field the broker does not read), so it reads as absent.
    result_field(nullptr);
    return Ctx::kSkip;
  }

  void start_dom(DomFor what, bool object) {
    dom_for_ = what;
    header_key_ = key_;
    dom_.start();
    dom_.open(object ? json::object() : json::array());
  }

  bool close() {
    const Ctx done = ctx_.back();
    ctx_.pop_back();
    if (done == Ctx::kHeaders) {
      write_headers();
    } else if (done == Ctx::kDom && dom_.close()) {
      if (dom_for_ == DomFor::kObservation) {
        result().observation = dom_.take();
      } else {
        if (header_key_ == "retry-after") result().retry_after.reset();
        headers_.emplace_back(std::move(header_key_), dom_.take().dump());
      }
    }
    return true;
  }

  // The headers as a document's dump writes them: keys in order, the last
  // of a repeated key kept.
  void write_headers() {
    std::stable_sort(
        headers_.begin(), headers_.end(),
        [](const auto& a, const auto& b) { return a.first < b.first; });
    std::string& out = result().headers_json;
    out.clear();
    if (headers_.empty()) return;
    out += '{';
    for (std::size_t i = 0; i < headers_.size(); ++i) {
      if (i + 1 < headers_.size() && headers_[i + 1].first == headers_[i].first)
        continue;
      if (out.size() > 1) out += ',';
      json_text::append_key(out, headers_[i].first);
      out += headers_[i].second;
    }
    out += '}';
    headers_.clear();
  }

  std::vector<Ctx> ctx_;
  std::string key_;
  DomBuilder dom_;
  DomFor dom_for_ = DomFor::kObservation;
  std::string header_key_;
  // The current result's headers: name and value as JSON text.
  std::vector<std::pair<std::string, std::string>> headers_;
};

}  // namespace

Result<std::vector<WireResult>> parse_results(std::string_view body) {
  ResultsReader reader;
  const bool ok = json::sax_parse(body.begin(), body.end(), &reader,
                                  nlohmann::detail::input_format_t::json, true);
  if (!ok) return Error{"RESULTS: the body is not valid JSON"};
  if (!reader.top_is_object)
    return Error{"RESULTS: the body must be a JSON object"};
  if (!reader.results_is_array)
    return Error{"RESULTS: 'results' must be an array"};
  return std::move(reader.results);
}

}  // namespace pacer::protocol
