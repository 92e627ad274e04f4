//! Edges of the wire: broken replies that should fall back, upstream error events mid-stream in
//! each format, truncated streams without a terminator, big events split over many writes,
//! concurrent requests on one upstream.

mod common;

use bytes::Bytes;
use http::StatusCode;
use serde_json::{json, Value};

use common::*;

fn ask(stream: bool) -> Value {
    json!({"model": "chat-default", "stream": stream,
        "messages": [{"role": "user", "content": "Hello"}]})
}

#[tokio::test]
async fn a_2xx_reply_that_is_not_json_falls_back() {
    let p = Upstream::start([Step::Reply {
        status: 200,
        headers: vec![("content-type".into(), "text/html".into())],
        body: Bytes::from_static(b"<html><body>502 Bad Gateway</body></html>"),
    }])
    .await;
    let b = Upstream::start([json(200, openai_completion("from backup"))]).await;
    let gw = gateway(&yaml_primary_backup(&p.url_with("v1"), &b.url_with("v1"))).await;
    let resp = gw.chat(&ask(false)).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(resp.header("x-switchyard-provider"), Some("backup"));
    assert_eq!(resp.header("x-switchyard-attempts"), Some("2"));
    assert_eq!((p.count(), b.count()), (1, 1));
}

#[tokio::test]
async fn a_big_event_split_over_many_writes_arrives_whole() {
    let big: String = "abcdefghij".repeat(20_000);
    let mut body = openai_delta(json!({"role": "assistant", "content": ""}), None);
    body.push_str(&openai_delta(json!({"content": big}), None));
    body.push_str(&openai_delta(json!({}), Some("stop")));
    body.push_str("data: [DONE]\n\n");
    let cuts: Vec<usize> = (1..body.len() / 4096).map(|i| i * 4096).collect();
    let up = Upstream::start([sse(split_at(&body, &cuts))]).await;
    let gw = gateway(&yaml_route("openai_compatible", &[&up.url_with("v1")], "m")).await;
    let resp = gw.chat(&ask(true)).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(openai_text(&openai_chunks(&resp.text())), big);
}

#[tokio::test]
async fn concurrent_requests_each_get_their_own_reply() {
    let steps = (0..16).map(|i| json(200, openai_completion(&format!("reply {i}"))));
    let up = Upstream::start(steps).await;
    let gw = gateway(&yaml_route("openai_compatible", &[&up.url_with("v1")], "m")).await;
    let body = ask(false);
    let replies = futures_util::future::join_all((0..16).map(|_| gw.chat(&body))).await;
    let mut texts: Vec<String> = replies
        .iter()
        .map(|r| {
            assert_eq!(r.status, StatusCode::OK, "{}", r.text());
            r.json()["choices"][0]["message"]["content"]
                .as_str()
                .expect("text")
                .to_owned()
        })
        .collect();
    texts.sort();
    let mut want: Vec<String> = (0..16).map(|i| format!("reply {i}")).collect();
    want.sort();
    assert_eq!(texts, want);
    assert_eq!(up.count(), 16);
}

/// The last event is a well-formed OpenAI error chunk and no `[DONE]` precedes it.
fn openai_error_tail(body: &str) -> (String, Value) {
    let events = sse_events(body);
    assert!(events.iter().all(|e| e.data != "[DONE]"), "{body}");
    let (last, before) = events.split_last().expect("events");
    let chunks: Vec<Value> = before.iter().map(Sse::json).collect();
    let err = last.json();
    assert!(err["error"]["message"].is_string(), "{body}");
    (openai_text(&chunks), err)
}

#[tokio::test]
async fn anthropic_error_event_mid_stream_reaches_an_openai_caller() {
    let start = json!({"type": "message_start", "message": {"id": "msg_1", "type": "message",
        "role": "assistant", "model": "claude-sonnet-4-5", "content": [], "stop_reason": null,
        "stop_sequence": null, "usage": {"input_tokens": 5, "output_tokens": 1}}});
    let pieces = [
        format!("event: message_start\ndata: {start}\n\n"),
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n".to_owned(),
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Part\"}}\n\n".to_owned(),
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n".to_owned(),
    ];
    let up = Upstream::start([sse(pieces)]).await;
    let gw = gateway(&yaml_route("anthropic", &[&up.url()], "claude-sonnet-4-5")).await;
    let resp = gw.chat(&ask(true)).await;
    assert_eq!(resp.status, StatusCode::OK);
    let (text, err) = openai_error_tail(&resp.text());
    assert_eq!(text, "Part");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap_or("")
            .to_lowercase()
            .contains("overloaded"),
        "{err}"
    );
}

#[tokio::test]
async fn gemini_stream_ending_without_a_finish_reason_is_an_error_event() {
    let ev = |t: &str| {
        format!(
            "data: {}\r\n\r\n",
            json!({"candidates": [{"content": {"parts": [{"text": t}], "role": "model"},
                "index": 0}], "modelVersion": "gemini-2.0-flash"})
        )
    };
    let up = Upstream::start([sse([ev("Half"), ev(" a reply")])]).await;
    let gw = gateway(&yaml_route(
        "gemini",
        &[&up.url_with("v1beta")],
        "gemini-2.0-flash",
    ))
    .await;
    let resp = gw.chat(&ask(true)).await;
    assert_eq!(resp.status, StatusCode::OK);
    let (text, _) = openai_error_tail(&resp.text());
    assert_eq!(text, "Half a reply");
}

#[tokio::test]
async fn anthropic_caller_stream_failing_mid_way_gets_an_anthropic_error_event() {
    let pieces = vec![
        Bytes::from(openai_delta(
            json!({"role": "assistant", "content": ""}),
            None,
        )),
        Bytes::from(openai_delta(json!({"content": "Once"}), None)),
    ];
    let up = Upstream::start([Step::Sse {
        pieces,
        then_abort: true,
    }])
    .await;
    let gw = gateway(&yaml_route("openai_compatible", &[&up.url_with("v1")], "m")).await;
    let resp = gw
        .post(
            "/v1/messages",
            &[("x-api-key", "k"), ("anthropic-version", "2023-06-01")],
            &json!({"model": "chat-default", "max_tokens": 10, "stream": true,
                "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK);
    let events = sse_events(&resp.text());
    let names: Vec<&str> = events.iter().filter_map(|e| e.event.as_deref()).collect();
    assert!(!names.contains(&"message_stop"), "{names:?}");
    let last = events.last().expect("events");
    assert_eq!(last.event.as_deref(), Some("error"), "{}", resp.text());
    let err = last.json();
    assert_eq!(err["type"], "error");
    assert!(err["error"]["type"].is_string(), "{err}");
    assert!(err["error"]["message"].is_string(), "{err}");
    let text: String = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("content_block_delta"))
        .map(|e| e.json()["delta"]["text"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(text, "Once");
}

#[tokio::test]
async fn anthropic_caller_all_targets_failing_before_a_stream_get_a_json_error() {
    let up = Upstream::start([json(
        503,
        openai_error(
            "The engine is currently overloaded",
            "server_error",
            None,
            None,
        ),
    )])
    .await;
    let gw = gateway(&yaml_route("openai_compatible", &[&up.url_with("v1")], "m")).await;
    let resp = gw
        .post(
            "/v1/messages",
            &[("x-api-key", "k"), ("anthropic-version", "2023-06-01")],
            &json!({"model": "chat-default", "max_tokens": 10, "stream": true,
                "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(resp.status.as_u16(), 503, "{}", resp.text());
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let v = resp.json();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "overloaded_error", "{v}");
}

#[tokio::test]
async fn anthropic_caller_unknown_path_is_a_404_in_anthropic_shape() {
    let gw = gateway("listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\n").await;
    let resp = gw
        .post(
            "/v1/messages/batches",
            &[("x-api-key", "k"), ("anthropic-version", "2023-06-01")],
            &json!({"requests": []}),
        )
        .await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND, "{}", resp.text());
    let v = resp.json();
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], "not_found_error", "{v}");
}

/// The harness's `Step::Reset` really resets (RST, not an orderly FIN), so the fallback test
/// on a reset exercises what it claims to.
#[tokio::test]
async fn harness_reset_step_is_a_tcp_reset() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = Upstream::start([Step::Reset]).await;
    let mut s = tokio::net::TcpStream::connect(up.addr)
        .await
        .expect("connect");
    s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
        .await
        .expect("write");
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(HANG, s.read(&mut buf))
        .await
        .expect("in time");
    match read {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
        Ok(n) => panic!("expected a reset, read {n} bytes"),
    }
    assert_eq!(up.count(), 1);
}
