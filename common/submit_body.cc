#include "common/submit_body.h"

#include <cstdint>
#include <utility>

#include "common/job_spec_reader.h"
#include "common/json_reader.h"
#include "common/json_view.h"

namespace pacer::protocol {
namespace {

using json_view::element;
using json_view::element_type;

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
  read_jobs(w, array, max_jobs, [](element e) {
    return job_spec_reader::read(json_reader::ElementValue(e));
  });
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
