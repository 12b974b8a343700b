"""Load a handler module the way DJL's Python engine does: ``load_model_service(model_dir, entry_point, device_id)``.

Rules (djl-serving v0.26.0-v0.28.0, ``engines/python/setup/djl_python/service_loader.py``):

* an absolute path (``/opt/ml/model/code/model.py``, what Java passes when
  ``option.entryPoint`` is an URL it downloaded) is loaded from that file under
  the module name ``model``; a missing file is an error naming it;
* ``something.py`` is ``<model_dir>/something.py`` imported as ``something``
  (Java puts the model folder on ``PYTHONPATH``); a missing file is an error;
* anything else is a module name (``djl_python.transformers_neuronx``).

``ModelService.invoke_handler(name, inputs)`` sets ``inputs.properties["model_dir"]``
and calls the module's function ``name``. TorchServe ``.mar`` models
(``MAR-INF/MANIFEST.json``) are not supported here.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from types import ModuleType
from typing import Any, Optional


class ModelService:
    """A loaded entry point and the model folder it serves."""

    def __init__(self, module: ModuleType, model_dir: str) -> None:
        self.module = module
        self.model_dir = model_dir

    def invoke_handler(self, function_name: Optional[str], inputs: Any) -> Any:
        """Call ``module.<function_name>(inputs)`` (``handle`` if unnamed); ``AttributeError`` if absent."""
        name = function_name or "handle"
        inputs.properties["model_dir"] = self.model_dir
        handler = getattr(self.module, name, None)
        if handler is None:
            raise AttributeError(f"entry point {self.module.__name__} has no function {name!r}")
        return handler(inputs)


def load_module(model_dir: str, entry_point: Optional[str]) -> ModuleType:
    """The entry point's module, by DJL's rules above. Raises ``ValueError`` for a missing file."""
    entry_point = entry_point or "model.py"
    if os.path.isabs(entry_point):
        if not os.path.isfile(entry_point):
            raise ValueError(f"entry-point file not found {entry_point}.")
        spec = importlib.util.spec_from_file_location("model", entry_point)
        if spec is None or spec.loader is None:
            raise ValueError(f"cannot load entry-point file {entry_point}.")
        module = importlib.util.module_from_spec(spec)
        sys.modules["model"] = module  # as SourceFileLoader("model", path).load_module() registers it
        spec.loader.exec_module(module)
        return module
    if entry_point.endswith(".py"):
        path = os.path.join(model_dir, entry_point)
        if not os.path.isfile(path):
            raise ValueError(f"entry-point file not found {path}.")
        if model_dir not in sys.path:
            sys.path.append(model_dir)  # Java's PYTHONPATH has it; a hand-started worker may not
        entry_point = entry_point[:-3]
    return importlib.import_module(entry_point)


def load_model_service(model_dir: str, entry_point: Optional[str], device_id: Any = None) -> ModelService:
    """``ModelService`` for ``entry_point`` in ``model_dir`` (``device_id`` is accepted for DJL's signature)."""
    if os.path.exists(os.path.join(model_dir, "MAR-INF", "MANIFEST.json")):
        raise ValueError(f"{model_dir} is a TorchServe .mar model, which this package does not serve")
    return ModelService(load_module(model_dir, entry_point), model_dir)
