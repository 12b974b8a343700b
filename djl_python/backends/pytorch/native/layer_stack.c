/* A step's decoder layers in one call: the native forward's layer loop (native/decoder.py,
 * NativeDecoder.step) compiled, for models whose every weight is in gemm.c's panel layout.
 *
 * Why: run from Python, a layer is nine calls through ctypes (two norms, four matmuls, rope,
 * attention, SiLU product), each paying Python's call, argument conversion and the wrapper's
 * checks; at a decode step's few rows that host work is a measurable part of the step
 * (docs/performance.md, "Compiled decode: the layer stack"). Here the same functions run in
 * the same order on the same shapes, called from C (on scratch buffers allocated once a step,
 * where the loop allocates each output): what the step computes is unchanged, bit for bit
 * (tests/backends/test_layer_stack.py compares the two paths' outputs as integers).
 *
 * Per layer, with x the residual stream (updated in place), delta the last layer's output to
 * add, and norm the model's (add_rms_norm, or add_layer_norm with the norm's bias):
 *   h = norm(x += delta, attn_norm)            (no add in layer 0: x is the embedding)
 *   qkv = gemm(h, qkv panels, qkv_bias)
 *   q = rope_write(qkv) (k and v written into the layer's cache rows at their positions)
 *   attn = decode_attention(q) (each token over its row's columns 0..lengths[t]-1)
 *   delta = gemm(attn, o panels, o_bias)
 *   sequential:  h = norm(x += delta, mlp_norm)
 *   parallel:    h = norm(x, mlp_norm)          (the stream before this layer's attention)
 *   shared norm: h as it is                     (the attention's norm)
 *   up = gemm(h, gate_up panels, gate_up_bias)
 *   act = silu_mul(up) when the MLP is gated, else activate(up) in place
 *   sequential: delta = gemm(act, down panels, down_bias)
 *   otherwise:  mlp_out = gemm(act, ...); delta += mlp_out   (attention + MLP, as the models add)
 * On return x holds the stream before the last layer's output, which is in delta: the caller
 * adds it in the final norm, as the Python loop does.
 *
 * Contract (layer_stack.py checks it, once at build for the model and once per call for the
 * step): every pointer of StackModel and StackLayer addresses a contiguous tensor of the
 * model's dtype of the size its name implies (biases may be NULL); the scratch buffers hold n
 * rows of their width; positions, rows and lengths are n int64 each. Positions and rows are
 * checked in rope_write and attention as there: BAD_INDEX before layer 0 writes anything.
 * Returns OK, BAD_INDEX or NO_MEMORY (cpu_kernels.c's codes).
 */
#include <stddef.h>
#include <stdint.h>

#include "cpu_kernels.h"

/* One decoder layer: its norms' weights and biases (NULL for RMSNorm; mlp_norm NULL with a
 * shared norm), its four weights in panels (biases NULL when absent), and its slice of the KV
 * cache, [rows_total, kv, P, d] each. Field order: layer_stack.py. */
typedef struct {
  const void* attn_norm;
  const void* attn_norm_bias;
  const void* qkv;
  const void* qkv_bias;
  const void* o;
  const void* o_bias;
  const void* mlp_norm;
  const void* mlp_norm_bias;
  const void* gate_up;
  const void* gate_up_bias;
  const void* down;
  const void* down_bias;
  void* keys;
  void* values;
} StackLayer;

/* The model: sizes, its layer shape, the rotary tables [P, d], ALiBi slopes (heads floats, or
 * NULL), and its layers. norm: 0 RMSNorm,
 * 1 LayerNorm; activation: 0 the SiLU-gated MLP, else activate()'s kind; residual: 0
 * sequential, 1 parallel, 2 shared norm. Field order: layer_stack.py. */
typedef struct {
  int64_t layers, hidden, heads, kv, d, inter, P, rows_total;
  int64_t norm, activation, residual;
  float eps, scale;
  const void* cos_t;
  const void* sin_t;
  const float* slopes;
  const StackLayer* layer;
} StackModel;

/* The step's buffers: x [n, hidden] (in: the embedding; the stream, updated in place), delta
 * [n, hidden] (out: the last layer's output), and scratch h [n, hidden], qkv [n, (heads + 2 kv) d],
 * q and attn [n, heads d], gate_up [n, 2 inter] (gated) or [n, inter], act [n, inter] (gated
 * only), mlp_out [n, hidden] (parallel and shared norm only). */
typedef struct {
  void* x;
  void* delta;
  void* h;
  void* qkv;
  void* q;
  void* attn;
  void* gate_up;
  void* act;
  void* mlp_out;
} StackBuffers;

/* One dtype's entry points, so that the layer loop below is written once. */
typedef struct {
  void (*add_rms_norm)(void*, const void*, const void*, void*, int64_t, int64_t, float, int);
  void (*gemm)(const void*, int64_t, const void*, const void*, void*, int64_t, int64_t, int64_t, int64_t, int);
  int (*rope_write)(const void*, const void*, const void*, const int64_t*, const int64_t*, void*, void*, void*,
                    int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int);
  int (*attention)(const void*, int64_t, const void*, const void*, const int64_t*, const int64_t*, void*, int64_t,
                   int64_t, int64_t, int64_t, int64_t, int64_t, float, const float*, int);
  void (*silu_mul)(const void*, void*, int64_t, int64_t, int);
  void (*add_layer_norm)(void*, const void*, const void*, const void*, void*, int64_t, int64_t, float, int);
  int (*activate)(void*, int64_t, int64_t, int, int);
  void (*add_into)(void*, const void*, int64_t, int);
} Kernels;

static const Kernels F32 = {add_rms_norm_f32, gemm_f32, rope_write_f32, decode_attention_f32, silu_mul_f32,
                            add_layer_norm_f32, activate_f32, add_into_f32};
static const Kernels BF16 = {add_rms_norm_bf16, gemm_bf16, rope_write_bf16, decode_attention_bf16, silu_mul_bf16,
                             add_layer_norm_bf16, activate_bf16, add_into_bf16};

/* x += delta (when not NULL), y = the model's norm of x with w (and b, LayerNorm). */
static void norm(const Kernels* k, const StackModel* m, void* x, const void* delta, const void* w, const void* b,
                 void* y, int64_t n, int threads) {
  if (m->norm) k->add_layer_norm(x, delta, w, b, y, n, m->hidden, m->eps, threads);
  else k->add_rms_norm(x, delta, w, y, n, m->hidden, m->eps, threads);
}

static int run(const Kernels* k, const StackModel* m, const StackBuffers* b, const int64_t* positions,
               const int64_t* rows, const int64_t* lengths, int64_t n, int threads) {
  const int64_t qkv_width = (m->heads + 2 * m->kv) * m->d, q_width = m->heads * m->d;
  const int64_t g = m->heads / m->kv, up_width = m->activation ? m->inter : 2 * m->inter;
  for (int64_t i = 0; i < m->layers; ++i) {
    const StackLayer* l = &m->layer[i];
    const void* pending = i > 0 ? b->delta : NULL;
    norm(k, m, b->x, pending, l->attn_norm, l->attn_norm_bias, b->h, n, threads);
    k->gemm(b->h, m->hidden, l->qkv, l->qkv_bias, b->qkv, qkv_width, n, qkv_width, m->hidden, threads);
    int code = k->rope_write(b->qkv, m->cos_t, m->sin_t, positions, rows, b->q, l->keys, l->values, n, m->heads,
                             m->kv, m->d, m->P, m->rows_total, threads);
    if (code) return code;
    code = k->attention(b->q, q_width, l->keys, l->values, rows, lengths, b->attn, n, m->kv, g, m->d, m->P,
                        m->rows_total, m->scale, m->slopes, threads);
    if (code) return code;
    k->gemm(b->attn, q_width, l->o, l->o_bias, b->delta, m->hidden, n, m->hidden, q_width, threads);
    if (m->residual == 0) norm(k, m, b->x, b->delta, l->mlp_norm, l->mlp_norm_bias, b->h, n, threads);
    else if (m->residual == 1) norm(k, m, b->x, NULL, l->mlp_norm, l->mlp_norm_bias, b->h, n, threads);
    k->gemm(b->h, m->hidden, l->gate_up, l->gate_up_bias, b->gate_up, up_width, n, up_width, m->hidden, threads);
    const void* act = b->act;
    if (m->activation == 0) {
      k->silu_mul(b->gate_up, b->act, n, m->inter, threads);
    } else {
      code = k->activate(b->gate_up, n, m->inter, (int)m->activation, threads);
      if (code) return code;
      act = b->gate_up;
    }
    void* out = m->residual == 0 ? b->delta : b->mlp_out;
    k->gemm(act, m->inter, l->down, l->down_bias, out, m->hidden, n, m->hidden, m->inter, threads);
    if (m->residual != 0) k->add_into(b->delta, b->mlp_out, n * m->hidden, threads);
  }
  return 0;
}

int layer_stack_f32(const StackModel* m, const StackBuffers* b, const int64_t* positions, const int64_t* rows,
                    const int64_t* lengths, int64_t n, int threads) {
  return run(&F32, m, b, positions, rows, lengths, n, threads);
}

int layer_stack_bf16(const StackModel* m, const StackBuffers* b, const int64_t* positions, const int64_t* rows,
                     const int64_t* lengths, int64_t n, int threads) {
  return run(&BF16, m, b, positions, rows, lengths, n, threads);
}
