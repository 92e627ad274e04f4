//! The sidecar container, its volumes and the app containers' environment, as a JSONPatch.

use serde_json::{json, Map, Value};

use super::{Resources, Settings, CONTAINER, STATUS};

/// Where the config ConfigMap is mounted; the file is its `switchyard.yaml` key.
pub(crate) const CONFIG_DIR: &str = "/etc/switchyard";
/// Where the provider-key Secret is mounted (`api_key: file:/var/run/secrets/switchyard/KEY`).
pub(crate) const SECRET_DIR: &str = "/var/run/secrets/switchyard";
const CONFIG_VOLUME: &str = "switchyard-config";
const SECRET_VOLUME: &str = "switchyard-provider-keys";
/// The non-root user of the image (distroless `nonroot`).
const UID: u64 = 65532;

/// One pod's settings: the webhook's, overridden by the pod's annotations.
#[derive(Debug)]
pub(crate) struct Options {
    config_map: String,
    secret: String,
    port: u16,
    admin_port: u16,
    resources: Resources,
}

impl Options {
    /// Reads the overrides; an error names the annotation and what is wrong with it.
    pub(crate) fn from_annotations<'a>(
        settings: &Settings,
        annotation: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<Self, String> {
        let name = |key: &str, default: &str| -> Result<String, String> {
            match annotation(key) {
                None => Ok(default.to_owned()),
                Some(v) if is_dns_subdomain(v) => Ok(v.to_owned()),
                Some(v) => Err(format!(
                    "annotation {}{key}: '{v}' is not a valid object name",
                    super::PREFIX
                )),
            }
        };
        let port = |key: &str, default: u16| -> Result<u16, String> {
            match annotation(key) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| {
                        format!(
                            "annotation {}{key}: '{v}' is not a port (1-65535)",
                            super::PREFIX
                        )
                    }),
            }
        };
        let quantity = |key: &str, default: &Option<String>| -> Result<Option<String>, String> {
            match annotation(key).map(str::trim) {
                None => Ok(default.clone()),
                Some("") => Ok(None),
                Some(v) if is_quantity(v) => Ok(Some(v.to_owned())),
                Some(v) => Err(format!(
                    "annotation {}{key}: '{v}' is not a resource quantity (e.g. 100m, 64Mi)",
                    super::PREFIX
                )),
            }
        };
        let d = &settings.resources;
        let options = Self {
            config_map: name("config", &settings.config_map)?,
            secret: name("secret", &settings.secret)?,
            port: port("port", settings.port)?,
            admin_port: port("admin-port", settings.admin_port)?,
            resources: Resources {
                cpu_request: quantity("cpu-request", &d.cpu_request)?,
                memory_request: quantity("memory-request", &d.memory_request)?,
                cpu_limit: quantity("cpu-limit", &d.cpu_limit)?,
                memory_limit: quantity("memory-limit", &d.memory_limit)?,
            },
        };
        if options.port == options.admin_port {
            return Err(format!(
                "annotations {}port and admin-port are both {}",
                super::PREFIX,
                options.port
            ));
        }
        Ok(options)
    }
}

/// Whether the pod has a container or init container of this name.
pub(crate) fn has_container(pod: &Value, name: &str) -> bool {
    ["/spec/containers", "/spec/initContainers"]
        .iter()
        .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
        .flatten()
        .any(|c| c.get("name").and_then(Value::as_str) == Some(name))
}

/// The JSONPatch that injects the sidecar into `pod`.
pub(crate) fn patch(pod: &Value, settings: &Settings, o: &Options) -> Vec<Value> {
    let mut ops = Vec::new();
    // Annotation keys contain '/', written '~1' in a JSON pointer (RFC 6901).
    match pod.pointer("/metadata/annotations") {
        Some(Value::Object(_)) => ops.push(add(
            &format!("/metadata/annotations/{}", STATUS.replace('/', "~1")),
            json!("injected"),
        )),
        _ => ops.push(add("/metadata/annotations", json!({ STATUS: "injected" }))),
    }
    // First of the init containers: a native sidecar placed after a plain init container
    // would start only once that one finished, and the app's init containers may need it.
    let container = container(settings, o);
    match pod.pointer("/spec/initContainers") {
        Some(Value::Array(_)) => ops.push(add("/spec/initContainers/0", container)),
        _ => ops.push(add("/spec/initContainers", json!([container]))),
    }
    append(
        &mut ops,
        pod.pointer("/spec/volumes"),
        "/spec/volumes",
        volumes(pod, o),
    );
    let env = [
        ("OPENAI_BASE_URL", format!("http://127.0.0.1:{}/v1", o.port)),
        ("ANTHROPIC_BASE_URL", format!("http://127.0.0.1:{}", o.port)),
    ];
    let containers = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    // A container that is not an object has no `env` to add to (the API server will refuse
    // the pod anyway); a patch op on it would fail the whole patch.
    for (i, c) in containers.iter().enumerate().filter(|(_, c)| c.is_object()) {
        let set: Vec<&str> = c
            .get("env")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|e| e.get("name").and_then(Value::as_str))
            .collect();
        let missing: Vec<Value> = env
            .iter()
            .filter(|(name, _)| !set.contains(name))
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect();
        append(
            &mut ops,
            c.get("env"),
            &format!("/spec/containers/{i}/env"),
            missing,
        );
    }
    ops
}

fn add(path: &str, value: Value) -> Value {
    json!({"op": "add", "path": path, "value": value})
}

/// Appends `items` to the array at `path`, whose current value is `existing`, creating the
/// array when it is missing.
fn append(ops: &mut Vec<Value>, existing: Option<&Value>, path: &str, items: Vec<Value>) {
    if items.is_empty() {
        return;
    }
    if existing.is_some_and(Value::is_array) {
        for item in items {
            ops.push(add(&format!("{path}/-"), item));
        }
    } else {
        ops.push(add(path, Value::Array(items)));
    }
}

fn volumes(pod: &Value, o: &Options) -> Vec<Value> {
    let existing: Vec<&str> = pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.get("name").and_then(Value::as_str))
        .collect();
    [
        // The config is required: without it the sidecar cannot start, and a missing
        // ConfigMap is clearer as a pod event than as a crash loop.
        json!({"name": CONFIG_VOLUME, "configMap": {"name": o.config_map}}),
        // Keys are optional: a mock-only or env-keyed config needs none.
        json!({"name": SECRET_VOLUME, "secret": {"secretName": o.secret, "optional": true}}),
    ]
    .into_iter()
    .filter(|v| !existing.contains(&v["name"].as_str().unwrap_or_default()))
    .collect()
}

fn container(settings: &Settings, o: &Options) -> Value {
    let probe = |path: &str, period: u32, failures: u32| {
        json!({
            "httpGet": {"path": path, "port": "sy-admin"},
            "periodSeconds": period,
            "failureThreshold": failures,
            "timeoutSeconds": 1,
        })
    };
    let mut resources = Map::new();
    let quantities = |cpu: &Option<String>, memory: &Option<String>| {
        let mut m = Map::new();
        if let Some(c) = cpu {
            m.insert("cpu".into(), json!(c));
        }
        if let Some(mem) = memory {
            m.insert("memory".into(), json!(mem));
        }
        m
    };
    let r = &o.resources;
    for (key, q) in [
        ("requests", quantities(&r.cpu_request, &r.memory_request)),
        ("limits", quantities(&r.cpu_limit, &r.memory_limit)),
    ] {
        if !q.is_empty() {
            resources.insert(key.into(), Value::Object(q));
        }
    }
    json!({
        "name": CONTAINER,
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        // A native sidecar (Kubernetes 1.29+): started before the app, stopped after it.
        "restartPolicy": "Always",
        "args": [
            "serve",
            "--config", format!("{CONFIG_DIR}/switchyard.yaml"),
            // The data plane stays on loopback: only the pod's own containers may call it.
            "--listen", format!("127.0.0.1:{}", o.port),
            // The admin plane must be reachable by the kubelet's probes and Prometheus.
            "--admin", format!("0.0.0.0:{}", o.admin_port),
        ],
        "env": [{"name": "SWITCHYARD_LOG_FORMAT", "value": "json"}],
        "ports": [{"name": "sy-admin", "containerPort": o.admin_port, "protocol": "TCP"}],
        // The app starts only once switchyard is ready (startup probe of a native sidecar).
        "startupProbe": probe("/readyz", 1, 30),
        "readinessProbe": probe("/readyz", 5, 2),
        "livenessProbe": probe("/healthz", 10, 3),
        "resources": resources,
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": UID,
            "runAsGroup": UID,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": true},
            {"name": SECRET_VOLUME, "mountPath": SECRET_DIR, "readOnly": true},
        ],
    })
}

/// A DNS-1123 subdomain, the form of ConfigMap and Secret names.
fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A Kubernetes resource quantity: a decimal number with an optional SI or binary suffix.
fn is_quantity(s: &str) -> bool {
    const SUFFIXES: &[&str] = &[
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E", "",
    ];
    SUFFIXES.iter().any(|suffix| {
        s.strip_suffix(suffix).is_some_and(|n| {
            let mut parts = n.splitn(2, '.');
            let whole = parts.next().unwrap_or_default();
            let frac = parts.next();
            !n.is_empty()
                && whole.bytes().all(|b| b.is_ascii_digit())
                && frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
                && !(whole.is_empty() && frac.is_none())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        for ok in ["50m", "1", "0.5", "128Mi", "1Gi", "2.5G", ".5"] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["", "m", "1.", "lots", "64MB", "-1", "1..2"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn names() {
        assert!(is_dns_subdomain("switchyard-team.a"));
        assert!(!is_dns_subdomain("Switchyard"));
        assert!(!is_dns_subdomain("-x"));
        assert!(!is_dns_subdomain("a..b"));
    }

    #[test]
    fn overrides_are_read_and_checked() {
        let s = Settings::default();
        let o = Options::from_annotations(&s, |k| match k {
            "port" => Some("4100"),
            "cpu-limit" => Some("1"),
            "memory-limit" => Some(""),
            _ => None,
        })
        .unwrap();
        assert_eq!(o.port, 4100);
        assert_eq!(o.resources.cpu_limit.as_deref(), Some("1"));
        assert_eq!(o.resources.memory_limit, None);
        let e =
            Options::from_annotations(&s, |k| (k == "admin-port").then_some("4000")).unwrap_err();
        assert!(e.contains("both 4000"), "{e}");
        let e = Options::from_annotations(&s, |k| (k == "port").then_some("http")).unwrap_err();
        assert!(e.contains("switchyard.dev/port"), "{e}");
    }
}
