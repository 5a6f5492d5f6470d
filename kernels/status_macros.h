// Early-return helpers for absl::Status / absl::StatusOr, used by every part of Tessera.
#ifndef TESSERA_KERNELS_STATUS_MACROS_H_
#define TESSERA_KERNELS_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define TESSERA_STATUS_CONCAT_INNER(a, b) a##b
#define TESSERA_STATUS_CONCAT(a, b) TESSERA_STATUS_CONCAT_INNER(a, b)

// Returns the status of `expr` from the enclosing function if it is not OK.
#define TESSERA_RETURN_IF_ERROR(expr)                 \
  do {                                                \
    const absl::Status tessera_status_ = (expr);      \
    if (!tessera_status_.ok()) return tessera_status_; \
  } while (0)

// `lhs = *expr` for a StatusOr `expr`, or returns its error.
#define TESSERA_ASSIGN_OR_RETURN(lhs, expr) \
  TESSERA_ASSIGN_OR_RETURN_IMPL(TESSERA_STATUS_CONCAT(tessera_statusor_, __LINE__), lhs, expr)
#define TESSERA_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return tmp.status();                 \
  lhs = *std::move(tmp)

#endif  // TESSERA_KERNELS_STATUS_MACROS_H_
