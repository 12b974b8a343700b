"""``djl-partition``: compile a model for Neuron ahead of time into a folder that loads without compiling.

    djl-partition --model-id /models/llama --save-mp-checkpoint-path /out \\
        --option tensor_parallel_degree=2 --option max_rolling_batch_size=4 [--upload-s3 s3://bucket/prefix]

Output (the optimum-neuron layout, which ``resolve_artifacts`` reads back as
``OPTIMUM_NEURON``):

* ``checkpoint/``: the source checkpoint's weight files as they are (hard-linked where the
  file system allows, else copied; never loaded into host memory again) plus its config, so
  the release that compiled them reads them back;
* ``compiled/``: the NEFFs from transformers-neuronx ``model.save()`` and ``djl_manifest.json``;
* ``config.json`` with a ``neuron`` block (``auto_cast_type``, ``batch_size``,
  ``compiler_type``, ``compiler_version``, ``num_cores``, ``sequence_length``,
  ``task``, ``checkpoint_id``, ``checkpoint_revision``) and, under
  ``neuron.djl_python.plan``, the exact load plan, so that serving the folder
  replays identical arguments and TNX finds every NEFF by hash;
* the tokenizer and ``generation_config.json``.

Options come from ``--model-dir``'s ``serving.properties`` (or ``--option``
pairs, which win), exactly as for serving; ``save_mp_checkpoint_path`` may be
set there instead of on the command line. The checks serving makes before compiling
(checkpoint format and sliding window per transformers-neuronx release) run first.

LMI's own loader does not read this layout (it expects presharded weights in
``compiled/``); serve the output with this handler, whose DJL entry point runs in LMI's
containers, or with optimum-neuron.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from djl_python.config import dtypes
from djl_python.progress import progress_bars_for

if TYPE_CHECKING:
    from djl_python.backends.neuron.plan import NeuronLoadPlan
    from djl_python.config import HandlerConfig

logger = logging.getLogger("djl_python.partition")
TASK = "text-generation"


class PartitionError(ValueError):
    """The partition cannot run as asked (output folder, layout or architecture)."""


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "pytorch_model.bin.index.json")


def copy_checkpoint(source: Path, dest: Path) -> list[Path]:
    """The weight files of ``source`` (safetensors or .bin, sharded or not, or a split
    ``pytorch_model.bin/`` folder) and its ``config.json`` into ``dest``, byte for byte: hard
    links on the same file system, copies otherwise. Returns what was written."""
    dest.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    names = sorted({p for pattern in WEIGHT_PATTERNS for p in source.glob(pattern)} | {source / "config.json"})
    for path in names:
        target = dest / path.name
        if path.is_dir():  # transformers-neuronx save_pretrained_split: one file per tensor
            shutil.copytree(path, target, copy_function=_link_or_copy)
        elif path.is_file():
            _link_or_copy(str(path), str(target))
        written.append(target)
    return written


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def neuron_block(plan: NeuronLoadPlan, config: HandlerConfig, tnx_version: str) -> dict[str, Any]:
    """The ``neuron`` block of config.json (optimum-neuron's keys plus our load plan)."""
    dtype = dtypes.canonical(plan.model_kwargs["amp"])
    source = config.model_id_or_path
    is_hub_id = source is not None and not Path(source).exists() and not source.startswith("s3://")
    return {
        "auto_cast_type": dtype,
        "batch_size": plan.batch_size,
        "compiler_type": "neuronx-cc",
        "compiler_version": _installed("neuronx-cc"),
        "num_cores": plan.model_kwargs["tp_degree"],
        "sequence_length": plan.n_positions,
        "task": TASK,
        "checkpoint_id": source if is_hub_id else None,
        "checkpoint_revision": config.revision if is_hub_id else None,
        "djl_python": {"plan": plan.to_json(), "transformers_neuronx": tnx_version},
    }


def partition(config: HandlerConfig, output: Path) -> Path:
    """Compile the configured model and write the partitioned folder to ``output``; returns it."""
    from transformers import AutoTokenizer

    from djl_python.artifacts import Layout, resolve_artifacts, write_manifest
    from djl_python.artifacts.manifest import library_versions
    from djl_python.backends.neuron.load import (
        check_checkpoint,
        check_sliding_window,
        compile_config,
        tensor_parallel_degree,
    )
    from djl_python.backends.neuron.loader import import_features, load_tnx_model
    from djl_python.backends.neuron.memory import check_neuron_memory
    from djl_python.backends.neuron.plan import plan_from_config
    from djl_python.backends.neuron.versions import model_support
    from djl_python.config import apply_environment

    started = time.monotonic()
    if output.exists() and any(output.iterdir()):
        # Never delete a folder we did not create: the path may be a mount or the user's own data.
        raise PartitionError(f"save_mp_checkpoint_path {output} is not empty; remove it or choose another folder")
    artifacts = resolve_artifacts(config)
    if artifacts.layout is not Layout.HF:
        raise PartitionError(
            f"{config.model_id_or_path} is a {artifacts.layout.value} layout; djl-partition needs a Hugging Face "
            "checkpoint (an already compiled folder can be served as is)"
        )
    apply_environment(config)
    tnx, features = import_features()
    if not model_support(artifacts.model_type, features.version).serializable:
        raise PartitionError(
            f"transformers-neuronx cannot save compiled {artifacts.model_type} graphs (no serialization for this "
            "architecture); reuse compilations through option.compiled_graph_path (NEURON_COMPILE_CACHE_URL) instead"
        )
    check_sliding_window(artifacts, features)
    plan = plan_from_config(config, artifacts.model_type, artifacts.hf_config,
                            tp_degree=tensor_parallel_degree(config), features=features)
    check_checkpoint(artifacts, features, plan)  # e.g. a sharded checkpoint on 0.9, before compiling
    check_neuron_memory(plan, config, artifacts.hf_config, artifacts.checkpoint_dir)
    model, plan = load_tnx_model(plan, artifacts.checkpoint_dir, None,
                                 deadline=started + config.model_loading_timeout,
                                 timeout_s=config.model_loading_timeout)
    compiled, checkpoint = output / "compiled", output / "checkpoint"
    model.save(str(compiled))
    versions = library_versions()
    versions["transformers-neuronx"] = str(getattr(tnx, "__version__", versions.get("transformers-neuronx", "")))
    write_manifest(compiled, backend="neuron", compile_config=compile_config(plan),
                   compiler_version=_installed("neuronx-cc"), versions=versions)
    copy_checkpoint(Path(artifacts.checkpoint_dir), checkpoint)
    AutoTokenizer.from_pretrained(str(artifacts.model_dir), trust_remote_code=config.trust_remote_code) \
        .save_pretrained(str(output))
    if (artifacts.model_dir / "generation_config.json").is_file():
        shutil.copy2(artifacts.model_dir / "generation_config.json", output / "generation_config.json")
    hf_config = dict(artifacts.hf_config)
    hf_config["neuron"] = neuron_block(plan, config, str(getattr(tnx, "__version__", "")))
    (output / "config.json").write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    logger.info("partitioned %s into %s in %.1f s", config.model_id_or_path, output, time.monotonic() - started)
    return output


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="djl-partition", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-dir", help="local model folder (its serving.properties is read)")
    source.add_argument("--model-id", help="Hugging Face id, s3:// url or local folder")
    parser.add_argument("--save-mp-checkpoint-path", help="output folder (else option.save_mp_checkpoint_path)")
    parser.add_argument("--upload-s3", help="also upload the output to this s3://bucket/prefix")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="an LMI option (without 'option.'), repeatable; wins over serving.properties")
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> HandlerConfig:
    """The ``HandlerConfig``: ``serving.properties`` of ``--model-dir`` (if any), then ``--option`` pairs."""
    from djl_python.config import load_config
    from djl_python.config.sources import read_properties_file

    options: dict[str, str] = {}
    if args.model_dir:
        props = Path(args.model_dir) / "serving.properties"
        if props.is_file():
            options.update(read_properties_file(props))
    options["option.model_id"] = args.model_dir or args.model_id
    for pair in args.option:
        if "=" not in pair:
            raise SystemExit(f"--option {pair!r}: expected KEY=VALUE")
        key, value = (part.strip() for part in pair.split("=", 1))
        options[key if key.startswith("option.") else f"option.{key}"] = value
    options.setdefault("option.device", "neuron")
    return load_config(properties=options)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the process exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    progress_bars_for(sys.stderr)
    from djl_python.artifacts import ArtifactError, upload_s3
    from djl_python.backends.neuron.loader import NeuronLoadTimeout
    from djl_python.backends.neuron.versions import NeuronVersionError
    from djl_python.config import ConfigError

    args = parse_args(argv)
    try:
        config = build_config(args)
        target = args.save_mp_checkpoint_path or config.save_mp_checkpoint_path
        if not target:
            print("djl-partition: give --save-mp-checkpoint-path or option.save_mp_checkpoint_path", file=sys.stderr)
            return 2
        output = partition(config, Path(target))
        if args.upload_s3:
            upload_s3(output, args.upload_s3)
    except (PartitionError, NeuronVersionError, NeuronLoadTimeout, ArtifactError, ConfigError) as err:
        print(f"djl-partition: {err}", file=sys.stderr)
        return 1
    print(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
