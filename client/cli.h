// The `pacer` command line: parses the arguments (CLI11), finds and loads the
// configuration, runs one command (client/commands.h) and returns the exit
// code. main() only supplies the streams. Errors are one "pacer: ..." line on
// `io.err`; nothing escapes as an exception.
#pragma once

#include "client/commands.h"

namespace pacer::client {

int run_cli(int argc, const char* const* argv, Io& io);

}  // namespace pacer::client
