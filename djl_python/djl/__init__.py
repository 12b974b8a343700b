"""Everything that is specific to being launched and driven by DJL Serving's Java front end.

* ``protocol``: what differs between DJL releases (string framing, rolling records).
* ``rules``: Java's rolling-or-plain rule and the property defaults of a DJL-launched handler.
* ``records``: per-request rolling-batch records (tokens and failures) per DJL release.
* ``bodies``: request bodies as DJL's ``encode_decode`` reads them (JSON, text, form, CSV) and Java's seeds.
* ``engine``: the engine loop Java talks to (``djl_python_engine.py``, ``python -m djl_python.worker``).
* ``install``: ``djl-engine-install``, which makes DJL's engine cache folder run this package.
"""
