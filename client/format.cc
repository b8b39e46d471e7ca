#include "client/format.h"

#include <cmath>
#include <cstdio>
#include <ctime>

namespace pacer::client {

std::string to_text(const nlohmann::json& v) {
  if (v.is_null()) return "-";
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  if (v.is_number_integer()) return std::to_string(v.get<std::int64_t>());
  if (v.is_number_unsigned()) return std::to_string(v.get<std::uint64_t>());
  if (v.is_number_float()) {
    double d = v.get<double>();
    char buf[64];
    if (std::abs(d) >= 100 || d == std::floor(d))
      std::snprintf(buf, sizeof buf, "%.0f", d);
    else
      std::snprintf(buf, sizeof buf, "%.1f", d);
    return buf;
  }
  if (v.is_array()) {
    if (v.empty()) return "-";
    std::string out;
    for (const auto& e : v) {
      if (!out.empty()) out += ", ";
      out +=
          e.is_structured()
              ? e.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
              : to_text(e);
    }
    return out;
  }
  return v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string field(const nlohmann::json& obj, const char* key) {
  if (!obj.is_object()) return "-";
  auto it = obj.find(key);
  return it == obj.end() ? "-" : to_text(*it);
}

std::optional<std::int64_t> int_field(const nlohmann::json& obj,
                                      const char* key) {
  if (!obj.is_object()) return std::nullopt;
  auto it = obj.find(key);
  if (it == obj.end()) return std::nullopt;
  if (it->is_number_integer()) return it->get<std::int64_t>();
  if (it->is_number_unsigned())
    return static_cast<std::int64_t>(it->get<std::uint64_t>());
  return std::nullopt;
}

std::string format_local_time(Millis epoch_ms) {
  std::time_t t = static_cast<std::time_t>(epoch_ms / 1000);
  std::tm tm{};
  if (!localtime_r(&t, &tm)) return std::to_string(epoch_ms);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

std::string time_field(const nlohmann::json& obj, const char* key) {
  auto ms = int_field(obj, key);
  return ms && *ms > 0 ? format_local_time(*ms) : "-";
}

std::string pretty(const nlohmann::json& value) {
  return value.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
}

nlohmann::json without_envelope(nlohmann::json reply) {
  if (reply.is_object()) {
    reply.erase("req");
    reply.erase("ok");
  }
  return reply;
}

std::string plural(std::int64_t n, const std::string& noun) {
  return std::to_string(n) + " " + noun + (n == 1 ? "" : "s");
}

std::string shorten(const std::string& text, std::size_t width) {
  auto is_start = [](char c) {
    return (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  };
  std::size_t points = 0;
  std::size_t cut = text.size();  // byte offset after `width - 3` points
  const std::size_t keep = width > 3 ? width - 3 : 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (!is_start(text[i])) continue;
    if (points == keep && cut == text.size()) cut = i;
    ++points;
  }
  std::string out = points <= width ? text : text.substr(0, cut) + "...";
  for (char& c : out)
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  return out;
}

}  // namespace pacer::client
