//! End-to-end resilience: switchyard in front of two or three mock upstreams (the built-in
//! mock served over HTTP in OpenAI format) whose faults are scripted per test.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use switchyard::config::{self, Config};
use switchyard::provider::mock::{Faults, Mock};
use switchyard::server::{self, Running};

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

struct Upstream {
    running: Running,
}

impl Upstream {
    async fn start() -> Self {
        let cfg = config::load_str(
            "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nmock: true\n",
            &config::Env,
        )
        .unwrap();
        Self {
            running: server::start(&cfg).await.unwrap(),
        }
    }
    fn addr(&self) -> SocketAddr {
        self.running.data_addr
    }
    fn with_mock<R>(&self, f: impl FnOnce(&Mock) -> R) -> R {
        let routes = self.running.routes.load();
        let mock = routes
            .providers()
            .iter()
            .find_map(|p| p.as_mock())
            .expect("mock provider");
        f(mock)
    }
    fn faults(&self, f: Faults) {
        self.with_mock(|m| m.set_faults(f));
    }
    fn calls(&self) -> u64 {
        self.with_mock(|m| m.calls())
    }
}

async fn gateway(yaml: &str) -> Running {
    let cfg: Config = config::load_str(yaml, &config::Env).unwrap();
    server::start(&cfg).await.unwrap()
}

fn providers_yaml(ups: &[(&str, &Upstream)], breaker: &str) -> String {
    let mut s = String::from("listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nproviders:\n");
    for (name, u) in ups {
        s.push_str(&format!(
            "  - name: {name}\n    kind: openai_compatible\n    base_url: http://{}/v1\n    api_key: sk-test-{name}\n    breaker: {breaker}\n",
            u.addr()
        ));
    }
    s
}

struct Resp {
    status: u16,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| panic!("not JSON: {:?}", self.body))
    }
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

async fn request(c: &HttpClient, method: &str, url: String, body: Option<Value>) -> Resp {
    let req = http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .unwrap();
    let resp = c.request(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Resp {
        status,
        headers,
        body,
    }
}

async fn chat(c: &HttpClient, gw: &Running, model: &str, stream: bool) -> Resp {
    let body = json!({"model": model, "stream": stream, "max_tokens": 8,
        "messages": [{"role": "user", "content": "hello"}]});
    request(
        c,
        "POST",
        format!("http://{}/v1/chat/completions", gw.data_addr),
        Some(body),
    )
    .await
}

const FAST_BREAKER: &str = "{consecutive_failures: 3, cooldown_secs: 600}";

#[tokio::test]
async fn dead_primary_all_traffic_served_by_secondary_and_breaker_stops_attempts() {
    let (a, b) = (Upstream::start().await, Upstream::start().await);
    a.faults(Faults {
        status: Some(503),
        ..Faults::default()
    });
    let yaml = providers_yaml(&[("a", &a), ("b", &b)], FAST_BREAKER)
        + "models:\n  - name: chat\n    targets: [a/echo, b/echo]\n";
    let gw = gateway(&yaml).await;
    let c = client();
    let mut attempts = Vec::new();
    for _ in 0..20 {
        let r = chat(&c, &gw, "chat", false).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.header("x-switchyard-provider"), "b");
        attempts.push(r.header("x-switchyard-attempts").to_owned());
    }
    // Three failures open a's breaker; after that a gets no traffic at all.
    assert_eq!(a.calls(), 3);
    assert_eq!(b.calls(), 20);
    assert_eq!(&attempts[..3], ["2", "2", "2"]);
    assert!(attempts[3..].iter().all(|a| a == "1"), "{attempts:?}");
    let providers = request(
        &c,
        "GET",
        format!("http://{}/providers", gw.admin_addr),
        None,
    )
    .await
    .json();
    let a_state = &providers["providers"][0]["targets"][0];
    assert_eq!(a_state["circuit"], "open");
    assert_eq!(a_state["available"], false);
}

#[tokio::test]
async fn rate_limit_with_retry_after_ejects_the_target_and_keeps_the_header_when_nothing_is_left() {
    let (a, b) = (Upstream::start().await, Upstream::start().await);
    a.faults(Faults {
        status: Some(429),
        retry_after_secs: Some(30),
        ..Faults::default()
    });
    let yaml = providers_yaml(&[("a", &a), ("b", &b)], "{}")
        + "models:\n  - name: chat\n    targets: [a/echo, b/echo]\n  - name: only-a\n    targets: [a/echo]\n";
    let gw = gateway(&yaml).await;
    let c = client();
    for _ in 0..10 {
        let r = chat(&c, &gw, "chat", false).await;
        assert_eq!((r.status, r.header("x-switchyard-provider")), (200, "b"));
    }
    assert_eq!(
        a.calls(),
        1,
        "a 429 with Retry-After ejects the target for 30 s"
    );
    // Only the ejected target left: an immediate 503, no call upstream.
    let r = chat(&c, &gw, "only-a", false).await;
    assert_eq!(r.status, 503);
    assert_eq!(a.calls(), 1);
    // A fresh target that answers 429 with nothing behind it: the caller sees 429 + Retry-After.
    let c2 = Upstream::start().await;
    c2.faults(Faults {
        status: Some(429),
        retry_after_secs: Some(7),
        ..Faults::default()
    });
    let yaml =
        providers_yaml(&[("c", &c2)], "{}") + "models:\n  - name: m\n    targets: [c/echo]\n";
    let gw2 = gateway(&yaml).await;
    let r = chat(&c, &gw2, "m", false).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), "7");
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
}

#[tokio::test]
async fn hedge_answers_from_the_second_target_when_the_first_is_slow() {
    let (slow, fast) = (Upstream::start().await, Upstream::start().await);
    slow.faults(Faults {
        latency_ms: 30_000,
        ..Faults::default()
    });
    let yaml = providers_yaml(&[("slow", &slow), ("fast", &fast)], "{}")
        + "models:\n  - name: chat\n    strategy: hedge\n    hedge_after_ms: 20\n    targets: [slow/echo, fast/echo]\n";
    let gw = gateway(&yaml).await;
    let c = client();
    let r = chat(&c, &gw, "chat", false).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-switchyard-provider"), "fast");
    assert_eq!(r.header("x-switchyard-attempts"), "2");
    assert_eq!((slow.calls(), fast.calls()), (1, 1));
}

#[tokio::test]
async fn traffic_returns_after_half_open_probes_succeed() {
    let (a, b) = (Upstream::start().await, Upstream::start().await);
    a.faults(Faults {
        status: Some(500),
        ..Faults::default()
    });
    // A cool-down of a millisecond: the first request after recovery is already a probe.
    let yaml = providers_yaml(
        &[("a", &a), ("b", &b)],
        "{consecutive_failures: 2, cooldown_secs: 0.001, half_open_probes: 2}",
    ) + "models:\n  - name: chat\n    targets: [a/echo, b/echo]\n";
    let gw = gateway(&yaml).await;
    let c = client();
    for _ in 0..2 {
        assert_eq!(
            chat(&c, &gw, "chat", false)
                .await
                .header("x-switchyard-provider"),
            "b"
        );
    }
    a.faults(Faults::default());
    // Until the 1 ms cool-down has passed, b serves; then probes go to a, succeed, and all
    // traffic returns to a.
    let mut served = Vec::new();
    for _ in 0..200 {
        served.push(
            chat(&c, &gw, "chat", false)
                .await
                .header("x-switchyard-provider")
                .to_owned(),
        );
        if served.len() >= 4 && served[served.len() - 4..].iter().all(|p| p == "a") {
            break;
        }
    }
    let first_a = served
        .iter()
        .position(|p| p == "a")
        .expect("traffic returned to a");
    assert!(served[first_a..].iter().all(|p| p == "a"), "{served:?}");
    let providers = request(
        &c,
        "GET",
        format!("http://{}/providers", gw.admin_addr),
        None,
    )
    .await
    .json();
    assert_eq!(providers["providers"][0]["targets"][0]["circuit"], "closed");
}

#[tokio::test]
async fn streaming_fails_over_before_the_first_byte() {
    let (a, b) = (Upstream::start().await, Upstream::start().await);
    a.faults(Faults {
        status: Some(502),
        ..Faults::default()
    });
    let yaml = providers_yaml(&[("a", &a), ("b", &b)], "{}")
        + "models:\n  - name: chat\n    targets: [a/lorem, b/lorem]\n";
    let gw = gateway(&yaml).await;
    let r = chat(&client(), &gw, "chat", true).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), "text/event-stream");
    assert_eq!(r.header("x-switchyard-provider"), "b");
    let text = std::str::from_utf8(&r.body).unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert_eq!(
        text.matches("\"content\":\"").count(),
        9,
        "role chunk + 8 words: {text}"
    );
}

#[tokio::test]
async fn a_mid_stream_failure_ends_the_stream_with_an_error_event() {
    let (a, b) = (Upstream::start().await, Upstream::start().await);
    a.faults(Faults {
        fail_after_events: Some(3),
        ..Faults::default()
    });
    let yaml = providers_yaml(&[("a", &a), ("b", &b)], "{}")
        + "models:\n  - name: chat\n    targets: [a/lorem, b/lorem]\n";
    let gw = gateway(&yaml).await;
    let r = chat(&client(), &gw, "chat", true).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-switchyard-provider"),
        "a",
        "the first byte had gone: no failover"
    );
    let text = std::str::from_utf8(&r.body).unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    let last = events.last().unwrap();
    assert!(last.starts_with("data: {\"error\""), "{text}");
    assert!(!text.contains("[DONE]"));
    assert_eq!(b.calls(), 0);
    let err: Value = serde_json::from_str(last.trim_start_matches("data: ")).unwrap();
    assert!(err["error"]["message"].as_str().unwrap().len() > 3);
}

#[tokio::test]
async fn operator_drain_and_pin_move_traffic_without_a_restart() {
    let (a, b) = (Upstream::start().await, Upstream::start().await);
    let yaml = providers_yaml(&[("a", &a), ("b", &b)], "{}")
        + "models:\n  - name: chat\n    targets: [a/echo, b/echo]\n";
    let gw = gateway(&yaml).await;
    let c = client();
    let admin = gw.admin_addr;
    assert_eq!(
        chat(&c, &gw, "chat", false)
            .await
            .header("x-switchyard-provider"),
        "a"
    );
    assert_eq!(
        request(
            &c,
            "POST",
            format!("http://{admin}/providers/a/drain"),
            None
        )
        .await
        .status,
        200
    );
    assert_eq!(
        chat(&c, &gw, "chat", false)
            .await
            .header("x-switchyard-provider"),
        "b"
    );
    assert_eq!(
        request(
            &c,
            "DELETE",
            format!("http://{admin}/providers/a/drain"),
            None
        )
        .await
        .status,
        200
    );
    assert_eq!(
        chat(&c, &gw, "chat", false)
            .await
            .header("x-switchyard-provider"),
        "a"
    );
    let pin = request(
        &c,
        "POST",
        format!("http://{admin}/routes/chat/pin?target=b/echo"),
        None,
    )
    .await;
    assert_eq!(pin.status, 200);
    assert_eq!(
        chat(&c, &gw, "chat", false)
            .await
            .header("x-switchyard-provider"),
        "b"
    );
    let routes = request(&c, "GET", format!("http://{admin}/routes"), None)
        .await
        .json();
    assert_eq!(routes["routes"][0]["pinned"], "b/echo");
    let bad = request(
        &c,
        "POST",
        format!("http://{admin}/routes/chat/pin?target=zz/echo"),
        None,
    )
    .await;
    assert_eq!(bad.status, 400);
    request(
        &c,
        "DELETE",
        format!("http://{admin}/routes/chat/pin"),
        None,
    )
    .await;
    assert_eq!(
        chat(&c, &gw, "chat", false)
            .await
            .header("x-switchyard-provider"),
        "a"
    );
}

#[tokio::test]
async fn degradation_model_is_used_only_when_every_primary_target_fails() {
    let (a, cheap) = (Upstream::start().await, Upstream::start().await);
    let yaml = providers_yaml(&[("a", &a), ("cheap", &cheap)], "{}")
        + "models:\n  - name: chat\n    targets: [a/echo]\n    fallback_model: chat-cheap\n  - name: chat-cheap\n    targets: [cheap/echo]\n";
    let gw = gateway(&yaml).await;
    let c = client();
    assert_eq!(
        chat(&c, &gw, "chat", false)
            .await
            .header("x-switchyard-provider"),
        "a"
    );
    a.faults(Faults {
        status: Some(503),
        ..Faults::default()
    });
    let r = chat(&c, &gw, "chat", false).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-switchyard-provider"), "cheap");
    assert_eq!(r.header("x-switchyard-attempts"), "2");
}

#[tokio::test]
async fn every_target_failing_lists_each_attempt_in_the_callers_format() {
    let (a, b) = (Upstream::start().await, Upstream::start().await);
    a.faults(Faults {
        status: Some(500),
        ..Faults::default()
    });
    b.faults(Faults {
        status: Some(503),
        ..Faults::default()
    });
    let yaml = providers_yaml(&[("a", &a), ("b", &b)], "{}")
        + "models:\n  - name: chat\n    targets: [a/echo, b/echo]\n";
    let gw = gateway(&yaml).await;
    let c = client();
    let r = chat(&c, &gw, "chat", false).await;
    assert_eq!(r.status, 503);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        msg.contains("a/echo: upstream_status") && msg.contains("b/echo: overloaded"),
        "{msg}"
    );
    assert!(!msg.contains("sk-test"), "no secrets in errors: {msg}");
    // Anthropic callers get Anthropic's error shape for the same failure.
    let body =
        json!({"model": "chat", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]});
    let r = request(
        &c,
        "POST",
        format!("http://{}/v1/messages", gw.data_addr),
        Some(body),
    )
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "overloaded_error");
}

#[tokio::test]
async fn a_paced_mock_stream_lasts_at_least_its_intervals_through_the_gateway() {
    let up = Upstream::start().await;
    let c = client();
    // Set at run time through the mock's admin plane, as bench/streams.sh does.
    let set = request(
        &c,
        "POST",
        format!(
            "http://{}/mock/faults?token_interval_ms=40",
            up.running.admin_addr
        ),
        None,
    )
    .await;
    assert_eq!(set.status, 200, "{:?}", set.body);
    assert_eq!(up.with_mock(|m| m.faults().token_interval_ms), 40);
    let yaml =
        providers_yaml(&[("a", &up)], "{}") + "models:\n  - name: chat\n    targets: [a/lorem]\n";
    let gw = gateway(&yaml).await;
    let t0 = std::time::Instant::now();
    let r = chat(&c, &gw, "chat", true).await;
    let took = t0.elapsed();
    assert_eq!(r.status, 200);
    let text = std::str::from_utf8(&r.body).unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert_eq!(text.matches("\"content\":\"").count(), 9, "{text}");
    // Start, 8 words, finish, usage: 10 pauses of 40 ms at the mock. (A lower bound only.)
    assert!(
        took >= std::time::Duration::from_millis(400),
        "took {took:?}"
    );
}
