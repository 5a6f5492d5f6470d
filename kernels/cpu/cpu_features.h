// What the CPU we run on can execute: instruction-set extensions reported by cpuid, combined
// with whether the operating system saves the matching register state (xgetbv), which is
// what decides if AVX / AVX-512 code may run at all.
//
// Thread-safety: GetCpuFeatures() detects once (thread-safe static) and returns an immutable
// value.
#ifndef TESSERA_KERNELS_CPU_CPU_FEATURES_H_
#define TESSERA_KERNELS_CPU_CPU_FEATURES_H_

#include <string>

namespace tessera {

struct CpuFeatures {
  // Each flag is true only if the CPU reports it AND the OS enables its register state.
  bool avx2 = false;    // with FMA, F16C and BMI2 (what the *_avx2.cc kernels are compiled for)
  bool avx512 = false;  // F, BW, VL, DQ (what the *_avx512.cc kernels are compiled for)
  bool avx512_vnni = false;  // avx512 plus VNNI (vpdpbusd)
  // avx512_vnni plus AMX-TILE and AMX-INT8, with the tile state enabled by the OS and this
  // process granted it (Linux: arch_prctl ARCH_REQ_XCOMP_PERM, requested during detection).
  bool amx_int8 = false;
};

// Detected once per process.
const CpuFeatures& GetCpuFeatures();

// "avx2 avx512 avx512_vnni amx_int8" (the flags that are set), for logs.
std::string CpuFeaturesString(const CpuFeatures& f);

}  // namespace tessera

#endif  // TESSERA_KERNELS_CPU_CPU_FEATURES_H_
