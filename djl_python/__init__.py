"""LMI-style Transformers-NeuronX serving: DJL worker protocol, HTTP server, engine and backends.

``from djl_python import Input, Output, PairList`` is the import custom DJL
handlers use (as in DJL's own ``djl_python/__init__.py``).
"""

from djl_python.inputs import Input
from djl_python.outputs import Output
from djl_python.pair_list import PairList

__version__ = "0.2.0"

__all__ = ["Input", "Output", "PairList", "__version__"]
