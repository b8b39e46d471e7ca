// Runs the `pacer` CLI inside the test process (client::run_cli) against a
// broker endpoint and captures what it prints; for the client's unit tests.
#pragma once

#include <sstream>
#include <string>
#include <vector>

#include "client/cli.h"
#include "tests/support/process.h"

namespace pacer::testing {

struct CliRun {
  int code = -1;
  std::string out;
  std::string err;
};

// `pacer --config EMPTY --broker ENDPOINT --timeout 5s ARGS...`. The
// explicit empty configuration keeps $PACER_CONFIG and ./pacer.toml out.
inline CliRun run_pacer(const std::string& endpoint,
                        const std::vector<std::string>& args) {
  TempDir dir;
  dir.write("pacer.toml", "");
  std::vector<std::string> argv = {
      "pacer",     "--config", dir.file("pacer.toml"), "--broker", endpoint,
      "--timeout", "5s"};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<const char*> ptrs;
  for (const auto& a : argv) ptrs.push_back(a.c_str());
  std::ostringstream out, err;
  client::Io io{out, err, false};
  CliRun r;
  r.code = client::run_cli(static_cast<int>(ptrs.size()), ptrs.data(), io);
  r.out = out.str();
  r.err = err.str();
  return r;
}

}  // namespace pacer::testing
