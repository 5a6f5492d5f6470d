#include "coordinator/generate_service.h"

#include <algorithm>
#include <memory>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"

namespace tessera {
namespace {

// The metrics outcome of a request that ended with `status` (before a finish reason).
std::string ErrorOutcome(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
      return "invalid_argument";
    case absl::StatusCode::kResourceExhausted:
      return "resource_exhausted";
    case absl::StatusCode::kUnavailable:
      return "unavailable";
    case absl::StatusCode::kDeadlineExceeded:
      return "deadline_exceeded";
    case absl::StatusCode::kCancelled:
      return "cancelled";
    default:
      return "internal";
  }
}

absl::Time DeadlineOf(const grpc::ServerContext& context) {
  const auto d = context.deadline();
  if (d == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(d);
}

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

GenerateService::GenerateService(const ServedModel& model, std::vector<ServiceReplica> replicas,
                                 GenerateServiceOptions options)
    : model_(model),
      replicas_(std::move(replicas)),
      options_(std::move(options)),
      id_prefix_(std::random_device()() & 0xffffff) {}

void GenerateService::RecordOutcome(const absl::Status& status) const {
  if (options_.metrics != nullptr && !status.ok()) {
    options_.metrics->RequestFinished(ErrorOutcome(status));
  }
}

absl::Status GenerateService::Route(ScheduledRequest request) {
  struct Candidate {
    size_t index;
    ReplicaLoad load;
  };
  std::vector<Candidate> ready;
  std::vector<std::string> states;
  for (size_t i = 0; i < replicas_.size(); ++i) {
    ReplicaLoad load = replicas_[i].load();
    if (load.ready) {
      ready.push_back({i, std::move(load)});
    } else {
      states.push_back(
          absl::StrCat("replica ", i, ": ", load.state.empty() ? "not ready" : load.state));
    }
  }
  if (ready.empty()) {
    return absl::UnavailableError(absl::StrCat(
        "no replica group is ready (",
        states.empty() ? "the coordinator has no replicas" : absl::StrJoin(states, "; "),
        "); retry when GetModelInfo shows a ready replica"));
  }
  // Least loaded first; among equals, a rotating first choice spreads a burst of requests.
  const uint64_t turn = route_turn_++;
  const size_t n = replicas_.size();
  std::sort(ready.begin(), ready.end(), [&](const Candidate& a, const Candidate& b) {
    const int64_t la = a.load.waiting + a.load.running, lb = b.load.waiting + b.load.running;
    if (la != lb) return la < lb;
    // Compare used fractions exactly: used_a / total_a < used_b / total_b.
    const int64_t ua = a.load.kv_blocks_used * std::max<int64_t>(b.load.kv_blocks_total, 1);
    const int64_t ub = b.load.kv_blocks_used * std::max<int64_t>(a.load.kv_blocks_total, 1);
    if (ua != ub) return ua < ub;
    return (a.index + n - turn % n) % n < (b.index + n - turn % n) % n;
  });
  absl::Status last;
  for (size_t k = 0; k < ready.size(); ++k) {
    const bool final_try = k + 1 == ready.size();
    last = replicas_[ready[k].index].submit(final_try ? std::move(request) : request);
    if (last.ok()) return last;
    // A full queue or a replica that just stopped being ready: the next one may take it.
    if (last.code() != absl::StatusCode::kResourceExhausted &&
        last.code() != absl::StatusCode::kUnavailable) {
      return last;
    }
  }
  return last;
}

grpc::Status GenerateService::Generate(grpc::ServerContext* context,
                                       const v1::GenerateRequest* request,
                                       grpc::ServerWriter<v1::GenerateResponse>* writer) {
  const absl::Time received = absl::Now();
  absl::StatusOr<ScheduledRequest> prepared = PrepareRequest(model_, *request, options_.prepare);
  if (!prepared.ok()) {
    RecordOutcome(prepared.status());
    return ToGrpcStatus(prepared.status());
  }
  if (prepared->id.empty()) {
    prepared->id = absl::StrFormat("req-%06x-%d", id_prefix_, next_request_++);
  }
  const std::string id = prepared->id;
  prepared->received = received;
  auto stream = std::make_shared<RequestStream>();
  prepared->stream = stream;
  if (absl::Now() >= DeadlineOf(*context)) {
    const absl::Status s = absl::DeadlineExceededError(
        "the deadline passed before the request was queued (tokenizing took it)");
    RecordOutcome(s);
    return ToGrpcStatus(s);
  }
  if (absl::Status s = Route(*std::move(prepared)); !s.ok()) {
    RecordOutcome(s);
    return ToGrpcStatus(s);
  }
  return Drain(context, *stream, writer, id);
}

grpc::Status GenerateService::Drain(grpc::ServerContext* context, RequestStream& stream,
                                    grpc::ServerWriter<v1::GenerateResponse>* writer,
                                    const std::string& request_id) {
  const absl::Time deadline = DeadlineOf(*context);
  CoordinatorMetrics* metrics = options_.metrics;
  int64_t tokens = 0;
  absl::Time last_token_at;
  v1::GenerateResponse message;
  absl::Status finished;
  // Ends the request from this side: the scheduler sees cancelled() at its next step.
  auto give_up = [&](absl::Status reason) {
    stream.Cancel(reason);
    if (metrics != nullptr) {
      metrics->RequestFinished(
          reason.code() == absl::StatusCode::kDeadlineExceeded ? "deadline_exceeded" : "cancelled");
    }
    return ToGrpcStatus(reason);
  };
  while (true) {
    const absl::Time now = absl::Now();
    if (now >= deadline) {
      return give_up(absl::DeadlineExceededError(absl::StrCat(
          "the deadline passed after ", tokens, " generated tokens; the request was dropped")));
    }
    if (context->IsCancelled()) {
      return give_up(absl::CancelledError(
          absl::StrCat("the client went away after ", tokens, " generated tokens")));
    }
    const absl::Duration wait = std::min(options_.poll_interval, deadline - now);
    switch (stream.Next(wait, &message, &finished)) {
      case RequestStream::Event::kTimeout:
        continue;
      case RequestStream::Event::kMessage: {
        if (message.request_id().empty()) message.set_request_id(request_id);
        if (message.tokens_size() > 0) {
          const absl::Time at = absl::Now();
          if (metrics != nullptr && tokens > 0) {
            const double gap = absl::ToDoubleSeconds(at - last_token_at) / message.tokens_size();
            for (int i = 0; i < message.tokens_size(); ++i) metrics->InterTokenLatency(gap);
          }
          last_token_at = at;
          tokens += message.tokens_size();
        }
        const bool last = message.finish_reason() != v1::FINISH_REASON_UNSPECIFIED;
        if (last && metrics != nullptr) {
          const v1::Usage& u = message.usage();
          metrics->RequestFinished(FinishReasonName(message.finish_reason()));
          metrics->PromptTokens(u.prompt_tokens());
          metrics->GeneratedTokens(u.generated_tokens());
          if (u.generated_tokens() > 0) metrics->TimeToFirstToken(u.time_to_first_token_s());
          metrics->RequestDuration(u.total_s());
          metrics->QueueWait(u.queue_s());
        }
        if (!writer->Write(message)) {
          stream.Cancel(absl::CancelledError("the client went away"));
          if (!last && metrics != nullptr) metrics->RequestFinished("cancelled");
          return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
        }
        continue;
      }
      case RequestStream::Event::kFinished:
        if (!finished.ok()) RecordOutcome(finished);
        return ToGrpcStatus(finished);
    }
  }
}

grpc::Status GenerateService::Tokenize(grpc::ServerContext* /*context*/,
                                       const v1::TokenizeRequest* request,
                                       v1::TokenizeResponse* response) {
  absl::StatusOr<std::vector<int32_t>> ids = TokenizeInput(model_, *request);
  if (!ids.ok()) return ToGrpcStatus(ids.status());
  for (int32_t id : *ids) {
    response->add_ids(id);
    response->add_pieces(TokenPiece(*model_.tokenizer, id));
  }
  return grpc::Status::OK;
}

v1::ModelInfo GenerateService::ModelInfo() const {
  v1::ModelInfo info;
  if (options_.fill_cluster_info) {
    options_.fill_cluster_info(&info);
  } else {
    info.set_tensor_parallel(1);
    info.set_pipeline_parallel(1);
    info.set_replicas(static_cast<uint32_t>(replicas_.size()));
  }
  info.set_model_name(model_.name);
  info.set_architecture(model_.architecture);
  info.set_quantization(model_.quantization);
  info.set_context_length(static_cast<uint32_t>(model_.config.n_ctx));
  info.set_vocab_size(static_cast<uint32_t>(model_.config.n_vocab));
  if (info.kv_block_tokens() == 0) info.set_kv_block_tokens(options_.kv_block_tokens);
  uint32_t ready = 0;
  for (size_t r = 0; r < replicas_.size(); ++r) {
    const ReplicaLoad load = replicas_[r].load();
    ready += load.ready ? 1 : 0;
    v1::ReplicaInfo* ri = nullptr;
    for (v1::ReplicaInfo& existing : *info.mutable_replica_info()) {
      if (existing.replica() == static_cast<int32_t>(r)) ri = &existing;
    }
    if (ri == nullptr) {
      ri = info.add_replica_info();
      ri->set_replica(static_cast<int32_t>(r));
    }
    if (ri->state().empty()) ri->set_state(load.ready ? "ready" : "waiting_for_workers");
    if (ri->kv_blocks_total() == 0) {
      ri->set_kv_blocks_total(static_cast<uint32_t>(load.kv_blocks_total));
    }
    ri->set_kv_blocks_used(static_cast<uint32_t>(load.kv_blocks_used));
    ri->set_running_sequences(static_cast<uint32_t>(load.running));
    ri->set_waiting_requests(static_cast<uint32_t>(load.waiting));
  }
  if (!options_.fill_cluster_info) info.set_ready_replicas(ready);
  return info;
}

grpc::Status GenerateService::GetModelInfo(grpc::ServerContext* /*context*/,
                                           const v1::GetModelInfoRequest* /*request*/,
                                           v1::ModelInfo* response) {
  *response = ModelInfo();
  return grpc::Status::OK;
}

}  // namespace tessera
