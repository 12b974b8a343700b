"""``djl-serve``: the standalone HTTP server.

    djl-serve [--model-dir DIR] [--host 127.0.0.1] [--port 8080] [--log-level info]
              [--shutdown-grace 30]

Configuration comes from ``DIR/serving.properties`` and ``OPTION_*`` variables
(``djl_python.config.load_config``). Without a configured model (no
``option.model_id`` and no model files in DIR) the embedded default model
(SmolLM2-135M-Instruct) is served. Inside a container pass ``--host 0.0.0.0``;
the default only listens on loopback.

SIGTERM (or Ctrl-C) drains: new requests get 503 and ``/ping`` turns 503, the
running ones get up to ``--shutdown-grace`` seconds to finish, what is left is
ended with an error, then the process exits 0. A second signal exits at once.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any, Optional, Sequence

import uvicorn

from djl_python.config import HandlerConfig

logger = logging.getLogger("djl_python.serving")

_MODEL_FILES = ("config.json", "*.safetensors", "*.bin", "*.pt", "*.gguf")


def has_model_files(model_dir: Optional[str]) -> bool:
    """Whether ``model_dir`` holds a model (not just a ``serving.properties``)."""
    if not model_dir or not Path(model_dir).is_dir():
        return False
    return any(any(Path(model_dir).glob(pattern)) for pattern in _MODEL_FILES)


def resolve_model(config: HandlerConfig) -> HandlerConfig:
    """``config``, pointed at the default model when it names none."""
    if config.model_id or has_model_files(config.model_dir):
        return config
    from djl_python.default_model import default_model_dir

    default = default_model_dir()
    logger.info("no model configured; serving the default model %s", default)
    return config.model_copy(update={"model_id": str(default)})


class GracefulServer(uvicorn.Server):
    """uvicorn, with SIGTERM draining the app before the server stops."""

    def __init__(self, config: uvicorn.Config, app: Any, grace_seconds: float) -> None:
        super().__init__(config)
        self._app = app
        self._grace = grace_seconds
        self._draining = False
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    async def serve(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: Optional[FrameType]) -> None:
        if self._draining or self._loop is None:
            super().handle_exit(sig, frame)  # second signal: stop now
            return
        self._draining = True
        logger.info("signal %s: draining for up to %.0fs", signal.Signals(sig).name, self._grace)
        self._loop.call_soon_threadsafe(lambda: self._loop.create_task(self._drain_then_exit()))

    async def _drain_then_exit(self) -> None:
        from djl_python.serving.app import drain

        finished = await drain(self._app, self._grace)
        engine = self._app.state.server.engine
        if engine is not None:
            await engine.shutdown(0.0)  # ends whatever outlived the grace period with an error
        logger.info("drained (%s); stopping", "all requests finished" if finished else "grace period expired")
        self.should_exit = True


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="djl-serve", description="Serve an LLM over HTTP (LMI, TGI, OpenAI).")
    parser.add_argument("--model-dir", default=None, help="folder with serving.properties and/or the model")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 inside a container)")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    parser.add_argument("--shutdown-grace", type=float, default=30.0,
                        help="seconds running requests get to finish after SIGTERM")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from djl_python.config import ConfigError, load_config
    from djl_python.loader import load_engine
    from djl_python.serving.app import create_app

    try:
        config = resolve_model(load_config(args.model_dir))
    except (ConfigError, FileNotFoundError) as err:
        print(f"djl-serve: configuration error: {err}", file=sys.stderr)
        return 2
    app = create_app(config, load_engine)
    logger.info("djl-serve %s on http://%s:%d (model %s, device %s); loading in the background",
                "listening", args.host, args.port, app.state.server.model_name, config.device)
    uv_config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                               lifespan="on", timeout_graceful_shutdown=5)
    GracefulServer(uv_config, app, args.shutdown_grace).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
