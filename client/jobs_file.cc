#include "client/jobs_file.h"

#include <algorithm>
#include <cctype>
#include <random>

#include "common/units.h"

namespace pacer::client {

void LineErrors::add(std::string message) {
  if (shown.size() < kMaxListedErrors) shown.push_back(std::move(message));
  ++count;
}

std::string json_error_text(const std::string& what) {
  std::string s = what;
  if (s.rfind("[json.exception.", 0) == 0) {
    auto close = s.find("] ");
    if (close != std::string::npos) s = s.substr(close + 2);
  }
  // Every line is parsed on its own, so "line 1" says nothing.
  if (auto pos = s.find("at line 1, column "); pos != std::string::npos)
    s.replace(pos, 18, "at column ");
  return s;
}

JobsFile read_jobs(std::istream& in, const std::string& name,
                   const LineToJob& to_job) {
  JobsFile f;
  f.name = name;
  std::string raw;
  int line = 0;
  while (std::getline(in, raw)) {
    ++line;
    if (line == 1 && raw.rfind("\xEF\xBB\xBF", 0) == 0) raw.erase(0, 3);  // BOM
    std::string_view text = trim(raw);
    if (text.empty() || text.front() == '#') continue;
    auto where = name + ":" + std::to_string(line) + ": ";
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      f.errors.add(where + "not valid JSON: " + json_error_text(e.what()));
      continue;
    }
    std::string ref_id;
    if (j.is_object())
      if (auto id = j.find("id"); id != j.end()) ref_id = id->dump();
    if (to_job) {
      auto job = to_job(std::move(j));
      if (!job) {
        f.errors.add(where + job.error());
        continue;
      }
      j = std::move(job).value();
    }
    auto spec = parse_job_spec(j);
    if (!spec) {
      f.errors.add(where + spec.error());
      continue;
    }
    FileJob job;
    job.line = line;
    // The job as it will be sent: the line itself unless `to_job` changed it.
    job.text = to_job ? j.dump() : std::string(text);
    job.ref_id = std::move(ref_id);
    job.api = spec->api;
    job.has_key = !spec->key.empty();
    job.key_member = j.contains("key");
    f.jobs.push_back(std::move(job));
  }
  return f;
}

LineErrors unknown_apis(const JobsFile& file,
                        const std::set<std::string>& known) {
  LineErrors errors;
  std::string names;
  for (const auto& n : known) names += (names.empty() ? "" : ", ") + n;
  if (names.empty()) names = "none";
  for (const auto& job : file.jobs) {
    if (known.count(job.api)) continue;
    errors.add(file.name + ":" + std::to_string(job.line) + ": unknown api '" +
               job.api + "' (the broker knows: " + names + ")");
  }
  return errors;
}

std::string derive_key(const std::string& group, int line) {
  return group + ":" + std::to_string(line);
}

std::string new_group_id() {
  std::random_device rd;
  std::mt19937_64 rng((static_cast<std::uint64_t>(rd()) << 32) ^ rd());
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id = "g-";
  for (int i = 0; i < 12; ++i) id += kHex[rng() & 0xF];
  return id;
}

Result<Ok> check_group(const std::string& group) {
  if (group.empty()) return Error{"--group must not be empty"};
  if (group.size() > 200) return Error{"--group is longer than 200 characters"};
  for (unsigned char c : group)
    if (c <= 0x20 || c == 0x7F)
      return Error{"--group must not contain whitespace or control characters"};
  return Ok{};
}

std::vector<ChunkRange> plan_chunks(const std::vector<FileJob>& jobs,
                                    std::size_t max_jobs,
                                    std::size_t max_bytes) {
  std::vector<ChunkRange> chunks;
  max_jobs = std::max<std::size_t>(max_jobs, 1);
  ChunkRange cur;
  std::size_t bytes = 0;
  for (std::size_t i = 0; i < jobs.size(); ++i) {
    std::size_t size = jobs[i].text.size() + 64;  // the key and separators
    if (cur.size() > 0 &&
        (cur.size() >= max_jobs || bytes + size > max_bytes)) {
      chunks.push_back(cur);
      cur = ChunkRange{i, i};
      bytes = 0;
    }
    cur.end = i + 1;
    bytes += size;
  }
  if (cur.size() > 0) chunks.push_back(cur);
  return chunks;
}

namespace {

// A string as JSON text; bytes that are not UTF-8 become U+FFFD, as the
// protocol's own encoder writes them.
std::string json_string(const std::string& s) {
  return nlohmann::json(s).dump(-1, ' ', false,
                                nlohmann::json::error_handler_t::replace);
}

}  // namespace

std::string chunk_body(const JobsFile& file, ChunkRange range,
                       const std::string& group) {
  std::string body = "{\"jobs\":[";
  std::size_t bytes = 0;
  for (std::size_t i = range.begin; i < range.end; ++i)
    bytes += file.jobs[i].text.size() + group.size() + 24;
  body.reserve(bytes + group.size() + 32);
  for (std::size_t i = range.begin; i < range.end; ++i) {
    const auto& job = file.jobs[i];
    if (i > range.begin) body += ',';
    if (job.has_key) {
      body += job.text;
    } else if (!job.key_member && job.text.back() == '}') {
      // An object with "api" in it: never "{}", so a comma goes before the key.
      body.append(job.text, 0, job.text.size() - 1);
      body += ",\"key\":";
      body += json_string(derive_key(group, job.line));
      body += '}';
    } else {
      auto j = nlohmann::json::parse(job.text, nullptr, false);
      j["key"] = derive_key(group, job.line);
      body += j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    }
  }
  body += "],\"group\":";
  body += json_string(group);
  body += '}';
  return body;
}

}  // namespace pacer::client
