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
