"""``djl-serve``: the standalone HTTP server.

    djl-serve [MODEL] [--model-dir DIR] [--host 127.0.0.1] [--port 8080]
              [--served-model-name NAME] [--max-model-len N] [--max-num-seqs N] [--dtype D]
              [--chat-template T] [--api-key KEY] [--allowed-origins LIST] [--version]

One configuration, several spellings: each model flag is another name for an
option (``--max-num-seqs`` is ``option.max_rolling_batch_size``), and the
precedence is command line > ``DIR/serving.properties`` > ``OPTION_*`` >
``HF_MODEL_ID`` / ``SERVING_LOAD_MODELS`` (``djl_python.config.load_config``).
Which model runs is ``djl_python.config.model_source.choose_model``'s rule: the
embedded default model only when no model is configured anywhere; a missing or
empty folder is an error naming the flag or key. The log says which source
chose the model.

Start-up order: configuration (exit 2 on an error), bind the port (exit 1 if
taken, before anything loads), then load the model in the background while
``/ping`` answers 503. A load that fails or times out logs one line (the
traceback only at debug level, unless the failure is an internal error) and
the process exits 1, so an orchestrator restarts or reports it instead of
waiting on a server that can never become ready.

SIGTERM (or Ctrl-C) drains: new requests get 503 and ``/ping`` turns 503, the
running ones get up to ``--shutdown-grace`` seconds (20) to finish, what is left is
refused as unavailable (503, or an in-band error on a stream), connections get
``CLOSE_SECONDS`` to close, then the process exits 0: within SageMaker's 30 s
before SIGKILL. A signal while the model loads exits 0 at once, without waiting
for the load. A second signal exits at once.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from types import FrameType
from typing import Any, Callable, Optional, Sequence

import uvicorn

from djl_python.artifacts.errors import ArtifactError
from djl_python.config import ConfigError, HandlerConfig
from djl_python.config.sources import OptionValue, Options
from djl_python.progress import progress_bars_for
from djl_python.serving.connections import (ConnectionLimits, effective_max_connections, guarded_protocol,
                                            raise_fd_limit)
from djl_python.serving.log_rate import limit_log_rate

logger = logging.getLogger("djl_python.serving")

# flag (argparse dest) -> configuration field; the flag is the option's command-line spelling.
FLAG_FIELDS: dict[str, tuple[str, str]] = {
    "model_dir": ("--model-dir", "model_dir"),
    "served_model_name": ("--served-model-name", "served_model_name"),
    "max_model_len": ("--max-model-len", "n_positions"),
    "max_num_seqs": ("--max-num-seqs", "max_rolling_batch_size"),
    "dtype": ("--dtype", "dtype"),
    "chat_template": ("--chat-template", "chat_template"),
    "api_key": ("--api-key", "api_key"),
    "allowed_origins": ("--allowed-origins", "allowed_origins"),
    "max_request_bytes": ("--max-request-bytes", "max_request_bytes"),
}
# vLLM's --dtype spellings that ours lacks.
_VLLM_DTYPES = {"half": "fp16", "float": "fp32"}
# SageMaker sends SIGKILL 30 s after SIGTERM; the drain, ending what is left, and uvicorn's own close
# (timeout_graceful_shutdown) must fit in it.
SHUTDOWN_GRACE = 20.0
CLOSE_SECONDS = 5
# Load failures caused by the configuration or the model files: one line, traceback at debug level.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, ArtifactError)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("djl_python")
    except Exception:  # noqa: BLE001 - running from a source tree
        return "unknown"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows real defaults; a flag whose default is "from the configuration" (None) shows none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action)


def _option_help(text: str, field: str) -> str:
    return f"{text} [= option.{field} / OPTION_{field.upper()}]"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="djl-serve", allow_abbrev=False, formatter_class=_HelpFormatter,
        description="Serve an LLM over HTTP (SageMaker/LMI, TGI and OpenAI routes).",
        epilog="Every model option can also be set as option.<key> in DIR/serving.properties or as an "
        "OPTION_<KEY> environment variable (e.g. OPTION_MAX_ROLLING_BATCH_SIZE=8); see docs/configuration.md "
        "for all of them. Precedence: command line > serving.properties > OPTION_* > HF_MODEL_ID / "
        "SERVING_LOAD_MODELS. With no model configured anywhere, the embedded SmolLM2-135M-Instruct is served.",
    )
    parser.add_argument("model", nargs="?", default=None, metavar="MODEL",
                        help=_option_help("Hugging Face model id, s3:// URL or local model folder", "model_id"))
    parser.add_argument("--model", "--model-id", dest="model_flag", default=None, metavar="MODEL",
                        help="same as the positional MODEL")
    parser.add_argument("--model-dir", default=None, metavar="DIR",
                        help=_option_help("folder with serving.properties and/or the model", "model_dir"))
    parser.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 inside a container)")
    parser.add_argument("--port", type=int, default=8080, help="TCP port")
    parser.add_argument("--served-model-name", default=None, metavar="NAME",
                        help=_option_help("name clients use in 'model' and /predictions/NAME", "served_model_name"))
    parser.add_argument("--max-model-len", default=None, metavar="N",
                        help=_option_help("tokens per sequence, prompt + generated", "n_positions"))
    parser.add_argument("--max-num-seqs", default=None, metavar="N",
                        help=_option_help("sequences decoded together (KV-cache slots)", "max_rolling_batch_size"))
    parser.add_argument("--dtype", default=None,
                        help=_option_help("auto, fp32/float32/float, fp16/float16/half, bf16/bfloat16", "dtype"))
    parser.add_argument("--chat-template", default=None, metavar="TEMPLATE",
                        help=_option_help("Jinja chat template or a file holding one", "chat_template"))
    parser.add_argument("--api-key", default=None, metavar="KEY",
                        help=_option_help("require 'Authorization: Bearer KEY' (401 otherwise; /ping, /health, /version "
                                          "open)", "api_key"))
    parser.add_argument("--allowed-origins", default=None, metavar="ORIGINS",
                        help=_option_help("CORS origins: '*', a comma list or a JSON list", "allowed_origins"))
    parser.add_argument("--max-request-bytes", "--payload-limit", dest="max_request_bytes", default=None,
                        metavar="BYTES", help=_option_help("largest request body (413 beyond it); TGI's "
                                                           "--payload-limit", "max_request_bytes"))
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                        help="log level")
    parser.add_argument("--shutdown-grace", type=float, default=SHUTDOWN_GRACE,
                        help="seconds running requests get to finish after SIGTERM (the default leaves room "
                        "for the rest of the shutdown inside SageMaker's 30 s before SIGKILL)")
    parser.add_argument("--version", action="version", version=f"djl-serve {_version()}")
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.model is not None and args.model_flag is not None and args.model != args.model_flag:
        parser.error(f"the model is given twice: MODEL={args.model!r} and --model={args.model_flag!r}")
    return args


def cli_overrides(args: argparse.Namespace) -> Options:
    """The flags the user gave, as configuration overrides whose origin is the flag."""
    overrides: Options = {}
    if args.model is not None or args.model_flag is not None:
        given_as = "MODEL" if args.model is not None else "--model"
        overrides["model_id"] = OptionValue(args.model if args.model is not None else args.model_flag, given_as)
    for dest, (flag, field) in FLAG_FIELDS.items():
        value = getattr(args, dest)
        if value is None:
            continue
        if dest == "dtype":
            value = _VLLM_DTYPES.get(value.strip().lower(), value)
        overrides[field] = OptionValue(str(value), flag)
    return overrides


def bind_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port``, before anything loads (``OSError`` if it is taken)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def explained_loader(load: Callable[[HandlerConfig], Any], prepare: Callable[[], Any] | None = None
                     ) -> Callable[[HandlerConfig], Any]:
    """``load``, preceded by ``prepare()`` (the default model's one-time conversion), logging an
    internal error's traceback; a user error's traceback is logged at debug level only. The
    one-line report and the exit are the server's (``GracefulServer``)."""

    def run(config: HandlerConfig) -> Any:
        try:
            if prepare is not None:
                prepare()
            return load(config)
        except USER_ERRORS:
            logger.debug("model loading failed", exc_info=True)
            raise
        except Exception:
            logger.exception("internal error while loading the model")
            raise

    return run


class GracefulServer(uvicorn.Server):
    """uvicorn, with SIGTERM draining the app before the server stops, and an exit code of 1
    once the model has failed to load (``exit_code``)."""

    def __init__(self, config: uvicorn.Config, app: Any, grace_seconds: float) -> None:
        super().__init__(config)
        self._app = app
        self._grace = grace_seconds
        self._draining = False
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self.exit_code = 0

    async def serve(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    async def on_tick(self, counter: int) -> bool:
        """Every 0.1 s (uvicorn's main loop): stop once loading has failed for good."""
        load_error = self._app.state.server.load_error
        if load_error is not None and self.exit_code == 0:  # the app has logged the reason
            logger.info("djl-serve: stopping with exit status 1: the model cannot be loaded")
            self.exit_code = 1
            self.should_exit = True
        return await super().on_tick(counter)

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


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    progress_bars_for(sys.stderr)
    from djl_python import default_model
    from djl_python.config import load_config
    from djl_python.config.chat_template import load_chat_template
    from djl_python.config.model_source import choose_model

    try:
        config = load_config(overrides=cli_overrides(args))
        choice = choose_model(config, default_model.default_model_path)
        if config.chat_template:
            load_chat_template(config.chat_template, config.origin("chat_template"))
    except (ConfigError, FileNotFoundError) as err:
        print(f"djl-serve: configuration error: {err}", file=sys.stderr)
        return 2
    config = choice.config
    try:
        sock = bind_socket(args.host, args.port)
    except OSError as err:
        print(f"djl-serve: cannot listen on {args.host}:{args.port} (--host/--port): {err.strerror or err}",
              file=sys.stderr)
        return 1

    from djl_python.loader import load_engine
    from djl_python.serving.app import create_app
    from djl_python.serving.security import install_security

    prepare = default_model.default_model_dir if choice.is_default and not default_model.is_prepared() else None
    app = create_app(config, explained_loader(load_engine, prepare), model_name=config.served_model_name)
    install_security(app, config)
    logger.info("djl-serve listening on http://%s:%d; model %s (chosen by %s), device %s; loading in the background",
                args.host, args.port, app.state.server.model_name, choice.source, config.device)
    limits = ConnectionLimits(effective_max_connections(config.max_connections, raise_fd_limit()),
                              float(config.header_timeout), float(config.body_timeout))
    limit_log_rate()
    uv_config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                               lifespan="on", timeout_graceful_shutdown=CLOSE_SECONDS,
                               http=guarded_protocol(limits))
    server = GracefulServer(uv_config, app, args.shutdown_grace)
    server.run(sockets=[sock])
    state = app.state.server
    if state.engine is None and state.load_error is None:
        logger.info("djl-serve: stopped before the model finished loading")
    if server.exit_code or state.engine is None:
        # A load that timed out, or that a signal interrupted, still runs in its (non-daemon)
        # thread, and interpreter exit would wait for it, possibly for a whole compilation, then
        # tear modules down under it: leave now, the reason is logged.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(server.exit_code)
    return server.exit_code


if __name__ == "__main__":
    sys.exit(main())
