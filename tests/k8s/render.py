"""Renders the Helm chart with real Helm (the Helm v4 SDK, offline) under several value sets,
lints it, and validates every manifest against the Kubernetes OpenAPI schemas (strict), plus
the plain manifests in deploy/ and the pods the webhook's golden tests produce.

Run through tests/k8s/run.sh, which installs what this needs. Exits non-zero on any failure.
"""

from __future__ import annotations

import base64
import glob
import json
import os
import shutil
import socket
import ssl
import sys
import tempfile
import threading

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CHART = os.path.join(ROOT, "charts", "switchyard")
# The oldest Kubernetes with native sidecars on by default, and the newest schemas we have.
KUBE_VERSIONS = ["1.29.0", kubernetes_validate.utils.latest_version()]
NS = "switchyard-system"

failures: list[str] = []
checked = 0


def check(cond: bool, what: str) -> None:
    global checked
    checked += 1
    if not cond:
        failures.append(what)
        print(f"FAIL {what}")


# Custom resources have no schema in kubernetes-validate: a strict schema of the fields we use.
def _strict(props: dict, required: list[str]) -> dict:
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}


_META = {"type": "object", "required": ["name", "namespace"]}
_NS_SEL = _strict({"any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {"type": "string"}}}, [])
_ENDPOINT = _strict(
    {"port": {"type": "string"}, "path": {"type": "string"}, "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"}},
    ["port"],
)
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "PodMonitor"): _strict(
        {
            "apiVersion": {}, "kind": {}, "metadata": _META,
            "spec": _strict({"namespaceSelector": _NS_SEL, "selector": {"type": "object"},
                             "podMetricsEndpoints": {"type": "array", "items": _ENDPOINT, "minItems": 1}},
                            ["selector", "podMetricsEndpoints"]),
        },
        ["apiVersion", "kind", "metadata", "spec"],
    ),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): _strict(
        {
            "apiVersion": {}, "kind": {}, "metadata": _META,
            "spec": _strict({"namespaceSelector": _NS_SEL, "selector": {"type": "object"},
                             "endpoints": {"type": "array", "items": _ENDPOINT, "minItems": 1}},
                            ["selector", "endpoints"]),
        },
        ["apiVersion", "kind", "metadata", "spec"],
    ),
    ("cert-manager.io/v1", "Issuer"): _strict(
        {"apiVersion": {}, "kind": {}, "metadata": _META,
         "spec": _strict({"selfSigned": {"type": "object"}}, ["selfSigned"])},
        ["apiVersion", "kind", "metadata", "spec"],
    ),
    ("cert-manager.io/v1", "Certificate"): _strict(
        {
            "apiVersion": {}, "kind": {}, "metadata": _META,
            "spec": _strict(
                {
                    "secretName": {"type": "string"},
                    "duration": {"type": "string", "pattern": "^([0-9]+h)?([0-9]+m)?([0-9]+s)?$"},
                    "renewBefore": {"type": "string", "pattern": "^([0-9]+h)?([0-9]+m)?([0-9]+s)?$"},
                    "commonName": {"type": "string"},
                    "dnsNames": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                    "privateKey": _strict({"algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                                           "size": {"type": "integer"},
                                           "rotationPolicy": {"enum": ["Never", "Always"]}}, []),
                    "issuerRef": _strict({"name": {"type": "string"},
                                          "kind": {"enum": ["Issuer", "ClusterIssuer"]},
                                          "group": {"type": "string"}}, ["name"]),
                },
                ["secretName", "dnsNames", "issuerRef"],
            ),
        },
        ["apiVersion", "kind", "metadata", "spec"],
    ),
}


def validate(doc: dict, where: str) -> None:
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key in CRD_SCHEMAS:
        try:
            jsonschema.validate(doc, CRD_SCHEMAS[key])
            check(True, where)
        except jsonschema.ValidationError as e:
            check(False, f"{where}: {e.message} at {list(e.absolute_path)}")
        return
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
            check(True, where)
        except Exception as e:  # noqa: BLE001 - every failure is reported the same way
            check(False, f"{where} (Kubernetes {version}): {getattr(e, 'message', e)}")


def chart_dir(extra_dashboards: dict[str, str] | None = None) -> str:
    """The chart as Helm loads it. `dashboards/` links to deploy/grafana; where that does not
    exist yet (or to test the glob with known files) a copy with a real directory is used."""
    grafana = os.path.join(ROOT, "deploy", "grafana")
    if extra_dashboards is None and os.path.isdir(grafana):
        return CHART
    tmp = tempfile.mkdtemp(prefix="switchyard-chart-")
    dest = os.path.join(tmp, "switchyard")
    shutil.copytree(CHART, dest, ignore=shutil.ignore_patterns("dashboards"))
    os.makedirs(os.path.join(dest, "dashboards"))
    for name, text in (extra_dashboards or {}).items():
        with open(os.path.join(dest, "dashboards", name), "w") as f:
            f.write(text)
    return dest


def render(values: dict, *, path: str | None = None, namespace: str = NS) -> list[dict]:
    chart = helm.Chart.load(path or chart_dir())
    files = chart.render(values, name="switchyard", namespace=namespace, is_install=True)
    docs = []
    for name, text in sorted(files.items()):
        if name.endswith("NOTES.txt"):
            check("switchyard.dev/inject" in text, f"{name} explains the opt-in")
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc["__file"] = name
                docs.append(doc)
    return docs


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def validate_all(docs: list[dict], scenario: str) -> None:
    for d in docs:
        where = f"{scenario}: {d.pop('__file')} {d['kind']}/{d['metadata'].get('name')}"
        validate(d, where)


def tls_handshake(ca_pem: bytes, crt_pem: bytes, key_pem: bytes, host: str) -> str | None:
    """A real TLS handshake with the generated certificate, verified against the generated
    CA for the Service's DNS name; returns the error, if any."""
    tmp = tempfile.mkdtemp()
    paths = {}
    for name, data in (("ca", ca_pem), ("crt", crt_pem), ("key", key_pem)):
        paths[name] = os.path.join(tmp, name)
        with open(paths[name], "wb") as f:
            f.write(data)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(paths["crt"], paths["key"])
    client_ctx = ssl.create_default_context(cafile=paths["ca"])
    a, b = socket.socketpair()
    errors: list[str] = []

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(a, server_side=True) as s:
                s.recv(1)
        except Exception as e:  # noqa: BLE001
            errors.append(f"server: {e}")

    t = threading.Thread(target=serve)
    t.start()
    try:
        with client_ctx.wrap_socket(b, server_hostname=host) as c:
            c.sendall(b"x")
    except Exception as e:  # noqa: BLE001
        errors.append(f"client: {e}")
        a.close()
    t.join(timeout=10)
    shutil.rmtree(tmp)
    return "; ".join(errors) or None


def scenario_defaults() -> None:
    docs = render({})
    kinds = sorted(d["kind"] for d in docs)
    print("defaults:", ", ".join(kinds))
    for k in ["Deployment", "Service", "ServiceAccount", "MutatingWebhookConfiguration", "Secret",
              "ConfigMap", "PodDisruptionBudget"]:
        check(by_kind(docs, k) != [], f"defaults render a {k}")
    check(not by_kind(docs, "Certificate"), "defaults use no cert-manager")
    check(not by_kind(docs, "PodMonitor"), "monitors are off by default")
    (hook,) = by_kind(docs, "MutatingWebhookConfiguration")
    w = hook["webhooks"][0]
    check(w["failurePolicy"] == "Ignore", "failurePolicy Ignore by default")
    check(w["sideEffects"] == "None" and w["admissionReviewVersions"] == ["v1"], "v1, no side effects")
    check(w["clientConfig"]["service"]["path"] == "/mutate", "webhook path /mutate")
    check(w["rules"][0]["operations"] == ["CREATE"] and w["rules"][0]["resources"] == ["pods"],
          "webhook sees pod creations only")
    excluded = w["namespaceSelector"]["matchExpressions"][0]
    check(excluded["operator"] == "NotIn" and NS in excluded["values"] and "kube-system" in excluded["values"],
          "the release namespace and kube-system are excluded")
    (secret,) = [s for s in by_kind(docs, "Secret") if s["type"] == "kubernetes.io/tls"]
    check(w["clientConfig"]["caBundle"] == secret["data"]["ca.crt"], "caBundle is the generated CA")
    svc = by_kind(docs, "Service")[0]["metadata"]["name"]
    err = tls_handshake(
        base64.b64decode(secret["data"]["ca.crt"]),
        base64.b64decode(secret["data"]["tls.crt"]),
        base64.b64decode(secret["data"]["tls.key"]),
        f"{svc}.{NS}.svc",
    )
    check(err is None, f"the generated certificate serves {svc}.{NS}.svc under the CA: {err}")
    (dep,) = by_kind(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    check(c["args"] == ["inject"], "the injector runs `switchyard inject`")
    check(env["SWITCHYARD_INJECT_IMAGE"] == "switchyard:0.1.0", "sidecar image defaults to appVersion")
    check(pod["automountServiceAccountToken"] is False, "no API token mounted (least privilege)")
    check(c["securityContext"]["readOnlyRootFilesystem"] is True, "read-only root filesystem")
    check(pod["securityContext"]["runAsNonRoot"] is True, "non-root")
    check(not by_kind(docs, "Role") and not by_kind(docs, "ClusterRole"), "no API permissions granted")
    dashboards = [c for c in by_kind(docs, "ConfigMap") if "grafana_dashboard" in c["metadata"].get("labels", {})]
    shipped = sorted(f for f in os.listdir(os.path.join(ROOT, "deploy", "grafana")) if f.endswith(".json"))
    check(sorted(k for d in dashboards for k in d.get("data", {})) == shipped,
          "every deploy/grafana dashboard ships as a ConfigMap")
    (cm,) = [c for c in by_kind(docs, "ConfigMap") if c not in dashboards]
    check(cm["metadata"]["namespace"] == "default", "default config in namespace default")
    validate_all(docs, "defaults")


def scenario_everything_on() -> None:
    values = {
        "nameOverride": "llm",
        "image": {"repository": "registry.example/switchyard", "tag": "9.9.9", "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "regcred"}],
        "commonLabels": {"team": "platform"},
        "injector": {"replicas": 3, "minAvailable": 0, "nodeSelector": {"kubernetes.io/os": "linux"},
                     "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
                     "podAnnotations": {"example.com/owner": "platform"}, "priorityClassName": "system-cluster-critical"},
        "webhook": {"failurePolicy": "Fail", "timeoutSeconds": 10,
                    "namespaceSelector": {"matchLabels": {"switchyard.dev/enabled": "true"}},
                    "objectSelector": {"matchExpressions": [{"key": "switchyard.dev/skip", "operator": "DoesNotExist"}]}},
        "certManager": {"enabled": True},
        "sidecar": {"configMap": "llm-config", "secret": "llm-keys", "port": 4100, "adminPort": 9500,
                    "resources": {"cpuRequest": "100m", "memoryRequest": "64Mi", "cpuLimit": "1", "memoryLimit": ""}},
        "config": {"namespaces": ["team-a", "team-b"],
                   "switchyard.yaml": "providers: []\nmodels:\n  - name: chat\n    targets: [mock/echo]\n"},
        "providerKeys": {"create": True, "keys": {"openai-api-key": "sk-test", "anthropic-api-key": "sk-ant-test"}},
        "metrics": {"podMonitor": {"enabled": True, "namespaces": ["team-a"], "labels": {"release": "prometheus"}},
                    "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
        "dashboards": {"namespace": "monitoring", "annotations": {"grafana_folder": "LLM"}},
    }
    dashboard = json.dumps({"title": "switchyard test", "panels": []})
    docs = render(values, path=chart_dir({"switchyard-test.json": dashboard}), namespace="platform")
    print("everything on:", ", ".join(sorted(d["kind"] for d in docs)))
    check(len(by_kind(docs, "Certificate")) == 1 and len(by_kind(docs, "Issuer")) == 1, "cert-manager objects")
    check(not [s for s in by_kind(docs, "Secret") if s.get("type") == "kubernetes.io/tls"],
          "no generated TLS Secret with cert-manager")
    (hook,) = by_kind(docs, "MutatingWebhookConfiguration")
    check(hook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].startswith("platform/"),
          "CA injected by cert-manager")
    check("caBundle" not in hook["webhooks"][0]["clientConfig"], "no static caBundle")
    check(hook["webhooks"][0]["failurePolicy"] == "Fail", "failurePolicy override")
    check(hook["webhooks"][0]["namespaceSelector"]["matchLabels"] == {"switchyard.dev/enabled": "true"},
          "namespace label selector merged")
    check(not by_kind(docs, "PodDisruptionBudget"), "minAvailable 0 disables the PDB")
    (dep,) = by_kind(docs, "Deployment")
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    check(env["SWITCHYARD_INJECT_IMAGE"] == "registry.example/switchyard:9.9.9", "image override")
    check(env["SWITCHYARD_INJECT_PORT"] == "4100" and env["SWITCHYARD_INJECT_MEMORY_LIMIT"] == "",
          "sidecar overrides reach the injector")
    check(sorted(c["metadata"]["namespace"] for c in by_kind(docs, "ConfigMap")
                 if c["metadata"]["name"] == "llm-config") == ["team-a", "team-b"], "config per namespace")
    keys = [s for s in by_kind(docs, "Secret") if s["metadata"]["name"] == "llm-keys"]
    check(len(keys) == 2 and keys[0]["stringData"]["openai-api-key"] == "sk-test", "example key Secrets")
    dashboards = [c for c in by_kind(docs, "ConfigMap") if "switchyard-test.json" in c.get("data", {})]
    check(len(dashboards) == 1, "a dashboard ConfigMap per dashboards/*.json")
    if dashboards:
        d = dashboards[0]
        check(d["metadata"]["labels"].get("grafana_dashboard") == "1", "labelled for the Grafana sidecar")
        check(d["metadata"]["namespace"] == "monitoring", "dashboards namespace")
        check(json.loads(d["data"]["switchyard-test.json"])["title"] == "switchyard test", "dashboard JSON intact")
    (pm,) = by_kind(docs, "PodMonitor")
    check(pm["spec"]["podMetricsEndpoints"][0]["port"] == "sy-admin", "PodMonitor scrapes sy-admin")
    check(len(by_kind(docs, "ServiceMonitor")) == 1, "ServiceMonitor")
    validate_all(docs, "everything-on")


def scenario_issuer_ref() -> None:
    docs = render({"certManager": {"enabled": True, "issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}},
                   "config": {"create": False}, "dashboards": {"enabled": False}})
    check(not by_kind(docs, "Issuer"), "an existing issuer is used, none created")
    (cert,) = by_kind(docs, "Certificate")
    check(cert["spec"]["issuerRef"] == {"name": "corp-ca", "kind": "ClusterIssuer"}, "issuerRef passed through")
    check(not by_kind(docs, "ConfigMap"), "config.create false")
    validate_all(docs, "issuer-ref")


def lint() -> None:
    for values in ({}, {"certManager": {"enabled": True}}):
        report = helm.lint(chart_dir(), values, strict=True, namespace=NS, kube_version="v1.30.0")
        bad = [m for m in report.get("messages") or [] if m.get("severity", 0) >= 2]
        for m in bad:
            print("lint:", m)
        check(not bad and not report.get("errors"), f"helm lint --strict {values}: {report.get('errors')}")


def plain_manifests() -> None:
    files = sorted(glob.glob(os.path.join(ROOT, "deploy", "*.yaml")))
    check(files != [], "deploy/ has plain manifests")
    for path in files:
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc:
                    validate(doc, f"{os.path.relpath(path, ROOT)} {doc['kind']}/{doc['metadata']['name']}")


def injected_pods() -> None:
    """The webhook's golden outputs are valid pods with a native sidecar."""
    files = sorted(glob.glob(os.path.join(ROOT, "tests", "golden", "inject", "*.pod.json")))
    check(files != [], "golden injected pods exist")
    for path in files:
        with open(path) as f:
            pod = json.load(f)
        pod["metadata"]["name"] = pod["metadata"].get("generateName", "pod-") + "x"
        validate(pod, os.path.relpath(path, ROOT))


def main() -> int:
    print(f"helm SDK {helm.helm_sdk_version()}, schemas for Kubernetes {', '.join(KUBE_VERSIONS)}")
    lint()
    scenario_defaults()
    scenario_everything_on()
    scenario_issuer_ref()
    plain_manifests()
    injected_pods()
    print(f"{checked - len(failures)} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
