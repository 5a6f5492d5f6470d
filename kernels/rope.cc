// RoPE frequencies shared by every backend.
#include <cmath>

#include "kernels/backend.h"
#include "absl/strings/str_cat.h"

namespace tessera {

absl::Status CheckRopeParams(const RopeParams& p) {
  if (p.rope_dims <= 0 || p.rope_dims > p.head_dim || p.rope_dims % 2 ||
      (!p.freq_factors.empty() && p.freq_factors.size() != static_cast<size_t>(p.rope_dims / 2))) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad RoPE dims ", p.rope_dims, " for head_dim ", p.head_dim));
  }
  return absl::OkStatus();
}

std::vector<float> RopeFrequencies(const RopeParams& p) {
  constexpr double kPi = 3.14159265358979323846;
  std::vector<float> freqs(static_cast<size_t>(p.rope_dims / 2));
  for (int i = 0; i < p.rope_dims / 2; ++i) {
    double f = std::pow(static_cast<double>(p.freq_base), -2.0 * i / p.rope_dims);
    if (p.scaling_factor > 1.0f) {
      // Llama 3.1 scaling: long wavelengths are slowed by `factor`, short ones kept, and the
      // band between interpolated smoothly (Meta's published apply_scaling formula).
      const double wavelen = 2.0 * kPi / f;
      const double low_wavelen = p.original_context / static_cast<double>(p.low_freq_factor);
      const double high_wavelen = p.original_context / static_cast<double>(p.high_freq_factor);
      if (wavelen > low_wavelen) {
        f /= p.scaling_factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth = (p.original_context / wavelen - p.low_freq_factor) /
                              (p.high_freq_factor - p.low_freq_factor);
        f = (1.0 - smooth) * f / p.scaling_factor + smooth * f;
      }
    }
    if (!p.freq_factors.empty()) f /= p.freq_factors[static_cast<size_t>(i)];
    freqs[static_cast<size_t>(i)] = static_cast<float>(f);
  }
  return freqs;
}

}  // namespace tessera
