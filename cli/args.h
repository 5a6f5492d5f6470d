// A small command-line parser for subcommands: each subcommand declares its options (long
// name, optional short name, help, a pointer to the value) and positional arguments, then
// Parse() fills them or returns an error naming the bad argument. `--help` prints the usage.
#ifndef TESSERA_CLI_ARGS_H_
#define TESSERA_CLI_ARGS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace tessera::cli {

// --kv-type: "auto" (nullopt: the backend's preference), "f16" or "f32"; INVALID_ARGUMENT
// naming the value otherwise.
absl::StatusOr<std::optional<KvType>> ParseKvType(const std::string& name);

class Args {
 public:
  Args(std::string command, std::string summary)
      : command_(std::move(command)), summary_(std::move(summary)) {}

  void Flag(const char* name, const char* short_name, bool* value, const char* help);
  void Option(const char* name, const char* short_name, std::string* value, const char* help);
  void Option(const char* name, const char* short_name, int64_t* value, const char* help);
  void Option(const char* name, const char* short_name, double* value, const char* help);
  // Repeatable string option (each occurrence appends).
  void Option(const char* name, const char* short_name, std::vector<std::string>* value,
              const char* help);
  void Positional(const char* name, std::string* value, const char* help, bool required);

  // OK, or InvalidArgument naming the argument. Sets help_requested() for --help / -h.
  absl::Status Parse(int argc, char** argv);
  bool help_requested() const { return help_; }
  bool seen(const char* name) const;  // whether an option was given
  std::string Usage() const;

 private:
  enum class Kind { kFlag, kString, kInt, kDouble, kStrings };
  struct Opt {
    std::string name, short_name, help;
    Kind kind;
    void* value;
    bool seen = false;
  };
  struct Pos {
    std::string name, help;
    std::string* value;
    bool required;
  };
  Opt* Find(const std::string& arg);

  std::string command_, summary_;
  std::vector<Opt> opts_;
  std::vector<Pos> positional_;
  bool help_ = false;
};

// Runs Parse and handles the usual outcomes: prints usage on --help (returns 0 via *exit_code)
// or the error plus usage (exit code 2). Returns true when the command should proceed.
bool ParseOrExit(Args& args, int argc, char** argv, int* exit_code);

}  // namespace tessera::cli

#endif  // TESSERA_CLI_ARGS_H_
