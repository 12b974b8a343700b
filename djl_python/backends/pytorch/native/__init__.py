"""Native model implementations for the PyTorch backend, one module per architecture family.

A native model reimplements one family's forward pass on the backend's packed KV rows with
fused weights and none of ``transformers``' per-call generality (cache objects, mask
builders, rotary recomputation, kwargs plumbing), which on a CPU costs more than the
matmuls of a small model's decode step. It is built *from* the loaded Hugging Face model
(same weights, same rotary tables, same norms), so every other architecture keeps the
Hugging Face forward as its fallback, and ``PyTorchBackend.load(native=False)`` forces that
fallback for any model (no serving option does: tests and benchmarks use it).
"""
