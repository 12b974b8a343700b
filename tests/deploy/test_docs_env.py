"""docs/deployment.md's environment-only SageMaker quick start configures exactly what the
repository's ``serving.properties.example`` does (the seed's two quick-start forms)."""

from __future__ import annotations

import re

from djl_python.config import load_config
from djl_python.config.sources import read_properties_file
from tests.deploy.repo_files import REPO

MARKER = "<!-- env-only quick start"


def docs_env_block() -> dict[str, str]:
    text = (REPO / "docs/deployment.md").read_text()
    after = text[text.index(MARKER):]
    block = re.search(r"```bash\n(.*?)```", after, re.S).group(1)
    pairs = [line.split("=", 1) for line in block.splitlines() if line.strip() and not line.startswith("#")]
    return {key.strip(): value.strip() for key, value in pairs}


def test_env_only_equals_the_properties_quick_start():
    env = docs_env_block()
    assert env["SERVING_LOAD_MODELS"] == "test::Python=/opt/ml/model"
    from_env = load_config(properties={}, env=env)
    from_file = load_config(properties=read_properties_file(REPO / "serving.properties.example"), env={})
    assert from_env.model_dir == "/opt/ml/model"
    # SERVING_LOAD_MODELS also names the model (``/predictions/test``); the file form has no name.
    assert from_env.served_model_name == "test" and from_file.served_model_name is None
    differ = {"model_dir", "served_model_name"}
    assert from_env.model_dump(exclude=differ) == from_file.model_dump(exclude=differ)
    assert from_env.tensor_parallel_degree == 4 and from_env.max_rolling_batch_size == 8
    assert from_env.model_loading_timeout == 1600
