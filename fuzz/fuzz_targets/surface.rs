//! The caller surfaces as the outside world reaches them: an HTTP request (path, method,
//! headers, body) through `SurfaceLayer` — routing, `%`-decoding, the caller's key, every
//! request decoder (OpenAI chat and embeddings, Anthropic messages and `count_tokens`) — to an
//! in-process upstream (the mock provider), and the reply encoded back (JSON or SSE).
//!
//! Input layout: byte 0 picks the path, method and headers (see `Pick`), byte 1 is the length
//! of a free path segment / key that follows, the rest is the body; `fuzz/smoke.sh` seeds it
//! with the golden request bodies behind each endpoint's selector.
//!
//! Beyond "no panic": nothing the caller sends yields a 5xx (the upstream here never fails);
//! every JSON response parses, and an error is in the caller's own format; a streamed reply is
//! well-formed SSE that ends properly; and a body `/v1/messages` accepts, `count_tokens` accepts
//! too.
#![no_main]

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use switchyard::ir::{self, ModelInfo, Operation, Reply, ReplyBody};
use switchyard::provider::mock::Mock;
use switchyard::sse;
use switchyard::surface::SurfaceLayer;
use tower::{Layer, Service, ServiceExt};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
    })
}

/// What the rest of the stack would answer, without routes: the mock's `echo` model (or
/// `lorem` for short replies), the model list, a token estimate.
async fn upstream(mock: Arc<Mock>, req: ir::Request) -> Result<Reply, ir::Error> {
    let body = match &req.op {
        Operation::ListModels => ReplyBody::Models(vec![
            ModelInfo {
                id: "echo".into(),
                owned_by: "mock".into(),
            },
            ModelInfo {
                id: "mock/echo".into(),
                owned_by: "mock".into(),
            },
        ]),
        Operation::CountTokens(c) => ReplyBody::TokenCount(c.estimate_input_tokens()),
        Operation::Chat(c) if c.model == "lorem" && c.max_tokens.unwrap_or(16) <= 256 => {
            mock.call(&req.op, "lorem").await?
        }
        op => mock.call(op, "echo").await?,
    };
    Ok(Reply::local(body))
}

const PATHS: [&str; 8] = [
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/models",
    "/v1/models/", // + the free segment
    "/chat/completions/",
    "/", // + the free segment
];

/// Byte 0: bits 0-2 the path, 3-4 the method, 5 `anthropic-version`, 6 the free segment as
/// `Authorization: Bearer`, 7 as `x-switchyard-tags`.
struct Pick {
    path: String,
    method: http::Method,
    anthropic_version: bool,
    bearer: Option<String>,
    tags: Option<String>,
}

impl Pick {
    fn new(b: u8, segment: &str) -> Self {
        let i = usize::from(b & 7);
        let path = match i {
            5 | 7 => format!("{}{segment}", PATHS[i]),
            _ => PATHS[i].to_owned(),
        };
        Self {
            path,
            method: [
                http::Method::POST,
                http::Method::GET,
                http::Method::PUT,
                http::Method::DELETE,
            ][usize::from((b >> 3) & 3)]
            .clone(),
            anthropic_version: b & 0x20 != 0,
            bearer: (b & 0x40 != 0).then(|| segment.to_owned()),
            tags: (b & 0x80 != 0).then(|| segment.to_owned()),
        }
    }

    /// The caller's format, as the caller knows it: the Anthropic paths, and the model list
    /// when an Anthropic SDK asks.
    fn anthropic(&self) -> bool {
        let p = self.path.trim_end_matches('/');
        let p = p.strip_prefix("/v1").unwrap_or(p);
        p.starts_with("/messages") || (self.anthropic_version && p.starts_with("/models"))
    }
}

struct Answer {
    status: http::StatusCode,
    content_type: String,
    body: Bytes,
}

async fn send(mock: &Arc<Mock>, pick: &Pick, body: &[u8]) -> Option<Answer> {
    let mut req = http::Request::builder()
        .method(pick.method.clone())
        .uri(&pick.path);
    if pick.anthropic_version {
        req = req.header("anthropic-version", "2026-10-21");
    }
    if let Some(k) = &pick.bearer {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    if let Some(t) = &pick.tags {
        req = req.header("x-switchyard-tags", t.as_str());
    }
    // A path or header value `http` refuses never reaches the surface.
    let req = req.body(Full::new(Bytes::copy_from_slice(body))).ok()?;
    let mock = mock.clone();
    let inner = tower::service_fn(move |r| upstream(mock.clone(), r));
    let mut svc = SurfaceLayer::new(64 * 1024, Duration::from_secs(5)).layer(inner);
    let resp = ServiceExt::<http::Request<Full<Bytes>>>::ready(&mut svc)
        .await
        .unwrap_or_else(|e: Infallible| match e {})
        .call(req)
        .await
        .unwrap_or_else(|e: Infallible| match e {});
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .expect("a content type")
        .to_owned();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap_or_else(|e| match e {})
        .to_bytes();
    Some(Answer {
        status,
        content_type,
        body,
    })
}

fn check(pick: &Pick, a: &Answer) {
    let text = String::from_utf8_lossy(&a.body);
    assert!(
        !a.status.is_server_error(),
        "{} {} answered {}: {text}",
        pick.method,
        pick.path,
        a.status
    );
    match a.content_type.as_str() {
        "application/json" => {
            let v: Value = serde_json::from_slice(&a.body).expect("a JSON body");
            if !a.status.is_success() {
                if pick.anthropic() {
                    assert_eq!(v["type"], "error", "Anthropic error shape: {v}");
                    assert!(v["error"]["type"].is_string(), "{v}");
                    assert!(v["error"]["message"].is_string(), "{v}");
                } else {
                    assert!(v["error"]["message"].is_string(), "OpenAI error shape: {v}");
                }
            }
        }
        "text/event-stream" => {
            assert!(a.status.is_success());
            let mut p = sse::Parser::default();
            p.push(&a.body);
            let mut events = Vec::new();
            while let Some(ev) = p.next_event().expect("the reply parses as SSE") {
                events.push(ev);
            }
            assert!(!p.has_partial(), "an unfinished event: {text}");
            let last = events.last().expect("a stream with events");
            if pick.anthropic() {
                assert_eq!(last.event, "message_stop", "{text}");
                for ev in &events {
                    let v: Value = serde_json::from_str(&ev.data).expect("JSON event");
                    assert_eq!(v["type"].as_str(), Some(ev.event.as_str()));
                }
            } else {
                assert_eq!(last.data, "[DONE]", "{text}");
                for ev in &events[..events.len() - 1] {
                    serde_json::from_str::<Value>(&ev.data).expect("JSON chunk");
                }
            }
        }
        other => panic!("content type {other}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let (seg_len, rest) = rest.split_first().map_or((0, rest), |(n, r)| (*n, r));
    let n = usize::from(seg_len).min(rest.len());
    let segment = String::from_utf8_lossy(&rest[..n]).into_owned();
    let body = &rest[n..];
    let pick = Pick::new(sel, &segment);
    let mock = Arc::new(Mock::default());
    runtime().block_on(async {
        let Some(answer) = send(&mock, &pick, body).await else {
            return;
        };
        check(&pick, &answer);
        // What `/v1/messages` accepts, `/v1/messages/count_tokens` accepts too.
        if pick.path == PATHS[2] && pick.method == http::Method::POST && answer.status.is_success()
        {
            let count = Pick::new((sel & !7) | 3, &segment);
            let a = send(&mock, &count, body).await.expect("same headers");
            check(&count, &a);
            assert!(
                a.status.is_success(),
                "messages accepted it, count_tokens answered {}: {}",
                a.status,
                String::from_utf8_lossy(&a.body)
            );
        }
    });
});
