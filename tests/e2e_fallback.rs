//! Fallback across a route's targets, failures mid-stream, and cancellation when the caller
//! goes away. Two OpenAI-compatible upstreams, `primary` then `backup`, behind `chat-default`.

mod common;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use common::*;

fn ask(stream: bool) -> Value {
    json!({"model": "chat-default", "stream": stream,
        "messages": [{"role": "user", "content": "Hello"}]})
}

fn server_error(status: u16) -> Step {
    json(
        status,
        openai_error(
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            None,
            None,
        ),
    )
}

async fn pair(primary: Vec<Step>, backup: Vec<Step>) -> (Upstream, Upstream, Gateway) {
    let p = Upstream::start(primary).await;
    let b = Upstream::start(backup).await;
    let gw = gateway(&yaml_primary_backup(&p.url_with("v1"), &b.url_with("v1"))).await;
    (p, b, gw)
}

/// The backup answered after one failed call to the primary.
fn assert_backup_served(resp: &Resp, primary: &Upstream, backup: &Upstream) {
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(resp.header("x-switchyard-provider"), Some("backup"));
    assert_eq!(resp.header("x-switchyard-attempts"), Some("2"));
    assert_eq!(primary.count(), 1, "primary called exactly once");
    assert_eq!(backup.count(), 1, "backup called once");
    let b = backup.only_call();
    assert_eq!(b.header("authorization"), Some("Bearer sk-test-backup"));
    assert_eq!(b.json()["model"], "gpt-4o-mini");
}

#[tokio::test]
async fn primary_500_falls_back() {
    let (p, b, gw) = pair(
        vec![server_error(500)],
        vec![json(200, openai_completion("from backup"))],
    )
    .await;
    let resp = gw.chat(&ask(false)).await;
    assert_backup_served(&resp, &p, &b);
    assert_eq!(
        resp.json()["choices"][0]["message"]["content"],
        "from backup"
    );
}

#[tokio::test]
async fn primary_503_falls_back() {
    let (p, b, gw) = pair(
        vec![server_error(503)],
        vec![json(200, openai_completion("from backup"))],
    )
    .await;
    let resp = gw.chat(&ask(false)).await;
    assert_backup_served(&resp, &p, &b);
}

#[tokio::test]
async fn primary_429_falls_back() {
    let (p, b, gw) = pair(
        vec![json_with(
            429,
            &[("retry-after", "30")],
            openai_error(
                "Rate limit reached for requests",
                "requests",
                None,
                Some("rate_limit_exceeded"),
            ),
        )],
        vec![json(200, openai_completion("from backup"))],
    )
    .await;
    let resp = gw.chat(&ask(false)).await;
    assert_backup_served(&resp, &p, &b);
    assert_eq!(resp.header("retry-after"), None);
}

#[tokio::test]
async fn primary_connection_refused_falls_back() {
    let b = Upstream::start([json(200, openai_completion("from backup"))]).await;
    let gw = gateway(&yaml_primary_backup(
        &closed_port_url("v1").await,
        &b.url_with("v1"),
    ))
    .await;
    let resp = gw.chat(&ask(false)).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(resp.header("x-switchyard-provider"), Some("backup"));
    assert_eq!(resp.header("x-switchyard-attempts"), Some("2"));
    assert_eq!(b.count(), 1);
}

#[tokio::test]
async fn primary_connection_reset_falls_back() {
    let (p, b, gw) = pair(
        vec![Step::Reset],
        vec![json(200, openai_completion("from backup"))],
    )
    .await;
    let resp = gw.chat(&ask(false)).await;
    assert_backup_served(&resp, &p, &b);
}

#[tokio::test]
async fn primary_stalled_past_first_byte_timeout_falls_back() {
    let p = Upstream::start([Step::Stall]).await;
    let b = Upstream::start([json(200, openai_completion("from backup"))]).await;
    let yaml = yaml_primary_backup(&p.url_with("v1"), &b.url_with("v1")).replacen(
        "    api_key: sk-test-primary\n",
        "    api_key: sk-test-primary\n    first_byte_timeout_secs: 0.2\n",
        1,
    );
    let gw = gateway(&yaml).await;
    let resp = gw.chat(&ask(false)).await;
    assert_backup_served(&resp, &p, &b);
}

#[tokio::test]
async fn primary_400_is_not_retried() {
    let (p, b, gw) = pair(
        vec![json(
            400,
            openai_error(
                "Invalid 'messages[0].content': string too long.",
                "invalid_request_error",
                Some("messages[0].content"),
                Some("string_above_max_length"),
            ),
        )],
        vec![json(200, openai_completion("from backup"))],
    )
    .await;
    let resp = gw.chat(&ask(false)).await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{}", resp.text());
    let e = &resp.json()["error"];
    assert_eq!(
        e["message"],
        "Invalid 'messages[0].content': string too long."
    );
    assert_eq!(e["param"], "messages[0].content");
    assert_eq!(p.count(), 1);
    assert_eq!(b.count(), 0, "a caller error is not retried elsewhere");
}

#[tokio::test]
async fn all_targets_fail_with_one_error_listing_each_attempt() {
    let (p, b, gw) = pair(vec![server_error(500)], vec![server_error(503)]).await;
    let resp = gw.chat(&ask(false)).await;
    assert_eq!(
        resp.status.as_u16(),
        503,
        "status of the last: {}",
        resp.text()
    );
    let v = resp.json();
    let msg = v["error"]["message"].as_str().expect("message");
    assert!(msg.contains("primary/gpt-4o-mini"), "{msg}");
    assert!(msg.contains("backup/gpt-4o-mini"), "{msg}");
    // Each attempt with its classification; the last one's message closes the list.
    assert!(msg.contains("upstream_status"), "{msg}");
    assert!(msg.contains("overloaded (503)"), "{msg}");
    assert!(msg.contains("Sorry about that"), "{msg}");
    assert!(!msg.contains("sk-test"), "{msg}");
    assert_eq!(p.count(), 1);
    assert_eq!(b.count(), 1);
}

#[tokio::test]
async fn all_targets_fail_last_429_keeps_retry_after() {
    let (p, b, gw) = pair(
        vec![server_error(500)],
        vec![json_with(
            429,
            &[("retry-after", "7")],
            openai_error(
                "Rate limit reached",
                "requests",
                None,
                Some("rate_limit_exceeded"),
            ),
        )],
    )
    .await;
    let resp = gw.chat(&ask(false)).await;
    assert_eq!(
        resp.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        resp.text()
    );
    assert_eq!(resp.header("retry-after"), Some("7"));
    assert_eq!((p.count(), b.count()), (1, 1));
}

#[tokio::test]
async fn stream_primary_failing_before_first_byte_falls_back() {
    let (p, b, gw) = pair(
        vec![server_error(503)],
        vec![sse([openai_text_stream(&["from", " backup"])])],
    )
    .await;
    let resp = gw.chat(&ask(true)).await;
    assert_backup_served(&resp, &p, &b);
    assert_eq!(resp.header("content-type"), Some("text/event-stream"));
    let chunks = openai_chunks(&resp.text());
    assert_eq!(openai_text(&chunks), "from backup");
    assert_eq!(b.only_call().json()["stream"], true);
}

#[tokio::test]
async fn stream_primary_dying_before_its_first_event_falls_back() {
    // 200 and SSE headers, then the connection breaks before any event.
    let (p, b, gw) = pair(
        vec![Step::Sse {
            pieces: vec![Bytes::from_static(b"data: {\"id\":\"chatcmpl-x\",")],
            then_abort: true,
        }],
        vec![sse([openai_text_stream(&["ok"])])],
    )
    .await;
    let resp = gw.chat(&ask(true)).await;
    assert_backup_served(&resp, &p, &b);
    assert_eq!(openai_text(&openai_chunks(&resp.text())), "ok");
}

/// Events sent, then the upstream breaks: the caller gets the events so far, then one
/// well-formed error event, and the response ends (no `[DONE]`, no hang).
fn assert_stream_ends_with_error(resp: &Resp, text_so_far: &str) -> Value {
    assert_eq!(resp.status, StatusCode::OK);
    let events = sse_events(&resp.text());
    let (last, before) = events.split_last().expect("events");
    assert!(
        events.iter().all(|e| e.data != "[DONE]"),
        "a failed stream does not claim success: {}",
        resp.text()
    );
    let chunks: Vec<Value> = before.iter().map(Sse::json).collect();
    assert_eq!(openai_text(&chunks), text_so_far);
    let err = last.json();
    let e = err["error"].as_object().expect("error event");
    assert!(e["message"].is_string(), "{err}");
    assert!(e["type"].is_string(), "{err}");
    assert!(e.contains_key("param") && e.contains_key("code"), "{err}");
    err
}

#[tokio::test]
async fn stream_upstream_dying_mid_stream_ends_with_an_error_event() {
    let mut pieces = vec![
        openai_delta(json!({"role": "assistant", "content": ""}), None),
        openai_delta(json!({"content": "Once upon"}), None),
    ];
    // The third event arrives half, then the connection breaks.
    let third = openai_delta(json!({"content": " a time"}), None);
    pieces.push(third[..20].to_owned());
    let (p, b, gw) = pair(
        vec![Step::Sse {
            pieces: pieces.into_iter().map(Bytes::from).collect(),
            then_abort: true,
        }],
        vec![],
    )
    .await;
    let resp = gw.chat(&ask(true)).await;
    assert_eq!(resp.header("x-switchyard-provider"), Some("primary"));
    assert_stream_ends_with_error(&resp, "Once upon");
    assert_eq!(p.count(), 1);
    assert_eq!(b.count(), 0, "bytes reached the caller: no fallback");
}

#[tokio::test]
async fn stream_truncated_without_done_ends_with_an_error_event() {
    let (_p, _b, gw) = pair(
        vec![sse([
            openai_delta(json!({"role": "assistant", "content": ""}), None),
            openai_delta(json!({"content": "partial"}), None),
        ])],
        vec![],
    )
    .await;
    let resp = gw.chat(&ask(true)).await;
    assert_stream_ends_with_error(&resp, "partial");
}

#[tokio::test]
async fn stream_unparseable_chunk_ends_with_an_error_event() {
    let (_p, _b, gw) = pair(
        vec![sse([
            openai_delta(json!({"role": "assistant", "content": ""}), None),
            openai_delta(json!({"content": "fine"}), None),
            "data: {\"id\": \"chatcmpl-x\", \"choices\": [{\n\n".to_owned(),
            openai_delta(json!({"content": "never seen"}), Some("stop")),
            "data: [DONE]\n\n".to_owned(),
        ])],
        vec![],
    )
    .await;
    let resp = gw.chat(&ask(true)).await;
    assert_stream_ends_with_error(&resp, "fine");
}

#[tokio::test]
async fn stream_error_event_from_upstream_reaches_the_caller_as_an_error_event() {
    // OpenAI-compatible servers (vLLM, OpenRouter) report failures mid-stream as a chunk
    // carrying `error`.
    let (_p, _b, gw) = pair(
        vec![sse([
            openai_delta(json!({"role": "assistant", "content": ""}), None),
            openai_delta(json!({"content": "abc"}), None),
            format!(
                "data: {}\n\n",
                openai_error("The model is overloaded", "server_error", None, None)
            ),
        ])],
        vec![],
    )
    .await;
    let resp = gw.chat(&ask(true)).await;
    let err = assert_stream_ends_with_error(&resp, "abc");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("overloaded"),
        "{err}"
    );
}

#[tokio::test]
async fn caller_disconnect_mid_stream_cancels_the_upstream_request() {
    let (feed, rx) = mpsc::channel::<Bytes>(1);
    let (dropped_tx, mut dropped) = oneshot::channel();
    let (p, _b, gw) = pair(
        vec![Step::Channel {
            rx,
            dropped: Some(dropped_tx),
        }],
        vec![],
    )
    .await;
    feed.send(Bytes::from(openai_delta(
        json!({"role": "assistant", "content": ""}),
        None,
    )))
    .await
    .expect("feed the first event");

    let resp = gw
        .send(
            http::Method::POST,
            "/v1/chat/completions",
            &[("content-type", "application/json")],
            ask(true).to_string(),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let first = tokio::time::timeout(HANG, body.frame())
        .await
        .expect("first frame in time")
        .expect("a frame")
        .expect("frame ok");
    let first = first.into_data().expect("data frame");
    assert!(first.starts_with(b"data: {"), "{first:?}");
    p.wait_calls(1).await;

    // The caller goes away.
    drop(body);

    // The upstream keeps producing; its body must be dropped (connection closed under it).
    let word = Bytes::from(openai_delta(json!({"content": " more"}), None));
    let cancelled = tokio::time::timeout(HANG, async {
        loop {
            tokio::select! {
                _ = &mut dropped => return,
                sent = feed.send(word.clone()) => if sent.is_err() {
                    // The mock's body task is gone; its drop report follows.
                    let _ = (&mut dropped).await;
                    return;
                },
            }
        }
    })
    .await;
    assert!(
        cancelled.is_ok(),
        "the upstream request was not cancelled after the caller disconnected"
    );
}
