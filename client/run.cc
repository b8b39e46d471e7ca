#include "client/run.h"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>

#include "client/format.h"
#include "client/sha256.h"
#include "common/job.h"
#include "common/units.h"

namespace pacer::client {
namespace {

using protocol::Command;
using json = nlohmann::json;

// PROGRESS and STATUS carry at most this many ids per request.
constexpr std::size_t kIdsPerRequest = 10'000;
// A poll that times out this many times in a row ends the run (resumable).
constexpr int kPollTries = 3;
// At most this many dead job ids are spelled out in the replay command.
constexpr std::size_t kReplayIdsShown = 20;

std::string clear_line() { return "\r\033[K"; }

// SIGINT sets a flag the loops check, so an interrupted run stops between
// requests with every fetched result written. Installed without SA_RESTART
// so a wait on the broker's socket wakes up; restored on destruction.
volatile std::sig_atomic_t g_interrupted = 0;

extern "C" void on_sigint(int) { g_interrupted = 1; }

class SigintGuard {
 public:
  SigintGuard() {
    g_interrupted = 0;
    struct sigaction sa {};
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    installed_ = ::sigaction(SIGINT, &sa, &old_) == 0;
  }
  ~SigintGuard() {
    if (installed_) ::sigaction(SIGINT, &old_, nullptr);
  }
  SigintGuard(const SigintGuard&) = delete;
  SigintGuard& operator=(const SigintGuard&) = delete;
  bool interrupted() const { return g_interrupted != 0; }

 private:
  struct sigaction old_ {};
  bool installed_ = false;
};

Result<std::string> read_all(const std::string& path) {
  std::stringstream ss;
  if (path == "-") {
    ss << std::cin.rdbuf();
    return ss.str();
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error{"cannot open " + path + ": " + std::strerror(errno)};
  ss << in.rdbuf();
  return ss.str();
}

// The existing output, or "" when there is none yet.
Result<std::string> read_output(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return std::string();
  return read_all(path);
}

std::string rate_text(double per_s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f/s", per_s);
  return buf;
}

// "2.3s" under a minute (a pause is read as it counts down), else "1m30s".
std::string wait_text(Millis ms) {
  if (ms < 60'000) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1fs", static_cast<double>(ms) / 1000);
    return buf;
  }
  return format_duration(ms / 1000 * 1000);
}

std::string join(const std::vector<std::string>& parts, const char* sep) {
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : sep) + p;
  return out;
}

}  // namespace

std::string run_group(std::string_view content) {
  return "run:" + sha256_hex(content).substr(0, 16);
}

LineToJob run_line_to_job(const RunInput& input) {
  if (input.api.empty())
    return [](json line) -> Result<json> {
      if (line.is_object()) line.erase("id");
      return line;
    };
  return [input](json line) -> Result<json> {
    json job = {{"api", input.api},
                {"path", input.path.empty() ? "/" : input.path},
                {"method", input.method.empty() ? "POST" : input.method}};
    if (!line.is_null()) job["body"] = std::move(line);
    return job;
  };
}

Result<OutputState> parse_output(std::string_view text,
                                 const std::string& name) {
  OutputState st;
  std::size_t pos = 0;
  int number = 0;
  while (pos < text.size()) {
    auto nl = text.find('\n', pos);
    if (nl == std::string_view::npos) {
      st.partial = true;  // written up to an interruption: fetched again
      break;
    }
    ++number;
    auto raw = trim(text.substr(pos, nl - pos));
    pos = nl + 1;
    st.keep_bytes = pos;
    if (raw.empty()) continue;
    auto j = json::parse(raw, nullptr, false);
    auto line = int_field(j, "line");
    if (!line || *line <= 0 || *line > 1'000'000'000)
      return Error{name + ":" + std::to_string(number) +
                   ": not a result line of pacer run (expected a JSON object "
                   "with a positive \"line\"); give -o a new file"};
    const int n = static_cast<int>(*line);
    auto outcome = j.find("outcome");
    st.outcomes[n] = outcome != j.end() && outcome->is_string()
                         ? outcome->get<std::string>()
                         : "";
    if (auto id = int_field(j, "job")) st.jobs[n] = *id;
  }
  return st;
}

std::string result_line(int line, const std::string& ref_id, std::int64_t id,
                        const json& job) {
  using ojson = nlohmann::ordered_json;
  ojson out;
  out["line"] = line;
  if (!ref_id.empty()) out["id"] = ojson::parse(ref_id, nullptr, false);
  out["job"] = id;
  const std::string state = field(job, "state");
  out["outcome"] = state;
  auto status = int_field(job, "status");
  out["status"] = status && *status > 0 ? ojson(*status) : ojson();

  ojson body;
  bool has_body = false;
  if (auto b = job.is_object() ? job.find("body") : job.end();
      b != job.end() && b->is_string() &&
      !b->get_ref<const std::string&>().empty()) {
    const auto& text = b->get_ref<const std::string&>();
    body = ojson::parse(text, nullptr, false);
    if (body.is_discarded()) body = text;
    has_body = true;
  }
  if (state == "succeeded") {
    out["body"] = std::move(body);
  } else {
    std::string error = field(job, "error");
    out["error"] = error == "-" || error.empty() ? state : error;
    // The API's own explanation of a failure is worth keeping too.
    if (has_body) out["body"] = std::move(body);
  }
  if (job.is_object() && job.value("body_truncated", false))
    out["body_truncated"] = true;
  out["attempts"] = int_field(job, "attempts").value_or(0);
  return out.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::int64_t rate_limited_attempts(const json& result_reply) {
  std::int64_t n = 0;
  if (!result_reply.is_object()) return 0;
  auto it = result_reply.find("attempts");
  if (it == result_reply.end() || !it->is_array()) return 0;
  for (const auto& a : *it)
    if (field(a, "outcome") == "rate_limited") ++n;
  return n;
}

std::vector<LaneView> lane_views(const json& stats,
                                 const std::vector<std::string>& apis) {
  std::vector<LaneView> out;
  const json lanes =
      stats.is_object() && stats.contains("lanes") ? stats["lanes"] : json();
  for (const auto& api : apis) {
    for (const auto& l : lanes) {
      if (field(l, "api") != api) continue;
      LaneView v;
      v.api = api;
      if (auto r = l.find("rate_per_s"); r != l.end() && r->is_number())
        v.rate_per_s = r->get<double>();
      if (auto lim = l.find("limits"); lim != l.end() && lim->is_array()) {
        std::vector<std::string> parts;
        for (const auto& x : *lim) parts.push_back(to_text(x));
        v.limits = join(parts, ", ");
      }
      v.paused_until_ms = int_field(l, "paused_until_ms");
      if (auto st = l.find("states"); st != l.end())
        v.waiting_quota = int_field(*st, "waiting_quota").value_or(0);
      out.push_back(std::move(v));
      break;
    }
  }
  return out;
}

ProgressMeter::ProgressMeter(Clock& clock, std::int64_t done_at_start)
    : clock_(clock),
      start_ms_(clock.now_ms()),
      last_plain_ms_(start_ms_),
      done_at_start_(done_at_start) {}

bool ProgressMeter::plain_due(Millis every_ms) {
  Millis now = clock_.now_ms();
  if (now - last_plain_ms_ < every_ms) return false;
  last_plain_ms_ = now;
  return true;
}

std::string ProgressMeter::line(const RunCounts& c,
                                const std::vector<LaneView>& lanes) {
  const Millis now = clock_.now_ms();
  std::vector<std::string> parts;
  parts.push_back(std::to_string(c.done) + "/" + std::to_string(c.total) +
                  " lines: " + std::to_string(c.succeeded) + " succeeded, " +
                  std::to_string(c.failed) + " failed");
  std::int64_t waiting = 0;
  for (const auto& l : lanes) {
    std::string text = l.api + " " + rate_text(l.rate_per_s) +
                       (l.limits.empty() ? " (no limit)" : " of " + l.limits);
    if (l.paused_until_ms && *l.paused_until_ms > now)
      text += ", paused: resets in " + wait_text(*l.paused_until_ms - now);
    parts.push_back(text);
    waiting += l.waiting_quota;
  }
  std::string limited = "429s: " + std::to_string(c.rate_limited);
  if (waiting > 0)
    limited += ", " + std::to_string(waiting) + " waiting for quota";
  parts.push_back(limited);
  // The pace of this invocation only: lines found in the output at start
  // took no time now.
  const std::int64_t fresh = c.done - done_at_start_;
  const Millis elapsed = now - start_ms_;
  std::string eta = "ETA -";
  if (c.done >= c.total) {
    eta = "ETA 0s";
  } else if (fresh > 0 && elapsed >= 1000) {
    double per_ms = static_cast<double>(fresh) / static_cast<double>(elapsed);
    auto left =
        static_cast<Millis>(static_cast<double>(c.total - c.done) / per_ms);
    eta = "ETA " + format_duration((left + 999) / 1000 * 1000);
  }
  parts.push_back(eta);
  return join(parts, " | ");
}

// ---- the command ------------------------------------------------------------

namespace {

// One run's state while it polls: which jobs are outstanding and for which
// input lines, what has been written, and the counts for the progress line.
class Runner {
 public:
  Runner(Session& s, const RunOptions& o, JobsFile file, std::string group,
         OutputState done, std::ofstream out)
      : s_(s),
        o_(o),
        file_(std::move(file)),
        group_(std::move(group)),
        done_(std::move(done)),
        out_(std::move(out)) {
    counts_.total = static_cast<std::int64_t>(file_.jobs.size());
    for (const auto& [line, outcome] : done_.outcomes) count(outcome);
    std::set<std::string> apis;
    for (const auto& j : file_.jobs)
      if (apis.insert(j.api).second) apis_.push_back(j.api);
  }

  int run();

 private:
  void count(const std::string& outcome);
  int submit(BrokerClient& broker);
  int poll(BrokerClient& broker);
  Result<std::vector<JobId>> finished(BrokerClient& broker);
  Result<Ok> fetch(BrokerClient& broker, JobId id);
  void show_progress(BrokerClient& broker, bool final);
  Reply call(BrokerClient& broker, Command c, const json& body);
  int stopped(int code, const std::string& why);
  // stopped() after a failed request: interrupted when SIGINT came.
  int failed(const std::string& why);
  int finish();

  Session& s_;
  const RunOptions& o_;
  JobsFile file_;
  std::string group_;
  OutputState done_;
  std::ofstream out_;
  std::vector<std::string> apis_;
  RunCounts counts_;
  std::int64_t dead_ = 0, canceled_ = 0;
  std::map<JobId, std::vector<std::size_t>> outstanding_;  // -> file_.jobs
  SigintGuard sigint_;
  SystemClock clock_;
  std::optional<ProgressMeter> meter_;
  std::vector<LaneView> lanes_;
  bool drawn_ = false;
};

void Runner::count(const std::string& outcome) {
  ++counts_.done;
  if (outcome == "succeeded") {
    ++counts_.succeeded;
    return;
  }
  ++counts_.failed;
  if (outcome == "dead") ++dead_;
  if (outcome == "canceled") ++canceled_;
}

// A polling request, sent again after a timeout: the run survives a broker
// restart that takes less than a few timeouts.
Reply Runner::call(BrokerClient& broker, Command c, const json& body) {
  Reply r;
  for (int attempt = 1; attempt <= kPollTries && !sigint_.interrupted();
       ++attempt) {
    r = broker.call(c, body);
    if (r.status != Reply::Status::kTimeout) break;
  }
  return r;
}

int Runner::failed(const std::string& why) {
  // A SIGINT between two requests makes call() give up without asking: the
  // run was interrupted, and nothing failed.
  if (sigint_.interrupted()) return stopped(kExitInterrupted, "interrupted");
  return stopped(kExitError, why);
}

int Runner::stopped(int code, const std::string& why) {
  if (drawn_) s_.io().err << clear_line() << std::flush;
  s_.fail(code, why);
  s_.io().err << "pacer: " << counts_.done << " of " << counts_.total
              << " lines have their result in " << o_.output
              << "; run the same command again to resume (submitted lines are "
                 "not submitted twice)\n";
  return code;
}

int Runner::run() {
  meter_.emplace(clock_, counts_.done);
  if (done_.outcomes.size() < file_.jobs.size()) {
    auto broker = s_.broker();
    if (!broker) return s_.fail(kExitError, broker.error());
    if (int code = submit(**broker); code != kExitOk) return code;
    if (int code = poll(**broker); code != kExitOk) return code;
  }
  return finish();
}

int Runner::submit(BrokerClient& broker) {
  JobsFile pending;
  pending.name = file_.name;
  std::vector<std::size_t> index;  // pending.jobs[i] is file_.jobs[index[i]]
  for (std::size_t i = 0; i < file_.jobs.size(); ++i)
    if (!done_.outcomes.count(file_.jobs[i].line)) {
      pending.jobs.push_back(file_.jobs[i]);
      index.push_back(i);
    }
  auto chunks = plan_chunks(pending.jobs);
  const bool live = s_.io().err_is_tty && chunks.size() > 1;
  std::size_t sent = 0;
  for (std::size_t c = 0; c < chunks.size(); ++c) {
    if (sigint_.interrupted()) return stopped(kExitInterrupted, "interrupted");
    const auto chunk = chunks[c];
    Reply r = submit_with_retry(s_, broker, chunk_body(pending, chunk, group_),
                                kSubmitTries,
                                "chunk " + std::to_string(c + 1) + " of " +
                                    std::to_string(chunks.size()));
    const json ids = r.ok() && r.body.contains("ids") ? r.body["ids"] : json();
    if (!r.ok() || !ids.is_array() || ids.size() != chunk.size()) {
      std::string msg = r.ok() ? "the broker's SUBMIT reply has no ids for "
                                 "every job"
                               : r.error;
      auto at = int_field(r.body, "index");
      if (!r.ok() && at && *at >= 0 &&
          static_cast<std::size_t>(*at) < chunk.size())
        msg = file_.name + ":" +
              std::to_string(
                  pending.jobs[chunk.begin + static_cast<std::size_t>(*at)]
                      .line) +
              ": the broker refused the job: " + r.error;
      return stopped(r.ok() ? kExitError : exit_code_for(r), msg);
    }
    for (std::size_t i = 0; i < chunk.size(); ++i)
      if (ids[i].is_number_integer())
        outstanding_[ids[i].get<JobId>()].push_back(index[chunk.begin + i]);
    sent += chunk.size();
    if (live)
      s_.io().err << clear_line() << "submitting: " << sent << "/"
                  << pending.jobs.size() << " lines" << std::flush;
    drawn_ = live;
  }
  return kExitOk;
}

// The outstanding jobs that are final now. PROGRESS first, which only
// counts; STATUS (a JobInfo per job) only when some have finished.
Result<std::vector<JobId>> Runner::finished(BrokerClient& broker) {
  std::vector<JobId> ids;
  for (const auto& [id, lines] : outstanding_) ids.push_back(id);
  std::vector<JobId> done;
  for (std::size_t i = 0; i < ids.size(); i += kIdsPerRequest) {
    std::vector<JobId> part(ids.begin() + static_cast<std::ptrdiff_t>(i),
                            ids.begin() + static_cast<std::ptrdiff_t>(std::min(
                                              ids.size(), i + kIdsPerRequest)));
    Reply p = call(broker, Command::kProgress, {{"ids", part}});
    if (!p.ok()) return Error{p.error};
    if (int_field(p.body, "pending").value_or(1) ==
        static_cast<std::int64_t>(part.size()))
      continue;
    Reply st = call(broker, Command::kStatus, {{"ids", part}});
    if (!st.ok()) return Error{st.error};
    std::set<JobId> known;
    if (st.body.contains("jobs") && st.body["jobs"].is_array())
      for (const auto& j : st.body["jobs"]) {
        auto id = int_field(j, "id");
        if (!id) continue;
        known.insert(*id);
        auto state = parse_job_state(field(j, "state"));
        if (state && is_final(*state)) done.push_back(*id);
      }
    // A job the broker no longer knows (a replaced database) cannot finish.
    for (auto id : part)
      if (!known.count(id))
        return Error{"the broker does not know job " + std::to_string(id) +
                     " any more"};
  }
  return done;
}

// RESULT of one finished job, written as a line for each input line it
// answers, flushed at once so an interruption keeps it.
Result<Ok> Runner::fetch(BrokerClient& broker, JobId id) {
  Reply r = call(broker, Command::kResult, {{"id", id}});
  if (!r.ok()) return Error{r.error};
  const json job = r.body.contains("job") ? r.body["job"] : json();
  const std::string outcome = field(job, "state");
  counts_.rate_limited += rate_limited_attempts(r.body);
  for (std::size_t i : outstanding_[id]) {
    const auto& line = file_.jobs[i];
    out_ << result_line(line.line, line.ref_id, id, job) << '\n';
    done_.outcomes[line.line] = outcome;
    done_.jobs[line.line] = id;
    count(outcome);
  }
  out_.flush();
  if (!out_)
    return Error{"cannot write " + o_.output + ": " + std::strerror(errno)};
  outstanding_.erase(id);
  return Ok{};
}

void Runner::show_progress(BrokerClient& broker, bool final) {
  const bool live = s_.io().err_is_tty;
  if (!live && !meter_->plain_due(o_.plain_every_ms) && !final) return;
  if (!live && final) return;
  // STATS counts every job of the broker: asked only when it is shown.
  Reply st = broker.call(Command::kStats, json::object());
  if (st.ok()) lanes_ = lane_views(st.body, apis_);
  std::string text = meter_->line(counts_, lanes_);
  if (live) {
    s_.io().err << clear_line() << text << std::flush;
    drawn_ = true;
  } else {
    s_.io().err << "run: " << text << "\n" << std::flush;
  }
}

int Runner::poll(BrokerClient& broker) {
  while (!outstanding_.empty()) {
    if (sigint_.interrupted()) return stopped(kExitInterrupted, "interrupted");
    auto done = finished(broker);
    if (!done) return failed(done.error());
    for (JobId id : *done) {
      if (sigint_.interrupted()) break;
      if (auto ok = fetch(broker, id); !ok) return failed(ok.error());
    }
    if (outstanding_.empty()) break;
    show_progress(broker, false);
    // Asking about many jobs costs the broker in proportion: big runs ask
    // less often (100,000 outstanding: every 2 s).
    const auto n = static_cast<Millis>(outstanding_.size());
    broker.idle(std::max<Millis>(o_.poll_ms, std::min<Millis>(n / 50, 2000)));
  }
  if (drawn_) s_.io().err << clear_line() << std::flush;
  drawn_ = false;
  return kExitOk;
}

int Runner::finish() {
  if (s_.json()) {
    s_.io().out << pretty({{"total", counts_.total},
                           {"succeeded", counts_.succeeded},
                           {"dead", dead_},
                           {"canceled", canceled_},
                           {"group", group_},
                           {"output", o_.output}})
                << "\n";
  } else {
    s_.io().out << counts_.total << " lines: " << counts_.succeeded
                << " succeeded, " << dead_ << " dead, " << canceled_
                << " canceled; results in " << o_.output << "\n";
  }
  if (dead_ > 0) {
    std::vector<JobId> ids;
    std::set<std::string> apis;
    for (const auto& j : file_.jobs) {
      auto it = done_.outcomes.find(j.line);
      if (it == done_.outcomes.end() || it->second != "dead") continue;
      apis.insert(j.api);
      if (auto id = done_.jobs.find(j.line); id != done_.jobs.end())
        ids.push_back(id->second);
    }
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    auto& err = s_.io().err;
    err << "pacer: " << plural(dead_, "line") << " went dead; their lines in "
        << o_.output << " carry the error\n";
    err << "pacer: list them:   pacer dead list"
        << (apis.size() == 1 ? " --api " + *apis.begin() : "") << "\n";
    if (ids.size() <= kReplayIdsShown) {
      std::string list;
      for (auto id : ids) list += " " + std::to_string(id);
      err << "pacer: replay them: pacer dead replay" << list << "\n";
    } else {
      err << "pacer: replay them: jq -r 'select(.outcome == \"dead\") | .job' "
          << o_.output << " | xargs pacer dead replay\n";
    }
    err << "pacer: then drop their lines (grep -v '\"outcome\":\"dead\"') from "
        << o_.output << " and run again to fetch the new results\n";
  }
  return counts_.failed > 0 ? kExitNo : kExitOk;
}

// --api, --path and --method checked once, not on every line.
Result<Ok> check_input_flags(const RunInput& in) {
  if (in.api.empty()) {
    if (!in.path.empty() || !in.method.empty())
      return Error{
          "--path and --method need --api (without it, each line is "
          "a whole job)"};
    return Ok{};
  }
  auto job = run_line_to_job(in)(json{{"probe", true}});
  auto spec = parse_job_spec(*job);
  if (!spec) return Error{"invalid --api/--path/--method: " + spec.error()};
  return Ok{};
}

bool same_file(const std::string& a, const std::string& b) {
  std::error_code ec;
  return std::filesystem::equivalent(a, b, ec) && !ec;
}

}  // namespace

int run_file(Session& s, const RunOptions& o) {
  if (o.output.empty()) return s.fail(kExitError, "run needs -o FILE");
  if (o.poll_ms < 250)
    return s.fail(kExitError, "the poll interval is at least 250ms");
  if (auto ok = check_input_flags(o.input); !ok)
    return s.fail(kExitError, ok.error());
  if (o.file != "-" && same_file(o.file, o.output))
    return s.fail(kExitError, "-o must not be the input file");

  auto content = read_all(o.file);
  if (!content) return s.fail(kExitError, content.error());
  const std::string name = o.file == "-" ? "<stdin>" : o.file;
  std::istringstream in(*content);
  JobsFile file = read_jobs(in, name, run_line_to_job(o.input));
  if (!file.errors.empty())
    return report_line_errors(
        s, file.errors,
        name + ": " +
            plural(static_cast<std::int64_t>(file.errors.count), "bad line") +
            "; nothing was submitted");
  if (file.jobs.empty())
    return s.fail(kExitNo, name + " holds no jobs; nothing was submitted");
  const std::string group = run_group(*content);
  content = std::string();  // the jobs' text is all that is needed now

  auto existing = read_output(o.output);
  if (!existing) return s.fail(kExitError, existing.error());
  auto done = parse_output(*existing, o.output);
  if (!done) return s.fail(kExitError, done.error());
  std::set<int> lines;
  for (const auto& j : file.jobs) lines.insert(j.line);
  for (const auto& [line, outcome] : done->outcomes)
    if (!lines.count(line))
      return s.fail(kExitError,
                    o.output + " has a result for line " +
                        std::to_string(line) + ", which is not a job line of " +
                        name +
                        " (the results of another file?); give -o a "
                        "new file");
  if (done->partial || done->keep_bytes < existing->size()) {
    // A line cut short by an interruption: its job is fetched again.
    std::error_code ec;
    std::filesystem::resize_file(o.output, done->keep_bytes, ec);
    if (ec)
      return s.fail(kExitError,
                    "cannot truncate " + o.output + ": " + ec.message());
  }
  existing = std::string();

  std::ofstream out(o.output, std::ios::binary | std::ios::app);
  if (!out)
    return s.fail(kExitError,
                  "cannot open " + o.output + ": " + std::strerror(errno));

  if (done->outcomes.size() < file.jobs.size()) {
    // Unknown APIs are refused before anything is submitted.
    auto broker = s.broker();
    if (!broker) return s.fail(kExitError, broker.error());
    Reply apis = (*broker)->call(Command::kApis, json::object());
    if (!apis.ok()) return s.fail(exit_code_for(apis), apis.error);
    std::set<std::string> known;
    if (apis.body.contains("apis") && apis.body["apis"].is_array())
      for (const auto& a : apis.body["apis"])
        if (auto n = field(a, "name"); n != "-") known.insert(n);
    if (!o.input.api.empty() && !known.count(o.input.api))
      return s.fail(kExitNo,
                    "unknown api '" + o.input.api + "'; nothing was submitted");
    auto unknown = unknown_apis(file, known);
    if (!unknown.empty())
      return report_line_errors(
          s, unknown,
          name + ": " +
              plural(static_cast<std::int64_t>(unknown.count), "line") +
              " name an unknown api; nothing was submitted");
  }
  Runner runner(s, o, std::move(file), group, std::move(done).value(),
                std::move(out));
  return runner.run();
}

}  // namespace pacer::client
