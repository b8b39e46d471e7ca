// pacer: the command line client. Everything but wiring the process's
// streams lives in pacer_client_lib (client/cli.h).
#include <unistd.h>

#include <iostream>

#include "client/cli.h"

int main(int argc, char** argv) {
  pacer::client::Io io{std::cout, std::cerr, ::isatty(STDERR_FILENO) == 1};
  int code = pacer::client::run_cli(argc, argv, io);
  std::cout.flush();
  return code;
}
