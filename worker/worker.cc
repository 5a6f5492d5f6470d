#include "worker/worker.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <string>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "model/weights.h"
#include "tessera/v1/worker.grpc.pb.h"
#include "worker/backend_factory.h"
#include "worker/tcp_socket.h"
#include "worker/worker_shard.h"

namespace tessera {
namespace {

// Named in the health service once the worker's shard is loaded (the overall
// status is SERVING from the start: the process is alive).
constexpr char kHealthServiceName[] = "tessera.v1.Worker";

std::string Hostname() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == '\0') return "localhost";
  return buf;
}

bool IsLoopbackHost(const std::string &host) {
  return host == "localhost" || host == "::1" || absl::StartsWith(host, "127.");
}

std::string HostPortString(const std::string &host, int port) {
  if (host.find(':') != std::string::npos) return absl::StrCat("[", host, "]:", port);
  return absl::StrCat(host, ":", port);
}

// Host memory: total, and available (/proc/meminfo MemAvailable, else free
// pages).
void HostMemory(uint64_t *total, uint64_t *available) {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
  const long avail = ::sysconf(_SC_AVPHYS_PAGES);
  *total = pages > 0 && page > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) : 0;
  *available =
      avail > 0 && page > 0 ? static_cast<uint64_t>(avail) * static_cast<uint64_t>(page) : 0;
  std::ifstream meminfo("/proc/meminfo");
  std::string line;
  while (std::getline(meminfo, line)) {
    if (!absl::StartsWith(line, "MemAvailable:")) continue;
    std::vector<std::string> parts = absl::StrSplit(line, ' ', absl::SkipEmpty());
    uint64_t kib = 0;
    if (parts.size() >= 2 && absl::SimpleAtoi(parts[1], &kib)) *available = kib * 1024;
    break;
  }
}

// "size:mtime" of a file, the size alone, or "" when it cannot be read.
std::string FileSize(const std::string &path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return "";
  return absl::StrCat(static_cast<int64_t>(st.st_size));
}

v1::WorkerMessage FailedMessage(uint64_t assignment_id, const absl::Status &s) {
  v1::WorkerMessage m;
  v1::Failed *f = m.mutable_failed();
  f->set_assignment_id(assignment_id);
  f->set_code(static_cast<int32_t>(s.code()));
  f->set_message(std::string(s.message()));
  return m;
}

std::chrono::system_clock::time_point ToChrono(absl::Time t) {
  return std::chrono::system_clock::from_time_t(0) +
         std::chrono::microseconds(absl::ToUnixMicros(t));
}

}  // namespace

struct Worker::Session {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Coordinator::Stub> stub;
};

absl::StatusOr<std::unique_ptr<Worker>> Worker::Create(WorkerOptions o) {
  auto bad = [](const std::string &what) {
    return absl::InvalidArgumentError(absl::StrCat("worker option ", what));
  };
  if (o.coordinator.empty()) return bad("coordinator is empty: give the coordinator's HOST:PORT");
  absl::StatusOr<HostPort> coordinator = ParseHostPort(o.coordinator);
  if (!coordinator.ok()) {
    return bad(absl::StrCat("coordinator: ", coordinator.status().message()));
  }
  if (o.threads < 1) return bad(absl::StrCat("threads must be at least 1, got ", o.threads));
  if (o.kv_cache_bytes < 1) {
    return bad(absl::StrCat("kv_cache_bytes must be positive, got ", o.kv_cache_bytes));
  }
  if (o.connect_timeout <= absl::ZeroDuration() || o.reconnect_timeout <= absl::ZeroDuration()) {
    return bad(absl::StrCat("connect_timeout (", absl::FormatDuration(o.connect_timeout),
                            ") and reconnect_timeout (", absl::FormatDuration(o.reconnect_timeout),
                            ") must be positive"));
  }
  // The device must open now, not at the first Connect; its name goes into
  // Register.
  absl::StatusOr<std::unique_ptr<Backend>> backend = CreateBackend(o.device, o.threads);
  if (!backend.ok()) return backend.status();
  std::string device_name = (*backend)->name();
  backend->reset();

  if (o.id.empty()) {
    static std::atomic<int> workers_in_process{0};
    const int n = workers_in_process.fetch_add(1);
    o.id = absl::StrCat(Hostname(), ":", ::getpid());
    if (n > 0) absl::StrAppend(&o.id, ":", n + 1);
  }
  if (o.advertise_host.empty()) {
    o.advertise_host = IsLoopbackHost(coordinator->host) ? coordinator->host : Hostname();
  }
  absl::StatusOr<GrpcServer> server = StartGrpcServer(o.listen, {});
  if (!server.ok()) return server.status();
  server->server->GetHealthCheckService()->SetServingStatus(kHealthServiceName, false);
  std::string address = HostPortString(o.advertise_host, server->port);
  return std::unique_ptr<Worker>(
      new Worker(std::move(o), *std::move(server), std::move(address), std::move(device_name)));
}

Worker::Worker(WorkerOptions options, GrpcServer server, std::string address,
               std::string device_name)
    : options_(std::move(options)),
      server_(std::move(server)),
      address_(std::move(address)),
      device_name_(std::move(device_name)) {}

Worker::~Worker() {
  Stop();
  shard_.reset();
  model_.reset();
  if (server_.server) server_.server->Shutdown(std::chrono::system_clock::now());
}

void Worker::Stop() {
  absl::MutexLock lock(&mu_);
  stop_ = true;
  if (context_ != nullptr) context_->TryCancel();
}

bool Worker::stopped() const {
  absl::MutexLock lock(&mu_);
  return stop_;
}

bool Worker::Backoff(absl::Duration d) {
  absl::MutexLock lock(&mu_);
  mu_.AwaitWithTimeout(absl::Condition(&stop_), d);
  return !stop_;
}

void Worker::DropShard() {
  if (shard_ == nullptr) return;
  shard_.reset();
  server_.server->GetHealthCheckService()->SetServingStatus(kHealthServiceName, false);
}

absl::Status Worker::Run() {
  grpc::ChannelArguments args;
  // Keepalive: a coordinator that vanishes without closing the connection is
  // noticed.
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 20000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  // Redial quickly while the coordinator is (re)starting, with this channel's
  // own backoff state (not one shared with other channels of the process).
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetMaxReceiveMessageSize(64 << 20);
  Session session;
  session.channel =
      grpc::CreateCustomChannel(options_.coordinator, grpc::InsecureChannelCredentials(), args);
  session.stub = v1::Coordinator::NewStub(session.channel);

  absl::Time deadline = absl::Now() + options_.connect_timeout;
  absl::Duration timeout = options_.connect_timeout;
  bool reconnecting = false;
  absl::Duration backoff = absl::Milliseconds(50);
  while (true) {
    bool registered = false;
    absl::Status error;
    const Outcome outcome = Attach(session, deadline, &registered, &error);
    DropShard();
    switch (outcome) {
      case Outcome::kShutdown:
      case Outcome::kStopped:
        return absl::OkStatus();
      case Outcome::kRefused:
        // Our own earlier stream may still be registered until the coordinator
        // notices it broke: retry that one refusal while reconnecting.
        if (!reconnecting || error.code() != absl::StatusCode::kAlreadyExists) return error;
        break;
      case Outcome::kBroken:
        if (registered) {
          reconnecting = true;
          timeout = options_.reconnect_timeout;
          deadline = absl::Now() + timeout;
          backoff = absl::Milliseconds(50);
        }
        break;
    }
    const absl::Time now = absl::Now();
    if (now >= deadline) {
      return absl::UnavailableError(absl::StrCat(
          "worker ", options_.id, ": could not ", reconnecting ? "re-register with" : "reach",
          " the coordinator at ", options_.coordinator, " within ", absl::FormatDuration(timeout),
          ": ", error.message()));
    }
    if (!Backoff(std::min(backoff, deadline - now))) return absl::OkStatus();
    backoff = std::min(backoff * 2, absl::Seconds(2));
  }
}

Worker::Outcome Worker::Attach(Session &session, absl::Time dial_deadline, bool *registered,
                               absl::Status *error) {
  // Dial in short slices so Stop() is noticed.
  while (true) {
    if (stopped()) return Outcome::kStopped;
    const absl::Time now = absl::Now();
    if (now >= dial_deadline) {
      *error = absl::UnavailableError("no connection could be made");
      return Outcome::kBroken;
    }
    const absl::Time slice = std::min(dial_deadline, now + absl::Milliseconds(250));
    if (session.channel->WaitForConnected(ToChrono(slice))) break;
  }

  grpc::ClientContext context;
  {
    absl::MutexLock lock(&mu_);
    if (stop_) return Outcome::kStopped;
    context_ = &context;
  }
  struct Detach {
    Worker *w;
    ~Detach() {
      absl::MutexLock lock(&w->mu_);
      w->context_ = nullptr;
    }
  } detach{this};
  std::unique_ptr<grpc::ClientReaderWriter<v1::WorkerMessage, v1::CoordinatorMessage>> stream =
      session.stub->Attach(&context);

  auto broken = [&](const char *when) {
    const grpc::Status st = stream->Finish();
    if (stopped()) return Outcome::kStopped;
    *error = absl::UnavailableError(absl::StrCat(
        "the Attach stream ", when, " (",
        st.error_message().empty() ? std::string("no status") : st.error_message(), ")"));
    return Outcome::kBroken;
  };

  v1::WorkerMessage reg_msg;
  v1::Register *reg = reg_msg.mutable_register_();
  reg->set_worker_id(options_.id);
  reg->set_address(address_);
  reg->set_device(device_name_);
  uint64_t total = 0, available = 0;
  HostMemory(&total, &available);
  reg->set_memory_total_bytes(total);
  reg->set_memory_free_bytes(available);
  reg->set_threads(static_cast<uint32_t>(options_.threads));
  reg->set_version(kWorkerProtocolVersion);
  if (!stream->Write(reg_msg)) return broken("closed before Register was sent");
  *registered = true;

  v1::CoordinatorMessage msg;
  while (stream->Read(&msg)) {
    v1::WorkerMessage reply;
    bool has_reply = true;
    switch (msg.msg_case()) {
      case v1::CoordinatorMessage::kAssignment:
        reply = OnAssignment(msg.assignment());
        break;
      case v1::CoordinatorMessage::kConnect:
        reply = OnConnect(msg.connect());
        break;
      case v1::CoordinatorMessage::kStep:
        reply = OnStep(msg.step());
        break;
      case v1::CoordinatorMessage::kReset:
        DropShard();
        has_reply = false;
        break;
      case v1::CoordinatorMessage::kShutdown:
        DropShard();
        stream->WritesDone();
        stream->Finish();
        return Outcome::kShutdown;
      case v1::CoordinatorMessage::kRefused: {
        const v1::Failed &f = msg.refused();
        *error = absl::Status(static_cast<absl::StatusCode>(f.code()),
                              absl::StrCat("the coordinator at ", options_.coordinator,
                                           " refused worker ", options_.id, ": ", f.message()));
        if (error->ok()) *error = absl::UnknownError(f.message());
        stream->Finish();
        return Outcome::kRefused;
      }
      case v1::CoordinatorMessage::MSG_NOT_SET:
        has_reply = false;
        break;
    }
    if (has_reply && !stream->Write(reply)) break;
  }
  return broken("ended");
}

absl::Status Worker::OpenModel(const std::string &path, const std::string &model_sha) {
  if (path.empty()) {
    return absl::InvalidArgumentError(
        "the assignment names no model file and this worker has no --model");
  }
  // The coordinator's identity is "size:mtime" of its copy; another machine's
  // copy has its own mtime, so only the size is compared.
  if (!model_sha.empty()) {
    const std::string coordinator_size = model_sha.substr(0, model_sha.find(':'));
    const std::string own_size = FileSize(path);
    if (!own_size.empty() && own_size != coordinator_size) {
      return absl::FailedPreconditionError(
          absl::StrCat(path, " has ", own_size, " bytes but the coordinator's model has ",
                       coordinator_size, ": workers need the same file as the coordinator"));
    }
  }
  if (model_ != nullptr && path == model_path_) return absl::OkStatus();
  model_.reset();
  model_path_.clear();
  absl::StatusOr<OpenedModel> opened = OpenGgufModel(path);
  if (!opened.ok()) return opened.status();
  model_ = std::make_unique<OpenedModel>(*std::move(opened));
  model_path_ = path;
  return absl::OkStatus();
}

v1::WorkerMessage Worker::OnAssignment(const v1::Assignment &a) {
  DropShard();  // a new assignment replaces whatever this worker held
  const std::string path = options_.model_path.empty() ? a.model_path() : options_.model_path;
  absl::Status s = OpenModel(path, a.model_sha());
  if (!s.ok()) {
    return FailedMessage(
        a.assignment_id(),
        absl::Status(s.code(), absl::StrCat("worker ", options_.id, ": ", s.message())));
  }
  ShardContext ctx;
  ctx.worker_id = options_.id;
  ctx.device = options_.device;
  ctx.threads = options_.threads;
  ctx.default_kv_cache_bytes = options_.kv_cache_bytes;
  ctx.advertise_host = options_.advertise_host;
  // Loopback peers: listen on loopback only. Otherwise on every interface,
  // since the name the peers use may resolve to another address here (e.g.
  // 127.0.1.1 in /etc/hosts).
  ctx.bind_host = IsLoopbackHost(options_.advertise_host) ? options_.advertise_host : "0.0.0.0";
  if (ctx.bind_host == "localhost") ctx.bind_host = "127.0.0.1";
  ctx.metrics = options_.metrics;
  absl::StatusOr<std::unique_ptr<AssignedShard>> shard =
      AssignedShard::Prepare(a, model_->weights.get(), ctx);
  if (!shard.ok()) {
    return FailedMessage(a.assignment_id(), absl::Status(shard.status().code(),
                                                         absl::StrCat("worker ", options_.id, ": ",
                                                                      shard.status().message())));
  }
  shard_ = *std::move(shard);
  if (options_.metrics != nullptr) {
    options_.metrics->set_labels({options_.id, absl::StrCat(a.replica()), absl::StrCat(a.rank()),
                                  absl::StrCat(a.pp_stage()), options_.device});
  }
  v1::WorkerMessage reply;
  *reply.mutable_prepared() = shard_->prepared();
  return reply;
}

v1::WorkerMessage Worker::OnConnect(const v1::Connect &c) {
  if (shard_ == nullptr || shard_->assignment().assignment_id() != c.assignment_id()) {
    return FailedMessage(
        c.assignment_id(),
        absl::FailedPreconditionError(
            absl::StrCat("worker ", options_.id, ": Connect for assignment ", c.assignment_id(),
                         shard_ == nullptr ? std::string(" but it holds no assignment")
                                           : absl::StrCat(" but it holds assignment ",
                                                          shard_->assignment().assignment_id()))));
  }
  absl::StatusOr<v1::Ready> ready = shard_->Connect(c);
  if (!ready.ok()) {
    DropShard();
    return FailedMessage(c.assignment_id(), ready.status());
  }
  server_.server->GetHealthCheckService()->SetServingStatus(kHealthServiceName, true);
  v1::WorkerMessage reply;
  *reply.mutable_ready() = *std::move(ready);
  return reply;
}

v1::WorkerMessage Worker::OnStep(const v1::Step &s) {
  v1::WorkerMessage reply;
  absl::StatusOr<v1::StepResult> result =
      shard_ != nullptr
          ? shard_->Step(s)
          : absl::FailedPreconditionError(absl::StrCat(
                "worker ", options_.id, ": step ", s.step_id(), " but it holds no ready shard"));
  if (result.ok()) {
    *reply.mutable_step_result() = *std::move(result);
    return reply;
  }
  // The group is broken (its ranks may no longer agree): drop it now, so peers
  // waiting in a collective on this rank fail at once instead of at their
  // timeout.
  DropShard();
  v1::StepResult *r = reply.mutable_step_result();
  r->set_step_id(s.step_id());
  r->set_code(static_cast<int32_t>(result.status().code()));
  r->set_message(std::string(result.status().message()));
  return reply;
}

}  // namespace tessera
