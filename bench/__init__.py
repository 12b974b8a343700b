"""Benchmarks: ``python -m bench`` (see ``bench/__main__.py`` and ``docs/performance.md``).

* ``workload``: the fixed, seeded request mix and the full/quick settings;
* ``offline``: engine throughput against ``generate()`` (static batches, one at a time)
  and transformers' continuous batching;
* ``step_overhead``: ``engine.step()`` against the bare ``backend.decode()``;
* ``serving``: ``djl-serve`` under concurrent streaming clients;
* ``report``: targets, ratios and the summary tables; ``plots``: the PNG charts.
"""
