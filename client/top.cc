#include "client/top.h"

#include <poll.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <optional>
#include <sstream>

#include "client/format.h"
#include "client/table.h"
#include "common/units.h"

namespace pacer::client {

using protocol::Command;

namespace {

double number(const nlohmann::json& j, const char* key, double fallback = 0) {
  if (!j.is_object()) return fallback;
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : fallback;
}

std::int64_t state_count(const nlohmann::json& lane, const char* state) {
  auto it = lane.find("states");
  if (it == lane.end() || !it->is_object()) return 0;
  return static_cast<std::int64_t>(number(*it, state));
}

std::string fixed(double v, int decimals = 1) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

// "50/1s, 90000 tokens/1m0s (+ 100/1m0s learned)".
std::string limits_cell(const nlohmann::json& lane) {
  std::string out;
  if (auto u = lane.find("usage"); u != lane.end() && u->is_array()) {
    std::string learned;
    for (const auto& e : *u) {
      if (!e.is_object()) continue;
      std::string text = e.value("limit", std::string("?"));
      if (e.value("learned", false))
        learned += (learned.empty() ? "" : ", ") + text;
      else
        out += (out.empty() ? "" : ", ") + text;
    }
    if (!learned.empty())
      out +=
          (out.empty() ? "" : " ") + std::string("(learned ") + learned + ")";
  }
  if (auto a = lane.find("learned_rate_per_s");
      a != lane.end() && a->is_number())
    out += (out.empty() ? "" : " ") + std::string("(pace ") +
           fixed(a->get<double>()) + "/s)";
  return out.empty() ? "none" : out;
}

// The first request limit's use: "48 of 50/1s".
std::string used_cell(const nlohmann::json& lane) {
  auto u = lane.find("usage");
  if (u == lane.end() || !u->is_array() || u->empty()) return "-";
  const auto& e = (*u)[0];
  if (!e.is_object()) return "-";
  return std::to_string(static_cast<std::int64_t>(number(e, "used"))) + " of " +
         e.value("limit", std::string("?"));
}

// The server's counter with the least remaining: "12/50, reset 2.3s".
std::string upstream_cell(const nlohmann::json& lane) {
  auto u = lane.find("upstream");
  if (u == lane.end() || !u->is_array() || u->empty()) return "-";
  const nlohmann::json* low = nullptr;
  for (const auto& e : *u)
    if (e.contains("remaining") && e["remaining"].is_number() &&
        (!low ||
         e["remaining"].get<double>() < (*low)["remaining"].get<double>()))
      low = &e;
  if (!low) return "?";
  std::string text =
      std::to_string(static_cast<std::int64_t>(number(*low, "remaining")));
  if (low->contains("limit") && (*low)["limit"].is_number())
    text +=
        "/" + std::to_string(static_cast<std::int64_t>(number(*low, "limit")));
  if (auto r = low->find("reset_in_ms"); r != low->end() && r->is_number())
    text += ", reset " + format_duration(r->get<std::int64_t>());
  return text;
}

const nlohmann::json* find_lane(const nlohmann::json* stats,
                                const std::string& api) {
  if (!stats || !stats->is_object()) return nullptr;
  auto it = stats->find("lanes");
  if (it == stats->end() || !it->is_array()) return nullptr;
  for (const auto& l : *it)
    if (l.value("api", std::string()) == api) return &l;
  return nullptr;
}

}  // namespace

std::string render_top(const nlohmann::json& stats, const nlohmann::json* prev,
                       Millis dt_ms, Millis now_ms) {
  std::ostringstream out;
  const auto& lanes =
      stats.is_object() && stats.contains("lanes") && stats["lanes"].is_array()
          ? stats["lanes"]
          : nlohmann::json::array();
  const auto workers = stats.is_object() && stats.contains("workers") &&
                               stats["workers"].is_array()
                           ? stats["workers"].size()
                           : 0;
  out << "pacer top  " << format_local_time(now_ms) << "  workers " << workers
      << "  (q quits)\n\n";
  Table t({"LANE", "LIMITS", "USED", "RATE/S", "UPSTREAM", "IN_FLIGHT",
           "QUEUED", "WAITING", "DEAD", "429/MIN", "CIRCUIT", "ETA"});
  for (std::size_t i : {2u, 3u, 5u, 6u, 7u, 8u, 9u}) t.align_right(i);
  for (const auto& l : lanes) {
    if (!l.is_object()) continue;
    const std::string api = l.value("api", std::string("?"));
    const std::int64_t queued =
        state_count(l, "queued") + state_count(l, "retrying");
    const std::int64_t waiting = state_count(l, "waiting_quota");
    const double calls_per_s = number(l, "rate_per_s");
    const double jobs_per_s = calls_per_s * number(l, "items_per_request", 1.0);
    std::string per_min = "-";
    if (const auto* p = find_lane(prev, api); p && dt_ms > 0) {
      const double d =
          number(l, "rate_limited_total") - number(*p, "rate_limited_total");
      per_min = fixed(std::max(0.0, d) * 60'000.0 / static_cast<double>(dt_ms));
    }
    std::string eta = "-";
    const std::int64_t backlog = queued + waiting;
    if (backlog == 0)
      eta = "done";
    else if (jobs_per_s > 0)
      eta = format_duration(static_cast<Millis>(
          1000.0 * static_cast<double>(backlog) / jobs_per_s));
    std::string circuit = l.value("circuit", std::string("-"));
    if (l.contains("paused_until_ms") && l["paused_until_ms"].is_number()) {
      const Millis left = l["paused_until_ms"].get<Millis>() - now_ms;
      if (left > 0) circuit += ", paused " + format_duration(left);
    }
    t.add_row(
        {api, limits_cell(l), used_cell(l), fixed(calls_per_s),
         upstream_cell(l),
         std::to_string(static_cast<std::int64_t>(number(l, "in_flight"))),
         std::to_string(queued), std::to_string(waiting),
         std::to_string(state_count(l, "dead")), per_min, circuit, eta});
  }
  out << t.render();
  // The alerts firing now (docs/operations.md "Alerts"), oldest first.
  std::vector<std::pair<Millis, std::string>> firing;
  for (const auto& l : lanes) {
    if (!l.is_object() || !l.contains("alerts") || !l["alerts"].is_array())
      continue;
    for (const auto& a : l["alerts"]) {
      if (!a.is_object()) continue;
      const Millis since = a.value("since_ms", Millis{0});
      std::string line = a.value("severity", std::string("?")) + "  " +
                         a.value("alert", std::string("?")) + "  " +
                         a.value("message", std::string());
      if (since > 0 && now_ms > since)
        line += "  (for " + format_duration(now_ms - since) + ")";
      firing.emplace_back(since, std::move(line));
    }
  }
  std::stable_sort(
      firing.begin(), firing.end(),
      [](const auto& a, const auto& b) { return a.first < b.first; });
  if (!firing.empty()) {
    out << "\nALERTS\n";
    for (const auto& [since, line] : firing) out << "  " << line << "\n";
  }
  return out.str();
}

namespace {

// Raw keyboard input for the life of the object (restored on every exit).
class RawTerminal {
 public:
  RawTerminal() {
    if (tcgetattr(STDIN_FILENO, &saved_) != 0) return;
    termios raw = saved_;
    raw.c_lflag &= static_cast<tcflag_t>(~(ICANON | ECHO));
    raw.c_cc[VMIN] = 0;
    raw.c_cc[VTIME] = 0;
    ok_ = tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
  }
  ~RawTerminal() {
    if (ok_) tcsetattr(STDIN_FILENO, TCSANOW, &saved_);
  }
  RawTerminal(const RawTerminal&) = delete;
  RawTerminal& operator=(const RawTerminal&) = delete;

 private:
  termios saved_{};
  bool ok_ = false;
};

Millis wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

int top(Session& s, const TopOptions& o) {
  auto broker = s.broker();
  if (!broker) return s.fail(kExitError, broker.error());
  const bool live =
      !o.once && ::isatty(STDOUT_FILENO) == 1 && ::isatty(STDIN_FILENO) == 1;
  std::optional<RawTerminal> raw;
  if (live) raw.emplace();
  nlohmann::json prev;
  Millis prev_at = 0;
  while (true) {
    Reply r = (*broker)->call(Command::kStats, nlohmann::json::object());
    if (!r.ok()) return s.fail(exit_code_for(r), r.error);
    const Millis now = wall_ms();
    const std::string frame =
        render_top(r.body, prev.is_null() ? nullptr : &prev,
                   prev_at ? now - prev_at : 0, now);
    if (!live) {
      s.io().out << frame;
      return kExitOk;
    }
    // Home, clear, draw: the frame replaces the last one in place.
    s.io().out << "\x1b[H\x1b[2J" << frame << std::flush;
    prev = std::move(r.body);
    prev_at = now;
    pollfd in{STDIN_FILENO, POLLIN, 0};
    if (::poll(&in, 1, static_cast<int>(o.interval_ms)) > 0) {
      char c = 0;
      if (::read(STDIN_FILENO, &c, 1) == 1 && (c == 'q' || c == 'Q'))
        return kExitOk;
    }
  }
}

}  // namespace pacer::client
