"""``djl-engine-install``: make DJL Serving's Python engine folder run this package.

DJL's Java side (djl-serving v0.26.0-v0.28.0) never imports an installed
``djl_python``. ``PyEnv.init`` picks ``<engine cache>/python/<djl version>``
(engine cache = ``ENGINE_CACHE_DIR``, else ``DJL_CACHE_DIR``, from the
environment or a ``-D`` JVM option, else ``~/.djl.ai``, or
``<java.io.tmpdir>/.djl.ai`` when the home directory is read-only;
``ai.djl.util.Utils.getEngineCacheDir``, see ``engine_cache_folder``), extracts its bundled
``djl_python_engine.py`` and ``djl_python/`` there *only if the folder does not
exist*, and runs ``python3 <folder>/djl_python_engine.py ...`` with
``PYTHONPATH=$PYTHONPATH:<folder>:<model dir>``. Python puts the script's
folder first on ``sys.path``, so whatever ``djl_python`` sits in that folder
wins.

``djl-engine-install --target FOLDER [--djl-version X.Y.Z]`` therefore:

1. creates FOLDER if needed (so Java will not extract into it later);
2. moves a ``djl_python/`` already there (DJL's bundled copy) and DJL's
   ``djl_python_engine.py`` aside, to names Python cannot import
   (``djl_python.djl-bundled``, ``djl_python_engine.py.djl-bundled``), so no
   process that inherits Java's ``PYTHONPATH`` imports them;
3. writes a ``djl_python_engine.py`` that drops FOLDER from ``sys.path``, loads
   *this* installed package from the path recorded at install time, and runs
   its engine for the DJL release (wire format and rules) given by
   ``--djl-version`` (default: FOLDER's name when it is a version, else 0.28.0).

Without ``--target`` the folder is computed from the environment as Java does.
Re-running is safe; the install is undone by deleting FOLDER (DJL extracts its
own again on the next start).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Mapping, Optional

import djl_python
from djl_python.djl.protocol import DEFAULT_DJL_VERSION, parse_version

logger = logging.getLogger(__name__)

LAUNCHER = "djl_python_engine.py"
MARKER = "djl_python_install.json"
BUNDLED_SUFFIX = ".djl-bundled"

_TEMPLATE = '''\
#!/usr/bin/env python3
"""Written by djl-engine-install (djl_python {pkg_version}) for DJL Serving {djl_version}.

DJL's Java front end runs this file with its own PYTHONPATH; it starts the
installed djl_python package's engine, never a djl_python/ left in this folder.
"""
import importlib.util
import os
import sys

DJL_VERSION = {djl_version!r}
PACKAGE_DIR = {package_dir!r}

# DJL puts this folder first on sys.path and on PYTHONPATH; nothing may be imported from it.
_here = os.path.realpath(os.path.dirname(os.path.abspath(__file__)))
sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.curdir) != _here]
_spec = importlib.util.spec_from_file_location(
    "djl_python", os.path.join(PACKAGE_DIR, "__init__.py"), submodule_search_locations=[PACKAGE_DIR])
_module = importlib.util.module_from_spec(_spec)
sys.modules["djl_python"] = _module
_spec.loader.exec_module(_module)

from djl_python.djl.launcher import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], djl_version=DJL_VERSION))
'''


# Where the JVM takes -D options from: the JVM itself (JAVA_TOOL_OPTIONS), and DJL Serving's
# start script (a Gradle application script: DEFAULT_JVM_OPTS, JAVA_OPTS and SERVING_OPTS).
JVM_OPTION_VARIABLES = ("JAVA_TOOL_OPTIONS", "JAVA_OPTS", "SERVING_OPTS")


def java_system_properties(env: Mapping[str, str]) -> dict[str, str]:
    """``-Dkey=value`` options the DJL JVM will see, later variables winning as on its command line."""
    props: dict[str, str] = {}
    for name in JVM_OPTION_VARIABLES:
        for word in (env.get(name) or "").split():
            if word.startswith("-D") and "=" in word:
                key, _, value = word[2:].partition("=")
                props[key] = value.strip("'\"")
    return props


def java_user_home() -> str:
    """Java's ``user.home``: the passwd entry's home directory, not ``$HOME``."""
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_dir
    except (ImportError, KeyError):
        return str(Path.home())


def engine_cache_folder(djl_version: str, env: Optional[Mapping[str, str]] = None,
                        home: Optional[str] = None) -> tuple[Path, str]:
    """``(<engine cache>/python/<djl_version>, how it was found)``, as DJL's Java computes it.

    ``ai.djl.util.Utils`` (djl api 0.34.0, ``getEngineCacheDir``/``getCacheDir``, read from its
    bytecode): ``ENGINE_CACHE_DIR``, else ``DJL_CACHE_DIR``, each from the environment or else
    a ``-D`` system property; else ``<user.home>/.djl.ai``, or ``<java.io.tmpdir>/.djl.ai``
    when ``user.home`` is not writable. Raises ``OSError`` when neither is writable.
    """
    env = os.environ if env is None else env
    props = java_system_properties(env)
    for key in ("ENGINE_CACHE_DIR", "DJL_CACHE_DIR"):
        if env.get(key):
            return Path(env[key]) / "python" / djl_version, f"${key}"
        if props.get(key):
            return Path(props[key]) / "python" / djl_version, f"-D{key} in the JVM options"
    home = props.get("user.home") or home or java_user_home()
    if os.access(home, os.W_OK):
        return Path(home) / ".djl.ai" / "python" / djl_version, f"user.home ({home})"
    tmp = props.get("java.io.tmpdir") or "/tmp"
    if os.access(tmp, os.W_OK):
        return Path(tmp) / ".djl.ai" / "python" / djl_version, \
            f"java.io.tmpdir ({tmp}), because user.home ({home}) is not writable"
    raise OSError(f"cannot tell where DJL will look: user.home ({home}) and java.io.tmpdir ({tmp}) are not "
                  "writable; set ENGINE_CACHE_DIR, or pass --target")


def _version_from_folder(folder: Path) -> Optional[str]:
    try:
        parse_version(folder.name)
        return folder.name
    except ValueError:
        return None


def _aside(path: Path) -> Path:
    """A free non-importable name next to ``path`` (``<name>.djl-bundled[.N]``)."""
    candidate = path.with_name(path.name + BUNDLED_SUFFIX)
    n = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}{BUNDLED_SUFFIX}.{n}")
        n += 1
    return candidate


def install(target: Path, djl_version: Optional[str] = None) -> Path:
    """Lay out ``target`` as described above; returns the launcher's path. ``ValueError`` for a bad version."""
    target = target.expanduser().resolve()
    version = djl_version or _version_from_folder(target) or DEFAULT_DJL_VERSION
    parse_version(version)
    target.mkdir(parents=True, exist_ok=True)
    package_dir = Path(djl_python.__file__).resolve().parent
    marker = target / MARKER
    bundled = target / "djl_python"
    if bundled.exists() or bundled.is_symlink():
        moved = _aside(bundled)
        bundled.rename(moved)
        logger.warning("moved DJL's bundled %s to %s so it cannot shadow this package", bundled, moved.name)
    launcher = target / LAUNCHER
    if launcher.exists() and not marker.exists():
        moved = _aside(launcher)
        shutil.move(str(launcher), str(moved))
        logger.info("kept DJL's own %s as %s", launcher.name, moved.name)
    tmp = launcher.with_name(launcher.name + ".tmp")
    tmp.write_text(_TEMPLATE.format(pkg_version=djl_python.__version__, djl_version=version,
                                    package_dir=str(package_dir)))
    tmp.chmod(0o755)
    os.replace(tmp, launcher)  # atomic: a Java starting now sees the old or the new launcher, never half
    marker.write_text(json.dumps({"djl_version": version, "package_dir": str(package_dir),
                                  "djl_python_version": djl_python.__version__}, indent=2) + "\n")
    return launcher


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="djl-engine-install", description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", help="the engine folder; default: <ENGINE_CACHE_DIR|DJL_CACHE_DIR|~/.djl.ai>"
                        "/python/<djl-version>, as DJL computes it")
    parser.add_argument("--djl-version", help="DJL Serving release whose front end will run it (0.26.0, 0.27.0, "
                        "0.28.0, ...); default: the target folder's name if it is a version, else 0.28.0")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.djl_version:
            parse_version(args.djl_version)
        if args.target:
            target, found = Path(args.target), "--target"
        else:
            target, found = engine_cache_folder(args.djl_version or DEFAULT_DJL_VERSION)
        launcher = install(target, args.djl_version)
    except (ValueError, OSError) as e:
        print(f"djl-engine-install: {e}", file=sys.stderr)
        return 2
    print(f"installed {launcher} (DJL {json.loads((launcher.parent / MARKER).read_text())['djl_version']}; "
          f"folder from {found}) -> {Path(djl_python.__file__).resolve().parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
