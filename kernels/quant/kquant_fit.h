// Shared pieces of the reference k-quant quantizers (q2_k.cc .. q6_k.cc): fitting one
// sub-block's scale (and min) by a small deterministic search, and quantizing the sub-block
// scales of a super-block against one fp16 super-scale.
//
// Not a format: the layouts and the code of each format live in its own q<N>_k.cc.
#ifndef TESSERA_KERNELS_QUANT_KQUANT_FIT_H_
#define TESSERA_KERNELS_QUANT_KQUANT_FIT_H_

#include <cstdint>

#include "kernels/quant/fp16.h"

namespace tessera {

// round(v) (half away from zero) clamped to [lo, hi]; NaN gives 0 clamped. Never UB.
int RoundClamp(float v, int lo, int hi);

// Affine fit x[i] ~= scale * q[i] - min with codes q in [0, nmax], scale >= 0 and min >= 0
// (the k-quants store the offset as an unsigned code times dmin, so it can only lower values).
struct ScaleMin {
  float scale;
  float min;
};
// Searches 21 code steps around (max - min(0, lo)) / nmax; for each, rounds the codes and
// refits scale and min by least squares; keeps the fit with the smallest squared error.
ScaleMin FitScaleMin(const float* x, int n, int nmax);

// Symmetric fit x[i] ~= scale * q[i] with q in [-nneg, nneg - 1]. The sign of scale is free:
// the search tries mapping the element of largest magnitude to either end of the code range.
float FitSignedScale(const float* x, int n, int nneg);

// Chooses the fp16 super-scale d and codes c[j] in [0, cmax] with d * c[j] ~= v[j] (v[j] >= 0):
// d = max(v) / cmax rounded to fp16, c[j] = round(v[j] / d). Returns d's fp16 bits.
fp16_t QuantizeUnsignedScales(const float* v, int n, int cmax, uint8_t* c);

// As above for signed v[j] and codes in [-cneg, cneg - 1]: d = v[k] / -cneg where v[k] has the
// largest magnitude (so d may be negative), c[j] = round(v[j] / d).
fp16_t QuantizeSignedScales(const float* v, int n, int cneg, int* c);

// Packs eight 6-bit scales and mins into Q4_K / Q5_K's 12 bytes; the inverse of
// GetScaleMinK4 (kquants.h): bytes 0..3 hold sc[0..3] in bits 0..5 and the top 2 bits of
// sc[4..7] in bits 6..7; bytes 4..7 the same for the mins; byte 8 + j holds the low nibble of
// sc[4 + j] and, in its high nibble, the low nibble of m[4 + j].
void PackScaleMinK4(const uint8_t* sc, const uint8_t* m, uint8_t* q);

// The scale/min part of a Q4_K / Q5_K super-block: fits each of the 8 sub-blocks of 32
// (codes 0..nmax), quantizes the 8 scales and 8 mins to 6-bit codes sc[j], m[j] against the
// fp16 super-scales *d and *dmin, and packs them into the block's 12 scale bytes.
void FitSuperBlockK4(const float* x, int nmax, fp16_t* d, fp16_t* dmin, uint8_t* sc, uint8_t* m,
                     uint8_t* packed);

}  // namespace tessera

#endif  // TESSERA_KERNELS_QUANT_KQUANT_FIT_H_
