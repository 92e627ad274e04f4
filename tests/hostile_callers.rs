//! Callers that misbehave: malformed, mistyped, incomplete and deeply nested JSON, invalid
//! UTF-8, bodies over the limit, unknown models, paths and methods, oversized headers,
//! slowloris clients, clients that never read or vanish at every phase, HTTP/2 floods and
//! resets. Every case gets a clear error in the caller's API format (or, below HTTP, a closed
//! connection), and good traffic running beside it keeps succeeding.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use common::*;

const MAX_BODY: usize = 64 * 1024;

/// A gateway with the mock provider (for good traffic), a scripted upstream `p0` behind
/// `chat-default` and a 64 KiB body limit.
async fn setup(steps: impl IntoIterator<Item = Step>) -> (Arc<Gateway>, Upstream) {
    setup_with(steps, "").await
}

async fn setup_with(
    steps: impl IntoIterator<Item = Step>,
    extra: &str,
) -> (Arc<Gateway>, Upstream) {
    let up = Upstream::start(steps).await;
    let yaml = format!(
        "{}mock: true\nmax_body_bytes: {MAX_BODY}\n{extra}",
        yaml_route("openai_compatible", &[&up.url_with("v1")], "m")
    );
    (Arc::new(gateway(&yaml).await), up)
}

/// Good requests (JSON and streamed, both surfaces) in a loop beside the hostile ones.
struct GoodTraffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl GoodTraffic {
    fn start(gw: &Arc<Gateway>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let tasks = (0..3)
            .map(|i| {
                let (base, stop, ok) = (gw.base.clone(), stop.clone(), ok.clone());
                let client = good_client();
                tokio::spawn(async move {
                    let mut failures = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        if let Err(e) = good_request(&client, &base, i).await {
                            failures.push(e);
                        } else {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    failures
                })
            })
            .collect();
        Self { stop, ok, tasks }
    }

    /// Stops the loops and asserts every good request succeeded.
    async fn assert_all_ok(self) {
        // At least a few rounds ran while the hostile case was in progress.
        self.stop.store(true, Ordering::Relaxed);
        let mut failures = Vec::new();
        for t in self.tasks {
            failures.extend(t.await.expect("good traffic task"));
        }
        assert!(failures.is_empty(), "good requests failed: {failures:?}");
        assert!(self.ok.load(Ordering::Relaxed) > 0, "no good request ran");
    }
}

type GoodClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

/// A pooled client that drops connections idle for 300 ms: under the gateway's 1 s header
/// read timeout (which also ends idle keep-alive connections), so a good request never races
/// the server closing the connection it picked from the pool.
fn good_client() -> GoodClient {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_millis(300))
        .build_http()
}

async fn good_post(
    client: &GoodClient,
    base: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: Value,
) -> Result<Resp, String> {
    let mut req =
        http::Request::post(format!("{base}{path}")).header("content-type", "application/json");
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(HANG, client.request(req))
        .await
        .map_err(|_| format!("{path}: no answer in time"))?
        .map_err(|e| format!("{path}: {e:?}"))?;
    Ok(read_whole(resp).await)
}

async fn good_request(client: &GoodClient, base: &str, i: usize) -> Result<(), String> {
    match i % 3 {
        0 => {
            let r = good_post(
                client,
                base,
                "/v1/chat/completions",
                &[],
                json!({"model": "mock/echo", "messages": [{"role": "user", "content": "ping"}]}),
            )
            .await?;
            (r.status == StatusCode::OK && r.json()["choices"][0]["message"]["content"] == "ping")
                .then_some(())
                .ok_or_else(|| format!("echo: {} {}", r.status, r.text()))
        }
        1 => {
            let r = good_post(
                client,
                base,
                "/v1/chat/completions",
                &[],
                json!({"model": "mock/lorem", "stream": true, "max_tokens": 5,
                    "messages": [{"role": "user", "content": "go"}]}),
            )
            .await?;
            if r.status != StatusCode::OK {
                return Err(format!("lorem: {} {}", r.status, r.text()));
            }
            let words = openai_text(&openai_chunks(&r.text()));
            (words.split_whitespace().count() == 5)
                .then_some(())
                .ok_or_else(|| format!("lorem: {words:?}"))
        }
        _ => {
            let r = good_post(
                client,
                base,
                "/v1/messages",
                &[("anthropic-version", "2023-06-01")],
                json!({"model": "mock/echo", "max_tokens": 10,
                    "messages": [{"role": "user", "content": "pong"}]}),
            )
            .await?;
            (r.status == StatusCode::OK && r.json()["content"][0]["text"] == "pong")
                .then_some(())
                .ok_or_else(|| format!("messages: {} {}", r.status, r.text()))
        }
    }
}

/// An OpenAI-format error with this status; returns the error object.
fn openai_err(r: &Resp, status: StatusCode) -> Value {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert!(v["error"]["message"].is_string(), "{v}");
    assert!(v["error"]["type"].is_string(), "{v}");
    v["error"].clone()
}

/// An Anthropic-format error with this status; returns the error object.
fn anthropic_err(r: &Resp, status: StatusCode) -> Value {
    assert_eq!(r.status, status, "{}", r.text());
    let v = r.json();
    assert_eq!(v["type"], "error", "{v}");
    assert!(v["error"]["message"].is_string(), "{v}");
    v["error"].clone()
}

async fn post_raw(gw: &Gateway, path: &str, body: impl Into<Bytes>) -> Resp {
    gw.call(
        Method::POST,
        path,
        &[
            ("content-type", "application/json"),
            ("anthropic-version", "2023-06-01"),
        ],
        body,
    )
    .await
}

#[tokio::test]
async fn malformed_mistyped_and_incomplete_bodies_are_400s_in_the_callers_format() {
    let (gw, _up) = setup([]).await;
    let good = GoodTraffic::start(&gw);
    let msgs = r#"[{"role":"user","content":"hi"}]"#;
    let cases: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"{".to_vec(),
        b"null".to_vec(),
        b"[]".to_vec(),
        b"\"a string\"".to_vec(),
        br#"{"model": 5, "messages": []}"#.to_vec(),
        br#"{"model": "mock/echo", "messages": "hi"}"#.to_vec(),
        format!(r#"{{"model": "mock/echo", "messages": {msgs}, "max_tokens": -1}}"#).into_bytes(),
        format!(r#"{{"model": "mock/echo", "messages": {msgs}, "max_tokens": 1e99}}"#).into_bytes(),
        format!(r#"{{"model": "mock/echo", "messages": {msgs}, "temperature": "hot"}}"#)
            .into_bytes(),
        format!(r#"{{"model": "mock/echo", "messages": {msgs}, "stream": "yes"}}"#).into_bytes(),
        format!(r#"{{"messages": {msgs}}}"#).into_bytes(),
        br#"{"model": "mock/echo"}"#.to_vec(),
        br#"{"model": "mock/echo", "messages": [{"content": "no role"}]}"#.to_vec(),
        br#"{"model": "mock/echo", "messages": [{"role": "wizard", "content": "x"}]}"#.to_vec(),
        // Invalid UTF-8 inside a JSON string, and a lone surrogate escape.
        b"{\"model\": \"mock/echo\", \"messages\": [{\"role\": \"user\", \"content\": \"\xff\xfe\"}]}"
            .to_vec(),
        br#"{"model": "mock/echo", "messages": [{"role": "user", "content": "\ud800"}]}"#.to_vec(),
        // Trailing garbage after a valid document.
        format!(r#"{{"model": "mock/echo", "messages": {msgs}}} trailing"#).into_bytes(),
    ];
    for body in &cases {
        let shown = String::from_utf8_lossy(body).into_owned();
        let r = post_raw(&gw, "/v1/chat/completions", body.clone()).await;
        let e = openai_err(&r, StatusCode::BAD_REQUEST);
        assert_eq!(e["type"], "invalid_request_error", "{shown}: {e}");
        let r = post_raw(&gw, "/v1/messages", body.clone()).await;
        let e = anthropic_err(&r, StatusCode::BAD_REQUEST);
        assert_eq!(e["type"], "invalid_request_error", "{shown}: {e}");
        let r = post_raw(&gw, "/v1/embeddings", body.clone()).await;
        openai_err(&r, StatusCode::BAD_REQUEST);
    }
    good.assert_all_ok().await;
}

#[tokio::test]
async fn deeply_nested_json_is_a_400_not_a_stack_overflow() {
    let (gw, _up) = setup([]).await;
    let good = GoodTraffic::start(&gw);
    let deep = |open: &str, n: usize| open.repeat(n);
    // 60k levels fit under the 64 KiB limit; raise it for 100k below.
    for (open, n) in [("[", 60_000), ("{\"a\":", 10_000)] {
        let nest = deep(open, n);
        let msgs = r#"[{"role":"user","content":"hi"}]"#;
        let openai = [
            format!(r#"{{"model":"mock/echo","messages":{msgs},"tool_choice":{nest}"#),
            format!(r#"{{"model":"mock/echo","messages":{msgs},"response_format":{nest}"#),
            format!(
                r#"{{"model":"mock/echo","messages":{msgs},"tools":[{{"type":"function","function":{{"name":"f","parameters":{nest}"#
            ),
            format!(r#"{{"model":"mock/echo","messages":[{{"role":"user","content":{nest}"#),
            format!(r#"{{"model":"mock/echo","messages":{msgs},"x_unknown":{nest}"#),
            nest.clone(),
        ];
        for body in openai {
            let r = post_raw(&gw, "/v1/chat/completions", body).await;
            openai_err(&r, StatusCode::BAD_REQUEST);
        }
        let anthropic = [
            format!(r#"{{"model":"mock/echo","max_tokens":5,"messages":{msgs},"system":{nest}"#),
            format!(r#"{{"model":"mock/echo","max_tokens":5,"messages":{msgs},"metadata":{nest}"#),
            format!(
                r#"{{"model":"mock/echo","max_tokens":5,"messages":{msgs},"tools":[{{"name":"f","input_schema":{nest}"#
            ),
            format!(
                r#"{{"model":"mock/echo","max_tokens":5,"messages":[{{"role":"user","content":{nest}"#
            ),
        ];
        for body in anthropic {
            let r = post_raw(&gw, "/v1/messages", body).await;
            anthropic_err(&r, StatusCode::BAD_REQUEST);
        }
        let r = post_raw(
            &gw,
            "/v1/embeddings",
            format!(r#"{{"model":"m","input":{nest}"#),
        )
        .await;
        openai_err(&r, StatusCode::BAD_REQUEST);
    }
    good.assert_all_ok().await;
    // 100k `[` with a limit that admits them.
    let yaml = "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nmock: true\n";
    let gw = gateway(yaml).await;
    let r = post_raw(&gw, "/v1/chat/completions", "[".repeat(100_000)).await;
    openai_err(&r, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn unknown_fields_pass_through_to_an_openai_upstream() {
    let (gw, up) = setup([json(200, openai_completion("fine"))]).await;
    let r = gw
        .chat(
            &json!({"model": "chat-default", "messages": [{"role": "user", "content": "hi",
            "x_message_field": [1, 2]}], "x_future_option": {"nested": true}, "seed": 7}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let sent = up.only_call().json();
    assert_eq!(sent["x_future_option"], json!({"nested": true}));
    assert_eq!(sent["seed"], 7);
    assert_eq!(sent["messages"][0]["x_message_field"], json!([1, 2]));
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_in_the_callers_format() {
    let (gw, up) = setup([]).await;
    let good = GoodTraffic::start(&gw);
    let big = format!(
        r#"{{"model":"chat-default","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(MAX_BODY)
    );
    let r = post_raw(&gw, "/v1/chat/completions", big.clone()).await;
    assert_eq!(
        openai_err(&r, StatusCode::PAYLOAD_TOO_LARGE)["type"],
        "invalid_request_error"
    );
    let r = post_raw(&gw, "/v1/messages", big.clone()).await;
    anthropic_err(&r, StatusCode::PAYLOAD_TOO_LARGE);
    // Chunked, with no length announced: cut as the bytes arrive.
    let (tx, rx) = mpsc::channel::<Result<http_body::Frame<Bytes>, std::io::Error>>(4);
    let body = http_body_util::StreamBody::new(tokio_stream_of(rx));
    let req = http::Request::post(format!("{}/v1/chat/completions", gw.base))
        .header("content-type", "application/json")
        .body(body)
        .expect("request");
    let feeder = tokio::spawn(async move {
        for _ in 0..100 {
            if tx
                .send(Ok(http_body::Frame::data(Bytes::from(vec![b' '; 4096]))))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
    let resp = tokio::time::timeout(HANG, client.request(req))
        .await
        .expect("answered")
        .expect("response");
    let r = read_whole(resp).await;
    openai_err(&r, StatusCode::PAYLOAD_TOO_LARGE);
    feeder.abort();
    assert_eq!(up.count(), 0, "nothing over the limit reaches an upstream");
    good.assert_all_ok().await;
}

/// A stream of frames from a channel (what `StreamBody` wants).
fn tokio_stream_of(
    mut rx: mpsc::Receiver<Result<http_body::Frame<Bytes>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<http_body::Frame<Bytes>, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn unknown_models_paths_and_methods() {
    let (gw, _up) = setup([]).await;
    let r = gw
        .chat(&json!({"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}))
        .await;
    openai_err(&r, StatusCode::NOT_FOUND);
    let r = gw
        .post(
            "/v1/messages",
            &[("anthropic-version", "2023-06-01")],
            &json!({"model": "no-such-model", "max_tokens": 5,
                "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    anthropic_err(&r, StatusCode::NOT_FOUND);
    for path in [
        "/v1/nothing",
        "/v2/chat/completions",
        "/v1/chat/completions/x",
        "/%00",
        "/..",
    ] {
        let r = gw.call(Method::POST, path, &[], Bytes::new()).await;
        openai_err(&r, StatusCode::NOT_FOUND);
    }
    let r = gw
        .call(Method::POST, "/v1/messages/nothing", &[], Bytes::new())
        .await;
    anthropic_err(&r, StatusCode::NOT_FOUND);
    for m in [Method::GET, Method::PUT, Method::DELETE, Method::PATCH] {
        let r = gw
            .call(m.clone(), "/v1/chat/completions", &[], Bytes::new())
            .await;
        openai_err(&r, StatusCode::METHOD_NOT_ALLOWED);
        let r = gw.call(m, "/v1/messages", &[], Bytes::new()).await;
        anthropic_err(&r, StatusCode::METHOD_NOT_ALLOWED);
    }
    let r = gw.call(Method::POST, "/v1/models", &[], Bytes::new()).await;
    openai_err(&r, StatusCode::METHOD_NOT_ALLOWED);
}

/// Reads whatever the server sends until it closes the connection (bounded by [`HANG`]).
async fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(HANG, s.read_to_end(&mut out))
        .await
        .expect("server closed the connection in time");
    out
}

#[tokio::test]
async fn oversized_headers_are_refused_below_http() {
    let (gw, _up) = setup([]).await;
    let good = GoodTraffic::start(&gw);
    for size in [64 * 1024, 1024 * 1024] {
        let mut s = TcpStream::connect(gw.running.data_addr)
            .await
            .expect("connect");
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nconnection: close\r\nx-big: {}\r\ncontent-length: 0\r\n\r\n",
            "a".repeat(size)
        );
        // The server may close before all of it is written.
        let _ = s.write_all(head.as_bytes()).await;
        let reply = String::from_utf8_lossy(&read_until_closed(&mut s).await).into_owned();
        if size > 512 * 1024 {
            assert!(
                reply.is_empty() || reply.starts_with("HTTP/1.1 431"),
                "{size}: {reply}"
            );
        } else {
            // Under hyper's buffer limit: parsed, and answered in the caller's format.
            assert!(
                reply.starts_with("HTTP/1.1 400") || reply.starts_with("HTTP/1.1 431"),
                "{reply}"
            );
        }
    }
    good.assert_all_ok().await;
}

#[tokio::test]
async fn slowloris_clients_are_cut_by_the_read_timeouts() {
    let timeouts = "header_read_timeout_secs: 1\nbody_read_timeout_secs: 1\n";
    let (gw, _up) = setup_with([], timeouts).await;
    let good = GoodTraffic::start(&gw);
    let addr = gw.running.data_addr;
    // Connects and says nothing.
    let silent = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let t = Instant::now();
        read_until_closed(&mut s).await;
        t.elapsed()
    });
    // Sends its headers a byte every 100 ms, forever.
    let dribble = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let t = Instant::now();
        let head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-slow: ".to_vec();
        let mut closed = false;
        for b in head.iter().chain(std::iter::repeat(&b'a')).take(200) {
            if s.write_all(&[*b]).await.is_err() {
                closed = true;
                break;
            }
            let mut buf = [0u8; 256];
            match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    closed = true;
                    break;
                }
                Ok(Ok(_)) => {
                    closed = true; // an error answer: then the close follows
                    break;
                }
                Err(_) => {}
            }
        }
        (closed, t.elapsed())
    });
    // Sends its headers, then a tenth of the body it announced.
    let slow_body = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let t = Instant::now();
        s.write_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"model\":",
        )
        .await
        .expect("write");
        let reply = read_until_closed(&mut s).await;
        (String::from_utf8_lossy(&reply).into_owned(), t.elapsed())
    });
    let silent = silent.await.expect("silent");
    assert!(
        silent < Duration::from_secs(5),
        "a silent client held for {silent:?}"
    );
    let (closed, took) = dribble.await.expect("dribble");
    assert!(
        closed && took < Duration::from_secs(10),
        "a dribbling client held for {took:?}"
    );
    let (reply, took) = slow_body.await.expect("slow body");
    assert!(
        took < Duration::from_secs(5),
        "a slow body held for {took:?}"
    );
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    let body = reply.split("\r\n\r\n").nth(1).unwrap_or_default();
    let v: Value = serde_json::from_str(body.trim()).unwrap_or_else(|_| panic!("{reply}"));
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("not received"),
        "{v}"
    );
    good.assert_all_ok().await;
}

#[tokio::test]
async fn a_client_that_never_reads_its_stream_is_bounded_and_cancels_the_upstream() {
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    let (dropped_tx, dropped_rx) = oneshot::channel();
    let (gw, _up) = setup([Step::Channel {
        rx,
        dropped: Some(dropped_tx),
    }])
    .await;
    let good = GoodTraffic::start(&gw);
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let feeder = tokio::spawn(async move {
        let first = openai_delta(json!({"role": "assistant", "content": ""}), None);
        if tx.send(Bytes::from(first)).await.is_err() {
            return;
        }
        let chunk = Bytes::from(openai_delta(
            json!({"content": "z".repeat(16 * 1024)}),
            None,
        ));
        while tx.send(chunk.clone()).await.is_ok() {
            counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
    });
    let mut s = TcpStream::connect(gw.running.data_addr)
        .await
        .expect("connect");
    let body = json!({"model": "chat-default", "stream": true,
        "messages": [{"role": "user", "content": "go"}]})
    .to_string();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("write");
    // Never read. The upstream is read only as fast as the caller drains: once the socket
    // buffers are full, the bytes pulled from the upstream stop growing.
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = sent.load(Ordering::Relaxed);
        if now == last && now > 0 {
            break;
        }
        last = now;
        assert!(
            now < 64 * 1024 * 1024,
            "{now} bytes buffered for a caller that never reads"
        );
    }
    assert!(last < 64 * 1024 * 1024, "{last} bytes buffered");
    drop(s);
    tokio::time::timeout(HANG, dropped_rx)
        .await
        .expect("the upstream is cancelled when the caller goes away")
        .expect("dropped");
    feeder.abort();
    good.assert_all_ok().await;
}

#[tokio::test]
async fn a_client_that_disconnects_at_every_phase() {
    // Phase: mid-headers, mid-body, waiting for the first byte, mid-stream.
    let (wait_tx, wait_rx) = mpsc::channel::<Bytes>(1);
    let (wait_dropped_tx, wait_dropped_rx) = oneshot::channel();
    let (mid_tx, mid_rx) = mpsc::channel::<Bytes>(1);
    let (mid_dropped_tx, mid_dropped_rx) = oneshot::channel();
    let (gw, up) = setup([
        Step::Channel {
            rx: wait_rx,
            dropped: Some(wait_dropped_tx),
        },
        Step::Channel {
            rx: mid_rx,
            dropped: Some(mid_dropped_tx),
        },
    ])
    .await;
    let good = GoodTraffic::start(&gw);
    let addr = gw.running.data_addr;
    let body = json!({"model": "chat-default", "stream": true,
        "messages": [{"role": "user", "content": "go"}]})
    .to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    // Cut after every prefix of the headers and body (every 7th byte keeps it quick).
    for cut in (0..request.len()).step_by(7) {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(&request.as_bytes()[..cut])
            .await
            .expect("write");
        drop(s);
    }
    assert_eq!(up.count(), 0, "no incomplete request reached the upstream");
    // Waiting for the first byte.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    up.wait_calls(1).await;
    drop(s);
    tokio::time::timeout(HANG, wait_dropped_rx)
        .await
        .expect("upstream cancelled while waiting for its first byte")
        .expect("dropped");
    drop(wait_tx);
    // Mid-stream.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    mid_tx
        .send(Bytes::from(openai_delta(
            json!({"role": "assistant", "content": "a"}),
            None,
        )))
        .await
        .expect("send");
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(HANG, s.read(&mut buf))
        .await
        .expect("read")
        .expect("read");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    drop(s);
    tokio::time::timeout(HANG, mid_dropped_rx)
        .await
        .expect("upstream cancelled mid-stream")
        .expect("dropped");
    drop(mid_tx);
    good.assert_all_ok().await;
}

type H2Sender = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

async fn h2c(addr: std::net::SocketAddr) -> H2Sender {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2c handshake");
    tokio::spawn(conn);
    send
}

fn h2_request(body: &Value) -> http::Request<Full<Bytes>> {
    http::Request::post("http://localhost/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request")
}

#[tokio::test]
async fn http2_stream_floods_and_resets() {
    let (gw, _up) = setup([]).await;
    let good = GoodTraffic::start(&gw);
    let addr = gw.running.data_addr;
    // A flood: 1000 concurrent streams on one connection, more than the server's limit.
    let send = h2c(addr).await;
    let ask = json!({"model": "mock/echo", "messages": [{"role": "user", "content": "h2"}]});
    let flood = (0..1000).map(|_| {
        let mut send = send.clone();
        let req = h2_request(&ask);
        async move {
            let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, String>((status, body))
        }
    });
    let results = futures_util::future::join_all(flood).await;
    let ok = results
        .iter()
        .filter(|r| matches!(r, Ok((s, _)) if *s == StatusCode::OK))
        .count();
    assert_eq!(
        ok,
        1000,
        "every flooded stream answered: {:?}",
        results.iter().find(|r| r.is_err())
    );
    // Resets: 300 streams opened and cancelled (RST_STREAM) at once, then 300 after their
    // headers arrived, mid-stream. (The mock builds a whole reply up front: keep them small
    // enough not to turn this into a CPU test on a 2-core machine.)
    let send = h2c(addr).await;
    let long = json!({"model": "mock/lorem", "stream": true, "max_tokens": 2000,
        "messages": [{"role": "user", "content": "go"}]});
    for _ in 0..300 {
        let mut send = send.clone();
        let fut = send.send_request(h2_request(&long));
        drop(fut);
    }
    let mid = (0..300).map(|_| {
        let mut send = send.clone();
        let req = h2_request(&long);
        async move {
            if let Ok(resp) = send.send_request(req).await {
                let mut body = resp.into_body();
                let _ = body.frame().await;
            }
        }
    });
    futures_util::future::join_all(mid).await;
    // The connection that sent the resets (if the server kept it) and a fresh one still work.
    let mut fresh = h2c(addr).await;
    let resp = tokio::time::timeout(HANG, fresh.send_request(h2_request(&ask)))
        .await
        .expect("in time")
        .expect("fresh h2 connection answers");
    assert_eq!(resp.status(), StatusCode::OK);
    good.assert_all_ok().await;
}
