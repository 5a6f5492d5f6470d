// Starting a gRPC server the way every Tessera process does: the given services plus
// grpc.health.v1 (overall status SERVING once started, so Kubernetes probes and load balancers
// can ask) and server reflection (so grpcurl needs no copy of the .proto files).
//
// Thread-safety: the returned server is thread-safe; Shutdown() it before destroying services.
#ifndef TESSERA_WORKER_GRPC_SERVER_H_
#define TESSERA_WORKER_GRPC_SERVER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/server.h"
#include "grpcpp/impl/service_type.h"

namespace tessera {

struct GrpcServer {
  std::unique_ptr<grpc::Server> server;
  int port = 0;  // the port bound (useful with "host:0")
};

// Binds `address` ("0.0.0.0:50051", "127.0.0.1:0") without TLS and starts `services` (not
// owned; they must outlive the server). UNAVAILABLE naming the address if it cannot bind.
absl::StatusOr<GrpcServer> StartGrpcServer(const std::string& address,
                                           const std::vector<grpc::Service*>& services);

}  // namespace tessera

#endif  // TESSERA_WORKER_GRPC_SERVER_H_
