"""The PyTorch backend (CPU and CUDA): :mod:`.backend` behind the slot contract of
:mod:`djl_python.backends.base`, with its memory plan (:mod:`.memory`), KV rows
(:mod:`.slot_rows`, :mod:`.kv_cache`), the Hugging Face forward (:mod:`.hf_forward`)
and the native forward and CPU kernels (:mod:`.native`).

Importing this package imports nothing heavy; torch loads with :mod:`.backend`.
"""
