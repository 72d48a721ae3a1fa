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

SERVICES = ("auth", "catalog", "scanner")


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


def test_kustomizations_reference_existing_files_and_every_service_is_deployed() -> None:
    k8s = REPO_ROOT / "deploy" / "k8s"
    for kustomization in k8s.rglob("kustomization.yaml"):
        for resource in yaml.safe_load(kustomization.read_text()).get("resources", []):
            assert (kustomization.parent / resource).exists(), f"{kustomization}: {resource} is missing"
    deployments = {doc["metadata"]["name"]: doc for f in (k8s / "base").glob("*.yaml") for doc in _documents(f)
                   if doc.get("kind") == "Deployment"}  # fmt: skip
    assert set(SERVICES) <= set(deployments)
    for name, deployment in deployments.items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["readinessProbe"]["grpc"]["port"] == 50051, name
        assert container["livenessProbe"]["grpc"]["port"] == 50051, name
        env = {e["name"] for e in container.get("env", [])}
        assert {"DATABASE_URL", "PLEXSYNC_SERVICE_TOKENS", "PLEXSYNC_SERVICE_TOKEN"} <= env, name
        assert (REPO_ROOT / "services" / name / "Dockerfile").exists()
    auth_env = {e["name"] for e in deployments["auth"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "PLEXSYNC_TOKEN_KEYS" in auth_env
