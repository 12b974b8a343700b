"""The launcher DJL's Java front end starts: arguments, the socket, and the loop that serves it.

Java starts it (``Connection.getPythonStartCmd``, djl-serving v0.26.0-v0.28.0,
``engines/python/src/main/java/ai/djl/python/engine/Connection.java``) as::

    python3 <engineCacheDir>/djl_python_engine.py --sock-type unix --sock-name <tmp>/djl_sock.<port>
        --model-dir <abs model dir> --entry-point <entry point> --device-id <n>
    (--sock-type tcp --port <port> when Unix sockets are unavailable; under MPI:
     --model-dir .. --entry-point .. --sock-type unix --sock-name .. --tensor-parallel-degree <n>)

with ``PYTHONPATH=$PYTHONPATH:<engineCacheDir>:<modelDir>`` and the model
folder as working directory (``PyEnv.getEnvironmentVars``,
``Connection.startPython``). Later releases add ``--cluster-size``,
``--recommended-entry-point``, ``--log-level``, ``--[no-]async-mode``,
``--pipeline-parallel-degree``; they are accepted, and any other option is
ignored with a warning so a newer Java does not kill the worker.

The process listens, prints ``Python engine started.`` (``PyProcess.ReaderThread``
waits for that line, 2 minutes), accepts Java within 30 s, then until the
connection closes or SIGTERM: ``Input(); read(sock)`` in place, add
``device_id`` (and ``tensor_parallel_degree`` when given), call the entry
point's ``handler`` function (``handle``) through ``ModelService`` (which adds
``model_dir``), send the ``Output`` (``None`` -> 204), then run its
``execute_finalize``. A handler exception becomes 424 ``{"code", "message":
"prediction failure", "error"}``; an out-of-memory error 507 (Java's
``PyProcess.predict`` treats 507 at load as OOM). This is what DJL's own
``djl_python_engine.py`` does.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from types import FrameType
from typing import Any, Optional

import djl_python
from djl_python.djl import protocol as djl_protocol
from djl_python.framing import ConnectionClosed
from djl_python.inputs import Input
from djl_python.outputs import Output

logger = logging.getLogger("djl_python.engine")

ACCEPT_TIMEOUT_S = 30.0  # DJL's SOCKET_ACCEPT_TIMEOUT
DEFAULT_ENTRY_POINT = "djl_python.transformers_neuronx"
STARTED_MARKER = "Python engine started."  # Java's ReaderThread waits for this line on stdout
_OOM_NAMES = ("OutOfMemoryError", "MemoryError")


def build_parser(prog: str = "djl_python_engine") -> argparse.ArgumentParser:
    """Every option any of DJL 0.26-0.28 passes, plus later releases' ones."""
    p = argparse.ArgumentParser(prog=prog, description="DJL Serving Python engine (djl_python)")
    p.add_argument("--sock-type", required=True, choices=["unix", "tcp"])
    p.add_argument("--sock-name", help="unix: socket path; tcp: ignored (binds 127.0.0.1 as DJL does)")
    p.add_argument("--port", type=int, help="tcp port")
    p.add_argument("--host", help="tcp address to bind (default 127.0.0.1)")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--entry-point", default="")
    p.add_argument("--recommended-entry-point", default="")
    p.add_argument("--device-id", default="-1")
    p.add_argument("--tensor-parallel-degree", type=int)
    p.add_argument("--pipeline-parallel-degree", type=int)
    p.add_argument("--cluster-size", type=int)
    p.add_argument("--log-level", default="info")
    p.add_argument("--async-mode", action=argparse.BooleanOptionalAction, default=False)
    return p


def parse_args(argv: Optional[list[str]] = None, prog: str = "djl_python_engine") -> argparse.Namespace:
    """Parse Java's command line; unknown options are reported and ignored. Exits 2 on bad usage."""
    parser = build_parser(prog)
    args, unknown = parser.parse_known_args(argv)
    args.unknown = unknown
    if args.sock_type == "unix" and not args.sock_name:
        parser.error("--sock-name is required with --sock-type unix")
    if args.sock_type == "tcp" and args.port is None:
        parser.error("--port is required with --sock-type tcp")
    if args.async_mode:
        parser.error("--async-mode is not supported by this worker; use DJL's synchronous protocol")
    return args


def invoke(service: Any, inputs: Input) -> Output:
    """Call the handler for ``inputs``; every failure becomes an error ``Output``."""
    name = inputs.get_function_name() or "handle"
    try:
        out = service.invoke_handler(name, inputs)
        if out is None:
            return Output(code=204, message="No content")
        if not isinstance(out, Output):
            return Output().error(f"Invalid output type: {type(out)}")
        return out
    except Exception as e:  # noqa: BLE001 - reported to Java, the worker keeps serving
        logger.exception("handler %s failed", name)
        if type(e).__name__ in _OOM_NAMES or "out of memory" in str(e).lower():
            return Output(code=507, message=str(e))
        return Output().error(str(e))


class EngineServer:
    """The listening socket, its pid file, and the request loop for one Java connection."""

    def __init__(self, args: argparse.Namespace, service: Any) -> None:
        self.args = args
        self.service = service
        rank = os.environ.get("OMPI_COMM_WORLD_RANK")
        # Under MPI every rank listens on its own socket, as DJL's engine script does.
        self.sock_name = f"{args.sock_name}.{rank}" if rank and args.sock_type == "unix" else args.sock_name

    def _listen(self) -> socket.socket:
        if self.args.sock_type == "unix":
            if os.path.exists(self.sock_name):
                os.remove(self.sock_name)  # a stale socket from a previous run
            # Java's Connection.startPython reads djl_sock.<port>*.pid to kill a dangling worker.
            with open(f"{self.sock_name}.pid", "w") as f:
                f.write(str(os.getpid()))
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(self.sock_name)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.args.host or "127.0.0.1", int(self.args.port)))
        sock.listen(1)
        sock.settimeout(ACCEPT_TIMEOUT_S)
        return sock

    def _add_worker_properties(self, inputs: Input) -> None:
        props = inputs.get_properties()
        props["device_id"] = str(self.args.device_id)
        for key in ("tensor_parallel_degree", "pipeline_parallel_degree", "cluster_size"):
            value = getattr(self.args, key, None)
            if value is not None:
                props[key] = str(value)
        # DJL maps output_formatter=<name of a function in the entry module> to that function.
        name = props.get("output_formatter")
        module = getattr(self.service, "module", None)
        if isinstance(name, str) and module is not None and callable(getattr(module, name, None)):
            props["output_formatter"] = getattr(module, name)

    def serve(self) -> None:
        """Accept one front-end connection and serve it until it closes."""
        server = self._listen()
        try:
            print(STARTED_MARKER, flush=True)
            conn, _ = server.accept()
            conn.settimeout(None)
            with conn:
                while True:
                    inputs = Input()
                    try:
                        inputs.read(conn)
                    except ConnectionClosed:
                        logger.info("front end closed the connection")
                        return
                    self._add_worker_properties(inputs)
                    outputs = invoke(self.service, inputs)
                    outputs.send(conn)
                    try:
                        outputs.execute_finalize()
                    except Exception:  # noqa: BLE001 - the reply is already sent; keep serving
                        logger.exception("finalize function failed")
        finally:
            server.close()
            if self.args.sock_type == "unix":
                for path in (self.sock_name, f"{self.sock_name}.pid"):
                    if os.path.exists(path):
                        os.remove(path)


def _on_sigterm(signum: int, frame: Optional[FrameType]) -> Any:
    # Unwind through serve()'s finally blocks so the socket file is removed.
    raise SystemExit(0)


def main(argv: Optional[list[str]] = None, djl_version: Optional[str] = None, prog: str = "djl_python_engine") -> int:
    """Run the engine for DJL ``djl_version`` (``$DJL_PYTHON_DJL_VERSION``, else 0.28.0)."""
    from djl_python.progress import progress_bars_for
    from djl_python.service_loader import load_model_service

    args = parse_args(argv, prog)
    logging.basicConfig(stream=sys.stdout, level=args.log_level.upper(),
                        format="%(levelname)s::%(name)s::%(message)s")
    progress_bars_for(sys.stderr)  # Java captures it: no carriage-return bars in its log
    version = os.environ.get(djl_protocol.VERSION_ENV) or djl_version or djl_protocol.DEFAULT_DJL_VERSION
    proto = djl_protocol.activate(djl_protocol.protocol_for(version))
    logger.info("%d - djl_python engine for DJL %s (%s strings) started with args: %s",
                os.getpid(), proto.version, proto.wire_name, sys.argv[1:] if argv is None else argv)
    # Which package runs matters: DJL silently runs its own bundled copy when the install went
    # to another folder than the one Java uses (djl-engine-install says which folder it chose).
    logger.info("running djl_python from %s with Python %s (%s)", Path(djl_python.__file__).resolve().parent,
                sys.version.split()[0], sys.executable)
    if args.unknown:
        logger.warning("ignoring command-line arguments this engine does not know: %s", " ".join(args.unknown))
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        entry = args.entry_point or args.recommended_entry_point or DEFAULT_ENTRY_POINT
        service = load_model_service(args.model_dir, entry, args.device_id)
        EngineServer(args, service).serve()
    except socket.timeout:
        logger.error("the front end did not connect within %.0f s", ACCEPT_TIMEOUT_S)
        return 1
    return 0
