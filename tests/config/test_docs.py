"""The documentation and the example configuration cannot drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

from djl_python.config import HandlerConfig, load_config
from djl_python.config.handler_config import INPUT_ONLY_KEYS
from djl_python.config.reference import render_tables
from djl_python.config.sources import canonical_key
from tests.config.helpers import parse

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "configuration.md"
EXAMPLE = ROOT / "serving.properties.example"


def _documented_keys(text: str) -> set[str]:
    """Field names from the first column of every options table row."""
    rows = re.findall(r"^\| `([^`]+)` \| `OPTION_[A-Z0-9_]+` \|", text, flags=re.MULTILINE)
    return {canonical_key(key) for key in rows}


def test_every_field_is_documented_and_nothing_else() -> None:
    documented = _documented_keys(DOC.read_text(encoding="utf-8"))
    expected = set(HandlerConfig.model_fields) | set(INPUT_ONLY_KEYS)
    assert sorted(expected - documented) == [], "undocumented options"
    assert sorted(documented - expected) == [], "documented options that do not exist"


def test_doc_tables_match_the_models() -> None:
    assert render_tables() in DOC.read_text(encoding="utf-8"), (
        "docs/configuration.md is stale: run python -m djl_python.config.reference docs/configuration.md"
    )


def test_example_file_parses(tmp_path: Path) -> None:
    (tmp_path / "serving.properties").write_text(EXAMPLE.read_text(encoding="utf-8"))
    config = load_config(tmp_path, env={})
    assert config.engine == "Python"
    assert config.entry_point == "djl_python.transformers_neuronx"
    assert (config.tensor_parallel_degree, config.max_rolling_batch_size) == (4, 8)
    assert (config.rolling_batch, config.model_loading_timeout) == ("tnx", 1600)
    assert config.model_id == "meta-llama/Llama-2-7b-hf"


def test_quick_start_templates_are_equal() -> None:
    """The seed's serving.properties template and its environment-only twin."""
    from_file = load_config(
        "/opt/ml/model",
        properties={
            "engine": "Python",
            "option.tensor_parallel_degree": "4",
            "option.model_id": "meta-llama/Llama-2-7b-hf",
            "option.entryPoint": "djl_python.transformers_neuronx",
            "option.max_rolling_batch_size": "8",
            "option.rolling_batch": "auto",
            "option.model_loading_timeout": "1600",
        },
        env={},
    )
    from_env = load_config(
        env={
            "SERVING_LOAD_MODELS": "test::Python=/opt/ml/model",
            "OPTION_MODEL_ID": "meta-llama/Llama-2-7b-hf",
            "OPTION_ENTRYPOINT": "djl_python.transformers_neuronx",
            "OPTION_TENSOR_PARALLEL_DEGREE": "4",
            "OPTION_MAX_ROLLING_BATCH_SIZE": "8",
            "OPTION_ROLLING_BATCH": "auto",
            "OPTION_MODEL_LOADING_TIMEOUT": "1600",
        }
    )
    # SERVING_LOAD_MODELS's name is the served name (/predictions/test); the file form has none.
    assert from_env.served_model_name == "test" and from_file.served_model_name is None
    assert from_file == from_env.model_copy(update={"served_model_name": None})
    assert from_env != parse()  # the templates set something


def test_doc_quick_start_matches_example() -> None:
    example_lines = [
        line for line in EXAMPLE.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")
    ]
    block = DOC.read_text(encoding="utf-8").split("```properties\n", 1)[1].split("```", 1)[0]
    assert block.splitlines() == example_lines


def _properties_blocks() -> list[tuple[str, str]]:
    blocks = []
    for doc in sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]:
        for block in re.findall(r"```properties\n(.*?)```", doc.read_text(encoding="utf-8"), flags=re.S):
            blocks.append((doc.name, block))
    return blocks


def test_every_properties_example_in_the_docs_is_valid(caplog) -> None:
    """A user copies these blocks verbatim: each must parse, with no unknown-key warning."""
    from djl_python.config.sources import parse_properties

    blocks = _properties_blocks()
    assert len(blocks) >= 3
    for name, block in blocks:
        caplog.clear()
        config = load_config(properties=parse_properties(block), env={})
        assert isinstance(config, HandlerConfig), name
        assert not [r for r in caplog.records if r.levelname == "WARNING"], (name, caplog.text)
