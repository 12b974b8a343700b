"""The native forward of the PyTorch backend: one decoder layer shape (:mod:`.decoder`) onto
which each supported architecture's weights are mapped once at load (:mod:`.architectures`),
with its per-step operations (:mod:`.step_ops`), matmul kernels (:mod:`.linear`,
:mod:`.panel_linear`), CPU kernels (:mod:`.cpu_kernels`) and the compiled layer loop
(:mod:`.layer_stack`).

The native forward runs a model's forward pass on the backend's packed KV rows with fused
weights and none of ``transformers``' per-call generality (cache objects, mask builders,
rotary recomputation, kwargs plumbing), which on a CPU costs more than the matmuls of a
small model's decode step. It is built *from* the loaded Hugging Face model (same weights,
same rotary tables, same norms), so every other architecture and config keeps the Hugging
Face forward as its fallback, and ``PyTorchBackend.load(native=False)`` forces that fallback
for any model (no serving option does: tests and benchmarks use it).
"""
