//! Upstreams that misbehave: invalid JSON, truncated and split SSE, never-ending and stalled
//! streams, gzip nobody asked for, a 200 carrying an error, the wrong content type, a reply over
//! the size cap, a TLS handshake that never happens, a certificate that does not match, an
//! absurd `Retry-After`. Each is a classified failure: a retryable one moves to the backup
//! (asserted by which upstream answered), a final one reaches the caller as an error in its
//! format — never garbage, never a hang, never a panic.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use common::*;

fn ask(stream: bool) -> Value {
    json!({"model": "chat-default", "stream": stream,
        "messages": [{"role": "user", "content": "Hello"}]})
}

/// Primary answers `step`; the backup answers properly. The primary's failure must be
/// classified retryable: the caller gets the backup's reply after two attempts.
async fn falls_back(step: Step, stream: bool, yaml_extra: &str) {
    let p = Upstream::start([step]).await;
    let backup = if stream {
        sse([openai_text_stream(&["from", " backup"])])
    } else {
        json(200, openai_completion("from backup"))
    };
    let b = Upstream::start([backup]).await;
    let yaml = yaml_primary_backup(&p.url_with("v1"), &b.url_with("v1")).replace(
        "    api_key: sk-test-primary\n",
        &format!("    api_key: sk-test-primary\n{yaml_extra}"),
    );
    let gw = gateway(&yaml).await;
    let resp = gw.chat(&ask(stream)).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(resp.header("x-switchyard-provider"), Some("backup"));
    assert_eq!(resp.header("x-switchyard-attempts"), Some("2"));
    if stream {
        assert_eq!(openai_text(&openai_chunks(&resp.text())), "from backup");
    } else {
        assert_eq!(
            resp.json()["choices"][0]["message"]["content"],
            "from backup"
        );
    }
    assert_eq!((p.count(), b.count()), (1, 1));
}

/// The only upstream answers `step`: the caller gets an OpenAI error with this status.
async fn fails_with(step: Step, stream: bool, yaml_extra: &str, status: StatusCode) -> Value {
    let p = Upstream::start([step]).await;
    let yaml = yaml_route("openai_compatible", &[&p.url_with("v1")], "m").replace(
        "    api_key: sk-test-p0\n",
        &format!("    api_key: sk-test-p0\n{yaml_extra}"),
    );
    let gw = gateway(&yaml).await;
    let resp = gw.chat(&ask(stream)).await;
    assert_eq!(resp.status, status, "{}", resp.text());
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let err = resp.json();
    assert!(err["error"]["message"].is_string(), "{err}");
    err
}

fn reply(status: u16, content_type: &str, body: impl Into<Bytes>) -> Step {
    Step::Reply {
        status,
        headers: vec![("content-type".into(), content_type.into())],
        body: body.into(),
    }
}

#[tokio::test]
async fn invalid_json_is_a_retryable_protocol_error() {
    falls_back(
        reply(200, "application/json", "{\"id\": \"x\", \"choices\": [tru"),
        false,
        "",
    )
    .await;
    let err = fails_with(
        reply(200, "application/json", "{\"id\": "),
        false,
        "",
        StatusCode::BAD_GATEWAY,
    )
    .await;
    assert_eq!(err["error"]["type"], "api_error");
}

#[tokio::test]
async fn a_200_with_an_error_body_is_not_a_success() {
    let body = openai_error("The server had an error", "server_error", None, None);
    falls_back(json(200, body.clone()), false, "").await;
    falls_back(sse([format!("data: {body}\n\n")]), true, "").await;
}

#[tokio::test]
async fn a_gzip_body_nobody_asked_for_is_a_protocol_error() {
    // `{"id": "x", "object": "chat.completion", ...}` gzipped: switchyard never sends
    // `accept-encoding`, so these bytes must not be read as a reply.
    const GZ: &[u8] = &[
        0x1f, 0x8b, 0x8, 0x0, 0x0, 0x0, 0x0, 0x0, 0x2, 0x3, 0xab, 0x56, 0xca, 0x4c, 0x51, 0xb2,
        0x52, 0x50, 0xaa, 0x50, 0xd2, 0x51, 0x50, 0xca, 0x4f, 0xca, 0x4a, 0x4d, 0x2e, 0x1, 0x71,
        0x93, 0x33, 0x12, 0x4b, 0xf4, 0x92, 0xf3, 0x73, 0xb, 0x72, 0x52, 0x4b, 0x32, 0xf3, 0xf3,
        0x40, 0x92, 0xc9, 0x45, 0xa9, 0x89, 0x25, 0xa9, 0x20, 0xc5, 0x86, 0x40, 0x5e, 0x6e, 0x7e,
        0x4a, 0x6a, 0xe, 0x48, 0x65, 0x2e, 0x58, 0x2e, 0x23, 0x3f, 0x33, 0x39, 0xb5, 0x18, 0xc8,
        0x8f, 0x8e, 0xad, 0x5, 0x0, 0xec, 0xa3, 0x90, 0x5a, 0x53, 0x0, 0x0, 0x0,
    ];
    let gz = |ct: &str| Step::Reply {
        status: 200,
        headers: vec![
            ("content-type".into(), ct.into()),
            ("content-encoding".into(), "gzip".into()),
        ],
        body: Bytes::from_static(GZ),
    };
    falls_back(gz("application/json"), false, "").await;
    falls_back(gz("text/event-stream"), true, "").await;
    let err = fails_with(gz("application/json"), false, "", StatusCode::BAD_GATEWAY).await;
    let msg = err["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("gzip"), "the error names the encoding: {msg}");
}

#[tokio::test]
async fn the_wrong_content_type_is_a_protocol_error() {
    // Asked to stream, the upstream answers one JSON completion.
    falls_back(json(200, openai_completion("not a stream")), true, "").await;
    // Asked for JSON, the upstream streams.
    falls_back(sse([openai_text_stream(&["a"])]), false, "").await;
    // An HTML error page with a 200.
    falls_back(
        reply(200, "text/html", "<html>upstream proxy error</html>"),
        false,
        "",
    )
    .await;
}

#[tokio::test]
async fn truncated_sse_before_and_after_the_first_event() {
    // Nothing complete arrives: an ordinary failed attempt.
    falls_back(
        Step::Sse {
            pieces: vec![Bytes::from("data: {\"id\": \"chatcmpl-1\", \"choi")],
            then_abort: false,
        },
        true,
        "",
    )
    .await;
    // Bytes reached the caller: the stream ends with an error event, no `[DONE]`.
    let mut body = openai_delta(json!({"role": "assistant", "content": ""}), None);
    body.push_str(&openai_delta(json!({"content": "half"}), None));
    body.push_str("data: {\"id\": \"chatcmpl-1\", \"choi");
    let up = Upstream::start([sse([body])]).await;
    let gw = gateway(&yaml_route("openai_compatible", &[&up.url_with("v1")], "m")).await;
    let resp = gw.chat(&ask(true)).await;
    assert_eq!(resp.status, StatusCode::OK);
    let events = sse_events(&resp.text());
    assert!(events.iter().all(|e| e.data != "[DONE]"));
    let last = events.last().expect("events").json();
    assert!(last["error"]["message"].is_string(), "{last}");
}

/// The baseline reply of a stream delivered in one write, then the same stream split in two
/// at every byte position: the caller must see exactly the baseline every time.
async fn split_everywhere(kind: &str, base: impl Fn(&Upstream) -> String, model: &str, body: &str) {
    let up = Upstream::start([sse([body.to_owned()])]).await;
    let gw = gateway(&yaml_route(kind, &[&base(&up)], model)).await;
    let baseline = gw.chat(&ask(true)).await;
    assert_eq!(baseline.status, StatusCode::OK, "{}", baseline.text());
    let normalize = |s: &str| {
        // Response ids and `created` may be generated per request; compare the rest.
        openai_chunks(s)
            .into_iter()
            .map(|mut c| {
                c["id"] = Value::Null;
                c["created"] = Value::Null;
                c
            })
            .collect::<Vec<_>>()
    };
    let want = normalize(&baseline.text());
    assert!(want.len() > 2, "{}", baseline.text());
    for i in 1..body.len() {
        if !body.is_char_boundary(i) {
            continue;
        }
        up.push(sse(split_at(body, &[i])));
        let resp = gw.chat(&ask(true)).await;
        assert_eq!(resp.status, StatusCode::OK, "split at {i}: {}", resp.text());
        assert_eq!(normalize(&resp.text()), want, "split at {i}");
    }
}

#[tokio::test]
async fn an_sse_event_split_at_every_byte_position_openai() {
    let body = openai_text_stream(&["Hel", "lo, ", "wörld", " €"]);
    split_everywhere("openai_compatible", |u| u.url_with("v1"), "m", &body).await;
}

#[tokio::test]
async fn an_sse_event_split_at_every_byte_position_anthropic() {
    let body = include_str!("golden/anthropic/stream_tool_use.sse");
    split_everywhere("anthropic", Upstream::url, "claude-sonnet-4-5", body).await;
}

#[tokio::test]
async fn an_sse_event_split_at_every_byte_position_gemini() {
    let body = include_str!("golden/gemini/stream_tool.sse");
    split_everywhere("gemini", |u| u.url_with("v1beta"), "gemini-2.5-flash", body).await;
}

#[tokio::test]
async fn a_never_ending_stream_is_cancelled_when_the_caller_stops() {
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    let (dropped_tx, dropped_rx) = oneshot::channel();
    let up = Upstream::start([Step::Channel {
        rx,
        dropped: Some(dropped_tx),
    }])
    .await;
    let feeder = tokio::spawn(async move {
        let mut n = 0u64;
        if tx
            .send(Bytes::from(openai_delta(
                json!({"role": "assistant", "content": ""}),
                None,
            )))
            .await
            .is_err()
        {
            return n;
        }
        loop {
            let chunk = openai_delta(json!({"content": "more "}), None);
            if tx.send(Bytes::from(chunk)).await.is_err() {
                return n;
            }
            n += 1;
        }
    });
    let gw = gateway(&yaml_route("openai_compatible", &[&up.url_with("v1")], "m")).await;
    let resp = gw
        .send(
            Method::POST,
            "/v1/chat/completions",
            &[("content-type", "application/json")],
            ask(true).to_string(),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut got = 0usize;
    while got < 64 * 1024 {
        let frame = tokio::time::timeout(HANG, http_body_util::BodyExt::frame(&mut body))
            .await
            .expect("stream flows")
            .expect("a frame")
            .expect("frame ok");
        got += frame.data_ref().map_or(0, Bytes::len);
    }
    drop(body);
    tokio::time::timeout(HANG, dropped_rx)
        .await
        .expect("the upstream request is cancelled when the caller stops")
        .expect("dropped signal");
    let sent = tokio::time::timeout(HANG, feeder)
        .await
        .expect("feeder ends")
        .expect("join");
    assert!(sent > 100, "the stream flowed ({sent} chunks)");
}

#[tokio::test]
async fn a_stalled_stream_is_cut_by_the_idle_timeout() {
    let idle = "    idle_timeout_secs: 0.3\n";
    // Stalls before the first event: a failed attempt, the backup answers.
    let (_tx, rx) = mpsc::channel::<Bytes>(1);
    falls_back(Step::Channel { rx, dropped: None }, true, idle).await;
    // Stalls after bytes reached the caller: an error event in the caller's format.
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    let up = Upstream::start([Step::Channel { rx, dropped: None }]).await;
    tx.send(Bytes::from(openai_delta(
        json!({"role": "assistant", "content": "hi"}),
        None,
    )))
    .await
    .expect("send");
    let yaml = yaml_route("openai_compatible", &[&up.url_with("v1")], "m").replace(
        "    api_key: sk-test-p0\n",
        &format!("    api_key: sk-test-p0\n{idle}"),
    );
    let gw = gateway(&yaml).await;
    let resp = gw.chat(&ask(true)).await;
    let events = sse_events(&resp.text());
    let last = events.last().expect("events").json();
    assert_eq!(last["error"]["type"], "timeout_error", "{last}");
    drop(tx);
}

#[tokio::test]
async fn a_reply_over_the_size_cap_is_a_classified_error() {
    let huge = vec![b' '; 64 * 1024 * 1024 + 1];
    falls_back(reply(200, "application/json", huge.clone()), false, "").await;
    let err = fails_with(
        reply(200, "application/json", huge),
        false,
        "",
        StatusCode::BAD_GATEWAY,
    )
    .await;
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("too large"),
        "{err}"
    );
}

/// A TCP server that accepts connections and never says a word.
async fn silent_server() -> (String, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    (format!("https://{addr}/v1"), task)
}

#[tokio::test]
async fn a_hung_tls_handshake_times_out() {
    let (url, task) = silent_server().await;
    let b = Upstream::start([json(200, openai_completion("from backup"))]).await;
    let yaml = yaml_primary_backup(&url, &b.url_with("v1")).replace(
        "    api_key: sk-test-primary\n",
        "    api_key: sk-test-primary\n    connect_timeout_secs: 0.5\n    first_byte_timeout_secs: 0.5\n",
    );
    let gw = gateway(&yaml).await;
    let resp = gw.chat(&ask(false)).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(resp.header("x-switchyard-provider"), Some("backup"));
    // Alone, the caller sees a timeout.
    let gw = gateway(&yaml_route("openai_compatible", &[&url], "m").replace(
        "    api_key: sk-test-p0\n",
        "    api_key: sk-test-p0\n    first_byte_timeout_secs: 0.5\n",
    ))
    .await;
    let resp = gw.chat(&ask(false)).await;
    assert_eq!(resp.status, StatusCode::GATEWAY_TIMEOUT, "{}", resp.text());
    assert_eq!(resp.json()["error"]["type"], "timeout_error");
    task.abort();
}

#[tokio::test]
async fn a_certificate_that_does_not_match_is_refused() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let (outcome_tx, mut outcome_rx) = mpsc::unbounded_channel::<bool>();
    let task = tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let accepted = acceptor.accept(s).await.is_ok();
            let _ = outcome_tx.send(accepted);
        }
    });
    let b = Upstream::start([json(200, openai_completion("from backup"))]).await;
    let gw = gateway(&yaml_primary_backup(
        &format!("https://{addr}/v1"),
        &b.url_with("v1"),
    ))
    .await;
    let resp = gw.chat(&ask(false)).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(resp.header("x-switchyard-provider"), Some("backup"));
    let accepted = tokio::time::timeout(HANG, outcome_rx.recv())
        .await
        .expect("a handshake was attempted")
        .expect("outcome");
    assert!(
        !accepted,
        "switchyard completed a handshake with an untrusted certificate"
    );
    // Alone: a connect error, not a reply.
    let gw = gateway(&yaml_route(
        "openai_compatible",
        &[&format!("https://{addr}/v1")],
        "m",
    ))
    .await;
    let resp = gw.chat(&ask(false)).await;
    assert_eq!(resp.status, StatusCode::BAD_GATEWAY, "{}", resp.text());
    let msg = resp.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(msg.contains("connection failed"), "{msg}");
    assert!(
        !msg.contains(&addr.to_string()),
        "no upstream address in errors: {msg}"
    );
    task.abort();
}

#[tokio::test]
async fn an_absurd_retry_after_does_not_take_the_target_down() {
    // Regression: `Retry-After: 1e20` overflowed `Duration::from_secs_f64` (a panic inside
    // the attempt), and a `Retry-After` past the end of `Instant` overflowed the breaker.
    for ra in ["1e20", "18446744073709551615", "1e300"] {
        for header in ["retry-after", "retry-after-ms"] {
            let err = openai_error("slow down", "rate_limit_error", None, None);
            let up = Upstream::start([
                json_with(429, &[(header, ra)], err),
                json(200, openai_completion("after the storm")),
            ])
            .await;
            let b = Upstream::start([json(200, openai_completion("from backup"))]).await;
            let gw = gateway(&yaml_primary_backup(&up.url_with("v1"), &b.url_with("v1"))).await;
            let resp = gw.chat(&ask(false)).await;
            assert_eq!(
                resp.status,
                StatusCode::OK,
                "{header}: {ra}: {}",
                resp.text()
            );
            assert_eq!(resp.header("x-switchyard-provider"), Some("backup"));
            // The gateway still answers.
            let models = gw.get("/v1/models").await;
            assert_eq!(models.status, StatusCode::OK);
        }
    }
}

#[tokio::test]
async fn a_connection_reset_and_a_closed_port_are_connect_errors() {
    falls_back(Step::Reset, false, "").await;
    let closed = closed_port_url("v1").await;
    let b = Upstream::start([json(200, openai_completion("from backup"))]).await;
    let gw = gateway(&yaml_primary_backup(&closed, &b.url_with("v1"))).await;
    let resp = gw.chat(&ask(false)).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.header("x-switchyard-provider"), Some("backup"));
}
