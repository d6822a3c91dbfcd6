// zerodiff/data/Rng.h — the small, portable random generator of the data pipeline.
//
// Design rules: every random choice of the pipeline (epoch shuffle, caption pick, crop offset, flip,
// caption dropout, tag shuffle, synthetic shapes) comes from an Rng seeded from (seed, epoch, index), never
// from a shared stream, so results do not depend on the number of worker threads or on which thread
// builds which batch. The generator is xoshiro256** (Blackman & Vigna) seeded through splitmix64, and the
// integer/real draws are implemented here (not std::uniform_int_distribution, whose output differs between
// standard libraries), so a given seed gives the same samples on every platform.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace zerodiff::data {

class Rng {
 public:
  /// A generator whose whole state is derived from `seed` with splitmix64.
  explicit Rng(uint64_t seed) {
    uint64_t s = seed;
    for (auto& word : state_) word = splitmix64(s);
  }

  /// The generator of one sample in one epoch: seeded from (seed, epoch, index) by hashing, so that
  /// neighbouring indices and epochs give unrelated streams.
  static Rng for_sample(uint64_t seed, int64_t epoch, int64_t index) {
    return Rng(mix(mix(mix(seed, 0x5a4d'6461'7461'0001ull), static_cast<uint64_t>(epoch)),
                   static_cast<uint64_t>(index)));
  }

  /// The generator of a named stream of an epoch (e.g. the epoch permutation): `stream` separates uses.
  static Rng for_stream(uint64_t seed, int64_t epoch, uint64_t stream) {
    return Rng(mix(mix(mix(seed, 0x5a4d'5374'7265'616dull), stream), static_cast<uint64_t>(epoch)));
  }

  /// Next 64 random bits (xoshiro256**).
  uint64_t next_u64() {
    const uint64_t result = rotl(state_[1] * 5, 7) * 9;
    const uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = rotl(state_[3], 45);
    return result;
  }

  /// Uniform integer in [lo, hi] (inclusive), unbiased (Lemire's multiply-and-reject). Requires lo <= hi.
  int64_t uniform_int(int64_t lo, int64_t hi) {
    const uint64_t range = static_cast<uint64_t>(hi) - static_cast<uint64_t>(lo);
    if (range == ~uint64_t{0}) return static_cast<int64_t>(next_u64());
    const uint64_t n = range + 1;
    unsigned __int128 m = static_cast<unsigned __int128>(next_u64()) * n;
    uint64_t low = static_cast<uint64_t>(m);
    if (low < n) {
      const uint64_t threshold = (0 - n) % n;
      while (low < threshold) {
        m = static_cast<unsigned __int128>(next_u64()) * n;
        low = static_cast<uint64_t>(m);
      }
    }
    return static_cast<int64_t>(static_cast<uint64_t>(lo) + static_cast<uint64_t>(m >> 64));
  }

  /// Uniform double in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }

  /// True with probability `p` (one uniform() draw; p <= 0 is never, p >= 1 always).
  bool bernoulli(double p) { return uniform() < p; }

  /// Fisher–Yates shuffle of `values` (size() - 1 draws).
  template <class T>
  void shuffle(std::vector<T>& values) {
    for (int64_t i = static_cast<int64_t>(values.size()) - 1; i > 0; --i) {
      std::swap(values[static_cast<size_t>(i)], values[static_cast<size_t>(uniform_int(0, i))]);
    }
  }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  static uint64_t splitmix64(uint64_t& x) {
    uint64_t z = (x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  static uint64_t mix(uint64_t a, uint64_t b) {
    uint64_t x = a ^ (b + 0x9e3779b97f4a7c15ull + (a << 6) + (a >> 2));
    return splitmix64(x);
  }
  uint64_t state_[4];
};

}  // namespace zerodiff::data
