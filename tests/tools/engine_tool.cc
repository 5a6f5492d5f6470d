// engine_tool: runs the engine on token ids and writes the logits, for the Python tests that
// compare the forward pass with an independent numpy reference.
//
//   engine_tool MODEL.gguf OUT.f32 IDS [--chunk N] [--threads T] [--exact 1]
//               [--kv-type f16|f32] (default: the backend's preference)
//
// IDS is a comma-separated list of token ids; the prompt is run in chunks of N tokens (default:
// all at once) and OUT.f32 receives the logits after every token of the prompt, (n, vocab)
// float32, so both prefill and the per-position results are checked.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "kernels/cpu/cpu_backend.h"
#include "model/engine.h"
#include "model/gguf.h"
#include "model/weights.h"

namespace {

int Fail(const std::string& msg) {
  std::fprintf(stderr, "engine_tool: %s\n", msg.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    return Fail(
        "usage: engine_tool MODEL.gguf OUT.f32 IDS [--chunk N] [--threads T] [--exact 1] "
        "[--kv-type f16|f32]");
  }
  tessera::EngineOptions options;
  int64_t chunk = 0;
  int threads = 2;
  bool exact = false;
  for (int i = 4; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--chunk")) chunk = std::atoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--exact")) exact = std::atoi(argv[i + 1]) != 0;
    else if (!std::strcmp(argv[i], "--threads")) threads = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--kv-type") && !std::strcmp(argv[i + 1], "f16"))
      options.kv_type = tessera::KvType::kF16;
    else if (!std::strcmp(argv[i], "--kv-type") && !std::strcmp(argv[i + 1], "f32"))
      options.kv_type = tessera::KvType::kF32;
    else return Fail(std::string("unknown option ") + argv[i]);
  }
  std::vector<int32_t> ids;
  for (absl::string_view part : absl::StrSplit(argv[3], ',')) {
    int32_t id;
    if (!absl::SimpleAtoi(part, &id)) return Fail("bad token id '" + std::string(part) + "'");
    ids.push_back(id);
  }
  auto file = tessera::GgufFile::Open(argv[1]);
  if (!file.ok()) return Fail(file.status().ToString());
  auto weights = tessera::GgufWeights::Create(file->get());
  if (!weights.ok()) return Fail(weights.status().ToString());
  tessera::CpuBackend backend(threads, exact);
  auto engine = tessera::Engine::Create(**weights, tessera::ModelShard::Whole((*weights)->config()),
                                        &backend, nullptr, options);
  if (!engine.ok()) return Fail(engine.status().ToString());
  const int64_t n_vocab = (*engine)->config().n_vocab;
  if (chunk <= 0) chunk = static_cast<int64_t>(ids.size());

  // One position at a time would hide prefill bugs; chunks run as one step each, and the
  // logits after every position come from re-running that position's prefix as its own
  // sequence (ids 1..n), so each row is a genuine "last token" result.
  std::vector<float> all;
  std::vector<float> logits;
  for (size_t end = 1; end <= ids.size(); ++end) {
    const tessera::SeqId seq = end;
    for (size_t pos = 0; pos < end; pos += static_cast<size_t>(chunk)) {
      const size_t stop = std::min(end, pos + static_cast<size_t>(chunk));
      tessera::StepInput in;
      in.id = seq;
      in.tokens.assign(ids.begin() + static_cast<std::ptrdiff_t>(pos),
                       ids.begin() + static_cast<std::ptrdiff_t>(stop));
      in.want_logits = stop == end;
      absl::Status s = (*engine)->Step({in}, &logits);
      if (!s.ok()) return Fail(s.ToString());
    }
    all.insert(all.end(), logits.begin(), logits.begin() + n_vocab);
    (*engine)->Free(seq);
  }
  FILE* out = std::fopen(argv[2], "wb");
  if (out == nullptr) return Fail(std::string("cannot write ") + argv[2]);
  std::fwrite(all.data(), sizeof(float), all.size(), out);
  std::fclose(out);
  return 0;
}
