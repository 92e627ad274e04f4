//! Kubernetes mutating admission webhook: adds switchyard to opted-in pods as a native sidecar.
//!
//! A pod opts in with the annotation `switchyard.dev/inject: "true"`. The webhook answers an
//! `admission.k8s.io/v1` `AdmissionReview` with a JSONPatch that
//! - puts a `switchyard` container first in `initContainers` with `restartPolicy: Always`
//!   (a native sidecar: up before the app, down after it), with startup and readiness probes
//!   on the admin port's `/readyz` and a liveness probe on `/healthz`;
//! - mounts the config ConfigMap (key `switchyard.yaml`) at `/etc/switchyard` and the
//!   provider-key Secret at `/var/run/secrets/switchyard` (optional: a mock-only config needs
//!   none), both as whole directories so that updates reach the running sidecar;
//! - sets `OPENAI_BASE_URL` / `ANTHROPIC_BASE_URL` on every app container that does not set
//!   them in its `env` (a value from `envFrom` is overridden: set it in `env` to keep it);
//! - records `switchyard.dev/status: injected`.
//!
//! Per-pod annotations (prefix `switchyard.dev/`) override the webhook's defaults:
//!
//! | annotation       | meaning                                        | default (flag)            |
//! |------------------|------------------------------------------------|---------------------------|
//! | `inject`         | `"true"` opts the pod in                       | —                         |
//! | `config`         | ConfigMap holding `switchyard.yaml`            | `--config-map`            |
//! | `secret`         | Secret with provider keys                      | `--secret`                |
//! | `port`           | data-plane port on 127.0.0.1                   | `--port` (4000)           |
//! | `admin-port`     | admin-plane port (probes, metrics)             | `--admin-port` (9464)     |
//! | `cpu-request`    | sidecar CPU request                            | `--cpu-request` (50m)     |
//! | `memory-request` | sidecar memory request                         | `--memory-request` (32Mi) |
//! | `cpu-limit`      | sidecar CPU limit (`""`: none)                 | `--cpu-limit` (none)      |
//! | `memory-limit`   | sidecar memory limit (`""`: none)              | `--memory-limit` (128Mi)  |
//! | `status`         | written by the webhook; present → left as is   | —                         |
//!
//! Decisions: a pod already carrying the status annotation or a container named `switchyard`
//! is left as is (idempotent); pods in the webhook's own namespace are skipped (the injector
//! must never depend on itself); an opted-in pod with an invalid override is *denied* with a
//! message naming the annotation, because starting it without its proxy would fail later and
//! less clearly. Anything the webhook cannot read is allowed unchanged (`failurePolicy:
//! Ignore` semantics end to end).

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Map, Value};

pub mod server;
mod sidecar;

/// The annotation prefix.
pub const PREFIX: &str = "switchyard.dev/";
/// The opt-in annotation.
pub const INJECT: &str = "switchyard.dev/inject";
/// The annotation the webhook writes on an injected pod.
pub const STATUS: &str = "switchyard.dev/status";
/// The sidecar container's name.
pub const CONTAINER: &str = "switchyard";

/// Sidecar resources, as Kubernetes quantities; `None` leaves the field out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    /// CPU request.
    pub cpu_request: Option<String>,
    /// Memory request.
    pub memory_request: Option<String>,
    /// CPU limit.
    pub cpu_limit: Option<String>,
    /// Memory limit.
    pub memory_limit: Option<String>,
}

impl Default for Resources {
    fn default() -> Self {
        // Idle is well under 20 MiB; 128 MiB leaves room for 1,000 streams. No CPU limit:
        // throttling a proxy adds latency to every call of the app.
        Self {
            cpu_request: Some("50m".into()),
            memory_request: Some("32Mi".into()),
            cpu_limit: None,
            memory_limit: Some("128Mi".into()),
        }
    }
}

/// What the webhook injects unless a pod's annotations say otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The switchyard image.
    pub image: String,
    /// Its pull policy.
    pub image_pull_policy: String,
    /// Default ConfigMap holding `switchyard.yaml`.
    pub config_map: String,
    /// Default Secret holding provider keys.
    pub secret: String,
    /// The webhook's own namespace, whose pods are never injected.
    pub namespace: Option<String>,
    /// Data-plane port (on 127.0.0.1).
    pub port: u16,
    /// Admin-plane port (on all interfaces, for the kubelet's probes and Prometheus).
    pub admin_port: u16,
    /// Sidecar resources.
    pub resources: Resources,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            image: format!("switchyard:{}", env!("CARGO_PKG_VERSION")),
            image_pull_policy: "IfNotPresent".into(),
            config_map: "switchyard".into(),
            secret: "switchyard-provider-keys".into(),
            namespace: None,
            port: 4000,
            admin_port: 9464,
            resources: Resources::default(),
        }
    }
}

/// What the webhook decided about one pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Leave the pod as it is, for this reason.
    Skip(&'static str),
    /// Apply these JSONPatch operations.
    Patch(Vec<Value>),
    /// Refuse the pod: it asked for injection with an invalid override.
    Deny(String),
}

/// A request the webhook cannot answer at all (HTTP 400).
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// The body is not an `AdmissionReview` with a `request`.
    #[error("not an AdmissionReview request: {0}")]
    Malformed(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn {
    api_version: Option<String>,
    request: Option<RequestIn>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestIn {
    uid: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    operation: Option<String>,
    #[serde(default)]
    object: Option<Value>,
}

/// Answers one `AdmissionReview` (the request body) with the `AdmissionReview` to send back.
pub fn review(body: &[u8], settings: &Settings) -> Result<Value, ReviewError> {
    let input: ReviewIn =
        serde_json::from_slice(body).map_err(|e| ReviewError::Malformed(e.to_string()))?;
    let request = input
        .request
        .ok_or_else(|| ReviewError::Malformed("no `request`".into()))?;
    let decision = match (&request.operation, &request.object) {
        (Some(op), Some(pod)) if op == "CREATE" => {
            decide(pod, request.namespace.as_deref(), settings)
        }
        _ => Decision::Skip("not a pod creation"),
    };
    let name = request
        .object
        .as_ref()
        .and_then(|p| {
            let m = p.get("metadata")?;
            m.get("name")
                .or_else(|| m.get("generateName"))
                .and_then(Value::as_str)
        })
        .unwrap_or("<unnamed>");
    let ns = request.namespace.as_deref().unwrap_or("");
    let mut response = Map::new();
    response.insert("uid".into(), Value::String(request.uid));
    match decision {
        Decision::Skip(reason) => {
            tracing::debug!(pod = name, namespace = ns, reason, "not injected");
            response.insert("allowed".into(), Value::Bool(true));
        }
        Decision::Patch(ops) => {
            tracing::info!(pod = name, namespace = ns, "injecting switchyard");
            let patch = serde_json::to_vec(&ops).unwrap_or_default();
            response.insert("allowed".into(), Value::Bool(true));
            response.insert("patchType".into(), Value::String("JSONPatch".into()));
            response.insert(
                "patch".into(),
                Value::String(base64::engine::general_purpose::STANDARD.encode(patch)),
            );
        }
        Decision::Deny(message) => {
            tracing::warn!(pod = name, namespace = ns, %message, "pod denied");
            response.insert("allowed".into(), Value::Bool(false));
            response.insert(
                "status".into(),
                json!({"code": 400, "reason": "BadRequest", "message": message}),
            );
        }
    }
    Ok(json!({
        "apiVersion": input.api_version.unwrap_or_else(|| "admission.k8s.io/v1".into()),
        "kind": "AdmissionReview",
        "response": response,
    }))
}

/// Decides what to do with a pod being created in `namespace`.
pub fn decide(pod: &Value, namespace: Option<&str>, settings: &Settings) -> Decision {
    let annotations = pod
        .pointer("/metadata/annotations")
        .and_then(Value::as_object);
    let annotation = |key: &str| -> Option<&str> {
        annotations
            .and_then(|a| a.get(&format!("{PREFIX}{key}")))
            .and_then(Value::as_str)
    };
    if !annotation("inject").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Decision::Skip("not opted in");
    }
    let ns = namespace.or_else(|| pod.pointer("/metadata/namespace").and_then(Value::as_str));
    if ns.is_some() && ns == settings.namespace.as_deref() {
        return Decision::Skip("in the webhook's own namespace");
    }
    // The patch adds under `/spec`; without one it would not apply, and the API server
    // refuses a pod whose patch fails (whatever the failurePolicy). Not a pod we can read:
    // allowed unchanged.
    if !pod.get("spec").is_some_and(Value::is_object) {
        return Decision::Skip("no pod spec");
    }
    if annotation("status").is_some() || sidecar::has_container(pod, CONTAINER) {
        return Decision::Skip("already injected");
    }
    match sidecar::Options::from_annotations(settings, annotation) {
        Ok(options) => Decision::Patch(sidecar::patch(pod, settings, &options)),
        Err(message) => Decision::Deny(format!(
            "the pod asks for switchyard injection but {message}"
        )),
    }
}
