"""The one explicit step that turns configuration into Neuron environment variables.

DJL's validators wrote ``NEURON_CC_FLAGS`` and ``NEURON_COMPILE_CACHE_URL`` as
a side effect of parsing, appended flags even for ``false`` booleans, and
appended again on every parse. Here the validators are pure and this module
does the work once, on request:

* ``environment_changes(config, env)`` computes the new values (pure);
* ``apply_environment(config, env)`` writes them and returns what changed.

Both are idempotent: applying twice leaves the environment as after once.
The Neuron compiler reads these variables when the backend compiles, so the
loader calls ``apply_environment`` before building a Neuron backend.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping, MutableMapping

from djl_python.config.handler_config import HandlerConfig

NEURON_CC_FLAGS = "NEURON_CC_FLAGS"
NEURON_COMPILE_CACHE_URL = "NEURON_COMPILE_CACHE_URL"
MIXED_PRECISION_FLAG = "--enable-mixed-precision-accumulation"
SATURATE_INFINITY_FLAG = "--enable-saturate-infinity"
# An optimisation level already in the flags (-O1, --optlevel=2, --optlevel 3)
# is replaced, not duplicated: the configured level is the one the user asked for.
_OPT_LEVEL = re.compile(r"^(-O[0-9]|--optlevel(=[0-9])?)$")


def _without_other_levels(tokens: list[str], level_flag: str) -> list[str]:
    """``tokens`` minus any optimisation level other than ``level_flag``."""
    kept: list[str] = []
    skip_value = False
    for token in tokens:
        if skip_value:
            skip_value = False
            continue
        if _OPT_LEVEL.match(token) and token != level_flag:
            skip_value = token == "--optlevel"  # its value is the next token
            continue
        kept.append(token)
    return kept


def _compiler_flags(config: HandlerConfig, current: str) -> str:
    tokens = shlex.split(current)
    wanted: list[str] = []
    if config.neuron_optimize_level is not None:
        level_flag = f"-O{config.neuron_optimize_level}"
        tokens = _without_other_levels(tokens, level_flag)
        wanted.append(level_flag)
    if config.enable_mixed_precision_accumulation:
        wanted.append(MIXED_PRECISION_FLAG)
    if config.enable_saturate_infinity:
        wanted.append(SATURATE_INFINITY_FLAG)
    tokens += [flag for flag in wanted if flag not in tokens]
    # Keep the user's exact spelling when nothing was added or removed.
    return current if shlex.split(current) == tokens else shlex.join(tokens)


def _cache_url(path: str) -> str:
    if path.lower().startswith("s3://"):
        return path
    return os.path.abspath(path)


def environment_changes(
    config: HandlerConfig, env: Mapping[str, str], *, compile_cache: str | os.PathLike[str] | None = None
) -> dict[str, str]:
    """The variables ``apply_environment`` would set, with their new values.

    ``compile_cache`` is where the artifacts layer put ``compiled_graph_path``
    (a download, or a writable copy of a read-only mount); it takes the place
    of the configured path so the compiler reads and writes that copy.

    Only variables whose value would change are returned, so the result is
    empty once the step has been applied.
    """
    changes: dict[str, str] = {}
    current_flags = env.get(NEURON_CC_FLAGS, "")
    flags = _compiler_flags(config, current_flags)
    if flags != current_flags:
        changes[NEURON_CC_FLAGS] = flags
    cache = os.fspath(compile_cache) if compile_cache is not None else config.compiled_graph_path
    if cache:
        url = _cache_url(cache)
        if env.get(NEURON_COMPILE_CACHE_URL) != url:
            changes[NEURON_COMPILE_CACHE_URL] = url
    return changes


def apply_environment(
    config: HandlerConfig,
    env: MutableMapping[str, str] | None = None,
    *,
    compile_cache: str | os.PathLike[str] | None = None,
) -> dict[str, str]:
    """Write the Neuron compiler settings of ``config`` into ``env``
    (``os.environ`` by default) and return the variables it changed.
    ``compile_cache`` is as in ``environment_changes``."""
    target: MutableMapping[str, str] = os.environ if env is None else env
    changes = environment_changes(config, target, compile_cache=compile_cache)
    target.update(changes)
    return changes
