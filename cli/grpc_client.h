// Client helpers for the public API (generate.proto) shared by `tessera generate --server` and
// `tessera loadtest`: dialing a coordinator, and running one streaming Generate while timing
// what a user sees (time to first token and the gaps between tokens, measured on this side of
// the network, as vLLM's benchmark_serving measures them).
//
// Thread-safety: StreamGenerate may run on many threads at once over one channel.
#ifndef TESSERA_CLI_GRPC_CLIENT_H_
#define TESSERA_CLI_GRPC_CLIENT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "grpcpp/support/status.h"
#include "tessera/v1/generate.grpc.pb.h"

namespace tessera::cli {

// An insecure channel to "host:port" (no TLS, like the servers), with keepalive so a dead
// server is noticed during a long stream.
std::shared_ptr<grpc::Channel> DialTessera(const std::string& address);

// Waits until the channel is connected (true) or `timeout` passes.
bool WaitConnected(grpc::Channel& channel, absl::Duration timeout);

struct StreamTiming {
  double ttft_s = 0;           // request sent -> first message carrying a token
  double total_s = 0;          // request sent -> end of the stream
  std::vector<double> gaps_s;  // between token-carrying messages, per token of the later one
  int64_t tokens = 0;          // tokens received
  v1::GenerateResponse last;   // the final message (finish_reason, usage), if any arrived
  bool finished = false;       // a message with a finish reason arrived
};

// Runs `request` on `stub` with a deadline of `timeout` from now, calling `on_message` for each
// response as it arrives (may be null). Returns the call's final status.
grpc::Status StreamGenerate(v1::Tessera::Stub& stub, const v1::GenerateRequest& request,
                            absl::Duration timeout,
                            const std::function<void(const v1::GenerateResponse&)>& on_message,
                            StreamTiming* timing);

// "INVALID_ARGUMENT", "UNAVAILABLE", ...
std::string StatusCodeName(grpc::StatusCode code);

}  // namespace tessera::cli

#endif  // TESSERA_CLI_GRPC_CLIENT_H_
