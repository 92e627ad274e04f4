//! Metrics end to end: real traffic through the real stack (a fallback among it), a scrape of
//! the admin plane, Prometheus' own `promtool check metrics` on it, and the Grafana dashboards
//! held to what switchyard exports: every metric they name appears in the scrape, and every
//! query parses as PromQL (`promtool check rules` on a rules file made from them).

mod obs_support;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::process::{Command, Stdio};

use obs_support::{chat, failing_upstream, fallback_config, promtool, root, send};
use switchyard::config::{load_str, Env};
use switchyard::server;
use switchyard::telemetry::metrics;

/// Every `switchyard_*` identifier in a text.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("switchyard_") {
        let start = i + pos;
        let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
        let mut end = start;
        while end < bytes.len() && ident(bytes[end]) {
            end += 1;
        }
        if start == 0 || !ident(bytes[start - 1]) {
            out.insert(text[start..end].to_owned());
        }
        i = end;
    }
    out
}

/// The names of the series in a scrape (`_bucket`, `_sum`, `_count` included).
fn scraped_series(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// Every dashboard: (file name, parsed JSON).
fn dashboards() -> Vec<(String, serde_json::Value)> {
    let dir = root().join("deploy/grafana");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("deploy/grafana exists") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let json: serde_json::Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            out.push((
                path.file_name().unwrap().to_string_lossy().into_owned(),
                json,
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 3, "overview, provider and cost dashboards");
    out
}

/// Every `expr` in a dashboard (panels, nested rows).
fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| exprs(i, out)),
        _ => {}
    }
}

/// A dashboard query as plain PromQL: Grafana's interval variables become `5m`, template
/// variables (always used as `=~"$var"`) match anything.
fn plain_promql(expr: &str) -> String {
    let mut s = expr
        .replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$__range", "1d");
    while let Some(start) = s.find('$') {
        let rest = &s[start + 1..];
        let len = if let Some(r) = rest.strip_prefix('{') {
            r.find('}').map(|e| e + 2).unwrap_or(rest.len())
        } else {
            rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len())
        };
        s.replace_range(start..start + 1 + len, ".*");
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_after_traffic_is_valid_and_has_every_dashboard_metric() {
    let (upstream, _) = failing_upstream().await;
    let config = load_str(&fallback_config(upstream), &Env).unwrap();
    let running = server::start(&config).await.unwrap();
    let data = running.data_addr;

    // A fallback (flaky fails, mock serves), JSON and streamed; a direct target; embeddings; an
    // unknown model.
    assert_eq!(chat(data, "chat", false).await.0, 200);
    let (status, body) = chat(data, "chat", true).await;
    assert_eq!(status, 200);
    assert!(body.contains("[DONE]"));
    assert_eq!(chat(data, "mock/lorem", true).await.0, 200);
    assert_eq!(chat(data, "mock/echo", false).await.0, 200);
    let (status, _, _) = send(
        data,
        "POST",
        "/v1/embeddings",
        r#"{"model":"mock/embed","input":["a","b"]}"#,
        &[],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(chat(data, "no-such-model", false).await.0, 404);

    // A caller key of team `search` allowed one request a minute: the second is refused by
    // switchyard's own rate limit, and counted for the team.
    let limited = load_str(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nmock: true\nkeys:\n  - name: search-key\n    key: sk-obs-search\n    team: search\n    rpm: 1\n",
        &Env,
    )
    .unwrap();
    let limited = server::start(&limited).await.unwrap();
    let body = r#"{"model":"mock/echo","messages":[{"role":"user","content":"hi"}]}"#;
    let auth = [("authorization", "Bearer sk-obs-search")];
    let first = send(
        limited.data_addr,
        "POST",
        "/v1/chat/completions",
        body,
        &auth,
    )
    .await;
    assert_eq!(first.0, 200);
    let second = send(
        limited.data_addr,
        "POST",
        "/v1/chat/completions",
        body,
        &auth,
    )
    .await;
    assert_eq!(second.0, 429, "{}", second.2);
    limited.shutdown(std::time::Duration::from_secs(1)).await;

    // Stand-in for the budget layer, which does not publish the gauge yet: the metric must
    // exist and render.
    metrics::set_budget_remaining(metrics::BudgetScope::Team, "search", 12.5);

    let (status, headers, scrape) = send(running.admin_addr, "GET", "/metrics", "", &[]).await;
    assert_eq!(status, 200);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));

    // What the traffic must have produced.
    let has = |needle: &str| {
        assert!(
            scrape.lines().any(|l| l.contains(needle)),
            "scrape lacks {needle}:\n{scrape}"
        )
    };
    has(
        r#"switchyard_requests_total{key_team="default",model="echo",provider="mock",route="chat",status_class="2xx"} 2"#,
    );
    has(
        r#"switchyard_requests_total{key_team="default",model="none",provider="none",route="unknown",status_class="4xx"} 1"#,
    );
    has(r#"switchyard_upstream_attempts_total{outcome="ok",provider="mock"}"#);
    assert!(
        scrape
            .lines()
            .any(|l| l.starts_with("switchyard_upstream_attempts_total")
                && l.contains(r#"provider="flaky""#)
                && !l.contains(r#"outcome="ok""#)),
        "the failed attempts of the fallback are counted:\n{scrape}"
    );
    has(
        r#"switchyard_time_to_first_token_seconds_count{model="lorem",provider="mock",route="mock/lorem"} 1"#,
    );
    has(
        r#"switchyard_tokens_total{key_team="default",model="lorem",provider="mock",route="mock/lorem",type="output"} 16"#,
    );
    has("switchyard_overhead_seconds_bucket{le=\"0.00005\"}");
    has("switchyard_inflight 0");
    has(r#"switchyard_ratelimit_rejections_total{key_team="search"} 1"#);
    has(
        r#"switchyard_requests_total{key_team="search",model="echo",provider="mock",route="mock/echo",status_class="2xx"} 1"#,
    );
    has(r#"switchyard_circuit_state{model="echo",provider="flaky"}"#);
    assert!(
        !scrape.contains("no-such-model"),
        "a model name a caller typed is never a label value"
    );

    // Prometheus' own parser and linter.
    if let Some(promtool) = promtool() {
        let mut child = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(scrape.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Every metric a dashboard names is exported.
    let series = scraped_series(&scrape);
    for (file, json) in dashboards() {
        let names = metric_names(&json.to_string());
        assert!(!names.is_empty(), "{file} queries no switchyard metric");
        for name in names {
            assert!(
                series.contains(&name),
                "{file} uses {name}, which the scrape does not have"
            );
        }
    }
    running.shutdown(std::time::Duration::from_secs(1)).await;
}

#[test]
fn every_dashboard_query_parses_as_promql() {
    let mut rules = String::from("groups:\n  - name: dashboards\n    rules:\n");
    let mut n = 0;
    for (file, json) in dashboards() {
        let mut found = Vec::new();
        exprs(&json, &mut found);
        assert!(!found.is_empty(), "{file} has no queries");
        for e in found {
            let promql = plain_promql(&e);
            assert!(!promql.contains('$'), "{file}: unreplaced variable in {e}");
            rules.push_str(&format!(
                "      - record: dashboard:query_{n}\n        expr: {}\n",
                serde_json::Value::String(promql)
            ));
            n += 1;
        }
    }
    let Some(promtool) = promtool() else { return };
    let path =
        std::env::temp_dir().join(format!("switchyard-dashboards-{}.yml", std::process::id()));
    std::fs::write(&path, &rules).unwrap();
    let out = Command::new(promtool)
        .args(["check", "rules"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "promtool check rules on the dashboards' {n} queries:\n{}{}\n{rules}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn names_are_found_in_queries() {
    let names = metric_names(
        r#"sum(rate(switchyard_requests_total{x="a"}[5m])) / histogram_quantile(0.9, switchyard_x_bucket)"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["switchyard_requests_total", "switchyard_x_bucket"]
    );
    assert_eq!(
        plain_promql(r#"rate(a{route=~"$route",t=~"${team}"}[$__rate_interval])"#),
        r#"rate(a{route=~".*",t=~".*"}[5m])"#
    );
}
