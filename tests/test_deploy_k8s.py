"""The Kubernetes manifests in deploy/k8s: every resource passes the Kubernetes 1.37 OpenAPI schema
(strict: no unknown fields), offline, with kubernetes-validate's bundled schemas; and the server's
pods are wired the way the server behaves: arguments `streamst-server` accepts, readiness on
/readyz, liveness on /healthz, a grace period longer than the drain, ClientIP affinity."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamst.server import cli
from streamst.server.config import ServerConfig

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="needs kubernetes-validate (pip install -e '.[test]')"
)
yaml = pytest.importorskip("yaml", reason="needs PyYAML (a dependency of kubernetes-validate)")

K8S = Path(__file__).resolve().parents[1] / "deploy" / "k8s"
KUBERNETES_VERSION = "1.37.0"


def _resources() -> list[tuple[str, dict]]:
    return [
        (f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc)
        for path in sorted(K8S.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def _by_kind(kind: str, name: str) -> dict:
    return next(doc for _, doc in _resources() if doc["kind"] == kind and doc["metadata"]["name"] == name)


def test_there_are_the_server_and_the_decoder_deployments_and_services():
    kinds = sorted((doc["kind"], doc["metadata"]["name"]) for _, doc in _resources())
    assert kinds == [("Deployment", "streamst-server"), ("Deployment", "vllm"), ("Service", "streamst"), ("Service", "vllm")]


@pytest.mark.parametrize("name, resource", _resources(), ids=[name for name, _ in _resources()])
def test_every_resource_passes_the_kubernetes_schema_strictly(name, resource):
    kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def test_the_server_pods_are_wired_as_the_server_behaves():
    pod = _by_kind("Deployment", "streamst-server")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = cli.build_parser().parse_args(container["args"])
    assert args.translator_url == "http://vllm:8000/v1" and args.host == "0.0.0.0"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    limits = cli.config_from_args(args).limits
    assert pod["terminationGracePeriodSeconds"] > ServerConfig().shutdown_grace_s + limits.close_timeout_s
    service = _by_kind("Service", "streamst")["spec"]
    assert service["sessionAffinity"] == "ClientIP"
    vllm_args = _by_kind("Deployment", "vllm")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--served-model-name={args.translator_api_model}" in vllm_args and "--enable-prefix-caching" in vllm_args
