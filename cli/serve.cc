// tessera serve: a whole cluster on this machine. Runs the coordinator in this process and
// TP x PP x R `tessera worker` child processes that attach to it over loopback, prints one
// "ready: ..." line on stdout once every replica group is ready, and serves until SIGTERM or
// SIGINT; then the workers get Shutdown, then SIGTERM, then (after 10 s) SIGKILL, and every
// child is reaped before the process exits.
//
// Metrics (--metrics-port P): the coordinator exports on P and worker i on P + 1 + i.
//
// Children: fork + exec of /proc/self/exe (this very binary), with PR_SET_PDEATHSIG so that they
// die with this process even if it is killed with SIGKILL. Their stdout and stderr come back
// through a pipe and are copied to this process's stderr with a "worker N: " prefix, so stdout
// carries only serve's own lines. A child that exits is reported on stderr; the coordinator
// stays up, and the group forms again when a worker (any `tessera worker --coordinator ADDR`)
// registers in its place. When every child has exited, serve exits with status 1.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "cli/coordinator_process.h"

namespace tessera::cli {
namespace {

struct Child {
  int index = 0;
  pid_t pid = -1;
  bool running = false;
  std::thread output;  // copies the child's output to stderr
};

// Copies lines from `fd` to stderr, each prefixed with `prefix`, until EOF.
void CopyOutput(int fd, std::string prefix) {
  std::string pending;
  char buf[4096];
  while (true) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    pending.append(buf, static_cast<size_t>(n));
    size_t nl;
    while ((nl = pending.find('\n')) != std::string::npos) {
      const std::string line = prefix + pending.substr(0, nl + 1);
      std::fwrite(line.data(), 1, line.size(), stderr);
      pending.erase(0, nl + 1);
    }
  }
  if (!pending.empty()) {
    const std::string line = prefix + pending + "\n";
    std::fwrite(line.data(), 1, line.size(), stderr);
  }
  ::close(fd);
}

// Starts `argv` (argv[0] is only the name; the binary is /proc/self/exe) as a child whose output
// goes to a pipe. Everything the child runs between fork and exec is async-signal-safe.
absl::Status Spawn(const std::vector<std::string>& args, Child* child) {
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe2: ", std::strerror(errno)));
  }
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    return absl::ResourceExhaustedError(absl::StrCat("fork: ", std::strerror(errno)));
  }
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);  // the parent blocks SIGTERM/SIGINT/SIGCHLD
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(1);  // the parent died before prctl took effect
    ::dup2(fds[1], STDOUT_FILENO);
    ::dup2(fds[1], STDERR_FILENO);
    ::execv("/proc/self/exe", argv.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  child->pid = pid;
  child->running = true;
  child->output = std::thread(CopyOutput, fds[0], absl::StrCat("worker ", child->index, ": "));
  return absl::OkStatus();
}

std::string DescribeExit(int status) {
  if (WIFEXITED(status)) return absl::StrCat("exited with status ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return absl::StrCat("was killed by signal ", WTERMSIG(status), " (",
                        strsignal(WTERMSIG(status)), ")");
  }
  return absl::StrCat("ended with wait status ", status);
}

// Reaps every child that has exited (without blocking); reports each on stderr unless `quiet`.
void Reap(std::vector<Child>& children, bool quiet) {
  while (true) {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid <= 0) return;
    for (Child& c : children) {
      if (c.pid != pid) continue;
      c.running = false;
      if (!quiet) {
        std::fprintf(stderr, "serve: worker %d (pid %d) %s\n", c.index, static_cast<int>(pid),
                     DescribeExit(status).c_str());
      }
    }
  }
}

int RunningChildren(const std::vector<Child>& children) {
  return static_cast<int>(
      std::count_if(children.begin(), children.end(), [](const Child& c) { return c.running; }));
}

// Ends every child: SIGTERM now, SIGKILL to those still alive after `grace`; reaps them all.
void StopChildren(std::vector<Child>& children, absl::Duration grace) {
  for (Child& c : children) {
    if (c.running) ::kill(c.pid, SIGTERM);
  }
  const absl::Time give_up = absl::Now() + grace;
  while (RunningChildren(children) > 0 && absl::Now() < give_up) {
    WaitForSignal(absl::Milliseconds(50));  // SIGCHLD wakes it early
    Reap(children, /*quiet=*/true);
  }
  for (Child& c : children) {
    if (!c.running) continue;
    std::fprintf(stderr, "serve: worker %d (pid %d) did not stop within %s; killing it\n", c.index,
                 static_cast<int>(c.pid), absl::FormatDuration(grace).c_str());
    ::kill(c.pid, SIGKILL);
    ::waitpid(c.pid, nullptr, 0);
    c.running = false;
  }
  Reap(children, /*quiet=*/true);
  for (Child& c : children) {
    if (c.output.joinable()) c.output.join();
  }
}

}  // namespace

int ServeMain(int argc, char** argv) {
  BlockTerminationSignals(/*with_children=*/true);
  CoordinatorFlags flags;
  flags.host = "127.0.0.1";
  int64_t threads = 0;
  std::string device = "cpu";
  Args args("serve",
            "Runs a local cluster: the coordinator and TP x PP x R worker processes on loopback. "
            "Prints 'ready: ...' once every replica group is ready; stops on SIGTERM/SIGINT.");
  flags.Declare(args);
  args.Option("device", nullptr, &device,
              "workers' device: cpu, cuda (worker i on GPU i) or cuda:N for all (default cpu)");
  args.Option("threads", "t", &threads,
              "CPU threads per worker (default: the machine's cores / workers, at least 1)");
  int code = 0;
  if (!ParseOrExit(args, argc, argv, &code)) return code;
  const int64_t n_workers = flags.tp * flags.pp * flags.replicas;
  if (threads < 0 || threads > 1024) {
    std::fprintf(stderr, "tessera serve: --threads %lld is out of range [1, 1024]\n",
                 static_cast<long long>(threads));
    return 2;
  }
  if (flags.tp < 1 || flags.pp < 1 || flags.replicas < 1 || n_workers > 256) {
    std::fprintf(stderr, "tessera serve: TP x PP x replicas must be 1..256 workers, got %lld\n",
                 static_cast<long long>(n_workers));
    return 2;
  }
  if (flags.metrics_port > 0 && flags.metrics_port + n_workers > 65535) {
    std::fprintf(stderr,
                 "tessera serve: --metrics-port %lld leaves no room for the %lld workers' "
                 "ports after it\n",
                 static_cast<long long>(flags.metrics_port), static_cast<long long>(n_workers));
    return 2;
  }
  if (threads == 0) {
    threads = std::max<int64_t>(1, std::thread::hardware_concurrency() / n_workers);
  }

  absl::StatusOr<std::unique_ptr<CoordinatorProcess>> p = CoordinatorProcess::Start(flags);
  if (!p.ok()) {
    std::fprintf(stderr, "tessera serve: %s\n", std::string(p.status().message()).c_str());
    return 1;
  }
  CoordinatorProcess& c = **p;
  // Workers dial the coordinator over loopback unless it listens on one specific address.
  const std::string dial = (flags.host == "0.0.0.0" || flags.host == "::" || flags.host == "[::]")
                               ? absl::StrCat("127.0.0.1:", c.port())
                               : absl::StrCat(flags.host, ":", c.port());
  std::fprintf(stderr,
               "serve: coordinator %s on %s; starting %lld workers with %lld threads each\n",
               c.Describe().c_str(), c.address().c_str(), static_cast<long long>(n_workers),
               static_cast<long long>(threads));

  const bool loopback = dial.rfind("127.", 0) == 0 || dial.rfind("localhost:", 0) == 0;
  std::vector<Child> children(n_workers);
  for (int i = 0; i < n_workers; ++i) {
    children[i].index = i;
    std::vector<std::string> worker_args = {"tessera", "worker", "--coordinator",
                                            dial,      "-t",     std::to_string(threads)};
    if (loopback) {
      worker_args.push_back("--listen");
      worker_args.push_back("127.0.0.1:0");
    }
    if (device != "cpu") {
      worker_args.push_back("--device");
      worker_args.push_back(device == "cuda" ? absl::StrCat("cuda:", i) : device);
    }
    // Metrics: the coordinator on P, worker i on P + 1 + i (0: each picks a free port).
    if (flags.metrics_port >= 0) {
      worker_args.push_back("--metrics-port");
      const int64_t port = flags.metrics_port > 0 ? flags.metrics_port + 1 + i : 0;
      worker_args.push_back(std::to_string(port));
    }
    if (absl::Status s = Spawn(worker_args, &children[i]); !s.ok()) {
      std::fprintf(stderr, "tessera serve: cannot start worker %d: %s\n", i,
                   std::string(s.message()).c_str());
      c.Shutdown("serve failed to start its workers");
      StopChildren(children, absl::Seconds(10));
      return 1;
    }
  }

  bool all_ready = false;
  int sig = 0;
  int exit_code = 0;
  while (true) {
    sig = WaitForSignal(absl::Milliseconds(100));
    if (sig == SIGTERM || sig == SIGINT) break;
    Reap(children, /*quiet=*/false);
    const bool ready = c.ready_replicas() == c.replicas();
    if (ready && !all_ready) {
      std::printf("ready: %s, listening on %s\n", c.Describe().c_str(), c.address().c_str());
      std::fflush(stdout);
    } else if (!ready && all_ready) {
      std::fprintf(stderr, "serve: not ready any more (%s)\n", c.ReplicaStates().c_str());
    }
    all_ready = ready;
    if (RunningChildren(children) == 0) {
      std::fprintf(stderr, "serve: every worker has exited; stopping\n");
      exit_code = 1;
      break;
    }
  }
  if (sig == SIGTERM || sig == SIGINT) {
    std::fprintf(stderr, "serve: %s, shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
  }
  c.Shutdown(sig == SIGINT ? "serve interrupted" : "serve stopped");
  StopChildren(children, absl::Seconds(10));
  return exit_code;
}

}  // namespace tessera::cli
