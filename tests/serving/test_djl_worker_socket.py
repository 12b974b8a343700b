"""``python -m djl_python.worker`` as a subprocess, driven over a socket by the Java double (DJL 0.28 wire).

No model is loaded: an unknown handler is a cheap round trip. Serving a model
through the same engine loop is ``test_djl_launch.py``'s job.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.models import make_tiny_model
from tests.serving.djl_java import JavaInput, JavaWire

SERVING_PROPERTIES = """\
engine=Python
option.entryPoint=djl_python.transformers_neuronx
option.rolling_batch=auto
option.max_rolling_batch_size=4
option.device=cpu
option.n_positions=128
"""
REPO = Path(__file__).resolve().parents[2]


class Worker:
    """The subprocess plus Java's side of the socket."""

    def __init__(self, model_dir: Path, sock_dir: Path, tcp_port: int | None = None) -> None:
        self.sock_path = str(sock_dir / "djl_sock.19000")
        where = (["--sock-type", "unix", "--sock-name", self.sock_path] if tcp_port is None
                 else ["--sock-type", "tcp", "--port", str(tcp_port)])
        cmd = [sys.executable, "-m", "djl_python.worker", *where,
               "--model-dir", str(model_dir), "--entry-point", "djl_python.transformers_neuronx",
               "--device-id", "-1", "--cluster-size", "1", "--recommended-entry-point", "",
               "--log-level", "info", "--no-async-mode"]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(cmd, cwd=str(model_dir), env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.log: list[str] = []
        self.started = threading.Event()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        assert self.started.wait(60), "worker never printed its start marker:\n" + "".join(self.log)
        # Java connects; the worker listens.
        if tcp_port is None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(self.sock_path)
        else:
            self.sock = socket.create_connection(("127.0.0.1", tcp_port), timeout=30)
        self.sock.settimeout(120)

    def _read_stdout(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.log.append(line)
            if "Python engine started." in line:  # Java's ReaderThread looks for exactly this
                self.started.set()

    def send(self, inp: JavaInput):
        return JavaWire(self.sock, "0.28.0").send(inp)

    def close(self) -> int:
        self.sock.close()
        try:
            return self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    path = make_tiny_model("llama", tmp_path / "tiny-llama")
    (path / "serving.properties").write_text(SERVING_PROPERTIES)
    return path


@pytest.fixture
def sock_dir():
    path = Path(tempfile.mkdtemp(prefix="djl", dir="/tmp"))  # AF_UNIX paths must stay short
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_worker_exits_cleanly_on_sigterm(model_dir: Path, sock_dir: Path, transport: str):
    worker = Worker(model_dir, sock_dir, tcp_port=_free_port() if transport == "tcp" else None)
    if transport == "unix":
        assert Path(worker.sock_path + ".pid").read_text() == str(worker.proc.pid)
    # The connection works (a cheap round trip: an unknown handler is a 424, no model load).
    assert worker.send(JavaInput({"handler": "no_such_function"})).code == 424
    worker.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 30
    while worker.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert worker.close() == 0
    assert not os.path.exists(worker.sock_path) and not os.path.exists(worker.sock_path + ".pid")
