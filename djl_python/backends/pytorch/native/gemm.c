/* The native forward's matmul: y = x W^T (+ bias) on weights packed in column panels.
 *
 * Built into the same library as cpu_kernels.c (cpu_kernels.py compiles both files): float32 on
 * CPUs with AVX-512F, or else AVX2 and FMA; bfloat16 on CPUs with AVX512-BF16. gemm_panel_width_*
 * returns 0 where a dtype's kernel was not compiled, and the caller keeps oneDNN.
 *
 * Why: at a decode step's few rows oneDNN's GEMM on its own packed layout reads the weights
 * well below this machine's memory speed, and does not overlap the reads with its arithmetic
 * (docs/performance.md). Here each thread streams whole panels front to back, one contiguous
 * run of memory per panel, with software prefetch ahead of the loads, so the reads run at
 * memory speed and under the arithmetic.
 *
 * Layout (packed once at load by panel_linear.py): the weight W [n, k] is split into panels of
 * PANEL = 32 output columns, the last one padded with zero columns.
 *   float32:  panels [ceil(n / 32), k, 32]: element (p, j, c) = W[32 p + c, j].
 *   bfloat16: panels [ceil(n / 32), k / 2, 32, 2]: element (p, j, c, t) = W[32 p + c, 2 j + t]
 *             (k even), the pairs vdpbf16ps multiplies.
 * Contract. The Python wrapper checks dtypes, contiguity and shapes once per call:
 *   x      [m, k] with row stride lda (elements), rows contiguous; m >= 0
 *   panels as above, contiguous
 *   bias   [n] in x's dtype, or NULL
 *   y      [m, n] with row stride ldy, rows contiguous, not overlapping x
 * Arithmetic: every output element is one fp32 accumulator, started at its bias (or 0) and
 * summed over k in one fixed order, then stored. float32: one FMA per term, k increasing.
 * bfloat16: vdpbf16ps, one pair (2j, 2j + 1) per step, j increasing (the instruction adds the
 * odd term first); it reads subnormal inputs as zero and flushes subnormal sums, and the store
 * rounds to nearest even with vcvtneps2bf16, which also flushes subnormals and keeps a NaN's
 * sign (oneDNN's bf16 GEMM on these CPUs uses the same two instructions). The order does not
 * depend on m, on the tile a row falls in, or on the thread count: a row's output is the same
 * bits whatever rows share its call. The float32 order does not depend on the vector width either:
 * the AVX2 kernel computes the same bits as the AVX-512 one (NaN payloads aside: which of two NaN
 * operands an FMA returns depends on the instruction form the compiler picks).
 */
#include <stdint.h>
#include <string.h>
#include <omp.h>
#include <immintrin.h>

#include "cpu_kernels.h"

#define PANEL 32
/* Rows per tile: 8 rows x 32 columns is 16 accumulators, and the eight row addresses of x fit the
 * general registers beside the loop's own (at 12 rows the compiler parked them in vector registers
 * and a prefill's GEMM fell behind oneDNN's; docs/performance.md, "The panel matmul"). */
#define MAX_TILE_ROWS 8
/* How far ahead of its loads a tile streaming its panel from memory prefetches it, in bytes:
 * 32 steps of k in fp32. */
#define PREFETCH_BYTES 4096

/* The bfloat16 kernel needs AVX512-BF16, and AVX512-BW/VL for its masked 16-bit loads and stores. */
#if defined(__AVX512F__) && defined(__AVX512BF16__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define GEMM_BF16 1
#endif

/* Prefetch the line at address a into L1 / L2. The address is computed as an integer: it may lie
 * past the panels' end (a prefetch never faults), where pointer arithmetic would be undefined. */
static inline __attribute__((always_inline)) void prefetch_l1(uintptr_t a) {
  _mm_prefetch((const char*)a, _MM_HINT_T0);
}
static inline __attribute__((always_inline)) void prefetch_l2(uintptr_t a) {
  _mm_prefetch((const char*)a, _MM_HINT_T1);
}

/* The prefetch of one k step, whose panel row is PANEL * 4 bytes (32 fp32, or 16 bf16 pairs) at
 * `here`, `offset` bytes into its panel: to_l2, the same bytes of the next panel into L2; else the
 * panel PREFETCH_BYTES ahead into L1. */
static inline __attribute__((always_inline)) void prefetch_step(uintptr_t here, uintptr_t next, uintptr_t offset,
                                                                int to_l2) {
  if (to_l2) {
    prefetch_l2(next + offset);
    prefetch_l2(next + offset + 64);
  } else {
    prefetch_l1(here + PREFETCH_BYTES);
    prefetch_l1(here + PREFETCH_BYTES + 64);
  }
}

#if defined(__AVX512F__)

/* The k loop of a tile: acc0/acc1[r] += x[r, :] . panel columns 0-15 / 16-31, k increasing.
 * to_l2 (a constant at each call, so each loop has one kind of prefetch and no branch): 1, the
 * panel is in cache and the loop prefetches next into L2; 0, it prefetches the panel itself. */
static inline __attribute__((always_inline)) void sum_f32(
    const void* x, int64_t lda, const void* panel, int64_t k, __m512* acc0, __m512* acc1, int mr, const char* next,
    int to_l2) {
  const float* xs = (const float*)x;
  const float* b = (const float*)panel;
  for (int64_t j = 0; j < k; j++, b += PANEL) {
    prefetch_step((uintptr_t)b, (uintptr_t)next, (uintptr_t)(j * PANEL * 4), to_l2);
    const __m512 w0 = _mm512_loadu_ps(b), w1 = _mm512_loadu_ps(b + 16);
    #pragma GCC unroll 8
    for (int r = 0; r < MAX_TILE_ROWS; r++) {
      if (r < mr) {
        const __m512 xv = _mm512_set1_ps(xs[r * lda + j]);
        acc0[r] = _mm512_fmadd_ps(xv, w0, acc0[r]);
        acc1[r] = _mm512_fmadd_ps(xv, w1, acc1[r]);
      }
    }
  }
}

#if defined(GEMM_BF16)
/* sum_f32 for bf16: one pair of k (2j, 2j + 1) per step, by vdpbf16ps. */
static inline __attribute__((always_inline)) void sum_bf16(
    const void* x, int64_t lda, const void* panel, int64_t k, __m512* acc0, __m512* acc1, int mr, const char* next,
    int to_l2) {
  const uint16_t* xs = (const uint16_t*)x;
  const char* b = (const char*)panel;
  for (int64_t j = 0; j < k / 2; j++, b += PANEL * 4) {
    prefetch_step((uintptr_t)b, (uintptr_t)next, (uintptr_t)(j * PANEL * 4), to_l2);
    const __m512bh w0 = (__m512bh)_mm512_loadu_si512(b), w1 = (__m512bh)_mm512_loadu_si512(b + 64);
    #pragma GCC unroll 8
    for (int r = 0; r < MAX_TILE_ROWS; r++) {
      if (r < mr) {
        int32_t pair;
        memcpy(&pair, xs + r * lda + 2 * j, sizeof pair);
        const __m512bh xv = (__m512bh)_mm512_set1_epi32(pair);
        acc0[r] = _mm512_dpbf16_ps(acc0[r], xv, w0);
        acc1[r] = _mm512_dpbf16_ps(acc1[r], xv, w1);
      }
    }
  }
}
#endif

/* Rows 0..mr-1 of x (from k = 0) against one panel, output columns c < ncols of y. mr is a
 * constant at every call site (gemm_rows), so the loops over rows unroll into registers.
 * next == NULL: the first tile of its panel, which streams the panel from memory and prefetches
 * it PREFETCH_BYTES ahead. Else the panel is in cache from the first tile, and this tile
 * prefetches the thread's next panel (next) into L2 at the pace it reads its own, so that memory
 * stays busy while the later tiles compute. */
static inline __attribute__((always_inline)) void tile(
    const void* x, int64_t lda, const void* panel, int64_t k, const void* bias, void* y, int64_t ldy, int mr,
    int ncols, int bf16, const char* next) {
  __m512 acc0[MAX_TILE_ROWS], acc1[MAX_TILE_ROWS];
  __m512 init0 = _mm512_setzero_ps(), init1 = _mm512_setzero_ps();
  const __mmask16 lo = (__mmask16)(ncols >= 16 ? 0xffff : (1u << ncols) - 1);
  const __mmask16 hi = (__mmask16)(ncols <= 16 ? 0 : ncols >= 32 ? 0xffff : (1u << (ncols - 16)) - 1);
  if (bias && !bf16) {
    init0 = _mm512_maskz_loadu_ps(lo, bias);
    if (hi) init1 = _mm512_maskz_loadu_ps(hi, (const float*)bias + 16);
  }
#if defined(GEMM_BF16)
  if (bias && bf16) {  /* bf16 to fp32 is exact: the bits shifted into the high half */
    init0 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(lo, bias)), 16));
    if (hi) {
      const __m256i b1 = _mm256_maskz_loadu_epi16(hi, (const uint16_t*)bias + 16);
      init1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(b1), 16));
    }
  }
#endif
  #pragma GCC unroll 8
  for (int r = 0; r < MAX_TILE_ROWS; r++) {
    if (r < mr) {
      acc0[r] = init0;
      acc1[r] = init1;
    }
  }
#if defined(GEMM_BF16)
  if (bf16) {
    if (next) {
      sum_bf16(x, lda, panel, k, acc0, acc1, mr, next, 1);
    } else {
      sum_bf16(x, lda, panel, k, acc0, acc1, mr, NULL, 0);
    }
    uint16_t* ys = (uint16_t*)y;
    #pragma GCC unroll 8
    for (int r = 0; r < MAX_TILE_ROWS; r++) {
      if (r < mr) {
        _mm256_mask_storeu_epi16(ys + r * ldy, lo, (__m256i)_mm512_cvtneps_pbh(acc0[r]));
        if (hi) _mm256_mask_storeu_epi16(ys + r * ldy + 16, hi, (__m256i)_mm512_cvtneps_pbh(acc1[r]));
      }
    }
    return;
  }
#endif
  if (next) {
    sum_f32(x, lda, panel, k, acc0, acc1, mr, next, 1);
  } else {
    sum_f32(x, lda, panel, k, acc0, acc1, mr, NULL, 0);
  }
  float* ys = (float*)y;
  #pragma GCC unroll 8
  for (int r = 0; r < MAX_TILE_ROWS; r++) {
    if (r < mr) {
      _mm512_mask_storeu_ps(ys + r * ldy, lo, acc0[r]);
      if (hi) _mm512_mask_storeu_ps(ys + r * ldy + 16, hi, acc1[r]);
    }
  }
}

#define TILE_CASE(n) case n: tile(x, lda, panel, k, bias, y, ldy, n, ncols, bf16, next); break;

/* One tile of mr (1..MAX_TILE_ROWS) rows, mr made a constant for tile(). */
static void gemm_rows(const void* x, int64_t lda, const void* panel, int64_t k, const void* bias, void* y,
                      int64_t ldy, int mr, int ncols, int bf16, const char* next) {
  switch (mr) {
    TILE_CASE(8) TILE_CASE(7) TILE_CASE(6) TILE_CASE(5) TILE_CASE(4) TILE_CASE(3) TILE_CASE(2)
    default: tile(x, lda, panel, k, bias, y, ldy, 1, ncols, bf16, next); break;
  }
}

/* Threads split the panels in contiguous runs (static schedule); within a panel the rows go in
 * tiles of nearly equal size (at most MAX_TILE_ROWS), the first tile streaming the panel from
 * memory, the others finding it in cache and prefetching the next panel of the run (tile()).
 * A prefetch past the run's end or of a panel another thread reads is harmless: it never faults
 * and changes no result. */
static inline __attribute__((always_inline)) void gemm(
    const void* x, int64_t lda, const void* panels, const void* bias, void* y, int64_t ldy, int64_t m, int64_t n,
    int64_t k, int threads, int bf16) {
  const int64_t count = (n + PANEL - 1) / PANEL;
  const int64_t size = bf16 ? 2 : 4;
  const int64_t tiles = (m + MAX_TILE_ROWS - 1) / MAX_TILE_ROWS;
  if (m <= 0) return;
  #pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t p = 0; p < count; p++) {
    const char* panel = (const char*)panels + p * k * PANEL * size;
    const int ncols = (int)(n - p * PANEL < PANEL ? n - p * PANEL : PANEL);
    const void* panel_bias = bias ? (const char*)bias + p * PANEL * size : NULL;
    int64_t row = 0;
    for (int64_t t = 0; t < tiles; t++) {
      const int mr = (int)((m - row + (tiles - t) - 1) / (tiles - t));
      const char* next = t > 0 && p + 1 < count ? panel + k * PANEL * size : NULL;
      gemm_rows((const char*)x + row * lda * size, lda, panel, k, panel_bias,
                (char*)y + (row * ldy + p * PANEL) * size, ldy, mr, ncols, bf16, next);
      row += mr;
    }
  }
}

#elif defined(__AVX2__) && defined(__FMA__)

/* float32 without AVX-512: the same panels and the same order of arithmetic (one FMA a term, k
 * increasing, from the bias) on 8-wide registers, in two kinds of tile, both with 12 accumulators:
 *  - wide: up to 3 rows x a whole panel (32 columns), for calls of at most WIDE_CALL_ROWS rows (a
 *    decode step of a few sequences, bound by reading the weights): the first tile of a panel
 *    streams it from memory as one contiguous run, with the AVX-512 kernel's prefetch, and the
 *    others find it in cache. (In half tiles, a half's first tile would read every other line.)
 *  - half: up to 6 rows x 16 columns, a panel as two halves, for larger calls (bound by the
 *    arithmetic): a step's two weight loads and six broadcasts feed twelve FMAs, where a wide
 *    tile's twelve FMAs take their weights from memory operands. Its k loop reads one 64-byte
 *    line a step: the first tile of a half prefetches that half PREFETCH_BYTES ahead, the later
 *    tiles the same half of the thread's next panel into L2.
 * The boundary is measured (docs/performance.md, "The AVX2 panel matmul").
 * Either way each output element gets the same FMAs in the same order, so the tile kind, like the
 * tile size, does not change a bit (tests/backends/test_panel_linear.py). */
#define WIDE_ROWS 3
#define HALF_ROWS 6
#define WIDE_CALL_ROWS 8

/* Lanes 0..count-1 of 8 set (none for count <= 0), as _mm256_maskload_ps / _mm256_maskstore_ps
 * read a mask. */
static inline __attribute__((always_inline)) __m256i lanes(int count) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(count), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* The k loop of a tile: acc[r][g] += x[r, :] . the panel's columns 8 g .. 8 g + 7 from b, k
 * increasing (b + j * PANEL is step j), for r < mr (a constant at each call, as are `rows`, the
 * tile kind's most rows, and `groups`, 4 for wide, 2 for half). to_l2 as in the AVX-512 sum_f32;
 * a step prefetches the lines it reads: 2 (wide) or 1 (half). */
static inline __attribute__((always_inline)) void sum_avx2(
    const float* xs, int64_t lda, const float* b, int64_t k, __m256 acc[][4], int mr, int rows, int groups,
    uintptr_t next, int to_l2) {
  for (int64_t j = 0; j < k; j++) {
    const float* w = b + j * PANEL;  /* never formed past the panels' end: a second half ends 16 short */
    if (to_l2) {
      prefetch_l2(next + (uintptr_t)(j * PANEL * 4));
      if (groups == 4) prefetch_l2(next + (uintptr_t)(j * PANEL * 4) + 64);
    } else {
      prefetch_l1((uintptr_t)w + PREFETCH_BYTES);
      if (groups == 4) prefetch_l1((uintptr_t)w + PREFETCH_BYTES + 64);
    }
    #pragma GCC unroll 6
    for (int r = 0; r < rows; r++) {
      if (r < mr) {
        const __m256 xv = _mm256_broadcast_ss(xs + r * lda + j);
        #pragma GCC unroll 4
        for (int g = 0; g < groups; g++) acc[r][g] = _mm256_fmadd_ps(xv, _mm256_loadu_ps(w + 8 * g), acc[r][g]);
      }
    }
  }
}

/* Rows 0..mr-1 of x against `groups` * 8 columns of a panel from b (its first column at k = 0),
 * of which ncols are real (a group with none is neither read from the bias nor stored), into y;
 * bias and y already offset to the tile's first column. next: the same columns of the thread's
 * next panel for the tiles that find theirs in cache, 0 for the tile that streams it. */
static inline __attribute__((always_inline)) void tile_avx2(
    const float* x, int64_t lda, const float* b, int64_t k, const float* bias, float* y, int64_t ldy, int mr,
    int rows, int groups, int ncols, uintptr_t next) {
  __m256 acc[HALF_ROWS][4];
  __m256i mask[4];
  __m256 init[4];
  #pragma GCC unroll 4
  for (int g = 0; g < groups; g++) {
    mask[g] = lanes(ncols - 8 * g);
    init[g] = bias && ncols > 8 * g ? _mm256_maskload_ps(bias + 8 * g, mask[g]) : _mm256_setzero_ps();
  }
  #pragma GCC unroll 6
  for (int r = 0; r < rows; r++) {
    if (r < mr) {
      #pragma GCC unroll 4
      for (int g = 0; g < groups; g++) acc[r][g] = init[g];
    }
  }
  if (next) {
    sum_avx2(x, lda, b, k, acc, mr, rows, groups, next, 1);
  } else {
    sum_avx2(x, lda, b, k, acc, mr, rows, groups, 0, 0);
  }
  #pragma GCC unroll 6
  for (int r = 0; r < rows; r++) {
    if (r < mr) {
      #pragma GCC unroll 4
      for (int g = 0; g < groups; g++) {
        if (ncols > 8 * g) _mm256_maskstore_ps(y + r * ldy + 8 * g, mask[g], acc[r][g]);
      }
    }
  }
}

#define WIDE_CASE(n) case n: tile_avx2(x, lda, b, k, bias, y, ldy, n, WIDE_ROWS, 4, ncols, next); break;
#define HALF_CASE(n) case n: tile_avx2(x, lda, b, k, bias, y, ldy, n, HALF_ROWS, 2, ncols, next); break;

/* One tile, its kind and row count made constants for tile_avx2(). */
static void rows_avx2(const float* x, int64_t lda, const float* b, int64_t k, const float* bias, float* y,
                      int64_t ldy, int mr, int wide, int ncols, uintptr_t next) {
  if (wide) {
    switch (mr) {
      WIDE_CASE(3) WIDE_CASE(2)
      default: tile_avx2(x, lda, b, k, bias, y, ldy, 1, WIDE_ROWS, 4, ncols, next); break;
    }
  } else {
    switch (mr) {
      HALF_CASE(6) HALF_CASE(5) HALF_CASE(4) HALF_CASE(3) HALF_CASE(2)
      default: tile_avx2(x, lda, b, k, bias, y, ldy, 1, HALF_ROWS, 2, ncols, next); break;
    }
  }
}

/* gemm() for float32 on AVX2: the AVX-512 schedule (threads over contiguous runs of panels, rows
 * in near-equal tiles, the first tile of a panel or half streaming it), in wide tiles where m <=
 * WIDE_CALL_ROWS, else half tiles. bf16 is never asked of it (no gemm_bf16 without AVX512-BF16). */
static inline void gemm(const void* x, int64_t lda, const void* panels, const void* bias, void* y, int64_t ldy,
                        int64_t m, int64_t n, int64_t k, int threads, int bf16) {
  (void)bf16;
  const int wide = m <= WIDE_CALL_ROWS;
  const int width = wide ? PANEL : PANEL / 2;  /* columns a tile covers */
  const int64_t count = (n + PANEL - 1) / PANEL;
  const int64_t tiles = (m + (wide ? WIDE_ROWS : HALF_ROWS) - 1) / (wide ? WIDE_ROWS : HALF_ROWS);
  if (m <= 0) return;
  #pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t p = 0; p < count; p++) {
    const float* panel = (const float*)panels + p * k * PANEL;
    const int real = (int)(n - p * PANEL < PANEL ? n - p * PANEL : PANEL);
    for (int c = 0; c < real; c += width) {  /* the panel, or its halves with a real column */
      const int ncols = real - c < width ? real - c : width;
      int64_t row = 0;
      for (int64_t t = 0; t < tiles; t++) {
        const int mr = (int)((m - row + (tiles - t) - 1) / (tiles - t));
        const uintptr_t next = t > 0 && p + 1 < count ? (uintptr_t)(panel + k * PANEL + c) : 0;
        rows_avx2((const float*)x + row * lda, lda, panel + c, k, bias ? (const float*)bias + p * PANEL + c : NULL,
                  (float*)y + row * ldy + p * PANEL + c, ldy, mr, wide, ncols, next);
        row += mr;
      }
    }
  }
}

#endif  /* __AVX512F__, or AVX2 and FMA */

/* The entry points ctypes binds, one pair per dtype. A dtype whose kernel this CPU did not compile
 * reports width 0, and panel_linear never packs for it, so its gemm_* is never called. */
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#define F32_WIDTH PANEL
#else
#define F32_WIDTH 0
static inline void gemm(const void* x, int64_t lda, const void* panels, const void* bias, void* y, int64_t ldy,
                        int64_t m, int64_t n, int64_t k, int threads, int bf16) {
  (void)x; (void)lda; (void)panels; (void)bias; (void)y; (void)ldy; (void)m; (void)n; (void)k; (void)threads;
  (void)bf16;
}
#endif
#if defined(GEMM_BF16)
#define BF16_WIDTH PANEL
#else
#define BF16_WIDTH 0
#endif

int gemm_panel_width_f32(void) { return F32_WIDTH; }
int gemm_panel_width_bf16(void) { return BF16_WIDTH; }
/* The vector width the float32 matmul was compiled for: 512 (AVX-512F), 256 (AVX2), 0 (none). */
int gemm_vector_bits(void) {
#if defined(__AVX512F__)
  return 512;
#elif defined(__AVX2__) && defined(__FMA__)
  return 256;
#else
  return 0;
#endif
}

void gemm_f32(const void* x, int64_t lda, const void* panels, const void* bias, void* y, int64_t ldy, int64_t m,
              int64_t n, int64_t k, int threads) {
  if (F32_WIDTH) gemm(x, lda, panels, bias, y, ldy, m, n, k, threads, 0);
}
void gemm_bf16(const void* x, int64_t lda, const void* panels, const void* bias, void* y, int64_t ldy, int64_t m,
               int64_t n, int64_t k, int threads) {
  if (BF16_WIDTH) gemm(x, lda, panels, bias, y, ldy, m, n, k, threads, 1);
}
