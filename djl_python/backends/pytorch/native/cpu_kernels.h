/* The entry points of cpu_kernels.c and gemm.c, declared once: those files and layer_stack.c
 * (which calls them) include this file, so the compiler checks each definition and each call
 * against one declaration. ctypes binds the same names (cpu_kernels.py: _SIGNATURES,
 * _GEMM_SIGNATURE); each function's contract is stated where it is defined. layer_stack.c
 * declares its own entry points beside its structs.
 */
#ifndef DJL_CPU_KERNELS_H
#define DJL_CPU_KERNELS_H

#include <stdint.h>

/* cpu_kernels.c: attention over KV rows, and the elementwise kernels. */
int decode_attention_max_group(void);
int decode_attention_f32(const void* q, int64_t q_stride, const void* keys, const void* values, const int64_t* rows,
                         const int64_t* lengths, void* out, int64_t n, int64_t kv, int64_t g, int64_t d, int64_t P,
                         int64_t rows_total, float scale, const float* slopes, int threads);
int decode_attention_bf16(const void* q, int64_t q_stride, const void* keys, const void* values, const int64_t* rows,
                          const int64_t* lengths, void* out, int64_t n, int64_t kv, int64_t g, int64_t d, int64_t P,
                          int64_t rows_total, float scale, const float* slopes, int threads);
void add_rms_norm_f32(void* x, const void* delta, const void* w, void* y, int64_t n, int64_t h, float eps,
                      int threads);
void add_rms_norm_bf16(void* x, const void* delta, const void* w, void* y, int64_t n, int64_t h, float eps,
                       int threads);
int rope_write_f32(const void* qkv, const void* cos_t, const void* sin_t, const int64_t* positions,
                   const int64_t* rows, void* q_out, void* keys, void* values, int64_t n, int64_t heads, int64_t kv,
                   int64_t d, int64_t P, int64_t rows_total, int threads);
int rope_write_bf16(const void* qkv, const void* cos_t, const void* sin_t, const int64_t* positions,
                    const int64_t* rows, void* q_out, void* keys, void* values, int64_t n, int64_t heads, int64_t kv,
                    int64_t d, int64_t P, int64_t rows_total, int threads);
void silu_mul_f32(const void* gate_up, void* out, int64_t n, int64_t inter, int threads);
void silu_mul_bf16(const void* gate_up, void* out, int64_t n, int64_t inter, int threads);
void add_layer_norm_f32(void* x, const void* delta, const void* w, const void* b, void* y, int64_t n, int64_t h,
                        float eps, int threads);
void add_layer_norm_bf16(void* x, const void* delta, const void* w, const void* b, void* y, int64_t n, int64_t h,
                         float eps, int threads);
int activate_f32(void* x, int64_t n, int64_t width, int kind, int threads);
int activate_bf16(void* x, int64_t n, int64_t width, int kind, int threads);
void add_into_f32(void* y, const void* x, int64_t count, int threads);
void add_into_bf16(void* y, const void* x, int64_t count, int threads);

/* gemm.c: y = x @ W.T + bias on weights in panels. */
int gemm_panel_width_f32(void);
int gemm_panel_width_bf16(void);
int gemm_vector_bits(void);
void gemm_f32(const void* x, int64_t lda, const void* panels, const void* bias, void* y, int64_t ldy, int64_t m,
              int64_t n, int64_t k, int threads);
void gemm_bf16(const void* x, int64_t lda, const void* panels, const void* bias, void* y, int64_t ldy, int64_t m,
               int64_t n, int64_t k, int threads);

#endif /* DJL_CPU_KERNELS_H */
