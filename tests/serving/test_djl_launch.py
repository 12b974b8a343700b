"""The real launch: ``djl-engine-install`` into DJL's engine folder, then Java's command line, environment and wire.

The engine folder already holds a decoy ``djl_python/`` (and a decoy
``djl_python_engine.py``), standing for the copy DJL extracts from its JAR:
importing it writes a marker file and raises. Java's side is ``djl_java``
(written from djl-serving v0.26.0-v0.28.0); the oracle is transformers'
``generate()`` on each prompt alone.

Each test runs twice: on the PyTorch backend (``option.device=cpu``) and on the Neuron backend
(``option.device=neuron``) over the transformers-neuronx double, which the worker finds on its
``PYTHONPATH`` as it would find the real package in an LMI Neuron image. The Neuron run is the
one the compatibility runs (Python 3.9 and 3.10, transformers 4.47) can load; there the PyTorch
run skips.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from tests.models import make_tiny_model, require_pytorch_backend
from tests.serving.djl_java import (
    JavaInput, JavaRollingBatch, JavaWire, http_input, init_properties, java_command, java_environment, java_rolls,
)
from tests.staggered import greedy_references

REPO = Path(__file__).resolve().parents[2]
NEURON_DOUBLE = REPO / "tests" / "neuron_double"
COMMON = "engine=Python\noption.entryPoint=djl_python.transformers_neuronx\noption.max_rolling_batch_size=4\n"
DECOY = ("import pathlib\n"
         "pathlib.Path(__file__).with_name('IMPORTED').write_text('decoy')\n"
         "raise ImportError('the decoy djl_python bundled by DJL was imported')\n")
PROMPTS = {"a": ("The quick brown fox", 12), "b": ("Paris is the capital", 7), "c": ("Hello world!", 9),
           "d": ("def f(x):", 5)}


def decoy(folder: Path) -> Path:
    pkg = folder / "djl_python"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(DECOY)
    return pkg


def install(engine_dir: Path, version: str) -> None:
    """``djl-engine-install`` (the console script; its module before the package is pip-installed)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    script = Path(sys.executable).with_name("djl-engine-install")  # the console script, once pip-installed
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "djl_python.djl.install"]
    run = subprocess.run([*cmd, "--target", str(engine_dir), "--djl-version", version], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr


class JavaLaunched:
    """``Connection.startPython`` + ``PyProcess`` (start marker) + ``Connection.connect``."""

    def __init__(self, engine_dir: Path, model_dir: Path, version: str, sock_dir: Path, device: str) -> None:
        self.sock_path = str(sock_dir / "djl_sock.19000")
        base = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing of ours on the path
        base["HF_HUB_OFFLINE"] = "1"
        if device == "neuron":  # transformers-neuronx is installed in a Neuron image: here, its double
            base["PYTHONPATH"] = str(NEURON_DOUBLE)
        cmd = java_command(engine_dir, model_dir, self.sock_path, "djl_python.transformers_neuronx")
        self.proc = subprocess.Popen(cmd, env=java_environment(engine_dir, model_dir, base), cwd=str(model_dir),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.log: list[str] = []
        started = threading.Event()

        def read() -> None:
            for line in self.proc.stdout:  # type: ignore[union-attr]
                self.log.append(line)
                if "Python engine started." in line:
                    started.set()

        threading.Thread(target=read, daemon=True).start()
        assert started.wait(90), "no start marker:\n" + "".join(self.log)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.sock_path)
        self.sock.settimeout(120)
        self.wire = JavaWire(self.sock, version)

    def close(self) -> int:
        self.sock.close()
        try:
            return self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture(scope="module", params=["cpu", "neuron"])
def device(request) -> str:
    if request.param == "cpu":
        require_pytorch_backend()
    return request.param


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_tiny_model("llama", tmp_path_factory.mktemp("launch") / "tiny-llama")


@pytest.fixture(scope="module")
def reference(model_dir):
    """Greedy ids, text and prompt + text of each prompt alone with transformers' ``generate()``."""
    return greedy_references(model_dir, PROMPTS)


@pytest.fixture
def layout(tmp_path, model_dir, device):
    """A model folder copy with its own serving.properties, an engine cache folder, a short socket folder."""
    sock_dir = Path(tempfile.mkdtemp(prefix="djl", dir="/tmp"))  # AF_UNIX paths must stay short
    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    yield model, tmp_path / "cache" / "python", sock_dir, device
    shutil.rmtree(sock_dir, ignore_errors=True)


def session(layout, version: str, properties: str):
    model, cache, sock_dir, device = layout
    engine_dir = cache / version
    bundled = decoy(engine_dir)
    (engine_dir / "djl_python_engine.py").write_text(DECOY)
    install(engine_dir, version)
    assert not bundled.exists() and (engine_dir / "djl_python.djl-bundled" / "__init__.py").exists()
    decoy(engine_dir)  # and even a djl_python/ that reappears there is never imported
    (model / "serving.properties").write_text(COMMON + f"option.device={device}\n" + properties)
    java = JavaLaunched(engine_dir, model, version, sock_dir, device)
    init = init_properties((model / "serving.properties").read_text())
    return java, init, engine_dir


def finish(java: JavaLaunched, engine_dir: Path) -> None:
    code = java.close()
    assert code == 0, "".join(java.log)
    assert not (engine_dir / "djl_python" / "IMPORTED").exists(), "the decoy package was imported"
    assert not os.path.exists(java.sock_path) and not os.path.exists(java.sock_path + ".pid")


def test_djl_028_rolling_batch_through_the_installed_launcher(layout, reference):
    java, init, engine_dir = session(layout, "0.28.0", "option.rolling_batch=auto\noption.n_positions=128\n")
    try:
        assert java_rolls(init, "0.28.0")
        assert java.wire.send(JavaInput(init)).code == 204, "".join(java.log)
        body = {name: json.dumps({"inputs": p, "parameters": {"max_new_tokens": n}, "stream": name in ("a", "c")})
                for name, (p, n) in PROMPTS.items()}
        loop = JavaRollingBatch(java.wire.send, "0.28.0")
        done = loop.run({0: [("a", http_input(body["a"]))], 1: [("b", http_input(body["b"]))],
                         3: [("c", http_input(body["c"])), ("d", http_input(body["d"]))]})
        assert loop.failed_batches == 0
        for name in PROMPTS:
            req = done[name]
            # One record per step until the last; only the final one says last (Java's removeIf(last)).
            assert req.lasts[-1] and not any(req.lasts[:-1]) and req.code == 200
            gen_ids, text, _ = reference[name]
            if name in ("a", "c"):  # streamed: jsonlines, one line per token
                lines = [json.loads(x) for x in req.text.splitlines()]
                assert [ln["token"]["id"] for ln in lines] == gen_ids, name
                assert lines[-1]["generated_text"] == text
                assert req.headers["Content-Type"] == "application/jsonlines"
            else:
                assert json.loads(req.text) == {"generated_text": text}, name
                assert req.headers["Content-Type"] == "application/json"
    finally:
        finish(java, engine_dir)
    assert "DJL 0.28.0 (int32 strings)" in "".join(java.log)


@pytest.mark.parametrize("version", ["0.26.0", "0.28.0"])
def test_plain_requests_when_rolling_batch_is_absent(layout, reference, version):
    """No rolling_batch: Java sends each request plain; DJL's handler answers [{"generated_text": prompt+gen}]."""
    java, init, engine_dir = session(layout, version, "")
    try:
        assert not java_rolls(init, version)
        assert java.wire.send(JavaInput(init)).code == 204, "".join(java.log)
        for name in ("d",):
            prompt, n = PROMPTS[name]
            out = java.wire.send(http_input(json.dumps({"inputs": prompt, "parameters": {"max_new_tokens": n}})))
            assert out.code == 200 and out.properties["Content-Type"] == "application/json"
            assert json.loads(out.content[0][1]) == [{"generated_text": reference[name][2]}], name
        long_text = "é" * 20_000  # 40 kB of UTF-8: int32 strings carry it, int16 ones cannot
        out = java.wire.send(http_input(json.dumps({"inputs": "x", "parameters": {"max_new_tokens": 1}}),
                                        headers={"x-note": long_text})) \
            if version != "0.26.0" else None
        assert out is None or out.code == 200
    finally:
        finish(java, engine_dir)
    log = "".join(java.log)
    assert f"DJL {version} ({'int16' if version == '0.26.0' else 'int32'} strings)" in log
    assert "option.n_positions is not set: defaulting to 128" in log
