"""What the Dockerfiles and Kubernetes manifests rely on: the wheel carries every service with its migrations,
and the kustomize tree is complete and consistent."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from plexsync.devstack.infra import REPO_ROOT

SERVICES = ("auth", "catalog", "scanner", "scheduler")
# The port each service's image and pod listen on (the scheduler keeps its local default, 50054, everywhere).
PORTS = {"auth": 50051, "catalog": 50051, "scanner": 50051, "scheduler": 50054}
K8S = REPO_ROOT / "deploy" / "k8s"
# The services that call other services (auth and catalog only answer).
CALLERS = ("scanner", "scheduler")


@pytest.mark.slow
def test_wheel_carries_services_migrations_and_generated_code(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path),
         str(REPO_ROOT)],
        check=True, capture_output=True, cwd=tmp_path,
    )  # fmt: skip
    wheel = next(tmp_path.glob("plexsync-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for service in SERVICES:
        assert f"plexsync/{service}/__main__.py" in names
        assert f"plexsync/{service}/alembic.ini" in names
        assert f"plexsync/{service}/migrations/env.py" in names
        assert any(n.startswith(f"plexsync/{service}/migrations/versions/0001") for n in names)
    for part in ("common/grpc_server.py", "v1/catalog_pb2.py", "v1/catalog_pb2_grpc.py", "cli/main.py"):
        assert f"plexsync/{part}" in names


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _base(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for f in (K8S / "base").glob("*.yaml") for doc in _documents(f)
            if doc.get("kind") == kind}  # fmt: skip


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def test_kustomizations_reference_existing_files_and_every_service_is_deployed() -> None:
    for kustomization in K8S.rglob("kustomization.yaml"):
        for resource in yaml.safe_load(kustomization.read_text()).get("resources", []):
            assert (kustomization.parent / resource).exists(), f"{kustomization}: {resource} is missing"
    base = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())["resources"]
    deployments = _base("Deployment")
    assert set(SERVICES) <= set(deployments)
    for name, deployment in deployments.items():
        assert f"{name}.yaml" in base, name
        container = _container(deployment)
        port = PORTS[name]
        assert container["ports"][0]["containerPort"] == port, name
        assert container["readinessProbe"]["grpc"]["port"] == port, name
        assert container["livenessProbe"]["grpc"]["port"] == port, name
        assert container["startupProbe"]["grpc"]["port"] == port, name
        env = {e["name"]: e for e in container.get("env", [])}
        assert {"DATABASE_URL", "NATS_URL", "PLEXSYNC_SERVICE_TOKENS"} <= set(env), name
        if name in CALLERS:  # the services that call peers present a token of their own identity
            token_key = env["PLEXSYNC_SERVICE_TOKEN"]["valueFrom"]["secretKeyRef"]["key"]
            assert token_key == f"{name.upper()}_SERVICE_TOKEN", name
        else:
            assert "PLEXSYNC_SERVICE_TOKEN" not in env, name
        if port != 50051:  # the ConfigMap's PLEXSYNC_GRPC_PORT is 50051: the container overrides it
            assert env["PLEXSYNC_GRPC_PORT"]["value"] == str(port), name
        assert {"configMapRef": {"name": "plexsync-config"}} in container["envFrom"], name
        assert deployment["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": name}
        dockerfile = (REPO_ROOT / "services" / name / "Dockerfile").read_text()
        assert f"EXPOSE {port}" in dockerfile and f"PLEXSYNC_GRPC_PORT={port}" in dockerfile, name
        assert f'"-m", "plexsync.{name}"' in dockerfile, name
        assert deployment["spec"]["template"]["spec"]["automountServiceAccountToken"] is False, name
    auth_env = {e["name"] for e in _container(deployments["auth"])["env"]}
    assert "PLEXSYNC_TOKEN_KEYS" in auth_env


def test_services_and_addresses_agree_with_the_pods() -> None:
    services = _base("Service")
    config = _base("ConfigMap")["plexsync-config"]["data"]
    for name in SERVICES:
        port = services[name]["spec"]["ports"][0]
        assert port["port"] == PORTS[name] and port["targetPort"] == "grpc", name
        assert services[name]["spec"]["clusterIP"] == "None", name  # headless: clients balance over the pods
        assert services[name]["spec"]["selector"] == {"app.kubernetes.io/name": name}
        assert config[f"PLEXSYNC_{name.upper()}_ADDR"] == f"dns:///{name}.plexsync.svc.cluster.local:{PORTS[name]}", (
            name
        )
    scheduler_env = {e["name"] for e in _container(_base("Deployment")["scheduler"])["env"]} | set(config)
    assert {"NATS_URL", "PLEXSYNC_CATALOG_ADDR", "PLEXSYNC_SCANNER_ADDR", "PLEXSYNC_AUTH_ADDR"} <= scheduler_env


def test_overlays_scale_every_service_and_guard_the_replicated_ones() -> None:
    prod = yaml.safe_load((K8S / "overlays" / "prod" / "kustomization.yaml").read_text())
    dev = yaml.safe_load((K8S / "overlays" / "dev" / "kustomization.yaml").read_text())
    prod_replicas = {r["name"]: r["count"] for r in prod["replicas"]}
    assert set(SERVICES) <= set(prod_replicas) and prod_replicas["scheduler"] == 2
    assert {r["name"]: r["count"] for r in dev["replicas"]} == dict.fromkeys(SERVICES, 1)
    pdbs = {doc["metadata"]["name"]: doc for doc in _documents(K8S / "overlays" / "prod" / "pdb.yaml")}
    for name in SERVICES:
        assert pdbs[name]["spec"]["minAvailable"] == 1, name
        assert pdbs[name]["metadata"]["namespace"] == "plexsync", name  # without one it would select nothing
        assert pdbs[name]["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": name}
    secrets = {line.split("=", 1)[0] for gen in dev["secretGenerator"] for line in gen["literals"]}
    assert {f"{name.upper()}_SERVICE_TOKEN" for name in CALLERS} <= secrets
    assert not {f"{name.upper()}_SERVICE_TOKEN" for name in set(SERVICES) - set(CALLERS)} & secrets
    tokens = next(line for gen in dev["secretGenerator"] for line in gen["literals"]
                  if line.startswith("PLEXSYNC_SERVICE_TOKENS="))  # fmt: skip
    identities = {who.split(":")[0] for who in tokens.split("=", 1)[1].split(",")}
    assert identities >= {*CALLERS, "cli"} and any(who.endswith("@reader") for who in identities)
