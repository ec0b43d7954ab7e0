#include "cli/args.h"

#include <cerrno>
#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace atomserve::cli {

std::string ParsedArgs::Get(const std::string& name) const {
  auto it = values_.find(name);
  if (it != values_.end() && !it->second.empty()) return it->second.back();
  auto d = defaults_.find(name);
  return d == defaults_.end() ? "" : d->second;
}

std::vector<std::string> ParsedArgs::GetAll(const std::string& name) const {
  auto it = values_.find(name);
  return it == values_.end() ? std::vector<std::string>{} : it->second;
}

absl::StatusOr<int64_t> ParsedArgs::GetInt(const std::string& name) const {
  int64_t v;
  std::string s = Get(name);
  if (!absl::SimpleAtoi(s, &v))
    return absl::InvalidArgumentError(absl::StrCat("--", name, ": expected an integer, got '", s, "'"));
  return v;
}

absl::StatusOr<double> ParsedArgs::GetDouble(const std::string& name) const {
  double v;
  std::string s = Get(name);
  if (!absl::SimpleAtod(s, &v))
    return absl::InvalidArgumentError(absl::StrCat("--", name, ": expected a number, got '", s, "'"));
  return v;
}

Command& Command::Option(OptionSpec spec) {
  options_.push_back(std::move(spec));
  return *this;
}

std::string Command::Usage() const {
  std::string out = absl::StrCat("usage: atomserve ", name_, " [options]\n\n", description_, "\n\noptions:\n");
  for (const OptionSpec& o : options_) {
    std::string left = absl::StrCat("  --", o.name, o.value_name.empty() ? "" : " " + o.value_name);
    if (left.size() < 26) left.resize(26, ' ');
    absl::StrAppend(&out, left, " ", o.help);
    if (!o.default_value.empty()) absl::StrAppend(&out, " (default: ", o.default_value, ")");
    if (o.repeatable) absl::StrAppend(&out, " [repeatable]");
    absl::StrAppend(&out, "\n");
  }
  absl::StrAppend(&out, "  -h, --help                 show this help\n");
  return out;
}

absl::StatusOr<ParsedArgs> Command::Parse(int argc, char** argv) const {
  ParsedArgs args;
  for (const OptionSpec& o : options_)
    if (!o.default_value.empty()) args.defaults_[o.name] = o.default_value;
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      args.help = true;
      continue;
    }
    if (a.rfind("--", 0) != 0)
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", a, "'"));
    std::string name = a.substr(2), value;
    bool inline_value = false;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      inline_value = true;
    }
    const OptionSpec* spec = nullptr;
    for (const OptionSpec& o : options_)
      if (o.name == name) spec = &o;
    if (!spec) return absl::InvalidArgumentError(absl::StrCat("unknown option '--", name, "'"));
    if (spec->value_name.empty()) {
      if (inline_value) return absl::InvalidArgumentError(absl::StrCat("--", name, " takes no value"));
      value = "true";
    } else if (!inline_value) {
      if (i + 1 >= argc) return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      value = argv[++i];
    }
    auto& slot = args.values_[name];
    if (!spec->repeatable) slot.clear();
    slot.push_back(value);
  }
  return args;
}

}  // namespace atomserve::cli
