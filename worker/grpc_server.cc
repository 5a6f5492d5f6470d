#include "worker/grpc_server.h"

#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"

namespace tessera {

absl::StatusOr<GrpcServer> StartGrpcServer(const std::string& address,
                                           const std::vector<grpc::Service*>& services) {
  // Both must be switched on before the builder is created.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  GrpcServer out;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &out.port);
  // Generate streams and worker Attach streams are long-lived; let many run at once.
  builder.SetMaxReceiveMessageSize(64 << 20);
  // Keepalive: a peer whose host vanishes without closing the connection (power loss, network
  // partition) fails its streams within ~30 s instead of holding them open. Clients (workers
  // attach with 20 s pings) may ping as often as every 10 s without being told to calm down.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 20000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  for (grpc::Service* s : services) builder.RegisterService(s);
  out.server = builder.BuildAndStart();
  if (out.server == nullptr || out.port == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot start a gRPC server on ", address,
                     " (address in use, or not an address of this host?)"));
  }
  out.server->GetHealthCheckService()->SetServingStatus(true);
  return out;
}

}  // namespace tessera
