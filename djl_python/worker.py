"""The Python side of a DJL Serving worker: ``python -m djl_python.worker``.

Compatible with DJL's Java front end (``PyProcess``/``Connection``), which
starts this process with::

    --sock-type unix --sock-name /tmp/djl_sock.<port>   (or --sock-type tcp --port N [--sock-name HOST])
    --model-dir DIR --entry-point MODULE --device-id N
    [--tensor-parallel-degree N --pipeline-parallel-degree N --cluster-size N
     --recommended-entry-point MODULE --log-level LEVEL --[no-]async-mode]

This process LISTENS; once it prints ``Python engine started.`` Java connects
(we accept within ``ACCEPT_TIMEOUT_S``). Then, until end of stream or SIGTERM:
read one ``Input``, add ``model_dir``/``device_id`` to its properties, call the
entry point's handler (``properties["handler"]`` or ``handle``), write one
``Output``. A handler exception becomes code 424 with JSON
``{"code", "message": "prediction failure", "error"}``; out-of-memory 507.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import socket
import sys
from types import FrameType, ModuleType
from typing import Any, Optional

from djl_python.framing import ConnectionClosed
from djl_python.inputs import Input
from djl_python.outputs import Output

logger = logging.getLogger("djl_python.worker")

ACCEPT_TIMEOUT_S = 30.0
DEFAULT_ENTRY_POINT = "djl_python.transformers_neuronx"
STARTED_MARKER = "Python engine started."  # Java's ReaderThread waits for this line on stdout
_OOM_NAMES = ("OutOfMemoryError", "MemoryError")


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="djl_python.worker", description="DJL Serving Python worker")
    p.add_argument("--sock-type", required=True, choices=["unix", "tcp"])
    p.add_argument("--sock-name", help="unix: socket path; tcp: address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="tcp port")
    p.add_argument("--host", help="tcp address to bind (same as --sock-name)")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--entry-point", default="")
    p.add_argument("--recommended-entry-point", default="")
    p.add_argument("--device-id", default="-1")
    p.add_argument("--tensor-parallel-degree", type=int)
    p.add_argument("--pipeline-parallel-degree", type=int)
    p.add_argument("--cluster-size", type=int)
    p.add_argument("--log-level", default="info")
    p.add_argument("--async-mode", action=argparse.BooleanOptionalAction, default=False)
    args = p.parse_args(argv)
    if args.sock_type == "unix" and not args.sock_name:
        p.error("--sock-name is required with --sock-type unix")
    if args.sock_type == "tcp" and args.port is None:
        p.error("--port is required with --sock-type tcp")
    if args.async_mode:
        p.error("--async-mode is not supported by this worker; use the synchronous protocol")
    return args


def load_entry_point(name: str) -> ModuleType:
    """Import the entry point: a module name, or a ``.py`` file name (``model.py``)."""
    name = name or DEFAULT_ENTRY_POINT
    if name.endswith(".py"):
        name = name[:-3].replace("/", ".")
    return importlib.import_module(name)


def invoke(module: ModuleType, inputs: Input) -> Output:
    """Call the handler for ``inputs``; every failure becomes an error ``Output``."""
    name = inputs.get_function_name() or "handle"
    try:
        handler = getattr(module, name, None)
        if handler is None:
            return Output().error(f"entry point {module.__name__} has no function {name!r}")
        out = handler(inputs)
        if out is None:
            return Output(code=204, message="No content")
        if not isinstance(out, Output):
            return Output().error(f"handler returned {type(out).__name__}, not Output")
        return out
    except Exception as e:  # noqa: BLE001 - reported to Java, the worker keeps serving
        logger.exception("handler %s failed", name)
        if type(e).__name__ in _OOM_NAMES or "out of memory" in str(e).lower():
            return Output(code=507, message=str(e))
        return Output().error(str(e), code=424, message="prediction failure")


def _listen(args: argparse.Namespace) -> socket.socket:
    if args.sock_type == "unix":
        if os.path.exists(args.sock_name):
            os.remove(args.sock_name)  # a stale socket from a previous run
        # Java's Connection.startPython reads djl_sock.<port>*.pid to kill a dangling worker.
        with open(f"{args.sock_name}.pid", "w") as f:
            f.write(str(os.getpid()))
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(args.sock_name)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.host or args.sock_name or "127.0.0.1", args.port))
    sock.listen(1)
    sock.settimeout(ACCEPT_TIMEOUT_S)
    return sock


def serve(args: argparse.Namespace, module: ModuleType) -> None:
    """Accept one front-end connection and serve it until it closes."""
    server = _listen(args)
    try:
        print(STARTED_MARKER, flush=True)
        conn, _ = server.accept()
        conn.settimeout(None)
        with conn:
            while True:
                try:
                    inputs = Input.read(conn)
                except ConnectionClosed:
                    logger.info("front end closed the connection")
                    return
                props = inputs.get_properties()
                props["model_dir"] = args.model_dir
                props["device_id"] = str(args.device_id)
                for key in ("tensor_parallel_degree", "pipeline_parallel_degree", "cluster_size"):
                    if getattr(args, key) is not None:
                        props[key] = str(getattr(args, key))
                invoke(module, inputs).send(conn)
    finally:
        server.close()
        if args.sock_type == "unix":
            for path in (args.sock_name, f"{args.sock_name}.pid"):
                if os.path.exists(path):
                    os.remove(path)


def _on_sigterm(signum: int, frame: Optional[FrameType]) -> Any:
    # Unwind through serve()'s finally blocks so the socket file is removed.
    raise SystemExit(0)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(stream=sys.stdout, level=args.log_level.upper(), format="%(levelname)s::%(name)s::%(message)s")
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        module = load_entry_point(args.entry_point or args.recommended_entry_point)
        serve(args, module)
    except socket.timeout:
        logger.error("the front end did not connect within %.0f s", ACCEPT_TIMEOUT_S)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
