"""Every door resolves sampling the same way: request > the model's generation_config > the API default.

The same request, written in each API's words, reaches ``Engine.add_request`` with the same
``SamplingParams`` on ``/v1/chat/completions``, ``/v1/completions``, TGI's ``/generate``, LMI's
``/invocations`` (text and chat) and the DJL handler. The model's generation_config.json says
temperature 0.6 and top_p 0.9, which must win over OpenAI's default temperature of 1.0.

The last test adds a fake knob to ``SamplingParams`` (in a fresh interpreter, before the API
modules build their schemas) and shows that every API accepts it and resolves it in the same order.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from djl_python import transformers_neuronx as tnx
from djl_python.config import load_config
from djl_python.engine.knobs import sampling_knobs
from djl_python.engine.request import SamplingParams
from djl_python.loader import load_engine
from tests.serving.djl_java import JavaRollingBatch, http_input, in_process
from tests.serving.http_server import client_with_engine

GENERATION_CONFIG = {"temperature": 0.6, "top_p": 0.9, "eos_token_id": 2}
MESSAGES = [{"role": "user", "content": "Name a colour."}]
PROPERTIES = {"device": "cpu", "max_rolling_batch_size": "2", "n_positions": "128"}


class Recorder:
    """The real engine, recording the parameters each request arrives with."""

    def __init__(self, engine) -> None:
        self._engine = engine
        self.seen: list[SamplingParams] = []

    def add_request(self, prompt_ids, params, *args, **kwargs):
        self.seen.append(params)
        return self._engine.add_request(prompt_ids, params, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._engine, name)


@pytest.fixture(scope="module")
def model_with_defaults(tiny_llama: Path, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("with-generation-config") / "model"
    shutil.copytree(tiny_llama, folder)
    (folder / "generation_config.json").write_text(json.dumps(GENERATION_CONFIG))
    return folder


@pytest.fixture(scope="module")
def http(model_with_defaults: Path):
    config = load_config(model_with_defaults, properties=PROPERTIES, env={})
    with client_with_engine(config, Recorder) as (client, engine):
        yield client, engine


@pytest.fixture(scope="module")
def djl(model_with_defaults: Path):
    config = load_config(model_dir=str(model_with_defaults), properties={**PROPERTIES, "rolling_batch": "auto",
                                                                         "model_dir": str(model_with_defaults)})
    engine = Recorder(load_engine(config))
    svc = tnx.TransformersNeuronXService()
    svc.initialize({"model_dir": str(model_with_defaults), "rolling_batch": "auto"}, engine=engine, config=config)
    return svc, engine


def knobs(params: SamplingParams) -> dict:
    return {**{k.name: getattr(params, k.name) for k in sampling_knobs()}, "do_sample": params.do_sample,
            "seed": params.seed}


def through_every_door(http, djl, *, openai: dict, lmi: dict) -> list[dict]:
    """``openai`` in OpenAI's words (sampling implied), ``lmi`` as LMI/TGI ``parameters``."""
    client, engine = http
    svc, djl_engine = djl
    engine.seen.clear()
    djl_engine.seen.clear()
    posts = [("/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 3, **openai}),
             ("/v1/completions", {"prompt": "Hi", "max_tokens": 3, **openai}),
             ("/generate", {"inputs": "Hi", "parameters": {"max_new_tokens": 3, **lmi}}),
             ("/invocations", {"inputs": "Hi", "parameters": {"max_new_tokens": 3, **lmi}}),
             ("/invocations", {"messages": MESSAGES, "max_tokens": 3, **openai})]
    for path, body in posts:
        response = client.post(path, json=body)
        assert response.status_code == 200, (path, response.text)
    for body in ({"inputs": "Hi", "parameters": {"max_new_tokens": 3, **lmi}},
                 {"messages": MESSAGES, "max_tokens": 3, **openai}):
        done = JavaRollingBatch(in_process(svc.handle, "0.28.0"), "0.28.0").run(
            {0: [("r", http_input(json.dumps(body)))]})
        assert done["r"], body
    seen = engine.seen + djl_engine.seen
    assert len(seen) == 7
    return [knobs(p) for p in seen]


def test_unset_knobs_take_the_model_defaults_on_every_route(http, djl) -> None:
    seen = through_every_door(http, djl, openai={"seed": 5}, lmi={"do_sample": True, "seed": 5})
    expected = {k.name: None for k in sampling_knobs()} | {"temperature": 0.6, "top_p": 0.9, "do_sample": True,
                                                           "seed": 5}
    assert seen == [expected] * 7


def test_the_request_wins_over_the_model(http, djl) -> None:
    asked = {"top_p": 0.5, "top_k": 4, "repetition_penalty": 1.1, "seed": 6}
    seen = through_every_door(http, djl, openai=asked, lmi={"do_sample": True, **asked})
    expected = {k.name: None for k in sampling_knobs()} | {"temperature": 0.6, "do_sample": True, **asked}
    assert seen == [expected] * 7


def test_greedy_keeps_the_model_knobs_but_does_not_sample(http, djl) -> None:
    """Temperature 0 (OpenAI) and ``do_sample`` false (LMI, TGI) are greedy on every route."""
    seen = through_every_door(http, djl, openai={"temperature": 0}, lmi={"do_sample": False})
    assert all(not s["do_sample"] and s["top_p"] == 0.9 for s in seen)
    assert {s["temperature"] for s in seen[:2] + seen[4:5] + seen[6:]} == {0}  # OpenAI-shaped bodies said 0


FAKE_KNOB = r'''
import dataclasses, json
from typing import Optional

import djl_python.engine.generation_defaults as generation_defaults
import djl_python.engine.knobs as knobs
import djl_python.engine.request as request


@dataclasses.dataclass(frozen=True)
class Params(request.SamplingParams):
    fake_knob: Optional[float] = request.knob("a knob only this test declares")


for module in (request, knobs, generation_defaults):
    module.SamplingParams = Params
# Only now do the API modules build their schemas.
from djl_python.api import lmi, openai, tgi
from djl_python.api.prompt import PromptBuilder
from djl_python.djl import bodies

model = generation_defaults.GenerationDefaults.from_dict({"fake_knob": 0.25, "temperature": 0.6})
prompts = PromptBuilder(None, model_defaults=model)
out = {"model": model.fake_knob}
for given in ({"fake_knob": 0.5}, {}):
    got = out.setdefault(json.dumps(given), {})
    got["openai_chat"] = openai.ChatCompletionRequest(messages=[{"role": "user", "content": "x"}],
                                                      **given).to_sampling_params(model).fake_knob
    got["openai_completions"] = openai.CompletionRequest(prompt="x", **given).to_sampling_params(model).fake_knob
    got["tgi"] = tgi.TgiRequest(inputs="x", parameters=given).to_sampling_params(model).fake_knob
    got["lmi"] = lmi.parse_request({"inputs": "x", "parameters": given}, model_defaults=model).params.fake_knob
    djl_body = bodies.coerce_parameters({"inputs": "x", "parameters": {k: str(v) for k, v in given.items()}})
    got["djl"] = lmi.parse_request(djl_body, model_defaults=model).params.fake_knob
try:
    lmi.parse_request({"inputs": "x", "parameters": {"fake_knob": "high"}})
    out["typed"] = "accepted a string"
except Exception as err:
    out["typed"] = getattr(err, "field", str(err))
print(json.dumps(out))
'''


def test_a_knob_added_to_sampling_params_reaches_every_api() -> None:
    done = subprocess.run([sys.executable, "-c", FAKE_KNOB], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    apis = ("openai_chat", "openai_completions", "tgi", "lmi", "djl")
    assert out["model"] == 0.25
    assert out['{"fake_knob": 0.5}'] == dict.fromkeys(apis, 0.5)  # the request's value
    assert out["{}"] == dict.fromkeys(apis, 0.25)  # else the model's
    assert out["typed"] == "parameters.fake_knob"
