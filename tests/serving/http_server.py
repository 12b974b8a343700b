"""Start ``djl-serve`` as a real subprocess on 127.0.0.1 for the HTTP tests.

Each server gets its own copy of a tiny model folder with a ``serving.properties``
so options never leak between test modules. Also: an in-process app whose model load
waits for the test (:func:`slow_loading_client`), for what is served while loading.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Optional

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_tiny_server(tmp_path_factory, name: str, options: Mapping[str, object], max_positions: int) -> "Server":
    """A tiny llama with a ``max_positions`` window, copied with ``options``, served on 127.0.0.1
    (its log under a ``logs`` temp folder as ``<name>.log``)."""
    from tests.models import make_tiny_model

    model = make_tiny_model("llama", tmp_path_factory.mktemp(f"{name}-model") / "tiny", max_positions=max_positions)
    folder = model_folder(model, tmp_path_factory.mktemp(name) / "tiny", options)
    return start_server(folder, tmp_path_factory.mktemp("logs") / f"{name}.log")


@contextmanager
def slow_loading_client(model_dir: Path) -> Iterator[tuple[object, threading.Event]]:
    """A ``TestClient`` on the app for ``model_dir`` (CPU, 1 slot, 64 positions) whose model load
    blocks until the yielded event is set (at most 60 s): the app is *loading* until then."""
    from fastapi.testclient import TestClient

    from djl_python.config import load_config
    from djl_python.loader import load_engine
    from djl_python.serving.app import create_app

    config = load_config(model_dir, properties={"device": "cpu", "max_rolling_batch_size": "1",
                                                "n_positions": "64"}, env={})
    release = threading.Event()

    def slow_factory(cfg):
        release.wait(60)
        return load_engine(cfg)

    with TestClient(create_app(config, slow_factory)) as client:
        yield client, release


@contextmanager
def client_with_engine(config, wrap) -> Iterator[tuple[object, object]]:
    """A ``TestClient`` on the app for ``config`` whose engine is ``wrap(load_engine(config))`` (a test's
    recording or failing engine), yielded once ``/ping`` answers 200, with that engine."""
    import time

    from fastapi.testclient import TestClient

    from djl_python.loader import load_engine
    from djl_python.serving.app import create_app

    holder = {}

    def factory(cfg):
        holder["engine"] = wrap(load_engine(cfg))
        return holder["engine"]

    with TestClient(create_app(config, factory, model_name="tiny")) as client:
        while client.get("/ping").status_code != 200:
            time.sleep(0.05)
        yield client, holder["engine"]


def model_folder(source: Path, target: Path, options: Mapping[str, object]) -> Path:
    """Copy ``source`` to ``target`` and write ``serving.properties`` with ``option.<key>=<value>``."""
    shutil.copytree(source, target)
    lines = [f"option.{key}={value}" for key, value in options.items()]
    (target / "serving.properties").write_text("\n".join(lines) + "\n")
    return target


def _command() -> list[str]:
    script = Path(sys.executable).parent / "djl-serve"
    return [str(script)] if script.exists() else [sys.executable, "-m", "djl_python.serving.cli"]


@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    log: Path

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_server(model_dir: Path, log: Path, *, extra_args: tuple[str, ...] = (), wait: bool = True,
                 env: Optional[Mapping[str, str]] = None, timeout: float = 180.0) -> Server:
    """Launch ``djl-serve --model-dir model_dir`` on a free port; wait for ``/ping`` 200 if ``wait``."""
    port = free_port()
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("OPTION_") and k != "SERVING_LOAD_MODELS"}
    clean_env.update({"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"})
    clean_env.update(env or {})
    handle = open(log, "wb")
    proc = subprocess.Popen(
        [*_command(), "--model-dir", str(model_dir), "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "info", *extra_args],
        stdout=handle, stderr=subprocess.STDOUT, env=clean_env,
    )
    server = Server(proc, f"http://127.0.0.1:{port}", log)
    if wait:
        wait_ready(server, timeout)
    return server


def wait_ready(server: Server, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"djl-serve exited with {server.proc.returncode}:\n{server.logs()}")
        try:
            if httpx.get(f"{server.url}/ping", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"djl-serve did not become ready in {timeout}s:\n{server.logs()}")


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, label_text = head.partition("{")
        if metric != name:
            continue
        if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            total += float(value)
    return total


def metrics(server: Server) -> str:
    """The server's Prometheus text."""
    return httpx.get(f"{server.url}/metrics").text


def wait_for(server: Server, predicate, timeout: float = 60.0) -> str:
    """Poll ``/metrics`` until ``predicate(text)``; the matching text."""
    deadline = time.monotonic() + timeout
    while True:
        text = metrics(server)
        if predicate(text):
            return text
        assert time.monotonic() < deadline, f"metrics never matched:\n{text}"
        time.sleep(0.05)


def idle(text: str) -> bool:
    """No request running or waiting."""
    return metric_value(text, "djl_num_requests_running") == 0 and metric_value(text, "djl_num_requests_waiting") == 0
