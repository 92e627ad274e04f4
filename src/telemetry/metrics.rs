//! Every metric switchyard exports, named in this one file.

use std::sync::OnceLock;

use prometheus::{Encoder, IntGaugeVec, Opts, Registry, TextEncoder};

/// The process-wide registry.
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let r = Registry::new();
        let info = IntGaugeVec::new(
            Opts::new("switchyard_build_info", "Build information; always 1."),
            &["version"],
        )
        .expect("static metric definition is valid");
        info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let _ = r.register(Box::new(info));
        r
    })
}

/// The Prometheus text exposition of every metric.
pub fn render() -> String {
    let mut buf = Vec::new();
    let _ = TextEncoder::new().encode(&registry().gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
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
// ---- switchyard_config_reload_total --------------------------------------------------------
// Defined by the Kubernetes work (hot reload) until the observability work's definition of the
// same metric lands; whichever lands second keeps one definition with this name and label.

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

/// `switchyard_config_reload_total{result}`, registered on first use with both series at 0
/// (so `rate()` and alerts see a zero before the first reload).
pub fn config_reloads() -> &'static prometheus::IntCounterVec {
    static RELOADS: OnceLock<prometheus::IntCounterVec> = OnceLock::new();
    RELOADS.get_or_init(|| {
        let c = prometheus::IntCounterVec::new(
            Opts::new(
                "switchyard_config_reload_total",
                "Config reloads by result: success, or rolled_back (refused; the old config keeps serving).",
            ),
            &["result"],
        )
        .expect("static metric definition is valid");
        for r in [ReloadResult::Success, ReloadResult::RolledBack] {
            c.with_label_values(&[r.as_str()]);
        }
        let _ = registry().register(Box::new(c.clone()));
        c
    })
}

/// Counts one config reload attempt by outcome.
pub fn config_reload(result: ReloadResult) {
    config_reloads().with_label_values(&[result.as_str()]).inc();
}
