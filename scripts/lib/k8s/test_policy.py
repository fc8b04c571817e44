"""Tests of policy.py and custom_resources.py, and of the checkov checks policy.py relies on:
a small render (built here, so that each case names what it breaks) passes every check, and
each manifest broken in one way is reported."""

from __future__ import annotations

import copy
import io
import json
import os
import shutil
import subprocess
import tempfile
import unittest

import yaml
from policy import CHECKS, run
from render import Render

NS = "app"
SECURE = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
          "capabilities": {"drop": ["ALL"]}}
POD_SECURITY = {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}}
LIMITS = {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "1", "memory": "64Mi"}}


def meta(name: str, **extra) -> dict:
    return {"name": name, "namespace": NS, **extra}


def probe(path: str) -> dict:
    return {"httpGet": {"path": path, "port": "http"}}


def pod_template(labels: dict, container: dict, **spec) -> dict:
    return {"metadata": {"labels": labels},
            "spec": {"serviceAccountName": "farol", "automountServiceAccountToken": False,
                     "securityContext": POD_SECURITY, "containers": [container], **spec}}


def farol_container(args: list[str], **extra) -> dict:
    return {"name": "farol", "image": "registry.example/farol:1.0", "args": args,
            "resources": LIMITS, "securityContext": SECURE, **extra}


def netpol(name: str, labels: dict, *types: str, **rules) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta(name),
            "spec": {"podSelector": {"matchLabels": labels} if labels else {}, "policyTypes": list(types), **rules}}


def from_namespace(namespace: str, port: str | int) -> list[dict]:
    return [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}],
             "ports": [{"port": port}]}]


def good_render() -> list[dict]:
    server = farol_container(
        ["serve"],
        ports=[{"name": "http", "containerPort": 5000}, {"name": "metrics", "containerPort": 9464}],
        env=[{"name": "METRICS_PORT", "value": "9464"}, {"name": "SHUTDOWN_DELAY_MS", "value": "5000"},
             {"name": "SHUTDOWN_TIMEOUT_MS", "value": "10000"},
             {"name": "PGPASSWORD_FILE", "value": "/etc/db/password"},
             {"name": "PGHOST", "value": "pg-pooler"}, {"name": "DB_PREPARED_STATEMENTS", "value": "unnamed"},
             {"name": "DB_POOL_MAX", "value": "16"},
             {"name": "PGUSER", "valueFrom": {"secretKeyRef": {"name": "pg-app", "key": "username"}}}],
        envFrom=[{"configMapRef": {"name": "env"}}],
        volumeMounts=[{"name": "live", "mountPath": "/etc/live"},
                      {"name": "db", "mountPath": "/etc/db", "readOnly": True}],
        lifecycle={"preStop": {"sleep": {"seconds": 5}}},
        startupProbe=probe("/livez"), readinessProbe=probe("/readyz"), livenessProbe=probe("/livez"))
    cache = {"name": "cache", "image": "cache:2", "resources": LIMITS, "securityContext": SECURE,
             "ports": [{"name": "cache", "containerPort": 6379}],
             "volumeMounts": [{"name": "data", "mountPath": "/data"}],
             "startupProbe": {"tcpSocket": {"port": 6379}}, "readinessProbe": {"tcpSocket": {"port": 6379}},
             "livenessProbe": {"tcpSocket": {"port": 6379}}}
    farol = {"app": "farol"}
    return [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": NS, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta("farol")},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("env"), "data": {"MIGRATE_ON_START": "false"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("live"), "data": {"APP_MODE": "production"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": meta("db"), "data": {"password": "cA=="}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": meta("s3"), "data": {"ID": "aQ==", "KEY": "aw=="}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("farol"),
         "spec": {"selector": {"matchLabels": farol},
                  "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0}},
                  "template": pod_template(farol, server, terminationGracePeriodSeconds=30,
                                           volumes=[{"name": "live", "configMap": {"name": "live"}},
                                                    {"name": "db", "secret": {"secretName": "db", "items": [
                                                        {"key": "password", "path": "password"}]}}])}},
        {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta("farol-migrate-1.0"),
         "spec": {"template": pod_template(
             {"app": "farol-migrate"},
             farol_container(["migrate"], env=[{"name": "PGHOST", "value": "pg-rw"},
                                               {"name": "PGPASSWORD_FILE", "value": "/etc/db/password"}],
                             volumeMounts=[{"name": "db", "mountPath": "/etc/db", "readOnly": True}]),
             restartPolicy="Never", volumes=[{"name": "db", "secret": {"secretName": "db"}}])}},
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta("cache"),
         "spec": {"serviceName": "cache", "selector": {"matchLabels": {"app": "cache"}},
                  "template": pod_template({"app": "cache"}, cache),
                  "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                      "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": meta("cache"),
         "spec": {"clusterIP": "None", "selector": {"app": "cache"}, "ports": [{"port": 6379, "targetPort": "cache"}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": meta("farol"),
         "spec": {"selector": farol, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": meta("farol-metrics", labels={"role": "metrics"}),
         "spec": {"selector": farol, "ports": [{"name": "metrics", "port": 9464, "targetPort": "metrics"}]}},
        {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": meta("farol"),
         "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "farol"},
                  "minReplicas": 2, "maxReplicas": 4}},
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta("farol"),
         "spec": {"maxUnavailable": 1, "selector": {"matchLabels": farol}}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
         "metadata": meta("farol", annotations={"cert-manager.io/issuer": "le"}),
         "spec": {"tls": [{"hosts": ["a.example"], "secretName": "farol-tls"}],
                  "rules": [{"host": "a.example", "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {
                      "service": {"name": "farol", "port": {"name": "http"}}}}]}}]}},
        {"apiVersion": "cert-manager.io/v1", "kind": "Issuer", "metadata": meta("le"),
         "spec": {"acme": {"server": "https://acme.example/directory", "email": "ops@example.com",
                           "privateKeySecretRef": {"name": "le-key"},
                           "solvers": [{"http01": {"ingress": {"ingressClassName": "nginx"}}}]}}},
        netpol("deny", {}, "Ingress", "Egress"),
        netpol("http", farol, "Ingress", ingress=from_namespace("ingress", "http")),
        netpol("to-db", farol, "Egress", egress=[
            {"to": [{"podSelector": {"matchLabels": {"cnpg.io/cluster": "pg"}}}], "ports": [{"port": "postgresql"}]}]),
        netpol("scrape-farol", farol, "Ingress", ingress=from_namespace("monitoring", "metrics")),
        netpol("scrape-pg", {"cnpg.io/cluster": "pg"}, "Ingress", ingress=from_namespace("monitoring", 9187)),
        netpol("solver", {"acme.cert-manager.io/http01-solver": "true"}, "Ingress",
               ingress=[{"ports": [{"port": 8089}]}]),
        {"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster", "metadata": meta("pg"),
         "spec": {"instances": 3, "imageName": "ghcr.io/cloudnative-pg/postgresql:17-standard-trixie",
                  "postgresql": {"parameters": {"max_connections": "300"}}, "storage": {"size": "1Gi"},
                  "plugins": [{"name": "barman-cloud.cloudnative-pg.io", "isWALArchiver": True,
                               "parameters": {"barmanObjectName": "store"}}]}},
        {"apiVersion": "postgresql.cnpg.io/v1", "kind": "Pooler", "metadata": meta("pg-pooler"),
         "spec": {"cluster": {"name": "pg"}, "instances": 2, "type": "rw", "pgbouncer": {
             "poolMode": "transaction",
             "parameters": {"max_client_conn": "100", "default_pool_size": "40", "reserve_pool_size": "10",
                            "reserve_pool_timeout": "0.1"}},
             "template": {"spec": {
                 "containers": [{"name": "pgbouncer", "resources": {"limits": {"memory": "128Mi"}}}],
                 "topologySpreadConstraints": [{
                     "maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
                     "nodeTaintsPolicy": "Honor",
                     "labelSelector": {"matchLabels": {"cnpg.io/poolerName": "pg-pooler"}}}]}}}},
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta("pg-pooler"),
         "spec": {"minAvailable": 1, "selector": {"matchLabels": {"cnpg.io/poolerName": "pg-pooler"}}}},
        {"apiVersion": "barmancloud.cnpg.io/v1", "kind": "ObjectStore", "metadata": meta("store"),
         "spec": {"retentionPolicy": "30d", "configuration": {"destinationPath": "s3://bucket/", "s3Credentials": {
             "accessKeyId": {"name": "s3", "key": "ID"}, "secretAccessKey": {"name": "s3", "key": "KEY"}}}}},
        {"apiVersion": "postgresql.cnpg.io/v1", "kind": "ScheduledBackup", "metadata": meta("nightly"),
         "spec": {"schedule": "0 0 3 * * *", "cluster": {"name": "pg"}, "method": "plugin",
                  "pluginConfiguration": {"name": "barman-cloud.cloudnative-pg.io"}}},
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": meta("farol"),
         "spec": {"selector": {"matchLabels": {"role": "metrics"}},
                  "endpoints": [{"port": "metrics", "interval": "15s"}]}},
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor", "metadata": meta("pg"),
         "spec": {"selector": {"matchLabels": {"cnpg.io/cluster": "pg", "cnpg.io/podRole": "instance"}},
                  "podMetricsEndpoints": [{"port": "metrics"}]}},
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "Probe", "metadata": meta("health"),
         "spec": {"jobName": "health", "module": "http_2xx", "prober": {"url": "blackbox.monitoring.svc:9115"},
                  "targets": {"staticConfig": {"static": [f"http://farol.{NS}.svc:80/health"]}}}},
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule", "metadata": meta("farol"),
         "spec": {"groups": [{"name": "g", "rules": [
             {"record": "job:up:sum", "expr": "sum(up)"},
             {"alert": "Down", "expr": "up == 0", "for": "1m", "labels": {"severity": "page"},
              "annotations": {"summary": "s", "description": "d", "runbook_url": "https://x/r"}}]}]}},
    ]


def find(docs: list[dict], kind: str, name: str) -> dict:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def deployment_container(docs):
    return find(docs, "Deployment", "farol")["spec"]["template"]["spec"]["containers"][0]


def job_container(docs):
    return find(docs, "Job", "farol-migrate-1.0")["spec"]["template"]["spec"]["containers"][0]


def edit(kind: str, name: str, /, *path, **changes):
    """A breakage: update the mapping at spec.<path> of one object with changes."""
    def apply(docs: list[dict]) -> None:
        target = find(docs, kind, name)["spec"]
        for step in path:
            target = target[step]
        target.update(changes)
    return apply


def remove(kind: str, name: str):
    """A breakage: the object is missing from the render."""
    return lambda docs: docs.remove(find(docs, kind, name))


def set_env(container: dict, name: str, value: str) -> None:
    container["env"] = [v for v in container.get("env", []) if v["name"] != name] + [{"name": name, "value": value}]


def findings(docs: list[dict]) -> dict[str, list[str]]:
    """check name -> its findings, from the same code the command line runs."""
    out = io.StringIO()
    run(Render(docs), "1.30.0", out)
    result, current = {}, None
    for line in out.getvalue().splitlines():
        if line.startswith(("  ok", "  FAIL")):
            current = line.split()[1].rstrip(":")
            result[current] = []
        elif current:
            result[current].append(line.strip())
    return result


# (what is broken, the check that must catch it, a word of its finding, how to break it)
CASES = [
    ("a kind nobody checks", "kinds", "no schema", lambda d: d.append(
        {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": meta("w"), "spec": {}})),
    ("namespace not enforcing restricted", "namespaces", "not 'restricted'",
     lambda d: find(d, "Namespace", NS)["metadata"].update(labels={})),
    ("object in a namespace the render lacks", "namespaces", "not created",
     lambda d: find(d, "ConfigMap", "env")["metadata"].update(namespace="elsewhere")),
    ("no seccomp", "pod-security", "seccompProfile",
     lambda d: deployment_container(d)["securityContext"].update(seccompProfile={"type": "Unconfined"})),
    ("hostPath volume", "pod-security", "not allowed",
     lambda d: find(d, "Deployment", "farol")["spec"]["template"]["spec"]["volumes"].append(
         {"name": "h", "hostPath": {"path": "/"}})),
    ("no startup probe", "probes", "no startupProbe",
     lambda d: find(d, "StatefulSet", "cache")["spec"]["template"]["spec"]["containers"][0].pop("startupProbe")),
    ("liveness on the database", "probes", "depends on the database",
     lambda d: deployment_container(d).update(livenessProbe=probe("/health"))),
    ("selector not matching the template", "selectors", "spec.selector",
     edit("Deployment", "farol", "selector", matchLabels={"app": "other"})),
    ("Service selecting nothing", "selectors", "matches no pod",
     edit("Service", "farol", selector={"app": "typo"})),
    ("Service targetPort name unknown", "selectors", "targetPort",
     edit("Service", "farol", "ports", 0, targetPort="web")),
    ("PDB selecting nothing", "selectors", "matches no pod",
     edit("PodDisruptionBudget", "farol", selector={"matchLabels": {"app": "x"}})),
    ("HPA target missing", "selectors", "scaleTargetRef",
     edit("HorizontalPodAutoscaler", "farol", "scaleTargetRef", name="nope")),
    ("replicas fighting the HPA", "selectors", "spec.replicas",
     edit("Deployment", "farol", replicas=2)),
    ("StatefulSet without headless Service", "selectors", "headless",
     lambda d: find(d, "Service", "cache")["spec"].pop("clusterIP")),
    ("ConfigMap missing", "references", "ConfigMap 'live'",
     remove("ConfigMap", "live")),
    ("Secret key missing", "references", "no key 'password'",
     lambda d: find(d, "Secret", "db").update(data={"passwd": "cA=="})),
    ("operator Secret key unknown", "references", "no key 'hostname'",
     lambda d: next(v["valueFrom"] for v in deployment_container(d)["env"] if "valueFrom" in v)[
         "secretKeyRef"].update(key="hostname")),
    ("operator Secret of no operator", "references", "'pg-app'",
     remove("Cluster", "pg")),
    ("PGHOST naming no Service", "references", "PGHOST 'pg-rwx'",
     lambda d: set_env(job_container(d), "PGHOST", "pg-rwx")),
    ("PGHOST naming no Service, fully qualified", "references", "PGHOST 'pg-rwx.",
     lambda d: set_env(job_container(d), "PGHOST", f"pg-rwx.{NS}.svc.cluster.local")),
    ("a _FILE path outside every mount", "references", "none of the container's volume mounts",
     lambda d: set_env(deployment_container(d), "PGPASSWORD_FILE", "/run/secrets/password")),
    ("a _FILE path naming no file of its Secret volume (items)", "references", "no file 'pasword'",
     lambda d: set_env(deployment_container(d), "PGPASSWORD_FILE", "/etc/db/pasword")),
    ("a _FILE path naming no key of its whole Secret volume", "references", "no file 'url'",
     lambda d: set_env(job_container(d), "PGPASSWORD_FILE", "/etc/db/url")),
    ("ServiceAccount missing", "references", "ServiceAccount",
     remove("ServiceAccount", "farol")),
    ("PVC missing", "references", "PersistentVolumeClaim",
     lambda d: find(d, "Deployment", "farol")["spec"]["template"]["spec"]["volumes"].append(
         {"name": "pv", "persistentVolumeClaim": {"claimName": "gone"}})),
    ("mount of an undefined volume", "references", "undefined volume",
     lambda d: deployment_container(d)["volumeMounts"].append({"name": "ghost", "mountPath": "/g"})),
    ("Ingress backend missing", "references", "backend Service",
     remove("Service", "farol")),
    ("no default deny", "network-policies", "no default-deny",
     remove("NetworkPolicy", "deny")),
    ("policy selecting nothing", "network-policies", "selects no pod",
     edit("NetworkPolicy", "http", podSelector={"matchLabels": {"app": "frol"}})),
    ("peer selecting nothing", "network-policies", "peer podSelector",
     lambda d: find(d, "NetworkPolicy", "to-db")["spec"]["egress"][0]["to"][0]["podSelector"].update(
         matchLabels={"cnpg.io/cluster": "typo"})),
    ("named port unknown", "network-policies", "port 'https'",
     edit("NetworkPolicy", "http", "ingress", 0, "ports", 0, port="https")),
    ("namespace selected by a label that may not exist", "network-policies", "kubernetes.io/metadata.name",
     lambda d: find(d, "NetworkPolicy", "http")["spec"]["ingress"][0]["from"][0].update(
         namespaceSelector={"matchLabels": {"team": "edge"}})),
    ("a scraped port the NetworkPolicies drop", "monitoring-reachable", "port 9187 of implied by Cluster",
     edit("NetworkPolicy", "scrape-pg", "ingress", 0, "ports", 0, port=9188)),
    ("a scraped port let in only from pods of its own namespace", "monitoring-reachable", "port 9187",
     lambda d: find(d, "NetworkPolicy", "scrape-pg")["spec"]["ingress"][0].update(
         **{"from": [{"podSelector": {"matchLabels": {"app": "prometheus"}}}]})),
    ("a scraped port outside the range let in", "monitoring-reachable", "port 9187",
     edit("NetworkPolicy", "scrape-pg", "ingress", 0, "ports", 0, port=9100, endPort=9186)),
    ("a scraped port let in from another namespace", "monitoring-reachable", "ServiceMonitor",
     lambda d: find(d, "NetworkPolicy", "scrape-farol")["spec"]["ingress"][0]["from"][0].update(
         namespaceSelector={"matchLabels": {"kubernetes.io/metadata.name": "observability"}})),
    ("rolling update losing capacity", "farol", "maxUnavailable",
     edit("Deployment", "farol", "strategy", "rollingUpdate", maxUnavailable=1)),
    ("migrations at start", "farol", "MIGRATE_ON_START",
     lambda d: find(d, "ConfigMap", "env")["data"].update(MIGRATE_ON_START="true")),
    ("metrics on another port", "farol", "METRICS_PORT",
     lambda d: set_env(deployment_container(d), "METRICS_PORT", "9000")),
    ("preStop not matching the delay", "farol", "preStop",
     lambda d: deployment_container(d)["lifecycle"]["preStop"]["sleep"].update(seconds=1)),
    ("grace period too short", "farol", "terminationGracePeriodSeconds",
     edit("Deployment", "farol", "template", "spec", terminationGracePeriodSeconds=24)),
    ("migration Job of another version", "farol", "no Job",
     lambda d: find(d, "Job", "farol-migrate-1.0")["metadata"].update(name="farol-migrate-0.9")),
    ("migration Job by another name", "farol", "no Job",
     lambda d: find(d, "Job", "farol-migrate-1.0")["metadata"].update(name="schema-1.0")),
    ("named statements through a transaction pooler", "pooler", "DB_PREPARED_STATEMENTS",
     lambda d: set_env(deployment_container(d), "DB_PREPARED_STATEMENTS", "named")),
    ("migrations through the pooler", "pooler", "session lock",
     lambda d: set_env(job_container(d), "PGHOST", "pg-pooler")),
    ("more clients than the pooler takes", "pooler", "max_client_conn",
     edit("HorizontalPodAutoscaler", "farol", maxReplicas=6)),
    ("more clients than the pooler takes while rolling out", "pooler", "max_client_conn",
     edit("Deployment", "farol", "strategy", "rollingUpdate", maxSurge=3)),
    ("more clients through the pooler's qualified name", "pooler", "max_client_conn", lambda d: (
        set_env(deployment_container(d), "PGHOST", f"pg-pooler.{NS}.svc"),
        find(d, "HorizontalPodAutoscaler", "farol")["spec"].update(maxReplicas=6))),
    ("pooler servers over max_connections", "pooler", "do not fit",
     edit("Cluster", "pg", "postgresql", "parameters", max_connections="110")),
    ("pooler servers holding the connections alert", "pooler", "PostgresTooManyConnections",
     edit("Cluster", "pg", "postgresql", "parameters", max_connections="140")),
    ("pooler reserve opening at PgBouncer's default, after farol gave up", "pooler", "reserve_pool_timeout 5 s",
     lambda d: find(d, "Pooler", "pg-pooler")["spec"]["pgbouncer"]["parameters"].pop("reserve_pool_timeout")),
    ("pooler reserve opening at farol's own query timeout", "pooler", "DB_QUERY_TIMEOUT_MS 100",
     lambda d: set_env(deployment_container(d), "DB_QUERY_TIMEOUT_MS", "100")),
    ("Pooler of an unknown cluster", "custom-resources", "not a Cluster",
     edit("Pooler", "pg-pooler", cluster={"name": "other"})),
    ("Pooler mode misspelt", "custom-resources", "poolMode",
     edit("Pooler", "pg-pooler", "pgbouncer", poolMode="transactions")),
    ("Pooler spread counting other pods", "custom-resources", "selects none of the Pooler's pods",
     lambda d: find(d, "Pooler", "pg-pooler")["spec"]["template"]["spec"]["topologySpreadConstraints"][0].update(
         labelSelector={"matchLabels": {"cnpg.io/poolerName": "pg"}})),
    ("Pooler instances free to share a node", "custom-resources", "one node can hold them all",
     edit("Pooler", "pg-pooler", "template", "spec", topologySpreadConstraints=[])),
    ("Pooler instances without a disruption budget", "custom-resources", "0 PodDisruptionBudgets",
     remove("PodDisruptionBudget", "pg-pooler")),
    ("Pooler budget without a selector", "custom-resources", "0 PodDisruptionBudgets",
     lambda d: find(d, "PodDisruptionBudget", "pg-pooler")["spec"].pop("selector")),
    ("a budget without a selector", "selectors", "matches no pod",
     lambda d: find(d, "PodDisruptionBudget", "farol")["spec"].pop("selector")),
    ("Pooler pods under a second budget that selects every pod", "custom-resources", "2 PodDisruptionBudgets",
     lambda d: d.append({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                         "metadata": {**find(d, "PodDisruptionBudget", "pg-pooler")["metadata"], "name": "all"},
                         "spec": {"maxUnavailable": 1, "selector": {}}})),
    ("Pooler budget keeping none", "budgets", "lets a drain evict every one of its 2 pods",
     edit("PodDisruptionBudget", "pg-pooler", minAvailable=0)),
    ("Pooler budget letting all go", "budgets", "lets a drain evict every one of its 2 pods",
     lambda d: find(d, "PodDisruptionBudget", "pg-pooler")["spec"].update(
         {"maxUnavailable": "100%"}) or find(d, "PodDisruptionBudget", "pg-pooler")["spec"].pop("minAvailable")),
    ("Pooler budget keeping both", "budgets", "blocks every drain: none of its 2 pods",
     edit("PodDisruptionBudget", "pg-pooler", minAvailable="51%")),
    ("farol budget letting none go", "budgets", "blocks every drain: none of its 2 pods",
     edit("PodDisruptionBudget", "farol", maxUnavailable=0)),
    ("farol budget keeping the HPA's fewest", "budgets", "blocks every drain",
     lambda d: find(d, "PodDisruptionBudget", "farol")["spec"].update(
         {"minAvailable": 2}) or find(d, "PodDisruptionBudget", "farol")["spec"].pop("maxUnavailable")),
    ("farol budget letting the HPA's fewest go", "budgets", "lets a drain evict every one of its 2 pods",
     edit("PodDisruptionBudget", "farol", maxUnavailable="100%")),
    ("Pooler pods under two budgets", "custom-resources", "2 PodDisruptionBudgets",
     lambda d: d.append({**find(d, "PodDisruptionBudget", "pg-pooler"),
                         "metadata": {**find(d, "PodDisruptionBudget", "pg-pooler")["metadata"], "name": "again"}})),
    ("Pooler's hard node spread counting tainted nodes", "spreads", "nodeTaintsPolicy",
     lambda d: find(d, "Pooler", "pg-pooler")["spec"]["template"]["spec"]["topologySpreadConstraints"][0].pop(
         "nodeTaintsPolicy")),
    ("a Deployment's hard node spread counting tainted nodes", "spreads", "nodeTaintsPolicy",
     edit("Deployment", "farol", "template", "spec", topologySpreadConstraints=[{
         "maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
         "labelSelector": {"matchLabels": {"app": "farol"}}}])),
    ("PgBouncer without a memory limit", "custom-resources", "no memory limit",
     edit("Pooler", "pg-pooler", "template", "spec", containers=[{"name": "pgbouncer"}])),
    ("PgBouncer's container misnamed", "custom-resources", "'bouncer' is not one of",
     edit("Pooler", "pg-pooler", "template", "spec", containers=[
         {"name": "bouncer", "resources": {"limits": {"memory": "128Mi"}}}])),
    ("recovery from no external cluster", "custom-resources", "not an externalClusters name",
     edit("Cluster", "pg", bootstrap={"recovery": {"source": "gone"}})),
    ("recovered cluster archiving over its origin", "custom-resources", "archives WAL as 'pg'",
     edit("Cluster", "pg", bootstrap={"recovery": {"source": "backups"}}, externalClusters=[{
         "name": "backups", "plugin": {"name": "barman-cloud.cloudnative-pg.io",
                                       "parameters": {"barmanObjectName": "store", "serverName": "pg"}}}])),
    ("two ways to bootstrap", "custom-resources", "bootstrap",
     edit("Cluster", "pg", bootstrap={"initdb": {"database": "app"}, "recovery": {"source": "backups"}})),
    ("Cluster field misspelt", "custom-resources", "instance",
     edit("Cluster", "pg", instance=3)),
    ("Cluster parameter not a string", "custom-resources", "max_connections",
     edit("Cluster", "pg", "postgresql", "parameters", max_connections=300)),
    ("Cluster image tagged latest", "custom-resources", "imageName",
     edit("Cluster", "pg", imageName="ghcr.io/cloudnative-pg/postgresql:latest")),
    ("ObjectStore of the plugin missing", "custom-resources", "ObjectStore 'store'",
     remove("ObjectStore", "store")),
    ("five-field cron", "custom-resources", "schedule",
     edit("ScheduledBackup", "nightly", schedule="0 3 * * *")),
    ("backup of an unknown cluster", "custom-resources", "not a Cluster",
     edit("ScheduledBackup", "nightly", cluster={"name": "other"})),
    ("backup through a plugin the Cluster lacks", "custom-resources", "does not load",
     edit("ScheduledBackup", "nightly", pluginConfiguration={"name": "other"})),
    ("backup method unknown", "custom-resources", "method",
     edit("ScheduledBackup", "nightly", method="snapshot")),
    ("object-store credentials missing", "custom-resources", "Secret 's3'",
     remove("Secret", "s3")),
    ("retention policy malformed", "custom-resources", "retentionPolicy",
     edit("ObjectStore", "store", retentionPolicy="30 days")),
    ("Issuer without solvers", "custom-resources", "solvers",
     lambda d: find(d, "Issuer", "le")["spec"]["acme"].pop("solvers")),
    ("Ingress naming an unknown Issuer", "custom-resources", "names no Issuer",
     lambda d: find(d, "Ingress", "farol")["metadata"]["annotations"].update({"cert-manager.io/issuer": "x"})),
    ("TLS host without a rule", "custom-resources", "has no rule",
     edit("Ingress", "farol", "tls", 0, hosts=["b.example"])),
    ("ServiceMonitor port unknown", "custom-resources", "endpoint port",
     edit("ServiceMonitor", "farol", "endpoints", 0, port="http-metrics")),
    ("ServiceMonitor selecting nothing", "custom-resources", "no Service",
     edit("ServiceMonitor", "farol", "selector", matchLabels={"role": "x"})),
    ("PodMonitor selecting nothing", "custom-resources", "no pod",
     edit("PodMonitor", "pg", "selector", matchLabels={"cnpg.io/cluster": "x"})),
    ("monitor interval malformed", "custom-resources", "interval",
     edit("ServiceMonitor", "farol", "endpoints", 0, interval="15 seconds")),
    ("probe of a Service the render lacks", "custom-resources", "not in the render",
     lambda d: find(d, "Probe", "health")["spec"]["targets"]["staticConfig"].update(
         static=[f"http://farol-web.{NS}.svc/health"])),
    ("probe of a port the Service lacks", "custom-resources", "port 5000",
     lambda d: find(d, "Probe", "health")["spec"]["targets"]["staticConfig"].update(
         static=[f"http://farol.{NS}.svc:5000/health"])),
    ("public probe of a host no Ingress serves", "custom-resources", "no Ingress of the render serves",
     lambda d: find(d, "Probe", "health")["spec"]["targets"]["staticConfig"].update(
         static=["https://elsewhere.example/livez"])),
    ("prober given as a URL", "custom-resources", "prober.url",
     edit("Probe", "health", "prober", url="http://blackbox:9115")),
    ("alert without severity", "custom-resources", "severity",
     edit("PrometheusRule", "farol", "groups", 0, "rules", 1, labels={})),
    ("alert without runbook", "custom-resources", "runbook_url",
     lambda d: find(d, "PrometheusRule", "farol")["spec"]["groups"][0]["rules"][1]["annotations"].pop("runbook_url")),
    ("rule both alert and record", "custom-resources", "groups.0.rules.0",
     edit("PrometheusRule", "farol", "groups", 0, "rules", 0, alert="X")),
    ("`for` that is no duration", "custom-resources", "for",
     edit("PrometheusRule", "farol", "groups", 0, "rules", 1, **{"for": "5 minutes"})),
]

# Generic policy that policy.py leaves to checkov: (what is broken, the checkov check that
# must catch it, how to break it). A checkov upgrade that drops one of these fails here.
CHECKOV_CASES = [
    ("runs as root allowed", "CKV_K8S_23",
     lambda d: deployment_container(d)["securityContext"].update(runAsNonRoot=False)),
    ("uid 0", "CKV_K8S_40",
     lambda d: deployment_container(d)["securityContext"].update(runAsUser=0)),
    ("privilege escalation", "CKV_K8S_20",
     lambda d: deployment_container(d)["securityContext"].pop("allowPrivilegeEscalation")),
    ("capabilities kept", "CKV_K8S_28",
     lambda d: deployment_container(d)["securityContext"].update(capabilities={})),
    ("capability added", "CKV_K8S_25",
     lambda d: deployment_container(d)["securityContext"].update(capabilities={"drop": ["ALL"], "add": ["SYS_ADMIN"]})),
    ("writable root filesystem", "CKV_K8S_22",
     lambda d: deployment_container(d)["securityContext"].update(readOnlyRootFilesystem=False)),
    ("host network", "CKV_K8S_19",
     edit("Deployment", "farol", "template", "spec", hostNetwork=True)),
    ("host port", "CKV_K8S_26",
     lambda d: deployment_container(d)["ports"][0].update(hostPort=80)),
    ("API token mounted", "CKV_K8S_38",
     lambda d: find(d, "Job", "farol-migrate-1.0")["spec"]["template"]["spec"].pop("automountServiceAccountToken")),
    ("no limits", "CKV_K8S_13",
     lambda d: deployment_container(d).update(resources={"requests": LIMITS["requests"]})),
    ("no resources in a Job", "CKV_K8S_11",
     edit("Job", "farol-migrate-1.0", "template", "spec", "containers", 0, resources={})),
    ("no readiness probe", "CKV_K8S_9",
     lambda d: deployment_container(d).pop("readinessProbe")),
    ("no liveness probe", "CKV_K8S_8",
     lambda d: deployment_container(d).pop("livenessProbe")),
    ("latest tag", "CKV_K8S_14",
     edit("StatefulSet", "cache", "template", "spec", "containers", 0, image="cache:latest")),
    ("no tag", "CKV_K8S_14",
     edit("StatefulSet", "cache", "template", "spec", "containers", 0, image="registry:5000/cache")),
]


class PolicyTest(unittest.TestCase):
    def test_monitoring_reachable_takes_what_kubernetes_lets_in(self):
        # from every namespace; a port range that holds the port
        for variant in (
            lambda d: find(d, "NetworkPolicy", "scrape-pg")["spec"]["ingress"][0].update(
                **{"from": [{"namespaceSelector": {}}]}),
            edit("NetworkPolicy", "scrape-pg", "ingress", 0, "ports", 0, port=9100, endPort=9200),
        ):
            docs = good_render()
            variant(docs)
            self.assertEqual(findings(docs)["monitoring-reachable"], [])

    def test_the_good_render_passes_every_check(self):
        result = findings(good_render())
        self.assertEqual(set(result), {name for name, _, _ in CHECKS})
        self.assertEqual({k: v for k, v in result.items() if v}, {})

    def test_each_broken_manifest_is_caught(self):
        for what, check, word, breaks in CASES:
            with self.subTest(what):
                docs = copy.deepcopy(good_render())
                breaks(docs)
                caught = findings(docs)[check]
                self.assertTrue(any(word in f for f in caught),
                                f"{check} missed {what!r}; it reported {caught}")

    def test_checkov_catches_the_generic_cases(self):
        """One checkov run (about 20 s) over the good render and each broken one, a file
        each: every broken file fails its check, which the good one passes."""
        checkov = shutil.which("checkov")
        self.assertIsNotNone(checkov, "checkov is missing: scripts/install-deps lint")
        with tempfile.TemporaryDirectory() as out:
            renders = {"good": good_render()}
            for index, (_, _, breaks) in enumerate(CHECKOV_CASES):
                renders[f"case{index}"] = copy.deepcopy(good_render())
                breaks(renders[f"case{index}"])
            for name, docs in renders.items():
                with open(os.path.join(out, f"{name}.yaml"), "w") as f:
                    yaml.safe_dump_all(docs, f)
            proc = subprocess.run([checkov, "--skip-download", "--quiet", "--framework", "kubernetes",
                                   "--output", "json", "--directory", out],
                                  capture_output=True, text=True, timeout=300, check=False)
        report = json.loads(proc.stdout)
        report = report[0] if isinstance(report, list) else report
        failed: dict[str, set[str]] = {}
        for result in report["results"]["failed_checks"]:
            name = os.path.basename(result["file_path"]).removesuffix(".yaml")
            failed.setdefault(name, set()).add(result["check_id"])
        for index, (what, check_id, _) in enumerate(CHECKOV_CASES):
            with self.subTest(what):
                self.assertNotIn(check_id, failed.get("good", set()), "the good render must pass it")
                self.assertIn(check_id, failed.get(f"case{index}", set()),
                              f"checkov missed {what!r}; it reported {sorted(failed.get(f'case{index}', []))}")

    def test_every_check_has_cases(self):
        self.assertEqual({name for name, _, _ in CHECKS}, {check for _, check, _, _ in CASES})


if __name__ == "__main__":
    unittest.main()
