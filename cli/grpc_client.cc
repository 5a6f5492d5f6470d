#include "cli/grpc_client.h"

#include <chrono>

#include "absl/status/status.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"

namespace tessera::cli {
namespace {

double Since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

std::shared_ptr<grpc::Channel> DialTessera(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 20000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 0);
  args.SetMaxReceiveMessageSize(64 << 20);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

bool WaitConnected(grpc::Channel& channel, absl::Duration timeout) {
  return channel.WaitForConnected(absl::ToChronoTime(absl::Now() + timeout));
}

grpc::Status StreamGenerate(v1::Tessera::Stub& stub, const v1::GenerateRequest& request,
                            absl::Duration timeout,
                            const std::function<void(const v1::GenerateResponse&)>& on_message,
                            StreamTiming* timing) {
  StreamTiming t;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  const auto start = std::chrono::steady_clock::now();
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader =
      stub.Generate(&context, request);
  v1::GenerateResponse message;
  double previous_token_at = -1;
  while (reader->Read(&message)) {
    const double now = Since(start);
    if (message.tokens_size() > 0) {
      if (previous_token_at < 0) {
        t.ttft_s = now;
      } else {
        const double gap = (now - previous_token_at) / message.tokens_size();
        for (int i = 0; i < message.tokens_size(); ++i) t.gaps_s.push_back(gap);
      }
      previous_token_at = now;
      t.tokens += message.tokens_size();
    }
    if (message.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) t.finished = true;
    if (on_message) on_message(message);
    t.last = message;
  }
  grpc::Status status = reader->Finish();
  t.total_s = Since(start);
  if (timing != nullptr) *timing = std::move(t);
  return status;
}

std::string StatusCodeName(grpc::StatusCode code) {
  // gRPC's codes are the canonical codes absl names (same numbers, same names).
  std::string name = absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
  return name.empty() ? "CODE_" + std::to_string(static_cast<int>(code)) : name;
}

}  // namespace tessera::cli
