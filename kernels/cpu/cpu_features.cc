#include "kernels/cpu/cpu_features.h"

#include <cstdint>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define TESSERA_X86 1
#endif
#if defined(__linux__) && defined(__x86_64__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace tessera {
namespace {

#ifdef TESSERA_X86
// XCR0 via xgetbv, written as raw asm so this file needs no -mxsave flag. Only valid when
// cpuid reports OSXSAVE.
uint64_t ReadXcr0() {
  uint32_t eax = 0, edx = 0;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}

bool Bit(uint32_t reg, int bit) { return (reg >> bit) & 1u; }

// Linux hands the AMX tile data state (XTILEDATA, 8 KiB per thread) only to processes that ask
// for it; until then the tile instructions fault. The grant is process-wide and permanent.
bool RequestAmxPermission() {
#if defined(__linux__) && defined(__x86_64__)
  constexpr int kArchReqXcompPerm = 0x1023;
  constexpr int kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}

CpuFeatures Detect() {
  CpuFeatures f;
  uint32_t eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return f;
  const bool fma = Bit(ecx, 12), osxsave = Bit(ecx, 27), avx = Bit(ecx, 28), f16c = Bit(ecx, 29);
  if (!osxsave || !avx) return f;
  const uint64_t xcr0 = ReadXcr0();
  // XCR0 bits 1 (SSE) and 2 (AVX upper halves) must both be enabled for YMM state; AVX-512
  // also needs bits 5..7 (opmask, ZMM0-15 upper halves, ZMM16-31).
  const bool os_ymm = (xcr0 & 0x6) == 0x6;
  const bool os_zmm = os_ymm && (xcr0 & 0xe0) == 0xe0;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return f;
  const bool avx2 = Bit(ebx, 5), bmi2 = Bit(ebx, 8);
  const bool avx512f = Bit(ebx, 16), avx512dq = Bit(ebx, 17), avx512bw = Bit(ebx, 30),
             avx512vl = Bit(ebx, 31), avx512vnni = Bit(ecx, 11);
  f.avx2 = os_ymm && avx2 && fma && f16c && bmi2;
  f.avx512 = f.avx2 && os_zmm && avx512f && avx512dq && avx512bw && avx512vl;
  f.avx512_vnni = f.avx512 && avx512vnni;
  // AMX: cpuid 7.0 EDX bits 24 (tile) and 25 (int8); XCR0 bits 17 (tile config) and 18
  // (tile data).
  const bool amx_tile = Bit(edx, 24), amx_int8 = Bit(edx, 25);
  const bool os_tiles = (xcr0 & 0x60000) == 0x60000;
  f.amx_int8 = f.avx512_vnni && amx_tile && amx_int8 && os_tiles && RequestAmxPermission();
  return f;
}
#else
CpuFeatures Detect() { return CpuFeatures(); }
#endif

}  // namespace

const CpuFeatures& GetCpuFeatures() {
  static const CpuFeatures features = Detect();
  return features;
}

std::string CpuFeaturesString(const CpuFeatures& f) {
  std::string s;
  auto add = [&s](bool on, const char* name) {
    if (!on) return;
    if (!s.empty()) s += ' ';
    s += name;
  };
  add(f.avx2, "avx2");
  add(f.avx512, "avx512");
  add(f.avx512_vnni, "avx512_vnni");
  add(f.amx_int8, "amx_int8");
  return s.empty() ? "none" : s;
}

}  // namespace tessera
