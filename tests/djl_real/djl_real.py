"""DJL's published Java front end for the Python engine, in our tests.

``ai.djl.python:python`` (PyEngine, PyModel, PyProcess, Connection, RollingBatch) with
``ai.djl:api`` is what launches the Python worker and speaks its protocol inside DJL Serving;
``Harness.java`` loads a model folder through DJL's ``Criteria`` and serves requests through one
``Predictor`` the way DJL Serving's worker threads do. The jars come from Maven Central through
``mvn dependency:copy-dependencies`` (``pom.xml``), kept under ``~/.cache/djl_python/djl-java/<v>``
with the compiled harness, so a second run starts Java at once.

What is not here: ``ai.djl.serving:serving`` and ``ai.djl.serving:wlm`` (the HTTP front end, the
LMI config recommender, ``OPTION_*`` handling) are not served by the registry these machines
reach, and neither are the python engine's 0.26-0.29 or 0.35+ releases. ``VERSIONS`` lists the
releases that resolve (docs/deployment.md says which were tried).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
VERSIONS = ("0.25.0", "0.34.0")  # the ai.djl.python:python releases the registry serves that run our engine
STARTED: set[str] = set()  # the versions a RealDjl loaded a model under, for the run's summary
CACHE = Path(os.environ.get("DJL_JAVA_CACHE", Path.home() / ".cache" / "djl_python" / "djl-java"))


def java_classpath(version: str) -> str:
    """Fetch the jars for ``version`` (once) and compile the harness against them (once per source)."""
    home = CACHE / version
    lib, classes = home / "lib", home / "classes"
    marker = lib / ".complete"
    if not marker.exists():
        shutil.rmtree(lib, ignore_errors=True)
        run = subprocess.run(["mvn", "-q", "-B", "-f", str(HERE / "pom.xml"), f"-Ddjl.version={version}",
                              "dependency:copy-dependencies", f"-DoutputDirectory={lib}"],
                             capture_output=True, text=True, timeout=600)
        if run.returncode != 0:
            raise RuntimeError(f"mvn could not fetch DJL {version}:\n{run.stdout[-3000:]}{run.stderr[-3000:]}")
        marker.write_text(version)
    source = HERE / "Harness.java"
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    stamp = classes / f".{digest}"
    if not stamp.exists():
        shutil.rmtree(classes, ignore_errors=True)
        classes.mkdir(parents=True)
        run = subprocess.run(["javac", "-d", str(classes), "-cp", f"{lib}/*", str(source)],
                             capture_output=True, text=True, timeout=300)
        if run.returncode != 0:
            raise RuntimeError(f"javac failed against DJL {version}:\n{run.stderr}")
        stamp.write_text(digest)
    return f"{lib}/*{os.pathsep}{classes}"


def install_engine(engine_cache: Path, version: str) -> None:
    """``djl-engine-install --djl-version V`` with ``ENGINE_CACHE_DIR`` set, as docs/deployment.md says."""
    script = Path(sys.executable).with_name("djl-engine-install")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "djl_python.djl.install"]
    env = {**os.environ, "ENGINE_CACHE_DIR": str(engine_cache), "PYTHONPATH": str(REPO)}
    run = subprocess.run([*cmd, "--djl-version", version], env=env, capture_output=True, text=True, timeout=120)
    if run.returncode != 0:
        raise RuntimeError(run.stderr)


class RealDjl:
    """One ``Harness`` process: DJL's Java loads ``model_dir`` and starts our engine in it."""

    def __init__(self, version: str, model_dir: Path, engine_cache: Path, env: Optional[dict[str, str]] = None,
                 chunk_wait_s: int = 30) -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith("OPTION_") and k != "PYTHONPATH"}
        base.update({"ENGINE_CACHE_DIR": str(engine_cache), "PYTHON_EXECUTABLE": sys.executable,
                     "HF_HUB_OFFLINE": "1", **(env or {})})
        self.version = version
        self.log_lines: list[str] = []
        self.proc = subprocess.Popen(
            ["java", "-cp", java_classpath(version), "Harness", str(model_dir), str(chunk_wait_s)],
            env=base, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            encoding="utf-8")
        threading.Thread(target=self._drain, daemon=True).start()
        first = self.proc.stdout.readline()  # type: ignore[union-attr]
        if first.strip() != "READY":
            self.close()
            raise RuntimeError(f"DJL {version} did not load the model: {first.strip()}\n{self.log}")
        STARTED.add(version)
        self._results: dict[str, dict] = {}
        self._arrived = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _drain(self) -> None:
        for line in self.proc.stderr:  # type: ignore[union-attr]
            self.log_lines.append(line)

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            result = json.loads(line)
            with self._arrived:
                self._results[result["id"]] = result
                self._arrived.notify_all()

    @property
    def log(self) -> str:
        return "".join(self.log_lines)

    def send(self, rid: str, body: dict, headers: Optional[dict[str, str]] = None) -> None:
        line = json.dumps({"id": rid, "body": json.dumps(body),
                           "headers": headers or {"Content-Type": "application/json"}})
        self.proc.stdin.write(line + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]

    def result(self, rid: str, timeout: float = 120) -> dict:
        with self._arrived:
            if not self._arrived.wait_for(lambda: rid in self._results, timeout):
                raise TimeoutError(f"no answer for {rid} from DJL {self.version}:\n{self.log[-4000:]}")
            return self._results[rid]

    def worker_pids(self) -> list[int]:
        """The Python workers Java started (children of the Java process)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                    pids.append(int(entry.name))
        return pids

    def close(self) -> int:
        try:
            self.proc.stdin.close()  # type: ignore[union-attr]
            return self.proc.wait(60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
