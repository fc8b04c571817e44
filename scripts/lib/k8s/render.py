"""A `kubectl kustomize` render indexed for the policy checks: objects by kind and name, and
every pod that will exist, from a template of the render or made by an operator
(custom_resources.implied_objects)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import Any

import yaml

# kinds whose spec carries a pod template, and where it is
POD_TEMPLATE_PATHS = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}
# pods that run to completion: no probes, no rolling update
RUN_TO_COMPLETION = {"Job", "CronJob"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "StorageClass",
                  "PriorityClass", "IngressClass", "CustomResourceDefinition",
                  "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration",
                  "PersistentVolume", "ClusterIssuer"}


def dig(obj: Any, *path: str, default: Any = None) -> Any:
    """obj[path[0]][path[1]]..., or default where a step is missing."""
    for step in path:
        if not isinstance(obj, dict) or step not in obj:
            return default
        obj = obj[step]
    return obj


def ident(doc: dict) -> str:
    ns = dig(doc, "metadata", "namespace")
    name = dig(doc, "metadata", "name", default="?")
    return f"{doc.get('kind', '?')}/{ns}/{name}" if ns else f"{doc.get('kind', '?')}/{name}"


@dataclasses.dataclass
class Pod:
    origin: str                # "Deployment/farol/farol", or "implied by Cluster/farol/farol-db"
    namespace: str
    labels: dict[str, str]
    ports: dict[str, int]      # container port name -> number, over all containers
    spec: dict | None = None   # the pod spec, when the render holds it
    owner_kind: str = ""       # the kind of the object holding the template


@dataclasses.dataclass
class Provided:
    """A Secret or Service an operator creates: it exists, but not in the render."""
    kind: str
    namespace: str
    name: str
    keys: frozenset[str]       # a Secret's keys (empty for a Service)
    origin: str


def selector_matches(selector: dict | None, labels: dict[str, str]) -> bool:
    """A LabelSelector against a label set; an empty one matches everything."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != str(value):
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def map_matches(selector: dict | None, labels: dict[str, str]) -> bool:
    """A plain label map (a Service's selector) against a label set; an empty one matches nothing."""
    return bool(selector) and all(labels.get(k) == str(v) for k, v in selector.items())


class KubernetesLoader(yaml.SafeLoader):
    """YAML 1.2 as Kubernetes reads it: a plain `=` (an AlertmanagerConfig's matchType) is a string."""


KubernetesLoader.add_constructor("tag:yaml.org,2002:value", yaml.SafeLoader.construct_yaml_str)


class Render:
    def __init__(self, docs: Iterable[dict]):
        self.docs = [d for d in docs if isinstance(d, dict) and d.get("kind")]
        self.provided: list[Provided] = []
        self.implied_pods: list[Pod] = []
        # imported here: custom_resources builds on this module
        from custom_resources import implied_objects
        for item in implied_objects(self):
            if isinstance(item, Pod):
                self.implied_pods.append(item)
            else:
                self.provided.append(item)

    @classmethod
    def from_file(cls, path: str) -> Render:
        with open(path, encoding="utf-8") as f:
            return cls(yaml.load_all(f, Loader=KubernetesLoader))

    def of_kind(self, *kinds: str) -> Iterator[dict]:
        return (d for d in self.docs if d["kind"] in kinds)

    def get(self, kind: str, namespace: str | None, name: str) -> dict | None:
        for d in self.of_kind(kind):
            if dig(d, "metadata", "name") == name and \
                    (kind in CLUSTER_SCOPED or dig(d, "metadata", "namespace") == namespace):
                return d
        return None

    def workloads(self) -> Iterator[tuple[dict, dict]]:
        """(object, pod template) for every object of the render that carries pods."""
        for d in self.docs:
            path = POD_TEMPLATE_PATHS.get(d["kind"])
            if path:
                template = dig(d, *path)
                if isinstance(template, dict):
                    yield d, template
            elif d["kind"] == "Pod":
                yield d, d

    def pods(self) -> list[Pod]:
        """Every pod that will exist: from the templates, then those operators create."""
        found = []
        for obj, template in self.workloads():
            spec = template.get("spec") or {}
            ports = {}
            for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
                for p in c.get("ports") or []:
                    if p.get("name"):
                        ports[p["name"]] = p.get("containerPort")
            found.append(Pod(ident(obj), dig(obj, "metadata", "namespace", default=""),
                             dict(dig(template, "metadata", "labels", default={}) or {}),
                             ports, spec, obj["kind"]))
        return found + self.implied_pods

    def pods_in(self, namespace: str, selector: dict | None, plain: bool = False) -> list[Pod]:
        match = map_matches if plain else selector_matches
        return [p for p in self.pods() if p.namespace == namespace and match(selector, p.labels)]

    def keys(self, kind: str, namespace: str, name: str) -> frozenset[str] | None:
        """The keys of a Secret or ConfigMap that will exist (rendered or operator-made), else None."""
        doc = self.get(kind, namespace, name)
        if doc is not None:
            extra = "stringData" if kind == "Secret" else "binaryData"
            return frozenset((doc.get("data") or {}) | (doc.get(extra) or {}))
        return next((p.keys for p in self.provided
                     if p.kind == kind and p.namespace == namespace and p.name == name), None)
