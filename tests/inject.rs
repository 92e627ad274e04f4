//! The sidecar-injection webhook against real `AdmissionReview` payloads.
//!
//! Each scenario is `tests/golden/inject/<name>.review.json`; a patched scenario's resulting
//! pod (the patch applied with an independent RFC 6902 implementation) is the golden
//! `<name>.pod.json`. `UPDATE_GOLDEN=1 cargo test --test inject` rewrites those after review.

use std::path::PathBuf;

use base64::Engine as _;
use serde_json::Value;
use switchyard::inject::{self, Settings};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Patched,
    Unchanged,
    Denied,
}

/// Which scenario expects what.
const SCENARIOS: &[(&str, Expect)] = &[
    ("plain", Expect::Patched),
    ("own_base_url", Expect::Patched),
    ("already_injected", Expect::Unchanged),
    ("excluded_namespace", Expect::Unchanged),
    ("not_opted_in", Expect::Unchanged),
    ("bad_annotation", Expect::Denied),
];

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/inject")
}

fn settings() -> Settings {
    Settings {
        image: "switchyard:test".into(),
        namespace: Some("switchyard-system".into()),
        ..Settings::default()
    }
}

fn read(name: &str) -> Value {
    let path = dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// Reviews `input` and returns (response, the pod after applying any patch).
fn apply(input: &Value) -> (Value, Value) {
    let out = inject::review(&serde_json::to_vec(input).unwrap(), &settings()).unwrap();
    assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(out["kind"], "AdmissionReview");
    let response = out["response"].clone();
    assert_eq!(response["uid"], input["request"]["uid"], "uid echoed");
    let mut pod = input["request"]["object"].clone();
    if let Some(patch) = response.get("patch") {
        assert_eq!(response["patchType"], "JSONPatch");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(patch.as_str().unwrap())
            .unwrap();
        let ops: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        json_patch::patch(&mut pod, &ops.0).expect("the patch applies to the pod");
    }
    (response, pod)
}

#[test]
fn golden_scenarios() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for (name, expect) in SCENARIOS {
        let input = read(&format!("{name}.review.json"));
        let (response, pod) = apply(&input);
        match expect {
            Expect::Patched => {
                assert_eq!(response["allowed"], true, "{name}");
                let golden = dir().join(format!("{name}.pod.json"));
                if update {
                    let text = serde_json::to_string_pretty(&pod).unwrap() + "\n";
                    std::fs::write(&golden, text).unwrap();
                }
                assert_eq!(
                    pod,
                    read(&format!("{name}.pod.json")),
                    "{name}: patched pod"
                );
                // Idempotent: the injected pod, reviewed again, is left as is.
                let mut again = input.clone();
                again["request"]["object"] = pod.clone();
                let (response, same) = apply(&again);
                assert!(response.get("patch").is_none(), "{name}: patched twice");
                assert_eq!(same, pod);
            }
            Expect::Unchanged => {
                assert_eq!(response["allowed"], true, "{name}");
                assert!(response.get("patch").is_none(), "{name}: {response}");
                assert_eq!(pod, input["request"]["object"]);
            }
            Expect::Denied => {
                assert_eq!(response["allowed"], false, "{name}");
                assert!(response.get("patch").is_none());
                let message = response["status"]["message"].as_str().unwrap();
                assert!(message.contains("switchyard.dev/"), "{name}: {message}");
            }
        }
    }
}

fn container<'a>(pod: &'a Value, list: &str, name: &str) -> &'a Value {
    pod["spec"][list]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {list} entry {name}"))
}

fn env<'a>(c: &'a Value, name: &str) -> Option<&'a str> {
    c["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?
        .get("value")?
        .as_str()
}

#[test]
fn plain_pod_gets_a_native_sidecar() {
    let (_, pod) = apply(&read("plain.review.json"));
    assert_eq!(
        pod["metadata"]["annotations"]["switchyard.dev/status"],
        "injected"
    );
    let init = pod["spec"]["initContainers"].as_array().unwrap();
    let sidecar = &init[0];
    assert_eq!(sidecar["name"], "switchyard");
    assert_eq!(sidecar["image"], "switchyard:test");
    assert_eq!(sidecar["restartPolicy"], "Always", "native sidecar");
    assert_eq!(sidecar["startupProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(sidecar["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(sidecar["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(sidecar["ports"][0]["containerPort"], 9464);
    assert_eq!(sidecar["resources"]["requests"]["memory"], "32Mi");
    assert_eq!(sidecar["resources"]["limits"]["memory"], "128Mi");
    assert_eq!(sidecar["securityContext"]["readOnlyRootFilesystem"], true);
    let volumes: Vec<&Value> = pod["spec"]["volumes"].as_array().unwrap().iter().collect();
    assert!(volumes
        .iter()
        .any(|v| v["configMap"]["name"] == "switchyard"));
    assert!(volumes
        .iter()
        .any(|v| v["secret"]["secretName"] == "switchyard-provider-keys"));
    let app = container(&pod, "containers", "app");
    assert_eq!(
        env(app, "OPENAI_BASE_URL"),
        Some("http://127.0.0.1:4000/v1")
    );
    assert_eq!(
        env(app, "ANTHROPIC_BASE_URL"),
        Some("http://127.0.0.1:4000")
    );
    assert_eq!(env(app, "LOG_LEVEL"), Some("info"), "existing env kept");
}

#[test]
fn own_base_url_is_kept_and_overrides_apply() {
    let (_, pod) = apply(&read("own_base_url.review.json"));
    let app = container(&pod, "containers", "app");
    assert_eq!(
        env(app, "OPENAI_BASE_URL"),
        Some("https://llm-proxy.internal/v1")
    );
    assert_eq!(
        env(app, "ANTHROPIC_BASE_URL"),
        Some("http://127.0.0.1:4100")
    );
    let worker = container(&pod, "containers", "worker");
    assert_eq!(
        env(worker, "OPENAI_BASE_URL"),
        Some("http://127.0.0.1:4100/v1")
    );
    let init = pod["spec"]["initContainers"].as_array().unwrap();
    assert_eq!(
        init[0]["name"], "switchyard",
        "sidecar before the app's init containers"
    );
    assert_eq!(init[1]["name"], "migrate");
    assert!(init[0]["args"]
        .as_array()
        .unwrap()
        .contains(&Value::from("127.0.0.1:4100")));
    assert_eq!(init[0]["resources"]["limits"]["cpu"], "500m");
    assert!(pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["configMap"]["name"] == "switchyard-research"));
}

#[test]
fn non_creations_and_garbage() {
    let mut update = read("plain.review.json");
    update["request"]["operation"] = "UPDATE".into();
    let (response, _) = apply(&update);
    assert!(response.get("patch").is_none());
    assert!(inject::review(b"{\"kind\":\"AdmissionReview\"}", &settings()).is_err());
    assert!(inject::review(b"not json", &settings()).is_err());
}

mod https {
    //! The webhook over real TLS on loopback.
    use super::*;
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use std::sync::Arc;
    use std::time::Duration;
    use switchyard::inject::server::{Certificate, Webhook};

    #[tokio::test]
    async fn mutate_and_healthz_over_tls() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let (cert, key) = (tmp.path().join("tls.crt"), tmp.path().join("tls.key"));
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();

        let webhook = Webhook::bind(
            "127.0.0.1:0".parse().unwrap(),
            Certificate::load(cert, key).unwrap(),
            settings(),
        )
        .await
        .unwrap();
        let port = webhook.local_addr().unwrap().port();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(webhook.serve(
            async {
                let _ = stop_rx.await;
            },
            Duration::from_secs(5),
        ));

        let mut roots = rustls::RootCertStore::empty();
        roots.add(ck.cert.der().clone()).unwrap();
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        let client: Client<_, Full<bytes::Bytes>> =
            Client::builder(TokioExecutor::new()).build(https);

        let health = client
            .get(format!("https://localhost:{port}/healthz").parse().unwrap())
            .await
            .unwrap();
        assert_eq!(health.status(), 200);

        let body = std::fs::read(dir().join("plain.review.json")).unwrap();
        let req = http::Request::post(format!("https://localhost:{port}/mutate"))
            .header("content-type", "application/json")
            .body(Full::new(bytes::Bytes::from(body)))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let out: Value =
            serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(out["response"]["allowed"], true);
        assert_eq!(out["response"]["patchType"], "JSONPatch");

        let bad = http::Request::post(format!("https://localhost:{port}/mutate"))
            .body(Full::new(bytes::Bytes::from_static(b"{}")))
            .unwrap();
        assert_eq!(client.request(bad).await.unwrap().status(), 400);

        let _ = stop_tx.send(());
        served.await.unwrap();
    }
}
