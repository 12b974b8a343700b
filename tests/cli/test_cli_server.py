"""djl-serve as a real process on 127.0.0.1: start-up failures exit, flags and access control work."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Mapping, Optional, Sequence

import httpx
import pytest
from transformers import AutoTokenizer

from tests.serving.http_server import Server, _command, free_port, wait_ready

TINY = ("--max-num-seqs", "2", "--max-model-len", "64")


def launch(args: Sequence[str], log: Path, *, port: Optional[int] = None,
           env: Optional[Mapping[str, str]] = None) -> Server:
    """``djl-serve ARGS --host 127.0.0.1 --port P`` with a clean environment (no OPTION_*)."""
    port = port or free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OPTION_") and k not in (
        "SERVING_LOAD_MODELS", "HF_MODEL_ID")}
    clean.update({"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
                  "OPTION_DEVICE": "cpu", **(env or {})})
    with open(log, "wb") as handle:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen([*_command(), *args, "--host", "127.0.0.1", "--port", str(port)],
                                stdout=handle, stderr=subprocess.STDOUT, env=clean)
    return Server(proc, f"http://127.0.0.1:{port}", log)


def test_missing_model_dir_exits_2_naming_the_flag(tmp_path: Path) -> None:
    server = launch(["--model-dir", "/does/not/exist"], tmp_path / "log")
    assert server.proc.wait(60) == 2
    assert "--model-dir='/does/not/exist': no such folder" in server.logs()
    assert "SmolLM2" not in server.logs()


def test_taken_port_fails_fast_without_loading(tmp_path: Path, tiny_llama: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = launch([str(tiny_llama), *TINY], tmp_path / "log", port=taken.getsockname()[1])
        assert server.proc.wait(60) == 1
    logs = server.logs()
    assert "cannot listen on 127.0.0.1:" in logs and "(--host/--port)" in logs
    assert "loading" not in logs and "device:" not in logs  # nothing was loaded


def test_permanent_load_failure_logs_one_line_and_exits_1(tmp_path: Path, tiny_llama: Path) -> None:
    """A folder with a broken config.json: chosen (it holds model files), fails to load, the process ends."""
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "config.json").write_text("{ not json")
    server = launch(["--model-dir", str(folder)], tmp_path / "log")
    assert server.proc.wait(120) == 1, server.logs()
    logs = server.logs()
    errors = [line for line in logs.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "model loading failed: ArtifactError: cannot parse" in errors[0], logs
    assert "stopping with exit status 1" in logs
    assert "Traceback" not in logs  # a user error: its traceback is logged at debug level only


def test_load_timeout_exits_1_although_the_load_thread_still_blocks(tmp_path: Path, tiny_llama: Path) -> None:
    folder = tmp_path / "stuck"
    shutil.copytree(tiny_llama, folder)
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
        os.mkfifo(weights)  # opening it blocks until a writer comes: a load that never finishes
    server = launch(["--model-dir", str(folder)], tmp_path / "log", env={"OPTION_MODEL_LOADING_TIMEOUT": "1"})
    assert server.proc.wait(60) == 1, server.logs()
    assert "loading did not finish within model_loading_timeout=1s" in server.logs()


@pytest.fixture(scope="module")
def secured(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory):
    """The docs' SERVING_LOAD_MODELS example with model flags, an API key and one allowed origin."""
    logs = tmp_path_factory.mktemp("cli-logs")
    template = logs / "chat.jinja"
    template.write_text("{% for m in messages %}USER SAID {{ m['content'] }}{% endfor %}")
    server = launch(["--api-key", "s3cret", "--allowed-origins", "https://ui.example", "--max-num-seqs", "3",
                     "--max-model-len", "48", "--dtype", "bfloat16", "--chat-template", str(template)], logs / "log",
                    env={"SERVING_LOAD_MODELS": f"test::Python={tiny_llama}", "OPTION_MAX_ROLLING_BATCH_SIZE": "5"})
    try:
        wait_ready(server, 180)
        yield server
    finally:
        server.stop()


AUTH = {"Authorization": "Bearer s3cret"}


def test_serving_load_models_name_is_served(secured: Server) -> None:
    resp = httpx.post(f"{secured.url}/predictions/test", headers=AUTH,
                      json={"inputs": "Hello", "parameters": {"max_new_tokens": 2}}, timeout=60)
    assert resp.status_code == 200 and "generated_text" in resp.json()
    models = httpx.get(f"{secured.url}/v1/models", headers=AUTH).json()
    assert [m["id"] for m in models["data"]] == ["test"]
    assert "chosen by model files in SERVING_LOAD_MODELS=" in secured.logs()


def test_api_key_is_required_except_for_health(secured: Server) -> None:
    assert httpx.get(f"{secured.url}/ping").status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        resp = httpx.post(f"{secured.url}/v1/completions", headers=headers, json={"prompt": "Hi", "max_tokens": 1})
        assert resp.status_code == 401 and resp.headers["www-authenticate"] == "Bearer"
        assert resp.json()["error"]["type"] == "authentication_error"
    assert httpx.get(f"{secured.url}/metrics").status_code == 401
    assert "s3cret" not in secured.logs()


def test_cors_allows_the_configured_origin_only(secured: Server) -> None:
    preflight = {"Origin": "https://ui.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    resp = httpx.options(f"{secured.url}/v1/completions", headers=preflight)
    assert resp.status_code == 200 and resp.headers["access-control-allow-origin"] == "https://ui.example"
    other = httpx.options(f"{secured.url}/v1/completions", headers={**preflight, "Origin": "https://evil.example"})
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    refused = httpx.get(f"{secured.url}/v1/models", headers={"Origin": "https://ui.example"})
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == "https://ui.example"


def test_model_flags_shape_the_engine(secured: Server, tiny_llama: Path) -> None:
    info = httpx.get(f"{secured.url}/info", headers=AUTH).json()
    # --max-num-seqs 3 beats OPTION_MAX_ROLLING_BATCH_SIZE=5: the command line comes first.
    assert (info["max_batch_size"], info["max_total_tokens"], info["model_dtype"]) == (3, 48, "bf16")
    chat = httpx.post(f"{secured.url}/v1/chat/completions", headers=AUTH, timeout=60, json={
        "model": "test", "messages": [{"role": "user", "content": "hey"}], "max_tokens": 1})
    plain = httpx.post(f"{secured.url}/v1/completions", headers=AUTH, timeout=60,
                       json={"model": "test", "prompt": "USER SAID hey", "max_tokens": 1})
    # The --chat-template replaced the tokenizer's: the prompt is exactly the template's rendering.
    assert chat.status_code == plain.status_code == 200
    assert chat.json()["usage"]["prompt_tokens"] == plain.json()["usage"]["prompt_tokens"]
    own = AutoTokenizer.from_pretrained(str(tiny_llama)).apply_chat_template(
        [{"role": "user", "content": "hey"}], add_generation_prompt=True, tokenize=False)
    assert "USER SAID" not in own  # the model's own template would have rendered something else
