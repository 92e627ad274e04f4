//! A scriptable OpenAI-format upstream on loopback for the lifecycle tests: records each
//! call's `authorization` header; a streamed reply sends its first chunk at once and the rest
//! only when the test opens the gate, so a test holds a stream open for as long as it needs
//! without sleeping.

#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The words a streamed reply carries, one chunk each; the first before the gate.
pub const WORDS: &[&str] = &["alpha", "bravo", "charlie", "delta"];

/// A running upstream.
pub struct Upstream {
    pub addr: SocketAddr,
    pub auth: Arc<Mutex<Vec<String>>>,
    gate: watch::Sender<bool>,
}

impl Upstream {
    /// The base URL for a provider config.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Lets held streams finish.
    pub fn open_gate(&self) {
        let _ = self.gate.send(true);
    }

    /// The `authorization` headers received so far.
    pub fn auth_seen(&self) -> Vec<String> {
        self.auth.lock().unwrap().clone()
    }
}

fn chunk(delta: serde_json::Value, finish: Option<&str>) -> Bytes {
    let v = serde_json::json!({
        "id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 0, "model": "gpt-up",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    });
    Bytes::from(format!("data: {v}\n\n"))
}

/// Starts the upstream on an ephemeral loopback port.
pub async fn start() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let auth = Arc::new(Mutex::new(Vec::new()));
    let (gate, gate_rx) = watch::channel(false);
    let seen = auth.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            let gate_rx = gate_rx.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: http::Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        let mut gate_rx = gate_rx.clone();
                        async move {
                            if let Some(a) = req.headers().get("authorization") {
                                seen.lock()
                                    .unwrap()
                                    .push(a.to_str().unwrap_or("").to_owned());
                            }
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let json: serde_json::Value =
                                serde_json::from_slice(&body).unwrap_or_default();
                            let resp = if json["stream"] == true {
                                let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
                                tokio::spawn(async move {
                                    let _ = tx
                                    .send(chunk(serde_json::json!({"role": "assistant", "content": WORDS[0]}), None))
                                    .await;
                                    let _ = gate_rx.wait_for(|open| *open).await;
                                    for w in &WORDS[1..] {
                                        let _ = tx
                                            .send(chunk(
                                                serde_json::json!({"content": format!(" {w}")}),
                                                None,
                                            ))
                                            .await;
                                    }
                                    let _ =
                                        tx.send(chunk(serde_json::json!({}), Some("stop"))).await;
                                    let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
                                });
                                let stream =
                                    futures_util::stream::unfold(rx, |mut rx| async move {
                                        rx.recv()
                                            .await
                                            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
                                    });
                                http::Response::builder()
                                    .header("content-type", "text/event-stream")
                                    .body(StreamBody::new(stream).boxed_unsync())
                                    .unwrap()
                            } else {
                                let v = serde_json::json!({
                                    "id": "chatcmpl-up", "object": "chat.completion", "created": 0,
                                    "model": "gpt-up",
                                    "choices": [{"index": 0, "finish_reason": "stop",
                                        "message": {"role": "assistant", "content": "hello from upstream"}}],
                                    "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
                                });
                                http::Response::builder()
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(v.to_string())).boxed_unsync())
                                    .unwrap()
                            };
                            Ok::<_, Infallible>(resp)
                        }
                    },
                );
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Upstream { addr, auth, gate }
}

/// A GET on loopback: (status, body), or `None` when the connection is refused.
pub async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .ok()?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", addr.to_string())
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.ok()?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A POST of JSON on loopback, the response returned with its body unread.
pub async fn post(
    addr: SocketAddr,
    path: &str,
    body: serde_json::Value,
) -> http::Response<hyper::body::Incoming> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    send.send_request(req).await.unwrap()
}

/// Polls `check` until it returns `Some`, for at most ten seconds (a hang guard, not a
/// timing assertion).
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..1000 {
        if let Some(v) = check().await {
            return v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}
