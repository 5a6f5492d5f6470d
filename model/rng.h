// A small, fully specified pseudo-random generator for sampling: xoshiro256** (Blackman and
// Vigna, "Scrambled linear pseudorandom number generators", 2018), seeded by expanding the
// 64-bit seed with splitmix64 as its authors recommend.
//
// Why our own: std::uniform_real_distribution and friends are implementation-defined, so the
// same seed could give different tokens with another standard library. These few lines of
// integer arithmetic give the same stream on every platform and compiler.
//
// Thread-safety: none; one generator per sequence.
#ifndef TESSERA_MODEL_RNG_H_
#define TESSERA_MODEL_RNG_H_

#include <cstdint>

namespace tessera {

// splitmix64 (Steele, Lea, Flood 2014): state advances by the golden-ratio increment, output is
// the state through a 64-bit finalizer. Used here only to seed xoshiro256**.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    state_ += 0x9e3779b97f4a7c15ULL;
    uint64_t z = state_;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

 private:
  uint64_t state_;
};

class Xoshiro256StarStar {
 public:
  // The four state words are the first four splitmix64 outputs of `seed` (never all zero:
  // splitmix64 is a bijection of its counter, and four consecutive outputs cannot all be 0).
  explicit Xoshiro256StarStar(uint64_t seed) {
    SplitMix64 init(seed);
    for (uint64_t& word : s_) word = init.Next();
  }

  uint64_t Next() {
    const uint64_t result = Rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = Rotl(s_[3], 45);
    return result;
  }

  // Uniform in [0, 1): the top 53 bits scaled by 2^-53, so every value is an exact double.
  double NextDouble() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

 private:
  static uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

}  // namespace tessera

#endif  // TESSERA_MODEL_RNG_H_
