// The atomserve subcommands. Each returns a process exit code: 0 success,
// 1 runtime failure (message on stderr), 2 usage error.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "cli/args.h"

namespace atomserve::cli {

struct Subcommand {
  Command spec;
  int (*run)(const ParsedArgs& args);
};

Subcommand GenerateCommand();
Subcommand InfoCommand();

// Prints "atomserve: <message>" and returns the exit code for the status.
int Fail(const absl::Status& status);

}  // namespace atomserve::cli
