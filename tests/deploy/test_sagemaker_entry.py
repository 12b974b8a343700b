"""The CPU image's entry command, run outside a container the way SageMaker starts the container.

SageMaker runs ``docker run IMAGE serve`` with the model unpacked, read-only, in /opt/ml/model and
sends ``GET /ping`` and ``POST /invocations`` to port 8080 (or to ``SAGEMAKER_BIND_TO_PORT``).
Here ``docker/serve serve`` gets a tiny model folder mounted read-only at a path given by
``SM_MODEL_DIR`` and its port from ``SAGEMAKER_BIND_TO_PORT``.

Read-only: where unprivileged user namespaces are allowed, the folder is bind-mounted read-only in
a private mount namespace (``unshare``), which stops root too, like SageMaker's mount; elsewhere its
files lose their write bits. Either way the test checks that nothing in the folder changed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.deploy.repo_files import REPO

SERVE = REPO / "docker/serve"
OPTIONS = "option.device=cpu\noption.max_rolling_batch_size=2\noption.n_positions=128\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def _read_only_mount_works(source: Path, target: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = ("mount --bind \"$0\" \"$1\" && mount -o remount,bind,ro \"$1\" && ! touch \"$1/.probe\" 2>/dev/null")
    proc = subprocess.run(["unshare", "-r", "-m", "sh", "-c", probe, str(source), str(target)],
                          capture_output=True, timeout=30)
    return proc.returncode == 0 and not (source / ".probe").exists()


def _environment(model_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPTION_", "SM_", "SAGEMAKER_")) and k not in ("SERVING_LOAD_MODELS", "HF_MODEL_ID")}
    env.update({
        "SM_MODEL_DIR": str(model_dir),
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "DJL_SERVE_HOST": "127.0.0.1",  # tests talk only to loopback; the image's default is 0.0.0.0
        # djl-serve of the interpreter running the tests; PYTHONPATH (if set) keeps this checkout first.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
    })
    return env


@pytest.fixture()
def sagemaker_model(tiny_llama, tmp_path):
    """``(folder the server reads, folder on disk, read-only mount used)``."""
    source = tmp_path / "model-src"
    shutil.copytree(tiny_llama, source)
    (source / "serving.properties").write_text(OPTIONS)
    mount_point = tmp_path / "opt-ml-model"
    mount_point.mkdir()
    if _read_only_mount_works(source, mount_point):
        return mount_point, source, True
    for path in [source, *source.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)
    return source, source, False


def test_serve_entry_command_answers_ping_and_invocations(sagemaker_model, tmp_path):
    assert (Path(sys.executable).parent / "djl-serve").exists(), "djl-serve is not installed in this venv"
    model_dir, on_disk, mounted = sagemaker_model
    before = _snapshot(on_disk)
    port = _free_port()
    command = [str(SERVE), "serve"]
    if mounted:
        setup = 'mount --bind "$0" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
        command = ["unshare", "-r", "-m", "sh", "-c", setup, str(on_disk), str(model_dir), *command]
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=_environment(model_dir, port))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        ping = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ping = httpx.get(f"{url}/ping", timeout=2)
                if ping.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        assert ping is not None and ping.status_code == 200, log.read_text(errors="replace")
        assert ping.json() == {"status": "healthy"}

        answer = httpx.post(f"{url}/invocations", timeout=60,
                            json={"inputs": "Paris is the capital of", "parameters": {"max_new_tokens": 4}})
        assert answer.status_code == 200, answer.text
        assert isinstance(answer.json()["generated_text"], str)
        # The model came from SM_MODEL_DIR (the served name is its folder), not from a default.
        models = httpx.get(f"{url}/v1/models", timeout=10).json()
        assert [m["id"] for m in models["data"]] == [model_dir.name]
    finally:
        proc.terminate()  # SIGTERM: the script exec'd djl-serve, so the signal reaches the server itself
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, log.read_text(errors="replace")  # drained and exited cleanly
    assert _snapshot(on_disk) == before, "the server wrote into the read-only model folder"

