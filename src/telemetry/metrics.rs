//! Every metric switchyard exports, named in this one file (vector's convention:
//! `switchyard_<name>_<unit>[_total]`, base units, bounded label values).
//!
//! Label values come only from config (route, provider, team and budget names), from the
//! target that served a request (provider, upstream model), or from small closed sets (status
//! class, error kind, token type). Never a request id, a raw key or a free-form model name a
//! caller typed: a request for an unknown model is labelled `route="unknown"`.
//!
//! The request path resolves its label sets once per distinct combination ([`series`]) and
//! keeps the handles, so a request costs one hash lookup, not one per metric.

use std::sync::{Arc, LazyLock, OnceLock};

use arc_swap::ArcSwap;

use crate::ir::CircuitState;
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets fit for LLM calls: tens of milliseconds (cached, embeddings) to minutes
/// (long generations).
const LLM_SECONDS: &[f64] = &[
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0,
];

/// Time-to-first-token buckets: most first tokens arrive within 0.1–5 s.
const TTFT_SECONDS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0,
];

/// Time spent inside switchyard: the budget is 50 µs at p50, 250 µs at p99.
const OVERHEAD_SECONDS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.1,
];

/// The label of a request whose model resolved to no route.
pub const UNKNOWN: &str = "unknown";
/// The provider/model label of a request no target served.
pub const NONE: &str = "none";
/// The team label of a request without a principal (auth off).
pub const DEFAULT_TEAM: &str = "default";

/// All metric families, registered once in [`registry`].
struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    ttft: HistogramVec,
    attempts: IntCounterVec,
    attempt_duration: HistogramVec,
    tokens: IntCounterVec,
    cost: prometheus::CounterVec,
    circuit: IntGaugeVec,
    ratelimit: IntCounterVec,
    overhead: Histogram,
    budget: GaugeVec,
    inflight: IntGauge,
    reloads: IntCounterVec,
    spans_dropped: IntCounterVec,
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition")
}

fn histogram(name: &str, help: &str, buckets: &[f64], labels: &[&str]) -> HistogramVec {
    HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .expect("static metric definition")
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let m = Metrics {
        registry: Registry::new(),
        requests: counter(
            "switchyard_requests_total",
            "Requests that reached the gateway's core, by route, serving target, status class and caller team.",
            &["route", "provider", "model", "status_class", "key_team"],
        ),
        duration: histogram(
            "switchyard_request_duration_seconds",
            "Time from request received to reply complete (end of stream included).",
            LLM_SECONDS,
            &["route", "provider", "model"],
        ),
        ttft: histogram(
            "switchyard_time_to_first_token_seconds",
            "Time from request received to the first streamed event (streamed requests only).",
            TTFT_SECONDS,
            &["route", "provider", "model"],
        ),
        attempts: counter(
            "switchyard_upstream_attempts_total",
            "Upstream attempts by provider and outcome (ok, or the error kind).",
            &["provider", "outcome"],
        ),
        attempt_duration: histogram(
            "switchyard_upstream_attempt_duration_seconds",
            "Time of one upstream attempt until its reply head (or failure).",
            LLM_SECONDS,
            &["provider"],
        ),
        tokens: counter(
            "switchyard_tokens_total",
            "Tokens by type (input includes cached; cached is the prompt-cache subset of input).",
            &["route", "provider", "model", "key_team", "type"],
        ),
        cost: prometheus::CounterVec::new(
            Opts::new(
                "switchyard_cost_usd_total",
                "Spend in US dollars at the pricing table's rates (unpriced models add nothing).",
            ),
            &["route", "provider", "model", "key_team"],
        )
        .expect("static metric definition"),
        circuit: IntGaugeVec::new(
            Opts::new(
                "switchyard_circuit_state",
                "Circuit breaker state per target: 0 closed, 1 half-open, 2 open.",
            ),
            &["provider", "model"],
        )
        .expect("static metric definition"),
        ratelimit: counter(
            "switchyard_ratelimit_rejections_total",
            "Requests refused by switchyard's own rate limits (upstream 429s are not counted here).",
            &["key_team"],
        ),
        overhead: Histogram::with_opts(
            HistogramOpts::new(
                "switchyard_overhead_seconds",
                "Time spent inside switchyard per request, upstream time excluded.",
            )
            .buckets(OVERHEAD_SECONDS.to_vec()),
        )
        .expect("static metric definition"),
        budget: GaugeVec::new(
            Opts::new(
                "switchyard_budget_remaining_usd",
                "Spend budget left, per budget scope (key or team) and name.",
            ),
            &["scope", "name"],
        )
        .expect("static metric definition"),
        inflight: IntGauge::new(
            "switchyard_inflight",
            "Requests in flight (open streams included).",
        )
        .expect("static metric definition"),
        reloads: counter(
            "switchyard_config_reload_total",
            "Config reloads by result (success, rolled_back).",
            &["result"],
        ),
        spans_dropped: counter(
            "switchyard_trace_spans_dropped_total",
            "Trace spans not exported: queue full (collector slow or down) or export failed.",
            &["reason"],
        ),
    };
    let info = IntGaugeVec::new(
        Opts::new("switchyard_build_info", "Build information; always 1."),
        &["version"],
    )
    .expect("static metric definition");
    info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    let r = &m.registry;
    let _ = r.register(Box::new(info));
    let _ = r.register(Box::new(m.requests.clone()));
    let _ = r.register(Box::new(m.duration.clone()));
    let _ = r.register(Box::new(m.ttft.clone()));
    let _ = r.register(Box::new(m.attempts.clone()));
    let _ = r.register(Box::new(m.attempt_duration.clone()));
    let _ = r.register(Box::new(m.tokens.clone()));
    let _ = r.register(Box::new(m.cost.clone()));
    let _ = r.register(Box::new(m.circuit.clone()));
    let _ = r.register(Box::new(m.ratelimit.clone()));
    let _ = r.register(Box::new(m.overhead.clone()));
    let _ = r.register(Box::new(m.budget.clone()));
    let _ = r.register(Box::new(m.inflight.clone()));
    let _ = r.register(Box::new(m.reloads.clone()));
    let _ = r.register(Box::new(m.spans_dropped.clone()));
    // Series with closed label sets exist from the start, so `rate()` sees their first change.
    for reason in ["queue_full", "export_failed"] {
        m.spans_dropped.with_label_values(&[reason]);
    }
    for result in [ReloadResult::Success, ReloadResult::RolledBack] {
        m.reloads.with_label_values(&[result.as_str()]);
    }
    m
});

/// The process-wide registry.
pub fn registry() -> &'static Registry {
    &METRICS.registry
}

/// The Prometheus text exposition of every metric.
pub fn render() -> String {
    let mut buf = Vec::new();
    let _ = TextEncoder::new().encode(&registry().gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

/// HTTP status class label of a status code.
pub fn status_class(status: u16) -> StatusClass {
    match status {
        200..=299 => StatusClass::Success,
        400..=499 => StatusClass::ClientError,
        500..=599 => StatusClass::ServerError,
        _ => StatusClass::Other,
    }
}

/// The closed set of `status_class` label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusClass {
    /// 2xx.
    Success,
    /// 4xx (499: the caller went away).
    ClientError,
    /// 5xx.
    ServerError,
    /// 1xx, 3xx: not answered by switchyard, kept for completeness.
    Other,
}

impl StatusClass {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            StatusClass::Success => "2xx",
            StatusClass::ClientError => "4xx",
            StatusClass::ServerError => "5xx",
            StatusClass::Other => "other",
        }
    }
}

/// The labels of one request series. Cheap to build: `Arc` clones, no allocation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    /// Route label: a configured route or provider model, `direct`, or `unknown`.
    pub route: Arc<str>,
    /// Provider that served (or last failed) the request, or `none`.
    pub provider: Arc<str>,
    /// Upstream model that served the request, or `none`.
    pub model: Arc<str>,
    /// The caller's team.
    pub team: Arc<str>,
    /// Status class of the reply.
    pub class: StatusClass,
}

/// The label-resolved handles of one request series.
pub struct Series {
    /// `switchyard_requests_total`.
    pub requests: IntCounter,
    /// `switchyard_request_duration_seconds`.
    pub duration: Histogram,
    /// `switchyard_time_to_first_token_seconds`.
    pub ttft: Histogram,
    /// `switchyard_tokens_total{type="input"}`.
    pub input_tokens: IntCounter,
    /// `switchyard_tokens_total{type="output"}`.
    pub output_tokens: IntCounter,
    /// `switchyard_tokens_total{type="cached"}`.
    pub cached_tokens: IntCounter,
    /// `switchyard_cost_usd_total`.
    pub cost: prometheus::Counter,
}

impl Series {
    fn resolve(k: &SeriesKey) -> Self {
        let m = &*METRICS;
        let target = [&*k.route, &*k.provider, &*k.model];
        let tok = |t: &str| {
            m.tokens
                .with_label_values(&[&*k.route, &*k.provider, &*k.model, &*k.team, t])
        };
        Self {
            requests: m.requests.with_label_values(&[
                &*k.route,
                &*k.provider,
                &*k.model,
                k.class.as_str(),
                &*k.team,
            ]),
            duration: m.duration.with_label_values(&target),
            ttft: m.ttft.with_label_values(&target),
            input_tokens: tok("input"),
            output_tokens: tok("output"),
            cached_tokens: tok("cached"),
            cost: m
                .cost
                .with_label_values(&[&*k.route, &*k.provider, &*k.model, &*k.team]),
        }
    }
}

// Keys are label values bounded by config, never caller-chosen, so a fast hasher is safe.
type SeriesMap = foldhash::HashMap<SeriesKey, Arc<Series>>;

static SERIES: LazyLock<ArcSwap<SeriesMap>> = LazyLock::new(ArcSwap::default);

/// The handles of a request series, resolved on first use and cached. Reads are lock-free; a
/// new label combination (rare: label values are bounded) copies the map once.
pub fn series(key: &SeriesKey) -> Arc<Series> {
    if let Some(s) = SERIES.load().get(key) {
        return s.clone();
    }
    let fresh = Arc::new(Series::resolve(key));
    let mut out = fresh.clone();
    SERIES.rcu(|map| {
        let mut map = SeriesMap::clone(map);
        out = map
            .entry(key.clone())
            .or_insert_with(|| fresh.clone())
            .clone();
        map
    });
    out
}

/// `switchyard_overhead_seconds`.
pub fn overhead() -> &'static Histogram {
    &METRICS.overhead
}

/// `switchyard_inflight`.
pub fn inflight() -> &'static IntGauge {
    &METRICS.inflight
}

/// Counts a request refused by switchyard's own rate limit.
pub fn ratelimit_rejected(team: &str) {
    METRICS.ratelimit.with_label_values(&[team]).inc();
}

/// The handles of one target's attempts, resolved once per target stack.
#[derive(Clone)]
pub struct AttemptSeries {
    provider: Arc<str>,
    circuit: IntGauge,
    /// `switchyard_upstream_attempts_total{outcome="ok"}`.
    pub ok: IntCounter,
    /// `switchyard_upstream_attempt_duration_seconds`.
    pub duration: Histogram,
}

impl AttemptSeries {
    /// Resolves the handles of the target (`provider`, upstream `model`).
    pub fn new(provider: Arc<str>, model: &str) -> Self {
        let m = &*METRICS;
        Self {
            circuit: m.circuit.with_label_values(&[&*provider, model]),
            ok: m.attempts.with_label_values(&[&*provider, "ok"]),
            duration: m.attempt_duration.with_label_values(&[&*provider]),
            provider,
        }
    }

    /// The provider label (also the attempt span's `switchyard.provider`).
    pub fn provider(&self) -> &Arc<str> {
        &self.provider
    }

    /// Publishes the target's circuit state.
    pub fn circuit(&self, state: CircuitState) {
        self.circuit.set(circuit_value(state));
    }

    /// Counts a failed attempt; `outcome` is an error kind name (a closed set).
    pub fn failed(&self, outcome: &'static str) {
        METRICS
            .attempts
            .with_label_values(&[&*self.provider, outcome])
            .inc();
    }
}

/// The gauge value of a circuit state: ordered by severity, so `max by (provider)` shows the
/// worst target of a provider.
fn circuit_value(state: CircuitState) -> i64 {
    match state {
        CircuitState::Closed => 0,
        CircuitState::HalfOpen => 1,
        CircuitState::Open => 2,
    }
}

/// Sets a target's circuit state. The per-attempt layer publishes the breaker's state after
/// every attempt; a breaker may also call this on each transition.
pub fn set_circuit_state(provider: &str, model: &str, state: CircuitState) {
    METRICS
        .circuit
        .with_label_values(&[provider, model])
        .set(circuit_value(state));
}

/// Budget scopes, as exported by `switchyard_budget_remaining_usd{scope}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetScope {
    /// A budget of one caller key (by its config name).
    Key,
    /// A budget shared by a team.
    Team,
}

/// Sets the remaining spend of a budget (called by the budget layer after each debit).
pub fn set_budget_remaining(scope: BudgetScope, name: &str, usd: f64) {
    let scope = match scope {
        BudgetScope::Key => "key",
        BudgetScope::Team => "team",
    };
    METRICS.budget.with_label_values(&[scope, name]).set(usd);
}

// --- shared state (issue 6: keys, limits, budgets) -----------------------------------------

/// `switchyard_state_backend_up`: 1 while limits and spend are decided on the configured
/// backend (always 1 for `memory`), 0 while Redis is unreachable and the sidecar serves on
/// local limits. Registered on first use (when the stack is built).
pub fn state_backend_up() -> &'static prometheus::IntGauge {
    static GAUGE: OnceLock<prometheus::IntGauge> = OnceLock::new();
    GAUGE.get_or_init(|| {
        let g = prometheus::IntGauge::new(
            "switchyard_state_backend_up",
            "1 while the shared-state backend answers; 0 while serving on local limits.",
        )
        .expect("static metric definition is valid");
        g.set(1);
        let _ = registry().register(Box::new(g.clone()));
        g
    })
}

/// Where a keyed admission on the Redis backend was decided: the `decided` label of
/// `switchyard_state_admissions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateDecided {
    /// One atomic step in Redis.
    Shared,
    /// On this replica's recent copy of the shared numbers (`state.sync_ms`), written behind.
    Copy,
    /// On local state, Redis being unreachable.
    Local,
}

/// `switchyard_state_admissions_total{decided}`: keyed admissions on the Redis backend by
/// where they were decided (`shared` in Redis, `copy` on this replica's copy with
/// `state.sync_ms`, `local` while Redis is unreachable). Registered on first use.
pub fn state_admissions(decided: StateDecided) -> &'static prometheus::IntCounter {
    static COUNTERS: OnceLock<[prometheus::IntCounter; 3]> = OnceLock::new();
    let all = COUNTERS.get_or_init(|| {
        let vec = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "switchyard_state_admissions_total",
                "Keyed admissions on the Redis backend, by where they were decided.",
            ),
            &["decided"],
        )
        .expect("static metric definition is valid");
        let _ = registry().register(Box::new(vec.clone()));
        ["shared", "copy", "local"].map(|d| vec.with_label_values(&[d]))
    });
    &all[decided as usize]
}

/// The outcome of a config reload, the `result` label of `switchyard_config_reload_total`
/// (vector's convention).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    /// The new config was loaded and its routing table swapped in.
    Success,
    /// The new config was refused; the old one keeps serving.
    RolledBack,
}

impl ReloadResult {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadResult::Success => "success",
            ReloadResult::RolledBack => "rolled_back",
        }
    }
}

/// `switchyard_config_reload_total{result}` (both series exist from the start, at 0).
pub fn config_reloads() -> &'static IntCounterVec {
    &METRICS.reloads
}

/// Counts one config reload attempt by outcome.
pub fn config_reload(result: ReloadResult) {
    METRICS.reloads.with_label_values(&[result.as_str()]).inc();
}

/// Counts trace spans that were not exported.
pub fn spans_dropped(reason: SpanDrop, n: u64) {
    let reason = match reason {
        SpanDrop::QueueFull => "queue_full",
        SpanDrop::ExportFailed => "export_failed",
    };
    METRICS.spans_dropped.with_label_values(&[reason]).inc_by(n);
}

/// Why a span was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanDrop {
    /// The export queue was full (collector slow or unreachable).
    QueueFull,
    /// The collector refused the batch or could not be reached.
    ExportFailed,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(team: &str) -> SeriesKey {
        SeriesKey {
            route: Arc::from("r"),
            provider: Arc::from("p"),
            model: Arc::from("m"),
            team: Arc::from(team),
            class: StatusClass::Success,
        }
    }

    #[test]
    fn series_are_resolved_once_and_shared() {
        let a = series(&key("t-cache"));
        let b = series(&key("t-cache"));
        assert!(Arc::ptr_eq(&a, &b));
        a.requests.inc();
        assert!(render().contains(
            r#"switchyard_requests_total{key_team="t-cache",model="m",provider="p",route="r",status_class="2xx"} 1"#
        ));
    }

    #[test]
    fn every_family_has_help_and_the_closed_sets_start_at_zero() {
        let text = render();
        assert!(text.contains("# HELP switchyard_build_info"));
        assert!(text.contains(r#"switchyard_trace_spans_dropped_total{reason="queue_full"} 0"#));
        assert!(text.contains(r#"switchyard_config_reload_total{result="rolled_back"} 0"#));
        assert_eq!(status_class(503), StatusClass::ServerError);
        assert_eq!(status_class(499).as_str(), "4xx");
    }
}
