"""Our engine under DJL's published Java front end (``djl_real.RealDjl``), every version served.

Oracle: transformers' greedy ``generate()`` on each prompt alone. Both deployment forms of the
seed: ``serving.properties`` in the model folder, and environment only (``OPTION_*``). The engine
is installed as docs/deployment.md tells users (``djl-engine-install`` into the folder Java
computes from ``ENGINE_CACHE_DIR``); Java starts ``python <folder>/djl_python_engine.py``.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.djl_real.djl_real import REPO, VERSIONS, RealDjl, install_engine
from tests.models import make_tiny_model, require_pytorch_backend
from tests.staggered import greedy_references

PROMPTS = {"a": ("The quick brown fox", 12), "b": ("Paris is the capital", 7), "c": ("Hello world!", 9)}
PROPERTIES = ("engine=Python\noption.entryPoint=djl_python.transformers_neuronx\noption.rolling_batch=tnx\n"
              "option.max_rolling_batch_size=2\noption.device=cpu\noption.n_positions=128\n")
# Java's RollingBatch labels every reply from the model's output_formatter (json unless set),
# streamed or not, up to 0.26 (v0.25.0 RollingBatch.java:72-77); later releases keep ours.
STREAM_CONTENT_TYPE = {"0.25.0": "application/json", "0.34.0": "application/jsonlines"}
ROLLING = "transformers_neuronx handler ready (rolling batch: True)"
ENV_ONLY = {"OPTION_ENTRYPOINT": "djl_python.transformers_neuronx", "OPTION_ROLLING_BATCH": "tnx",
            "OPTION_MAX_ROLLING_BATCH_SIZE": "2", "OPTION_DEVICE": "cpu", "OPTION_N_POSITIONS": "128"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    require_pytorch_backend()
    return make_tiny_model("llama", tmp_path_factory.mktemp("real-djl") / "tiny-llama")


@pytest.fixture(scope="module")
def reference(model_dir):
    return greedy_references(model_dir, PROMPTS)


def body(name: str, stream: bool = False, **parameters) -> dict:
    prompt, n = PROMPTS[name]
    return {"inputs": prompt, "parameters": {"max_new_tokens": n, **parameters}, "stream": stream}


def start(version: str, tmp_path: Path, model_dir: Path, properties: str | None, env: dict | None = None,
          chunk_wait_s: int = 30) -> RealDjl:
    folder = tmp_path / "model"
    folder.mkdir()
    for item in model_dir.iterdir():
        (folder / item.name).symlink_to(item)
    if properties is not None:
        (folder / "serving.properties").write_text(properties)
    cache = tmp_path / "engine-cache"
    install_engine(cache, version)
    return RealDjl(version, folder, cache, env=env, chunk_wait_s=chunk_wait_s)


def streamed_ids(result: dict) -> list[int]:
    return [json.loads(line)["token"]["id"] for line in "".join(result["chunks"]).splitlines()]


@pytest.fixture(scope="module", params=VERSIONS)
def properties_form(request, tmp_path_factory, model_dir) -> Iterator[RealDjl]:
    """One DJL per version, configured by serving.properties, shared by the tests below (each
    Java start costs seconds); closing it must exit 0."""
    djl = start(request.param, tmp_path_factory.mktemp("djl"), model_dir, PROPERTIES, chunk_wait_s=15)
    yield djl
    assert djl.close() == 0, djl.log[-3000:]


def test_properties_form_rolls_more_requests_than_slots(properties_form, reference):
    """Three requests on two slots, two of them streamed: each equals generate() alone."""
    djl = properties_form
    for name in PROMPTS:
        djl.send(f"roll-{name}", body(name, stream=name != "b"))
    for name in PROMPTS:
        result = djl.result(f"roll-{name}")
        assert result.get("code") == 200, (result, djl.log[-3000:])
        ids, text, _ = reference[name]
        if name == "b":
            assert json.loads("".join(result["chunks"])) == {"generated_text": text}
        else:
            assert streamed_ids(result) == ids, name
            assert result["properties"]["Content-Type"] == STREAM_CONTENT_TYPE[djl.version]
    assert ROLLING in djl.log and f"djl_python engine for DJL {djl.version}" in djl.log
    # the package that runs is this one, not DJL's bundled copy, and the log says so
    assert f"running djl_python from {REPO / 'djl_python'}" in djl.log


def test_bad_request_gets_a_client_error_naming_the_field_and_others_go_on(properties_form, reference):
    djl = properties_form
    djl.send("bad", {"inputs": "x", "parameters": {"max_new_tokens": -3}})
    djl.send("good", body("a", stream=True))
    bad, good = djl.result("bad"), djl.result("good")
    assert 400 <= bad.get("code", 0) < 500, bad
    assert "max_new_tokens" in "".join(bad["chunks"]) + str(bad.get("message")), bad
    assert good.get("code") == 200 and streamed_ids(good) == reference["a"][0]


@pytest.mark.parametrize("stream", [True, False])
def test_output_formatter_none_ending_on_a_stop_id_ends_the_stream(properties_form, stream, model_dir, reference):
    """A generation that ends on a stop id has nothing to say in its last record (DJL 0.29-0.31
    lost such a record; the Java double covers those releases). Here: the releases served."""
    from transformers import AutoTokenizer

    djl = properties_form
    ids = reference["a"][0]
    stop = next(t for t in ids[2:] if t not in ids[:2])
    expected = AutoTokenizer.from_pretrained(str(model_dir)).decode(ids[: ids.index(stop)], skip_special_tokens=True)
    djl.send(f"none-{stream}", body("a", stream=stream, stop_token_ids=[stop], output_formatter="none"))
    result = djl.result(f"none-{stream}", timeout=60)
    assert result.get("code") == 200 and "error" not in result, (result, djl.log[-3000:])
    assert "".join(result["chunks"]) == expected, result


@pytest.mark.parametrize("version", VERSIONS)
def test_environment_only_form(version, tmp_path, model_dir, reference):
    """No serving.properties: OPTION_* variables alone configure the model. The environment also
    holds what DJL Serving's start script exports for Java (v0.28.0 serving/build.gradle:141-152,
    0.34-0.36 serving/build.gradle.kts:134-143):
    its OMP_NUM_THREADS=1 must not pin the model to one core."""
    script = {"OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "1",
              "APP_HOME": f"/usr/local/djl-serving-{version}"}
    if version < "0.34":  # exec env MXNET_ENGINE_TYPE=NaiveEngine until MXNet left (djl-serving fa04fb0c)
        script["MXNET_ENGINE_TYPE"] = "NaiveEngine"
    djl = start(version, tmp_path, model_dir, None, env={**ENV_ONLY, **script})
    try:
        djl.send("a", body("a"))
        result = djl.result("a")
        assert result.get("code") == 200, (result, djl.log[-3000:])
        assert json.loads("".join(result["chunks"])) == {"generated_text": reference["a"][1]}
    finally:
        assert djl.close() == 0, djl.log[-3000:]
    assert ROLLING in djl.log
    assert "OMP_NUM_THREADS=1 comes from DJL Serving's start script" in djl.log


def test_worker_killed_mid_stream_is_restarted_by_java(tmp_path, model_dir, reference):
    """0.34's PyPredictor restarts a worker that died; the next request is served. The request in
    flight gets no end from Java: its stream runs into the reader's chunk timeout (DJL Serving's
    own timeouts end it there). The worker is stopped (SIGSTOP) before the request so that it is
    still in flight when the worker is killed: the tiny model would otherwise finish first."""
    djl = start("0.34.0", tmp_path, model_dir, PROPERTIES, chunk_wait_s=3)
    try:
        djl.send("warm", body("b"))
        assert djl.result("warm").get("code") == 200
        pids = djl.worker_pids()
        assert len(pids) == 1, pids
        os.kill(pids[0], signal.SIGSTOP)
        djl.send("cut", body("a", stream=True))
        time.sleep(1.0)
        os.kill(pids[0], signal.SIGKILL)
        cut = djl.result("cut")
        assert "timeout" in cut.get("error", "") and not cut["chunks"], cut
        # While Java restarts the worker (the model loads again) it refuses requests, saying why.
        deadline, attempt = time.monotonic() + 90, 0
        while True:
            attempt += 1
            djl.send(f"after-{attempt}", body("c", stream=True))
            after = djl.result(f"after-{attempt}")
            if after.get("code") == 200 or time.monotonic() > deadline:
                break
            assert "Backend Python process is stopped" in after.get("error", ""), after
            time.sleep(1)
        assert after.get("code") == 200 and streamed_ids(after) == reference["c"][0], (after, djl.log[-3000:])
        assert djl.worker_pids() and djl.worker_pids() != pids
    finally:
        djl.close()


def test_a_folder_without_entry_point_runs_this_package(tmp_path, model_dir, reference):
    """No option.entryPoint: DJL 0.34 recommends djl_python.huggingface (PyModel.load), which
    must load this package's handler, not fail or run DJL's bundled one."""
    properties = PROPERTIES.replace("option.entryPoint=djl_python.transformers_neuronx\n", "")
    djl = start("0.34.0", tmp_path, model_dir, properties)
    try:
        djl.send("a", body("a", stream=True))
        result = djl.result("a")
        assert result.get("code") == 200 and streamed_ids(result) == reference["a"][0], (result, djl.log[-3000:])
    finally:
        assert djl.close() == 0, djl.log[-3000:]
    assert "--recommended-entry-point', 'djl_python.huggingface'" in djl.log
    assert "DJL chose its default djl_python.huggingface" in djl.log and ROLLING in djl.log
