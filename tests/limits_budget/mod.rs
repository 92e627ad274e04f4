//! A check shared by `limits.rs` (memory state) and `limits_redis.rs` (Redis state).

use serde_json::json;

use crate::admin;
use crate::common::Gateway;

/// A key with both a request limit and a budget: the admission and the reservation are one
/// step, so a request refused by either takes nothing from the other.
pub async fn taken_together_or_not_at_all(g: &Gateway, key: &str) {
    let post = |content: String| {
        let auth = format!("Bearer {key}");
        async move {
            g.post(
                "/v1/chat/completions",
                &[("authorization", &auth)],
                &json!({"model": "echo", "messages": [{"role": "user", "content": content}]}),
            )
            .await
        }
    };
    let small = || post("hello".into());
    // $9 a request ("hello" ≈ 9 input tokens at $1 a token) against $30 a day and 3 a minute.
    let r = small().await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("2"));
    // Estimated at over $100: the budget refuses, and the request takes no request either.
    let r = post("x".repeat(400)).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "insufficient_quota");
    let r = small().await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("1"));
    assert_eq!(small().await.status, 200);
    // Out of requests: refused by the limit, and nothing is reserved against the budget.
    let r = small().await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
    let spend = admin::get_json(g.running.admin_addr, "/spend").await;
    let k = spend["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["budget_usd_per_day"] == 30.0)
        .unwrap();
    assert_eq!(k["spent_usd_today"], 27.0, "{spend}");
}
