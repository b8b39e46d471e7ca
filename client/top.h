// `pacer top`: a live view of every lane, redrawn in place from the broker's
// STATS reply; `q` quits. The frame is a pure function of two STATS replies
// (for the rates between them), so it is tested without a terminal.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "client/commands.h"
#include "common/clock.h"

namespace pacer::client {

struct TopOptions {
  Millis interval_ms = 1000;
  bool once = false;  // one frame, no terminal control (also off a terminal)
};

// One frame: a header line, then a table of the lanes. `prev` (may be null)
// is the previous reply, `dt_ms` the time between them: 429s per minute come
// from the difference of the lanes' rate_limited_total.
std::string render_top(const nlohmann::json& stats, const nlohmann::json* prev,
                       Millis dt_ms, Millis now_ms);

int top(Session& s, const TopOptions& o);

}  // namespace pacer::client
