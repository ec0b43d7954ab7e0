// atomserve: one binary, one subcommand per job.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "cli/commands.h"

namespace atomserve::cli {

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "atomserve: %s\n", std::string(status.message()).c_str());
  return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

namespace {

std::vector<Subcommand> AllCommands() {
  return {GenerateCommand(), InfoCommand(), QuantizeCommand(), EvalPplCommand(), BenchEngineCommand()};
}

// Number of leading arguments naming c ("eval ppl" takes two), or 0.
int MatchCommand(const Subcommand& c, int argc, char** argv) {
  const std::vector<std::string> words = absl::StrSplit(c.spec.name(), ' ');
  if (static_cast<int>(words.size()) > argc - 1) return 0;
  for (size_t i = 0; i < words.size(); ++i) {
    if (words[i] != argv[1 + i]) return 0;
  }
  return static_cast<int>(words.size());
}

void PrintHelp(const std::vector<Subcommand>& cmds) {
  std::printf(
      "atomserve: serving Llama-family models with Atom W4A4 quantization\n\n"
      "usage: atomserve <command> [options]\n       atomserve <command> --help\n\ncommands:\n");
  for (const Subcommand& c : cmds) std::printf("  %-10s %s\n", c.spec.name().c_str(), c.spec.summary().c_str());
  std::printf("\nenvironment:\n  ATOMSERVE_MODEL    default model path\n"
              "  ATOMSERVE_THREADS  CPU threads for the CPU backend\n");
}

}  // namespace
}  // namespace atomserve::cli

int main(int argc, char** argv) {
  using namespace atomserve::cli;
  std::vector<Subcommand> cmds = AllCommands();
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "help")) {
    PrintHelp(cmds);
    return argc < 2 ? 2 : 0;
  }
  for (const Subcommand& c : cmds) {
    const int words = MatchCommand(c, argc, argv);
    if (words == 0) continue;
    auto args = c.spec.Parse(argc - 1 - words, argv + 1 + words);
    if (!args.ok()) {
      std::fprintf(stderr, "atomserve %s: %s\n\n%s", c.spec.name().c_str(), std::string(args.status().message()).c_str(),
                   c.spec.Usage().c_str());
      return 2;
    }
    if (args->help) {
      std::printf("%s", c.spec.Usage().c_str());
      return 0;
    }
    return c.run(*args);
  }
  std::fprintf(stderr, "atomserve: unknown command '%s'\n\n", argv[1]);
  PrintHelp(cmds);
  return 2;
}
