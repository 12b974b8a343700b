"""The served model name: one rule (``djl_python.api.names``) for HTTP and the DJL handler."""

from __future__ import annotations

import pytest

from djl_python.api.names import served_model_name


@pytest.mark.parametrize(("model_id", "model_dir", "name"), [
    ("HuggingFaceTB/SmolLM2-135M-Instruct", None, "HuggingFaceTB/SmolLM2-135M-Instruct"),  # a Hub id as given
    ("/opt/ml/model/llama-3/", None, "llama-3"),  # a path: its folder name (DJL used the whole path)
    ("./models/tiny", None, "tiny"),
    ("s3://bucket/prefix/mistral-7b", None, "mistral-7b"),
    (None, "/opt/ml/model", "model"),
    (None, None, "default"),
])
def test_served_model_name(model_id, model_dir, name):
    assert served_model_name(model_id, model_dir) == name


def test_an_existing_relative_folder_is_a_path(tmp_path, monkeypatch):
    (tmp_path / "org" / "name").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert served_model_name("org/name") == "name"


def test_both_transports_use_the_rule():
    """Neither transport keeps a rule of its own (a second rule is how they disagreed)."""
    import inspect

    from djl_python import transformers_neuronx
    from djl_python.serving import app

    for module in (app, transformers_neuronx):
        source = inspect.getsource(module)
        assert "served_model_name(config.model_id, config.model_dir)" in source, module.__name__


def test_served_names_put_the_served_name_first_then_its_aliases():
    from djl_python.api.names import served_names

    assert served_names("chat", "/opt/ml/model/llama-3", None) == ("chat", "llama-3", "/opt/ml/model/llama-3")
    assert served_names("org/name", "org/name", "/tmp/cache/x") == ("org/name",)
    assert served_names("tiny", None, "/models/tiny") == ("tiny",)
