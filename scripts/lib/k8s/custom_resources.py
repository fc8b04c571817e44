"""The custom resources (CloudNativePG, its Barman Cloud plugin, cert-manager, the Prometheus
operator), which kubernetes-validate has no schema for: each schema holds the fields these
manifests use, with the types and values their projects document, and rejects any other
(a misspelt field would otherwise be dropped by the API server); cross-checks follow the
references between objects. implied_objects() says what the operators create."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Iterator

import jsonschema
from render import Pod, Provided, Render, dig, ident, selector_matches

STR = {"type": "string", "minLength": 1}
INT = {"type": "integer"}
BOOL = {"type": "boolean"}
QUANTITY = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|Pi|Ei|M|G|T|P|E)?$"}
# Prometheus durations, as the Prometheus operator's CRDs validate them
DURATION = {"type": "string",
            "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?"
                       r"(([0-9]+)s)?(([0-9]+)ms)?)$", "minLength": 1}
STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}


def obj(required: tuple[str, ...] = (), **props) -> dict:
    return {"type": "object", "properties": props, "required": list(required),
            "additionalProperties": False}


def arr(items: dict, min_items: int = 0) -> dict:
    return {"type": "array", "items": items, "minItems": min_items}


def enum(*values) -> dict:
    return {"enum": list(values)}


def resource(spec: dict, api_version: str, kind: str) -> dict:
    return obj(("apiVersion", "kind", "metadata", "spec"),
               apiVersion={"const": api_version}, kind={"const": kind},
               metadata={"type": "object"}, spec=spec)


RESOURCES = obj(requests=obj(cpu=QUANTITY, memory=QUANTITY), limits=obj(cpu=QUANTITY, memory=QUANTITY))
LABEL_SELECTOR = obj(matchLabels=STR_MAP, matchExpressions=arr(obj(
    ("key", "operator"), key=STR, operator=enum("In", "NotIn", "Exists", "DoesNotExist"),
    values=arr({"type": "string"}))))
SECRET_KEY_REF = obj(("name", "key"), name=STR, key=STR)

# the operator reads the PostgreSQL major version from the tag: it must start with it
CNPG_IMAGE = {"type": "string", "pattern": r"^[^@]+:[0-9]+[^:/]*$"}
# one way to create the cluster: a new database, or a recovery from a backup
BOOTSTRAP = obj(initdb=obj(database=STR, owner=STR, secret=obj(("name",), name=STR),
                           postInitApplicationSQL=arr(STR)),
                recovery=obj(("source",), source=STR, database=STR, owner=STR,
                             secret=obj(("name",), name=STR),
                             recoveryTarget=obj(targetTime=STR, targetLSN=STR, targetXID=STR,
                                                targetName=STR, targetImmediate=BOOL, exclusive=BOOL)))
BOOTSTRAP["maxProperties"] = 1
CLUSTER = resource(obj(
    ("instances",),
    instances={"type": "integer", "minimum": 1},
    imageName=CNPG_IMAGE,
    primaryUpdateStrategy=enum("unsupervised", "supervised"),
    primaryUpdateMethod=enum("switchover", "restart"),
    enablePDB=BOOL, enableSuperuserAccess=BOOL,
    bootstrap=BOOTSTRAP,
    externalClusters=arr(obj(("name",), name=STR, plugin=obj(("name",), name=STR, parameters=STR_MAP))),
    certificates=obj(serverAltDNSNames=arr(STR, 1)),
    # CloudNativePG takes every parameter as a string: 300, unquoted, is refused
    postgresql=obj(parameters=STR_MAP, pg_hba=arr({"type": "string"}),
                   synchronous=obj(("method", "number"), method=enum("any", "first"),
                                   number={"type": "integer", "minimum": 1},
                                   dataDurability=enum("required", "preferred"))),
    storage=obj(("size",), size=QUANTITY, storageClass=STR),
    walStorage=obj(("size",), size=QUANTITY, storageClass=STR),
    resources=RESOURCES,
    affinity=obj(enablePodAntiAffinity=BOOL, topologyKey=STR,
                 podAntiAffinityType=enum("preferred", "required"), nodeSelector=STR_MAP),
    plugins=arr(obj(("name",), name=STR, enabled=BOOL, isWALArchiver=BOOL, parameters=STR_MAP)),
    monitoring=obj(enablePodMonitor=BOOL, customQueriesConfigMap=arr(obj(("name", "key"), name=STR, key=STR))),
), "postgresql.cnpg.io/v1", "Cluster")

TOPOLOGY_SPREAD = obj(
    ("maxSkew", "topologyKey", "whenUnsatisfiable"),
    maxSkew={"type": "integer", "minimum": 1}, topologyKey=STR,
    whenUnsatisfiable=enum("DoNotSchedule", "ScheduleAnyway"), nodeTaintsPolicy=enum("Honor", "Ignore"),
    labelSelector=LABEL_SELECTOR, matchLabelKeys=arr(STR))

POOLER = resource(obj(
    ("cluster", "pgbouncer"),
    cluster=obj(("name",), name=STR),
    instances={"type": "integer", "minimum": 1},
    type=enum("rw", "ro", "r"),
    # every PgBouncer parameter a string, as for the Cluster's
    pgbouncer=obj(("poolMode",), poolMode=enum("session", "transaction"), parameters=STR_MAP),
    # merged into the pods CloudNativePG creates, whose container is pgbouncer (the field is required)
    template=obj(("spec",), spec=obj(
        ("containers",),
        containers=arr(obj(("name",), name=enum("pgbouncer"), resources=RESOURCES)),
        topologySpreadConstraints=arr(TOPOLOGY_SPREAD))),
), "postgresql.cnpg.io/v1", "Pooler")

SCHEDULED_BACKUP = resource(obj(
    ("schedule", "cluster"),
    # six fields, seconds first (Go cron), or a descriptor such as @daily
    schedule={"type": "string",
              "pattern": r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|@every \S+|(\S+\s+){5}\S+)$"},
    cluster=obj(("name",), name=STR),
    method=enum("barmanObjectStore", "volumeSnapshot", "plugin"),
    pluginConfiguration=obj(("name",), name=STR, parameters=STR_MAP),
    backupOwnerReference=enum("none", "self", "cluster"),
    immediate=BOOL, suspend=BOOL, online=BOOL,
    target=enum("primary", "prefer-standby"),
), "postgresql.cnpg.io/v1", "ScheduledBackup")

BARMAN_CLOUD = "barman-cloud.cloudnative-pg.io"
COMPRESSION = enum("bzip2", "gzip", "lz4", "snappy", "xz", "zstd")
OBJECT_STORE = resource(obj(
    ("configuration",),
    retentionPolicy={"type": "string", "pattern": r"^[1-9][0-9]*[dwm]$"},
    configuration=obj(
        ("destinationPath",),
        destinationPath={"type": "string", "pattern": r"^(s3|gs|https?)://\S+$"},
        endpointURL={"type": "string", "pattern": r"^https?://\S+$"},
        s3Credentials=obj(accessKeyId=SECRET_KEY_REF, secretAccessKey=SECRET_KEY_REF,
                          region=SECRET_KEY_REF, sessionToken=SECRET_KEY_REF,
                          inheritFromIAMRole=BOOL),
        wal=obj(compression=COMPRESSION, maxParallel={"type": "integer", "minimum": 1}),
        data=obj(compression=COMPRESSION, jobs={"type": "integer", "minimum": 1}),
    ),
    instanceSidecarConfiguration=obj(resources=RESOURCES,
                                     retentionPolicyIntervalSeconds={"type": "integer", "minimum": 1}),
), "barmancloud.cnpg.io/v1", "ObjectStore")

HTTP01_INGRESS = obj(ingressClassName=STR, **{"class": STR}, name=STR)
HTTP01_INGRESS["maxProperties"] = 1  # one of ingressClassName, class, name
ISSUER = resource(obj(
    ("acme",),
    acme=obj(("server", "privateKeySecretRef", "solvers"),
             server={"type": "string", "pattern": r"^https://\S+$"},
             email={"type": "string", "pattern": r"^[^@\s]+@[^@\s]+$"},
             privateKeySecretRef=obj(("name",), name=STR, key=STR),
             solvers=arr(obj(("http01",), http01=obj(("ingress",), ingress=HTTP01_INGRESS)), 1)),
), "cert-manager.io/v1", "Issuer")

# The operator's RelabelConfig: the fields of Prometheus's relabel_config, in camelCase.
RELABELING = obj(
    sourceLabels=arr({"type": "string", "pattern": r"^[a-zA-Z_][a-zA-Z0-9_]*$"}, 1),
    separator=STR, regex=STR, modulus=INT, replacement=STR,
    targetLabel={"type": "string", "pattern": r"^[a-zA-Z_][a-zA-Z0-9_]*$"},
    action=enum("replace", "keep", "drop", "hashmod", "labelmap", "labeldrop", "labelkeep",
                "lowercase", "uppercase", "keepequal", "dropequal"),
)
ENDPOINT = {"path": {"type": "string", "pattern": r"^/"}, "interval": DURATION,
            "scrapeTimeout": DURATION, "scheme": enum("http", "https"), "honorLabels": BOOL,
            "relabelings": arr(RELABELING, 1)}
SERVICE_MONITOR = resource(obj(
    ("selector", "endpoints"),
    selector=LABEL_SELECTOR, jobLabel=STR,
    endpoints=arr(obj(("port",), port=STR, **ENDPOINT), 1),
), "monitoring.coreos.com/v1", "ServiceMonitor")
POD_MONITOR = resource(obj(
    ("selector", "podMetricsEndpoints"),
    selector=LABEL_SELECTOR, jobLabel=STR,
    podMetricsEndpoints=arr(obj(("port",), port=STR, **ENDPOINT), 1),
), "monitoring.coreos.com/v1", "PodMonitor")
PROBE = resource(obj(
    ("jobName", "prober", "module", "targets"),
    jobName=STR, interval=DURATION, scrapeTimeout=DURATION, module=STR,
    # host:port of the blackbox exporter, no scheme (that is prober.scheme)
    prober=obj(("url",), url={"type": "string", "pattern": r"^[^/:]+(:[0-9]+)?$"},
               scheme=enum("http", "https"), path={"type": "string", "pattern": r"^/"}),
    targets=obj(("staticConfig",), staticConfig=obj(("static",), static=arr(
        {"type": "string", "pattern": r"^https?://\S+$"}, 1), labels=STR_MAP)),
), "monitoring.coreos.com/v1", "Probe")
RULE = obj(("expr",), alert=STR, record=STR, expr=STR, labels=STR_MAP, annotations=STR_MAP,
           **{"for": DURATION, "keep_firing_for": DURATION})
RULE["oneOf"] = [{"required": ["alert"]}, {"required": ["record"]}]
PROMETHEUS_RULE = resource(obj(
    ("groups",),
    groups=arr(obj(("name", "rules"), name=STR, interval=DURATION, limit=INT, rules=arr(RULE, 1)), 1),
), "monitoring.coreos.com/v1", "PrometheusRule")

AM_MATCHER = obj(("name", "value"), name=STR, value=STR, matchType=enum("=", "!=", "=~", "!~"))
AM_ROUTE: dict = obj(
    receiver=STR, groupBy=arr(STR), groupWait=DURATION, groupInterval=DURATION,
    repeatInterval=DURATION, matchers=arr(AM_MATCHER), **{"continue": BOOL},
)
AM_ROUTE["properties"]["routes"] = arr(AM_ROUTE)
ALERTMANAGER_CONFIG = resource(obj(
    ("route", "receivers"),
    route=AM_ROUTE,
    receivers=arr(obj(("name",), name=STR, webhookConfigs=arr(obj(
        ("urlSecret",), urlSecret=obj(("name", "key"), name=STR, key=STR), sendResolved=BOOL), 1)), 1),
    inhibitRules=arr(obj(("sourceMatch", "targetMatch"), sourceMatch=arr(AM_MATCHER, 1),
                         targetMatch=arr(AM_MATCHER, 1), equal=arr(STR))),
), "monitoring.coreos.com/v1alpha1", "AlertmanagerConfig")

Findings = Iterator[str]
SEVERITIES = {"page", "ticket", "none"}   # none: inhibit-only, notifies no one
ALERT_ANNOTATIONS = {"summary", "description", "runbook_url"}


def ns_of(doc: dict) -> str:
    return dig(doc, "metadata", "namespace", default="")


def refs_cluster(render: Render, doc: dict) -> Findings:
    """Each Barman Cloud plugin names an ObjectStore, a recovery's source is an external
    cluster, and a recovered cluster archives under a server name of its own (else its
    WAL would mix with that of the cluster it was restored from)."""
    external = dig(doc, "spec", "externalClusters", default=[]) or []
    plugins = dig(doc, "spec", "plugins", default=[]) + [e["plugin"] for e in external if e.get("plugin")]
    for plugin in plugins:
        if plugin.get("name") == BARMAN_CLOUD:
            store = dig(plugin, "parameters", "barmanObjectName")
            if not store or render.get("ObjectStore", ns_of(doc), store) is None:
                yield f"plugin {BARMAN_CLOUD} names ObjectStore {store!r}, which the render lacks"
    recovery = dig(doc, "spec", "bootstrap", "recovery")
    if recovery is not None:
        source = next((e for e in external if e.get("name") == recovery.get("source")), None)
        if source is None:
            yield f"bootstrap.recovery.source {recovery.get('source')!r} is not an externalClusters name"
            return
        name = dig(doc, "metadata", "name")
        restored_from = dig(source, "plugin", "parameters", "serverName", default=name)
        for plugin in dig(doc, "spec", "plugins", default=[]):
            if plugin.get("isWALArchiver") and \
                    dig(plugin, "parameters", "serverName", default=name) == restored_from:
                yield f"archives WAL as {restored_from!r}, the server it was restored from"


def pooler_pod_labels(doc: dict) -> dict[str, str]:
    return {"cnpg.io/poolerName": dig(doc, "metadata", "name"), "cnpg.io/podRole": "pooler",
            "cnpg.io/cluster": dig(doc, "spec", "cluster", "name", default="")}


def pooler_budget(render: Render, doc: dict, pods: dict[str, str]) -> Findings:
    """CloudNativePG makes no budget for a Pooler's pods: two drains in a row could take
    both. One budget (the eviction API refuses pods under two), with a selector (none
    selects nothing; an empty one, every pod); the budgets check sees that it keeps one up."""
    budgets = [pdb for pdb in render.of_kind("PodDisruptionBudget") if ns_of(pdb) == ns_of(doc)
               and dig(pdb, "spec", "selector") is not None
               and selector_matches(dig(pdb, "spec", "selector"), pods)]
    if len(budgets) != 1:
        yield (f"{len(budgets)} PodDisruptionBudgets select its instances: a drain can evict them all"
               if not budgets else f"{len(budgets)} PodDisruptionBudgets select its instances: evictions fail")


def refs_pooler(render: Render, doc: dict) -> Findings:
    cluster = dig(doc, "spec", "cluster", "name")
    if render.get("Cluster", ns_of(doc), cluster) is None:
        yield f"cluster {cluster!r} is not a Cluster of the render"
    if dig(doc, "metadata", "name") == cluster:
        yield "a Pooler may not share its Cluster's name"
    # a spread whose selector misses the Pooler's pods counts none and spreads nothing
    pods = pooler_pod_labels(doc)
    spreads = dig(doc, "spec", "template", "spec", "topologySpreadConstraints", default=[]) or []
    for spread in spreads:
        if not spread.get("labelSelector") or not selector_matches(spread["labelSelector"], pods):
            yield f"the spread over {spread.get('topologyKey')} selects none of the Pooler's pods"
    # the capacity model lets either PgBouncer take every client: a lost node must not take both
    if dig(doc, "spec", "instances", default=1) > 1:
        if not any(s.get("topologyKey") == "kubernetes.io/hostname" and s.get("whenUnsatisfiable") == "DoNotSchedule"
                   for s in spreads):
            yield ("several instances and no DoNotSchedule spread over kubernetes.io/hostname:"
                   " one node can hold them all")
        yield from pooler_budget(render, doc, pods)
    containers = dig(doc, "spec", "template", "spec", "containers", default=[]) or []
    if not any(c.get("name") == "pgbouncer" and dig(c, "resources", "limits", "memory") for c in containers):
        yield "no memory limit for the pgbouncer container (spec.template.spec.containers)"


def refs_scheduled_backup(render: Render, doc: dict) -> Findings:
    spec = doc.get("spec") or {}
    cluster = render.get("Cluster", ns_of(doc), dig(spec, "cluster", "name"))
    if cluster is None:
        yield f"cluster {dig(spec, 'cluster', 'name')!r} is not a Cluster of the render"
        return
    if spec.get("method", "barmanObjectStore") == "plugin":
        wanted = dig(spec, "pluginConfiguration", "name")
        names = {p.get("name") for p in dig(cluster, "spec", "plugins", default=[])}
        if wanted not in names:
            yield f"method plugin with {wanted!r}, which Cluster {dig(cluster, 'metadata', 'name')} does not load"
    elif spec.get("method", "barmanObjectStore") == "barmanObjectStore" and \
            dig(cluster, "spec", "backup", "barmanObjectStore") is None:
        yield "method barmanObjectStore (the default), but the Cluster has no spec.backup.barmanObjectStore"


def refs_object_store(render: Render, doc: dict) -> Findings:
    for field, ref in (dig(doc, "spec", "configuration", "s3Credentials", default={}) or {}).items():
        if isinstance(ref, dict):
            keys = render.keys("Secret", ns_of(doc), ref["name"])
            if keys is None:
                yield f"s3Credentials.{field}: Secret {ref['name']!r} is not in the render"
            elif ref["key"] not in keys:
                yield f"s3Credentials.{field}: Secret {ref['name']!r} has no key {ref['key']!r}"


def refs_monitor(render: Render, doc: dict) -> Findings:
    """A monitor selects Services (ServiceMonitor) or pods (PodMonitor) with the named port."""
    spec = doc.get("spec") or {}
    if doc["kind"] == "ServiceMonitor":
        services = [s for s in render.of_kind("Service") if ns_of(s) == ns_of(doc)
                    and selector_matches(spec.get("selector"), dig(s, "metadata", "labels", default={}) or {})]
        if not services:
            yield "its selector matches no Service"
        for ep in spec.get("endpoints") or []:
            if services and not any(ep["port"] in {p.get("name") for p in dig(s, "spec", "ports", default=[])}
                                    for s in services):
                yield f"endpoint port {ep['port']!r} is not a port name of the selected Services"
    else:
        pods = render.pods_in(ns_of(doc), spec.get("selector"))
        if not pods:
            yield "its selector matches no pod"
        for ep in spec.get("podMetricsEndpoints") or []:
            if pods and not any(ep["port"] in p.ports for p in pods):
                yield f"endpoint port {ep['port']!r} is not a container port name of the selected pods"


def refs_probe(render: Render, doc: dict) -> Findings:
    """A probed URL into the cluster (service.namespace.svc) names a Service of the render and its port;
    a public https one, a host that an Ingress of the render serves over TLS."""
    tls_hosts = {h for ing in render.of_kind("Ingress") for t in dig(ing, "spec", "tls", default=[]) or []
                 for h in t.get("hosts") or []}
    for url in dig(doc, "spec", "targets", "staticConfig", "static", default=[]):
        parsed = urllib.parse.urlsplit(url)
        host = (parsed.hostname or "").split(".")
        in_cluster = len(host) >= 3 and host[2] == "svc"
        if parsed.scheme == "https" and not in_cluster and parsed.hostname not in tls_hosts:
            yield f"target {url}: no Ingress of the render serves {parsed.hostname} over TLS"
        if in_cluster:
            svc = render.get("Service", host[1], host[0])
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
            if svc is None:
                yield f"target {url}: Service {host[1]}/{host[0]} is not in the render"
            elif port not in {p.get("port") for p in dig(svc, "spec", "ports", default=[])}:
                yield f"target {url}: port {port} is not a port of Service {host[0]}"


def refs_prometheus_rule(render: Render, doc: dict) -> Findings:
    """The alert conventions of docs/monitoring.md, and unique names."""
    groups = dig(doc, "spec", "groups", default=[])
    seen = set()
    for group in groups:
        if group["name"] in seen:
            yield f"group {group['name']!r} appears twice"
        seen.add(group["name"])
        for rule in group.get("rules") or []:
            if "record" in rule:
                if "for" in rule or "annotations" in rule:
                    yield f"recording rule {rule['record']!r} has `for` or annotations"
                continue
            name = rule.get("alert")
            if dig(rule, "labels", "severity") not in SEVERITIES:
                yield f"alert {name!r}: labels.severity must be one of {sorted(SEVERITIES)}"
            missing = ALERT_ANNOTATIONS - set(rule.get("annotations") or {})
            if missing:
                yield f"alert {name!r}: missing annotations {sorted(missing)}"


def refs_alertmanager_config(render: Render, doc: dict) -> Findings:
    """Every route names a receiver of the config, every webhook URL a Secret key of the render."""
    names = {r["name"] for r in dig(doc, "spec", "receivers", default=[])}

    def walk(route):
        if route.get("receiver") and route["receiver"] not in names:
            yield f"route receiver {route['receiver']!r} is not a receiver of the config"
        for child in route.get("routes") or []:
            yield from walk(child)

    yield from walk(dig(doc, "spec", "route", default={}))
    for receiver in dig(doc, "spec", "receivers", default=[]):
        for hook in receiver.get("webhookConfigs") or []:
            ref = hook["urlSecret"]
            secret = render.get("Secret", ns_of(doc), ref["name"])
            if secret is None:
                yield f"receiver {receiver['name']}: Secret {ref['name']!r} is not in the render"
            elif ref["key"] not in (secret.get("data") or {}) | (secret.get("stringData") or {}):
                yield f"receiver {receiver['name']}: Secret {ref['name']!r} has no key {ref['key']!r}"


# (apiVersion, kind) -> (schema, cross-check)
CHECKED: dict[tuple[str, str], tuple[dict, Callable[[Render, dict], Findings]]] = {
    ("postgresql.cnpg.io/v1", "Cluster"): (CLUSTER, refs_cluster),
    ("postgresql.cnpg.io/v1", "Pooler"): (POOLER, refs_pooler),
    ("postgresql.cnpg.io/v1", "ScheduledBackup"): (SCHEDULED_BACKUP, refs_scheduled_backup),
    ("barmancloud.cnpg.io/v1", "ObjectStore"): (OBJECT_STORE, refs_object_store),
    ("cert-manager.io/v1", "Issuer"): (ISSUER, lambda render, doc: iter(())),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): (SERVICE_MONITOR, refs_monitor),
    ("monitoring.coreos.com/v1", "PodMonitor"): (POD_MONITOR, refs_monitor),
    ("monitoring.coreos.com/v1", "Probe"): (PROBE, refs_probe),
    ("monitoring.coreos.com/v1", "PrometheusRule"): (PROMETHEUS_RULE, refs_prometheus_rule),
    ("monitoring.coreos.com/v1alpha1", "AlertmanagerConfig"): (ALERTMANAGER_CONFIG, refs_alertmanager_config),
}
CERT_MANAGER_ISSUER = "cert-manager.io/issuer"


def is_checked(doc: dict) -> bool:
    return (doc.get("apiVersion"), doc.get("kind")) in CHECKED


def check_ingress_certificates(render: Render, ingress: dict) -> Findings:
    """The cert-manager annotation names an Issuer of the render, and each TLS entry a Secret
    and hosts the rules serve."""
    issuer = dig(ingress, "metadata", "annotations", CERT_MANAGER_ISSUER)
    if issuer is None:
        return
    if render.get("Issuer", ns_of(ingress), issuer) is None:
        yield f"annotation {CERT_MANAGER_ISSUER}={issuer!r} names no Issuer of the render"
    tls = dig(ingress, "spec", "tls", default=[])
    if not tls:
        yield f"annotation {CERT_MANAGER_ISSUER} but no spec.tls for the certificate"
    rule_hosts = {r.get("host") for r in dig(ingress, "spec", "rules", default=[])}
    for entry in tls:
        if not entry.get("secretName"):
            yield "a spec.tls entry without secretName: cert-manager needs it"
        for host in entry.get("hosts") or []:
            if host not in rule_hosts:
                yield f"TLS host {host!r} has no rule"


def check_custom_resources(render: Render) -> Iterator[tuple[str, str]]:
    """(object, finding) for every checked custom resource and cert-manager Ingress."""
    for doc in render.docs:
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key in CHECKED:
            schema, cross_check = CHECKED[key]
            errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(doc),
                            key=lambda e: list(e.absolute_path))
            for e in errors:
                where = ".".join(str(p) for p in e.absolute_path) or "(top)"
                yield ident(doc), f"{where}: {e.message}"
            if not errors:
                for finding in cross_check(render, doc):
                    yield ident(doc), finding
        elif doc["kind"] == "Ingress":
            for finding in check_ingress_certificates(render, doc):
                yield ident(doc), finding


# CloudNativePG: the Secret of the application user, and the CA and certificates
CNPG_APP_KEYS = frozenset({"username", "password", "host", "port", "dbname", "uri", "jdbc-uri",
                           "pgpass", "fqdn-uri", "fqdn-jdbc-uri"})
TLS_KEYS = frozenset({"tls.crt", "tls.key"})


def implied_objects(render: Render) -> Iterator[Pod | Provided]:
    for doc in render.docs:
        ns, name, origin = ns_of(doc), dig(doc, "metadata", "name", default=""), f"implied by {ident(doc)}"
        if (doc.get("apiVersion"), doc["kind"]) == ("postgresql.cnpg.io/v1", "Cluster"):
            yield Provided("Secret", ns, f"{name}-app", CNPG_APP_KEYS, origin)
            yield Provided("Secret", ns, f"{name}-ca", frozenset({"ca.crt", "ca.key"}), origin)
            yield Provided("Secret", ns, f"{name}-server", TLS_KEYS | {"ca.crt"}, origin)
            yield Provided("Secret", ns, f"{name}-replication", TLS_KEYS | {"ca.crt"}, origin)
            if dig(doc, "spec", "enableSuperuserAccess") is True:
                yield Provided("Secret", ns, f"{name}-superuser", CNPG_APP_KEYS, origin)
            for suffix in ("rw", "ro", "r"):
                yield Provided("Service", ns, f"{name}-{suffix}", frozenset(), origin)
            yield Pod(origin, ns, {"cnpg.io/cluster": name, "cnpg.io/podRole": "instance",
                                   "cnpg.io/instanceName": f"{name}-1"},
                      {"postgresql": 5432, "metrics": 9187, "status": 8000})
            # the bootstrap Jobs (initdb, join) carry the cluster label but no podRole
            yield Pod(origin, ns, {"cnpg.io/cluster": name, "cnpg.io/jobRole": "initdb"}, {})
        elif (doc.get("apiVersion"), doc["kind"]) == ("postgresql.cnpg.io/v1", "Pooler"):
            yield Provided("Service", ns, name, frozenset(), origin)
            yield Pod(origin, ns, pooler_pod_labels(doc), {"pgbouncer": 5432, "metrics": 9127})
        elif (doc.get("apiVersion"), doc["kind"]) == ("cert-manager.io/v1", "Issuer"):
            account_key = dig(doc, "spec", "acme", "privateKeySecretRef", "name")
            if account_key:
                yield Provided("Secret", ns, account_key, frozenset({"tls.key"}), origin)
            if any("http01" in s for s in dig(doc, "spec", "acme", "solvers", default=[]) or []):
                yield Pod(origin, ns, {"acme.cert-manager.io/http01-solver": "true"}, {"http": 8089})
        elif doc["kind"] == "Ingress" and dig(doc, "metadata", "annotations", CERT_MANAGER_ISSUER):
            for entry in dig(doc, "spec", "tls", default=[]) or []:
                if entry.get("secretName"):
                    yield Provided("Secret", ns, entry["secretName"], TLS_KEYS | {"ca.crt"}, origin)

