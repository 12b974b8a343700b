/* The native forward's CPU kernels: decode attention, then the elementwise kernels below.
 *
 * Built at first use by cpu_kernels.py (cc -O3 -march=native -ffp-contract=off -fopenmp) and
 * called through ctypes; the OpenMP runtime is the one torch already loaded (same soname,
 * libgomp.so.1), so the kernels share torch's threads. Every function exists as NAME_f32 and
 * NAME_bf16 (all its tensors in that dtype).
 *
 * Decode attention: each query token over its own KV row, read up to its own length. A
 * decode row is one such query; so is each prompt token of a prefill (its row's columns up
 * to its position, written just before), which makes a whole step's attention one call.
 * Consecutive tokens of one row (a prompt's) are attended together in tiles, and the query
 * heads that share a KV head together, so that each key and value is read once for several
 * queries; a query's arithmetic is the same whatever is attended beside it, so its output is
 * the same bits alone or in any call (attend_tile).
 * Contract. The Python wrappers (cpu_kernels.py) check dtypes, contiguity, index dtypes and
 * shapes once per call; the kernels check every index they read memory by (rows, lengths,
 * positions) and return an error code instead of reading out of bounds:
 *   q        [n, kv, g, d] with row stride q_stride (elements), rows contiguous within
 *   keys     [rows_total, kv, P, d] contiguous (one layer of the cache); values alike
 *   rows     [n] int64, the KV row of each query, 0 <= rows[b] < rows_total
 *   lengths  [n] int64, 1 <= lengths[b] <= P: columns 0..lengths[b]-1 are attended
 *   out      [n, kv, g, d] contiguous
 *   d % 8 == 0, 1 <= g <= MAX_GROUP; dtype float32 or bfloat16 (q, keys, values, out alike)
 * Arithmetic: scores q.k * scale in fp32, softmax in fp32 (max subtracted; exp by a degree-6
 * polynomial, ~2 ulp), weighted sum in fp32, one rounding to the output dtype. Differs from
 * torch's SDPA by float rounding only (summation order). NaN and Inf propagate as in SDPA: a
 * NaN or +Inf score makes that query's output NaN.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <omp.h>
#include <immintrin.h>

#include "cpu_kernels.h"

#if !defined(__AVX2__) || !defined(__FMA__)
#error "cpu_kernels.c needs AVX2 and FMA (the caller falls back to torch)"
#endif

/* Query heads per KV head: the scratch is sized per call, so this only bounds the contract; 64
 * covers multi-query models (StarCoder's 48 heads over one K/V head). */
#define MAX_GROUP 64
/* Return codes of the kernels that return one. */
#define OK 0
#define NO_MEMORY 1
#define BAD_INDEX 2

/* exp(x) for -87 <= x <= 88 (clamped below; callers keep x <= 88): 2^(x log2 e) = 2^k 2^f
 * with |f| <= 0.5, 2^f by a minimax polynomial. NaN stays NaN: maxps returns its second
 * operand when either is NaN, so x goes second. */
static inline __m256 exp8(__m256 x) {
  x = _mm256_max_ps(_mm256_set1_ps(-87.f), x);
  const __m256 t = _mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f));
  const __m256 k = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 f = _mm256_sub_ps(t, k);
  __m256 p = _mm256_set1_ps(1.535336188319500e-4f);
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.339887440266574e-3f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(9.618437357674640e-3f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.550332471162809e-2f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.402264791363012e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.931472028550421e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_cvtps_epi32(k), 23);
  return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), e));
}

static inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

/* Ask for the cache lines holding elements i .. i + count - 1 of base (fp32 or bf16) to be
 * brought into L2 (count >= 1); a prefetch never faults. */
static inline __attribute__((always_inline)) void prefetch_l2(const void* base, int64_t i, int64_t count,
                                                              int bf16) {
  const int64_t size = bf16 ? 2 : 4;
  const uintptr_t first = (uintptr_t)base + (uintptr_t)(i * size);
  const uintptr_t last = first + (uintptr_t)(count * size) - 1;
  for (uintptr_t line = first & ~(uintptr_t)63; line <= last; line += 64) _mm_prefetch((const char*)line, _MM_HINT_T1);
}

/* The eight horizontal sums of a0..a7, in that order, in one register. */
static inline __m256 hsum8x8(__m256 a0, __m256 a1, __m256 a2, __m256 a3, __m256 a4, __m256 a5, __m256 a6,
                             __m256 a7) {
  const __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
  const __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(a4, a5), _mm256_hadd_ps(a6, a7));
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

/* Eight elements as fp32 (bf16 widened exactly), one element, one rounded store. */
static inline __attribute__((always_inline)) __m256 load8(const void* base, int64_t i, int bf16) {
  if (bf16)
    return _mm256_castsi256_ps(_mm256_slli_epi32(
        _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)((const uint16_t*)base + i))), 16));
  return _mm256_loadu_ps((const float*)base + i);
}
static inline __attribute__((always_inline)) float load1(const void* base, int64_t i, int bf16) {
  if (bf16) {
    union { uint32_t i; float f; } u;
    u.i = (uint32_t)((const uint16_t*)base)[i] << 16;
    return u.f;
  }
  return ((const float*)base)[i];
}
static inline __attribute__((always_inline)) void store1(void* base, int64_t i, float f, int bf16) {
  if (bf16) { /* round to nearest even, as torch's float -> bfloat16 conversion */
    union { float f; uint32_t i; } u;
    u.f = f;
    ((uint16_t*)base)[i] = (u.i & 0x7fffffffu) > 0x7f800000u
        ? (uint16_t)0x7fc0 : (uint16_t)((u.i + 0x7fffu + ((u.i >> 16) & 1u)) >> 16);
  } else {
    ((float*)base)[i] = f;
  }
}

static inline __attribute__((always_inline)) float round_as(float f, int bf16) {
  if (!bf16) return f;
  union { float f; uint32_t i; } u;
  u.f = f;
  if ((u.i & 0x7fffffffu) > 0x7f800000u) return f;
  u.i = (u.i + 0x7fffu + ((u.i >> 16) & 1u)) & 0xffff0000u;
  return u.f;
}

/* round_as on eight lanes: round to nearest even at bf16 precision, NaN left as it is. */
static inline __attribute__((always_inline)) __m256 round8_as(__m256 v, int bf16) {
  if (!bf16) return v;
  const __m256i i = _mm256_castps_si256(v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(i, 16), _mm256_set1_epi32(1));
  const __m256i r = _mm256_and_si256(_mm256_add_epi32(_mm256_add_epi32(i, _mm256_set1_epi32(0x7fff)), lsb),
                                     _mm256_set1_epi32((int)0xffff0000u));
  const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(i, _mm256_set1_epi32(0x7fffffff)),
                                         _mm256_set1_epi32(0x7f800000));
  return _mm256_castsi256_ps(_mm256_blendv_epi8(r, i, nan));
}

/* store1 on eight lanes: fp32 as is; bf16 rounded to nearest even, NaN as 0x7fc0 (as store1). */
static inline __attribute__((always_inline)) void store8(void* base, int64_t i, __m256 v, int bf16) {
  if (!bf16) {
    _mm256_storeu_ps((float*)base + i, v);
    return;
  }
  const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  __m256i h = _mm256_srli_epi32(_mm256_castps_si256(round8_as(v, 1)), 16);
  h = _mm256_blendv_epi8(h, _mm256_set1_epi32(0x7fc0), nan);
  /* 32-bit lanes 0..7 (each < 65536) to 16 bits: packus works per 128-bit half, permute joins them. */
  const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(h, h), 0x08);
  _mm_storeu_si128((__m128i*)((uint16_t*)base + i), _mm256_castsi256_si128(packed));
}

/* Queries that pass over the same keys and values together: each key or value vector is
 * loaded (and, in bf16, widened) once for all of them. 3 where the compiler has 32 vector
 * registers (AVX-512VL: 24 accumulators, the loaded vector and the queries' broadcasts fit),
 * else 1 (AVX2's 16 registers hold one query's accumulators). */
#ifdef __AVX512VL__
#define QUERIES 3
#else
#define QUERIES 1
#endif
/* The switches over a chunk's size below have a case for each size up to 3 and no other. */
_Static_assert(QUERIES == 1 || QUERIES == 3, "QUERIES must be 1 or 3");
/* Consecutive tokens of one KV row (a prompt's, a speculative step's) attended together, as a
 * tile: each block of the row's keys and values comes from memory or L2 once per tile, then
 * from L1 for the tile's other queries, instead of once per token. */
#define TILE 8
/* Rows of values a tile's queries pass over before the next block: 32 rows of d = 64 in fp32
 * are 8 KiB, in L1 beside the keys. */
#define VALUE_BLOCK 32

/* For queries c < count: acc[c * d + 8u ..] += sum_j p[c * stride + j] * values[v + j * d + 8u ..]
 * for j = j_begin .. j_end - 1 in order, u < `vectors` (1, 4 or 8) columns of 8, each sum in a
 * register between loading and storing acc (fp32, so a sum split across calls rounds as one).
 * `count` and `vectors` are constants once inlined. Eight independent sums per query keep both
 * FMA pipes busy against FMA latency. */
static inline __attribute__((always_inline)) void weighted_columns(
    const float* p, int64_t stride, int count, const void* values, int64_t v, int64_t d, int64_t j_begin,
    int64_t j_end, float* acc, int vectors, int bf16) {
  __m256 a[QUERIES][8];
  #pragma GCC unroll 8
  for (int c = 0; c < count; ++c)
    #pragma GCC unroll 8
    for (int u = 0; u < vectors; ++u) a[c][u] = _mm256_loadu_ps(acc + c * d + 8 * u);
  for (int64_t j = j_begin; j < j_end; ++j) {
    __m256 pj[QUERIES];
    #pragma GCC unroll 8
    for (int c = 0; c < count; ++c) pj[c] = _mm256_broadcast_ss(p + c * stride + j);
    #pragma GCC unroll 8
    for (int u = 0; u < vectors; ++u) {
      const __m256 vu = load8(values, v + j * d + 8 * u, bf16);
      #pragma GCC unroll 8
      for (int c = 0; c < count; ++c) a[c][u] = _mm256_fmadd_ps(pj[c], vu, a[c][u]);
    }
  }
  #pragma GCC unroll 8
  for (int c = 0; c < count; ++c)
    #pragma GCC unroll 8
    for (int u = 0; u < vectors; ++u) _mm256_storeu_ps(acc + c * d + 8 * u, a[c][u]);
}

/* weighted_columns over all d columns of the head (values at kv0), 64, 32 or 8 at a time. */
static inline __attribute__((always_inline)) void weighted_sum(
    const float* p, int64_t stride, int count, const void* values, int64_t kv0, int64_t d, int64_t j_begin,
    int64_t j_end, float* acc, int bf16) {
  int64_t e0 = 0;
  for (; e0 + 64 <= d; e0 += 64)
    weighted_columns(p, stride, count, values, kv0 + e0, d, j_begin, j_end, acc + e0, 8, bf16);
  for (; e0 + 32 <= d; e0 += 32)
    weighted_columns(p, stride, count, values, kv0 + e0, d, j_begin, j_end, acc + e0, 4, bf16);
  for (; e0 < d; e0 += 8)
    weighted_columns(p, stride, count, values, kv0 + e0, d, j_begin, j_end, acc + e0, 1, bf16);
}

/* Scores of queries c < count (qf + c * d) against the eight keys at keys[k0 ..], stored times
 * `scale` at s[c * stride ..]: per query one accumulator per key over d in order, then one
 * transposing reduction (hsum8x8) gives its eight scores in one register; a horizontal sum
 * per key would cost more than the key's FMAs at d = 64. */
static inline __attribute__((always_inline)) void score_block(
    const float* qf, int count, const void* keys, int64_t k0, int64_t d, float scale, float* s, int64_t stride,
    int bf16) {
  __m256 a[QUERIES][8];
  #pragma GCC unroll 8
  for (int c = 0; c < count; ++c)
    #pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) a[c][i] = _mm256_setzero_ps();
  for (int64_t e = 0; e < d; e += 8) {
    __m256 q8[QUERIES];
    #pragma GCC unroll 8
    for (int c = 0; c < count; ++c) q8[c] = _mm256_loadu_ps(qf + c * d + e);
    #pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) {
      const __m256 k8 = load8(keys, k0 + i * d + e, bf16);
      #pragma GCC unroll 8
      for (int c = 0; c < count; ++c) a[c][i] = _mm256_fmadd_ps(q8[c], k8, a[c][i]);
    }
  }
  #pragma GCC unroll 8
  for (int c = 0; c < count; ++c)
    _mm256_storeu_ps(s + c * stride, _mm256_mul_ps(hsum8x8(a[c][0], a[c][1], a[c][2], a[c][3], a[c][4], a[c][5],
                                                           a[c][6], a[c][7]), _mm256_set1_ps(scale)));
}

/* One query's scores against keys j_from .. L - 1 (j_from a multiple of 8, the keys before it
 * scored by score_block): the rest of the full blocks of eight, then the last L % 8 keys one at
 * a time (hsum8's order: rounding only). */
static inline __attribute__((always_inline)) void score_rest(
    const float* qx, const void* keys, int64_t kv0, int64_t j_from, int64_t L, int64_t d, float scale, float* sx,
    int bf16) {
  int64_t j0 = j_from;
  for (; j0 + 8 <= L; j0 += 8) score_block(qx, 1, keys, kv0 + j0 * d, d, scale, sx + j0, 0, bf16);
  for (; j0 < L; ++j0) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t e = 0; e < d; e += 8)
      acc = _mm256_fmadd_ps(_mm256_loadu_ps(qx + e), load8(keys, kv0 + j0 * d + e, bf16), acc);
    sx[j0] = hsum8(acc) * scale;
  }
}

/* Softmax over one query's L scores, in place. A NaN score is skipped by the max (maxps returns
 * its second operand, the running max, when either is NaN) and then turns every exp, the total
 * and so the output into NaN; so does +Inf (Inf - Inf). */
static inline __attribute__((always_inline)) void softmax(float* sx, int64_t L) {
  __m256 mx8 = _mm256_set1_ps(-INFINITY);
  int64_t j = 0;
  for (; j + 8 <= L; j += 8) mx8 = _mm256_max_ps(_mm256_loadu_ps(sx + j), mx8);
  float lanes[8];
  _mm256_storeu_ps(lanes, mx8);
  float mx = -INFINITY;
  for (int e = 0; e < 8; ++e) mx = lanes[e] > mx ? lanes[e] : mx;
  for (; j < L; ++j) mx = sx[j] > mx ? sx[j] : mx;
  const __m256 m8 = _mm256_set1_ps(mx);
  __m256 t8 = _mm256_setzero_ps();
  for (j = 0; j + 8 <= L; j += 8) {
    const __m256 e8 = exp8(_mm256_sub_ps(_mm256_loadu_ps(sx + j), m8));
    _mm256_storeu_ps(sx + j, e8);
    t8 = _mm256_add_ps(t8, e8);
  }
  float total = hsum8(t8);
  for (; j < L; ++j) {
    sx[j] = _mm256_cvtss_f32(exp8(_mm256_set1_ps(sx[j] - mx)));
    total += sx[j];
  }
  const float inv = 1.f / total;
  const __m256 inv8 = _mm256_set1_ps(inv);
  for (j = 0; j + 8 <= L; j += 8) _mm256_storeu_ps(sx + j, _mm256_mul_ps(_mm256_loadu_ps(sx + j), inv8));
  for (; j < L; ++j) sx[j] *= inv;
}

/* The size of chunk `c` of `m` queries cut into `chunks` = ceil(m / QUERIES) as evenly as they
 * divide (4: 2 + 2), so that no chunk is left with one query's latency-bound sums. */
static inline int64_t chunk_size(int64_t m, int64_t chunks, int64_t c, int64_t x0) { return (m - x0) / (chunks - c); }

/* One work item: the T tokens b0 .. b0 + T - 1 (one KV row; T <= TILE) over KV head h, their
 * m = T * g queries in token order. Scratch in work: the queries in fp32 (m * d), their scores
 * (m * S, S >= every token's length), their weighted sums in fp32 (m * d).
 * Every query's arithmetic is the same whatever the tile and the queries beside it: its scores
 * are score_block's over the full blocks of eight keys and one hsum8 per key after them, its
 * softmax its own, its weighted sum one fp32 sum per column over j in order. So a token's output
 * is the same bits alone, in a tile, or in any call. */
static inline __attribute__((always_inline)) void attend_tile(
    const void* q, int64_t q_stride, const void* keys, const void* values, const int64_t* rows,
    const int64_t* lengths, void* out, int64_t b0, int64_t T, int64_t h, int64_t kv, int64_t g, int64_t d, int64_t P,
    int64_t S, float scale, const float* slopes, float* work, int bf16) {
  const int64_t m = T * g, kv0 = (rows[b0] * kv + h) * P * d;
  float* qf = work;
  float* s = qf + m * d;
  float* acc = s + m * S;
  int64_t shortest = lengths[b0], longest = lengths[b0];
  for (int64_t t = 0; t < T; ++t) {
    shortest = lengths[b0 + t] < shortest ? lengths[b0 + t] : shortest;
    longest = lengths[b0 + t] > longest ? lengths[b0 + t] : longest;
    for (int64_t i = 0; i < g * d; ++i) qf[t * g * d + i] = load1(q, (b0 + t) * q_stride + h * g * d + i, bf16);
  }
  const int64_t chunks = (m + QUERIES - 1) / QUERIES;
  /* Scores over the full blocks of eight keys that every token attends, a block at a time for
   * all the queries; the same eight rows of values are fetched into L2 meanwhile: the cache
   * comes from memory (a layer's weights evict it), and reading keys and values as two streams
   * at once keeps more of memory's bandwidth busy than one after the other. */
  const int64_t common = shortest - shortest % 8;
  for (int64_t j0 = 0; j0 < common; j0 += 8) {
    prefetch_l2(values, kv0 + j0 * d, 8 * d, bf16);
    for (int64_t c = 0, x0 = 0; c < chunks; ++c) {
      const int64_t count = chunk_size(m, chunks, c, x0);
      const float* qx = qf + x0 * d;
      float* sx = s + x0 * S + j0;
      switch (count) {
        case 1: score_block(qx, 1, keys, kv0 + j0 * d, d, scale, sx, S, bf16); break;
#if QUERIES >= 2
        case 2: score_block(qx, 2, keys, kv0 + j0 * d, d, scale, sx, S, bf16); break;
#endif
#if QUERIES >= 3
        case 3: score_block(qx, 3, keys, kv0 + j0 * d, d, scale, sx, S, bf16); break;
#endif
      }
      x0 += count;
    }
  }
  if (longest > common) prefetch_l2(values, kv0 + common * d, (longest - common) * d, bf16);
  for (int64_t x = 0; x < m; ++x) {
    const int64_t L = lengths[b0 + x / g];
    score_rest(qf + x * d, keys, kv0, common, L, d, scale, s + x * S, bf16);
    if (slopes != NULL) {  /* ALiBi: + slope * j at key column j (BLOOM's bias; softmax ignores a per-query shift) */
      const float slope = slopes[h * g + x % g];
      float* sx = s + x * S;
      for (int64_t j = 0; j < L; ++j) sx[j] += slope * (float)j;
    }
    softmax(s + x * S, L);
  }
  /* Weighted sums: the values every token attends, a block of rows at a time for all the
   * queries, then each query's own last rows. */
  for (int64_t i = 0; i < m * d; ++i) acc[i] = 0.f;
  const int64_t block = T > 1 ? VALUE_BLOCK : shortest;
  for (int64_t j0 = 0; j0 < shortest; j0 += block) {
    const int64_t j1 = j0 + block < shortest ? j0 + block : shortest;
    for (int64_t c = 0, x0 = 0; c < chunks; ++c) {
      const int64_t count = chunk_size(m, chunks, c, x0);
      switch (count) {
        case 1: weighted_sum(s + x0 * S, S, 1, values, kv0, d, j0, j1, acc + x0 * d, bf16); break;
#if QUERIES >= 2
        case 2: weighted_sum(s + x0 * S, S, 2, values, kv0, d, j0, j1, acc + x0 * d, bf16); break;
#endif
#if QUERIES >= 3
        case 3: weighted_sum(s + x0 * S, S, 3, values, kv0, d, j0, j1, acc + x0 * d, bf16); break;
#endif
      }
      x0 += count;
    }
  }
  for (int64_t x = 0; x < m; ++x) {
    const int64_t t = x / g, L = lengths[b0 + t];
    if (L > shortest) weighted_sum(s + x * S, S, 1, values, kv0, d, shortest, L, acc + x * d, bf16);
    const int64_t o = ((b0 + t) * kv + h) * g * d + (x % g) * d;
    for (int64_t e = 0; e < d; e += 8) store8(out, o + e, _mm256_loadu_ps(acc + x * d + e), bf16);
  }
}

static int attend(
    const void* q, int64_t q_stride, const void* keys, const void* values, const int64_t* rows,
    const int64_t* lengths, void* out, int64_t n, int64_t kv, int64_t g, int64_t d, int64_t P,
    int64_t rows_total, float scale, const float* slopes, int threads, int bf16) {
  for (int64_t b = 0; b < n; ++b)
    if (lengths[b] < 1 || lengths[b] > P || rows[b] < 0 || rows[b] >= rows_total) return BAD_INDEX;
  if (n == 0) return OK;
  /* Tiles: runs of at most TILE consecutive tokens of one row; starts[i] .. starts[i + 1] - 1.
   * S: the longest length of any tile, the stride of every tile's scores. */
  int64_t* starts = (int64_t*)malloc(sizeof(int64_t) * (size_t)(n + 1));
  if (starts == NULL) return NO_MEMORY;
  int64_t tiles = 0, S = 0;
  for (int64_t b = 0; b < n; ++b) {
    if (b == 0 || rows[b] != rows[b - 1] || b - starts[tiles - 1] == TILE) starts[tiles++] = b;
    S = lengths[b] > S ? lengths[b] : S;
  }
  starts[tiles] = n;
  int64_t widest = 0;
  for (int64_t i = 0; i < tiles; ++i) widest = starts[i + 1] - starts[i] > widest ? starts[i + 1] - starts[i] : widest;
  int failed = OK;
  #pragma omp parallel num_threads(threads)
  {
    float* work = (float*)malloc(sizeof(float) * (size_t)(widest * g * (2 * d + S)));
    if (work == NULL) {
      #pragma omp atomic write
      failed = NO_MEMORY;
    }
    #pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < tiles * kv; ++item) {
      if (work == NULL) continue;
      const int64_t i = item / kv, b0 = starts[i], T = starts[i + 1] - b0;
      /* The dtype as a constant in each copy (the parallel region receives it as a variable). */
      if (bf16)
        attend_tile(q, q_stride, keys, values, rows, lengths, out, b0, T, item % kv, kv, g, d, P, S, scale, slopes,
                    work, 1);
      else
        attend_tile(q, q_stride, keys, values, rows, lengths, out, b0, T, item % kv, kv, g, d, P, S, scale, slopes,
                    work, 0);
    }
    free(work);
  }
  free(starts);
  return failed;
}

int decode_attention_max_group(void) { return MAX_GROUP; }

/* OK; NO_MEMORY when a thread could not allocate its scratch; BAD_INDEX when a row or a
 * length is out of range (checked before anything is read). Nothing reliable in out unless OK.
 * slopes: NULL, or one ALiBi slope per query head (kv * g floats), added times the key's column
 * to each score after the scale. */
int decode_attention_f32(const void* q, int64_t q_stride, const void* keys, const void* values,
                          const int64_t* rows, const int64_t* lengths, void* out, int64_t n, int64_t kv,
                          int64_t g, int64_t d, int64_t P, int64_t rows_total, float scale, const float* slopes,
                          int threads) {
  return attend(q, q_stride, keys, values, rows, lengths, out, n, kv, g, d, P, rows_total, scale, slopes, threads, 0);
}

int decode_attention_bf16(const void* q, int64_t q_stride, const void* keys, const void* values,
                           const int64_t* rows, const int64_t* lengths, void* out, int64_t n, int64_t kv,
                           int64_t g, int64_t d, int64_t P, int64_t rows_total, float scale, const float* slopes,
                           int threads) {
  return attend(q, q_stride, keys, values, rows, lengths, out, n, kv, g, d, P, rows_total, scale, slopes, threads, 1);
}

/* ---- Elementwise kernels: the same operations, in the same order and with the same
 * roundings, as the torch code of native/llama.py they replace (built with
 * -ffp-contract=off, so no multiply-add is fused where torch rounds twice); a bf16 result
 * is rounded to bf16 wherever torch's bf16 op would round. Reductions (the RMS norm's sum
 * of squares) may sum in another order: float rounding, not semantics. One call each
 * instead of 5-9 torch ops, whose dispatch dominates at a decode step's sizes. ---- */

/* x[r] += delta[r] (skipped when delta is NULL), then
 * y[r] = w * dtype(x[r] * rsqrt(mean(x[r]^2) + eps)), x read as fp32 (LlamaRMSNorm). */
static inline __attribute__((always_inline)) void add_rms_norm_row(
    void* x, const void* delta, const void* w, void* y, int64_t r, int64_t h, float eps, int bf16) {
  const int64_t r0 = r * h, h8 = h - h % 8;
  if (delta != NULL) {
    for (int64_t e = 0; e < h8; e += 8)
      store8(x, r0 + e, _mm256_add_ps(load8(x, r0 + e, bf16), load8(delta, r0 + e, bf16)), bf16);
    for (int64_t e = h8; e < h; ++e) store1(x, r0 + e, load1(x, r0 + e, bf16) + load1(delta, r0 + e, bf16), bf16);
  }
  /* The sum of squares: eight lanes over the columns in order, then hsum8, then the tail. */
  __m256 sq = _mm256_setzero_ps();
  for (int64_t e = 0; e < h8; e += 8) {
    const __m256 v = load8(x, r0 + e, bf16);
    sq = _mm256_add_ps(sq, _mm256_mul_ps(v, v));
  }
  float sum = hsum8(sq);
  for (int64_t e = h8; e < h; ++e) {
    const float v = load1(x, r0 + e, bf16);
    sum += v * v;
  }
  const float inv = 1.f / sqrtf(sum / (float)h + eps);
  const __m256 inv8 = _mm256_set1_ps(inv);
  for (int64_t e = 0; e < h8; e += 8) {
    const __m256 normed = round8_as(_mm256_mul_ps(load8(x, r0 + e, bf16), inv8), bf16);
    store8(y, r0 + e, _mm256_mul_ps(load8(w, e, bf16), normed), bf16);
  }
  for (int64_t e = h8; e < h; ++e) {
    const float normed = round_as(load1(x, r0 + e, bf16) * inv, bf16);
    store1(y, r0 + e, load1(w, e, bf16) * normed, bf16);
  }
}

static void add_rms_norm(void* x, const void* delta, const void* w, void* y, int64_t n, int64_t h, float eps,
                         int threads, int bf16) {
  #pragma omp parallel for num_threads(threads) if (n * h >= 65536)
  for (int64_t r = 0; r < n; ++r) {
    /* The dtype as a constant in each copy (the parallel region receives it as a variable). */
    if (bf16) add_rms_norm_row(x, delta, w, y, r, h, eps, 1);
    else add_rms_norm_row(x, delta, w, y, r, h, eps, 0);
  }
}

/* Rotary embedding of the q and k heads of qkv [n, (heads + 2 kv) * d] at positions[t]
 * (cos/sin tables [P, d]: as wide as a head); rotated q into q_out [n, heads * d]; rotated k
 * and plain v into keys/values [rows_total, kv, P, d] at (rows[t], head, positions[t]). Per
 * element, as torch's x * cos + cat(-x2, x1) * sin with each product and the sum rounded.
 * BAD_INDEX, before anything is written, when a position or a row is out of range. */
static inline __attribute__((always_inline)) void rope_write_token(
    const void* qkv, const void* cos_t, const void* sin_t, const int64_t* positions, const int64_t* rows,
    void* q_out, void* keys, void* values, int64_t t, int64_t heads, int64_t kv, int64_t d, int64_t P, int bf16) {
  const int64_t half = d / 2, width = (heads + 2 * kv) * d;
  const int64_t p = positions[t];
  for (int64_t head = 0; head < heads + kv; ++head) {
    const int64_t src = t * width + head * d;
    const int64_t dst = head < heads ? t * heads * d + head * d : ((rows[t] * kv + head - heads) * P + p) * d;
    void* out = head < heads ? q_out : keys;
    if (half % 8 == 0) {  /* eight lanes at a time; each lane as the scalar loop below */
      const __m256 sign = _mm256_set1_ps(-0.f);
      for (int64_t e = 0; e < d; e += 8) {
        const __m256 rot = e < half ? _mm256_xor_ps(load8(qkv, src + e + half, bf16), sign)
                                    : load8(qkv, src + e - half, bf16);
        const __m256 a = round8_as(_mm256_mul_ps(load8(qkv, src + e, bf16), load8(cos_t, p * d + e, bf16)), bf16);
        const __m256 b = round8_as(_mm256_mul_ps(rot, load8(sin_t, p * d + e, bf16)), bf16);
        store8(out, dst + e, _mm256_add_ps(a, b), bf16);
      }
      continue;
    }
    for (int64_t e = 0; e < d; ++e) {
      const float rot = e < half ? -load1(qkv, src + e + half, bf16) : load1(qkv, src + e - half, bf16);
      const float a = round_as(load1(qkv, src + e, bf16) * load1(cos_t, p * d + e, bf16), bf16);
      const float b = round_as(rot * load1(sin_t, p * d + e, bf16), bf16);
      store1(out, dst + e, a + b, bf16);
    }
  }
  for (int64_t head = 0; head < kv; ++head) {
    const int64_t src = t * width + (heads + kv + head) * d, dst = ((rows[t] * kv + head) * P + p) * d;
    const int64_t d8 = d - d % 8;
    for (int64_t e = 0; e < d8; e += 8) store8(values, dst + e, load8(qkv, src + e, bf16), bf16);
    for (int64_t e = d8; e < d; ++e) store1(values, dst + e, load1(qkv, src + e, bf16), bf16);
  }
}

static int rope_write(
    const void* qkv, const void* cos_t, const void* sin_t, const int64_t* positions, const int64_t* rows,
    void* q_out, void* keys, void* values, int64_t n, int64_t heads, int64_t kv, int64_t d, int64_t P,
    int64_t rows_total, int threads, int bf16) {
  for (int64_t t = 0; t < n; ++t)
    if (positions[t] < 0 || positions[t] >= P || rows[t] < 0 || rows[t] >= rows_total) return BAD_INDEX;
  #pragma omp parallel for num_threads(threads) if (n * (heads + 2 * kv) * d >= 65536)
  for (int64_t t = 0; t < n; ++t) {
    if (bf16) rope_write_token(qkv, cos_t, sin_t, positions, rows, q_out, keys, values, t, heads, kv, d, P, 1);
    else rope_write_token(qkv, cos_t, sin_t, positions, rows, q_out, keys, values, t, heads, kv, d, P, 0);
  }
  return OK;
}

/* out[r, e] = silu(gate_up[r, e]) * gate_up[r, inter + e], silu(g) = g / (1 + exp(-g)),
 * the silu rounded to the dtype before the product (torch: F.silu(gate) * up). exp by the
 * polynomial of exp8 (~2 ulp; torch's is ~1 ulp), argument clamped to [-87, 88]. */
static inline __attribute__((always_inline)) void silu_mul_row(
    const void* gate_up, void* out, int64_t r, int64_t inter, int bf16) {
  const __m256 one = _mm256_set1_ps(1.f), hi = _mm256_set1_ps(88.f), zero = _mm256_setzero_ps();
  const int64_t in0 = r * 2 * inter, out0 = r * inter, inter8 = inter - inter % 8;
  for (int64_t e0 = 0; e0 < inter8; e0 += 8) {
    const __m256 g8 = load8(gate_up, in0 + e0, bf16);
    const __m256 ex = exp8(_mm256_min_ps(_mm256_sub_ps(zero, g8), hi));
    const __m256 silu = round8_as(_mm256_div_ps(g8, _mm256_add_ps(one, ex)), bf16);
    store8(out, out0 + e0, _mm256_mul_ps(silu, load8(gate_up, in0 + inter + e0, bf16)), bf16);
  }
  if (inter8 < inter) {  /* the last inter % 8 elements, through eight-lane buffers */
    float g[8], u[8], s[8];
    const int64_t m = inter - inter8;
    for (int64_t e = 0; e < 8; ++e) {
      g[e] = e < m ? load1(gate_up, in0 + inter8 + e, bf16) : 0.f;
      u[e] = e < m ? load1(gate_up, in0 + inter + inter8 + e, bf16) : 0.f;
    }
    const __m256 g8 = _mm256_loadu_ps(g);
    const __m256 ex = exp8(_mm256_min_ps(_mm256_sub_ps(zero, g8), hi));
    _mm256_storeu_ps(s, _mm256_div_ps(g8, _mm256_add_ps(one, ex)));
    for (int64_t e = 0; e < m; ++e) store1(out, out0 + inter8 + e, round_as(s[e], bf16) * u[e], bf16);
  }
}

static void silu_mul(const void* gate_up, void* out, int64_t n, int64_t inter, int threads, int bf16) {
  #pragma omp parallel for num_threads(threads) if (n * inter >= 65536)
  for (int64_t r = 0; r < n; ++r) {
    if (bf16) silu_mul_row(gate_up, out, r, inter, 1);
    else silu_mul_row(gate_up, out, r, inter, 0);
  }
}

/* x[r] += delta[r] (skipped when delta is NULL), then y[r] = dtype((x[r] - mean) * rstd * w + b)
 * with mean and the biased variance of x[r] in fp32, rstd = 1 / sqrt(var + eps), and b skipped
 * when NULL (torch.nn.LayerNorm: statistics and the affine step in fp32, one rounding to the
 * dtype at the end). Mean and variance are two passes of eight lanes, then the tail. */
static inline __attribute__((always_inline)) void add_layer_norm_row(
    void* x, const void* delta, const void* w, const void* b, void* y, int64_t r, int64_t h, float eps, int bf16) {
  const int64_t r0 = r * h, h8 = h - h % 8;
  if (delta != NULL) {
    for (int64_t e = 0; e < h8; e += 8)
      store8(x, r0 + e, _mm256_add_ps(load8(x, r0 + e, bf16), load8(delta, r0 + e, bf16)), bf16);
    for (int64_t e = h8; e < h; ++e) store1(x, r0 + e, load1(x, r0 + e, bf16) + load1(delta, r0 + e, bf16), bf16);
  }
  __m256 acc = _mm256_setzero_ps();
  for (int64_t e = 0; e < h8; e += 8) acc = _mm256_add_ps(acc, load8(x, r0 + e, bf16));
  float sum = hsum8(acc);
  for (int64_t e = h8; e < h; ++e) sum += load1(x, r0 + e, bf16);
  const float mean = sum / (float)h;
  const __m256 mean8 = _mm256_set1_ps(mean);
  acc = _mm256_setzero_ps();
  for (int64_t e = 0; e < h8; e += 8) {
    const __m256 c = _mm256_sub_ps(load8(x, r0 + e, bf16), mean8);
    acc = _mm256_add_ps(acc, _mm256_mul_ps(c, c));
  }
  float var = hsum8(acc);
  for (int64_t e = h8; e < h; ++e) {
    const float c = load1(x, r0 + e, bf16) - mean;
    var += c * c;
  }
  const float rstd = 1.f / sqrtf(var / (float)h + eps);
  const __m256 rstd8 = _mm256_set1_ps(rstd);
  for (int64_t e = 0; e < h8; e += 8) {
    const __m256 normed = _mm256_mul_ps(_mm256_sub_ps(load8(x, r0 + e, bf16), mean8), rstd8);
    __m256 v = _mm256_mul_ps(normed, load8(w, e, bf16));
    if (b != NULL) v = _mm256_add_ps(v, load8(b, e, bf16));
    store8(y, r0 + e, v, bf16);
  }
  for (int64_t e = h8; e < h; ++e) {
    float v = (load1(x, r0 + e, bf16) - mean) * rstd * load1(w, e, bf16);
    if (b != NULL) v += load1(b, e, bf16);
    store1(y, r0 + e, v, bf16);
  }
}

static void add_layer_norm(void* x, const void* delta, const void* w, const void* b, void* y, int64_t n, int64_t h,
                           float eps, int threads, int bf16) {
  #pragma omp parallel for num_threads(threads) if (n * h >= 65536)
  for (int64_t r = 0; r < n; ++r) {
    if (bf16) add_layer_norm_row(x, delta, w, b, y, r, h, eps, 1);
    else add_layer_norm_row(x, delta, w, b, y, r, h, eps, 0);
  }
}

/* An MLP's activation on eight lanes in fp32 (ACTIVATION_* below). tanh(u) = 1 - 2 / (exp(2u) + 1)
 * with 2u clamped to [-87, 88]; erf(z) by Abramowitz and Stegun 7.1.26 (absolute error below
 * 1.5e-7), with exp8's ~2 ulp: close to torch's, not its bits. */
#define ACTIVATION_GELU_TANH 1
#define ACTIVATION_GELU_ERF 2
#define ACTIVATION_RELU 3
static inline __attribute__((always_inline)) __m256 activate8(__m256 v, int kind) {
  const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.f), two = _mm256_set1_ps(2.f);
  if (kind == ACTIVATION_RELU) return _mm256_max_ps(_mm256_setzero_ps(), v); /* NaN second: it stays NaN */
  if (kind == ACTIVATION_GELU_TANH) {
    const __m256 cube = _mm256_mul_ps(_mm256_mul_ps(v, v), v);
    const __m256 inner = _mm256_mul_ps(_mm256_set1_ps(0.7978845608028654f),
                                       _mm256_add_ps(v, _mm256_mul_ps(_mm256_set1_ps(0.044715f), cube)));
    const __m256 u2 = _mm256_min_ps(_mm256_mul_ps(two, inner), _mm256_set1_ps(88.f));
    const __m256 t = _mm256_sub_ps(one, _mm256_div_ps(two, _mm256_add_ps(exp8(u2), one)));
    return _mm256_mul_ps(_mm256_mul_ps(half, v), _mm256_add_ps(one, t));
  }
  /* ACTIVATION_GELU_ERF: 0.5 v (1 + erf(v / sqrt 2)) */
  const __m256 z = _mm256_mul_ps(v, _mm256_set1_ps(0.7071067811865476f));
  const __m256 sign = _mm256_and_ps(z, _mm256_set1_ps(-0.f));
  const __m256 a = _mm256_andnot_ps(_mm256_set1_ps(-0.f), z);
  const __m256 t = _mm256_div_ps(one, _mm256_add_ps(one, _mm256_mul_ps(_mm256_set1_ps(0.3275911f), a)));
  __m256 p = _mm256_set1_ps(1.061405429f);
  p = _mm256_add_ps(_mm256_mul_ps(p, t), _mm256_set1_ps(-1.453152027f));
  p = _mm256_add_ps(_mm256_mul_ps(p, t), _mm256_set1_ps(1.421413741f));
  p = _mm256_add_ps(_mm256_mul_ps(p, t), _mm256_set1_ps(-0.284496736f));
  p = _mm256_add_ps(_mm256_mul_ps(p, t), _mm256_set1_ps(0.254829592f));
  p = _mm256_mul_ps(p, t);
  const __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(a, a)));
  const __m256 erf = _mm256_or_ps(_mm256_sub_ps(one, _mm256_mul_ps(p, e)), sign);
  return _mm256_mul_ps(_mm256_mul_ps(half, v), _mm256_add_ps(one, erf));
}

/* x[r, 0..width-1] = activation(x[r, ...]) in place, computed in fp32 and rounded once. */
static inline __attribute__((always_inline)) void activate_row(void* x, int64_t r, int64_t width, int kind,
                                                               int bf16) {
  const int64_t r0 = r * width, w8 = width - width % 8;
  for (int64_t e = 0; e < w8; e += 8) store8(x, r0 + e, activate8(load8(x, r0 + e, bf16), kind), bf16);
  if (w8 < width) {  /* the tail through an eight-lane buffer */
    float v[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    for (int64_t e = w8; e < width; ++e) v[e - w8] = load1(x, r0 + e, bf16);
    _mm256_storeu_ps(v, activate8(_mm256_loadu_ps(v), kind));
    for (int64_t e = w8; e < width; ++e) store1(x, r0 + e, v[e - w8], bf16);
  }
}

/* Returns BAD_INDEX, before anything is written, for an unknown kind. */
static int activate(void* x, int64_t n, int64_t width, int kind, int threads, int bf16) {
  if (kind != ACTIVATION_GELU_TANH && kind != ACTIVATION_GELU_ERF && kind != ACTIVATION_RELU) return BAD_INDEX;
  #pragma omp parallel for num_threads(threads) if (n * width >= 65536)
  for (int64_t r = 0; r < n; ++r) {
    if (bf16) activate_row(x, r, width, kind, 1);
    else activate_row(x, r, width, kind, 0);
  }
  return OK;
}

/* y[i] += x[i] for i < count, rounded to the dtype (torch's y + x). */
static void add_into(void* y, const void* x, int64_t count, int threads, int bf16) {
  const int64_t count8 = count - count % 8;
  #pragma omp parallel for num_threads(threads) if (count >= 65536)
  for (int64_t e = 0; e < count8; e += 8) {
    if (bf16) store8(y, e, _mm256_add_ps(load8(y, e, 1), load8(x, e, 1)), 1);
    else store8(y, e, _mm256_add_ps(load8(y, e, 0), load8(x, e, 0)), 0);
  }
  for (int64_t e = count8; e < count; ++e) store1(y, e, load1(y, e, bf16) + load1(x, e, bf16), bf16);
}

#define EXPORT(SUFFIX, BF16)                                                                          \
  void add_rms_norm_##SUFFIX(void* x, const void* delta, const void* w, void* y, int64_t n, int64_t h,  \
                             float eps, int threads) {                                                  \
    add_rms_norm(x, delta, w, y, n, h, eps, threads, BF16);                                             \
  }                                                                                                     \
  int rope_write_##SUFFIX(const void* qkv, const void* cos_t, const void* sin_t, const int64_t* positions,  \
                          const int64_t* rows, void* q_out, void* keys, void* values, int64_t n,        \
                          int64_t heads, int64_t kv, int64_t d, int64_t P, int64_t rows_total,          \
                          int threads) {                                                                \
    return rope_write(qkv, cos_t, sin_t, positions, rows, q_out, keys, values, n, heads, kv, d, P,      \
                      rows_total, threads, BF16);                                                       \
  }                                                                                                     \
  void silu_mul_##SUFFIX(const void* gate_up, void* out, int64_t n, int64_t inter, int threads) {      \
    silu_mul(gate_up, out, n, inter, threads, BF16);                                                    \
  }                                                                                                     \
  void add_layer_norm_##SUFFIX(void* x, const void* delta, const void* w, const void* b, void* y, int64_t n,  \
                               int64_t h, float eps, int threads) {                                     \
    add_layer_norm(x, delta, w, b, y, n, h, eps, threads, BF16);                                        \
  }                                                                                                     \
  int activate_##SUFFIX(void* x, int64_t n, int64_t width, int kind, int threads) {                     \
    return activate(x, n, width, kind, threads, BF16);                                                  \
  }                                                                                                     \
  void add_into_##SUFFIX(void* y, const void* x, int64_t count, int threads) {                          \
    add_into(y, x, count, threads, BF16);                                                               \
  }
EXPORT(f32, 0)
EXPORT(bf16, 1)
