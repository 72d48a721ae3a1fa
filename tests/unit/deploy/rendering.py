"""Rendering the kustomize trees with the real kubectl, and the policy every rendered object must meet.

`policy_violations` returns what is wrong (an empty list when nothing is), so the tests can also show that it
catches a broken manifest. Core kinds are validated strictly against the Kubernetes schemas elsewhere
(kubernetes-validate); the CRD objects it has no schema for (CloudNativePG Cluster, cert-manager Certificate,
Prometheus Operator PrometheusRule/ServiceMonitor) are checked structurally here.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from plexsync.devstack.infra import REPO_ROOT

K8S = REPO_ROOT / "deploy" / "k8s"
OBSERVABILITY = REPO_ROOT / "deploy" / "observability"
KUBERNETES_VERSION = "1.32.0"
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}
LONG_RUNNING = {"Deployment", "StatefulSet", "DaemonSet"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "ClusterIssuer", "CustomResourceDefinition"}
# Secrets an operator creates (deploy/k8s/README.md says how); a rendering may refer to these without holding them.
EXTERNAL_SECRETS = frozenset({("plexsync", "plexsync-secrets")})
# The keys cert-manager writes into a Certificate's Secret.
CERTIFICATE_KEYS = frozenset({"tls.crt", "tls.key", "ca.crt"})
SVC_HOST = re.compile(r"\b([a-z0-9](?:[-a-z0-9]*[a-z0-9])?)\.([a-z0-9](?:[-a-z0-9]*[a-z0-9])?)\.svc\b")

Obj = dict[str, Any]


def kubectl() -> str:
    """The kubectl binary; a clear failure (never a skip) where it is missing."""
    found = shutil.which("kubectl") or ("/usr/bin/kubectl" if Path("/usr/bin/kubectl").exists() else None)
    if found is None:
        raise AssertionError(
            "kubectl is needed to render deploy/k8s (kubectl kustomize). Install it: "
            "`apt-get install -y kubectl` (Kubernetes apt repository) or download it as "
            "https://kubernetes.io/docs/tasks/tools/ describes, then put it on PATH."
        )
    return found


@cache
def _render_cached(path: str) -> str:
    result = subprocess.run([kubectl(), "kustomize", path], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"kubectl kustomize {path} failed:\n{result.stderr}"
    return result.stdout


def render(path: Path) -> list[Obj]:
    """The objects `kubectl kustomize path` renders (a fresh copy each call: tests may change them)."""
    return [doc for doc in yaml.safe_load_all(_render_cached(str(path))) if doc]


def key(obj: Obj) -> tuple[str, str, str]:
    meta = obj["metadata"]
    return obj["kind"], meta.get("namespace", ""), meta["name"]


def pod_spec(obj: Obj) -> Obj:
    template = obj["spec"]["jobTemplate"]["spec"]["template"] if obj["kind"] == "CronJob" else obj["spec"]["template"]
    spec: Obj = template["spec"]
    return spec


def pod_labels(obj: Obj) -> dict[str, str]:
    template = obj["spec"]["jobTemplate"]["spec"]["template"] if obj["kind"] == "CronJob" else obj["spec"]["template"]
    labels: dict[str, str] = template["metadata"].get("labels", {})
    return labels


def containers(spec: Obj) -> Iterator[Obj]:
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def secret_values(obj: Obj) -> dict[str, str]:
    values = {k: base64.b64decode(v).decode() for k, v in obj.get("data", {}).items()}
    values.update(obj.get("stringData", {}))
    return values


class Inventory:
    """What a rendering provides: Secrets (and their keys), ConfigMaps, Services, pods' labels, Namespaces."""

    def __init__(self, objects: list[Obj]) -> None:
        self.objects = objects
        self.namespaces = {o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"}
        self.secrets: dict[tuple[str, str], frozenset[str] | None] = {}
        self.configmaps: dict[tuple[str, str], frozenset[str]] = {}
        self.services: set[tuple[str, str]] = set()
        for o in objects:
            ns, name = o["metadata"].get("namespace", ""), o["metadata"]["name"]
            if o["kind"] == "Secret":
                self.secrets[(ns, name)] = frozenset(secret_values(o))
            elif o["kind"] == "ConfigMap":
                self.configmaps[(ns, name)] = frozenset(o.get("data", {}))
            elif o["kind"] == "Service":
                self.services.add((ns, name))
            elif o["kind"] == "Certificate":
                self.secrets[(ns, o["spec"]["secretName"])] = CERTIFICATE_KEYS
            elif o["kind"] == "Cluster" and o["apiVersion"].startswith("postgresql.cnpg.io/"):
                # The CloudNativePG operator creates these Services for a Cluster.
                self.services |= {(ns, f"{name}-{role}") for role in ("rw", "ro", "r")}
        for ns, name in EXTERNAL_SECRETS:
            self.secrets.setdefault((ns, name), None)  # None: any key (the operator's Secret)

    def secret_has(self, ns: str, name: str, wanted: str | None) -> bool:
        if (ns, name) not in self.secrets:
            return False
        keys = self.secrets[(ns, name)]
        return wanted is None or keys is None or wanted in keys

    def configmap_has(self, ns: str, name: str, wanted: str | None) -> bool:
        return (ns, name) in self.configmaps and (wanted is None or wanted in self.configmaps[(ns, name)])


def _image_problem(image: str) -> str | None:
    if "@sha256:" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return "has no tag"
    if last.rsplit(":", 1)[1] == "latest":
        return "uses the `latest` tag"
    return None


def _container_problems(where: str, c: Obj, pod: Obj, long_running: bool) -> Iterator[str]:
    problem = _image_problem(c.get("image", ""))
    if problem:
        yield f"{where}: image {c.get('image')!r} {problem}"
    if long_running:
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if probe not in c:
                yield f"{where}: no {probe}"
    resources = c.get("resources", {})
    if not {"cpu", "memory"} <= set(resources.get("requests", {})):
        yield f"{where}: no cpu and memory requests"
    if "memory" not in resources.get("limits", {}):
        yield f"{where}: no memory limit"
    sc = c.get("securityContext", {})
    pod_sc = pod.get("securityContext", {})
    if sc.get("allowPrivilegeEscalation") is not False:
        yield f"{where}: allowPrivilegeEscalation is not false"
    if sc.get("readOnlyRootFilesystem") is not True:
        yield f"{where}: readOnlyRootFilesystem is not true"
    if "ALL" not in sc.get("capabilities", {}).get("drop", []) or sc.get("capabilities", {}).get("add"):
        yield f"{where}: capabilities do not drop ALL (or add some)"
    if sc.get("privileged"):
        yield f"{where}: privileged"
    if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot", False)):
        yield f"{where}: runAsNonRoot is not true"
    if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
        yield f"{where}: runs as root"
    seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
    if seccomp not in {"RuntimeDefault", "Localhost"}:
        yield f"{where}: seccompProfile is not RuntimeDefault"


def _reference_problems(where: str, ns: str, pod: Obj, inv: Inventory) -> Iterator[str]:
    for c in containers(pod):
        for env in c.get("env", []):
            source = env.get("valueFrom", {})
            if "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                if not ref.get("optional") and not inv.secret_has(ns, ref["name"], ref["key"]):
                    yield f"{where}: env {env['name']} needs Secret {ns}/{ref['name']} key {ref['key']}, not rendered"
            if "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                if not ref.get("optional") and not inv.configmap_has(ns, ref["name"], ref["key"]):
                    needed = f"ConfigMap {ns}/{ref['name']} key {ref['key']}"
                    yield f"{where}: env {env['name']} needs {needed}, not rendered"
        for source in c.get("envFrom", []):
            if "configMapRef" in source and not inv.configmap_has(ns, source["configMapRef"]["name"], None):
                yield f"{where}: envFrom ConfigMap {ns}/{source['configMapRef']['name']} is not rendered"
            if "secretRef" in source and not inv.secret_has(ns, source["secretRef"]["name"], None):
                yield f"{where}: envFrom Secret {ns}/{source['secretRef']['name']} is not rendered"
    for volume in pod.get("volumes", []):
        if "secret" in volume and not inv.secret_has(ns, volume["secret"]["secretName"], None):
            yield f"{where}: volume {volume['name']} needs Secret {ns}/{volume['secret']['secretName']}"
        if "configMap" in volume and not inv.configmap_has(ns, volume["configMap"]["name"], None):
            yield f"{where}: volume {volume['name']} needs ConfigMap {ns}/{volume['configMap']['name']}"


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def settings_of(objects: Iterable[Obj]) -> Iterator[tuple[str, str]]:
    """(where, value) of every setting: ConfigMap and Secret values, literal env values."""
    for o in objects:
        where = "/".join(key(o))
        if o["kind"] == "ConfigMap":
            for k, v in o.get("data", {}).items():
                yield f"{where}[{k}]", str(v)
        elif o["kind"] == "Secret":
            for k, v in secret_values(o).items():
                yield f"{where}[{k}]", v
        elif o["kind"] in WORKLOADS:
            for c in containers(pod_spec(o)):
                for env in c.get("env", []):
                    if "value" in env:
                        yield f"{where}/{c['name']}[{env['name']}]", str(env["value"])


def policy_violations(objects: list[Obj], *, self_contained: bool) -> list[str]:
    """Everything in `objects` that breaks the deployment policy (see the module docstring and README).

    self_contained: every `*.svc` host a setting names must be a Service of this rendering (the dev overlay).
    """
    inv = Inventory(objects)
    problems: list[str] = []
    workloads = [o for o in objects if o["kind"] in WORKLOADS]
    for o in objects:
        kind, ns, name = key(o)
        if kind not in CLUSTER_SCOPED and not ns:
            problems.append(f"{kind}/{name}: no namespace")
        elif ns and ns not in inv.namespaces:
            problems.append(f"{kind}/{name}: namespace {ns} is not rendered")
    for o in workloads:
        kind, ns, name = key(o)
        pod = pod_spec(o)
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{kind} {ns}/{name}: automountServiceAccountToken is not false")
        for c in containers(pod):
            problems += _container_problems(f"{kind} {ns}/{name}/{c['name']}", c, pod, kind in LONG_RUNNING)
        problems += _reference_problems(f"{kind} {ns}/{name}", ns, pod, inv)
        if kind == "Deployment" and o["spec"].get("replicas", 1) > 1:
            if not pod.get("topologySpreadConstraints"):
                problems.append(f"{kind} {ns}/{name}: several replicas but no topologySpreadConstraints")
            labels = pod_labels(o)
            if not any(
                p["kind"] == "PodDisruptionBudget"
                and p["metadata"].get("namespace") == ns
                and _selects(p["spec"]["selector"].get("matchLabels", {}), labels)
                for p in objects
            ):
                problems.append(f"{kind} {ns}/{name}: several replicas but no PodDisruptionBudget selects them")
    for o in objects:
        kind, ns, name = key(o)
        selector: dict[str, str] = {}
        if kind == "PodDisruptionBudget":
            selector = o["spec"]["selector"].get("matchLabels", {})
        elif kind == "Service" and "selector" in o["spec"]:
            selector = o["spec"]["selector"]
        else:
            if kind == "HorizontalPodAutoscaler":
                target = o["spec"]["scaleTargetRef"]
                if (target["kind"], ns, target["name"]) not in {key(w) for w in workloads}:
                    problems.append(f"{kind} {ns}/{name}: scales {target['kind']}/{target['name']}, not rendered")
            continue
        if not any(w["metadata"].get("namespace") == ns and _selects(selector, pod_labels(w)) for w in workloads):
            problems.append(f"{kind} {ns}/{name}: selector {selector} matches no pod of the rendering")
    workload_namespaces = {w["metadata"].get("namespace") for w in workloads}
    for ns in workload_namespaces:
        if not any(
            o["kind"] == "NetworkPolicy"
            and o["metadata"].get("namespace") == ns
            and o["spec"].get("podSelector") == {}
            and set(o["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
            and not o["spec"].get("ingress")
            and not o["spec"].get("egress")
            for o in objects
        ):
            problems.append(f"namespace {ns}: no default-deny NetworkPolicy")
    if self_contained:
        for where, value in settings_of(objects):
            for service, ns in SVC_HOST.findall(value):
                if (ns, service) not in inv.services:
                    problems.append(f"{where} points at {service}.{ns}.svc, which this rendering does not define")
    problems += crd_problems(objects, inv)
    return problems


def crd_problems(objects: list[Obj], inv: Inventory) -> list[str]:
    """Structural checks of the custom resources kubernetes-validate has no schema for."""
    problems: list[str] = []
    for o in objects:
        kind, ns, name = key(o)
        api = o["apiVersion"]
        where = f"{kind} {ns}/{name}"
        spec = o.get("spec", {})
        if kind == "Cluster" and api == "postgresql.cnpg.io/v1":
            if not isinstance(spec.get("instances"), int) or spec["instances"] < 1:
                problems.append(f"{where}: spec.instances must be a positive integer")
            if not spec.get("storage", {}).get("size"):
                problems.append(f"{where}: spec.storage.size is missing")
            initdb = spec.get("bootstrap", {}).get("initdb", {})
            secret = initdb.get("secret", {}).get("name", "")
            if not (initdb.get("database") and initdb.get("owner")):
                problems.append(f"{where}: bootstrap.initdb needs database and owner")
            if secret and not (inv.secret_has(ns, secret, "username") and inv.secret_has(ns, secret, "password")):
                problems.append(f"{where}: bootstrap secret {secret} with username/password is not rendered")
        elif kind == "Certificate" and api == "cert-manager.io/v1":
            if not spec.get("secretName") or not spec.get("issuerRef", {}).get("name") or not spec.get("dnsNames"):
                problems.append(f"{where}: needs secretName, issuerRef.name and dnsNames")
            if not {"server auth", "client auth"} <= set(spec.get("usages", [])):
                problems.append(f"{where}: usages must include server auth and client auth (mTLS)")
        elif kind == "PrometheusRule" and api == "monitoring.coreos.com/v1":
            for group in spec.get("groups", []):
                for rule in group.get("rules", []):
                    if not rule.get("expr") or not (rule.get("alert") or rule.get("record")):
                        problems.append(f"{where}: group {group.get('name')}: a rule lacks alert/record or expr")
                    if rule.get("alert") and "severity" not in rule.get("labels", {}):
                        problems.append(f"{where}: alert {rule['alert']} has no severity label")
        elif (
            kind == "ServiceMonitor"
            and api == "monitoring.coreos.com/v1"
            and (not spec.get("selector", {}).get("matchLabels") or not spec.get("endpoints"))
        ):
            problems.append(f"{where}: needs selector.matchLabels and endpoints")
    return problems
