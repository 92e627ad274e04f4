//! The end-to-end harness: switchyard started in-process on loopback, scripted mock upstreams
//! that speak the providers' documented wire formats (written by hand here, never produced by
//! switchyard's own encoders), and a small HTTP client.
//!
//! A mock upstream records every request it receives (method, path with query, headers, body)
//! and answers each call with the next [`Step`] of its script: a JSON reply, an SSE body sent
//! in several writes, a channel-fed stream, a connection reset, or a stall.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as LegacyClient;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Notify};

use switchyard::config;
use switchyard::server::{self, Running};

/// A guard against a hang: every wait in these tests is on a channel or a body, bounded by
/// this so a bug fails the test instead of stalling the suite. Not a timing assertion.
pub const HANG: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Switchyard
// ---------------------------------------------------------------------------------------------

/// A switchyard running in-process, and a client pointed at it.
pub struct Gateway {
    /// The running server.
    pub running: Running,
    /// `http://127.0.0.1:PORT` of the data plane.
    pub base: String,
    client: Client,
}

/// Starts switchyard from YAML config text.
pub async fn gateway(yaml: &str) -> Gateway {
    let cfg = config::load_str(yaml, &config::Env).expect("config loads");
    let running = server::start(&cfg).await.expect("switchyard starts");
    let base = format!("http://{}", running.data_addr);
    Gateway {
        running,
        base,
        client: client(),
    }
}

/// Config for providers of one kind, one per upstream (`p0`, `p1`, ...), and a route
/// `chat-default` over `pN/<model>` in order.
pub fn yaml_route(kind: &str, upstreams: &[&str], model: &str) -> String {
    let mut y = String::from("listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nproviders:\n");
    for (i, base) in upstreams.iter().enumerate() {
        y.push_str(&format!(
            "  - name: p{i}\n    kind: {kind}\n    base_url: {base}\n    api_key: sk-test-p{i}\n"
        ));
    }
    y.push_str("models:\n  - name: chat-default\n    targets: [");
    let targets: Vec<String> = (0..upstreams.len())
        .map(|i| format!("p{i}/{model}"))
        .collect();
    y.push_str(&targets.join(", "));
    y.push_str("]\n");
    y
}

/// The primary/backup config of the brief: two OpenAI-compatible upstreams behind
/// `chat-default`.
pub fn yaml_primary_backup(primary: &str, backup: &str) -> String {
    format!(
        "listen: 127.0.0.1:0
admin: 127.0.0.1:0
providers:
  - name: primary
    kind: openai_compatible
    base_url: {primary}
    api_key: sk-test-primary
  - name: backup
    kind: openai_compatible
    base_url: {backup}
    api_key: sk-test-backup
models:
  - name: chat-default
    targets: [primary/gpt-4o-mini, backup/gpt-4o-mini]
"
    )
}

/// A response read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    /// The body as JSON (panics with the body text when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Gateway {
    /// Sends a request and returns the response head with its body unread.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> http::Response<Incoming> {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body.into())).expect("request builds");
        tokio::time::timeout(HANG, self.client.request(req))
            .await
            .expect("switchyard answered in time")
            .expect("switchyard answered")
    }

    /// Sends a request and reads the whole response.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Resp {
        let resp = self.send(method, path, headers, body).await;
        read_whole(resp).await
    }

    /// `POST` a JSON value with `content-type: application/json` (plus `headers`).
    pub async fn post(&self, path: &str, headers: &[(&str, &str)], body: &Value) -> Resp {
        let mut h = vec![("content-type", "application/json")];
        h.extend_from_slice(headers);
        self.call(Method::POST, path, &h, body.to_string()).await
    }

    /// `POST /v1/chat/completions` with a caller key.
    pub async fn chat(&self, body: &Value) -> Resp {
        self.post(
            "/v1/chat/completions",
            &[("authorization", "Bearer sk-caller-secret")],
            body,
        )
        .await
    }

    /// `GET` a path.
    pub async fn get(&self, path: &str) -> Resp {
        self.call(Method::GET, path, &[], Bytes::new()).await
    }
}

/// Reads a whole response body (bounded by [`HANG`]).
pub async fn read_whole(resp: http::Response<Incoming>) -> Resp {
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(HANG, body.collect())
        .await
        .expect("response body ended in time")
        .expect("response body readable")
        .to_bytes();
    Resp {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

type Client = LegacyClient<HttpConnector, Full<Bytes>>;

fn client() -> Client {
    LegacyClient::builder(TokioExecutor::new()).build_http()
}

// ---------------------------------------------------------------------------------------------
// SSE as the caller sees it
// ---------------------------------------------------------------------------------------------

/// One SSE event: its `event:` name (if any) and its `data:` text.
#[derive(Debug, Clone, PartialEq)]
pub struct Sse {
    pub event: Option<String>,
    pub data: String,
}

impl Sse {
    /// The data as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {}", self.data))
    }
}

/// Splits a whole SSE body into events, asserting the framing: every event is `event:` (at most
/// one) and `data:` lines ending in a blank line, the body ends with `\n\n`, nothing else.
pub fn sse_events(body: &str) -> Vec<Sse> {
    assert!(
        body.ends_with("\n\n"),
        "SSE body must end with a blank line: {body:?}"
    );
    body.strip_suffix("\n\n")
        .unwrap_or(body)
        .split("\n\n")
        .map(|block| {
            let mut event = None;
            let mut data: Vec<&str> = Vec::new();
            for line in block.split('\n') {
                if let Some(e) = line.strip_prefix("event: ") {
                    assert!(event.is_none(), "two event lines in {block:?}");
                    event = Some(e.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push(d);
                } else {
                    panic!("unexpected SSE line {line:?} in {body:?}");
                }
            }
            assert!(!data.is_empty(), "event without data: {block:?}");
            Sse {
                event,
                data: data.join("\n"),
            }
        })
        .collect()
}

/// An OpenAI-surface stream: every event is exactly `data: {json}\n\n`, the last is
/// `data: [DONE]\n\n`. Returns the JSON chunks before `[DONE]`.
pub fn openai_chunks(body: &str) -> Vec<Value> {
    let events = sse_events(body);
    for ev in &events {
        assert_eq!(ev.event, None, "OpenAI streams carry no event names");
        assert!(!ev.data.contains('\n'), "one data line per event");
    }
    let (last, rest) = events.split_last().expect("at least one event");
    assert_eq!(last.data, "[DONE]", "stream ends with [DONE]: {body}");
    rest.iter().map(Sse::json).collect()
}

/// The concatenated `delta.content` of an OpenAI-surface stream's chunks.
pub fn openai_text(chunks: &[Value]) -> String {
    chunks
        .iter()
        .flat_map(|c| c["choices"].as_array().cloned().unwrap_or_default())
        .filter_map(|ch| ch["delta"]["content"].as_str().map(str::to_owned))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Mock upstreams
// ---------------------------------------------------------------------------------------------

/// What one upstream call is answered with.
pub enum Step {
    /// A complete reply.
    Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: Bytes,
    },
    /// A 200 SSE reply written in the given pieces, one write each; `then_abort` breaks the
    /// connection after the last piece instead of ending the body properly.
    Sse {
        pieces: Vec<Bytes>,
        then_abort: bool,
    },
    /// A 200 SSE reply whose pieces the test feeds through a channel; the body ends when the
    /// sender is dropped. `dropped` fires when the upstream's body is dropped (the connection
    /// was closed under it).
    Channel {
        rx: mpsc::Receiver<Bytes>,
        dropped: Option<oneshot::Sender<()>>,
    },
    /// The request is read, then the connection is reset (RST) without a response.
    Reset,
    /// The request is read, then nothing is ever sent.
    Stall,
}

/// A JSON reply.
pub fn json(status: u16, body: Value) -> Step {
    json_with(status, &[], body)
}

/// A JSON reply with extra headers.
pub fn json_with(status: u16, headers: &[(&str, &str)], body: Value) -> Step {
    let mut h = vec![("content-type".to_owned(), "application/json".to_owned())];
    h.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Step::Reply {
        status,
        headers: h,
        body: Bytes::from(body.to_string()),
    }
}

/// An SSE reply in these pieces.
pub fn sse<I, S>(pieces: I) -> Step
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    Step::Sse {
        pieces: pieces.into_iter().map(|s| Bytes::from(s.into())).collect(),
        then_abort: false,
    }
}

/// An SSE body as one string cut into pieces at the given byte offsets (so events and even
/// lines are split across writes).
pub fn split_at(body: &str, cuts: &[usize]) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = 0;
    for &c in cuts {
        out.push(body[start..c].to_owned());
        start = c;
    }
    out.push(body[start..].to_owned());
    out
}

/// What a mock upstream received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    /// Path and query.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "upstream body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Default)]
struct UpstreamState {
    script: Mutex<VecDeque<Step>>,
    calls: Mutex<Vec<Recorded>>,
    /// Signalled on every recorded call.
    called: Notify,
}

/// A scripted upstream on loopback.
pub struct Upstream {
    pub addr: SocketAddr,
    state: Arc<UpstreamState>,
}

impl Upstream {
    /// Starts an upstream answering calls with `steps` in order (an unscripted call gets a 500).
    pub async fn start(steps: impl IntoIterator<Item = Step>) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
        let addr = listener.local_addr().expect("mock addr");
        let state = Arc::new(UpstreamState::default());
        state.script.lock().expect("script").extend(steps);
        let s = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = s.clone();
                tokio::spawn(serve_conn(Arc::new(stream), state));
            }
        });
        Upstream { addr, state }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/<suffix>` (e.g. `v1`, `v1beta`).
    pub fn url_with(&self, suffix: &str) -> String {
        format!("http://{}/{suffix}", self.addr)
    }

    /// Adds steps to the script.
    pub fn push(&self, step: Step) {
        self.state.script.lock().expect("script").push_back(step);
    }

    /// Every request received so far.
    pub fn calls(&self) -> Vec<Recorded> {
        self.state.calls.lock().expect("calls").clone()
    }

    /// How many requests were received.
    pub fn count(&self) -> usize {
        self.state.calls.lock().expect("calls").len()
    }

    /// The only request received (panics unless exactly one).
    pub fn only_call(&self) -> Recorded {
        let calls = self.calls();
        assert_eq!(calls.len(), 1, "expected exactly one upstream call");
        calls.into_iter().next().expect("one call")
    }

    /// Waits until at least `n` requests were received.
    pub async fn wait_calls(&self, n: usize) {
        tokio::time::timeout(HANG, async {
            loop {
                let notified = self.state.called.notified();
                if self.count() >= n {
                    return;
                }
                notified.await;
            }
        })
        .await
        .expect("upstream called in time");
    }
}

/// A loopback port with nothing listening on it.
pub async fn closed_port_url(suffix: &str) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    format!("http://{addr}/{suffix}")
}

type MockBody = BoxBody<Bytes, io::Error>;

async fn serve_conn(stream: Arc<TcpStream>, state: Arc<UpstreamState>) {
    let io = TokioIo::new(SharedIo(stream.clone()));
    let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
        let state = state.clone();
        let stream = stream.clone();
        async move { answer(req, state, stream).await }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, svc)
        .await;
}

async fn answer(
    req: http::Request<Incoming>,
    state: Arc<UpstreamState>,
    stream: Arc<TcpStream>,
) -> Result<http::Response<MockBody>, io::Error> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let step = state.script.lock().expect("script").pop_front();
    state.calls.lock().expect("calls").push(Recorded {
        method: parts.method,
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default(),
        headers: parts.headers,
        body,
    });
    state.called.notify_waiters();
    let step = step.unwrap_or_else(|| {
        json(
            500,
            serde_json::json!({"error": {"message": "mock upstream: unscripted call",
                "type": "server_error", "param": null, "code": null}}),
        )
    });
    match step {
        Step::Reply {
            status,
            headers,
            body,
        } => {
            let mut resp = http::Response::new(
                Full::new(body)
                    .map_err(|never: Infallible| match never {})
                    .boxed(),
            );
            *resp.status_mut() = StatusCode::from_u16(status).expect("status");
            for (k, v) in headers {
                resp.headers_mut().append(
                    http::HeaderName::from_bytes(k.as_bytes()).expect("header name"),
                    v.parse().expect("header value"),
                );
            }
            Ok(resp)
        }
        Step::Sse { pieces, then_abort } => {
            // Fed through a channel one piece at a time, so each piece is its own write.
            let (tx, rx) = mpsc::channel::<Result<Bytes, io::Error>>(1);
            tokio::spawn(async move {
                for p in pieces {
                    if tx.send(Ok(p)).await.is_err() {
                        return;
                    }
                    tokio::task::yield_now().await;
                }
                if then_abort {
                    let _ = tx
                        .send(Err(io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            "mock upstream dies mid-stream",
                        )))
                        .await;
                }
            });
            Ok(sse_response(ChannelBody { rx, dropped: None }))
        }
        Step::Channel { mut rx, dropped } => {
            let (tx, body_rx) = mpsc::channel::<Result<Bytes, io::Error>>(1);
            tokio::spawn(async move {
                while let Some(b) = rx.recv().await {
                    if tx.send(Ok(b)).await.is_err() {
                        return;
                    }
                }
            });
            Ok(sse_response(ChannelBody {
                rx: body_rx,
                dropped,
            }))
        }
        Step::Reset => {
            // SO_LINGER 0, then hyper drops the connection on the error: the peer sees RST.
            let _ = stream.set_zero_linger();
            Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "mock upstream resets",
            ))
        }
        Step::Stall => std::future::pending().await,
    }
}

fn sse_response(body: ChannelBody) -> http::Response<MockBody> {
    let mut resp = http::Response::new(body.boxed());
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    resp
}

/// A body fed by a channel; reports its own drop.
struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, io::Error>>,
    dropped: Option<oneshot::Sender<()>>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match ready!(self.rx.poll_recv(cx)) {
            Some(Ok(b)) => Poll::Ready(Some(Ok(Frame::data(b)))),
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
            None => Poll::Ready(None),
        }
    }
}

impl Drop for ChannelBody {
    fn drop(&mut self) {
        if let Some(d) = self.dropped.take() {
            let _ = d.send(());
        }
    }
}

/// A `TcpStream` shared with the request handler, so a handler can reset the connection.
struct SharedIo(Arc<TcpStream>);

impl AsyncRead for SharedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SharedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

// ---------------------------------------------------------------------------------------------
// OpenAI wire fixtures, written as the API documents them
// ---------------------------------------------------------------------------------------------

/// A `chat.completion` as OpenAI returns it, with documented fields switchyard does not model
/// (`service_tier`, `system_fingerprint`, `annotations`, detailed usage).
pub fn openai_completion(text: &str) -> Value {
    serde_json::json!({
        "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
        "object": "chat.completion",
        "created": 1741569952,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": null, "annotations": []},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29,
            "prompt_tokens_details": {"cached_tokens": 8, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
        },
        "service_tier": "default",
        "system_fingerprint": "fp_06737a9306"
    })
}

/// An OpenAI error body.
pub fn openai_error(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Value {
    serde_json::json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
}

/// One `chat.completion.chunk` SSE event (`data: {...}\n\n`) with these choices and usage.
pub fn openai_chunk(choices: Value, usage: Value) -> String {
    let c = serde_json::json!({
        "id": "chatcmpl-stream1",
        "object": "chat.completion.chunk",
        "created": 1741569952,
        "model": "gpt-4o-mini-2024-07-18",
        "service_tier": "default",
        "system_fingerprint": "fp_06737a9306",
        "choices": choices,
        "usage": usage,
    });
    format!("data: {c}\n\n")
}

/// A chunk with one choice-0 delta.
pub fn openai_delta(delta: Value, finish: Option<&str>) -> String {
    openai_chunk(
        serde_json::json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]),
        Value::Null,
    )
}

/// A whole OpenAI text stream with `include_usage`: role chunk, one chunk per word, finish,
/// usage chunk, `[DONE]`.
pub fn openai_text_stream(words: &[&str]) -> String {
    let mut s = openai_delta(
        serde_json::json!({"role": "assistant", "content": "", "refusal": null}),
        None,
    );
    for w in words {
        s.push_str(&openai_delta(serde_json::json!({"content": w}), None));
    }
    s.push_str(&openai_delta(serde_json::json!({}), Some("stop")));
    s.push_str(&openai_chunk(
        serde_json::json!([]),
        serde_json::json!({"prompt_tokens": 12, "completion_tokens": words.len(), "total_tokens": 12 + words.len(),
            "prompt_tokens_details": {"cached_tokens": 4, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}),
    ));
    s.push_str("data: [DONE]\n\n");
    s
}
