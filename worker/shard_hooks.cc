#include "worker/shard_hooks.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace tessera {

absl::Status CommunicatorHooks::AllReduceSum(float* data, int64_t n) {
  if (o_.tensor_group == nullptr) return absl::OkStatus();
  return o_.tensor_group->AllReduceSum(data, n);
}

absl::Status CommunicatorHooks::ReceiveHidden(float* x, int64_t n) {
  if (o_.pipeline == nullptr || o_.previous_stage < 0) return ShardHooks::ReceiveHidden(x, n);
  return o_.pipeline->Recv(o_.previous_stage, x, n);
}

absl::Status CommunicatorHooks::SendHidden(const float* x, int64_t n) {
  if (o_.pipeline == nullptr || o_.next_stage < 0) return ShardHooks::SendHidden(x, n);
  return o_.pipeline->Send(o_.next_stage, x, n);
}

absl::Status CommunicatorHooks::GatherLogits(const float* local, int64_t n_rows,
                                             int64_t local_vocab, int64_t n_vocab, float* full) {
  Communicator* tp = o_.tensor_group;
  if (tp == nullptr || tp->size() == 1) {
    return ShardHooks::GatherLogits(local, n_rows, local_vocab, n_vocab, full);
  }
  const int n = tp->size();
  if (o_.vocab_widths.size() != static_cast<size_t>(n)) {
    return absl::FailedPreconditionError(
        absl::StrCat("CommunicatorHooks: ", o_.vocab_widths.size(),
                     " vocab widths for a tensor-parallel group of ", n, " ranks"));
  }
  int64_t total = 0;
  for (int64_t w : o_.vocab_widths) total += w;
  if (total != n_vocab || o_.vocab_widths[tp->rank()] != local_vocab) {
    return absl::FailedPreconditionError(
        absl::StrCat("CommunicatorHooks: vocab widths sum to ", total, " with ",
                     o_.vocab_widths[tp->rank()], " on rank ", tp->rank(),
                     ", but the model has n_vocab ", n_vocab, " and local width ", local_vocab));
  }
  std::vector<int64_t> counts(n);
  for (int r = 0; r < n; ++r) counts[r] = n_rows * o_.vocab_widths[r];
  gathered_.resize(static_cast<size_t>(n_rows * n_vocab));
  absl::Status s = tp->AllGatherV(local, counts, gathered_.data());
  if (!s.ok()) return s;
  // Rank r's block is (n_rows, width_r) row-major; its columns start at the widths before it.
  const float* block = gathered_.data();
  int64_t col = 0;
  for (int r = 0; r < n; ++r) {
    const int64_t w = o_.vocab_widths[r];
    for (int64_t row = 0; row < n_rows; ++row) {
      std::memcpy(full + row * n_vocab + col, block + row * w, static_cast<size_t>(w) * 4);
    }
    block += n_rows * w;
    col += w;
  }
  return absl::OkStatus();
}

}  // namespace tessera
