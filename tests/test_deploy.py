"""The Kubernetes manifests in deploy/, validated offline against the Kubernetes schemas
(`kubernetes-validate` ships them) and checked against the service they run."""

from __future__ import annotations

import copy
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from pipeline import paths

DEPLOY = paths.PROJECT_ROOT / "deploy"
#: The oldest Kubernetes release still supported upstream when this was written, and the newest
#: the validator knows.
VERSIONS = ("1.31.0", kubernetes_validate.latest_version())


def documents() -> list[tuple[Path, dict]]:
    found = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        found.extend((path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc)
    return found


def by_kind(kind: str) -> list[dict]:
    return [doc for _, doc in documents() if doc["kind"] == kind]


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_is_valid_kubernetes(version):
    assert {doc["kind"] for _, doc in documents()} == {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
    }
    for path, doc in documents():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.name} ({doc['kind']}) on Kubernetes {version}: {exc.message}")


def test_the_validator_refuses_a_misspelt_field():
    """So that the test above can fail: strict validation refuses unknown fields."""
    deployment = copy.deepcopy(by_kind("Deployment")[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[0], strict=True)


def test_deployments_probe_the_service_health_checks_and_bound_their_resources():
    bento_port = 3000  # EXPOSE in the bento's Dockerfile (tests/test_service.py checks it)
    deployments = {d["metadata"]["name"]: d for d in by_kind("Deployment")}
    assert set(deployments) == {"cnn-classifier", "cnn-classifier-gpu"}
    for deployment in deployments.values():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["ports"][0]["containerPort"] == bento_port
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
        assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]) <= set(resources["limits"])
        selector = deployment["spec"]["selector"]["matchLabels"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items()
    gpu = deployments["cnn-classifier-gpu"]["spec"]["template"]["spec"]["containers"][0]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"name": "SERVING_GPU", "value": "1"} in gpu["env"]
    cpu = deployments["cnn-classifier"]["spec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in cpu["resources"]["limits"]


def test_the_service_reaches_every_serving_pod_and_the_autoscaler_scales_the_cpu_one():
    (service,) = by_kind("Service")
    selector = service["spec"]["selector"]
    for deployment in by_kind("Deployment"):
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    (hpa,) = by_kind("HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "cnn-classifier")
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
