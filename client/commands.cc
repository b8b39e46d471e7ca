#include "client/commands.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <future>
#include <iostream>
#include <set>
#include <sstream>

#include "client/format.h"
#include "client/jobs_file.h"
#include "client/table.h"
#include "common/units.h"

namespace pacer::client {
namespace {

using protocol::Command;
using SteadyClock = std::chrono::steady_clock;

bool all_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](unsigned char c) {
    return std::isdigit(c);
  });
}

// A duration flag of a job: digits are milliseconds (as in a JSONL line),
// anything else a duration string that parse_job_spec checks.
nlohmann::json duration_value(const std::string& text) {
  if (all_digits(text) && text.size() < 16) return std::stoll(text);
  return text;
}

std::string clear_line() { return "\r\033[K"; }

std::string ids_text(const std::vector<JobId>& ids) {
  std::string out;
  for (auto id : ids) out += (out.empty() ? "" : " ") + std::to_string(id);
  return out;
}

std::vector<JobId> unique_ids(const std::vector<JobId>& ids) {
  std::vector<JobId> out;
  std::set<JobId> seen;
  for (auto id : ids)
    if (seen.insert(id).second) out.push_back(id);
  return out;
}

std::vector<JobId> id_list(const nlohmann::json& obj, const char* key) {
  std::vector<JobId> out;
  if (!obj.is_object()) return out;
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_array()) return out;
  for (const auto& v : *it)
    if (v.is_number_integer()) out.push_back(v.get<JobId>());
  return out;
}

const nlohmann::json& array_field(const nlohmann::json& obj, const char* key) {
  static const nlohmann::json kEmpty = nlohmann::json::array();
  if (!obj.is_object()) return kEmpty;
  auto it = obj.find(key);
  return it != obj.end() && it->is_array() ? *it : kEmpty;
}

// "2/5": attempts used of the most allowed.
std::string attempts_cell(const nlohmann::json& job) {
  auto used = field(job, "attempts");
  auto max = int_field(job, "max_attempts");
  return max ? used + "/" + std::to_string(*max) : used;
}

std::string status_cell(const nlohmann::json& job) {
  auto st = int_field(job, "status");
  return st && *st > 0 ? std::to_string(*st) : "-";
}

void print_jobs_table(std::ostream& out, const nlohmann::json& jobs,
                      bool with_group) {
  std::vector<std::string> headers = {"ID", "API", "STATE", "ATTEMPTS",
                                      "STATUS"};
  if (with_group) headers.push_back("GROUP");
  // The batch of the latest dispatch, shown when any job went in one.
  const bool with_batch = std::any_of(jobs.begin(), jobs.end(), [](auto& j) {
    return j.is_object() && j.contains("batch") && j["batch"].is_object();
  });
  if (with_batch) headers.push_back("BATCH");
  headers.push_back("CREATED");
  headers.push_back("FINISHED");
  Table t(headers);
  t.align_right(0).align_right(3).align_right(4);
  for (const auto& j : jobs) {
    std::vector<std::string> row = {field(j, "id"), field(j, "api"),
                                    field(j, "state"), attempts_cell(j),
                                    status_cell(j)};
    if (with_group) row.push_back(field(j, "group"));
    if (with_batch) {
      const auto b =
          j.is_object() && j.contains("batch") ? j["batch"] : nlohmann::json();
      row.push_back(b.is_object()
                        ? field(b, "id") + " (" + field(b, "size") + " jobs)"
                        : "-");
    }
    row.push_back(time_field(j, "created_ms"));
    row.push_back(time_field(j, "finished_ms"));
    t.add_row(std::move(row));
  }
  out << t.render();
}

Result<nlohmann::json> read_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error{"cannot read " + path + ": " + std::strerror(errno)};
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return nlohmann::json::parse(ss.str());
  } catch (const nlohmann::json::exception& e) {
    return Error{path + ": " + json_error_text(e.what())};
  }
}

}  // namespace

Result<BrokerClient*> Session::broker() {
  if (!client_) {
    auto c = BrokerClient::connect(endpoint_, timeout_ms_, curve_);
    if (!c) return Error{c.error()};
    client_.emplace(std::move(c).value());
  }
  return &*client_;
}

int Session::fail(int code, const std::string& message) {
  io_.err << "pacer: " << message << "\n";
  return code;
}

Reply submit_with_retry(Session& s, BrokerClient& broker,
                        const std::string& body, int tries,
                        const std::string& what) {
  Reply r;
  for (int attempt = 1; attempt <= tries; ++attempt) {
    r = broker.call_text(Command::kSubmit, body);
    if (r.status != Reply::Status::kTimeout || attempt == tries) break;
    s.io().err << (s.io().err_is_tty ? clear_line() : "")
               << "pacer: " << r.error << "; sending " << what << " again (try "
               << attempt + 1 << " of " << tries << ")\n";
  }
  return r;
}

int report_line_errors(Session& s, const LineErrors& errors,
                       const std::string& what) {
  for (const auto& e : errors.shown) s.io().err << "pacer: " << e << "\n";
  if (errors.count > errors.shown.size())
    s.io().err << "pacer: ... and " << (errors.count - errors.shown.size())
               << " more\n";
  return s.fail(kExitNo, what);
}

int exit_code_for(const Reply& reply) {
  if (reply.ok()) return kExitOk;
  if (reply.status != Reply::Status::kRefused) return kExitError;
  auto code = reply.code();
  if (code == "malformed" || code == "internal" || code == "version")
    return kExitError;
  return kExitNo;
}

// ---- submit ---------------------------------------------------------------

Result<nlohmann::json> build_job(const SubmitOptions& o) {
  nlohmann::json j = {{"api", o.api}};
  if (!o.method.empty()) j["method"] = o.method;
  if (!o.path.empty()) j["path"] = o.path;
  if (!o.headers.empty()) {
    auto headers = nlohmann::json::object();
    for (const auto& h : o.headers) {
      auto colon = h.find(':');
      std::string name = colon == std::string::npos
                             ? ""
                             : std::string(trim(h.substr(0, colon)));
      if (name.empty())
        return Error{"--header '" + h + "' must look like NAME:VALUE"};
      headers[name] = std::string(trim(h.substr(colon + 1)));
    }
    j["headers"] = std::move(headers);
  }
  if (o.body) {
    const std::string& text = *o.body;
    if (!text.empty() && text[0] == '@') {
      auto parsed = read_json_file(text.substr(1));
      if (!parsed) return Error{"--body is not valid JSON: " + parsed.error()};
      j["body"] = std::move(parsed).value();
    } else {
      try {
        j["body"] = nlohmann::json::parse(text);
      } catch (const nlohmann::json::exception& e) {
        return Error{"--body is not valid JSON: " + json_error_text(e.what())};
      }
    }
  }
  if (o.priority) j["priority"] = *o.priority;
  if (o.delay) j["delay"] = duration_value(*o.delay);
  if (o.cost) j["cost"] = *o.cost;
  if (!o.key.empty()) j["key"] = o.key;
  if (!o.batch_key.empty()) j["batch_key"] = o.batch_key;
  if (o.max_attempts) j["max_attempts"] = *o.max_attempts;
  if (o.timeout) j["timeout"] = duration_value(*o.timeout);
  auto spec = parse_job_spec(j);
  if (!spec) return Error{"invalid job: " + spec.error()};
  return j;
}

int submit_one(Session& s, const SubmitOptions& o) {
  auto job = build_job(o);
  if (!job) return s.fail(kExitError, job.error());
  auto broker = s.broker();
  if (!broker) return s.fail(kExitError, broker.error());
  nlohmann::json body = {{"jobs", nlohmann::json::array({*job})}};
  // Only a job with an idempotency key is safe to send twice.
  Reply r = submit_with_retry(
      s, **broker,
      body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
      o.key.empty() ? 1 : kSubmitTries, "the job");
  if (!r.ok()) return s.fail(exit_code_for(r), r.error);
  const auto& ids = array_field(r.body, "ids");
  if (ids.empty() || !ids[0].is_number_integer())
    return s.fail(kExitError, "the broker's SUBMIT reply has no job id");
  JobId id = ids[0].get<JobId>();
  bool duplicate = int_field(r.body, "duplicates").value_or(0) > 0;
  if (s.json()) {
    s.io().out << pretty({{"id", id}, {"duplicate", duplicate}}) << "\n";
  } else {
    s.io().out << id << "\n";
    if (duplicate)
      s.io().err << "pacer: key '" << o.key << "' already names job " << id
                 << "; nothing new was submitted\n";
  }
  return kExitOk;
}

int submit_file(Session& s, const SubmitOptions& o) {
  JobsFile file;
  if (o.file == "-") {
    file = read_jobs(std::cin, "<stdin>");
  } else {
    std::ifstream in(o.file, std::ios::binary);
    if (!in)
      return s.fail(kExitError,
                    "cannot open " + o.file + ": " + std::strerror(errno));
    file = read_jobs(in, o.file);
  }
  if (!file.errors.empty())
    return report_line_errors(
        s, file.errors,
        file.name + ": " +
            plural(static_cast<std::int64_t>(file.errors.count), "bad line") +
            "; nothing was submitted");
  if (file.jobs.empty())
    return s.fail(kExitNo, file.name + " holds no jobs; nothing was submitted");

  std::string group = o.group.empty() ? new_group_id() : o.group;
  if (auto ok = check_group(group); !ok) return s.fail(kExitError, ok.error());

  auto broker = s.broker();
  if (!broker) return s.fail(kExitError, broker.error());
  Reply apis_reply = (*broker)->call(Command::kApis, nlohmann::json::object());
  if (!apis_reply.ok())
    return s.fail(exit_code_for(apis_reply), apis_reply.error);
  std::set<std::string> known;
  for (const auto& a : array_field(apis_reply.body, "apis"))
    if (a.is_object() && a.contains("name") && a["name"].is_string())
      known.insert(a["name"].get<std::string>());
  auto unknown = unknown_apis(file, known);
  if (!unknown.empty())
    return report_line_errors(
        s, unknown,
        file.name + ": " +
            plural(static_cast<std::int64_t>(unknown.count), "line") +
            " name an unknown api; nothing was submitted");

  auto chunks = plan_chunks(file.jobs);
  const bool progress = s.io().err_is_tty && chunks.size() > 1;
  std::size_t submitted = 0;
  std::int64_t duplicates = 0;
  // The next chunk's body is built on a second thread while the broker
  // stores the current one (chunk_body reads `file` and `group` only).
  auto build = [&](std::size_t c) {
    return std::async(std::launch::async, [&file, &chunks, &group, c] {
      return chunk_body(file, chunks[c], group);
    });
  };
  std::future<std::string> next = build(0);
  for (std::size_t c = 0; c < chunks.size(); ++c) {
    const auto& chunk = chunks[c];
    std::string body = next.get();
    if (c + 1 < chunks.size()) next = build(c + 1);
    // Every job in a chunk has a key, so a resent chunk never duplicates.
    Reply r = submit_with_retry(s, **broker, body, kSubmitTries,
                                "chunk " + std::to_string(c + 1) + " of " +
                                    std::to_string(chunks.size()));
    if (!r.ok()) {
      if (progress) s.io().err << clear_line();
      std::string msg = r.error;
      auto index = int_field(r.body, "index");
      if (r.status == Reply::Status::kRefused && index && *index >= 0 &&
          static_cast<std::size_t>(*index) < chunk.size())
        msg = file.name + ":" +
              std::to_string(
                  file.jobs[chunk.begin + static_cast<std::size_t>(*index)]
                      .line) +
              ": the broker refused the job: " + r.error;
      int code = s.fail(exit_code_for(r), msg);
      if (submitted > 0)
        s.io().err << "pacer: "
                   << plural(static_cast<std::int64_t>(submitted), "job")
                   << " of " << file.name << " were already submitted in group "
                   << group << "; running the same file again with --group "
                   << group << " skips them (keys are GROUP:LINE, so keep the "
                   << "line numbers unchanged)\n";
      return code;
    }
    submitted += chunk.size();
    duplicates += int_field(r.body, "duplicates").value_or(0);
    if (progress)
      s.io().err << clear_line() << "submitting: " << submitted << "/"
                 << file.jobs.size() << " jobs" << std::flush;
  }
  if (progress) s.io().err << clear_line();
  if (s.json()) {
    s.io().out << pretty({{"group", group},
                          {"jobs", submitted},
                          {"duplicates", duplicates}})
               << "\n";
  } else {
    s.io().out << group << "\n";
    if (duplicates > 0)
      s.io().err << "pacer: " << plural(duplicates, "job")
                 << " had been submitted before (same key); not duplicated\n";
  }
  return kExitOk;
}

// ---- status / result / list / cancel -------------------------------------

int status(Session& s, const std::vector<JobId>& ids_in) {
  auto ids = unique_ids(ids_in);
  auto broker = s.broker();
  if (!broker) return s.fail(kExitError, broker.error());
  Reply r = (*broker)->call(Command::kStatus, {{"ids", ids}});
  if (!r.ok()) return s.fail(exit_code_for(r), r.error);
  const auto& jobs = array_field(r.body, "jobs");
  std::set<JobId> found;
  for (const auto& j : jobs)
    if (auto id = int_field(j, "id")) found.insert(*id);
  std::vector<JobId> missing;
  for (auto id : ids)
    if (!found.count(id)) missing.push_back(id);

  if (s.json())
    s.io().out << pretty(jobs) << "\n";
  else if (!jobs.empty())
    print_jobs_table(s.io().out, jobs, false);
  if (!missing.empty())
    return s.fail(kExitNo,
                  std::string(missing.size() == 1 ? "unknown job id: "
                                                  : "unknown job ids: ") +
                      ids_text(missing));
  return kExitOk;
}

int result(Session& s, JobId id) {
  auto broker = s.broker();
  if (!broker) return s.fail(kExitError, broker.error());
  Reply r = (*broker)->call(Command::kResult, {{"id", id}});
  if (!r.ok()) return s.fail(exit_code_for(r), r.error);
  nlohmann::json job = r.body.is_object() && r.body.contains("job")
                           ? r.body["job"]
                           : nlohmann::json();
  std::string state = field(job, "state");
  int code = state == "succeeded" ? kExitOk : kExitNo;
  if (s.json()) {
    s.io().out << pretty(without_envelope(r.body)) << "\n";
    return code;
  }
  auto parsed = parse_job_state(state);
  std::int64_t attempts = int_field(job, "attempts")
                              .value_or(static_cast<std::int64_t>(
                                  array_field(r.body, "attempts").size()));
  std::string header =
      "job " + std::to_string(id) + " (" + field(job, "api") + "): " + state;
  if (parsed && is_final(*parsed)) {
    header += ", HTTP " + status_cell(job) + ", outcome " +
              field(job, "outcome") + ", " + plural(attempts, "attempt");
    if (auto e = field(job, "error"); e != "-" && !e.empty())
      header += ", error: " + e;
    if (job.value("body_truncated", false)) header += " (body truncated)";
  } else {
    header += ", no result yet (" + plural(attempts, "attempt") + " so far)";
  }
  s.io().err << header << "\n";
  if (job.is_object()) {
    auto b = job.find("body");
    if (b != job.end() && b->is_string()) {
      const auto& text = b->get_ref<const std::string&>();
      s.io().out.write(text.data(), static_cast<std::streamsize>(text.size()));
    } else if (b != job.end() && !b->is_null()) {
      s.io().out << b->dump(-1, ' ', false,
                            nlohmann::json::error_handler_t::replace);
    }
    s.io().out.flush();
  }
  return code;
}

int list(Session& s, const ListOptions& o) {
  if (!o.state.empty() && !parse_job_state(o.state))
    return s.fail(kExitError,
                  "--state '" + o.state +
                      "' is not a job state (queued, running, succeeded, "
                      "retrying, waiting_quota, dead, canceled)");
  if (o.limit < 0) return s.fail(kExitError, "--limit must not be negative");
  auto broker = s.broker();
  if (!broker) return s.fail(kExitError, broker.error());

  constexpr std::int64_t kPage = 1000;
  auto jobs = nlohmann::json::array();
  std::optional<std::int64_t> after;
  bool more = false;
  while (true) {
    std::int64_t want =
        o.limit == 0
            ? kPage
            : std::min<std::int64_t>(
                  kPage, o.limit - static_cast<std::int64_t>(jobs.size()));
    nlohmann::json req = {{"limit", want}};
    if (!o.state.empty()) req["state"] = o.state;
    if (!o.api.empty()) req["api"] = o.api;
    if (!o.group.empty()) req["group"] = o.group;
    if (after) req["after"] = *after;
    Reply r = (*broker)->call(Command::kList, req);
    if (!r.ok()) return s.fail(exit_code_for(r), r.error);
    const auto& page = array_field(r.body, "jobs");
    for (const auto& j : page) {
      if (o.limit != 0 && static_cast<std::int64_t>(jobs.size()) >= o.limit) {
        more = true;
        break;
      }
      jobs.push_back(j);
    }
    auto next = int_field(r.body, "next");
    if (!next) break;
    if (o.limit != 0 && static_cast<std::int64_t>(jobs.size()) >= o.limit) {
      more = true;
      break;
    }
    // A page that does not advance would loop forever.
    if (page.empty() || (after && *next <= *after)) break;
    after = next;
  }
  if (s.json()) {
    s.io().out << pretty(jobs) << "\n";
  } else {
    print_jobs_table(s.io().out, jobs, true);
    if (more)
      s.io().err << "pacer: more jobs match; showing the first " << jobs.size()
                 << " (raise --limit, 0 for all)\n";
  }
  return kExitOk;
}

int cancel(Session& s, const std::vector<JobId>& ids_in) {
  auto ids = unique_ids(ids_in);
  auto broker = s.broker();
  if (!broker) return s.fail(kExitError, broker.error());
  Reply r = (*broker)->call(Command::kCancel, {{"ids", ids}});
  if (!r.ok()) return s.fail(exit_code_for(r), r.error);
  auto canceled = id_list(r.body, "canceled");
  auto refused = id_list(r.body, "not_cancelable");
  std::set<JobId> answered(canceled.begin(), canceled.end());
  answered.insert(refused.begin(), refused.end());
  std::vector<JobId> unknown;
  for (auto id : ids)
    if (!answered.count(id)) unknown.push_back(id);
  if (s.json()) {
    auto out = without_envelope(r.body);
    if (!unknown.empty()) out["unknown"] = unknown;
    s.io().out << pretty(out) << "\n";
  } else {
    if (!canceled.empty())
      s.io().out << "canceled: " << ids_text(canceled) << "\n";
    if (!refused.empty())
      s.io().out << "not cancelable: " << ids_text(refused) << "\n";
    if (!unknown.empty())
      s.io().out << "unknown: " << ids_text(unknown) << "\n";
  }
  return refused.empty() && unknown.empty() ? kExitOk : kExitNo;
}

// ---- wait -----------------------------------------------------------------

int wait(Session& s, const WaitOptions& o) {
  int modes =
      (!o.ids.empty() ? 1 : 0) + (!o.group.empty() ? 1 : 0) + (o.all ? 1 : 0);
  if (modes != 1)
    return s.fail(kExitError,
                  "wait needs job ids, --group G or --all (exactly one)");
  auto ids = unique_ids(o.ids);
  nlohmann::json body;
  if (!ids.empty())
    body = {{"ids", ids}};
  else if (!o.group.empty())
    body = {{"group", o.group}};
  else
    body = {{"all", true}};

  auto broker = s.broker();
  if (!broker) return s.fail(kExitError, broker.error());
  const bool live = s.io().err_is_tty;
  const auto start = SteadyClock::now();
  std::optional<SteadyClock::time_point> deadline;
  if (o.timeout_ms) deadline = start + std::chrono::milliseconds(*o.timeout_ms);

  std::int64_t total = 0, succeeded = 0, dead = 0, canceled = 0, pending = 0;
  bool timed_out = false;
  while (true) {
    Reply r = (*broker)->call(Command::kProgress, body);
    if (!r.ok()) {
      if (live) s.io().err << clear_line();
      return s.fail(exit_code_for(r), r.error);
    }
    auto p = int_field(r.body, "pending");
    if (!p) {
      if (live) s.io().err << clear_line();
      return s.fail(kExitError,
                    "the broker's PROGRESS reply has no 'pending' count");
    }
    pending = *p;
    total = int_field(r.body, "total").value_or(0);
    succeeded = int_field(r.body, "succeeded").value_or(0);
    dead = int_field(r.body, "dead").value_or(0);
    canceled = int_field(r.body, "canceled").value_or(0);
    if (pending <= 0) break;
    auto now = SteadyClock::now();
    if (deadline && now >= *deadline) {
      timed_out = true;
      break;
    }
    if (live)
      s.io().err << clear_line() << "waiting: " << (total - pending) << "/"
                 << total << " finished (" << succeeded << " succeeded, "
                 << dead << " dead, " << canceled << " canceled)" << std::flush;
    // The broker keeps a group's (and all jobs') counts as they change, but
    // looks up each listed id: long lists ask less often (up to 20,000 ids
    // every poll interval, 200,000 every 2 s).
    Millis pause = o.poll_ms;
    if (!ids.empty())
      pause = std::max<Millis>(
          pause, std::min<Millis>(static_cast<Millis>(ids.size()) / 100, 2000));
    if (deadline)
      pause = std::min<Millis>(
          pause, std::chrono::ceil<std::chrono::milliseconds>(*deadline - now)
                     .count());
    (*broker)->idle(std::max<Millis>(pause, 1));
  }
  if (live) s.io().err << clear_line() << std::flush;

  if (s.json()) {
    s.io().out << pretty({{"total", total},
                          {"succeeded", succeeded},
                          {"dead", dead},
                          {"canceled", canceled},
                          {"pending", pending},
                          {"timed_out", timed_out}})
               << "\n";
  } else {
    s.io().out << plural(total, "job") << ": " << succeeded << " succeeded, "
               << dead << " dead, " << canceled << " canceled";
    if (pending > 0) s.io().out << ", " << pending << " pending";
    s.io().out << "\n";
  }
  if (timed_out) {
    auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(
                      SteadyClock::now() - start)
                      .count();
    return s.fail(kExitWaitTimeout, "gave up waiting after " +
                                        describe_timeout(waited) + " (" +
                                        plural(pending, "job") + " pending)");
  }
  if (!ids.empty() && total < static_cast<std::int64_t>(ids.size()))
    return s.fail(
        kExitNo, std::to_string(static_cast<std::int64_t>(ids.size()) - total) +
                     " of the " + std::to_string(ids.size()) +
                     " job ids are unknown to the broker");
  if (!o.group.empty() && total == 0)
    return s.fail(kExitNo, "group '" + o.group + "' has no jobs");
  return dead > 0 || canceled > 0 ? kExitNo : kExitOk;
}

// ---- stats / apis ---------------------------------------------------------

namespace {

// What the servers' answers taught a lane, for `pacer stats`: learned
// limits, upstream counters, the pause, the circuit; and how its batches
// filled. Empty if nothing.
std::string quota_text(const nlohmann::json& l) {
  if (!l.is_object()) return "";
  std::ostringstream out;
  const std::string name = field(l, "api");
  bool any = false;
  auto line = [&](const std::string& text) {
    if (!any) out << name << ":\n";
    any = true;
    out << "  " << text << "\n";
  };
  if (auto it = l.find("learned"); it != l.end() && it->is_array())
    for (const auto& e : *it)
      line("learned limit " + field(e, "limit") + " (" + field(e, "source") +
           ")");
  if (auto it = l.find("learned_rate_per_s");
      it != l.end() && it->is_number()) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "pace %.2f/s (%s from accepts and refusals)",
                  it->get<double>(),
                  l.value("pace_learned", false) ? "learned" : "learning");
    line(buf);
  }
  if (auto it = l.find("windows"); it != l.end() && it->is_array()) {
    for (const auto& w : *it) {
      std::string text = "window of " + field(w, "key") + ": ";
      const std::string state = field(w, "state");
      if (state == "given_up") {
        text += "not learned (its windows do not start at a request)";
      } else {
        text += state + ", ";
        if (w.contains("at_most_ms") && w["at_most_ms"].is_number())
          text += "at most " +
                  format_duration(w["at_most_ms"].get<std::int64_t>()) + ", ";
        text += "more than " +
                format_duration(w.value("above_ms", std::int64_t{0}));
      }
      line(text);
    }
  }
  if (auto it = l.find("margin_scale");
      it != l.end() && it->is_number() && it->get<double>() > 1.0) {
    std::string margins;
    if (auto u = l.find("usage"); u != l.end() && u->is_array())
      for (const auto& e : *u)
        if (e.is_object() && e.contains("margin_ms"))
          margins += (margins.empty() ? "" : ", ") + field(e, "limit") + " " +
                     format_duration(e.value("margin_ms", std::int64_t{0}));
    char buf[64];
    std::snprintf(buf, sizeof buf, "margin widened x%.2f after refusals",
                  it->get<double>());
    line(std::string(buf) + (margins.empty() ? "" : ": " + margins));
  }
  if (auto it = l.find("upstream"); it != l.end() && it->is_array()) {
    for (const auto& u : *it) {
      std::string text = "upstream " + field(u, "key") + ": ";
      text += u.contains("remaining") && !u["remaining"].is_null()
                  ? field(u, "remaining")
                  : std::string("?");
      if (u.contains("limit") && !u["limit"].is_null())
        text += " of " + field(u, "limit");
      text += " remaining";
      if (auto r = u.find("reset_in_ms"); r != u.end() && r->is_number())
        text += ", resets in " + format_duration(r->get<std::int64_t>());
      if (auto sh = u.find("shared_use_per_s");
          sh != u.end() && sh->is_number()) {
        char buf[64];
        std::snprintf(buf, sizeof buf, ", others use ~%.1f/s",
                      sh->get<double>());
        text += buf;
      }
      if (auto e = u.find("explained"); e != u.end() && e->is_boolean())
        text += *e ? " (explained by the lane's limits)"
                   : " (not explained: the lane keeps to it)";
      line(text);
    }
  }
  if (auto it = l.find("paused_until_ms"); it != l.end() && it->is_number())
    line("paused until " + time_field(l, "paused_until_ms") + ": " +
         field(l, "pause_reason"));
  if (auto c = field(l, "circuit"); c != "-" && c != "closed")
    line("circuit " + c);
  if (auto p = l.find("probing"); p != l.end() && p->is_boolean() && *p)
    line("probing: one request out to read the server's count");
  if (auto b = l.find("batching"); b != l.end() && b->is_boolean() && *b) {
    auto number = [&](const char* key) {
      auto it = l.find(key);
      return it != l.end() && it->is_number() ? it->get<double>() : 0.0;
    };
    char buf[160];
    std::snprintf(buf, sizeof buf,
                  "batches: %.0f sent, mean size %.1f; %.1f jobs per request",
                  number("batches_total"), number("mean_batch_size"),
                  number("items_per_request"));
    line(buf);
  }
  return out.str();
}

}  // namespace

int stats(Session& s) {
  auto broker = s.broker();
  if (!broker) return s.fail(kExitError, broker.error());
  Reply r = (*broker)->call(Command::kStats, nlohmann::json::object());
  if (!r.ok()) return s.fail(exit_code_for(r), r.error);
  if (s.json()) {
    s.io().out << pretty(without_envelope(r.body)) << "\n";
    return kExitOk;
  }
  static const char* kStates[] = {"queued",        "running", "retrying",
                                  "waiting_quota", "dead",    "succeeded"};
  const auto& lanes = array_field(r.body, "lanes");
  bool any_paused = false;
  for (const auto& l : lanes)
    if (l.is_object() && l.contains("paused_until_ms") &&
        !l["paused_until_ms"].is_null())
      any_paused = true;

  std::vector<std::string> headers = {"LANE", "LIMITS", "CONCURRENCY",
                                      "IN_FLIGHT"};
  for (const char* st : kStates) {
    std::string h = st;
    for (char& c : h)
      c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    headers.push_back(h);
  }
  headers.push_back("RATE/S");
  if (any_paused) headers.push_back("PAUSED_UNTIL");
  Table t(headers);
  for (std::size_t i = 2; i < headers.size() - (any_paused ? 1 : 0); ++i)
    t.align_right(i);
  for (const auto& l : lanes) {
    std::string lane = field(l, "api");
    if (lane == "-") lane = field(l, "name");
    std::string conc = field(l, "concurrency");
    if (conc == "0") conc = "no cap";
    std::vector<std::string> row = {lane, field(l, "limits"), conc,
                                    field(l, "in_flight")};
    nlohmann::json states =
        l.is_object() && l.contains("states") ? l["states"] : nlohmann::json();
    for (const char* st : kStates) row.push_back(field(states, st));
    row.push_back(field(l, "rate_per_s"));
    if (any_paused) row.push_back(time_field(l, "paused_until_ms"));
    t.add_row(std::move(row));
  }
  s.io().out << t.render();
  for (const auto& l : lanes) {
    std::string text = quota_text(l);
    if (!text.empty()) s.io().out << "\n" << text;
  }

  if (r.body.is_object() && r.body.contains("states") &&
      r.body["states"].is_object()) {
    // Lifecycle order first, then anything newer the broker reports.
    const auto& totals = r.body["states"];
    static const char* kOrder[] = {"queued",        "running", "retrying",
                                   "waiting_quota", "dead",    "succeeded",
                                   "canceled"};
    std::string line;
    std::set<std::string> done;
    for (const char* st : kOrder) {
      if (!totals.contains(st)) continue;
      line += (line.empty() ? "" : ", ") + std::string(st) + " " +
              to_text(totals[st]);
      done.insert(st);
    }
    for (auto it = totals.begin(); it != totals.end(); ++it)
      if (!done.count(it.key()))
        line += (line.empty() ? "" : ", ") + it.key() + " " + to_text(*it);
    if (!line.empty()) s.io().out << "\nall lanes: " << line << "\n";
  }

  const auto& workers = array_field(r.body, "workers");
  s.io().out << "\n";
  if (workers.empty()) {
    s.io().out << "no workers connected\n";
  } else {
    Table w({"WORKER", "APIS", "CAPACITY", "OUTSTANDING"});
    w.align_right(2).align_right(3);
    for (const auto& wk : workers) {
      std::string served = field(wk, "apis");
      if (wk.is_object() && wk.contains("apis") && wk["apis"].is_array() &&
          wk["apis"].empty())
        served = "all";
      w.add_row({field(wk, "id"), served, field(wk, "capacity"),
                 field(wk, "outstanding")});
    }
    s.io().out << w.render();
  }
  return kExitOk;
}

int apis(Session& s) {
  auto broker = s.broker();
  if (!broker) return s.fail(kExitError, broker.error());
  Reply r = (*broker)->call(Command::kApis, nlohmann::json::object());
  if (!r.ok()) return s.fail(exit_code_for(r), r.error);
  const auto& list = array_field(r.body, "apis");
  if (s.json()) {
    s.io().out << pretty(list) << "\n";
    return kExitOk;
  }
  auto ms = [](const nlohmann::json& obj, const char* key) {
    auto it = obj.find(key);
    return it != obj.end() && it->is_number_integer()
               ? format_duration(it->get<std::int64_t>())
               : std::string("-");
  };
  Table t({"NAME", "PRESET", "BASE_URL", "LIMITS", "MARGIN", "CONCURRENCY",
           "DIALECT", "RETRY", "BATCH"});
  t.align_right(4);
  for (const auto& a : list) {
    std::string conc = field(a, "concurrency");
    if (conc == "0") conc = "no cap";
    // "5 x 500ms..1m0s": attempts, then the backoff's base and cap.
    std::string retry = field(a, "max_attempts") + " x " +
                        ms(a, "backoff_base_ms") + ".." +
                        ms(a, "backoff_cap_ms");
    std::string batch = "-";
    if (auto b = a.find("batch"); b != a.end() && b->is_object())
      batch = field(*b, "max_items") + " per " + field(*b, "method") + " " +
              field(*b, "path") + ", wait " + ms(*b, "max_wait_ms");
    // The margins in force ("20ms", several: "20ms, 1ms"), and the factor
    // refusals widened them by.
    std::string margin;
    if (auto m = a.find("effective_margins"); m != a.end() && m->is_array())
      for (const auto& e : *m)
        margin += (margin.empty() ? "" : ", ") + ms(e, "margin_ms");
    if (margin.empty()) margin = "-";
    if (auto sc = a.find("margin_scale");
        sc != a.end() && sc->is_number() && sc->get<double>() > 1.0) {
      char buf[32];
      std::snprintf(buf, sizeof buf, " (x%.2f)", sc->get<double>());
      margin += buf;
    }
    t.add_row({field(a, "name"), field(a, "preset"), field(a, "base_url"),
               field(a, "limits"), margin, conc, field(a, "dialect"), retry,
               batch});
  }
  s.io().out << t.render();
  return kExitOk;
}

// ---- dead letters ---------------------------------------------------------

namespace {

constexpr std::int64_t kDeadPage = 1000;
constexpr std::size_t kDeadErrorWidth = 60;
constexpr std::size_t kReplayIdsPerRequest = 10'000;
constexpr std::size_t kReplayIdsShown = 1000;

// Digits at text[pos, pos + n) as a number; false if any is not a digit.
bool fixed_digits(std::string_view text, std::size_t pos, std::size_t n,
                  int& out) {
  if (pos + n > text.size()) return false;
  out = 0;
  for (std::size_t i = pos; i < pos + n; ++i) {
    if (!std::isdigit(static_cast<unsigned char>(text[i]))) return false;
    out = out * 10 + (text[i] - '0');
  }
  return true;
}

// RFC 3339 date-time: YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM), with
// 't', 'z' or a space accepted as RFC 3339 allows.
std::optional<Millis> parse_rfc3339(std::string_view t) {
  int year, month, day, hour, minute, second;
  if (!fixed_digits(t, 0, 4, year) || t.size() < 20 || t[4] != '-' ||
      !fixed_digits(t, 5, 2, month) || t[7] != '-' ||
      !fixed_digits(t, 8, 2, day) ||
      (t[10] != 'T' && t[10] != 't' && t[10] != ' ') ||
      !fixed_digits(t, 11, 2, hour) || t[13] != ':' ||
      !fixed_digits(t, 14, 2, minute) || t[16] != ':' ||
      !fixed_digits(t, 17, 2, second))
    return std::nullopt;
  std::size_t pos = 19;
  Millis fraction_ms = 0;
  if (t[pos] == '.') {
    std::size_t start = ++pos;
    Millis scale = 100;
    while (pos < t.size() && std::isdigit(static_cast<unsigned char>(t[pos]))) {
      fraction_ms += (t[pos] - '0') * scale;
      scale /= 10;
      ++pos;
    }
    if (pos == start) return std::nullopt;
  }
  Millis offset_ms = 0;
  if (pos < t.size() && (t[pos] == 'Z' || t[pos] == 'z')) {
    ++pos;
  } else if (pos < t.size() && (t[pos] == '+' || t[pos] == '-')) {
    int oh, om;
    if (!fixed_digits(t, pos + 1, 2, oh) || pos + 3 >= t.size() ||
        t[pos + 3] != ':' || !fixed_digits(t, pos + 4, 2, om) || oh > 23 ||
        om > 59)
      return std::nullopt;
    offset_ms = (oh * 60 + om) * 60'000LL * (t[pos] == '-' ? -1 : 1);
    pos += 6;
  } else {
    return std::nullopt;  // a time without an offset is ambiguous
  }
  if (pos != t.size()) return std::nullopt;
  using namespace std::chrono;
  year_month_day date{std::chrono::year{year},
                      std::chrono::month{static_cast<unsigned>(month)},
                      std::chrono::day{static_cast<unsigned>(day)}};
  if (!date.ok() || hour > 23 || minute > 59 || second > 60)
    return std::nullopt;
  Millis days = sys_days(date).time_since_epoch().count();
  return ((days * 24 + hour) * 60 + minute) * 60'000LL + second * 1000LL +
         fraction_ms - offset_ms;
}

Millis wall_clock_ms() {
  SystemClock clock;
  return clock.now_ms();
}

// ID, API, CLASS, STATUS, ATTEMPTS (used/max), DEAD_SINCE, ERROR.
void print_dead_table(std::ostream& out, const nlohmann::json& jobs) {
  Table t({"ID", "API", "CLASS", "STATUS", "ATTEMPTS", "DEAD_SINCE", "ERROR"});
  t.align_right(0).align_right(3).align_right(4);
  for (const auto& j : jobs)
    t.add_row({field(j, "id"), field(j, "api"), field(j, "class"),
               status_cell(j), attempts_cell(j), time_field(j, "finished_ms"),
               shorten(field(j, "error"), kDeadErrorWidth)});
  out << t.render();
}

void append_ids(std::vector<JobId>& to, const nlohmann::json& from) {
  for (const auto& v : from)
    if (v.is_number_integer()) to.push_back(v.get<JobId>());
}

}  // namespace

Result<Millis> parse_since(const std::string& text_in, Millis now_ms) {
  const std::string_view text = trim(text_in);
  const std::string usage =
      "--since '" + text_in +
      "' is not a duration ago (2h), epoch milliseconds or an RFC 3339 time "
      "(2025-11-27T23:41:02Z)";
  if (text.empty()) return Error{usage};
  if (all_digits(std::string(text))) {
    if (text.size() > 15) return Error{usage};
    return static_cast<Millis>(std::stoll(std::string(text)));
  }
  if (text.size() >= 5 && text[4] == '-' &&
      std::isdigit(static_cast<unsigned char>(text[0]))) {
    if (auto t = parse_rfc3339(text)) return *t;
    return Error{"--since '" + text_in +
                 "' is not a valid RFC 3339 time (like 2025-11-27T23:41:02Z "
                 "or 2025-11-28T00:41:02+01:00)"};
  }
  auto d = parse_duration(text);
  if (!d) return Error{usage + ": " + d.error()};
  return now_ms - *d;
}

Result<nlohmann::json> dead_filter_body(const DeadFilterOptions& f,
                                        Millis now_ms) {
  nlohmann::json body = nlohmann::json::object();
  if (!f.api.empty()) body["api"] = f.api;
  if (!f.failure_class.empty()) {
    if (!parse_failure_class(f.failure_class))
      return Error{"--class '" + f.failure_class +
                   "' is not a failure class (rate_limited, transient, "
                   "permanent)"};
    body["class"] = f.failure_class;
  }
  if (!f.since.empty()) {
    auto t = parse_since(f.since, now_ms);
    if (!t) return Error{t.error()};
    body["since"] = *t;
  }
  return body;
}

int dead_list(Session& s, const DeadListOptions& o) {
  auto filter = dead_filter_body(o.filter, wall_clock_ms());
  if (!filter) return s.fail(kExitError, filter.error());
  if (o.limit < 0) return s.fail(kExitError, "--limit must not be negative");
  auto broker = s.broker();
  if (!broker) return s.fail(kExitError, broker.error());

  auto jobs = nlohmann::json::array();
  std::optional<std::int64_t> after;
  bool more = false;
  while (true) {
    const auto have = static_cast<std::int64_t>(jobs.size());
    nlohmann::json req = *filter;
    req["limit"] = o.limit == 0
                       ? kDeadPage
                       : std::min<std::int64_t>(kDeadPage, o.limit - have);
    // Every attempt of every job only when it is all printed.
    req["attempts"] = s.json();
    if (after) req["after"] = *after;
    Reply r = (*broker)->call(Command::kDeadList, req);
    if (!r.ok()) return s.fail(exit_code_for(r), r.error);
    const auto& page = array_field(r.body, "jobs");
    for (const auto& j : page) jobs.push_back(j);
    auto next = int_field(r.body, "next");
    if (!next) break;
    if (o.limit != 0 && static_cast<std::int64_t>(jobs.size()) >= o.limit) {
      more = true;
      break;
    }
    // A page that does not advance would loop forever.
    if (page.empty() || (after && *next <= *after)) break;
    after = next;
  }
  if (s.json()) {
    s.io().out << pretty(jobs) << "\n";
  } else {
    print_dead_table(s.io().out, jobs);
    if (more)
      s.io().err << "pacer: more dead jobs match; showing the first "
                 << jobs.size() << " (raise --limit, 0 for all)\n";
  }
  return kExitOk;
}

int dead_show(Session& s, JobId id) {
  auto broker = s.broker();
  if (!broker) return s.fail(kExitError, broker.error());
  Reply r =
      (*broker)->call(Command::kDeadList, {{"ids", {id}}, {"attempts", true}});
  if (!r.ok()) return s.fail(exit_code_for(r), r.error);
  const auto& jobs = array_field(r.body, "jobs");
  if (jobs.empty()) {
    // Say what the job is instead, when the broker knows it.
    Reply st = (*broker)->call(Command::kStatus, {{"ids", {id}}});
    const auto& known = array_field(st.body, "jobs");
    if (st.ok() && !known.empty())
      return s.fail(kExitNo, "job " + std::to_string(id) + " is " +
                                 field(known[0], "state") + ", not dead");
    return s.fail(kExitNo, "unknown job id: " + std::to_string(id));
  }
  const auto& job = jobs[0];
  if (s.json()) {
    s.io().out << pretty(job) << "\n";
    return kExitOk;
  }
  auto& out = s.io().out;
  out << "job " << id << " (" << field(job, "api") << "): dead since "
      << time_field(job, "finished_ms") << ", class " << field(job, "class")
      << "\n";
  out << "request:   " << field(job, "method") << " " << field(job, "path")
      << "\n";
  out << "group:     " << field(job, "group") << "\n";
  out << "created:   " << time_field(job, "created_ms") << "\n";
  out << "attempts:  " << field(job, "attempts") << " used of "
      << field(job, "max_attempts") << ", dispatch number "
      << field(job, "dispatches") << "\n";
  out << "last:      outcome " << field(job, "outcome") << ", HTTP "
      << status_cell(job) << ", error: " << field(job, "error") << "\n\n";
  Table t({"N", "WORKER", "STARTED", "FINISHED", "OUTCOME", "STATUS", "ERROR"});
  t.align_right(0).align_right(5);
  for (const auto& a : array_field(job, "attempt_rows"))
    t.add_row({field(a, "n"), field(a, "worker"), time_field(a, "started_ms"),
               time_field(a, "finished_ms"), field(a, "outcome"),
               status_cell(a), shorten(field(a, "error"), kDeadErrorWidth)});
  out << t.render();
  return kExitOk;
}

int dead_replay(Session& s, const DeadReplayOptions& o) {
  const bool by_id = !o.ids.empty();
  if (by_id && (o.all || o.filter.any()))
    return s.fail(kExitError,
                  "give job ids, or --all and/or filters, not both");
  if (!by_id && !o.all && !o.filter.any())
    return s.fail(kExitError,
                  "dead replay needs job ids, a filter (--api, --class, "
                  "--since) or --all (every dead job)");
  auto filter = dead_filter_body(o.filter, wall_clock_ms());
  if (!filter) return s.fail(kExitError, filter.error());
  auto broker = s.broker();
  if (!broker) return s.fail(kExitError, broker.error());

  std::int64_t total = 0;
  bool truncated = false;
  auto ids = nlohmann::json::array();
  std::vector<JobId> not_dead, unknown_api;
  const bool live = s.io().err_is_tty;
  int steps = 0;
  // One request per step: the broker moves at most 10,000 jobs in each, and
  // dispatches between them.
  auto step = [&](const nlohmann::json& body) {
    Reply r = (*broker)->call(Command::kDeadReplay, body);
    if (!r.ok()) return r;
    ++steps;
    auto n = int_field(r.body, o.dry_run ? "would_move" : "moved").value_or(0);
    total += n;
    for (const auto& id : array_field(r.body, "ids"))
      if (ids.size() < kReplayIdsShown) ids.push_back(id);
    if (static_cast<std::int64_t>(ids.size()) < total) truncated = true;
    append_ids(not_dead, array_field(r.body, "not_dead"));
    append_ids(unknown_api, array_field(r.body, "unknown_api"));
    if (live && steps > 1)
      s.io().err << clear_line() << (o.dry_run ? "counting: " : "replaying: ")
                 << total << " jobs" << std::flush;
    return r;
  };
  std::optional<Reply> failed;
  if (by_id) {
    auto unique = unique_ids(o.ids);
    for (std::size_t i = 0; i < unique.size(); i += kReplayIdsPerRequest) {
      auto end = std::min(unique.size(), i + kReplayIdsPerRequest);
      std::vector<JobId> chunk(
          unique.begin() + static_cast<std::ptrdiff_t>(i),
          unique.begin() + static_cast<std::ptrdiff_t>(end));
      Reply r = step({{"ids", chunk}, {"dry_run", o.dry_run}});
      if (!r.ok()) {
        failed = std::move(r);
        break;
      }
    }
  } else {
    std::optional<std::int64_t> after;
    while (true) {
      nlohmann::json body = *filter;
      body["all"] = true;
      body["dry_run"] = o.dry_run;
      if (after) body["after"] = *after;
      Reply r = step(body);
      if (!r.ok()) {
        failed = std::move(r);
        break;
      }
      // The cursor only moves forward: each job is replayed at most once.
      auto next = int_field(r.body, "next");
      if (!next || (after && *next <= *after)) break;
      after = next;
    }
  }
  if (live && steps > 1) s.io().err << clear_line() << std::flush;
  if (failed) {
    if (!o.dry_run && total > 0)
      s.io().err << "pacer: " << plural(total, "job")
                 << " had been moved back to queued before this error\n";
    return s.fail(exit_code_for(*failed), failed->error);
  }

  if (s.json()) {
    nlohmann::json out = {
        {"dry_run", o.dry_run}, {"moved", o.dry_run ? 0 : total},
        {"ids", ids},           {"ids_truncated", truncated},
        {"not_dead", not_dead}, {"unknown_api", unknown_api}};
    if (o.dry_run) out["would_move"] = total;
    s.io().out << pretty(out) << "\n";
  } else {
    s.io().out << (o.dry_run ? "would move " : "moved ") << plural(total, "job")
               << " back to queued\n";
    if (!not_dead.empty())
      s.io().out << "not dead: " << ids_text(not_dead) << "\n";
    if (!unknown_api.empty())
      s.io().out << "not moved, their API is not configured: "
                 << ids_text(unknown_api) << "\n";
  }
  return not_dead.empty() && unknown_api.empty() ? kExitOk : kExitNo;
}

}  // namespace pacer::client
