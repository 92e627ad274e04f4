//! Secrets never leak: a provider key, an admin token and a caller key planted in config, the
//! caller key sent in every header an SDK uses, traffic that succeeds, streams, fails with an
//! upstream 401 (its message quoting the key, as OpenAI's does), 5xx and 4xx messages echoing
//! the key, error events mid-stream and a wrong caller key. Logs are captured at trace level
//! (every crate), and the logs, every response body and header, and the admin plane
//! (`/metrics`, `/config`, `/providers`, `/routes`, `/spend`) are searched for each secret.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::json;

use common::*;

const PROVIDER_KEY: &str = "sk-prov-PLANTED-9f8e7d6c5b4a";
const CALLER_KEY: &str = "sk-caller-PLANTED-1a2b3c4d5e6f";
const ADMIN_TOKEN: &str = "admin-PLANTED-0a9b8c7d";
const HEADER_SECRET: &str = "org-PLANTED-77aa88bb";

/// Everything the process logged.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}

/// Fails naming where a secret showed up.
fn assert_clean(place: &str, text: &str) {
    for (name, secret) in [
        ("provider key", PROVIDER_KEY),
        ("caller key", CALLER_KEY),
        ("admin token", ADMIN_TOKEN),
        ("provider header secret", HEADER_SECRET),
    ] {
        // Fragments count too: providers quote keys as `sk-prov-***...6c5b4a`.
        let tail = &secret[secret.len() - 10..];
        assert!(
            !text.contains(secret) && !text.contains(tail),
            "{name} leaked in {place}: {text}"
        );
    }
}

fn assert_resp_clean(place: &str, r: &Resp) {
    assert_clean(place, &r.text());
    for (k, v) in &r.headers {
        assert_clean(
            &format!("{place} header {k}"),
            &String::from_utf8_lossy(v.as_bytes()),
        );
    }
}

#[tokio::test]
async fn planted_secrets_appear_in_no_log_metric_admin_page_or_error() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .try_init()
        .expect("the only subscriber in this test binary");

    let quoting = format!("Incorrect API key provided: {PROVIDER_KEY}. You can find your API key at https://platform.openai.com/account/api-keys.");
    let echo =
        format!("proxy debug: received authorization Bearer {PROVIDER_KEY} and {HEADER_SECRET}");
    let up = Upstream::start([
        json(200, openai_completion("fine")),
        sse([openai_text_stream(&["a", "b"])]),
        json(
            401,
            openai_error(
                &quoting,
                "invalid_request_error",
                None,
                Some("invalid_api_key"),
            ),
        ),
        json(500, openai_error(&echo, "server_error", None, None)),
        json(
            400,
            openai_error(&echo, "invalid_request_error", Some("messages"), None),
        ),
        json(429, openai_error(&echo, "rate_limit_error", None, None)),
        sse([
            openai_delta(json!({"role": "assistant", "content": "x"}), None),
            format!(
                "data: {}\n\n",
                openai_error(&echo, "server_error", None, None)
            ),
        ]),
        Step::Reset,
    ])
    .await;
    let yaml = format!(
        "listen: 127.0.0.1:0
admin: 127.0.0.1:0
admin_token: {ADMIN_TOKEN}
providers:
  - name: p0
    kind: openai_compatible
    base_url: {}
    api_key: {PROVIDER_KEY}
    headers:
      openai-organization: {HEADER_SECRET}
models:
  - name: chat-default
    targets: [p0/m]
keys:
  - name: team-a
    key: {CALLER_KEY}
",
        up.url_with("v1")
    );
    let gw = gateway(&yaml).await;
    let ask = |stream: bool| {
        json!({"model": "chat-default", "stream": stream,
            "messages": [{"role": "user", "content": "hello"}]})
        .to_string()
    };
    let callers: [&[(&str, &str)]; 3] = [
        &[("authorization", &format!("Bearer {CALLER_KEY}"))],
        &[
            ("x-api-key", CALLER_KEY),
            ("anthropic-version", "2023-06-01"),
        ],
        &[("api-key", CALLER_KEY)],
    ];
    let mut responses = Vec::new();
    for (i, stream) in [false, true, false, false, false, false, true, false]
        .into_iter()
        .enumerate()
    {
        let mut h = vec![("content-type", "application/json")];
        h.extend_from_slice(callers[i % 3]);
        let r = gw
            .call(Method::POST, "/v1/chat/completions", &h, ask(stream))
            .await;
        responses.push((format!("request {i}"), r));
    }
    // The upstream did get the key: the test plants something real.
    let calls = up.calls();
    assert_eq!(calls.len(), 8);
    assert_eq!(
        calls[0].header("authorization"),
        Some(&*format!("Bearer {PROVIDER_KEY}"))
    );
    assert!(calls
        .iter()
        .all(|c| c.header("x-api-key").is_none() && c.header("api-key").is_none()));
    assert!(calls
        .iter()
        .all(|c| c.header("authorization") != Some(&*format!("Bearer {CALLER_KEY}"))));
    assert_eq!(responses[0].1.status, StatusCode::OK);
    assert_eq!(responses[2].1.status, StatusCode::BAD_GATEWAY);
    // Anthropic surface too, with a caller key; and the admin plane with a wrong token.
    let r = gw
        .call(
            Method::POST,
            "/v1/messages",
            &[("x-api-key", CALLER_KEY), ("anthropic-version", "2023-06-01"), ("content-type", "application/json")],
            json!({"model": "no-such", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}).to_string(),
        )
        .await;
    responses.push(("anthropic request".into(), r));
    // A wrong caller key that shares the planted key's prefix: refused, not echoed.
    let wrong = format!("{CALLER_KEY}-wrong");
    let r = gw
        .call(
            Method::POST,
            "/v1/chat/completions",
            &[
                ("authorization", &format!("Bearer {wrong}")),
                ("content-type", "application/json"),
            ],
            ask(false),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    assert!(!r.text().contains(&wrong));
    responses.push(("wrong caller key".into(), r));
    for (place, r) in &responses {
        assert_resp_clean(place, r);
    }

    let admin = format!("http://{}", gw.running.admin_addr);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<Bytes>>();
    for path in [
        "/metrics",
        "/config",
        "/providers",
        "/routes",
        "/healthz",
        "/readyz",
    ] {
        let resp = client
            .get(format!("{admin}{path}").parse().expect("uri"))
            .await
            .expect("admin answers");
        let r = read_whole(resp).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_resp_clean(path, &r);
    }
    let req = http::Request::post(format!("{admin}/providers/p0/drain"))
        .header("authorization", "Bearer wrong-token")
        .body(http_body_util::Full::new(Bytes::new()))
        .expect("request");
    let r = read_whole(client.request(req).await.expect("admin answers")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_resp_clean("admin 401", &r);

    let text = logs.text();
    assert!(text.contains("TRACE"), "trace logging was captured");
    assert!(
        text.len() > 10_000,
        "a real amount of logging was captured ({} bytes)",
        text.len()
    );
    assert_clean("logs", &text);
}
