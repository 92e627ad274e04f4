//! Keys, limits and budgets end to end on the memory backend: statuses, error formats and
//! headers on the wire, and the admin plane's `/spend`.

mod admin;
mod common;
mod limits_budget;

use serde_json::{json, Value};

use common::{gateway, Gateway};

const CONFIG: &str = "
listen: 127.0.0.1:0
admin: 127.0.0.1:0
keys:
  - name: team-a
    key: sk-team-a
    team: search
    models: [\"echo\", \"mock/*\"]
    rpm: 3
  - name: team-b
    key_sha256: 2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae
    team: ads
    budget_usd_per_day: 30
prices:
  echo: {input: 1000000, output: 0}
";

fn chat() -> Value {
    json!({"model": "echo", "messages": [{"role": "user", "content": "hello"}]})
}

async fn as_key(g: &Gateway, key: &str) -> common::Resp {
    g.post(
        "/v1/chat/completions",
        &[("authorization", &format!("Bearer {key}"))],
        &chat(),
    )
    .await
}

#[tokio::test]
async fn missing_and_unknown_keys_are_401_in_the_callers_format() {
    let g = gateway(CONFIG).await;
    let r = g.post("/v1/chat/completions", &[], &chat()).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json()["error"]["type"],
        "authentication_error",
        "{}",
        r.text()
    );
    let r = as_key(&g, "sk-nope").await;
    assert_eq!(r.status, 401);
    let r = g
        .post(
            "/v1/messages",
            &[("x-api-key", "sk-nope"), ("anthropic-version", "2023-06-01")],
            &json!({"model": "echo", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["type"], "error", "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "authentication_error");
    // A key stored only as its SHA-256 ("foo") authenticates.
    assert_eq!(as_key(&g, "foo").await.status, 200);
}

#[tokio::test]
async fn a_model_outside_the_keys_globs_is_403() {
    let g = gateway(CONFIG).await;
    let r = g
        .post(
            "/v1/chat/completions",
            &[("authorization", "Bearer sk-team-a")],
            &json!({"model": "lorem", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "permission_error");
}

#[tokio::test]
async fn over_rpm_is_429_with_retry_after_and_ratelimit_headers() {
    let g = gateway(CONFIG).await;
    for left in ["2", "1", "0"] {
        let r = as_key(&g, "sk-team-a").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-ratelimit-limit-requests"), Some("3"));
        assert_eq!(r.header("x-ratelimit-remaining-requests"), Some(left));
    }
    let r = as_key(&g, "sk-team-a").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
    assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "{retry}");
    assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("0"));
    assert!(r.header("x-ratelimit-reset-requests").is_some());
    // The other key is not affected.
    assert_eq!(as_key(&g, "foo").await.status, 200);
}

#[tokio::test]
async fn a_spent_budget_is_429_naming_it_and_spend_reports_it() {
    let g = gateway(CONFIG).await;
    // "hello" is estimated at 9 input tokens: $9 a request at $1 per token.
    for _ in 0..3 {
        assert_eq!(as_key(&g, "foo").await.status, 200);
    }
    let r = as_key(&g, "foo").await;
    assert_eq!(r.status, 429, "{}", r.text());
    let e = &r.json()["error"];
    assert_eq!(e["type"], "insufficient_quota");
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains("budget_usd_per_day") && msg.contains("T00:00:00Z"),
        "{msg}"
    );
    assert!(r.header("retry-after").is_some());
    let spend = admin::get_json(g.running.admin_addr, "/spend").await;
    assert_eq!(spend["backend"], "memory");
    let b = &spend["keys"][1];
    assert_eq!(b["name"], "team-b");
    assert_eq!(b["spent_usd_today"], 27.0);
    assert_eq!(b["remaining_usd_today"], 3.0);
    let ads = spend["teams"].as_array().unwrap();
    assert!(ads
        .iter()
        .any(|t| t["name"] == "ads" && t["spent_usd_today"] == 27.0));
}

#[tokio::test]
async fn streams_are_charged_when_they_end() {
    let g = gateway(CONFIG).await;
    let mut body = chat();
    body["stream"] = json!(true);
    let r = g
        .post(
            "/v1/chat/completions",
            &[("authorization", "Bearer foo")],
            &body,
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("[DONE]"));
    let mut spent = Value::Null;
    for _ in 0..50 {
        let spend = admin::get_json(g.running.admin_addr, "/spend").await;
        spent = spend["keys"][1]["spent_usd_today"].clone();
        if spent == 9.0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(spent, 9.0);
}

#[tokio::test]
async fn without_keys_everyone_is_anonymous_and_spend_is_recorded() {
    let g = gateway(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nprices:\n  echo: {input: 1000000, output: 0}\n",
    )
    .await;
    assert_eq!(
        g.post("/v1/chat/completions", &[], &chat()).await.status,
        200
    );
    let spend = admin::get_json(g.running.admin_addr, "/spend").await;
    assert_eq!(spend["keys"][0]["name"], "anonymous");
    assert_eq!(spend["keys"][0]["spent_usd_today"], 9.0);
}

#[tokio::test]
async fn a_provider_over_its_rpm_spills_to_the_next_target() {
    let g = gateway(
        "
listen: 127.0.0.1:0
admin: 127.0.0.1:0
providers:
  - {name: small, kind: mock, rpm: 2}
  - {name: big, kind: mock}
models:
  - name: chat
    targets: [small/echo, big/echo]
",
    )
    .await;
    let body = json!({"model": "chat", "messages": [{"role": "user", "content": "x"}]});
    let mut served = Vec::new();
    for _ in 0..4 {
        let r = g.post("/v1/chat/completions", &[], &body).await;
        assert_eq!(r.status, 200, "{}", r.text());
        served.push(r.header("x-switchyard-provider").unwrap().to_owned());
    }
    assert_eq!(served, ["small", "small", "big", "big"]);
}

#[tokio::test]
async fn a_key_with_rpm_and_a_budget_is_charged_in_one_step() {
    let g = gateway(
        "
listen: 127.0.0.1:0
admin: 127.0.0.1:0
keys:
  - name: both
    key: sk-both
    team: search
    rpm: 3
    budget_usd_per_day: 30
prices:
  echo: {input: 1000000, output: 0}
",
    )
    .await;
    limits_budget::taken_together_or_not_at_all(&g, "sk-both").await;
}
