"""Policy checks over a `kubectl kustomize` render that neither kubernetes-validate nor
checkov makes (docs/kubernetes.md lists them): `policy.py RENDER.yaml [--kubernetes-version V]`
prints each check and its findings, and exits 1 on any finding."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable, Iterator

import kubernetes_validate
from custom_resources import check_custom_resources, is_checked
from render import CLUSTER_SCOPED, RUN_TO_COMPLETION, Pod, Render, dig, ident, selector_matches

Finding = tuple[str, str]                      # (object, what is wrong)
CHECKS: list[tuple[str, str, Callable[..., Iterator[Finding]]]] = []


def check(name: str, what: str):
    def register(fn):
        CHECKS.append((name, what, fn))
        return fn
    return register


def containers(spec: dict, init: bool = True) -> list[dict]:
    return (spec.get("containers") or []) + ((spec.get("initContainers") or []) if init else [])


def env_value(render: Render, namespace: str, container: dict, name: str) -> str | None:
    """A variable's literal value: env first, as Kubernetes does, then envFrom's ConfigMaps."""
    for var in container.get("env") or []:
        if var.get("name") == name:
            return var.get("value")
    for source in container.get("envFrom") or []:
        cm_name = dig(source, "configMapRef", "name")
        cm = render.get("ConfigMap", namespace, cm_name) if cm_name else None
        if cm and name in (cm.get("data") or {}):
            return cm["data"][name]
    return None


def rendered_pods(render: Render) -> list[Pod]:
    return [p for p in render.pods() if p.spec is not None]


@functools.cache
def has_schema(api_version: str, kind: str, version: str) -> bool:
    """Whether kubernetes-validate knows the kind (a stub: only the lookup matters)."""
    try:
        kubernetes_validate.validate({"apiVersion": api_version, "kind": kind}, version, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return False
    except kubernetes_validate.ValidationError:
        pass
    return True


@check("kinds", "every object has a Kubernetes schema or a custom-resource check")
def check_kinds(render: Render, version: str) -> Iterator[Finding]:
    for doc in render.docs:
        if not is_checked(doc) and not has_schema(str(doc.get("apiVersion")), doc["kind"], version):
            yield ident(doc), f"{doc.get('apiVersion')} {doc['kind']} has no schema and no check here"


@check("namespaces", "namespaced objects live in namespaces of the render that enforce PSS restricted")
def check_namespaces(render: Render, version: str) -> Iterator[Finding]:
    namespaces = {dig(n, "metadata", "name"): dig(n, "metadata", "labels", default={}) or {}
                  for n in render.of_kind("Namespace")}
    for name, labels in namespaces.items():
        if labels.get("pod-security.kubernetes.io/enforce") != "restricted":
            yield f"Namespace/{name}", "label pod-security.kubernetes.io/enforce is not 'restricted'"
    for doc in render.docs:
        if doc["kind"] in CLUSTER_SCOPED:
            continue
        ns = dig(doc, "metadata", "namespace")
        if not ns:
            yield ident(doc), "no namespace"
        elif ns not in namespaces:
            yield ident(doc), f"namespace {ns!r} is not created by the render"


# the volume types the restricted Pod Security Standard allows
ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                   "persistentVolumeClaim", "projected", "secret"}


@check("pod-security", "what checkov misses of PSS restricted: volume types, a container's own seccomp")
def check_pod_security(render: Render, version: str) -> Iterator[Finding]:
    for pod in rendered_pods(render):
        spec, psc = pod.spec, pod.spec.get("securityContext") or {}
        for vol in spec.get("volumes") or []:
            kinds = set(vol) - {"name"}
            if not kinds <= ALLOWED_VOLUMES:
                yield pod.origin, f"volume {vol.get('name')!r} of type {sorted(kinds)} is not allowed"
        for c in containers(spec):
            # checkov reads the pod's seccompProfile; a container's own overrides it
            profile = (c.get("securityContext") or {}).get("seccompProfile", psc.get("seccompProfile"))
            if dig(profile or {}, "type") not in ("RuntimeDefault", "Localhost"):
                yield pod.origin, f"container {c.get('name')!r}: seccompProfile is not RuntimeDefault"


# endpoints that depend on the database: a liveness probe on them would restart every
# replica during a database outage
DATABASE_PATHS = {"/health", "/readyz"}


@check("probes", "long-running containers have a startup probe, and no liveness probe on the database")
def check_probes(render: Render, version: str) -> Iterator[Finding]:
    for pod in rendered_pods(render):
        if pod.owner_kind in RUN_TO_COMPLETION:
            continue
        for c in containers(pod.spec, init=False):
            if not c.get("startupProbe"):
                yield pod.origin, f"container {c.get('name')!r}: no startupProbe"
            path = dig(c, "livenessProbe", "httpGet", "path")
            if path in DATABASE_PATHS:
                yield pod.origin, (f"container {c.get('name')!r}: liveness probe on {path},"
                                   " which depends on the database")


@check("selectors", "workload, Service, PDB and HPA selectors and targets match what exists")
def check_selectors(render: Render, version: str) -> Iterator[Finding]:
    for obj, template in render.workloads():
        selector = dig(obj, "spec", "selector")
        labels = dig(template, "metadata", "labels", default={}) or {}
        if obj["kind"] != "Pod" and selector is not None and not selector_matches(selector, labels):
            yield ident(obj), "spec.selector does not match the pod template's labels"
    for svc in render.of_kind("Service"):
        ns, selector = dig(svc, "metadata", "namespace"), dig(svc, "spec", "selector")
        if not selector:
            continue
        pods = render.pods_in(ns, selector, plain=True)
        if not pods:
            yield ident(svc), "its selector matches no pod"
        for port in dig(svc, "spec", "ports", default=[]):
            target = port.get("targetPort")
            if isinstance(target, str) and pods and not any(target in p.ports for p in pods):
                yield ident(svc), f"targetPort {target!r} is not a port name of the selected pods"
    for pdb in render.of_kind("PodDisruptionBudget"):
        selector = dig(pdb, "spec", "selector")  # none selects nothing (policy/v1)
        if selector is None or not render.pods_in(dig(pdb, "metadata", "namespace"), selector):
            yield ident(pdb), "its selector matches no pod"
    for hpa in render.of_kind("HorizontalPodAutoscaler"):
        ref = dig(hpa, "spec", "scaleTargetRef", default={})
        target = render.get(ref.get("kind", ""), dig(hpa, "metadata", "namespace"), ref.get("name", ""))
        if target is None:
            yield ident(hpa), f"scaleTargetRef {ref.get('kind')}/{ref.get('name')} is not in the render"
        elif "replicas" in (target.get("spec") or {}):
            yield ident(target), "sets spec.replicas although a HorizontalPodAutoscaler scales it"
    for sts in render.of_kind("StatefulSet"):
        name = dig(sts, "spec", "serviceName")
        svc = render.get("Service", dig(sts, "metadata", "namespace"), name or "")
        if svc is None or dig(svc, "spec", "clusterIP") != "None":
            yield ident(sts), f"serviceName {name!r} is not a headless Service of the render"


def pod_references(pod: Pod) -> Iterator[tuple[str, str, str | None, bool]]:
    """(kind, name, key or None, optional) for every ConfigMap and Secret a pod uses."""
    def by_items(kind: str, source: dict, name: str | None):
        for item in source.get("items") or [None]:
            yield kind, name, item and item.get("key"), bool(source.get("optional"))

    for vol in pod.spec.get("volumes") or []:
        if "configMap" in vol:
            yield from by_items("ConfigMap", vol["configMap"], vol["configMap"].get("name"))
        if "secret" in vol:
            yield from by_items("Secret", vol["secret"], vol["secret"].get("secretName"))
        for source in dig(vol, "projected", "sources", default=[]) or []:
            for kind, field in (("ConfigMap", "configMap"), ("Secret", "secret")):
                if field in source:
                    yield from by_items(kind, source[field], source[field].get("name"))
    for c in containers(pod.spec):
        for var in c.get("env") or []:
            for kind, field in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                if ref := dig(var, "valueFrom", field):
                    yield kind, ref.get("name"), ref.get("key"), bool(ref.get("optional"))
        for source in c.get("envFrom") or []:
            for kind, field in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                if field in source:
                    yield kind, source[field].get("name"), None, bool(source[field].get("optional"))
    for secret in pod.spec.get("imagePullSecrets") or []:
        yield "Secret", secret.get("name"), None, False


def service_exists(render: Render, namespace: str, name: str) -> bool:
    """A Service of the render, or one an operator creates (CloudNativePG's -rw...)."""
    return render.get("Service", namespace, name) is not None or any(
        p.kind == "Service" and p.namespace == namespace and p.name == name for p in render.provided)


def host_service(host: str, namespace: str, namespaces: set[str]) -> tuple[str, str] | None:
    """(namespace, name) of the Service that `name`, `name.ns` or `name.ns.svc[...]` resolves
    to, or None for an outside host or an address, which cannot be checked here."""
    labels = host.split(".")
    if len(labels) == 1:
        return namespace, host
    if labels[1] in namespaces and (len(labels) == 2 or labels[2] == "svc"):
        return labels[1], labels[0]
    return None


def file_findings(render: Render, pod: Pod, c: dict) -> Iterator[str]:
    """Each `X_FILE` path (PGPASSWORD_FILE...) is a file a volume provides: a typo would
    only show at start-up."""
    volumes = {v.get("name"): v for v in pod.spec.get("volumes") or []}
    for var in c.get("env") or []:
        name, path = var.get("name", ""), var.get("value")
        if not name.endswith("_FILE") or not isinstance(path, str) or not path.startswith("/"):
            continue
        mounts = [m for m in c.get("volumeMounts") or []
                  if path == m.get("mountPath") or path.startswith(m.get("mountPath", "").rstrip("/") + "/")]
        if not mounts:
            yield f"{name}={path} is in none of the container's volume mounts"
            continue
        mount = max(mounts, key=lambda m: len(m.get("mountPath", "")))
        if mount.get("subPath") or path == mount.get("mountPath"):
            continue
        relative = path[len(mount["mountPath"].rstrip("/")) + 1:]
        vol = volumes.get(mount.get("name")) or {}
        for kind, field, name_field in (("Secret", "secret", "secretName"), ("ConfigMap", "configMap", "name")):
            if field not in vol:
                continue
            source = vol[field]
            files = {item.get("path") for item in source["items"]} if source.get("items") else \
                render.keys(kind, pod.namespace, source.get(name_field))
            if files is not None and relative not in files:
                yield f"{name}={path}: the {kind} volume {mount.get('name')!r} has no file {relative!r}"


@check("references", "ConfigMaps, Secrets (and keys), ServiceAccounts, PVCs, volumes and backends exist; "
                     "PGHOST names a Service, each X_FILE a mounted file")
def check_references(render: Render, version: str) -> Iterator[Finding]:
    namespaces = {dig(n, "metadata", "name") for n in render.of_kind("Namespace")}
    for pod in rendered_pods(render):
        ns = pod.namespace
        for c in containers(pod.spec):
            host = env_value(render, ns, c, "PGHOST")
            service = host_service(host, ns, namespaces) if host else None
            if service and not service_exists(render, *service):
                yield pod.origin, f"container {c.get('name')!r}: PGHOST {host!r} names no Service of the render " \
                                  f"nor one an operator creates"
            for finding in file_findings(render, pod, c):
                yield pod.origin, f"container {c.get('name')!r}: {finding}"
        for kind, name, key, optional in pod_references(pod):
            keys = render.keys(kind, ns, name)
            if keys is None and not optional:
                yield pod.origin, f"{kind} {name!r} is neither in the render nor made by an operator"
            elif keys is not None and key is not None and key not in keys:
                yield pod.origin, f"{kind} {name!r} has no key {key!r}"
        sa = pod.spec.get("serviceAccountName", "default")
        if sa != "default" and render.get("ServiceAccount", ns, sa) is None:
            yield pod.origin, f"ServiceAccount {sa!r} is not in the render"
        volumes = {v.get("name") for v in pod.spec.get("volumes") or []}
        owner = render.get(pod.owner_kind, ns, pod.origin.rsplit("/", 1)[-1]) or {}
        volumes |= {dig(t, "metadata", "name") for t in dig(owner, "spec", "volumeClaimTemplates", default=[])}
        for vol in pod.spec.get("volumes") or []:
            claim = dig(vol, "persistentVolumeClaim", "claimName")
            if claim and render.get("PersistentVolumeClaim", ns, claim) is None:
                yield pod.origin, f"PersistentVolumeClaim {claim!r} is not in the render"
        for c in containers(pod.spec):
            for mount in c.get("volumeMounts") or []:
                if mount.get("name") not in volumes:
                    yield pod.origin, f"container {c.get('name')!r} mounts undefined volume {mount.get('name')!r}"
    for ingress in render.of_kind("Ingress"):
        ns = dig(ingress, "metadata", "namespace")
        for rule in dig(ingress, "spec", "rules", default=[]):
            for path in dig(rule, "http", "paths", default=[]):
                backend = dig(path, "backend", "service", default={})
                svc = render.get("Service", ns, backend.get("name", ""))
                port = dig(backend, "port", "name") or dig(backend, "port", "number")
                if svc is None:
                    yield ident(ingress), f"backend Service {backend.get('name')!r} is not in the render"
                elif port not in {p.get("name") for p in dig(svc, "spec", "ports", default=[])} | \
                        {p.get("port") for p in dig(svc, "spec", "ports", default=[])}:
                    yield ident(ingress), f"backend port {port!r} is not a port of Service {backend.get('name')!r}"


def is_default_deny(policy: dict) -> bool:
    spec = policy.get("spec") or {}
    return spec.get("podSelector") in ({}, None) and not spec.get("ingress") and not spec.get("egress") \
        and {"Ingress", "Egress"} <= set(spec.get("policyTypes") or [])


@check("network-policies", "a default deny per namespace; policies and peers select existing pods")
def check_network_policies(render: Render, version: str) -> Iterator[Finding]:
    policies = list(render.of_kind("NetworkPolicy"))
    for ns in sorted({p.namespace for p in render.pods()}):
        if not any(is_default_deny(p) and dig(p, "metadata", "namespace") == ns for p in policies):
            yield f"Namespace/{ns}", "no default-deny NetworkPolicy (empty podSelector, Ingress and Egress)"
    for policy in policies:
        ns, spec = dig(policy, "metadata", "namespace"), policy.get("spec") or {}
        selected = render.pods_in(ns, spec.get("podSelector"))
        if not selected:
            yield ident(policy), "its podSelector selects no pod"
        for direction, peer_field in (("ingress", "from"), ("egress", "to")):
            for rule in spec.get(direction) or []:
                peers_in_ns: list[Pod] = []
                for peer in rule.get(peer_field) or []:
                    ns_sel = peer.get("namespaceSelector")
                    if ns_sel is not None and "kubernetes.io/metadata.name" not in (ns_sel.get("matchLabels") or {}):
                        yield ident(policy), f"{direction}: a namespaceSelector not by kubernetes.io/metadata.name"
                    if ns_sel is None and "podSelector" in peer:
                        pods = render.pods_in(ns, peer["podSelector"])
                        if not pods:
                            yield ident(policy), f"{direction}: peer podSelector {peer['podSelector']} selects no pod"
                        peers_in_ns += pods
                # a named port is resolved on the destination pods: ours for ingress,
                # the peers for egress (checkable only when they are in this namespace)
                targets = selected if direction == "ingress" else peers_in_ns
                for port in rule.get("ports") or []:
                    name = port.get("port")
                    if isinstance(name, str) and targets and not any(name in p.ports for p in targets):
                        yield ident(policy), f"{direction}: port {name!r} is not a port name of the destination pods"


# where Prometheus and the blackbox exporter run
MONITORING_NAMESPACE = "monitoring"


def pod_port(pod: Pod, port: int | str | None) -> int | None:
    """A port as a number: a name resolved through the pod's container ports."""
    return pod.ports.get(port) if isinstance(port, str) else port


def monitored_ports(render: Render) -> Iterator[tuple[dict, Pod, int]]:
    """(monitor, pod, port number) for every pod port a ServiceMonitor or PodMonitor
    scrapes (an unresolved one is custom-resources' finding)."""
    for monitor in render.of_kind("ServiceMonitor", "PodMonitor"):
        ns, spec = dig(monitor, "metadata", "namespace"), monitor.get("spec") or {}
        if monitor["kind"] == "PodMonitor":
            for pod in render.pods_in(ns, spec.get("selector")):
                for ep in spec.get("podMetricsEndpoints") or []:
                    port = pod_port(pod, ep.get("port") or ep.get("portNumber") or ep.get("targetPort"))
                    if port is not None:
                        yield monitor, pod, port
            continue
        for svc in render.of_kind("Service"):
            if dig(svc, "metadata", "namespace") != ns or \
                    not selector_matches(spec.get("selector"), dig(svc, "metadata", "labels", default={}) or {}):
                continue
            by_name = {p.get("name"): p for p in dig(svc, "spec", "ports", default=[])}
            for ep in spec.get("endpoints") or []:
                service_port = by_name.get(ep.get("port")) or {}
                # a Service port without targetPort sends to the same number
                target = service_port.get("targetPort", service_port.get("port"))
                for pod in render.pods_in(ns, dig(svc, "spec", "selector"), plain=True):
                    port = pod_port(pod, target)
                    if port is not None:
                        yield monitor, pod, port


def may_be_monitoring(peer: dict) -> bool:
    """Whether a `from` peer may admit Prometheus: a namespaceSelector naming the monitoring
    namespace, or every one, or of expressions (the benefit of the doubt, as for a podSelector
    beside it: Prometheus's pod labels are unknown here)."""
    if "namespaceSelector" not in peer:
        return False
    selector = peer["namespaceSelector"] or {}
    labels = selector.get("matchLabels") or {}
    if selector.get("matchExpressions"):
        return True
    return not labels or labels == {"kubernetes.io/metadata.name": MONITORING_NAMESPACE}


def lets_in_monitoring(rule: dict, pod: Pod, port: int) -> bool:
    """Whether an ingress rule admits the monitoring namespace to the pod's port."""
    ports = rule.get("ports") or []
    if ports and not any(pod_port(pod, p.get("port")) == port
                         or (isinstance(p.get("port"), int) and p["port"] <= port <= p.get("endPort", p["port"]))
                         for p in ports):
        return False
    peers = rule.get("from") or []
    return not peers or any(may_be_monitoring(peer) for peer in peers)


def isolates_ingress(policy: dict) -> bool:
    """Ingress in its policyTypes, which default to Ingress when absent."""
    types = dig(policy, "spec", "policyTypes")
    return types is None or "Ingress" in types


@check("monitoring-reachable", "every port a ServiceMonitor or PodMonitor scrapes is let in from the "
       "monitoring namespace by the NetworkPolicies of its pods: a scrape they drop is an alert that cannot fire")
def check_monitoring_reachable(render: Render, version: str) -> Iterator[Finding]:
    for monitor, pod, port in monitored_ports(render):
        isolating = [p for p in render.of_kind("NetworkPolicy")
                     if dig(p, "metadata", "namespace") == pod.namespace and isolates_ingress(p)
                     and selector_matches(dig(p, "spec", "podSelector"), pod.labels)]
        if isolating and not any(lets_in_monitoring(rule, pod, port)
                                 for p in isolating for rule in dig(p, "spec", "ingress", default=[]) or []):
            yield ident(monitor), (f"port {port} of {pod.origin} is let in from namespace "
                                   f"{MONITORING_NAMESPACE!r} by no NetworkPolicy")


def image_tag(image: str) -> str | None:
    if "@sha256:" in image:
        return "digest"
    last = image.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def image_repository(image: str) -> str:
    """registry.example/farol:1.0 -> registry.example/farol."""
    image = image.split("@", 1)[0]
    head, _, last = image.rpartition("/")
    return f"{head}/{last.split(':', 1)[0]}" if head else last.split(":", 1)[0]


def farol_containers(render: Render) -> Iterator[tuple[Pod, dict]]:
    """(pod, container) for the farol image, any registry, any tag."""
    for pod in rendered_pods(render):
        for c in containers(pod.spec, init=False):
            repo = image_repository(c.get("image") or "")
            if repo == "farol" or repo.endswith("/farol"):
                yield pod, c


def as_int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def as_seconds(value: str) -> float:
    """A PgBouncer duration in seconds ("0.1", "5"); an unreadable one counts as endless."""
    try:
        return float(value)
    except ValueError:
        return float("inf")


# What farol may still spend after the drain, before it exits: the cancels of what the
# abandoned requests left running (1 s), the last spans' export (2 s), the runtime's stop
# (0.1 s), then the last log lines (1 s: a stuck stdout).
EXIT_WAITS_MS = 1000 + 2000 + 1000 + 100


@check("spreads", "a hard spread over nodes honours taints: a node the pods may not run on (cordoned by a "
       "drain, tainted for other work) would count as holding none, and block drains and scale-outs")
def check_spreads(render: Render, version: str) -> Iterator[Finding]:
    specs = [(obj, template.get("spec")) for obj, template in render.workloads()]
    specs += [(pooler, dig(pooler, "spec", "template", "spec")) for pooler in render.of_kind("Pooler")]
    for obj, spec in specs:
        for spread in dig(spec, "topologySpreadConstraints", default=[]) or []:
            if spread.get("topologyKey") == "kubernetes.io/hostname" and \
                    spread.get("whenUnsatisfiable") == "DoNotSchedule" and spread.get("nodeTaintsPolicy") != "Honor":
                yield ident(obj), "a DoNotSchedule spread over kubernetes.io/hostname without nodeTaintsPolicy: Honor"


def fewest_pods(render: Render, origin: str) -> int:
    """The fewest pods `origin` ("Deployment/ns/name", "implied by Pooler/ns/name") runs: the
    minReplicas of an HPA scaling it, else its replicas or instances (1 when unset)."""
    kind, namespace, name = origin.removeprefix("implied by ").split("/")
    if hpa := scaler_of(render, kind, namespace, name):
        return int(dig(hpa, "spec", "minReplicas", default=1))
    spec = (render.get(kind, namespace, name) or {}).get("spec") or {}
    return int(spec.get("replicas", spec.get("instances", 1)))


def scaler_of(render: Render, kind: str, namespace: str, name: str) -> dict | None:
    """The HorizontalPodAutoscaler that scales the object, if any."""
    for hpa in render.of_kind("HorizontalPodAutoscaler"):
        target = dig(hpa, "spec", "scaleTargetRef", default={}) or {}
        if dig(hpa, "metadata", "namespace") == namespace and \
                (target.get("kind"), target.get("name")) == (kind, name):
            return hpa
    return None


def of_pods(value: int | str, pods: int) -> int:
    """A budget's count: an integer, or a percentage of `pods` rounded up, as Kubernetes does."""
    text = str(value)
    return -(-pods * int(text[:-1]) // 100) if text.endswith("%") else int(text)


@check("budgets", "a disruption budget lets a drain evict one of its pods (else node drains and "
       "cluster upgrades stall), and never all of them, at the fewest pods their owners run")
def check_budgets(render: Render, version: str) -> Iterator[Finding]:
    for pdb in render.of_kind("PodDisruptionBudget"):
        spec, selector = pdb.get("spec") or {}, dig(pdb, "spec", "selector")
        if selector is None:
            continue  # selects nothing: the selectors check's finding
        owners = {pod.origin for pod in render.pods_in(dig(pdb, "metadata", "namespace"), selector)}
        pods = sum(fewest_pods(render, origin) for origin in owners)
        if not pods or ("minAvailable" not in spec and "maxUnavailable" not in spec):
            continue
        evictable = pods - of_pods(spec["minAvailable"], pods) if "minAvailable" in spec \
            else of_pods(spec["maxUnavailable"], pods)
        if evictable < 1:
            yield ident(pdb), f"blocks every drain: none of its {pods} pods (at the fewest) may be evicted"
        elif evictable >= pods:
            yield ident(pdb), f"lets a drain evict every one of its {pods} pods (at the fewest)"


@check("farol", "zero-downtime rollout, graceful shutdown, migrations by a versioned Job")
def check_farol(render: Render, version: str) -> Iterator[Finding]:
    for deploy in render.of_kind("Deployment"):
        strategy = dig(deploy, "spec", "strategy", default={}) or {}
        if strategy.get("type", "RollingUpdate") != "RollingUpdate" or \
                str(dig(strategy, "rollingUpdate", "maxUnavailable", default="25%")) not in ("0", "0%"):
            yield ident(deploy), "rolling update may take replicas away (maxUnavailable must be 0)"
    jobs = [(pod, c) for pod, c in farol_containers(render) if pod.owner_kind == "Job"]
    for pod, c in farol_containers(render):
        if pod.owner_kind != "Deployment":
            continue
        where = f"container {c.get('name')!r}"
        env = {name: env_value(render, pod.namespace, c, name) for name in
               ("MIGRATE_ON_START", "METRICS_PORT", "SHUTDOWN_DELAY_MS", "SHUTDOWN_TIMEOUT_MS")}
        if env["MIGRATE_ON_START"] != "false":
            yield pod.origin, f"{where}: MIGRATE_ON_START is not false (a Job migrates)"
        metrics = as_int(env["METRICS_PORT"])
        if metrics is None or pod.ports.get("metrics") != metrics:
            yield pod.origin, f"{where}: METRICS_PORT is not the container port named metrics"
        delay, drain = as_int(env["SHUTDOWN_DELAY_MS"]), as_int(env["SHUTDOWN_TIMEOUT_MS"])
        pause = dig(c, "lifecycle", "preStop", "sleep", "seconds")
        grace = pod.spec.get("terminationGracePeriodSeconds", 30)
        if delay is None or pause is None or pause * 1000 != delay:
            yield pod.origin, f"{where}: the preStop sleep does not match SHUTDOWN_DELAY_MS"
        elif drain is None or grace * 1000 < pause * 1000 + delay + drain + EXIT_WAITS_MS:
            yield pod.origin, (f"{where}: terminationGracePeriodSeconds is less than preStop + delay"
                               " + drain + the exit waits (cancels 1 s, last spans 2 s, the runtime's stop"
                               " 0.1 s, last log lines 1 s)")
        tag = image_tag(c.get("image") or "")
        # farol-migrate-*: the production pod alerts leave the Job's pods out by that name
        if not any(j.get("image") == c.get("image") and (j.get("args") or [None])[0] == "migrate"
                   and job_pod.origin.split("/")[-1].startswith("farol-migrate-")
                   and job_pod.origin.endswith(f"-{tag}") for job_pod, j in jobs):
            yield pod.origin, (f"{where}: no Job farol-migrate-… named after tag {tag!r} runs `migrate`"
                               " with the same image")


# kept free in max_connections beside superuser_reserved_connections: the migration Job,
# the exporter, a person with psql
OTHER_CONNECTIONS = 20
# PostgresTooManyConnections fires above this share of max_connections.
CONNECTIONS_ALERT_RATIO = 0.8


def max_pods(render: Render, pod: Pod) -> int:
    """The most pods its Deployment runs at once: the HPA's maxReplicas (else its replicas)
    plus maxSurge (25 % by default, rounded up, as Kubernetes does)."""
    kind, namespace, name = pod.origin.split("/")
    deployment = render.get(kind, namespace, name) or {}
    hpa = scaler_of(render, kind, namespace, name)
    replicas = int(dig(hpa or deployment, "spec", "maxReplicas" if hpa else "replicas", default=1))
    surge = str(dig(deployment, "spec", "strategy", "rollingUpdate", "maxSurge", default="25%"))
    extra = -(-replicas * int(surge[:-1]) // 100) if surge.endswith("%") else int(surge)
    return replicas + extra


@check("pooler", "behind a transaction-mode Pooler: unnamed statements, migrations around it, the "
       "capacity model (farol's pools fit the Pooler, the Pooler fits max_connections), and its "
       "reserve opening within farol's query timeout")
def check_pooler(render: Render, version: str) -> Iterator[Finding]:
    for pooler in render.of_kind("Pooler"):
        ns, name = dig(pooler, "metadata", "namespace", default=""), dig(pooler, "metadata", "name")
        params = dig(pooler, "spec", "pgbouncer", "parameters", default={}) or {}
        transaction = dig(pooler, "spec", "pgbouncer", "poolMode") == "transaction"
        # PgBouncer's own defaults where a parameter is not set
        max_client = as_int(params.get("max_client_conn", "100")) or 0
        # the reserve serves a transaction that has waited reserve_pool_timeout (PgBouncer's
        # default 5 s): past farol's query timeout, farol has answered 503 by then
        reserve = (as_int(params.get("reserve_pool_size", "0")) or 0) > 0
        reserve_timeout = params.get("reserve_pool_timeout", "5")
        clients = 0
        namespaces = {dig(n, "metadata", "name") for n in render.of_kind("Namespace")} | {ns}
        for pod, c in farol_containers(render):
            host = env_value(render, pod.namespace, c, "PGHOST")
            if host is None or host_service(host, pod.namespace, namespaces) != (ns, name):
                continue
            where = f"container {c.get('name')!r}"
            if pod.owner_kind != "Deployment":
                yield pod.origin, f"{where}: migrates through Pooler {name} (a session lock needs the database itself)"
                continue
            if transaction and env_value(render, ns, c, "DB_PREPARED_STATEMENTS") != "unnamed":
                yield pod.origin, (f"{where}: through transaction-mode Pooler {name} "
                                   "without DB_PREPARED_STATEMENTS=unnamed")
            clients += max_pods(render, pod) * (as_int(env_value(render, ns, c, "DB_POOL_MAX")) or 16)
            query_timeout_ms = as_int(env_value(render, ns, c, "DB_QUERY_TIMEOUT_MS")) or 2000
            if reserve and as_seconds(reserve_timeout) * 1000 >= query_timeout_ms:
                yield ident(pooler), (f"reserve_pool_timeout {reserve_timeout} s is not under "
                                      f"DB_QUERY_TIMEOUT_MS {query_timeout_ms} of {pod.origin}: "
                                      "the reserve would open after farol gave up")
        if clients > max_client:
            yield ident(pooler), f"farol may open {clients} client connections, over max_client_conn {max_client}"
        cluster = render.get("Cluster", ns, dig(pooler, "spec", "cluster", "name"))
        if cluster is None:
            continue
        pg = dig(cluster, "spec", "postgresql", "parameters", default={}) or {}
        max_connections = as_int(pg.get("max_connections", "100")) or 0
        reserved = (as_int(pg.get("superuser_reserved_connections", "3")) or 0) + OTHER_CONNECTIONS
        servers = int(dig(pooler, "spec", "instances", default=1)) * (
            (as_int(params.get("default_pool_size", "20")) or 0) + (as_int(params.get("reserve_pool_size", "0")) or 0))
        if servers > max_connections - reserved:
            yield ident(pooler), (f"{servers} server connections do not fit max_connections {max_connections} "
                                  f"less {reserved} reserved")
        elif servers + OTHER_CONNECTIONS > CONNECTIONS_ALERT_RATIO * max_connections:
            yield ident(pooler), (f"{servers} server connections and {OTHER_CONNECTIONS} others would hold "
                                  f"PostgresTooManyConnections (over {CONNECTIONS_ALERT_RATIO:.0%} of "
                                  f"{max_connections}) firing")


@check("custom-resources", "custom resources: the fields used, their values and their references")
def check_crs(render: Render, version: str) -> Iterator[Finding]:
    return check_custom_resources(render)


def run(render: Render, version: str, out=sys.stdout) -> int:
    failed = 0
    for name, what, fn in CHECKS:
        findings = sorted(set(fn(render, version)))
        print(f"  {'FAIL' if findings else 'ok  '} {name}: {what}", file=out)
        for obj, message in findings:
            print(f"         {obj}: {message}", file=out)
        failed += len(findings)
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("render")
    parser.add_argument("--kubernetes-version", default="1.30.0")
    args = parser.parse_args()
    return run(Render.from_file(args.render), args.kubernetes_version)


if __name__ == "__main__":
    sys.exit(main())
