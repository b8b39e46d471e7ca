#include "common/submit_body.h"

#include <cstdint>
#include <utility>

#include "common/job_spec_reader.h"
#include "common/json_view.h"

namespace pacer::protocol {
namespace {

using json_view::element;
using json_view::element_type;

// A simdjson element as job_spec_reader reads values: what a document made
// of the same text would say.
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

// Reads each job until the first invalid one.
template <class Range, class Read>
void read_jobs(WireSubmit& w, const Range& jobs, std::size_t max_jobs,
               Read read) {
  if (w.job_count > max_jobs) return;
  w.specs.reserve(w.job_count);
  for (const auto& job : jobs) {
    auto spec = read(job);
    if (!spec) {
      w.invalid = spec.error();
      return;
    }
    w.specs.push_back(std::move(spec).value());
  }
}

}  // namespace

std::optional<WireSubmit> parse_submit(std::string_view body,
                                       std::size_t max_jobs) {
  json_view::Parsed parsed(body);
  if (!parsed.ok()) return std::nullopt;
  const element doc = parsed.root();
  if (doc.type() != element_type::OBJECT) return std::nullopt;
  WireSubmit w;
  if (auto req = json_view::find(doc, "req"))
    w.req = json_view::to_document(*req);
  if (auto group = json_view::find(doc, "group");
      group && group->type() == element_type::STRING)
    w.group = std::string(group->get_string().value_unsafe());
  auto jobs = json_view::find(doc, "jobs");
  if (!jobs || jobs->type() != element_type::ARRAY) return w;
  w.jobs_is_array = true;
  const auto array = json_view::array_of(*jobs);
  w.job_count = array.size();
  read_jobs(w, array, max_jobs,
            [](element e) { return job_spec_reader::read(ElementValue(e)); });
  return w;
}

WireSubmit submit_from_document(const nlohmann::json& body,
                                std::size_t max_jobs) {
  WireSubmit w;
  if (!body.is_object()) return w;
  if (auto req = body.find("req"); req != body.end()) w.req = *req;
  if (auto group = body.find("group");
      group != body.end() && group->is_string())
    w.group = group->get<std::string>();
  auto jobs = body.find("jobs");
  if (jobs == body.end() || !jobs->is_array()) return w;
  w.jobs_is_array = true;
  w.job_count = jobs->size();
  read_jobs(w, *jobs, max_jobs,
            [](const nlohmann::json& j) { return parse_job_spec(j); });
  return w;
}

}  // namespace pacer::protocol
