// Subcommands of the `tessera` binary. Each lives in its own file and receives the arguments
// after its name (argv[0] is the subcommand). Returns the process exit code.
#ifndef TESSERA_CLI_COMMANDS_H_
#define TESSERA_CLI_COMMANDS_H_

#include <string>

namespace tessera::cli {

int InspectMain(int argc, char** argv);   // tessera inspect MODEL
int BenchMain(int argc, char** argv);     // tessera bench
int GenerateMain(int argc, char** argv);  // tessera generate
int PlanMain(int argc, char** argv);      // tessera plan
int CoordinatorMain(int argc, char** argv);  // tessera coordinator
int ServeMain(int argc, char** argv);        // tessera serve
int LoadtestMain(int argc, char** argv);     // tessera loadtest
int WorkerMain(int argc, char** argv);       // tessera worker

// The default model's path: $TESSERA_MODEL_DIR (or ~/.cache/tessera/models) + its file name,
// where scripts/fetch-model puts it.
std::string DefaultModelPath();

}  // namespace tessera::cli

#endif  // TESSERA_CLI_COMMANDS_H_
