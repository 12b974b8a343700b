"""Every manifest under deploy/ passes kubernetes-validate, and the manifests agree with the server.

kubernetes-validate checks against the JSON schemas it ships (no network), in strict mode (an
unknown field is an error), for the oldest and newest Kubernetes versions we claim. The other
tests compare the manifests with this package's real behaviour: the metric names the server
exports, the configuration keys and values it accepts, the ``/ping`` it answers.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.repo_files import REPO, manifests, rel, tool

# Oldest and newest Kubernetes versions the manifests are validated against (both bundled with
# kubernetes-validate 1.37.0; autoscaling/v2 and startupProbe are GA in both).
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
VARIANTS = {"cpu": "cpu", "cuda": "nvidia.com/gpu", "neuron": "aws.amazon.com/neuron"}


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def validate(path: Path, version: str) -> subprocess.CompletedProcess:
    return subprocess.run([tool("kubernetes-validate", "kubernetes-validate"), "--strict", "--quiet",
                           "-k", version, str(path)], capture_output=True, text=True, timeout=300)


def test_every_manifest_is_found():
    found = {rel(p) for p in manifests()}
    assert {f"deploy/k8s/{v}.yaml" for v in VARIANTS} | {"deploy/k8s/prometheus-adapter.yaml"} <= found


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("manifest", manifests(), ids=rel)
def test_kubernetes_validate(manifest, version):
    proc = validate(manifest, version)
    assert proc.returncode == 0, f"{rel(manifest)} against {version}:\n{proc.stdout}{proc.stderr}"


def test_kubernetes_validate_reports_an_unknown_field(tmp_path):
    """Strict mode really rejects a misspelt probe (the kind of typo Kubernetes would silently drop)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "deploy/k8s/cpu.yaml").read_text().replace("readinessProbe:", "readynessProbe:"))
    proc = validate(bad, KUBERNETES_VERSIONS[-1])
    assert proc.returncode != 0 and "readynessProbe" in proc.stdout + proc.stderr


def _variant(name: str) -> dict[str, dict]:
    return {doc["kind"]: doc for doc in documents(REPO / f"deploy/k8s/{name}.yaml")}


def _container(deployment: dict) -> dict:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _env(container: dict) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", [])}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_configuration_is_accepted_by_the_server(name):
    """The OPTION_* variables are known keys with valid values for djl_python's own configuration."""
    from djl_python.config import load_config
    from djl_python.config.load import KNOWN_KEYS
    from djl_python.config.sources import canonical_key, env_option_key

    env = _env(_container(_variant(name)["Deployment"]))
    for key in env:
        if key.startswith("OPTION_"):
            assert canonical_key(env_option_key(key)) in KNOWN_KEYS, f"{name}.yaml: unknown option {key}"
    config = load_config(env=env)
    assert config.device == name
    assert config.model_id


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_probes_wait_for_the_model(name):
    """Ready only on /ping 200 (the model is loaded); the startup probe outlasts model_loading_timeout,
    so neither liveness nor the startup probe kills a pod that is still downloading or compiling."""
    from djl_python.config import load_config

    deployment = _variant(name)["Deployment"]
    container = _container(deployment)
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/ping", probe
        assert port_names[container[probe]["httpGet"]["port"]] == 8080
    startup = container["startupProbe"]
    budget = startup["periodSeconds"] * startup["failureThreshold"]
    timeout = load_config(env=_env(container)).model_loading_timeout
    assert budget > timeout, f"{name}: startup probe gives up after {budget}s, loading may take {timeout}s"
    # Kubernetes sends SIGTERM, then SIGKILL after the grace period; djl-serve drains for 30 s by default.
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 30


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_resources(name):
    container = _container(_variant(name)["Deployment"])
    resources = container["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]
    accelerator = VARIANTS[name]
    if accelerator != "cpu":
        assert int(resources["limits"][accelerator]) >= 1
    if name == "neuron":
        from djl_python.backends.neuron.devices import CORES_PER_NEURON_DEVICE

        env = _env(container)
        cores = CORES_PER_NEURON_DEVICE * int(resources["limits"][accelerator])
        assert int(env["OPTION_TENSOR_PARALLEL_DEGREE"]) <= cores
        assert int(env["NEURON_RT_NUM_CORES"]) <= cores


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_service_and_labels_select_the_pods(name):
    docs = _variant(name)
    deployment, service, hpa = docs["Deployment"], docs["Service"], docs["HorizontalPodAutoscaler"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    port_names = {p["name"] for p in _container(deployment)["ports"]}
    assert all(p["targetPort"] in port_names for p in service["spec"]["ports"])
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/metrics" and annotations["prometheus.io/port"] == "8080"


def _exported_metric_names() -> set[str]:
    """Sample names djl-serve's /metrics renders (the real ServingMetrics registry)."""
    from djl_python.serving.metrics import ServingMetrics

    text = ServingMetrics().render()
    text = text.decode() if isinstance(text, bytes) else text
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples} | {
        family.name for family in text_string_to_metric_families(text)}


def _adapter_rules() -> list[dict]:
    (config_map,) = documents(REPO / "deploy/k8s/prometheus-adapter.yaml")
    return yaml.safe_load(config_map["data"]["config.yaml"])["rules"]


def test_adapter_rules_query_metrics_the_server_exports():
    exported = _exported_metric_names()
    assert "djl_num_requests_waiting" in exported
    for rule in _adapter_rules():
        series = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule["seriesQuery"]).group(0)
        assert series in exported, series
        assert re.fullmatch(rule["name"]["matches"].strip("^$"), series)
        for used in re.findall(r"\b(djl_[a-z_]+)\{", rule["metricsQuery"]):
            assert used in exported, used
        assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_hpa_scales_on_waiting_requests_through_the_adapter(name):
    from djl_python.config import load_config

    docs = _variant(name)
    served = {rule["name"]["as"] for rule in _adapter_rules()}
    metrics = {m["pods"]["metric"]["name"]: m["pods"]["target"] for m in docs["HorizontalPodAutoscaler"]["spec"]["metrics"]
               if m["type"] == "Pods"}
    assert "djl_num_requests_waiting" in metrics
    assert set(metrics) <= served, set(metrics) - served
    slots = load_config(env=_env(_container(docs["Deployment"]))).max_rolling_batch_size
    if "djl_num_requests_in_flight" in metrics:
        # Scale out before a pod's slots are all taken.
        assert float(metrics["djl_num_requests_in_flight"]["averageValue"]) < slots
