// CommunicatorHooks: the engine's ShardHooks (model/llama.h) carried by Communicators, so a
// worker's LlamaModel takes part in a tensor-parallel group and a pipeline over the network.
//
//   AllReduceSum  -> tensor_group->AllReduceSum (after attention output and FFN down)
//   GatherLogits  -> tensor_group->AllGatherV of each rank's (rows, local_vocab) block, then
//                    re-laid out as (rows, n_vocab) row-major, vocab blocks in rank order
//   ReceiveHidden -> pipeline->Recv(previous_stage)
//   SendHidden    -> pipeline->Send(next_stage)
//
// With tensor parallelism every rank of a stage holds the whole hidden state after each
// all-reduce, so the pipeline link of TP rank t joins stage s's rank t to stage s+1's rank t:
// `pipeline` is the group of one TP index across the stages.
//
// Buffers: the model passes backend memory to AllReduceSum/ReceiveHidden/SendHidden; with a
// TcpCommunicator that must be host memory (the CPU backend), with NCCL device memory.
//
// Thread-safety: like the model it serves, one call at a time. The communicators must outlive
// the hooks.
#ifndef TESSERA_WORKER_SHARD_HOOKS_H_
#define TESSERA_WORKER_SHARD_HOOKS_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "model/llama.h"
#include "worker/communicator.h"

namespace tessera {

struct CommunicatorHooksOptions {
  // The tensor-parallel group of this stage; null when TP = 1.
  Communicator* tensor_group = nullptr;
  // Vocab slice width of each rank of tensor_group, in its rank order (sums to n_vocab); the
  // widths may differ. Empty when TP = 1.
  std::vector<int64_t> vocab_widths;
  // The pipeline of this TP index and this stage's neighbours in it (-1: none).
  Communicator* pipeline = nullptr;
  int previous_stage = -1;
  int next_stage = -1;
};

class CommunicatorHooks final : public ShardHooks {
 public:
  explicit CommunicatorHooks(CommunicatorHooksOptions options) : o_(std::move(options)) {}
  CommunicatorHooks(const CommunicatorHooks&) = delete;
  CommunicatorHooks& operator=(const CommunicatorHooks&) = delete;

  absl::Status AllReduceSum(float* data, int64_t n) override;
  absl::Status ReceiveHidden(float* x, int64_t n) override;
  absl::Status SendHidden(const float* x, int64_t n) override;
  absl::Status GatherLogits(const float* local, int64_t n_rows, int64_t local_vocab,
                            int64_t n_vocab, float* full) override;

 private:
  CommunicatorHooksOptions o_;
  std::vector<float> gathered_;  // (rank blocks of (n_rows, width)) before the re-layout
};

}  // namespace tessera

#endif  // TESSERA_WORKER_SHARD_HOOKS_H_
