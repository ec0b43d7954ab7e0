// Minimal command-line parsing for the atomserve subcommands.
//
// Each subcommand declares its options (name, value or switch, repeatable,
// help line); Parse() accepts `--name value`, `--name=value` and switches,
// rejects unknown options with the subcommand's usage, and returns the values.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace atomserve::cli {

struct OptionSpec {
  std::string name;        // without the leading dashes
  std::string value_name;  // empty for a switch
  std::string help;
  std::string default_value;
  bool repeatable = false;
};

class ParsedArgs {
 public:
  bool Has(const std::string& name) const { return values_.count(name) > 0; }
  std::string Get(const std::string& name) const;
  std::vector<std::string> GetAll(const std::string& name) const;
  absl::StatusOr<int64_t> GetInt(const std::string& name) const;
  absl::StatusOr<double> GetDouble(const std::string& name) const;
  bool help = false;

 private:
  friend class Command;
  std::map<std::string, std::vector<std::string>> values_;
  std::map<std::string, std::string> defaults_;
};

class Command {
 public:
  Command(std::string name, std::string summary, std::string description)
      : name_(std::move(name)), summary_(std::move(summary)), description_(std::move(description)) {}
  Command& Option(OptionSpec spec);

  const std::string& name() const { return name_; }
  const std::string& summary() const { return summary_; }
  std::string Usage() const;
  // kInvalidArgument naming the bad option; `help` is set for -h/--help.
  absl::StatusOr<ParsedArgs> Parse(int argc, char** argv) const;

 private:
  std::string name_, summary_, description_;
  std::vector<OptionSpec> options_;
};

}  // namespace atomserve::cli
