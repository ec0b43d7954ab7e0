// Status helpers shared by every module.
//
// Errors travel between modules as absl::Status / absl::StatusOr; codes carry
// meaning (kInvalidArgument: the caller's input is wrong; kDataLoss: a file is
// corrupt or truncated; kNotFound: a file or key is missing;
// kResourceExhausted: out of capacity; kUnavailable: transient, retry). Code
// aborts only on programmer bugs (ATOMSERVE_CHECK).
//
//   absl::StatusOr<int> ParseCount(std::string_view s);
//   absl::Status Use() {
//     ATOMSERVE_ASSIGN_OR_RETURN(int n, ParseCount("3"));
//     ATOMSERVE_RETURN_IF_ERROR(DoSomething(n));
//     return absl::OkStatus();
//   }
#pragma once

#include <cstdio>
#include <cstdlib>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#define ATOMSERVE_CONCAT_INNER_(a, b) a##b
#define ATOMSERVE_CONCAT_(a, b) ATOMSERVE_CONCAT_INNER_(a, b)

#define ATOMSERVE_RETURN_IF_ERROR(expr)          \
  do {                                           \
    ::absl::Status _atomserve_st = (expr);       \
    if (!_atomserve_st.ok()) return _atomserve_st; \
  } while (0)

#define ATOMSERVE_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                     \
  if (!tmp.ok()) return std::move(tmp).status();         \
  lhs = std::move(tmp).value()

#define ATOMSERVE_ASSIGN_OR_RETURN(lhs, expr) \
  ATOMSERVE_ASSIGN_OR_RETURN_IMPL_(ATOMSERVE_CONCAT_(_atomserve_sor_, __LINE__), lhs, expr)

// Invariant check for programmer bugs only; stays on in release builds.
#define ATOMSERVE_CHECK(cond)                                                  \
  do {                                                                         \
    if (!(cond)) {                                                             \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                            \
    }                                                                          \
  } while (0)
