"""Every overlay renders with `kubectl kustomize`, every core object validates strictly against the Kubernetes
schemas, and the rendering meets the deployment policy (probes, resources, restricted security context, pinned
images, references that resolve, Services that exist). kubectl missing is a failure, never a skip."""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from plexsync.devstack.infra import REPO_ROOT

from tests.unit.deploy.rendering import (
    K8S,
    KUBERNETES_VERSION,
    OBSERVABILITY,
    Obj,
    containers,
    key,
    pod_spec,
    policy_violations,
    render,
    secret_values,
)

OVERLAYS = {"dev": K8S / "overlays" / "dev", "prod": K8S / "overlays" / "prod"}
SERVICES = ("auth", "catalog", "scanner", "scheduler")
# Custom resources the core schemas do not cover: checked structurally by rendering.crd_problems instead.
CRD_GROUPS = ("postgresql.cnpg.io/", "cert-manager.io/", "monitoring.coreos.com/")


def _with_queue_autoscaling(tmp_path: Path) -> Path:
    """prod plus the components/queue-autoscaling component, as an operator with a metrics adapter adds it."""
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(OVERLAYS["prod"], tmp_path)],  # kustomize takes relative paths only
                "components": [os.path.relpath(K8S / "components" / "queue-autoscaling", tmp_path)],
            }
        )
    )
    return tmp_path


def _find(objects: list[Obj], kind: str, name: str, namespace: str = "plexsync") -> Obj:
    return next(o for o in objects if key(o) == (kind, namespace, name))


def _container(objects: list[Obj], name: str) -> Obj:
    container: Obj = pod_spec(_find(objects, "Deployment", name))["containers"][0]
    return container


def _env(objects: list[Obj], name: str) -> dict[str, Obj]:
    return {e["name"]: e for e in _container(objects, name).get("env", [])}


def _config(objects: list[Obj]) -> dict[str, str]:
    data: dict[str, str] = _find(objects, "ConfigMap", "plexsync-config")["data"]
    return data


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_every_object_validates_strictly_against_the_kubernetes_schemas(overlay: str) -> None:
    objects = render(OVERLAYS[overlay])
    core = [o for o in objects if not o["apiVersion"].startswith(CRD_GROUPS)]
    assert len(core) > 20
    for obj in core:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{overlay}: {'/'.join(key(obj))}: {exc.message} at {list(exc.path)}") from None
    crds = {o["kind"] for o in objects} - {o["kind"] for o in core}
    assert crds == ({"Cluster"} if overlay == "dev" else {"Certificate"})


def test_the_queue_autoscaling_component_and_the_observability_tree_render_and_validate(tmp_path: Path) -> None:
    objects = render(_with_queue_autoscaling(tmp_path))
    hpa = _find(objects, "HorizontalPodAutoscaler", "scanner")
    kubernetes_validate.validate(hpa, KUBERNETES_VERSION, strict=True)
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    assert metrics["External"]["external"]["metric"]["name"] == "plexsync_jobs_queue_depth"
    assert policy_violations(objects, self_contained=False) == []

    extras = render(OBSERVABILITY)
    assert {o["kind"] for o in extras} == {"ConfigMap", "PrometheusRule", "ServiceMonitor"}
    for obj in extras:
        assert obj["metadata"]["namespace"] == "observability"
        if obj["kind"] == "ConfigMap":
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    monitor = next(o for o in extras if o["kind"] == "ServiceMonitor")
    collector = _find(render(OVERLAYS["prod"]), "Service", "otel-collector", "observability")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= collector["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in collector["spec"]["ports"]}


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_the_rendering_meets_the_policy(overlay: str) -> None:
    assert policy_violations(render(OVERLAYS[overlay]), self_contained=overlay == "dev") == []


def test_the_policy_catches_each_kind_of_mistake() -> None:
    """Each mutation of the dev rendering must be reported: the policy test cannot pass on a broken manifest."""
    base = render(OVERLAYS["dev"])
    assert policy_violations(base, self_contained=True) == []

    def violations(mutate: Callable[[list[Obj]], object]) -> list[str]:
        objects = copy.deepcopy(base)
        mutate(objects)
        return policy_violations(objects, self_contained=True)

    def drop(
        field: str, kind: str = "Deployment", name: str = "catalog", namespace: str = "plexsync"
    ) -> Callable[[list[Obj]], object]:
        return lambda objects: pod_spec(_find(objects, kind, name, namespace))["containers"][0].pop(field)

    cases: dict[str, Callable[[list[Obj]], object]] = {
        "no startupProbe": drop("startupProbe"),
        "no readinessProbe": drop("readinessProbe", "StatefulSet", "nats"),
        "no livenessProbe": drop("livenessProbe", "Deployment", "otel-collector", "observability"),
        "no cpu and memory requests": drop("resources", "Job", "scanner-migrate"),
        "readOnlyRootFilesystem is not true": lambda o: _container(o, "auth")["securityContext"].pop(
            "readOnlyRootFilesystem"
        ),
        "capabilities do not drop ALL": lambda o: _container(o, "scanner")["securityContext"].update(
            capabilities={"drop": ["NET_RAW"]}
        ),
        "seccompProfile is not RuntimeDefault": lambda o: (
            pod_spec(_find(o, "Deployment", "scheduler"))["securityContext"].pop("seccompProfile"),
            _container(o, "scheduler")["securityContext"].pop("seccompProfile"),
        ),
        "allowPrivilegeEscalation is not false": lambda o: _container(o, "catalog")["securityContext"].update(
            allowPrivilegeEscalation=True
        ),
        "uses the `latest` tag": lambda o: _container(o, "catalog").update(image="ghcr.io/plexsync/catalog:latest"),
        "has no tag": lambda o: _container(o, "auth").update(image="ghcr.io/plexsync/auth"),
        "automountServiceAccountToken is not false": lambda o: pod_spec(_find(o, "Deployment", "auth")).pop(
            "automountServiceAccountToken"
        ),
        "needs Secret plexsync/plexsync-secret key DATABASE_URL": lambda o: _env(o, "catalog")["DATABASE_URL"][
            "valueFrom"
        ]["secretKeyRef"].update(name="plexsync-secret"),
        "key NOPE, not rendered": lambda o: _env(o, "scanner")["NATS_URL"]["valueFrom"]["secretKeyRef"].update(
            key="NOPE"
        ),
        "envFrom ConfigMap plexsync/plexsync-settings is not rendered": lambda o: _container(o, "scheduler")["envFrom"][
            0
        ]["configMapRef"].update(name="plexsync-settings"),
        "points at postgres.plexsync.svc": lambda o: _find(o, "ConfigMap", "plexsync-config")["data"].update(
            EXTRA_DB="postgres.plexsync.svc.cluster.local:5432"
        ),
        "points at tempo.observability.svc": lambda o: _container(o, "auth")["env"].append(
            {"name": "X", "value": "http://tempo.observability.svc:4317"}
        ),
        "Deployment/catalog: no namespace": lambda o: _find(o, "Deployment", "catalog")["metadata"].pop("namespace"),
        "no PodDisruptionBudget selects them": lambda o: _find(o, "Deployment", "scanner")["spec"].update(replicas=3),
        "no default-deny NetworkPolicy": lambda o: o.remove(_find(o, "NetworkPolicy", "default-deny")),
    }
    for expected, mutate in cases.items():
        found = violations(mutate)
        assert any(expected in problem for problem in found), f"{expected!r} not reported; got {found}"


def test_dev_runs_as_rendered_in_one_namespace_with_its_own_postgresql_and_nats() -> None:
    objects = render(OVERLAYS["dev"])
    for name in SERVICES:
        assert _find(objects, "Deployment", name)["spec"]["replicas"] == 1
    secret = next(o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"].startswith("plexsync-secrets"))
    assert secret["metadata"]["namespace"] == "plexsync"
    values = secret_values(secret)
    assert "postgres-rw.plexsync.svc" in values["DATABASE_URL"] and "nats.plexsync.svc" in values["NATS_URL"]
    cluster = _find(objects, "Cluster", "postgres")
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    credentials = secret_values(_find(objects, "Secret", cluster["spec"]["bootstrap"]["initdb"]["secret"]["name"]))
    assert f"{credentials['username']}:{credentials['password']}@" in values["DATABASE_URL"]
    nats = _find(objects, "StatefulSet", "nats")
    config = _find(objects, "ConfigMap", "nats-config")["data"]["nats.conf"]
    assert '"jetstream"' in config and '"store_dir": "/data"' in config
    assert nats["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "nats-js"
    assert _config(objects)["PLEXSYNC_GRPC_INSECURE"] == "true"


def test_dev_tokens_name_the_callers_and_their_roles() -> None:
    objects = render(OVERLAYS["dev"])
    secret = next(o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"].startswith("plexsync-secrets"))
    values = secret_values(secret)
    tokens = dict(entry.rsplit(":", 1) for entry in values["PLEXSYNC_SERVICE_TOKENS"].split(","))
    assert set(tokens) == {"scanner", "scheduler", "cli", "dashboard@reader"}
    for caller in ("scanner", "scheduler"):  # the services that call peers present their own identity's token
        assert values[f"{caller.upper()}_SERVICE_TOKEN"] == tokens[caller]
        ref = _env(objects, caller)["PLEXSYNC_SERVICE_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert ref["key"] == f"{caller.upper()}_SERVICE_TOKEN"
    for server_only in ("auth", "catalog"):  # they call no peer, so they hold no token of their own
        assert "PLEXSYNC_SERVICE_TOKEN" not in _env(objects, server_only)


def test_prod_scales_serves_tls_and_takes_its_database_and_nats_from_the_secret() -> None:
    objects = render(OVERLAYS["prod"])
    replicas = {name: _find(objects, "Deployment", name)["spec"]["replicas"] for name in SERVICES}
    assert replicas["scanner"] >= 3 and replicas["scheduler"] >= 2 and min(replicas.values()) >= 2
    config = _config(objects)
    assert config["PLEXSYNC_GRPC_INSECURE"] == "false" and config["PLEXSYNC_TLS_CLIENT_AUTH"] == "require"
    assert config["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability.svc.cluster.local:4317"
    assert not any(o["kind"] in {"Cluster", "StatefulSet"} for o in objects)  # PostgreSQL and NATS are yours
    for name in SERVICES:
        env = _env(objects, name)
        for setting in ("DATABASE_URL", "NATS_URL"):
            assert env[setting]["valueFrom"]["secretKeyRef"]["name"] == "plexsync-secrets", (name, setting)
        mounts = {m["mountPath"]: m["name"] for m in _container(objects, name)["volumeMounts"]}
        volumes = {v["name"]: v for v in pod_spec(_find(objects, "Deployment", name))["volumes"]}
        tls_dir = str(Path(config["PLEXSYNC_TLS_CERT_FILE"]).parent)
        assert volumes[mounts[tls_dir]]["secret"]["secretName"] == f"{name}-tls"
        certificate = _find(objects, "Certificate", f"{name}-tls")
        assert f"{name}.plexsync.svc.cluster.local" in certificate["spec"]["dnsNames"]
        # The kubelet's gRPC probes cannot speak TLS: they use the plain-TCP health-only port.
        container = _container(objects, name)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == int(config["PLEXSYNC_HEALTH_PORT"]), (name, probe)
        assert {"name": "health", "containerPort": 8086} in container["ports"]
        assert _find(objects, "PodDisruptionBudget", name)["spec"]["minAvailable"] == 1


def test_services_are_headless_and_addresses_name_them() -> None:
    for overlay in OVERLAYS.values():
        objects = render(overlay)
        config = _config(objects)
        for name in SERVICES:
            service = _find(objects, "Service", name)
            assert service["spec"]["clusterIP"] == "None", name  # every pod's address, for round_robin
            port = service["spec"]["ports"][0]["port"]
            assert (
                config[f"PLEXSYNC_{name.upper()}_ADDR"] == f"dns:///{name}.plexsync.svc.cluster.local:{port}"
            )  # balanced


def test_migration_jobs_run_each_schema_and_the_services_only_check_it() -> None:
    for overlay in OVERLAYS.values():
        objects = render(overlay)
        assert _config(objects)["PLEXSYNC_MIGRATE_ON_START"] == "false"
        for name in SERVICES:
            job = _find(objects, "Job", f"{name}-migrate")
            container = pod_spec(job)["containers"][0]
            assert container["image"] == _container(objects, name)["image"], name
            assert container["args"] == ["migrate"], name
            assert "DATABASE_URL" in {e["name"] for e in container["env"]}, name
            assert job["spec"]["ttlSecondsAfterFinished"] > 0  # so the next apply can create it for a new image
            dockerfile = (REPO_ROOT / "services" / name / "Dockerfile").read_text()
            assert f'ENTRYPOINT ["python", "-m", "plexsync.{name}"]' in dockerfile


def test_images_come_from_one_place_with_pinned_versions() -> None:
    component = yaml.safe_load((K8S / "components" / "images" / "kustomization.yaml").read_text())
    pinned = {image["name"]: image["newTag"] for image in component["images"]}
    for overlay in OVERLAYS.values():
        for obj in render(overlay):
            if obj["kind"] in {"Deployment", "StatefulSet", "Job"}:
                for c in containers(pod_spec(obj)):
                    name, tag = c["image"].rsplit(":", 1)
                    assert pinned[name] == tag != "latest", c["image"]
    for path in K8S.rglob("*.yaml"):  # no manifest pins a version of its own
        for line in path.read_text().splitlines():
            match = re.match(r"\s*image:\s*(\S+)", line)
            if match and "kustomization" not in path.name:
                assert ":" not in match.group(1).rsplit("/", 1)[-1] or "postgresql" in match.group(1), (path, line)


def _exported_metrics() -> set[str]:
    """The Prometheus names of every metric plexsync defines (as the collector's exporter writes them)."""
    source = (REPO_ROOT / "libs" / "common" / "plexsync" / "common" / "metrics.py").read_text()
    names: set[str] = set()
    for kind, name, unit in re.findall(r'create_(\w+)\(\s*"([\w.]+)",(?:[^)]*?unit="([^"]*)")?', source):
        base = name.replace(".", "_") + ("_seconds" if unit == "s" else "")
        if kind == "histogram":
            names |= {f"{base}_bucket", f"{base}_count", f"{base}_sum"}
        elif kind == "counter":
            names.add(f"{base}_total")
        else:
            names.add(base)
    return names


def test_dashboard_and_alerts_use_only_metrics_the_services_export() -> None:
    exported = _exported_metrics()
    assert {"plexsync_scan_items_total", "plexsync_jobs_queue_depth", "plexsync_job_lag_seconds_bucket"} <= exported
    dashboard = json.loads((OBSERVABILITY / "plexsync-dashboard.json").read_text())
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    rules = yaml.safe_load((OBSERVABILITY / "prometheus-rules.yaml").read_text())
    alerts = {r["alert"]: r["expr"] for g in rules["spec"]["groups"] for r in g["rules"]}
    assert {"PlexsyncScanStuck", "PlexsyncPlexServerFailing", "PlexsyncJobQueueBacklog"} <= set(alerts)
    for expr in [*expressions, *alerts.values()]:
        series = re.sub(r"\b(by|without)\s*\([^)]*\)|\{[^}]*\}", "", expr)  # label names are not metrics
        used = set(re.findall(r"\bplexsync_[a-z_]+", series))
        assert used and used <= exported, (expr, used - exported)
    titles = " ".join(panel["title"] for panel in dashboard["panels"]).lower()
    for topic in ("scans", "items per second", "job lag", "queue depth", "plex request latency", "plex request errors",
                  "catalog write throughput"):  # fmt: skip
        assert topic in titles, topic
