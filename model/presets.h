// Named model shapes (gpt-fast's named configs): the real hyper-parameters of well-known
// llama-architecture models, used to build synthetic weights for benchmarks (`tessera bench
// --synthetic llama3-8b`) and to plan layouts without the file (`tessera plan --arch`).
// Values are from each model's published config.json.
#ifndef TESSERA_MODEL_PRESETS_H_
#define TESSERA_MODEL_PRESETS_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "model/config.h"

namespace tessera {

// The config of a named shape ("llama3-8b"), or an error listing the known names.
absl::StatusOr<ModelConfig> PresetConfig(std::string_view name);

// Every preset name, in table order.
std::vector<std::string> PresetNames();

}  // namespace tessera

#endif  // TESSERA_MODEL_PRESETS_H_
