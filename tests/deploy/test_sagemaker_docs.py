"""docs/deployment.md's SageMaker examples, checked against AWS's own API models (botocore's service
definitions, which the SageMaker SDK and boto3 send requests through) and against this package's
configuration. Nothing is sent anywhere: boto3 calls go to a botocore ``Stubber``, which only
answers after botocore has validated the request against the API model."""

from __future__ import annotations

import ast
import re
from unittest import mock

import boto3
import botocore.session
from botocore.stub import Stubber

from djl_python.config import load_config
from tests.deploy.repo_files import REPO


def _python_blocks(section: str) -> list[str]:
    text = (REPO / "docs/deployment.md").read_text()
    start = text.index(f"## {section}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end if end != -1 else None], re.S)


def _block_with(needle: str) -> str:
    (block,) = [b for b in _python_blocks("SageMaker") if needle in b]
    return block


def _deploy_call() -> tuple[dict, dict]:
    """``(Model(...) keywords, .deploy(...) keywords)`` of the SDK example, as literals."""
    tree = ast.parse(_block_with("model.deploy("))
    calls = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            calls[name] = {kw.arg: kw.value for kw in node.keywords}
    model = {k: ast.literal_eval(v) for k, v in calls["Model"].items() if k in ("env", "model_data")}
    deploy = {k: ast.literal_eval(v) for k, v in calls["deploy"].items()}
    return model, deploy


def test_sdk_deploy_timeouts_are_within_the_endpoint_config_limits():
    model, deploy = _deploy_call()
    variant = botocore.session.get_session().get_service_model("sagemaker").shape_for("ProductionVariant")
    for sdk_arg, api_field in (("container_startup_health_check_timeout", "ContainerStartupHealthCheckTimeoutInSeconds"),
                               ("model_data_download_timeout", "ModelDataDownloadTimeoutInSeconds")):
        limits = variant.members[api_field].metadata
        assert limits["min"] <= deploy[sdk_arg] <= limits["max"], (sdk_arg, limits)
    # djl-serve must report a slow load itself (503 with the reason) before SageMaker gives up.
    config = load_config(env=model["env"])
    assert config.model_loading_timeout < deploy["container_startup_health_check_timeout"]


def test_sdk_example_environment_is_valid_configuration():
    from djl_python.config.load import KNOWN_KEYS
    from djl_python.config.sources import canonical_key, env_option_key

    model, _ = _deploy_call()
    for key in model["env"]:
        assert canonical_key(env_option_key(key)) in KNOWN_KEYS, key
    config = load_config(env=model["env"])
    assert config.compiled_graph_path.startswith("s3://")


def test_autoscaling_example_is_a_valid_application_autoscaling_request():
    session = botocore.session.get_session()
    metric_types = session.get_service_model("application-autoscaling").shape_for("MetricType").enum
    client = boto3.client("application-autoscaling", region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")
    block = _block_with("application-autoscaling")
    with Stubber(client) as stub:
        stub.add_response("register_scalable_target", {})
        stub.add_response("put_scaling_policy", {"PolicyARN": "arn:aws:autoscaling:policy/x", "Alarms": []})
        with mock.patch("boto3.client", return_value=client):
            exec(compile(block, "docs/deployment.md", "exec"), {})  # botocore validates each request
        stub.assert_no_pending_responses()
    used = re.findall(r'"PredefinedMetricType": "(\w+)"', (REPO / "docs/deployment.md").read_text())
    assert "SageMakerVariantConcurrentRequestsPerModelHighResolution" in used
    assert set(used) <= set(metric_types), set(used) - set(metric_types)
