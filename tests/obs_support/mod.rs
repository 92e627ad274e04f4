//! Helpers shared by the observability tests: a failing upstream that records what it was
//! sent, a small HTTP client, and the promtool lookup.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// Request headers an upstream stub received, in order.
pub type Seen = Arc<Mutex<Vec<http::HeaderMap>>>;

/// An OpenAI-format upstream that answers every request with a 503 (retryable, so the next
/// target of a route is tried) and records the request headers.
pub async fn failing_upstream() -> (SocketAddr, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let s = s.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    s.lock().unwrap().push(req.headers().clone());
                    async move {
                        let _ = req.into_body().collect().await;
                        let mut resp = http::Response::new(Full::new(Bytes::from_static(
                            br#"{"error":{"message":"overloaded","type":"server_error"}}"#,
                        )));
                        *resp.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// A config with a route `chat` whose first target (`flaky`, at `upstream`) fails, and the
/// built-in mock behind it.
pub fn fallback_config(upstream: SocketAddr) -> String {
    format!(
        r#"
listen: 127.0.0.1:0
admin: 127.0.0.1:0
mock: true
providers:
  - name: flaky
    kind: openai_compatible
    base_url: http://{upstream}/v1
    models: ["echo"]
models:
  - name: chat
    targets: [flaky/echo, mock/echo]
"#
    )
}

/// Sends a request; returns status, headers and body text.
pub async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, String) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

/// POSTs a chat request for `model`.
pub async fn chat(addr: SocketAddr, model: &str, stream: bool) -> (u16, String) {
    let body = format!(
        r#"{{"model":"{model}","stream":{stream},"messages":[{{"role":"user","content":"hello there"}}]}}"#
    );
    let (status, _, text) = send(addr, "POST", "/v1/chat/completions", &body, &[]).await;
    (status, text)
}

/// Prometheus' `promtool`: `None` (the test skips) when it is not installed, except under CI,
/// where a missing tool is a failure. `tests/obs/install.sh` installs it.
pub fn promtool() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("promtool"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is required under CI: run tests/obs/install.sh"
        );
        eprintln!("promtool not installed (tests/obs/install.sh): skipping its checks");
    }
    found
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
