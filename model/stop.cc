#include "model/stop.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace tessera {
namespace {

absl::Status ValidateStopStrings(const std::vector<std::string>& stop_strings) {
  if (stop_strings.size() > static_cast<size_t>(StopConditions::kMaxStopStrings)) {
    return absl::InvalidArgumentError(absl::StrCat("stop: ", stop_strings.size(),
                                                   " stop strings given, at most ",
                                                   StopConditions::kMaxStopStrings));
  }
  for (size_t i = 0; i < stop_strings.size(); ++i) {
    if (stop_strings[i].empty()) {
      return absl::InvalidArgumentError(absl::StrCat("stop: stop string ", i, " is empty"));
    }
    if (stop_strings[i].size() > static_cast<size_t>(StopConditions::kMaxStopStringBytes)) {
      return absl::InvalidArgumentError(
          absl::StrCat("stop: stop string ", i, " is ", stop_strings[i].size(),
                       " bytes long, at most ", StopConditions::kMaxStopStringBytes));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateIds(const char* field, const std::vector<int32_t>& ids) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("stop: ", field, "[", i, "]=", ids[i], " is not a token id (must be >= 0)"));
    }
  }
  return absl::OkStatus();
}

bool Contains(const std::vector<int32_t>& ids, int32_t id) {
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

}  // namespace

absl::string_view FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kLength:
      return "length";
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kEos:
      return "eos";
    case FinishReason::kCancelled:
      return "cancelled";
  }
  return "unknown";
}

absl::Status StopConditions::Validate() const {
  if (max_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("stop: max_tokens=", max_tokens, " must be >= 0 (0 = no limit)"));
  }
  if (absl::Status s = ValidateIds("eos_token_ids", eos_token_ids); !s.ok()) return s;
  if (absl::Status s = ValidateIds("stop_token_ids", stop_token_ids); !s.ok()) return s;
  return ValidateStopStrings(stop_strings);
}

absl::StatusOr<StopMatcher> StopMatcher::Create(std::vector<std::string> stop_strings) {
  if (absl::Status s = ValidateStopStrings(stop_strings); !s.ok()) return s;
  return StopMatcher(std::move(stop_strings));
}

StopMatcher::Result StopMatcher::Push(absl::string_view piece) {
  Result result;
  if (stopped()) return result;
  held_.append(piece.data(), piece.size());

  // The occurrence completed first (smallest end), then the longest (smallest start). held_
  // never contains a complete stop string before this push, so each string's first
  // occurrence is its earliest-ending one.
  size_t best_start = std::string::npos;
  size_t best_end = std::string::npos;
  for (size_t i = 0; i < stop_strings_.size(); ++i) {
    const std::string& s = stop_strings_[i];
    const size_t at = held_.find(s);
    if (at == std::string::npos) continue;
    const size_t end = at + s.size();
    if (best_end == std::string::npos || end < best_end || (end == best_end && at < best_start)) {
      best_start = at;
      best_end = end;
      stop_index_ = static_cast<int>(i);
    }
  }
  if (best_start != std::string::npos) {
    result.text = held_.substr(0, best_start);
    result.stop_index = stop_index_;
    held_.clear();
    return result;
  }

  // Hold back the longest suffix of held_ that is a proper prefix of a stop string.
  size_t hold = 0;
  for (const std::string& s : stop_strings_) {
    for (size_t len = std::min(s.size() - 1, held_.size()); len > hold; --len) {
      if (held_.compare(held_.size() - len, len, s, 0, len) == 0) {
        hold = len;
        break;
      }
    }
  }
  result.text = held_.substr(0, held_.size() - hold);
  held_.erase(0, held_.size() - hold);
  return result;
}

std::string StopMatcher::Flush() {
  std::string out;
  out.swap(held_);
  return out;
}

absl::StatusOr<StopChecker> StopChecker::Create(StopConditions conditions) {
  if (absl::Status s = conditions.Validate(); !s.ok()) return s;
  absl::StatusOr<StopMatcher> matcher = StopMatcher::Create(conditions.stop_strings);
  if (!matcher.ok()) return matcher.status();
  return StopChecker(std::move(conditions), *std::move(matcher));
}

StopChecker::Step StopChecker::OnToken(int32_t id, absl::string_view piece) {
  Step step;
  if (finish_.has_value()) {
    step.finish = finish_;
    return step;
  }
  ++n_generated_;
  if (Contains(conditions_.eos_token_ids, id)) {
    finish_ = FinishReason::kEos;
    step.text = matcher_.Flush();
  } else if (Contains(conditions_.stop_token_ids, id)) {
    finish_ = FinishReason::kStop;
    step.text = matcher_.Flush();
  } else {
    StopMatcher::Result r = matcher_.Push(piece);
    step.text = std::move(r.text);
    if (r.stopped()) {
      finish_ = FinishReason::kStop;
    } else if (conditions_.max_tokens > 0 && n_generated_ >= conditions_.max_tokens) {
      finish_ = FinishReason::kLength;
      step.text += matcher_.Flush();
    }
  }
  step.finish = finish_;
  return step;
}

}  // namespace tessera
